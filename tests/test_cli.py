"""The command line: help that teaches, and bad input reported as one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli


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


def test_run_help_shows_the_study_tables_literally():
    text = " ".join(run_cli("run", "--help").stdout.replace("│", " ").split())
    assert "[data], [[models]], [probe], [ablation], [run], [baseline]" in text
