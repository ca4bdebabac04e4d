"""Networks with their weights and preprocessing, from a name and a weight origin, never running file code.

``weights`` is one of

* ``random``: the builder's initialisation under ``torch.manual_seed(seed)`` (the global RNG is left alone);
* ``imagenet``: torchvision's ImageNet weights, read from the torch hub cache (``$TORCH_HOME/hub``), never
  downloaded; a missing file is an error naming the exact path to put it at and the URL it comes from;
* ``checkpoint:PATH``: a folder written by :func:`faceprobe.models.checkpoint.save_checkpoint` (it names its
  architecture and preprocessing), a ``.safetensors`` file, or a ``.pt``/``.pth``/``.ckpt``/``.bin`` file
  read by ``torch.load(weights_only=True)``, which refuses pickles that would run code. Checkpoints from the
  wild are unwrapped (``state_dict``, ``net_state_dict``, ``model``, ...), lose ``module.``/``backbone.``
  prefixes the model does not use, and load strictly unless ``strict=False``; a mismatch is reported in one
  line with the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.models.checkpoint import METADATA_FILE, WEIGHTS_FILE, load_checkpoint
from faceprobe.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, thesis_resize
from faceprobe.models.registry import did_you_mean, spec_of

__all__ = ["LoadedModel", "load_model", "load_state_dict", "read_state_dict", "weights_digest"]

#: Keys under which training scripts nest the state dict, tried in this order.
_WRAPPERS = ("state_dict", "net_state_dict", "model_state_dict", "model", "net", "module", "backbone")
_PREFIXES = ("module.", "backbone.")
_PICKLES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar")
#: Preprocessing of a ``package.module:factory`` network unless flags say otherwise: the thesis's.
_FACTORY_INPUT = Preprocessing((224, 224), None, thesis_resize((224, 224)), IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class LoadedModel:
    """A network ready to probe: module in eval mode on the CPU, its origin, digest and preprocessing.

    ``embedding`` names the layer whose output is the face embedding (None: the output).
    """

    module: nn.Module
    architecture: str
    weights: str
    preprocessing: Preprocessing
    name: str
    embedding: str | None = None

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the state dict's names, dtypes, shapes and values: the key of caches such as the
        activation store. Hashed when first asked for, as most uses of a network never need it."""
        return weights_digest(self.module)


def load_model(
    architecture: str,
    weights: str = "random",
    *,
    num_classes: int | None = None,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    bgr: bool | None = None,
    strict: bool = True,
) -> LoadedModel:
    """Build ``architecture`` (a registry name or ``package.module:factory``) with ``weights``.

    The preprocessing is the registry's (a faceprobe checkpoint's own when it records one), with any of
    ``input_size``, ``crop``, ``mean``, ``std`` and ``bgr`` overriding it; a new input size keeps the thesis
    framing (resize the shorter side to ``round(size * 256 / 224)``, centre-crop) where the default has it.
    ``seed`` initialises whatever the weights do not cover (all of it for ``random``, a new face head on
    ImageNet weights); a faceprobe checkpoint folder rebuilds its own network, so ``num_classes`` is unused.
    """
    kind, _, path = weights.partition(":")
    if kind == "checkpoint" and path and _is_faceprobe_checkpoint(Path(path)):
        module, base = _faceprobe_checkpoint(architecture, Path(path))
    elif kind in ("random", "imagenet", "checkpoint") and (kind == "checkpoint") == bool(path):
        base = spec_of(architecture).preprocessing if ":" not in architecture else _FACTORY_INPUT
        module = _seeded(seed, lambda: _build(architecture, num_classes, input_size or base.input_size))
        if kind == "imagenet":
            _load_imagenet(module, architecture, num_classes is not None)
        elif kind == "checkpoint":
            load_state_dict(module, read_state_dict(path), strict=strict, source=path)
    elif kind == "epochs":
        raise FaceprobeError(
            f"weights {weights!r} stand for every epoch a training folder keeps, one model each, which only "
            "a study or faceprobe probe expands; give one epoch here: checkpoint:DIR/epochs/epoch-NNNN"
        )
    else:
        hint = did_you_mean(kind, ("random", "imagenet", "checkpoint")) if kind != "checkpoint" else ""
        raise FaceprobeError(
            f"weights {weights!r} are not random, imagenet or checkpoint:PATH{hint}; pick one of those"
        )
    size = input_size or base.input_size
    keep_resize = base.resize_shorter is None or size == base.input_size
    preprocessing = Preprocessing(
        size,
        crop if crop is not None else base.crop,
        base.resize_shorter if keep_resize else thesis_resize(size),
        mean if mean is not None else base.mean,
        std if std is not None else base.std,
        bgr if bgr is not None else base.bgr,
    )
    origin = Path(path).name if kind == "checkpoint" else kind
    return LoadedModel(
        module=module.eval(),
        architecture=architecture,
        weights=weights,
        preprocessing=preprocessing,
        name=f"{architecture}/{origin}/s{seed}",
        embedding=getattr(module, "embedding_layer", None),
    )


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _build(architecture: str, num_classes: int | None, input_size: tuple[int, int]) -> nn.Module:
    if ":" not in architecture:
        return spec_of(architecture).builder(num_classes, input_size)
    factory = _factory(architecture)
    try:
        model = factory() if num_classes is None else factory(num_classes=num_classes)
    except TypeError as e:
        raise FaceprobeError(
            f"{architecture} cannot be called as a network factory ({e}); give a function that builds the "
            "network with no required arguments"
        ) from None
    if not isinstance(model, nn.Module):
        raise FaceprobeError(f"{architecture} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _factory(architecture: str) -> Callable[..., Any]:
    """The ``package.module:factory`` callable, imported only from an installed, non-standard package.

    Importing runs the module's code, so the standard library (``os:abort``, ``sys:exit``, ...) and names
    that no installed package provides are refused before anything is imported.
    """
    module_name, _, factory_name = architecture.partition(":")
    top = module_name.split(".")[0]
    if not module_name or not factory_name or not all(p.isidentifier() for p in module_name.split(".")):
        raise FaceprobeError(f"{architecture!r} is not package.module:factory; name a function of a package")
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise FaceprobeError(
            f"{architecture!r} is a standard-library callable, not a network factory; name a function of "
            "your own package that returns an nn.Module"
        )
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin in (None, "built-in", "frozen"):
        raise FaceprobeError(
            f"cannot find the package {top!r} of {architecture!r}; install it (pip install -e ...) so that "
            "it imports"
        )
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as e:
        raise FaceprobeError(
            f"cannot import {architecture!r} ({e}); give an importable package.module:factory"
        ) from None
    if not callable(factory):
        raise FaceprobeError(f"{architecture} is a {type(factory).__name__}, not a function")
    return factory


def _is_faceprobe_checkpoint(path: Path) -> bool:
    """A folder, or its model.safetensors/metadata.json: rebuilt from its metadata, not from the registry."""
    return path.is_dir() or (
        path.name in (WEIGHTS_FILE, METADATA_FILE) and (path.parent / METADATA_FILE).is_file()
    )


def _faceprobe_checkpoint(architecture: str, path: Path) -> tuple[nn.Module, Preprocessing]:
    module, metadata = load_checkpoint(path)
    if metadata["architecture"] != architecture:
        raise FaceprobeError(
            f"{path} holds a {metadata['architecture']!r} network, not {architecture!r};"
            " name the architecture it holds"
        )
    if "preprocessing" in metadata:
        return module, Preprocessing.from_dict(metadata["preprocessing"])
    base = spec_of(architecture).preprocessing
    if "input_size" in metadata:  # an older checkpoint: a square input under the registry's framing
        size = (int(metadata["input_size"]),) * 2
        base = replace(base, input_size=size, resize_shorter=base.resize_shorter and thesis_resize(size))
    return module, base


def imagenet_path(architecture: str) -> Path:
    """Where ``weights="imagenet"`` looks for the weights of ``architecture`` (torchvision's cache file)."""
    spec = spec_of(architecture) if ":" not in architecture else None
    if spec is None or spec.imagenet is None:
        raise FaceprobeError(
            f"{architecture} has no ImageNet weights in torchvision; use random or checkpoint:PATH"
        )
    url = torchvision.models.get_weight(spec.imagenet).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_imagenet(module: nn.Module, architecture: str, new_head: bool) -> None:
    path = imagenet_path(architecture)
    if not path.is_file():
        url = torchvision.models.get_weight(spec_of(architecture).imagenet or "").url
        raise FaceprobeError(
            f"ImageNet weights for {architecture} not found at {path}; faceprobe never downloads: fetch {url}"
            " on a connected machine and put the file there"
        )
    state = read_state_dict(path)
    head = spec_of(architecture).head
    if new_head and head:  # the face head replaces the ImageNet classifier: its weights do not apply
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    load_state_dict(
        module, state, strict=True, source=str(path), optional=(head + ".",) if new_head and head else ()
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or tensor-only PyTorch checkpoint file, unwrapped from training dicts."""
    path = Path(path)
    if not path.is_file():
        raise FaceprobeError(f"checkpoint {path} not found; give the path of a .safetensors or .pt/.pth file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except SafetensorError as e:
            raise FaceprobeError(f"{path} is not a readable safetensors file ({e}); save it again") from None
    if path.suffix not in _PICKLES:
        raise FaceprobeError(f"{path}: unknown checkpoint format; give a .safetensors, .pt or .pth file")
    try:
        content: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FaceprobeError(
            f"{path} holds pickled objects besides tensors, and unpickling them could run code, so faceprobe"
            " refuses; re-save only its state dict (torch.save(model.state_dict(), ...)) or use safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise FaceprobeError(f"{path} is not a readable PyTorch checkpoint ({e}); save it again") from None
    while isinstance(content, dict) and not all(isinstance(v, torch.Tensor) for v in content.values()):
        inner = next((content[k] for k in _WRAPPERS if isinstance(content.get(k), dict)), None)
        if inner is None:
            break
        content = inner
    state = (
        {k: v for k, v in content.items() if isinstance(v, torch.Tensor)} if isinstance(content, dict) else {}
    )
    if not state:
        raise FaceprobeError(f"{path} holds no state dict of tensors; save model.state_dict() into it")
    return state


def load_state_dict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    source: str = "the checkpoint",
    optional: tuple[str, ...] = (),
) -> None:
    """Copy ``state`` into ``module`` after stripping foreign prefixes; report any mismatch in one line.

    A ``module.`` or ``backbone.`` prefix is removed when the module's own names do not start with it.
    Missing BatchNorm ``num_batches_tracked`` counters and keys under ``optional`` prefixes are not
    problems. Strict: a mismatch raises; otherwise the fitting tensors load and the report is a warning.
    """
    own = module.state_dict()
    for prefix in _PREFIXES:
        if not any(k.startswith(prefix) for k in own):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    missing = [
        k
        for k in own
        if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(optional)
    ]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        parts = [
            f"{len(keys)} {what} ({', '.join(map(details, keys[:3]))}{', ...' if len(keys) > 3 else ''})"
            for keys, what, details in (
                (missing, "missing", str),
                (unexpected, "unexpected", str),
                (mis_shaped, "mis-shaped", lambda k: f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"),
            )
            if keys
        ]
        report = f"{source} does not fit {type(module).__name__}: {'; '.join(parts)} keys"
        if strict:
            raise FaceprobeError(
                report
                + "; check the architecture, or load it partly: --non-strict (strict = false in a config)"
            )
        warnings.warn(report + "; loaded the rest (non-strict)", stacklevel=2)
    module.load_state_dict({k: v for k, v in state.items() if k in own and k not in mis_shaped}, strict=False)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, values): equal digests, equal networks."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
