"""Layer probing rows, the results table and the depth figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faceprobe.results import RESULT_COLUMNS, STABLE_COLUMNS, read_results, to_frame, write_results
from faceprobe.studies import layerwise
from faceprobe.studies.layerwise import AttributeRows, probe_layer
from faceprobe.studies.units import sample_by_vip


def _layer_with_channel_signal(n=600, shape=(6, 4, 4), seed=0):
    """Channel 3 lights up for attribute A; nothing encodes the random control."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    control = rng.integers(0, 2, n)
    X = np.maximum(rng.normal(size=(n, *shape)), 0).astype(np.float32)
    X[:, 3] += 1.5 * a[:, None, None]
    idx = np.arange(n)
    rows = {
        name: AttributeRows(train=idx[:300], val=idx[300:], y_train=y[:300], y_val=y[300:])
        for name, y in (("A", a), ("Control_Random", control))
    }
    return X.reshape(n, -1), shape, rows


def test_probe_layer_finds_the_channel_and_leaves_the_control_at_chance():
    X, shape, rows = _layer_with_channel_signal()
    out = pd.DataFrame(probe_layer(X, shape, rows, k=2).rows)
    assert len(out) == 6
    a = out[out.attribute == "A"].set_index("representation")["accuracy"]
    assert a["layer"] > 0.95 and a["channels"] > 0.95 and a["neurons"] > 0.85
    control = out[out.attribute == "Control_Random"]["accuracy"]
    assert control.between(0.38, 0.62).all()
    assert set(out["k"]) == {0, 2}
    assert (out["n_train"] == 300).all() and (out["n_eval"] == 300).all()


class _StoredLayer:
    """An on-disk-like layer: not an ndarray, float16, 64-row chunks; counts the passes over it."""

    def __init__(self, X):
        self.X, self.shape, self.dtype, self.chunks = (
            X.astype(np.float16),
            X.shape,
            np.float16,
            (64, X.shape[1]),
        )
        self.passes = 0
        self.reads = []  # (first row, last row + 1) of every read

    def __getitem__(self, rows):
        self.passes += rows.start == 0
        self.reads.append((rows.start, rows.stop))
        return self.X[rows]


@pytest.mark.parametrize(("units_bytes", "unit_reads"), [(2**30, 0), (1, 2)])
def test_a_stored_layer_gives_the_rows_of_the_same_layer_in_memory(monkeypatch, units_bytes, unit_reads):
    # The units of every attribute are read on their train rows in as few passes as the budget allows:
    # one pass, or one per attribute; then one more reads out their evaluation rows inside X.
    X, shape, rows = _layer_with_channel_signal()
    rows["B"] = rows["A"]
    monkeypatch.setattr(layerwise, "UNITS_BYTES", units_bytes)
    stored = _StoredLayer(X)
    ours = probe_layer(stored, shape, rows, k=2, vip_study=5)
    expected = probe_layer(stored.X.astype(np.float32), shape, rows, k=2, vip_study=5)
    for table in ("rows", "vip_rows"):
        pd.testing.assert_frame_equal(
            pd.DataFrame(getattr(ours, table)), pd.DataFrame(getattr(expected, table))
        )
    assert stored.passes == 8 + 1 + 1 + unit_reads + 1  # PLS(8) + its means, units, more units, readouts


def test_units_of_a_stored_layer_are_read_on_the_rows_their_attributes_use_only(monkeypatch):
    """A stored layer is as high as the union of every attribute's images (tens of thousands at the
    thesis's scale): the units of a few attributes are read on their own rows, not on every row of it."""
    X, shape, rows = _layer_with_channel_signal(n=900)
    for name, sel in list(rows.items()):  # each attribute on its own third of the rows, the last third unused
        offset = 300 if name == "A" else 0
        rows[name] = AttributeRows(
            sel.train[:150] + offset, sel.train[150:300] + offset, sel.y_train[:150], sel.y_train[150:]
        )
    read = []
    original = layerwise._read_columns

    def spy(X, columns, rows):
        read.append(len(rows))
        return original(X, columns, rows)

    monkeypatch.setattr(layerwise, "_read_columns", spy)
    monkeypatch.setattr(layerwise, "UNITS_BYTES", 1)  # one read per attribute
    monkeypatch.setattr(layerwise, "_UNIT_READ_BLOCK_BYTES", 64 * X.shape[1] * 4)  # blocks of 64 rows
    stored = _StoredLayer(X)
    fitted = layerwise._layer_pls
    monkeypatch.setattr(layerwise, "_layer_pls", lambda *a: (fitted(*a), stored.reads.clear())[0])
    ours = probe_layer(stored, shape, rows, k=2, vip_study=5)
    assert read == [150, 150]  # their train rows: the evaluation rows are read out after the fits
    assert stored.reads and max(stop for _, stop in stored.reads) <= 640  # rows 640-899 are no one's
    expected = probe_layer(_StoredLayer(X).X.astype(np.float32), shape, rows, k=2, vip_study=5)
    for table in ("rows", "vip_rows"):
        pd.testing.assert_frame_equal(
            pd.DataFrame(getattr(ours, table)), pd.DataFrame(getattr(expected, table))
        )


def test_evaluation_rows_inside_a_layer_are_read_out_a_batch_at_a_time_wherever_it_is(monkeypatch):
    """At the thesis's scale an attribute's evaluation rows inside a stored layer are thousands, on
    hundreds of thousands of picked columns: after the fits they are read out in batches of a bounded
    size, the same batches wherever the layer is, so that the tables are the same."""
    X, shape, rows = _layer_with_channel_signal()
    stored = _StoredLayer(X)
    expected = probe_layer(stored.X.astype(np.float32), shape, rows, k=2, vip_study=5)  # in one batch each
    limit = 4 * 40 * 7  # about 7 rows of an attribute's 39 picked columns
    monkeypatch.setattr(layerwise, "KNOWN_ROWS_BYTES", limit)
    sizes = []
    read = layerwise._ReadoutEntries.read

    def spy(self, batch, values):
        sizes.append(values.nbytes)
        return read(self, batch, values)

    monkeypatch.setattr(layerwise._ReadoutEntries, "read", spy)
    ours = probe_layer(stored, shape, rows, k=2, vip_study=5)
    assert max(sizes) <= limit < sum(sizes) / 20  # two attributes' 300 evaluation rows, in many batches
    in_memory = probe_layer(stored.X.astype(np.float32), shape, rows, k=2, vip_study=5)
    for table in ("rows", "vip_rows"):
        pd.testing.assert_frame_equal(
            pd.DataFrame(getattr(ours, table)), pd.DataFrame(getattr(in_memory, table))
        )
        pd.testing.assert_frame_equal(
            pd.DataFrame(getattr(ours, table)), pd.DataFrame(getattr(expected, table))
        )


def _sample_by_definition(vip, n, rng):
    """Fig. 5.9's sample as defined: neurons in a stable argsort of VIP (ties by index), a uniform VIP
    target each, the nearest free neuron in that order taken."""
    order = np.argsort(vip, kind="stable")
    ranked = vip[order]
    taken, picked = np.zeros(len(vip), dtype=bool), []
    for target in np.sort(rng.uniform(ranked[0], ranked[-1], size=min(n, len(vip)))):
        lo = hi = int(np.clip(np.searchsorted(ranked, target), 0, len(vip) - 1))
        while taken[lo] and taken[hi]:
            lo, hi = max(lo - 1, 0), min(hi + 1, len(vip) - 1)
        nearer_below = target - ranked[lo] <= ranked[hi] - target
        choice = lo if not taken[lo] and (taken[hi] or nearer_below) else hi
        taken[choice] = True
        picked.append(order[choice])
    return np.array(picked)


def test_the_vip_study_samples_the_neurons_its_definition_names_ties_and_all():
    # Dead neurons share VIP 0 and saturated ones another value: ties are where a shortcut would differ.
    rng = np.random.default_rng(0)
    for trial in range(200):
        m = int(rng.integers(1, 300))
        vip = rng.gamma(0.5, size=m).astype(np.float32)
        vip[rng.random(m) < 0.3], vip[rng.random(m) < 0.2] = 0.0, 1.5
        n = int(rng.integers(1, 80))
        ours = sample_by_vip(vip, n, np.random.default_rng(trial))
        np.testing.assert_array_equal(ours, _sample_by_definition(vip, n, np.random.default_rng(trial)))
        assert len(set(ours.tolist())) == len(ours) == min(n, m)


def test_constant_layer_gives_nan_rows_with_the_reason():
    _, shape, rows = _layer_with_channel_signal()
    X = np.zeros((600, int(np.prod(shape))), dtype=np.float32)
    out = pd.DataFrame(probe_layer(X, shape, rows).rows)
    assert out["accuracy"].isna().all()
    assert out["note"].str.contains("constant layer").all()


def test_results_round_trip_with_the_stable_columns(tmp_path):
    X, shape, rows = _layer_with_channel_signal()
    raw = [
        {"model": "m", "layer": "l", "depth": 0, "n_features": X.shape[1], **r}
        for r in probe_layer(X, shape, rows).rows
    ]
    path = write_results(raw, tmp_path / "results.parquet")
    back = read_results(path)
    assert list(back.columns) == list(RESULT_COLUMNS)
    assert set(STABLE_COLUMNS) <= set(back.columns)
    pd.testing.assert_frame_equal(back, to_frame(raw))
    assert not list(tmp_path.glob(".*tmp"))


def test_rows_missing_a_stable_column_are_refused():
    with pytest.raises(KeyError, match="accuracy"):
        to_frame([{c: 0 for c in STABLE_COLUMNS if c != "accuracy"}])


def test_depth_figure_is_written(tmp_path):
    from faceprobe.report.figures import plot_depth_curves

    X, shape, rows = _layer_with_channel_signal()
    raw = []
    for depth in range(3):
        raw += [
            {"model": "m", "layer": f"l{depth}", "depth": depth, **r}
            for r in probe_layer(X, shape, rows).rows
        ]
    path = plot_depth_curves(to_frame(raw), tmp_path / "fig.png", title="t")
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_units_columns_are_gathered_as_numpy_indexes_them():
    """Whole channels and lone neurons of a float16 layer, rows in any order and repeated: the values of
    ``X[np.ix_(rows, columns)]``, in float32."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6 * 25)).astype(np.float16)
    channels = np.concatenate([np.arange(25, 50), np.arange(100, 125)])  # channels 1 and 4 of 5 x 5
    columns = np.unique(np.concatenate([channels, [0, 7, 50, 51, 149]]))  # 50, 51 extend channel 1's run
    rows = np.array([39, 3, 3, 0, 17])
    out = layerwise._gather(X, rows, columns)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X[np.ix_(rows, columns)].astype(np.float32))
    assert layerwise._gather(X, rows, columns[:0]).shape == (5, 0)
