"""Record what chosen layers of a network output, as one n x features matrix per layer.

A probe reads a layer as a matrix whose rows are images and whose columns are that layer's neurons (its
output flattened in C, H, W order). Forward hooks give every layer of any ``nn.Module`` in one forward pass
per batch, without editing or tracing the model, so the same code serves SmallFaceNet and torchvision's
networks.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from numpy.typing import DTypeLike
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torchvision.models import mobilenetv2, resnet
from torchvision.ops.misc import Conv2dNormActivation

from faceprobe.devices import autocast, channels_last
from faceprobe.errors import FaceprobeError

__all__ = [
    "LayerInfo",
    "batch_images",
    "block_layers",
    "capture",
    "describe_layers",
    "evaluating",
    "extract",
    "hooked",
    "residual_end",
    "resolve_layers",
    "stream_outputs",
]

#: Layer kinds by module type, first match wins (after the residual and embedding rules of _layer_kind).
_KINDS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv2dNormActivation), "conv"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm), "bn"),
    ((nn.ReLU, nn.ReLU6, nn.PReLU), "relu"),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), "pool"),
    ((nn.Linear,), "fc"),
)
#: Pure containers: block_layers lists what they hold instead of them.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerInfo:
    """One probe-able layer: a module of the network and the shape of its output for one image.

    ``kind`` is one of "conv", "bn", "relu" (any activation), "block" (the post-skip output of a residual
    block: after the add, and after the activation that follows it when the block has one), "residual" (the
    residual branch's last output, before the add), "pool", "fc", "embedding" (the face embedding), "other".
    """

    name: str
    depth: int
    kind: str
    shape: tuple[int, ...]

    @property
    def features(self) -> int:
        """Columns of this layer's activation matrix."""
        return math.prod(self.shape)


def residual_end(block: nn.Module) -> str | None:
    """The name, relative to ``block``, of the module whose output is the residual branch before the add.

    None when ``block`` is no residual block. torchvision's blocks are known here; faceprobe's own blocks
    say it in a ``residual_end`` attribute.
    """
    if isinstance(block, resnet.Bottleneck):
        return "bn3"
    if isinstance(block, resnet.BasicBlock):
        return "bn2"
    if isinstance(block, mobilenetv2.InvertedResidual):
        return f"conv.{len(block.conv) - 1}" if block.use_res_connect else None
    return getattr(block, "residual_end", None)


def _layer_kind(model: nn.Module, name: str) -> str:
    module = model.get_submodule(name)
    if name == getattr(model, "embedding_layer", None):
        return "embedding"
    parts = name.split(".")
    for i in range(1, len(parts)):
        if residual_end(model.get_submodule(".".join(parts[:i]))) == ".".join(parts[i:]):
            return "residual"
    if residual_end(module) is not None:
        return "block"
    if isinstance(getattr(module, "probe_kind", None), str):  # a network's own module says what it is
        return module.probe_kind
    return next((kind for types, kind in _KINDS if isinstance(module, types)), "other")


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> dict[str, nn.Module]:
    """``name -> module`` for the named layers; an unknown name is an error suggesting the closest ones."""
    modules = dict(model.named_modules())
    resolved = {}
    for name in layers:
        if name not in modules:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else "see block_layers()"
            raise FaceprobeError(f"the model has no layer {name!r}; {hint}")
        resolved[name] = modules[name]
    return resolved


class capture:
    """Forward hooks on the named modules of ``model``, removed on exit even when the forward raised.

    Each hooked module's output is passed to ``fn(name, output)`` as the module returns it; ``fn`` must copy
    what it keeps, since a following in-place operation (an in-place ReLU, ``out += identity``) overwrites
    it. Without ``fn``, a detached copy of each layer's latest output is kept in :attr:`outputs`::

        with capture(model, ["backbone.stage1.0"]) as cap:
            model(x)
        cap.outputs["backbone.stage1.0"]

    Raises:
        FaceprobeError: a name is not a module of ``model`` (the message suggests the closest names).
    """

    def __init__(
        self, model: nn.Module, layers: Iterable[str], fn: Callable[[str, Any], None] | None = None
    ) -> None:
        self._modules = resolve_layers(model, layers)
        self._fn = fn if fn is not None else self._keep
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.outputs: dict[str, torch.Tensor] = {}

    def _keep(self, name: str, output: Any) -> None:
        self.outputs[name] = _tensor(name, output).detach().clone()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._fn(name, output)

        return hook

    def __enter__(self) -> capture:
        self._handles = [module.register_forward_hook(self._hook(n)) for n, module in self._modules.items()]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` carries forward hooks (or pre-hooks) of its own."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _tensor(name: str, output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise FaceprobeError(
            f"layer {name!r} outputs a {type(output).__name__} and not a tensor; pick another module"
        )
    return output


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm uses its running statistics) for the duration, each module's own mode restored."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _trace(model: nn.Module, example: torch.Tensor, names: Sequence[str]) -> dict[str, list[Any]]:
    """``name -> outputs`` of one dry forward, in the order they came; modules that never ran are absent."""
    calls: dict[str, list[Any]] = {}

    def record(name: str, output: Any) -> None:
        calls.setdefault(name, []).append(output)

    with evaluating(model), torch.inference_mode(), capture(model, names, record):
        model(example)
    return calls


def _infos(model: nn.Module, outputs: dict[str, torch.Tensor]) -> list[LayerInfo]:
    return [
        LayerInfo(name, depth, _layer_kind(model, name), tuple(out.shape[1:]))
        for depth, (name, out) in enumerate(outputs.items())
    ]


def block_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """The default layers to probe: every block output of ``model``, in the order the forward produces them.

    A block is a module kept whole: the model's children are expanded, and so, recursively, are plain
    ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict`` containers (not their subclasses); the first
    other module on each path is a block. One dry forward of ``example`` (a batch on the model's device, run
    in eval mode without gradients) orders them; blocks that never run, run more than once (a shared module
    has no single output) or return something other than a tensor are left out.
    """
    blocks: list[str] = []

    def expand(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = prefix + child_name
            if type(child) in _CONTAINERS:
                expand(name + ".", child)
            else:
                blocks.append(name)

    expand("", model)
    calls = _trace(model, example, blocks)
    single = {n: outs[0] for n, outs in calls.items() if len(outs) == 1 and isinstance(outs[0], torch.Tensor)}
    return _infos(model, single)


def describe_layers(model: nn.Module, example: torch.Tensor, layers: Sequence[str]) -> list[LayerInfo]:
    """:class:`LayerInfo` for the named layers, in the order one dry forward of ``example`` produces them.

    Raises:
        FaceprobeError: a layer is unknown, never runs, runs more than once or does not return a tensor.
    """
    calls = _trace(model, example, layers)
    outputs = {}
    for name, outs in calls.items():
        if len(outs) > 1:
            raise _shared_module_error(name)
        outputs[name] = _tensor(name, outs[0])
    if missing := [name for name in layers if name not in calls]:
        raise _not_run_error(missing)
    return _infos(model, outputs)


def _shared_module_error(name: str) -> FaceprobeError:
    return FaceprobeError(
        f"layer {name!r} runs more than once per forward (a shared module), so it has no single output;"
        " pick a module that runs once, e.g. its parent block"
    )


def _not_run_error(names: Sequence[str]) -> FaceprobeError:
    return FaceprobeError(
        f"layer(s) {', '.join(map(repr, names))} never run in the model's forward; pick layers it calls"
        " (see block_layers())"
    )


def batch_images(batch: Any) -> torch.Tensor:
    """The images of a batch that is a tensor or an ``(images, targets, ...)`` tuple."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _sized(images: Any) -> tuple[Iterable[Any], int]:
    """The batches and (an upper bound on) the number of images they hold, without loading a DataLoader."""
    if isinstance(images, torch.Tensor):
        return [images], len(images)
    if isinstance(images, DataLoader) and not isinstance(images.dataset, IterableDataset):
        return images, len(images.dataset)  # type: ignore[arg-type]
    batches = images if isinstance(images, Sequence) else list(images)
    return batches, sum(len(batch_images(batch)) for batch in batches)


class _StopForward(Exception):
    """Raised by the hook of the last requested layer: nothing after it is needed."""


def _dry_run(model: nn.Module, example: torch.Tensor, names: Sequence[str], precision: str) -> dict[str, int]:
    """The features per image of each layer, in the order the forward produces them, from one dry forward
    of ``example``, which also checks that each layer runs exactly once and outputs a tensor."""
    calls: dict[str, list[torch.Tensor]] = {}

    def record(name: str, output: Any) -> None:
        calls.setdefault(name, []).append(_tensor(name, output))

    with evaluating(model), torch.inference_mode(), autocast(example.device, precision):
        with capture(model, names, record):
            model(example)
    for name, outs in calls.items():
        if len(outs) > 1:
            raise _shared_module_error(name)
    if missing := [name for name in names if name not in calls]:
        raise _not_run_error(missing)
    return {name: outs[0][0].numel() for name, outs in calls.items()}


class _Forward:
    """Forward passes that hand each requested layer's output to ``sink(name, tensor)``.

    Inside the ``with`` block the model is in eval mode, under inference mode and hooked; each call runs one
    batch under the chosen precision. With ``stop`` the pass ends right after the last requested layer (its
    hook raises :class:`_StopForward`), so later layers cost nothing; a layer hooked twice in one pass or
    not at all is an error.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        sink: Callable[[str, torch.Tensor], None],
        device: torch.device,
        precision: str,
        stop: bool,
    ) -> None:
        self.model = model
        self.names = names
        self.sink = sink
        self.device = device
        self.precision = precision
        self.stop = stop
        self.seen: set[str] = set()
        self._contexts = ExitStack()
        self._channels_last = False

    def _hook(self, name: str, output: Any) -> None:
        if name in self.seen:
            raise _shared_module_error(name)
        self.seen.add(name)
        self.sink(name, _tensor(name, output))
        if self.stop and len(self.seen) == len(self.names):
            raise _StopForward

    def __enter__(self) -> _Forward:
        with ExitStack() as contexts:
            contexts.enter_context(evaluating(self.model))
            self._channels_last = contexts.enter_context(channels_last(self.model, self.device))
            contexts.enter_context(torch.inference_mode())
            contexts.enter_context(capture(self.model, self.names, self._hook))
            self._contexts = contexts.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._contexts.close()

    def __call__(self, x: torch.Tensor) -> None:
        self.seen.clear()
        x = x.to(self.device)
        if self._channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with autocast(self.device, self.precision):
                self.model(x)
        except _StopForward:
            pass
        if missing := [name for name in self.names if name not in self.seen]:
            raise _not_run_error(missing)


def copy_flat(rows: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``rows`` (images x features, row-ordered) filled with ``output`` flattened in C, H, W order, in one
    copy whatever the output's memory format (``flatten`` of a channels-last output would copy it first)."""
    rows.view(output.shape).copy_(output)
    return rows


@contextmanager
def _ahead(batches: Iterator[Any]) -> Iterator[Iterator[Any]]:
    """The batches, each loaded on a thread of its own while the network runs on the one before (decoding
    an image leaves the GIL, as the network's kernels do); the loading stops when the block ends."""
    done = object()
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(next, batches, done)

        def loaded() -> Iterator[Any]:
            nonlocal loading
            while (batch := loading.result()) is not done:
                loading = pool.submit(next, batches, done)
                yield batch

        try:
            yield loaded()
        finally:
            loading.cancel()


def _first(batches: Iterable[Any]) -> tuple[Any, Iterator[Any]]:
    """The first batch (None when there is none) and an iterator over all of them, the first included."""
    iterator = iter(batches)
    first = next(iterator, None)
    return first, iterator if first is None else itertools.chain([first], iterator)


#: ``allocate(shape, dtype)``: a new uninitialised array, as ``np.empty`` gives.
Allocate = Callable[[tuple[int, int], np.dtype], np.ndarray]


class _Recorder:
    """The hook sink of :func:`extract`: copies each layer's output into rows of its preallocated array.

    The copy happens inside the hook, since a later in-place operation may overwrite the output; ``copy_``
    converts dtype and device in one step, straight into the array.
    """

    def __init__(self, features: dict[str, int], capacity: int, dtype: np.dtype, allocate: Allocate) -> None:
        self.capacity = capacity
        self.arrays = {name: allocate((capacity, m), dtype) for name, m in features.items()}
        self.rows = slice(0, 0)

    def start(self, n: int) -> None:
        if self.rows.stop + n > self.capacity:
            raise FaceprobeError(
                f"the loader yields more than the {self.capacity} images its dataset holds (a sampler with"
                " replacement?); give each image once"
            )
        self.rows = slice(self.rows.stop, self.rows.stop + n)

    def __call__(self, name: str, output: torch.Tensor) -> None:
        copy_flat(torch.from_numpy(self.arrays[name][self.rows]), output)


def extract(
    model: nn.Module,
    images: DataLoader | Iterable[Any] | torch.Tensor,
    layers: Sequence[str],
    dtype: DTypeLike = np.float32,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    *,
    precision: str = "float32",
    stop: bool = True,
    allocate: Allocate = np.empty,
) -> dict[str, np.ndarray]:
    """The outputs of ``layers`` for every image, one ``n x features`` array per layer name.

    Each batch goes through one forward pass (eval mode, ``torch.inference_mode``, ``precision`` as in
    :func:`faceprobe.devices.autocast`); forward hooks copy each layer's output, flattened in C, H, W order,
    into a preallocated array of ``dtype``, so only one copy of the activations is ever held. With ``stop``
    each pass ends right after the last of ``layers``: the rest of the network never runs. One dry forward
    of the first image checks the layers first. ``images`` is a DataLoader, any iterable of batches, or one
    batch; a batch is a tensor or an ``(images, targets)`` tuple. ``model`` is moved to ``device``; its
    train/eval modes are kept. ``progress(k)`` is called after each batch with the number of images it held.
    ``allocate`` makes the arrays (memory of the caller's to reuse, for instance).

    Raises:
        FaceprobeError: a layer name is unknown (closest names suggested), a layer runs more than once or not
            at all per forward, the precision is unknown, or there are no images.
    """
    recorder: _Recorder | None = None

    def make_recorder(features: dict[str, int], capacity: int) -> _Recorder:
        nonlocal recorder
        recorder = _Recorder(features, capacity, np.dtype(dtype), allocate)
        return recorder

    stream_outputs(model, images, layers, make_recorder, device, progress, precision=precision, stop=stop)
    assert recorder is not None
    done = recorder.rows.stop
    return {name: a if done == recorder.capacity else a[:done].copy() for name, a in recorder.arrays.items()}


def stream_outputs(
    model: nn.Module,
    images: DataLoader | Iterable[Any] | torch.Tensor,
    layers: Sequence[str],
    sink: Callable[[dict[str, int], int], Any],
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    *,
    precision: str = "float32",
    stop: bool = True,
) -> None:
    """Hand each batch's outputs of ``layers`` to a sink instead of keeping them, as :func:`extract` runs.

    ``sink(features, capacity)`` is called once, after the dry forward, with each layer's features per
    image and an upper bound on the images; it returns the consumer: ``consumer.start(n)`` announces a
    batch of n images, then ``consumer(name, output)`` receives each layer's output tensor, on ``device``,
    inside the forward hook (copy or reduce it there: later in-place operations may change it).
    """
    names = list(dict.fromkeys(layers))
    if not names:
        raise FaceprobeError("no layers to extract; name at least one (see block_layers())")
    batches, capacity = _sized(images)
    first, batches = _first(batches)
    if first is None or capacity == 0:
        raise FaceprobeError("no images to extract activations from; check the dataset is not empty")
    device = torch.device(device)
    model.to(device)
    features = _dry_run(model, batch_images(first)[:1].to(device), names, precision)
    consumer = sink({name: features[name] for name in names}, capacity)
    with _Forward(model, names, consumer, device, precision, stop) as forward, _ahead(batches) as batches:
        for batch in batches:
            x = batch_images(batch)
            consumer.start(len(x))
            forward(x)
            if progress is not None:
                progress(len(x))
