"""Every probe-able output of a network, in execution order, and the selection of layers to probe.

:func:`catalogue` hooks every module that is not a pure container and keeps those that run exactly once per
forward and return a tensor, ordered by when their output is produced (a block after its inner layers).
What a name means, on torchvision's ResNet as the thesis probes it:

* ``layer1.0`` (kind "block"): the post-skip output, after the add and the ReLU that follows it;
* ``layer1.0.bn3`` (Bottleneck) or ``layer1.0.bn2`` (BasicBlock) (kind "residual"): the residual branch just
  before the add. torchvision adds the shortcut in place into this tensor, so hooks copy it when it is made;
* ``layer1.0.downsample``: the projected shortcut (only in a block's first unit);
* ``layer1.0.relu`` is absent: one ReLU module runs three times in each Bottleneck (after bn1, bn2 and the
  add), so it has no single output. Its first two outputs are what ``conv2`` and ``conv3`` read, i.e.
  ``bn1``/``bn2`` rectified; its last is ``layer1.0`` itself.

IResNet and MobileFaceNet blocks read the same way (``layer1.0``/``layer1.0.bn3``;
``conv_3.model.0``/``conv_3.model.0.project``), and so do MobileNetV2's residual blocks (``features.2`` /
``features.2.conv.3``). Modules that hand on their input's values (``Identity``, ``Dropout`` in eval,
``Flatten``) are left out as duplicates, except a model's embedding layer.
"""

from __future__ import annotations

import difflib
import fnmatch

import torch
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import _CONTAINERS, LayerInfo, _infos, _trace

__all__ = ["catalogue", "select_layers"]

_PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)


def catalogue(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every probe-able output of ``model``, in the order one dry forward of ``example`` produces them."""
    embedding = getattr(model, "embedding_layer", None)
    names = [
        name
        for name, module in model.named_modules()
        if name
        and type(module) not in _CONTAINERS
        and (not isinstance(module, _PASSTHROUGH) or name == embedding)
    ]
    calls = _trace(model, example, names)
    single = {n: outs[0] for n, outs in calls.items() if len(outs) == 1 and isinstance(outs[0], torch.Tensor)}
    return _infos(model, single)


def select_layers(layers: list[LayerInfo], spec: str) -> list[LayerInfo]:
    """The layers of a catalogue that ``spec`` names, in catalogue order.

    ``spec`` is ``auto`` (block level: the layers inside no other listed layer, as
    :func:`~faceprobe.extract.block_layers` lists them), ``all``, or comma-separated layer names and glob
    patterns (``layer*.?``, ``*.bn3``; ``*`` also matches dots).

    Raises:
        FaceprobeError: a name is not in the catalogue (the closest names are suggested), or a pattern
            matches nothing.
    """
    names = [info.name for info in layers]
    spec = spec.strip()
    if spec == "all":
        return list(layers)
    if spec == "auto":
        listed = set(names)
        return [
            info
            for info in layers
            if not any(
                ".".join(info.name.split(".")[:i]) in listed for i in range(1, info.name.count(".") + 1)
            )
        ]
    chosen: set[str] = set()
    for token in filter(None, (t.strip() for t in spec.split(","))):
        if any(c in token for c in "*?["):
            matched = fnmatch.filter(names, token)
            if not matched:
                hint = _pattern_hint(token, names)
                raise FaceprobeError(f"layer pattern {token!r} matches no layer; {hint}")
            chosen.update(matched)
        elif token in names:
            chosen.add(token)
        else:
            raise FaceprobeError(f"no probe-able layer {token!r}; {_name_hint(token, names)}")
    if not chosen:
        raise FaceprobeError(
            "no layers selected; give auto, all, or layer names or patterns separated by commas"
        )
    return [info for info in layers if info.name in chosen]


_SEE = "see `faceprobe layers MODEL`"


def _name_hint(token: str, names: list[str]) -> str:
    """ "did you mean ...?" for a layer name that is not in the catalogue, else where to look.

    Layer names are long dotted paths, so a typo is compared with whole names and with their tails (a
    name given without its ``backbone.`` prefix, ``stage1.O`` for ``backbone.stage1.0``).
    """
    tails: dict[str, str] = {}
    for name in names:
        parts = name.split(".")
        for i in range(len(parts)):
            tails.setdefault(".".join(parts[i:]), name)
    close = [tails[t] for t in difflib.get_close_matches(token, list(tails), n=6, cutoff=0.6)]
    close = list(dict.fromkeys([*difflib.get_close_matches(token, names, n=3, cutoff=0.6), *close]))[:3]
    return f"did you mean {', '.join(map(repr, close))}? ({_SEE})" if close else _SEE


def _pattern_hint(token: str, names: list[str]) -> str:
    """A pattern matching nothing is often anchored at the wrong place (``stage*`` for
    ``backbone.stage1.0``): suggest it with a leading ``*`` when that matches."""
    loose = "*" + token.lstrip("*")
    if fnmatch.filter(names, loose):
        return f"did you mean {loose!r}? ({_SEE})"
    return _SEE
