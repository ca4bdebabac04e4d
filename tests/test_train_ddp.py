"""Recognition training under torchrun on the CPU (gloo): sharded epochs, one writer, one model on all ranks.

The test starts this file under ``torchrun --nproc-per-node 2``; each rank runs the job ``faceprobe train
recognition`` runs, into a folder of its own so that a write by rank 1 shows, and leaves the model it ended
with beside it for the test to compare with rank 0's checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_model

from faceprobe.data.synth import generate
from faceprobe.models import LoadedModel, load_model
from faceprobe.train.jobs import Recipe

RECIPE = Recipe(epochs=2, input_size=32, batch_size=8, lr=0.05)


def _rank(data: Path, out: Path) -> None:
    """One torchrun rank: train into ``out/rank{r}``; leave ``out/model{r}.safetensors`` and a summary."""
    import torch.distributed as dist

    from faceprobe.train import jobs
    from faceprobe.train.loop import init_distributed

    device = init_distributed()
    rank = dist.get_rank()
    built: list[LoadedModel] = []
    build = jobs._model

    def keep(*args: Any) -> LoadedModel:  # the job's network, which it does not return
        built.append(build(*args))
        return built[-1]

    jobs._model = keep
    steps: dict[int, int] = {}

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "step":
            steps[event["epoch"]] = event["steps"]

    jobs.run_recognition(
        out / f"rank{rank}", f"synthetic:{data}", "small", RECIPE, device=device, progress=progress
    )
    save_model(built[0].module, str(out / f"model{rank}.safetensors"))
    summary = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "steps": steps}
    (out / f"rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """6 identities x 10 images; 4 identities train, 2 of each one's images held out: 32 training images."""
    return generate(
        tmp_path_factory.mktemp("faces"), identities=6, images_per_identity=10, size=32, seed=0, workers=1
    )


def test_two_cpu_processes_train_one_model_and_rank_0_alone_writes(faces, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*command, __file__, str(faces), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["backend"] == "gloo" and r["world_size"] == 2 for r in ranks)

    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [
        "last",
        "metadata.json",
        "model.safetensors",
    ]
    assert not (tmp_path / "rank1").exists()  # no checkpoint, metadata or state from rank 1
    metadata = json.loads((tmp_path / "rank0" / "metadata.json").read_text())
    # Each rank ran half of every epoch's draw (progress is reported by rank 0 only).
    half = math.ceil(metadata["n_train"] / 2 / RECIPE.batch_size)
    assert ranks[0]["steps"] == {"1": half, "2": half} and ranks[1]["steps"] == {}
    assert len(metadata["history"]) == 2 and metadata["history"][-1]["loss"] < metadata["history"][0]["loss"]

    # Averaged gradients and rank 0's batch-norm statistics: both ranks end with the checkpoint's model.
    saved = load_file(str(tmp_path / "rank0" / "model.safetensors"))
    other = load_file(str(tmp_path / "model1.safetensors"))
    assert saved.keys() == other.keys() and all(torch.equal(saved[k], other[k]) for k in saved)
    initial = load_model("small", "random", num_classes=metadata["num_classes"], input_size=(32, 32))
    start = initial.module.state_dict()
    assert not torch.equal(saved["classifier.weight"], start["classifier.weight"])
    assert not torch.equal(saved["embedding.bn.running_mean"], start["embedding.bn.running_mean"])


if __name__ == "__main__":
    _rank(Path(sys.argv[1]), Path(sys.argv[2]))
