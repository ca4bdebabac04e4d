"""The command line: help that teaches, and bad input reported as one line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from faceprobe.run import read_table


@pytest.mark.parametrize("command", [[], ["demo"], ["synth"], ["probe-array"]])
def test_help_teaches(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert len(text) > 300
    if command:
        assert "Example: faceprobe" in text


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("faceprobe ")


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    X = np.maximum(rng.normal(size=(300, 6, 4, 4)), 0).astype(np.float32)
    X[:, 2] += 1.5 * y[:, None, None]
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "y.txt").write_text("\n".join(str(v) for v in 2 * y - 1) + "\n")
    return tmp_path, X, y


def test_probe_array_reports_layer_channels_and_neurons(arrays):
    path, _, _ = arrays
    proc = run_cli("probe-array", str(path / "X.npy"), str(path / "y.txt"))
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") > 3}
    for representation in ("layer", "channels", "neurons"):
        accuracy = float(lines[representation].split("│")[3].strip().rstrip("%"))
        assert accuracy > 90, lines[representation]


def test_nan_activations_are_reported_not_raised(arrays):
    path, X, _ = arrays
    X[7, 1, 2, 3] = np.nan
    np.save(path / "nan.npy", X)
    proc = run_cli("probe-array", str(path / "nan.npy"), str(path / "y.txt"))
    assert proc.returncode == 0, proc.stderr
    assert "NaN or inf" in proc.stdout and "Traceback" not in proc.stderr


def test_constant_layer_is_reported_not_raised(arrays):
    path, _, _ = arrays
    np.save(path / "const.npy", np.full((300, 12), 3.0, dtype=np.float32))
    proc = run_cli("probe-array", str(path / "const.npy"), str(path / "y.txt"))
    assert proc.returncode == 0, proc.stderr
    assert "constant" in proc.stdout and "n/a" in proc.stdout


def test_bad_inputs_are_one_line_errors(arrays):
    path, _, _ = arrays
    assert_one_line_error(
        run_cli("probe-array", str(path / "missing.npy"), str(path / "y.txt")), "missing.npy"
    )
    assert_one_line_error(
        run_cli("probe-array", str(path / "y.txt"), str(path / "y.txt")), "y.txt", "not a .npy file"
    )
    (path / "bad.txt").write_text("1\n-1\n2\n")
    assert_one_line_error(
        run_cli("probe-array", str(path / "X.npy"), str(path / "bad.txt")), "bad.txt:3", "'2'"
    )
    (path / "short.txt").write_text("1\n-1\n")
    assert_one_line_error(
        run_cli("probe-array", str(path / "X.npy"), str(path / "short.txt")), "2 labels for 300"
    )
    (path / "one.txt").write_text("1\n" * 300)
    assert_one_line_error(run_cli("probe-array", str(path / "X.npy"), str(path / "one.txt")), "both classes")
    assert_one_line_error(
        run_cli("probe-array", str(path / "X.npy"), str(path / "y.txt"), "--shape", "5,5"), "--shape 5,5"
    )
    assert_one_line_error(
        run_cli("probe-array", str(path / "X.npy"), str(path / "y.txt"), "--shape", "a,b"), "comma-separated"
    )
    np.save(path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_one_line_error(
        run_cli("probe-array", str(path / "obj.npy"), str(path / "y.txt")), "Python objects"
    )


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_line_makes_openmp_threads_sleep_while_they_wait_unless_told(given, expected):
    """Set before torch loads (its OpenMP runtime reads the variable once), and never over the user's."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    check = "import os, sys, faceprobe.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected, "False"]


def test_help_and_version_answer_in_under_a_second():
    import time

    for args in (["--help"], ["--version"], ["run", "--help"]):
        start = time.perf_counter()
        proc = run_cli(*args)
        assert proc.returncode == 0 and time.perf_counter() - start < 1.5, (args, proc.stderr)
    # what keeps it fast: the command line imports neither torch nor scikit-learn until a command runs
    probe = "import sys, faceprobe.cli; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.split() == ["False", "False"], loaded.stderr


_LOADS_TORCH = """
import sys
from faceprobe.cli import main

sys.argv = ["faceprobe", *sys.argv[1:]]
try:
    main()
except SystemExit as end:
    print(end.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "command",
    [
        ["run", "{study}"],
        ["plan", "{study}"],
        ["report", "{folder}"],
        ["status", "{folder}"],
        ["clean", "{folder}"],
        ["compare", "{folder}", "{folder}", "--out", "{folder}"],
        ["probe-array", "{folder}/x.npy", "{folder}/y.txt"],
    ],
)
def test_a_refused_study_or_folder_is_said_before_torch_loads(tmp_path, command):
    """Reading a study file or a run folder needs no torch: a mistake there is said in a fraction of a second,
    not after the seconds torch and torchvision take to import."""
    study = tmp_path / "study.toml"
    study.write_text('[data]\nspec = "synthetic:faces"\ntrain = "many"\n[[models]]\narchitecture = "small"\n')
    args = [a.format(study=study, folder=tmp_path / "nowhere") for a in command]
    proc = subprocess.run([sys.executable, "-c", _LOADS_TORCH, *args], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["run", "{study}", "--out", "{file}"],
        ["probe", "--model", "small", "--data", "synthetic:{folder}", "--out", "{file}"],
    ],
)
def test_a_run_folder_that_is_a_file_is_said_before_the_study_is_read(tmp_path, command):
    """The first thing a run checks, before its study file, data or torch are loaded."""
    study = tmp_path / "study.toml"
    study.write_text('[data]\nspec = "synthetic:faces"\n[[models]]\narchitecture = "small"\n')
    (tmp_path / "taken").write_text("a file")
    args = [a.format(study=study, folder=tmp_path / "nowhere", file=tmp_path / "taken") for a in command]
    proc = subprocess.run([sys.executable, "-c", _LOADS_TORCH, *args], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert proc.stderr == f"error: {tmp_path / 'taken'} is a file; give a folder for the run\n"


def test_run_help_shows_the_study_tables_literally():
    text = " ".join(run_cli("run", "--help").stdout.replace("│", " ").split())
    assert "[data], [[models]], [probe], [ablation], [run], [baseline]" in text


@pytest.mark.parametrize("command", [["demo"], ["train", "recognition"], ["probe"]])
def test_help_paragraphs_rewrap_to_a_narrow_terminal(command):
    """Docstrings are hard-wrapped at 110 columns: at 80, breaking each source line again would leave a
    stub line after every full one. Rewrapped as paragraphs, only a paragraph's last line may be short."""
    proc = run_cli(*command, "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    prose = [line.strip() for line in proc.stdout.splitlines() if line[:1] not in ("╭", "│", "╰")]
    paragraphs = "\n".join(prose).split("\n\n")
    for paragraph in paragraphs:
        lines = paragraph.strip("\n").splitlines()
        stubs = [line for line in lines[:-1] if len(line) < 40]
        assert not stubs, f"ragged: {stubs} in\n{paragraph}"
    assert sum(len(p.splitlines()) > 2 for p in paragraphs) >= 1, "a paragraph long enough to show it"


# --- "did you mean" for layer and model names ---------------------------------------------------------------


def test_a_typod_layer_gets_a_suggestion(tiny_faces, tmp_path):
    common = ["--model", "small", "--data", f"synthetic:{tiny_faces}", "--input-size", "32"]
    proc = run_cli("probe", *common, "--layers", "backbone.stage2.O", "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "no probe-able layer 'backbone.stage2.O'", "did you mean 'backbone.stage2.0'")
    assert not (tmp_path / "run").exists()
    proc = run_cli("layers", "small", "--select", "stage2.0.residual.bn2")  # the backbone. prefix left out
    assert_one_line_error(proc, "did you mean 'backbone.stage2.0.residual.bn2'")
    proc = run_cli("layers", "small", "--select", "stage2*")  # a pattern anchored at the wrong place
    assert_one_line_error(proc, "matches no layer", "did you mean '*stage2*'")


def test_a_typod_model_or_weight_origin_gets_a_suggestion(tmp_path):
    assert_one_line_error(run_cli("layers", "resnt18"), "unknown model 'resnt18' (did you mean resnet18")
    assert_one_line_error(run_cli("layers", "MobileNet-V2"), "did you mean mobilenet_v2")
    proc = run_cli("layers", "small", "--weights", "imagnet")
    assert_one_line_error(proc, "weights 'imagnet'", "did you mean imagenet?")


# --- progress: bars with an ETA on a terminal, timestamped lines in a log ----------------------------------

_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_prints_start_every_tenth_or_thirty_seconds_and_end():
    import io
    import re

    from rich.console import Console

    from faceprobe.cli._app import PlainProgress, stepper

    out, clock = io.StringIO(), _Clock()
    progress = PlainProgress(Console(file=out), clock=clock)
    step = stepper(progress)
    images = step("small#ab12/s0 layers 0-3: images", 1000)
    units = step("work units", 1000)  # a second task running at the same time
    for _ in range(100):  # 1000 images, 10 at a time, a second each
        clock.now += 1
        images(10)
    clock.now += 45
    units(1)  # 0.1% done, but nothing said for 145 s: a line
    clock.now += 5
    units(1)  # 0.2%, 5 s later: no line
    lines = out.getvalue().splitlines()
    assert all(re.match(_STAMP, line) for line in lines), lines
    texts = [re.sub(_STAMP, "", line) for line in lines]
    mine = [t for t in texts if t.startswith("small#ab12/s0 layers 0-3: images")]
    assert mine[0].endswith("started (1000 to do)")
    assert [t.split(": ")[2].split(" ")[0] for t in mine[1:-1]] == [f"{k}00/1000" for k in range(1, 10)]
    assert "0m50s elapsed, ETA 0m50s" in mine[5]  # 50% after 50 s: as long again
    assert mine[-1] == "small#ab12/s0 layers 0-3: images: done, 1000/1000 in 1m40s"
    assert texts[-1].startswith("work units: 1/1000 (0%), 2m25s elapsed")
    assert len(texts) == 2 + 9 + 1 + 1  # two starts, nine steps, the end, one line for the units


def test_progress_is_lines_in_a_log_and_bars_with_an_eta_on_a_terminal(monkeypatch):
    from rich.console import Console
    from rich.progress import Progress, TimeRemainingColumn

    from faceprobe.cli import _app

    monkeypatch.setattr(_app, "console", Console(force_terminal=False))
    assert isinstance(_app.progress_bars(), _app.PlainProgress)
    monkeypatch.setattr(_app, "console", Console(force_terminal=True))
    bars = _app.progress_bars()
    assert isinstance(bars, Progress) and any(isinstance(c, TimeRemainingColumn) for c in bars.columns)
    step = _app.stepper(bars)
    step("work units", 10)
    for unit in range(6):  # finished per-unit tasks leave the screen but for the last few
        step(f"unit {unit}: images", 1)(1)
    visible = [task.description for task in bars.tasks if task.visible]
    assert visible == ["work units", "unit 3: images", "unit 4: images", "unit 5: images"]


def test_a_redirected_command_logs_timestamped_progress_lines(tmp_path):
    import re

    proc = run_cli(
        "synth", "--out", str(tmp_path / "faces"), "--identities", "4", "--images-per-identity", "5"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(re.match(_STAMP, line) for line in lines), proc.stderr
    assert "synthesising faces: started (20 to do)" in lines[0] and "done, 20/20" in lines[-1]
    assert len(lines) >= 4  # start, steps as work advanced, end


def test_a_redirected_run_logs_its_work_units_as_they_finish(tiny_faces, tmp_path):
    import re

    proc = run_cli(
        "probe", "--model", "small", "--data", f"synthetic:{tiny_faces}", "--input-size", "32",
        "--attributes", "Eyeglasses", "--layers", "backbone.stage1.0,backbone.stage2.0", "--train", "16",
        "--val", "16", "--vip-study", "0", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "work units" in line]
    assert all(re.match(_STAMP, line) for line in lines), proc.stderr
    assert "work units: started (1 to do)" in lines[0] and "work units: done, 1/1" in lines[-1]


def test_probe_takes_the_probe_and_ablation_settings_a_study_file_can_set(tiny_faces, tmp_path):
    out = tmp_path / "run"
    flags = ["--model", "small", "--data", f"synthetic:{tiny_faces}", "--attributes", "Eyeglasses"]
    flags += ["--train", "16", "--val", "24", "--input-size", "32", "--out", str(out), "--vip-study", "0"]
    flags += [
        "--components",
        "3",
        "--top-k",
        "2",
        "--ablate",
        "backbone.stage2.0",
        "--ablation-fractions",
        "0.5",
    ]
    proc = run_cli("probe", *flags)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["probe"]["components"] == 3 and config["probe"]["top_k"] == 2
    assert config["ablation"]["depths"] == ["backbone.stage2.0"] and config["ablation"]["fractions"] == [0.5]
    results, ablation = read_table(out), read_table(out, "ablation")
    assert set(results.loc[results["representation"] == "neurons", "k"]) == {2}
    assert set(ablation["ablated_layer"]) == {"backbone.stage2.0"} and set(ablation["fraction"]) == {0.5}


# --- probe --plan: the plan of a study given as flags -------------------------------------------------------

STUDY = """
[data]
spec = "synthetic:{faces}"
attributes = ["Eyeglasses", "Wearing_Hat"]
train = 16
val = 24

[[models]]
architecture = "small"
input_size = 32

[probe]
vip_study = 6

[ablation]
depths = ["backbone.stage2.0"]
fractions = [0.5]

[run]
memory_gb = 0
device = "cpu"
batch_size = 16
"""


def _plan_rows(stdout: str) -> list[list[str]]:
    """The plan table's rows without the time column: the calibration measures a new time on every call."""
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line[:1] == "│"
    ]
    return [row[:-1] for row in rows]


def test_probe_plan_prints_the_plan_of_the_same_study_file_and_writes_nothing(tiny_faces, tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(faces=tiny_faces))
    wide = {"COLUMNS": "250"}
    from_file = run_cli("plan", str(study), "--out", str(tmp_path / "file-run"), env=wide)
    assert from_file.returncode == 0, from_file.stderr
    out = tmp_path / "run"
    flags = [
        "--model",
        "small",
        "--data",
        f"synthetic:{tiny_faces}",
        "--attributes",
        "Eyeglasses,Wearing_Hat",
    ]
    flags += ["--train", "16", "--val", "24", "--input-size", "32", "--vip-study", "6", "--device", "cpu"]
    flags += ["--batch-size", "16", "--memory-gb", "0", "--ablate", "backbone.stage2.0"]
    flags += ["--ablation-fractions", "0.5", "--out", str(out)]
    from_flags = run_cli("probe", *flags, "--plan", env=wide)
    assert from_flags.returncode == 0, from_flags.stderr
    assert not out.exists() and not (tmp_path / "file-run").exists(), "planning writes nothing"
    rows = _plan_rows(from_flags.stdout)
    assert len(rows) == 2 and {row[1] for row in rows} == {"store"}, from_flags.stdout  # probes, ablation
    assert rows == _plan_rows(from_file.stdout), (from_flags.stdout, from_file.stdout)
    assert ": fits;" in from_flags.stdout
