"""Batch norms folded into the convolutions before them, for the duration of an inference pass.

In eval mode a BatchNorm is an affine map per channel, so a convolution followed by it computes the same as
one convolution with scaled weights and a bias (the usual inference-time folding), in one pass over the
activations instead of two; the outputs equal the unfolded ones up to float32 rounding (docs/benchmarks.md
has the time it saves).

A pair is folded only where the network's graph (``torch.fx``) shows the convolution's output going to the
BatchNorm alone, each module called once, and neither module is a layer the study observes (``keep``: its
probed and ablated layers, the same set for every pass over the network, so that a layer's values do not
depend on which pass computed them) or carries a hook of its own. A network ``torch.fx`` cannot trace is run
as it is. The weights are restored, and the BatchNorms put back, when the block ends. Since the values differ
from the unfolded ones by rounding only, a stored layer written by a study that observed other layers still
serves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from faceprobe.extract.hooks import evaluating, hooked

__all__ = ["foldable_pairs", "folded_batchnorms"]


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module names where the graph sends the convolution's output to that
    BatchNorm only, each called once in the forward, both exactly ``nn.Conv2d`` and ``nn.BatchNorm2d`` (a
    subclass, a weight-standardised convolution say, may compute otherwise); none when the forward cannot
    be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # any error of an untraceable forward: nothing is folded
        return []
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and type(modules.get(source.target)) is nn.Conv2d  # a subclass may use its weight otherwise
            and len(source.users) == 1
            and calls[source.target] == calls[node.target] == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


@contextmanager
def folded_batchnorms(model: nn.Module, keep: Collection[str]) -> Iterator[None]:
    """Within the block ``model`` is in eval mode, and each :func:`foldable_pairs` pair whose modules are
    not in ``keep`` and carry no hooks computes as one convolution: the convolution's weight and bias
    replaced in place by the folded ones, the BatchNorm by an identity. Everything is put back on exit."""
    keep = set(keep)
    restore: list[tuple[nn.Conv2d, torch.Tensor, nn.Parameter | None, nn.Module, str, nn.Module]] = []
    with evaluating(model):
        try:
            with torch.no_grad():
                for conv_name, bn_name in foldable_pairs(model):
                    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
                    if {conv_name, bn_name} & keep or hooked(conv) or hooked(bn) or not _foldable(bn):
                        continue
                    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    weight, bias = fuse_conv_bn_weights(
                        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
                    )
                    parent_name, _, child = bn_name.rpartition(".")
                    parent = model.get_submodule(parent_name)
                    restore.append((conv, conv.weight.data, conv.bias, parent, child, bn))
                    conv.weight.data = weight.data
                    conv.bias = nn.Parameter(bias.data, requires_grad=False)
                    setattr(parent, child, nn.Identity())
            yield
        finally:
            for conv, weight, bias, parent, child, bn in reversed(restore):
                conv.weight.data = weight
                conv.bias = bias
                setattr(parent, child, bn)


def _foldable(bn: nn.BatchNorm2d) -> bool:
    """A BatchNorm that normalises by its running statistics (eval mode, statistics kept)."""
    return not bn.training and bn.running_mean is not None and bn.running_var is not None
