"""Several weight origins in one study, and the report's weight-origin comparison (thesis Fig. 5.4).

ImageNet weights come from the torch cache only: the test writes a stand-in file (a differently seeded
resnet18, so right keys and shapes, other values) under the expected name in a temporary TORCH_HOME.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from faceprobe.data.synth import generate
from faceprobe.models.loading import imagenet_path
from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from faceprobe.run import load_config, read_table, run_study

CONFIG = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses", "Wearing_Hat"]
train = 40
val = 60
seed = 1

[[models]]
architecture = "resnet18"
weights = ["random", "imagenet", "checkpoint:{checkpoint}"]
layers = "layer?.?"
input_size = 32

[probe]
single_units = false
vip_study = 0

[run]
layers_per_unit = 8
batch_size = 64
device = "cpu"
"""


def _resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet18().state_dict()


@pytest.fixture(scope="module")
def origins_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("origins")
    data = generate(root / "faces", identities=12, images_per_identity=20, size=48, seed=0, workers=1)
    checkpoint = root / "face.safetensors"
    save_file(_resnet18_state(2), checkpoint)
    config = root / "study.toml"
    config.write_text(CONFIG.format(data=data, checkpoint=checkpoint))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        cached = imagenet_path("resnet18")
        assert cached.is_relative_to(root / "torch"), cached  # never the user's cache
        cached.parent.mkdir(parents=True)
        torch.save(_resnet18_state(1), cached)
        run_study(load_config(config), root / "run")
    return root / "run", f"checkpoint:{checkpoint}"


def test_three_weight_origins_probe_the_same_cells_with_different_accuracies(origins_run):
    run_dir, checkpoint = origins_run
    results = read_table(run_dir, "results")
    origins = {"random", "imagenet", checkpoint}
    assert set(results["weights"]) == origins
    assert results.groupby("weights")["model"].nunique().eq(1).all() and results["model"].nunique() == 3
    cells = ["layer", "attribute", "representation", "split"]
    accuracy = results.pivot_table(index=cells, columns="weights", values="accuracy")
    # layers x (2 attributes + Control_Random) x representations, but layer4's two blocks are 1x1 at this
    # input size: they have no channels, so no channels rows (thesis 5.2)
    assert len(accuracy) == 8 * 3 * 3 - 2 * 3
    assert accuracy.notna().all().all()
    for a, b in itertools.combinations(sorted(origins), 2):
        assert not np.array_equal(accuracy[a], accuracy[b]), f"{a} and {b} gave identical accuracies"


def test_report_compares_weight_origins_by_mean_accuracy_over_depth(origins_run, tmp_path):
    run_dir, checkpoint = origins_run
    index = build_report([load_run(run_dir)], tmp_path)
    figure = tmp_path / "figures" / "weight-origins"
    assert figure.with_suffix(".png").stat().st_size > 10_000
    assert "no weight-origin view" not in index.read_text()
    curves = pd.read_csv(figure.with_suffix(".csv"))
    assert set(curves["series"]) == {"random", "imagenet", checkpoint}
    # Fig. 5.4's points: the whole-layer validation accuracy averaged over the attributes, control excluded.
    results = read_table(run_dir, "results")
    layer = results[(results["representation"] == "layer") & (results["split"] == "val")]
    expected = layer[layer["attribute"] != "Control_Random"].groupby(["weights", "depth"])["accuracy"].mean()
    drawn = curves.set_index(["series", "depth"])["accuracy"].sort_index()
    assert list(drawn.index) == list(expected.index) and len(drawn) == 3 * 8
    np.testing.assert_allclose(drawn.to_numpy(), expected.to_numpy(), rtol=1e-12)
