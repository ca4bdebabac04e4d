"""Fixtures and helpers shared by the test modules: tiny synthetic faces, and the CLI in a subprocess."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import faceprobe.cli  # noqa: F401  (before torch loads: its OpenMP threads sleep while they wait, as in the CLI)
from faceprobe.data.synth import generate


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one thread per process for torch and BLAS, and reports drawn in their own process,
    in this worker and the CLI processes it starts: the workers already share the CPUs, threads that wait
    for each other on a taken core spin instead of working, and drawing processes started per report would
    only add their start to the suite's time (tests that are about them ask for them)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["LOKY_MAX_CPU_COUNT"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist (``--dist loadgroup``): a module's tests on one process, so its module
    fixtures run once, and every test of the session's quick demo on one process, so the demo runs once."""
    for item in items:
        uses_demo = "quick_demo" in getattr(item, "fixturenames", ())
        group = "quick_demo" if uses_demo else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def run_cli(
    *args: str, cwd: Path | str | None = None, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``faceprobe ARGS`` in a fresh process, as a user runs it (``env``: variables set on top of ours)."""
    return subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, one ``error:`` line on stderr holding every fragment.

    Progress lines of work done before the problem showed may precede it; the error is the last line.
    """
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.split(":")[0]]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """72 synthetic 32-pixel faces of 6 identities with CelebA's attributes planted: seconds to probe."""
    return generate(
        tmp_path_factory.mktemp("tiny") / "faces", identities=6, images_per_identity=12, size=32, workers=1
    )


#: The tables of a study with every kind of unit (two layers per unit, an ablation at two fractions), for
#: the runner's tests: ``tiny_study(faces, **UNITS_STUDY)``.
UNITS_STUDY: dict[str, dict] = {
    "data": {"train": 40, "val": 60, "test": -1},
    "probe": {"components": 4, "top_k": 4, "single_units": True, "vip_study": 10},
    "ablation": {"depths": [1], "fractions": [0.1, 0.5], "attributes": ["Eyeglasses"]},
    "run": {"layers_per_unit": 2, "batch_size": 32},
}


@contextmanager
def as_extracted(model) -> Iterator:
    """The model as faceprobe's forward passes run it on the CPU (4-D weights channels-last,
    :func:`faceprobe.devices.channels_last`), and the function that lays out an input as they do: a manual
    forward inside gives the extracted values to the last bit."""
    import torch

    from faceprobe.devices import channels_last

    with channels_last(model, torch.device("cpu")) as nhwc:
        yield lambda x: x.contiguous(memory_format=torch.channels_last) if nhwc and x.dim() == 4 else x


def tiny_study(faces: Path, **tables: dict) -> str:
    """A study file over the tiny faces: two attributes, the small network at 32 pixels, on the CPU.

    ``tables`` add or override keys per table, e.g. ``probe={"vip_study": 6}, ablation={"depths": [2]}``;
    values are written as JSON, which TOML reads the same for strings, numbers, booleans and lists.
    """
    study = {
        "data": {
            "spec": f"synthetic:{faces}",
            "attributes": ["Eyeglasses", "Wearing_Hat"],
            "train": 16,
            "val": 24,
            "seed": 3,
        },
        "models": {"architecture": "small", "weights": ["random"], "layers": "auto", "input_size": 32},
        "probe": {"components": 3, "top_k": 3},
        "run": {"batch_size": 16, "device": "cpu"},
    }
    for table, keys in tables.items():
        study[table] = {**study.get(table, {}), **keys}
    lines = []
    for table, keys in study.items():
        lines += ["[[models]]" if table == "models" else f"[{table}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()] + [""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def extractions():
    """Each call of the store's extraction while the module runs: layers asked for, images run through the
    network, store size, and whether the call extracted under an ablation."""
    from faceprobe.run import work

    calls = []
    extract_to_store = work.extract_to_store

    def spy(model, dataset, layers, store, progress=None, **kwargs):
        names = [info.name for info in layers]
        calls.append({"layers": names, "images": 0, "n": store.n, "ablated": "ablated" in store.key})

        def count(images):
            calls[-1]["images"] += images
            if progress is not None:
                progress(images)

        return extract_to_store(model, dataset, layers, store, progress=count, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(work, "extract_to_store", spy)
        yield calls


@contextmanager
def held_by_another_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    """A separate process holds the run folder's lock for the body, then is killed (its lock is freed)."""
    script = (
        "import pathlib, time\nfrom faceprobe.run.lock import hold\n"
        f"with hold(pathlib.Path({str(run_dir)!r})):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# Loaded through sitecustomize where a folder cannot be made read-only for root (no chattr, or a file system
# without the immutable flag): every way Python creates, opens for writing, renames or links a file under
# the folder fails as on a read-only mount (EROFS).
_READ_ONLY = """
import builtins, errno, io, os

_FOLDER = os.path.realpath({folder!r})


def _inside(path):
    try:
        path = os.path.realpath(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    return path == _FOLDER or path.startswith(_FOLDER + os.sep)


def _refuse(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))


def _guard(function, paths=(0,), writes=lambda *a, **k: True):
    def guarded(*args, **kwargs):
        for i in paths:
            if len(args) > i and _inside(args[i]) and writes(*args, **kwargs):
                _refuse(args[i])
        return function(*args, **kwargs)

    return guarded


def _writes_mode(file, mode="r", *args, **kwargs):
    return any(c in mode for c in "wax+")


def _writes_flags(path, flags, *args, **kwargs):
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


builtins.open = io.open = _guard(builtins.open, writes=_writes_mode)
os.open = _guard(os.open, writes=_writes_flags)
for _name in ("mkdir", "rmdir", "remove", "unlink", "mkfifo", "mknod"):
    setattr(os, _name, _guard(getattr(os, _name)))
for _name in ("rename", "replace", "link", "symlink"):
    setattr(os, _name, _guard(getattr(os, _name), paths=(0, 1)))
"""


@contextmanager
def read_only(folder: Path, scratch: Path) -> Iterator[dict[str, str]]:
    """``folder`` read-only for the body, even for root; yields the environment a CLI process needs.

    An ordinary user gets mode 0500. Root ignores modes, so it gets the immutable flag (``chattr +i``), where
    the file system has it; elsewhere the CLI's interpreter loads a guard (through sitecustomize, written to
    ``scratch``) that fails every write under the folder with EROFS, as a read-only mount would.
    """
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield {}
        finally:
            folder.chmod(0o700)
        return
    try:
        flagged = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    except FileNotFoundError:  # no chattr
        flagged = False
    if flagged:
        try:
            assert _refused(folder / "probe"), "chattr +i did not make the folder read-only"
            yield {}
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    guard = scratch / "read-only-guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(_READ_ONLY.format(folder=str(folder)))
    yield {"PYTHONPATH": os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)}


def _refused(path: Path) -> bool:
    try:
        path.mkdir()
    except PermissionError:
        return True
    path.rmdir()
    return False


# Loaded into the demo's interpreter through sitecustomize: any attempt to open a network connection is
# recorded and refused, so the test proves the demo runs offline.
_NO_NETWORK = """
import socket

_LOG = {log!r}


def _refuse(*args, **kwargs):
    with open(_LOG, "a") as f:
        f.write(repr(args[1:] if args else kwargs) + "\\n")
    raise OSError("network access attempted during an offline run")


socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`faceprobe demo --quick` run once for the session, offline (a network attempt fails the run)."""
    out = tmp_path_factory.mktemp("demo")
    guard = tmp_path_factory.mktemp("guard")
    attempts = guard / "attempts.log"
    (guard / "sitecustomize.py").write_text(_NO_NETWORK.format(log=str(attempts)))
    paths = [str(guard), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,  # minutes on a quiet laptop; a busy shared machine may need many times that
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not attempts.exists(), f"the demo tried to reach the network: {attempts.read_text()}"
    return out, proc


# --- run folders written by hand, for the report's tests: seconds, no network or probe involved -----------

#: Layer names of a hand-written run: long dotted names at close catalogue depths, as a ResNet's catalogue
#: has them (its inner layers crowd between block outputs).
HAND_LAYERS = (
    (3, "backbone.stem", "conv"),
    (9, "backbone.stage1.0.residual", "residual"),
    (13, "backbone.stage1.0", "block"),
    (14, "backbone.stage2.0.residual.conv1", "conv"),
    (23, "backbone.stage2.0", "block"),
    (37, "backbone.head.embedding", "embedding"),
    (38, "backbone.head.classifier", "fc"),
)


def resnet_like_layers(blocks: int = 12) -> tuple[tuple[int, str, str], ...]:
    """``all`` of a ResNet-like catalogue: per block five inner layers and the block output, at consecutive
    depths with long names (the densest x axis a report draws)."""
    layers = []
    for b in range(blocks):
        prefix = f"backbone.layer{b // 3 + 1}.{b % 3}"
        inner = ("conv1", "bn1", "residual.conv2", "residual.bn2", "downsample.0")
        layers += [(6 * b + i, f"{prefix}.{name}", "conv") for i, name in enumerate(inner)]
        layers.append((6 * b + 5, prefix, "block"))
    return tuple(layers)


#: Attributes of a hand-written run: some of the thesis's groups, one in none (Young: the "Other" group),
#: and the control.
HAND_ATTRIBUTES = ("Smiling", "Bald", "Eyeglasses", "Young", "Control_Random")


def write_hand_run(
    out: Path,
    origins: tuple[str, ...] = ("checkpoint:/data/checkpoints/arcface-r50-webface",),
    seeds: tuple[int, ...] = (0,),
    n_eval: int = 400,
    nan_rows: int = 0,
    manifest_data: dict | None = None,
    noise_seed: int = 0,
    layers: tuple[tuple[int, str, str], ...] = HAND_LAYERS,
) -> Path:
    """A run folder with results.parquet (val and test rows), vip_study.parquet and manifest.json, its
    numbers made up: accuracy rises with depth and with the origin's index, the control stays at chance.

    ``nan_rows`` probe rows get no accuracy (with a note), as a failed probe leaves them; ``manifest_data``
    joins the manifest's data section (shortened draws, skipped images); ``noise_seed`` seeds the noise
    on every accuracy (two runs of the same seed hold the same numbers).
    """
    import json

    import numpy as np
    import pandas as pd

    from faceprobe.results import to_frame, write_results

    rng = np.random.default_rng(noise_seed)
    rows, vip_rows = [], []
    for o, origin in enumerate(origins):
        for seed in seeds:
            variant = f"toynet/{origin}#{o:08x}"
            model = f"{variant}/s{seed}"
            for i, (depth, layer, kind) in enumerate(layers):
                for attribute in HAND_ATTRIBUTES:
                    rise = 0.3 * i / max(1, len(layers) - 1)
                    base = 0.5 if attribute == "Control_Random" else 0.6 + rise + 0.02 * o
                    for representation, k in (("layer", 0), ("channels", 8), ("neurons", 8), ("neuron", 1)):
                        if representation == "channels" and kind in ("embedding", "fc"):
                            continue
                        for split in ("val", "test"):
                            noise = rng.normal(0, 0.02)
                            rows.append(
                                {
                                    "model": model,
                                    "layer": layer,
                                    "depth": depth,
                                    "attribute": attribute,
                                    "representation": representation,
                                    "k": k,
                                    "unit": 5 if representation == "neuron" else -1,
                                    "split": split,
                                    "accuracy": float(np.clip(base + noise, 0, 1)),
                                    "n_train": 2 * n_eval,
                                    "n_eval": n_eval,
                                    "n_features": 4096,
                                    "architecture": "toynet",
                                    "weights": origin,
                                    "seed": seed,
                                    "kind": kind,
                                    "variant": variant,
                                }
                            )
                    vip = rng.lognormal(0, 1, 20)
                    for neuron, v in enumerate(vip):
                        vip_rows.append(
                            {
                                "model": model,
                                "layer": layer,
                                "depth": depth,
                                "attribute": attribute,
                                "neuron": neuron,
                                "vip": float(v),
                                "accuracy": float(0.5 + 0.05 * np.log1p(v) + rng.normal(0, 0.01)),
                                "mean_positive": float(rng.normal()),
                                "n_train": 2 * n_eval,
                                "n_eval": n_eval,
                                "variant": variant,
                            }
                        )
    results = to_frame(rows)
    if nan_rows:
        results.loc[: nan_rows - 1, "accuracy"] = np.nan
        results.loc[: nan_rows - 1, "note"] = "the layer is constant"
    write_results(results, out / "results.parquet" / "part-0.parquet")
    write_results(to_frame(vip_rows, "vip_study"), out / "vip_study.parquet" / "part-0.parquet")
    manifest = {
        "faceprobe_version": "0.1.0",
        "created": "hand-written fixture",
        "config": {
            "data": {"spec": "synthetic:/data/faces", "test": -1},
            "models": [{"architecture": "toynet", "weights": list(origins), "seeds": list(seeds)}],
            "probe": {"components": 8, "k": 8, "vip_study": 20},
        },
        "data": {"spec": "synthetic:/data/faces", **(manifest_data or {})},
        "versions": {"pandas": pd.__version__},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# --- many commands, each in a process of its own, without paying the imports each time ---------------------

# A warm interpreter that imports faceprobe and its heavy dependencies once, then forks one child per request:
# each child is a fresh process running the CLI's entry point with the request's arguments, output files and
# environment, optionally with one function patched to SIGKILL the child at the k-th matching call (the
# fault of tests/test_crash.py, without the interpreter start). It runs with one torch thread, so its numbers
# are comparable from one request to the next, and replies with each child's exit status (-9 when killed,
# 124 when it ran past the request's timeout).
_ZYGOTE = r"""
import importlib, json, os, signal, sys, time, traceback

import faceprobe.cli
import faceprobe.extract.store, faceprobe.models.loading, faceprobe.report.html, faceprobe.run.runner
import faceprobe.run.work, faceprobe.train.jobs
import pandas, pyarrow.parquet, sklearn.discriminant_analysis


def patch(fault):
    module, _, qualname = fault["target"].partition(":")
    owner = importlib.import_module(module)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = 0

    def finished():
        units = fault["units"]
        return sum(n.endswith(".done") for n in os.listdir(units)) if os.path.isdir(units) else 0

    def faulty(*args, **kwargs):
        nonlocal calls
        if fault["match"] in repr(args) and finished() >= fault["after"]:
            calls += 1
            if calls == fault["k"]:
                if fault["when"] == "after":
                    original(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, faulty)


def child(request):
    for fd, name in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(name, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    if request["fault"]:
        patch(request["fault"])
    sys.argv = ["faceprobe", *request["args"]]
    code = 0
    try:
        faceprobe.cli.main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
        finally:
            os._exit(70)
    deadline = time.monotonic() + request["timeout"]
    while not (status := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:  # killed for taking too long: 124, as timeout(1) says, not -9
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = (pid, 124 << 8)
            break
        time.sleep(0.005)
    print(json.dumps(os.waitstatus_to_exitcode(status[1])), flush=True)
"""


class ForkedCli:
    """``faceprobe ARGS`` in a child forked from a warm interpreter: a process of its own, started at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._count = itertools.count()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}  # long paths stay on one line
        self._zygote = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self._zygote.stdout is not None and json.loads(self._zygote.stdout.readline()) == "ready"

    def __call__(
        self,
        *args: str | os.PathLike[str],
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        fault: dict | None = None,
        timeout: int = 300,
    ) -> subprocess.CompletedProcess:
        """Run ``faceprobe ARGS``; ``fault``: target (``module:qualname``), and optionally k (the k-th
        matching call, default 1), match (a substring of the call's arguments), after (units finished before
        calls count; needs units, the run's units folder), when (kill before the call, or after it)."""
        n = next(self._count)
        stdout, stderr = self.folder / f"{n}.out", self.folder / f"{n}.err"
        if fault is not None:
            fault = {"k": 1, "match": "", "after": 0, "when": "before", "units": "", **fault}
        request = {
            "args": [str(a) for a in args],
            "cwd": str(cwd or self.folder),
            "env": env or {},
            "fault": fault,
            "stdout": str(stdout),
            "stderr": str(stderr),
            "timeout": timeout,
        }
        assert self._zygote.stdin is not None and self._zygote.stdout is not None
        self._zygote.stdin.write(json.dumps(request) + "\n")
        self._zygote.stdin.flush()
        reply = self._zygote.stdout.readline()
        assert reply, "the forking interpreter died"
        return subprocess.CompletedProcess(
            ["faceprobe", *request["args"]], json.loads(reply), stdout.read_text(), stderr.read_text()
        )

    def close(self) -> None:
        assert self._zygote.stdin is not None
        self._zygote.stdin.close()
        self._zygote.wait(timeout=60)


@pytest.fixture(scope="session")
def forked_cli(tmp_path_factory) -> Iterator[ForkedCli]:
    """``faceprobe ARGS`` as a new process, without the seconds a fresh interpreter spends importing."""
    forked = ForkedCli(tmp_path_factory.mktemp("forked"))
    yield forked
    forked.close()
