"""A network cut after its probed layers, so that each piece runs over every image before the next one.

Holding a unit's layers in RAM for one forward pass holds all of them at once. Cut after each layer where
nothing but that layer's output flows on, a network becomes a chain of pieces: the first runs on the
images, each later one on the rows of the layer before it, which are held anyway to be probed. Run piece
by piece, a unit holds at most the rows feeding the next piece and the rows that piece records, whatever
its number of layers, and the network still runs once over each image. (On a machine whose fresh memory
costs more than copying into it, this is also faster: docs/benchmarks.md.)

``torch.fx`` finds the cuts. A layer is a leaf of the trace (kept whole, so its hooks fire), as is every
module carrying a hook of its own (an ablation's zeroing); a network ``torch.fx`` cannot trace, a layer
inside another probed layer, or a cut that more than one value crosses (a skip connection over it, the
input used again later) leaves the network, or that part of it, in one piece.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from faceprobe.extract.hooks import hooked

__all__ = ["HeldRows", "Piece", "batch_like", "clean_cuts", "cut_pieces", "layout", "worth_cutting"]

#: Layers held in fewer bytes than this are held whole: the C allocator reuses blocks that small
#: (:data:`faceprobe.allocator.REUSED_BELOW`), and a few pieces' set-up costs more than their first touches.
_WORTH_CUTTING = 256 * 2**20


@dataclass(frozen=True)
class Piece:
    """One piece of a cut network: ``module`` records ``layers`` (their hooks fire inside it) and runs on
    the images, or, with a ``source``, on that layer's outputs."""

    module: nn.Module
    layers: tuple[str, ...]
    source: str | None = None


def worth_cutting(held_bytes: int) -> bool:
    """Whether layers held in ``held_bytes`` at once are worth holding piece by piece."""
    return held_bytes > _WORTH_CUTTING


class _LayersKept(fx.Tracer):
    """Traces into every module but the leaves: torch's own, the layers, and hooked modules."""

    def __init__(self, leaves: Collection[str]) -> None:
        super().__init__()
        self.leaves = frozenset(leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            module_qualified_name in self.leaves
            or hooked(m)
            or super().is_leaf_module(m, module_qualified_name)
        )


def _graph(model: nn.Module, leaves: Collection[str]) -> fx.Graph | None:
    """The traced graph with ``leaves`` kept whole; None where tracing fails or a leaf holds another."""
    names = sorted(leaves)
    if any(b.startswith(a + ".") for a in names for b in names):
        return None
    try:
        return _LayersKept(leaves).trace(model)
    except Exception:  # any failure to trace means: run the network whole
        return None


def _single_calls(nodes: list[fx.Node], layers: Collection[str]) -> dict[str, int] | None:
    """The position in ``nodes`` of each of ``layers``' calls; None unless each is called exactly once
    (not absent, as inside a hooked module, nor a module the network calls several times): only then are
    a layer's rows one piece's output."""
    calls: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        if node.op == "call_module" and node.target in layers:
            calls.setdefault(str(node.target), []).append(i)
    if len(calls) < len(set(layers)) or any(len(at) > 1 for at in calls.values()):
        return None
    return {name: at for name, (at,) in calls.items()}


def _cut_nodes(nodes: list[fx.Node], calls: dict[str, int]) -> dict[str, int]:
    """Position in ``nodes`` of each called layer that can be cut after: the only value that flows past
    its call is its output."""
    position = {node: i for i, node in enumerate(nodes)}
    last_use = [max((position[user] for user in node.users), default=i) for i, node in enumerate(nodes)]
    reach = list(itertools.accumulate(last_use, max))  # the furthest use of any node up to each position
    # past position i flows node i's output, and nothing before it: i is used later, nothing earlier is
    return {name: i for name, i in calls.items() if last_use[i] > i >= reach[i - 1]}


def clean_cuts(model: nn.Module, layers: Sequence[str]) -> frozenset[str]:
    """The layers of ``layers`` after which ``model`` can be cut (none where it cannot be traced)."""
    graph = _graph(model, layers)
    nodes = [] if graph is None else list(graph.nodes)
    calls = _single_calls(nodes, layers)
    return frozenset() if calls is None else frozenset(_cut_nodes(nodes, calls))


def cut_pieces(model: nn.Module, layers: Sequence[str], cuts: Collection[str]) -> list[Piece]:
    """``model`` as a chain of pieces that record ``layers`` (in the order the forward produces them),
    cut after those of ``cuts`` that are clean cuts (:func:`clean_cuts`), but the last layer; one piece,
    the model itself, where there are none.

    Each piece's module shares the model's modules (their weights, modes and hooks), and ends right after
    the last layer it records; nothing after the last layer is run.
    """
    graph = _graph(model, layers) if cuts else None
    nodes = [] if graph is None else list(graph.nodes)
    calls = _single_calls(nodes, layers)
    if calls is None:
        return [Piece(model, tuple(layers))]
    last = max(calls.values())
    ends = sorted(i for name, i in _cut_nodes(nodes, calls).items() if name in cuts and i < last)
    pieces, start, source = [], 0, None
    for end in [*ends, last]:
        recorded = tuple(name for name in layers if start <= calls[name] <= end)
        pieces.append(Piece(_piece_module(model, nodes, start, end), recorded, source))
        source = str(nodes[end].target)
        start = end + 1
    return pieces if len(pieces) > 1 else [Piece(model, tuple(layers))]


def _piece_module(model: nn.Module, nodes: list[fx.Node], start: int, end: int) -> fx.GraphModule:
    """The nodes from ``start`` to ``end`` as a module of one input: the network's input for the first
    piece, else the output of the node before ``start``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if start == 0:
        begin = 0
    else:
        env[nodes[start - 1]] = graph.placeholder("rows")
        begin = start
    for node in nodes[begin : end + 1]:
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[nodes[end]])
    return fx.GraphModule(model, graph)


def layout(output: torch.Tensor) -> tuple[int, ...] | None:
    """The strides of one image of a layer's output, for :func:`batch_like`; None unless it is dense
    with the batch outermost."""
    dense = output.is_contiguous() or (
        output.dim() == 4 and output.is_contiguous(memory_format=torch.channels_last)
    )
    return tuple(output.stride()[1:]) if dense else None


def batch_like(rows: torch.Tensor, strides: tuple[int, ...] | None) -> torch.Tensor:
    """A copy of a batch of held rows (images x the layer's shape) to run the next piece on, laid out with
    the ``strides`` the layer's own outputs had (:func:`layout`; contiguous without). A copy, since the
    piece may change its input in place (an in-place activation); laid out so, since the next layer's
    kernels may round differently on another layout (a channels-last CPU convolution does)."""
    if strides is None:
        return rows.clone(memory_format=torch.contiguous_format)
    out = torch.empty_strided(rows.shape, (math.prod(rows.shape[1:]), *strides), dtype=rows.dtype)
    return out.copy_(rows)


class HeldRows(torch.utils.data.Dataset):
    """A layer's held rows (images x features, in C, H, W order) as the input of the next piece, a batch
    at a time: ``DataLoader(HeldRows(...), batch_size, collate_fn=HeldRows.collate)``; each batch a copy
    laid out as the layer's outputs were (:func:`batch_like`)."""

    def __init__(self, rows: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...] | None) -> None:
        self.rows, self.shape, self.strides = rows, shape, strides

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        """A batch of consecutive rows (the DataLoader's sequential sampler) in one copy."""
        block = torch.from_numpy(self.rows[indices[0] : indices[-1] + 1])
        return batch_like(block.view(-1, *self.shape), self.strides)

    @staticmethod
    def collate(batch: torch.Tensor) -> torch.Tensor:
        return batch
