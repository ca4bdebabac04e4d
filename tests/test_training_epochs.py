"""Probing across training: `train recognition --save-every` keeps epochs, `epochs:DIR` probes each as a
model, and the report draws accuracy over layer and epoch.

Everything runs through the CLI on the tiny synthetic faces, with the `small` network at 32 pixels; training
in this process, the study and the report as a user starts them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import assert_one_line_error, run_cli
from faceprobe.cli import app
from faceprobe.errors import FaceprobeError
from faceprobe.models import load_model
from faceprobe.models.checkpoint import load_checkpoint, save_checkpoint
from faceprobe.models.registry import build_model
from faceprobe.report.run import combine_runs, load_run
from faceprobe.report.training import epoch_curves
from faceprobe.run import read_table

TRAIN = ["--model", "small", "--input-size", "32", "--batch-size", "8", "--lr", "0.05", "--no-amp"]


def _train(data: Path, out: Path, epochs: int, *extra: str) -> None:
    """`faceprobe train recognition`, in this process (a new one would spend seconds importing torch)."""
    args = ["--data", f"synthetic:{data}", "--out", str(out), "--epochs", str(epochs), *TRAIN, *extra]
    result = CliRunner().invoke(app, ["train", "recognition", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def _epochs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "epochs").iterdir())


@pytest.fixture(scope="module")
def trained(tiny_faces, tmp_path_factory) -> tuple[Path, int]:
    """A training folder keeping epochs 1, 2 and 3: trained for 2 epochs, then resumed to 3; and the time
    stamp epoch 1's weights had before the resume."""
    out = tmp_path_factory.mktemp("training") / "face"
    _train(tiny_faces, out, 2, "--save-every", "1")
    stamp = (out / "epochs" / "epoch-0001" / "model.safetensors").stat().st_mtime_ns
    _train(tiny_faces, out, 3, "--save-every", "1")
    return out, stamp


def test_save_every_keeps_every_nth_epoch_and_a_resume_adds_the_later_ones(trained, tiny_faces, tmp_path):
    out, stamp = trained
    assert _epochs(out) == ["epoch-0001", "epoch-0002", "epoch-0003"]
    weights = out / "epochs" / "epoch-0001" / "model.safetensors"
    assert weights.stat().st_mtime_ns == stamp, "a resumed run keeps the epochs already saved"
    for epoch in (1, 2, 3):
        _, metadata = load_checkpoint(out / "epochs" / f"epoch-{epoch:04d}")
        assert metadata["epoch"] == epoch and len(metadata["history"]) == epoch
        assert metadata["architecture"] == "small" and metadata["recipe"]["save_every"] == 1
        assert metadata["metrics"]["loss"] == metadata["history"][-1]["loss"]
    # The last kept epoch is the network the training state holds after it.
    state = load_file(str(out / "last" / "state.safetensors"))
    last = load_file(str(out / "epochs" / "epoch-0003" / "model.safetensors"))
    assert last.keys() == {k.removeprefix("model.") for k in state if k.startswith("model.")}
    assert all(last[k].equal(state[f"model.{k}"]) for k in last)

    straight = tmp_path / "straight"
    _train(tiny_faces, straight, 3, "--save-every", "3")
    assert _epochs(straight) == ["epoch-0003"]
    uninterrupted = load_file(str(straight / "epochs" / "epoch-0003" / "model.safetensors"))
    assert all(uninterrupted[k].equal(last[k]) for k in last), "a resumed run saves what it would have"

    # Started over (state deleted): epochs of the earlier run are not left beside the new run's.
    shutil.rmtree(straight / "last")
    _train(tiny_faces, straight, 1, "--save-every", "1")
    assert _epochs(straight) == ["epoch-0001"]


STUDY = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses", "Wearing_Hat"]
train = 16
val = 16
seed = 1

[[models]]
architecture = "small"
weights = ["epochs:face", "random"]
layers = "backbone.stage2.0,backbone.stage3.0,embedding"
input_size = 32

[probe]
components = 2
top_k = 2
single_units = false
vip_study = 4

[run]
batch_size = 32
device = "cpu"
"""


def test_a_training_folder_is_one_model_per_epoch_and_the_report_draws_them(trained, tiny_faces, tmp_path):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "face").symlink_to(trained[0], target_is_directory=True)  # "epochs:face", beside the file
    study = study_dir / "study.toml"
    study.write_text(STUDY.format(data=tiny_faces))
    run = tmp_path / "run"
    proc = run_cli("run", str(study), "--out", str(run), cwd=tmp_path)  # relative to the file, not cwd
    assert proc.returncode == 0, proc.stderr + proc.stdout

    results = read_table(run)
    per_model = results.groupby("model")[["epoch", "weights"]].agg(lambda c: set(c))
    assert len(per_model) == 4, "three epochs and the random network"
    assert all(len(e) == 1 for e in per_model["epoch"]), "each model is one epoch"
    epochs = {next(iter(e)): m for m, e in per_model["epoch"].items()}
    assert sorted(epochs) == [-1, 1, 2, 3]
    for epoch in (1, 2, 3):
        model = epochs[epoch]
        assert model.startswith(f"small/face/epoch-{epoch}#") and model.endswith("/s0")
        weights = next(iter(per_model.loc[model, "weights"]))
        assert weights == f"checkpoint:{(study_dir / 'face').resolve() / 'epochs' / f'epoch-{epoch:04d}'}"
    assert epochs[-1].startswith("small/random#")
    cells = results.groupby("model").size()
    assert cells.nunique() == 1, "every epoch is probed over the same cells"
    # The VIP study tells epochs apart by the same model ids.
    vip = read_table(run, "vip_study")
    assert set(vip["model"]) == set(epochs.values())
    manifest = json.loads((run / "manifest.json").read_text())
    assert sorted(m["epoch"] for m in manifest["models"]) == [-1, 1, 2, 3]

    proc = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Across training" in page
    assert "small/face: whole-layer validation accuracy over layer and epoch" in page
    figures = tmp_path / "report" / "figures"
    for kind in ("heatmap", "curves"):
        assert (figures / f"training-{kind}-small-face.png").stat().st_size > 0
    drawn = pd.read_csv(figures / "training-heatmap-small-face.csv")
    assert set(drawn["network"]) == {"small/face"}
    assert set(drawn["attribute"]) == {"Eyeglasses", "Wearing_Hat", "Control_Random"}
    for _, one in drawn.groupby("attribute"):
        assert sorted(one["epoch"].unique()) == [1, 2, 3]
        assert len(one) == 3 * 3, "every epoch at every probed layer"
    layer = results[(results["representation"] == "layer") & (results["split"] == "val")]
    expected = layer.set_index(["epoch", "attribute", "depth"])["accuracy"]
    for row in drawn.itertuples():
        assert row.accuracy == pytest.approx(expected[(row.epoch, row.attribute, row.depth)])

    # Runs overlaid (faceprobe compare): each run's epochs stay a network of their own.
    overlaid = epoch_curves(combine_runs([load_run(run), load_run(run)]).table("results"))
    assert set(overlaid["network"]) == {"run: small/face", "run#2: small/face"}
    assert all(sorted(c["epoch"].unique()) == [1, 2, 3] for _, c in overlaid.groupby("network"))


def test_a_folder_without_kept_epochs_is_one_line_naming_it_and_the_fix(tiny_faces, tmp_path):
    folder = tmp_path / "trained-without-save-every"
    save_checkpoint(build_model("small", 6, (32, 32)), folder, {"architecture": "small", "num_classes": 6})
    proc = run_cli(
        "probe", "--model", "small", "--weights", f"epochs:{folder}", "--data", f"synthetic:{tiny_faces}",
        "--input-size", "32", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert_one_line_error(proc, str(folder), "keeps no epochs", "--save-every")
    assert not (tmp_path / "run").exists(), "refused before the run folder is made"
    with pytest.raises(FaceprobeError, match="give one epoch here: checkpoint:DIR/epochs/epoch-NNNN"):
        load_model("small", f"epochs:{folder}")  # a single network cannot be many epochs
