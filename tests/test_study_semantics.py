"""A study computes what it says: every model kept, splits never mixed, names checked before any work.

Each test here is a regression test of a fault found by reading the studies against the thesis; most run
through the real CLI, as a user meets them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_line_error, held_by_another_process, run_cli
from faceprobe.models.registry import build_model
from faceprobe.run import read_table
from faceprobe.run.config import parse_config

STUDY = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses", "Wearing_Hat"]
train = 16
val = 16
test = {test}
seed = 1

[[models]]
architecture = "small"
weights = {weights}
layers = "backbone.stage2.0,backbone.stage3.0,embedding"
input_size = 32

[probe]
components = 2
top_k = 2
single_units = true
vip_study = 0
{extra}
[run]
batch_size = 32
device = "cpu"
"""


def _study(folder: Path, data: Path, weights: str = '["random"]', test: int = 0, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text(STUDY.format(data=data, weights=weights, test=test, extra=extra))
    return path


def _checkpoint(path: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_file(build_model("small").state_dict(), path)
    return path


def test_two_checkpoints_of_one_architecture_are_two_models(tiny_faces, tmp_path):
    a, b = _checkpoint(tmp_path / "a.safetensors", 1), _checkpoint(tmp_path / "b.safetensors", 2)
    study = _study(tmp_path, tiny_faces, weights=f'["checkpoint:{a}", "checkpoint:{b}"]')
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    results = read_table(tmp_path / "run")
    assert results["model"].nunique() == 2 and results["weights"].nunique() == 2
    per_model = results.groupby("model").size()
    assert per_model.iloc[0] == per_model.iloc[1] > 0, "both networks are probed over the same cells"
    ids = sorted(results["model"].unique())
    assert all(i.startswith("small/") and i.endswith("/s0") for i in ids) and ids[0] != ids[1]
    status = run_cli("status", str(tmp_path / "run"))
    assert "2/2 work units finished" in " ".join(status.stdout.split())


def test_a_repeated_model_is_refused_and_a_name_labels_it(tiny_faces, tmp_path):
    raw = {
        "data": {"spec": f"synthetic:{tiny_faces}"},
        "models": [{"architecture": "small"}, {"architecture": "small", "seeds": [0]}],
    }
    from faceprobe.errors import FaceprobeError
    from faceprobe.run.entries import model_entries

    with pytest.raises(FaceprobeError, match="repeats the model"):
        model_entries(parse_config(raw))
    raw["models"][1]["input_size"] = 48  # another preprocessing: another model
    raw["models"][1]["name"] = "small-48"
    entries = model_entries(parse_config(raw))
    assert entries[1].id.startswith("small-48#") and entries[0].id != entries[1].id
    assert entries[0].id == model_entries(parse_config(raw))[0].id, "ids are stable"


def test_ablation_rows_compare_each_split_with_its_own_baseline(tiny_faces, tmp_path):
    extra = '[ablation]\ndepths = ["backbone.stage2.0"]\nfractions = [0.5]\nattributes = ["Eyeglasses"]\n'
    study = _study(tmp_path, tiny_faces, test=-1, extra=extra)
    assert run_cli("run", str(study), "--out", str(tmp_path / "run")).returncode == 0
    ablation, results = read_table(tmp_path / "run", "ablation"), read_table(tmp_path / "run")
    assert set(ablation["split"]) == {"val", "test"}
    clean = results.set_index(["layer", "attribute", "representation", "split"])["accuracy"]
    keys = list(ablation[["layer", "attribute", "representation", "split"]].itertuples(index=False))
    # the baseline of a row is the unablated probe of the same layer, attribute, representation and split
    assert (ablation["baseline_accuracy"].to_numpy() == clean.loc[keys].to_numpy()).all()
    assert (ablation["drop"] == ablation["baseline_accuracy"] - ablation["accuracy"]).all()
    assert set(ablation["ablated_depth"]) == {23}, "the depth the tables record for backbone.stage2.0"


def test_ablation_depth_means_the_tables_depth(tiny_faces, tmp_path):
    extra = '[ablation]\ndepths = [23]\nfractions = [0.5]\nattributes = ["Eyeglasses"]\n'
    study = _study(tmp_path, tiny_faces, extra=extra)
    assert run_cli("run", str(study), "--out", str(tmp_path / "run")).returncode == 0
    ablation, results = read_table(tmp_path / "run", "ablation"), read_table(tmp_path / "run")
    depth = results.loc[results["layer"] == "backbone.stage2.0", "depth"].iloc[0]
    assert set(ablation["ablated_layer"]) == {"backbone.stage2.0"} and depth == 23
    assert set(ablation["layer"]) == {"backbone.stage3.0", "embedding"}, "every later probed layer"


@pytest.mark.parametrize("depth", ["-1", "37", "99", '"nope"'])
def test_an_impossible_ablation_depth_is_refused_before_any_work(tiny_faces, tmp_path, depth):
    study = _study(tmp_path, tiny_faces, extra=f"[ablation]\ndepths = [{depth}]\n")
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "depth")
    if depth != "-1":
        assert "23" in proc.stderr and "33" in proc.stderr, "the message lists the valid depths"
    assert not (tmp_path / "run").exists(), "nothing is written for a study that cannot run"


def test_one_dimensional_layers_have_no_channel_rows(tiny_faces, tmp_path):
    study = _study(tmp_path, tiny_faces)
    assert run_cli("run", str(study), "--out", str(tmp_path / "run")).returncode == 0
    results = read_table(tmp_path / "run")
    kinds = {layer: set(rows) for layer, rows in results.groupby("layer")["representation"]}
    assert kinds["embedding"] == {"layer", "neurons", "neuron"}, "an embedding has neurons, not channels"
    assert {"channels", "channel"} <= kinds["backbone.stage3.0"], "a 2x2 map keeps its channels"


def test_every_name_is_checked_at_once_before_any_work(tiny_faces, tmp_path):
    extra = '[ablation]\ndepths = ["backbone.stage2.0"]\nattributes = ["Eyeglass"]\n'
    study = _study(tmp_path, tiny_faces, weights='["checkpoint:missing.safetensors"]', extra=extra)
    text = study.read_text().replace('"Wearing_Hat"]', '"Wearing_Hatt"]')
    study.write_text(text)
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert_one_line_error(
        proc, "Wearing_Hatt", "did you mean Wearing_Hat", "Eyeglass'", "missing.safetensors"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flag", "value"), [("--executor", "dusk"), ("--executor", "Local")])
def test_only_local_and_dask_executors(tiny_faces, tmp_path, flag, value):
    proc = run_cli("run", str(_study(tmp_path, tiny_faces)), flag, value, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"'{value}' is not one of" in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "run").exists()


def test_probe_precision_is_recorded_and_used(tiny_faces, tmp_path):
    common = ["probe", "--model", "small", "--data", f"synthetic:{tiny_faces}", "--attributes", "Eyeglasses"]
    common += ["--layers", "backbone.stage2.0", "--input-size", "32", "--train", "16", "--val", "16"]
    assert run_cli(*common, "--out", str(tmp_path / "f32")).returncode == 0
    assert run_cli(*common, "--precision", "bfloat16", "--out", str(tmp_path / "bf16")).returncode == 0
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["config"]["run"]["precision"] == "bfloat16"
    f32, bf16 = read_table(tmp_path / "f32"), read_table(tmp_path / "bf16")
    assert len(f32) == len(bf16)
    proc = run_cli(*common, "--precision", "float64", "--out", str(tmp_path / "bad"))
    assert_one_line_error(proc, "precision", "float64")


def test_a_resume_may_change_how_it_runs_but_not_what_it_computes(tiny_faces, tmp_path):
    study = _study(tmp_path, tiny_faces)
    run_dir = tmp_path / "run"
    assert run_cli("run", str(study), "--out", str(run_dir)).returncode == 0
    before = read_table(run_dir)
    study.write_text(study.read_text().replace("batch_size = 32", "batch_size = 7"))
    proc = run_cli("run", str(study), "--out", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(read_table(run_dir), before)
    study.write_text(study.read_text().replace("components = 2", "components = 3"))
    assert_one_line_error(run_cli("run", str(study), "--out", str(run_dir)), "probe.components differ")


def test_a_second_process_on_a_run_folder_is_refused_while_the_first_runs(tiny_faces, tmp_path):
    study = _study(tmp_path, tiny_faces)
    run_dir = tmp_path / "run"
    from faceprobe.run.lock import hold

    run_dir.mkdir()
    with held_by_another_process(run_dir) as holder:
        proc = run_cli("run", str(study), "--out", str(run_dir))
        assert_one_line_error(proc, "in use by process", str(holder.pid))
        assert not (run_dir / "results.parquet").exists()
    with hold(run_dir):  # the lock of a killed process is free at once
        pass
    assert run_cli("run", str(study), "--out", str(run_dir)).returncode == 0


def test_the_multitask_baseline_named_by_a_study_reaches_the_run(tiny_faces, tmp_path):
    baseline = tmp_path / "baseline.parquet"
    rows = [
        {"attribute": a, "accuracy": 0.9, "split": "test", "source": "multitask"} for a in ("Eyeglasses",)
    ]
    pd.DataFrame(rows).to_parquet(baseline)
    study = _study(tmp_path, tiny_faces, extra='[baseline]\npath = "baseline.parquet"\n')
    assert run_cli("run", str(study), "--out", str(tmp_path / "run")).returncode == 0
    copied = read_table(tmp_path / "run", "baseline")
    assert list(copied["attribute"]) == ["Eyeglasses"] and copied["accuracy"].iloc[0] == 0.9
    report = run_cli("report", str(tmp_path / "run"))
    assert report.returncode == 0, report.stderr
    assert "gap" in (tmp_path / "run" / "report" / "index.html").read_text()


# --- study files are data unless they say otherwise ---------------------------------------------------------


@pytest.mark.parametrize(
    "architecture", ["tempfile:mkdtemp", "sys:exit", "os:abort", "torchvision.models:resnet18"]
)
def test_a_study_file_runs_no_code_without_allow_code(tiny_faces, tmp_path, architecture):
    study = _study(tmp_path, tiny_faces)
    study.write_text(study.read_text().replace('architecture = "small"', f'architecture = "{architecture}"'))
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir())
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "allow_code")
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir()) <= before | {tmp_path}


@pytest.mark.parametrize(
    ("architecture", "says"),
    [
        ("tempfile:mkdtemp", "standard-library"),
        ("os:abort", "standard-library"),
        ("nosuchpkg.mod:build", "cannot find"),
    ],
)
def test_even_allowed_code_is_never_the_standard_library(tiny_faces, tmp_path, architecture, says):
    study = _study(tmp_path, tiny_faces)
    study.write_text(study.read_text().replace('architecture = "small"', f'architecture = "{architecture}"'))
    proc = run_cli("run", str(study), "--allow-code", "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, says)


def test_a_factory_that_needs_arguments_or_returns_no_module_is_one_line(tmp_path):
    from faceprobe.errors import FaceprobeError
    from faceprobe.models import load_model

    with pytest.raises(FaceprobeError, match="no required arguments"):
        load_model("torchvision.models:get_model")
    with pytest.raises(FaceprobeError, match=r"not a torch nn\.Module"):
        load_model("torchvision.models:list_models")


@pytest.mark.parametrize(
    "store", ["results.parquet", "manifest.json", "draws.parquet", "units/x", ".", "report"]
)
def test_the_store_may_not_be_a_path_the_run_folder_reserves(tiny_faces, tmp_path, store):
    raw = {"data": {"spec": f"synthetic:{tiny_faces}"}, "models": [{"architecture": "small"}]}
    from faceprobe.errors import FaceprobeError

    with pytest.raises(FaceprobeError, match=r"run\.store"):
        parse_config({**raw, "run": {"store": store, "memory_gb": 0}})


def test_relative_paths_are_read_against_the_study_file_and_a_resume_refuses_other_data(tiny_faces, tmp_path):
    import shutil

    data = tmp_path / "study" / "faces"
    shutil.copytree(tiny_faces, data)
    study = _study(tmp_path / "study", Path("faces"))
    run_dir = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "faces").mkdir(parents=True)  # a folder of the same relative name elsewhere
    assert run_cli("run", str(study), "--out", str(run_dir), cwd=elsewhere).returncode == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["data"]["spec"] == f"synthetic:{data.resolve()}"
    assert len(manifest["data"]["fingerprint"]) == 16
    before = read_table(run_dir)
    labels = data / "list_attr_celeba.txt"
    lines = labels.read_text().splitlines()
    lines[2] = lines[2].replace(" 1", " -1", 1) if " 1" in lines[2] else lines[2].replace("-1", " 1", 1)
    labels.write_text("\n".join(lines) + "\n")
    proc = run_cli("run", str(study), "--out", str(run_dir), cwd=tmp_path)
    assert_one_line_error(proc, "other data")
    pd.testing.assert_frame_equal(read_table(run_dir), before)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("seeds", "[0.5]", "whole number"),
        ("strict", '"no"', "true or false"),
        ("input_size", "[1, 2]", "not valid"),
    ],
)
def test_wrong_types_in_a_model_table_are_refused(tiny_faces, tmp_path, key, value, says):
    study = _study(tmp_path, tiny_faces)
    study.write_text(
        study.read_text()
        .replace("input_size = 32", f"input_size = 32\n{key} = {value}")
        .replace("input_size = 32\ninput_size", "input_size")
    )
    assert_one_line_error(run_cli("run", str(study), "--out", str(tmp_path / "run")), key, says)


@pytest.mark.parametrize(
    ("section", "key", "value", "says"),
    [
        ("probe", "single_units", '"no"', "true or false"),
        ("probe", "components", "2.5", "whole number"),
        ("data", "attributes", '"Eyeglasses"', "a list of names"),
        ("run", "batch_size", '"big"', "whole number"),
        ("data", "train", '"32"', "whole number"),
    ],
)
def test_wrong_types_are_refused_with_the_key(section, key, value, says):
    raw = {"data": {"spec": "synthetic:/nowhere"}, "models": [{"architecture": "small"}]}
    raw.setdefault(section, {})[key] = __import__("tomllib").loads(f"v = {value}")["v"]
    from faceprobe.errors import FaceprobeError

    with pytest.raises(FaceprobeError, match=f"{key}.*{says}"):
        parse_config(raw)


def test_every_problem_of_a_config_is_in_one_message():
    raw = {
        "data": {"spec": "synthetic:/x", "train": "32", "seed": 0.5},
        "models": [{"architecture": "small", "seeds": [0.5]}],
        "probe": {"components": 0},
    }
    from faceprobe.errors import FaceprobeError

    with pytest.raises(FaceprobeError) as caught:
        parse_config(raw)
    message = str(caught.value)
    assert "train" in message and "seed must" in message and "seeds[0]" in message
    assert "\n" not in message


# --- the thesis as a preset ---------------------------------------------------------------------------------


def test_the_thesis_preset_holds_the_thesis_settings(tmp_path):
    from faceprobe.run.entries import model_entries
    from faceprobe.run.presets import preset_config

    config = preset_config("thesis", "celeba:data", "resnet50", ("random", "checkpoint:face.safetensors"))
    data = config.data
    assert (data.attributes, data.train, data.val, data.test) == ("all", 2048, 6144, -1)
    assert data.spec == f"celeba:{(Path.cwd() / 'data').resolve()}"
    assert (config.probe.components, config.probe.top_k, config.probe.vip_study) == (8, 8, 50)
    assert config.probe.single_units and config.ablation is not None
    assert config.ablation.fractions == (0.01, 0.05, 0.10) and len(config.ablation.depths) == 3
    random, face = config.models
    assert random.weights == ("random",) and random.seeds == (0, 1, 2)
    assert face.seeds == (0,) and face.weights[0].endswith("face.safetensors")
    assert "layer*.?.bn3" in random.layers, "residual-internal points for the sawtooth (Fig. 5.8)"
    assert len(model_entries(config)) == 4
    mobile = preset_config("thesis", "celeba:data", "mobilenet_v2")
    assert mobile.models[0].layers == "auto" and all(isinstance(d, str) for d in mobile.ablation.depths)


def test_init_writes_the_preset_that_run_reads(tmp_path):
    from faceprobe.run.config import load_config

    proc = run_cli("init", "--preset", "thesis", str(tmp_path / "thesis.toml"))
    assert proc.returncode == 0, proc.stderr
    config = load_config(tmp_path / "thesis.toml")
    assert config.data.train == 2048 and config.data.test == -1
    assert_one_line_error(run_cli("init", str(tmp_path / "thesis.toml")), "exists", "--force")
    assert_one_line_error(run_cli("run", "--preset", "thesis", "--out", str(tmp_path / "r")), "--data")
    assert_one_line_error(
        run_cli(
            "run", "--preset", "nope", "--data", "celeba:x", "--model", "small", "--out", str(tmp_path / "r")
        ),
        "no preset",
    )


def test_the_plan_reads_random_networks_layers_without_building_their_weights(tiny_faces):
    """Planning a randomly initialised registry network builds it on the meta device: the same layers and
    shapes as the network the unit will run, for every architecture, and no weight ever holds a value."""
    from faceprobe.models import ARCHITECTURES
    from faceprobe.run.entries import model_entries
    from faceprobe.run.runner import _catalogue, _planned_catalogue

    models = [{"architecture": name, "input_size": 64} for name in ARCHITECTURES]
    entries = model_entries(parse_config({"data": {"spec": f"synthetic:{tiny_faces}"}, "models": models}))
    built: list[torch.device] = []
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: built.append(param.device) if param is not None else None
    )
    try:
        planned = {entry.table.architecture: _planned_catalogue(entry)[1] for entry in entries}
    finally:
        hook.remove()
    assert built and {device.type for device in built} == {"meta"}
    for entry in entries:
        assert planned[entry.table.architecture] == _catalogue(entry.load()), entry.table.architecture
