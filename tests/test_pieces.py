"""A network cut into pieces after its probed layers: where it can be cut, that each piece run on the rows
of the layer before it records what one whole forward pass records, and that a unit held piece by piece
gives the probes of a unit held whole."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from faceprobe.allocator import ReusedArrays
from faceprobe.extract import block_layers, capture, extract
from faceprobe.extract.ablation import ablate
from faceprobe.extract.pieces import Piece, batch_like, clean_cuts, cut_pieces, layout
from faceprobe.models import load_model
from faceprobe.run import work
from faceprobe.run.cost import held_bytes, held_cuts
from faceprobe.studies.layerwise import AttributeRows


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


class _Skip(nn.Module):
    """``a``'s output is added to ``b``'s: the network can be cut after ``a``, not after ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.c(torch.relu(self.b(h) + h))


class _Branching(nn.Module):
    """Control flow on a value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h) if h.sum() > 0 else self.b(-h)


def _cut_everywhere(model: nn.Module, layers: list[str]) -> list[Piece]:
    """The pieces of ``model`` cut after every layer it can be cut after."""
    return cut_pieces(model, layers, clean_cuts(model, layers))


def _run_pieces(pieces: list[Piece], x: torch.Tensor, shapes: dict) -> dict[str, np.ndarray]:
    """Every piece in turn over ``x`` in batches of 4, each later one on the rows extract gave the layer
    before it, copied and laid out as the unit does (the layout its outputs had)."""
    out: dict[str, np.ndarray] = {}
    strides: dict[str, tuple | None] = {}
    for piece in pieces:
        if piece.source is None:
            images = list(torch.split(x, 4))
        else:
            rows = torch.from_numpy(out[piece.source]).view(-1, *shapes[piece.source])
            images = [batch_like(batch, strides[piece.source]) for batch in torch.split(rows, 4)]
        last = piece.layers[-1]
        with capture(piece.module, [last], lambda name, output: strides.setdefault(name, layout(output))):
            out |= extract(piece.module, images, piece.layers)
    return out


@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v2", "vgg16", "iresnet18"])
def test_a_network_is_cut_after_every_block_and_its_pieces_record_what_one_pass_records(architecture):
    """The thesis's architectures and a face backbone: one piece per block output, and the same values
    to the last bit as one forward pass of the whole network."""
    model = load_model(architecture, "random", input_size=(32, 32)).module
    x = torch.randn(10, 3, 32, 32)
    infos = block_layers(model, x[:1])
    names = [info.name for info in infos]
    pieces = _cut_everywhere(model, names)
    assert [piece.layers for piece in pieces] == [(name,) for name in names]
    assert [piece.source for piece in pieces] == [None, *names[:-1]]
    whole = extract(model, list(torch.split(x, 4)), names)
    cut = _run_pieces(pieces, x, {info.name: info.shape for info in infos})
    for name in names:
        np.testing.assert_array_equal(cut[name], whole[name], err_msg=name)


def test_a_cut_that_another_value_crosses_is_not_made():
    model = _Skip().eval()
    assert clean_cuts(model, ["a", "b", "c"]) == {"a", "c"}  # b: a's output crosses it too
    pieces = _cut_everywhere(model, ["a", "b", "c"])
    assert [(p.layers, p.source) for p in pieces] == [(("a",), None), (("b", "c"), "a")]
    x = torch.randn(9, 6)
    whole = extract(model, list(torch.split(x, 4)), ["a", "b", "c"])
    cut = _run_pieces(pieces, x, {"a": (6,), "b": (6,)})
    for name in "abc":
        np.testing.assert_array_equal(cut[name], whole[name])


def test_a_network_fx_cannot_trace_nested_layers_or_layers_in_a_hooked_module_stay_whole():
    branching = _Branching()
    assert cut_pieces(branching, ["a", "b"], {"a"}) == [Piece(branching, ("a", "b"))]
    model = _resnet18()
    nested = ("layer1", "layer1.0", "layer2")
    assert cut_pieces(model, list(nested), set(nested)) == [Piece(model, nested)]
    inside = ("layer2.0", "layer2.1", "layer3.0")
    handle = model.layer2.register_forward_hook(lambda *args: None)  # layer2 kept whole: no call of layer2.0
    try:
        assert clean_cuts(model, inside) == frozenset()
        assert cut_pieces(model, list(inside), set(inside)) == [Piece(model, inside)]
    finally:
        handle.remove()
    assert len(_cut_everywhere(model, list(inside))) == 3


def test_a_module_called_several_times_is_no_cut_for_the_plan_nor_for_the_run():
    """ResNet's blocks call their one ReLU three times: its rows are no piece's output, so neither the
    plan (which counts a unit's memory by its cuts) nor the run cuts the network around it."""
    model = _resnet18()
    layers = ["layer1.0.relu", "layer2.0", "layer3.0"]
    assert clean_cuts(model, layers) == frozenset()
    assert cut_pieces(model, layers, {"layer2.0"}) == [Piece(model, tuple(layers))]


def test_the_network_is_cut_where_asked_only():
    model = _resnet18()
    layers = ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert clean_cuts(model, layers) == set(layers)
    pieces = cut_pieces(model, layers, {"layer2.0", "layer4.0"})  # after the last layer there is no piece
    assert [(p.layers, p.source) for p in pieces] == [
        (("layer1.0", "layer2.0"), None),
        (("layer3.0", "layer4.0"), "layer2.0"),
    ]
    assert cut_pieces(model, layers, set()) == [Piece(model, tuple(layers))]


def test_a_hooked_module_is_kept_whole_so_an_ablation_applies_in_every_piece():
    model = _resnet18()
    x = torch.randn(8, 3, 32, 32)
    names = ["layer2.0", "layer3.0", "layer4.0"]
    shapes = {info.name: info.shape for info in block_layers(model, x[:1])}
    with ablate(model, "layer1.1", neurons=np.arange(0, 4096, 3)):
        whole = extract(model, list(torch.split(x, 4)), names)
        pieces = _cut_everywhere(model, names)
        assert len(pieces) == 3
        cut = _run_pieces(pieces, x, shapes)
    clean = extract(model, list(torch.split(x, 4)), names)
    for name in names:
        np.testing.assert_array_equal(cut[name], whole[name])
        assert not np.array_equal(clean[name], whole[name])  # the ablation did change them


def test_memory_is_lent_again_only_when_nothing_else_holds_it():
    reused = ReusedArrays(keep=1)
    first = reused.take((4, 8), np.dtype(np.float32))
    address = first.ctypes.data
    arrays = {"a": first}
    del first
    reused.give(arrays, "a")
    again = reused.take((2, 8), np.dtype(np.float32))  # smaller: lent from the same buffer
    assert again.ctypes.data == address and again.shape == (2, 8)
    held = {"b": again}
    view = again[1:]
    del again
    reused.give(held, "b")  # a view of it is alive: not lent again
    assert reused.take((2, 8), np.dtype(np.float32)).ctypes.data != address
    assert view.base is not None


@pytest.fixture(scope="module")
def resnet_unit():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    images = torch.rand(48, 3, 32, 32)
    rng = np.random.default_rng(0)
    rows = {}
    for attribute in ("A", "B"):
        y = rng.integers(0, 2, 48)
        train, val = np.arange(0, 32), np.arange(32, 48)
        rows[attribute] = AttributeRows(train, val, y[train], y[val])
    infos = [i for i in block_layers(model, images[:1]) if i.name.startswith(("layer", "avgpool"))]
    return model, images, rows, infos


def test_a_unit_held_piece_by_piece_gives_the_probes_of_a_unit_held_whole(resnet_unit, monkeypatch):
    model, images, rows, infos = resnet_unit
    forward = work.Forward(model, None, None, tuple(map(str, range(48))), batch_size=8)
    monkeypatch.setattr(work.Forward, "loader", lambda self: list(torch.split(images, 8)))

    def fits(cuts):
        source = work._InMemory(forward, infos, cuts)
        out = {}
        for info in infos:
            out[info.name] = source.probe(
                info, lambda X, info=info: work.fit_layer(X, info.shape, rows, 3, 3)
            )
        return out, source

    cut, source = fits(clean_cuts(model, [info.name for info in infos]))
    assert source.n_pieces == len(infos)
    assert source.memory.free, "memory of probed layers is lent again"
    whole, source = fits(frozenset())
    assert source.n_pieces == 1
    for info in infos:
        for attribute in rows:
            a, b = cut[info.name].fits[attribute], whole[info.name].fits[attribute]
            np.testing.assert_array_equal(a.vip, b.vip, err_msg=info.name)


def test_the_plan_counts_one_piece_its_source_and_one_layer_kept_for_reuse():
    layers, features = ("a", "b", "c", "d", "e"), (10, 10, 10, 10, 2)
    every = SimpleNamespace(layers=layers, features=features, cuts=frozenset("abcd"))
    n = 2**24  # images: enough bytes to be worth cutting
    assert held_bytes(every, layers, n) == (20 + 10) * n * 4  # b (source) + c, and a freed layer's memory
    assert held_bytes(every, ("a", "e"), n) == 12 * n * 4  # a held subset (the others streamed): at most all
    uncut = SimpleNamespace(**{**vars(every), "cuts": frozenset()})
    assert held_bytes(uncut, layers, n) == sum(features) * n * 4
    after_b = SimpleNamespace(**{**vars(every), "cuts": frozenset("b")})
    assert held_bytes(after_b, layers, n) == sum(features) * n * 4  # the piece c..e and its source b, + 10
    assert held_bytes(every, layers, 1000) == sum(features) * 1000 * 4  # too small to cut: held whole
    # the run cuts where the plan counted its cuts, and nowhere else
    assert held_cuts(every, layers, n) == every.cuts and held_cuts(every, ("a", "e"), n) == {"a"}
    assert held_cuts(every, layers, 1000) == frozenset()


def test_progress_advances_through_every_piece_and_counts_each_image_once(resnet_unit, monkeypatch):
    """A unit's bar counts its train images: each piece's batches an equal share, so it moves while the
    later pieces run (not only during the first) and ends at the number of images."""
    model, images, _, infos = resnet_unit
    done: list[int] = []
    forward = work.Forward(model, None, None, tuple(map(str, range(48))), batch_size=8, progress=done.append)
    monkeypatch.setattr(work.Forward, "loader", lambda self: list(torch.split(images, 8)))
    source = work._InMemory(forward, infos, clean_cuts(model, [info.name for info in infos]))
    assert len(source.pieces) == len(infos) > 2
    counted = []
    for info in infos:
        source.probe(info, lambda X: None)
        counted.append(sum(done))
    assert counted == sorted(counted) and counted[-1] == 48
    assert 0 < counted[0] < counted[1] < 48, counted
