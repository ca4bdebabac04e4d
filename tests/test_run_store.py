"""Wide layers through the activation store: the runner probes from disk and gets the in-memory tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import UNITS_STUDY, tiny_study
from faceprobe.data.synth import generate
from faceprobe.errors import FaceprobeError
from faceprobe.run import load_config, read_table, run_study
from faceprobe.run.config import parse_config


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return generate(root / "faces", identities=12, images_per_identity=20, size=48, seed=0, workers=1)


def _run(faces, run_dir, memory_gb):
    path = run_dir.parent / f"{run_dir.name}.toml"
    run = {**UNITS_STUDY["run"], "memory_gb": memory_gb, "keep_store": True}
    path.write_text(tiny_study(faces, **{**UNITS_STUDY, "run": run}))
    run_study(load_config(path), run_dir)
    return read_table(run_dir, "results"), read_table(run_dir, "vip_study")


@pytest.fixture(scope="module")
def both(faces, tmp_path_factory, extractions):
    root = tmp_path_factory.mktemp("runs")
    modes = {"memory": 4.0, "store": 0}
    return {mode: (root / mode, *_run(faces, root / mode, gb)) for mode, gb in modes.items()}


def test_the_first_store_unit_extracts_every_later_units_layers_in_one_pass(both, extractions):
    _, results, _ = both["store"]
    layers = list(dict.fromkeys(results["layer"]))
    assert len(layers) > 2, "the model's layers span several units of 2"
    first, *later = extractions[: -(-len(layers) // 2)]  # one call per probe unit of the store run
    assert sorted(first["layers"]) == sorted(layers) and first["images"] == first["n"]  # all, in one pass
    assert later and all(call["images"] == 0 for call in later)  # the later units only read


def test_ablation_through_the_store_matches_it_in_memory_and_leaves_no_store_behind(both, extractions):
    memory_dir, store_dir = both["memory"][0], both["store"][0]
    memory, store = read_table(memory_dir, "ablation"), read_table(store_dir, "ablation")
    keys = ["ablated_layer", "fraction", "n_ablated", "attribute", "layer", "representation"]
    assert len(store) and store["fraction"].nunique() == 2
    pd.testing.assert_frame_equal(memory[keys], store[keys])
    for column in ("accuracy", "baseline_accuracy"):
        assert (memory[column] == store[column]).mean() > 0.9
        assert np.isclose(memory[column], store[column], atol=0.03).all()
    ablated = [call for call in extractions if call["ablated"]]
    assert len(ablated) == 2 and all(call["images"] == call["n"] for call in ablated)  # one per fraction
    assert all(store["ablated_layer"][0] not in call["layers"] for call in ablated)  # later layers only
    leftovers = store_dir / "store" / "ablated"
    assert not leftovers.exists() or not any(leftovers.iterdir()), "ablated stores are deleted once probed"


def test_a_store_run_probes_from_disk_and_matches_the_memory_run(both):
    memory_dir, memory, memory_vip = both["memory"]
    store_dir, store, store_vip = both["store"]
    assert not (memory_dir / "store").exists()
    arrays = list((store_dir / "store").rglob("zarr.json"))
    assert len(arrays) > 4, "every probed layer of the store run lives in its store"
    keys = ["model", "layer", "attribute", "representation", "unit", "split"]
    pd.testing.assert_frame_equal(memory[keys], store[keys])
    # Same activations, same draws: the probes agree up to float rounding of differently blocked sums.
    close = np.isclose(memory["accuracy"], store["accuracy"], atol=1.5 / memory["n_eval"], equal_nan=True)
    assert close.all()
    assert (memory["accuracy"] == store["accuracy"]).mean() > 0.9
    np.testing.assert_allclose(memory_vip["vip"], store_vip["vip"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("run", "fragment"),
    [
        ('store = "/tmp/elsewhere"', "inside the run folder"),
        ('store = "../outside"', "inside the run folder"),
        ('store_dtype = "int8"', "float32 or float16"),
        ("memory_gb = -1", "memory_gb"),
    ],
)
def test_config_cannot_write_outside_the_run_folder(run, fragment):
    raw = {"data": {"spec": "synthetic:x"}, "models": [{"architecture": "small"}], "run": {}}
    key, value = (part.strip() for part in run.split("=", 1))
    raw["run"][key] = value.strip('"') if value.startswith('"') else float(value)
    with pytest.raises(FaceprobeError, match=fragment):
        parse_config(raw, "study.toml")


def test_a_corrupted_chunk_is_detected_and_recomputed_not_used(both, faces):
    store_dir, results, _ = both["store"]
    chunks = sorted(
        f for f in (store_dir / "store").rglob("c/*/*") if f.is_file() and ".done" not in str(f.parent)
    )
    victim = chunks[len(chunks) // 2]
    intact = victim.read_bytes()
    corrupted = bytearray(intact)
    corrupted[len(corrupted) // 2] ^= 0xFF
    victim.write_bytes(bytes(corrupted))
    for done in (store_dir / "units").glob("*.done"):  # probe every layer again from the store
        done.unlink()
    for table in ("results", "vip_study"):
        for part in (store_dir / f"{table}.parquet").glob("*.parquet"):
            part.unlink()
    run_study(load_config(store_dir.parent / "store.toml"), store_dir)
    assert victim.read_bytes() == intact, "the bad chunk was extracted again, to the same values"
    pd.testing.assert_frame_equal(read_table(store_dir, "results"), results, check_exact=True)


def test_a_config_sets_each_model_s_preprocessing_and_strictness():
    from faceprobe.run.entries import model_entries

    raw = {
        "data": {"spec": "synthetic:x"},
        "models": [
            {
                "architecture": "small",
                "input_size": "40x32",
                "crop": [10, 20, 150, 200],
                "mean": [0.1, 0.2, 0.3],
                "std": [0.4, 0.5, 0.6],
                "bgr": True,
                "strict": False,
            },
            {"architecture": "small", "input_size": 48},
        ],
    }
    custom, square = (entry.load().preprocessing for entry in model_entries(parse_config(raw)))
    assert custom.input_size == (40, 32) and custom.crop == (10, 20, 150, 200) and custom.bgr
    assert custom.mean == (0.1, 0.2, 0.3) and custom.std == (0.4, 0.5, 0.6)
    assert square.input_size == (48, 48) and square.crop is None and not square.bgr
    raw["models"] = [{"architecture": "small", "input_size": "40y32"}]
    with pytest.raises(FaceprobeError, match="input_size takes HEIGHTxWIDTH"):
        model_entries(parse_config(raw))[0].load()
