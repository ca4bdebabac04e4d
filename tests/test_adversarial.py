"""The adversarial pass's guarantees, one table per attack, so they stay true (issue 21, "Must show").

* kill -9 at many points of a run, then the same command again: the tables of an uninterrupted run, exactly,
  and no finished unit computed twice;
* store chunks corrupted, cut short, grown, deleted, and the store's metadata damaged while a run is
  interrupted: the resumed run notices, extracts again and gives the same tables (or, where it cannot know
  what the store held, says so in one line, and following that line gives the same tables);
* checkpoints and arrays carrying pickle payloads, in every format a loader accepts: the payload never runs
  (it would create a marker file) and the error is one line naming the file;
* hostile names (markup, quotes, entities, Rich markup, math text, ``../``) in every place the report and the
  command line print them: text, never markup, and no file outside the report folder.

Every command runs as a process of its own, forked from one warm interpreter (``forked_cli``), so a case
pays for its work and not for importing torch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pickle
import re
import shutil
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_one_line_error
from test_crash import _assert_nothing_half_written, _assert_same_tables, _events, _finished

# --- one small study, interrupted at many points ------------------------------------------------------------

#: Two probe units (two layers, one layer) and one ablation unit, every layer through the activation store
#: (memory_gb = 0), batches of 8 images: each point below is reached in a second or two.
STUDY = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses"]
train = 16
val = 16
test = -1
seed = 3

[[models]]
architecture = "small"
layers = "backbone.stem,backbone.stage1.0,backbone.stage2.0"
input_size = 32

[probe]
components = 2
top_k = 2
single_units = true
vip_study = 3

[ablation]
depths = ["backbone.stage1.0"]
fractions = [0.5]

[run]
layers_per_unit = 2
batch_size = 8
device = "cpu"
memory_gb = 0
"""


@pytest.fixture(scope="module")
def study(tiny_faces, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("adversarial") / "study.toml"
    path.write_text(STUDY.format(data=tiny_faces))
    return path


@pytest.fixture(scope="module")
def reference(study, forked_cli, tmp_path_factory) -> Path:
    """The study run once without interruption: the tables every interrupted run must end with."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = forked_cli("run", study, "--out", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_finished(run)) == 3 and not (run / "store").exists()
    return run


@pytest.fixture(scope="module")
def keeping(study) -> Path:
    """The same study, keeping its activation store once finished (a setting a resume may change)."""
    path = study.with_name("keeping.toml")
    path.write_text(study.read_text() + "keep_store = true\n")
    return path


def _resume_gives_the_reference(forked_cli, study: Path, run: Path, reference: Path) -> None:
    """The same command again finishes the run with the reference tables; no finished unit starts again."""
    done_before, starts_before = _finished(run), len(_events(run, "start"))
    again = forked_cli("run", study, "--out", run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert not set(_events(run, "start")[starts_before:]) & done_before, "a finished unit ran again"
    assert len(_finished(run)) == 3
    _assert_same_tables(run, reference)
    kept = "keep_store = true" in study.read_text()
    assert (run / "store").exists() == kept, "the finished run kept its store, or lost one it was to keep"


STORE = "faceprobe.extract.store:"

#: Where the run is killed: (the fault, units finished when it strikes, files the kill leaves that show
#: the point was reached as named). A fault is a function ``module:qualname``, its k-th call (default 1)
#: whose arguments contain ``match``, counted once ``after`` units are finished, killed ``before`` (default)
#: or ``after`` the call. tests/test_crash.py kills one folder at ten other points in a row; these each
#: start from an empty folder.
KILLS = {
    "draws table in its temporary file": (
        {"target": "pandas:DataFrame.to_parquet", "match": "draws.parquet", "when": "after"},
        0,
        ".draws.parquet.*.tmp",
    ),
    "manifest written, not renamed": (
        {"target": "os:replace", "match": "manifest.json"},
        0,
        ".manifest.json.*",
    ),
    "run lock just taken": ({"target": "fcntl:flock", "when": "after"}, 0, ".lock"),
    "plan written, no unit started": (
        {"target": "os:replace", "match": "plan.json", "when": "after"},
        0,
        "units/plan.json",
    ),
    "store arrays half created": (
        {"target": STORE + "ActivationStore._create_arrays", "k": 3},
        0,
        "store/*/backbone.stage1.0.done/zarr.json",
    ),
    "decoding the images of a batch": (
        {"target": "faceprobe.data.dataset:FaceDataset.open_image", "k": 12},
        0,
        "store/*/backbone.stage2.0.done/zarr.json",
    ),
    "a chunk in its temporary file, not renamed": (
        {"target": "os:replace", "match": ".partial"},
        0,
        "store/**/*.partial",
    ),
    "first batch marked, the next in flight": (
        {"target": STORE + "ActivationStore.mark_done", "when": "after"},
        0,
        "store/*/*.done/c/0",
    ),
    "mid forward pass of the third batch": (
        {"target": STORE + "batch_images", "k": 3, "when": "after"},
        0,
        None,
    ),
    "first layer half probed": (
        {"target": "sklearn.discriminant_analysis:QuadraticDiscriminantAnalysis.fit", "k": 2},
        0,
        "store/*/*.done/c/0",
    ),
    "results part renamed, VIP part not": (
        {"target": "os:replace", "match": "vip_study.parquet"},
        0,
        "results.parquet/*.parquet",
    ),
    "second unit reading the store": (
        {"target": STORE + "LayerArray.read_rows", "k": 3, "after": 1},
        1,
        "units/*layers000.done",
    ),
    "ablated pass, first batch marked": (
        {"target": STORE + "ActivationStore.mark_done", "after": 2, "when": "after"},
        2,
        "store/ablated/*/*.done/c/0",
    ),
    "ablated store half deleted": ({"target": "os:rmdir", "k": 2, "after": 2}, 2, "store/ablated/*"),
    "ablation part renamed, no done marker": (
        {"target": "os:replace", "match": "ablation.parquet", "after": 2, "when": "after"},
        2,
        "ablation.parquet/*.parquet",
    ),
    "store half reclaimed after the last unit": ({"target": "os:rmdir", "k": 3, "after": 3}, 3, "store"),
    "printing the end-of-run summary": ({"target": "faceprobe.run.summary:summarise", "after": 3}, 3, None),
}


@pytest.mark.parametrize("point", list(KILLS))
def test_kill_9_then_the_same_command_gives_the_uninterrupted_tables(
    point, study, reference, forked_cli, tmp_path
):
    fault, finished, left = KILLS[point]
    run = tmp_path / "run"
    killed = forked_cli("run", study, "--out", run, fault={**fault, "units": str(run / "units")})
    assert killed.returncode == -9, f"{fault['target']} was not reached: {killed.stderr[-3000:]}"
    assert len(_finished(run)) == finished
    assert left is None or list(run.glob(left)), f"the kill left no {left}: {sorted(run.rglob('*'))}"
    if (run / "manifest.json").exists():  # every visible file whole, each table readable
        _assert_nothing_half_written(run)
    else:  # killed before the manifest: at most the draws, whole, and hidden temporary files
        visible = {p.name for p in run.iterdir() if not p.name.startswith(".")}
        assert visible <= {"draws.parquet", "labels.parquet"}, visible
        for table in run.glob("*.parquet"):
            pd.read_parquet(table)
    _resume_gives_the_reference(forked_cli, study, run, reference)


# --- a damaged activation store -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(study, forked_cli, tmp_path_factory) -> Path:
    """The study killed as its second unit starts: the first unit is done and every probe layer is stored
    (the first unit extracts the later units' layers in its forward pass), so the second unit and the
    ablation unit will read the store."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    fault = {"target": "faceprobe.run.runner:_log", "match": "start", "after": 1, "units": str(run / "units")}
    assert forked_cli("run", study, "--out", run, fault=fault).returncode == -9
    assert len(_finished(run)) == 1
    return run


def _flip(offset: int):
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


LATER = "backbone.stage2.0"  # the second unit's layer, read from the store
ABLATED = "backbone.stage1.0"  # a layer of the first unit, read again by the ablation unit

#: (the damaged file or folder in the store, the damage): the resumed run extracts the layer's damaged
#: batches again, to the bytes they held, and gives the reference tables.
DAMAGED_CHUNKS = {
    "a flipped byte in a checksum": (f"{LATER}/c/1/0", _flip(-2)),
    "a flipped sign in a chunk the ablation reads": (f"{ABLATED}/c/2/0", _flip(1003)),
    "a chunk cut short": (f"{LATER}/c/1/0", lambda p: p.write_bytes(p.read_bytes()[:-9])),
    "an emptied chunk": (f"{LATER}/c/3/0", lambda p: p.write_bytes(b"")),
    "a chunk with bytes appended": (f"{LATER}/c/0/0", lambda p: p.write_bytes(p.read_bytes() + bytes(4))),
    "a deleted chunk": (f"{LATER}/c/1/0", Path.unlink),
    "a deleted chunk the ablation reads": (f"{ABLATED}/c/0/0", Path.unlink),
    "every chunk of a layer deleted": (f"{LATER}/c", shutil.rmtree),
    "the batch marks deleted": (f"{LATER}.done/c", shutil.rmtree),
    "the layer's metadata deleted": (f"{LATER}/zarr.json", Path.unlink),
    "the layer's metadata not JSON": (f"{LATER}/zarr.json", lambda p: p.write_text('{"zarr_format": 3,')),
    "the batch marks' metadata not JSON": (f"{LATER}.done/zarr.json", lambda p: p.write_text("[")),
    "a dead writer's half-written chunk": (
        f"{LATER}/c/1/0",
        lambda p: p.with_name(f"0.{_host()}.999999999.{'0' * 32}.partial").write_bytes(b"half"),
    ),
}


def _host() -> str:
    from faceprobe.extract.chunks import _HOST

    return _HOST


def _copy_with_store(interrupted: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = Path(shutil.copytree(interrupted, tmp_path / "run"))
    (store,) = (run / "store").iterdir()
    return run, store


def _chunks(layer: Path) -> dict[str, bytes]:
    return {str(p.relative_to(layer)): p.read_bytes() for p in layer.glob("c/*/*")}


@pytest.mark.parametrize("damage", list(DAMAGED_CHUNKS))
def test_a_damaged_store_is_extracted_again_and_gives_the_same_tables(
    damage, interrupted, keeping, reference, forked_cli, tmp_path
):
    run, store = _copy_with_store(interrupted, tmp_path)
    where, spoil = DAMAGED_CHUNKS[damage]
    assert (store / where).exists()
    spoil(store / where)
    _resume_gives_the_reference(forked_cli, keeping, run, reference)
    layer = where.split("/")[0].removesuffix(".done")
    (original,) = (interrupted / "store").iterdir()
    assert _chunks(store / layer) == _chunks(original / layer), "the damaged batches were not extracted again"
    assert not list(store.rglob("*.partial")), "a dead writer's chunk file was kept"


def _other_key(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["key"]["n"] += 1
    (store / "zarr.json").write_text(json.dumps(meta))


#: Damage that hides what the store holds: one line naming the store, and deleting it (as the line says)
#: lets the run finish with the reference tables.
UNKNOWABLE_STORES = {
    "the store's metadata not JSON": (lambda s: (s / "zarr.json").write_text("{"), "zarr.json"),
    "the store's metadata of another key": (_other_key, "holds another key"),
}


@pytest.mark.parametrize("damage", list(UNKNOWABLE_STORES))
def test_a_store_that_cannot_say_what_it_holds_is_one_line_then_deleting_it_resumes(
    damage, interrupted, study, reference, forked_cli, tmp_path
):
    run, store = _copy_with_store(interrupted, tmp_path)
    spoil, says = UNKNOWABLE_STORES[damage]
    spoil(store)
    assert_one_line_error(forked_cli("run", study, "--out", run), str(store), says, "delete")
    shutil.rmtree(store)
    _resume_gives_the_reference(forked_cli, study, run, reference)


# --- pickle payloads never run ------------------------------------------------------------------------------


class _Payload:
    """Unpickled, it creates the file ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pickle payload ran')",))


def _state() -> dict:
    from faceprobe.models import build_model

    return {k: v.contiguous() for k, v in build_model("small").state_dict().items()}


def _torch_save(name: str, content, **kwargs):
    def write(folder: Path, payload: _Payload) -> Path:
        import torch

        torch.save(content(payload), folder / name, **kwargs)
        return folder / name

    return write


def _write(name: str, content):
    def write(folder: Path, payload: _Payload) -> Path:
        (folder / name).write_bytes(content(payload))
        return folder / name

    return write


def _protocol_0(payload: _Payload) -> bytes:
    """The classic hand-written exploit: text pickle calling builtins.exec."""
    code = f"open({str(payload.marker)!r}, 'w')"
    return b"cbuiltins\nexec\n(S" + repr(code).encode() + b"\ntR."


def _legacy_tar(payload: _Payload) -> bytes:
    """torch's oldest format: a tar of pickles, the object itself in the member ``pickle``."""
    members = {
        "storages": pickle.dumps(0) + pickle.dumps([]),  # no storages, no views
        "tensors": pickle.dumps(0),
        "pickle": pickle.dumps(payload),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _safetensors_with_pickled_metadata(folder: Path, payload: _Payload) -> Path:
    from safetensors.torch import save_file

    raw = pickle.dumps(payload)
    metadata = {"pickle": raw.decode("latin-1"), "base64": base64.b64encode(raw).decode()}
    save_file(_state(), str(folder / "weights.safetensors"), metadata=metadata)
    return folder / "weights.safetensors"


def _checkpoint_folder_holding_a_pickle(folder: Path, payload: _Payload) -> Path:
    """A faceprobe checkpoint folder whose model.safetensors is a torch pickle."""
    import torch

    checkpoint = folder / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "metadata.json").write_text(json.dumps({"architecture": "small", "num_classes": 100}))
    torch.save({"state_dict": _state(), "hook": payload}, checkpoint / "model.safetensors")
    return checkpoint / "model.safetensors"


#: Files given as ``--weights checkpoint:FILE``: (write it, whether it loads: the safetensors file is whole,
#: its metadata strings are never unpickled). Each holds a payload; none may run.
PICKLED_CHECKPOINTS = {
    ".pt (zip), the payload at the top": (_torch_save("top.pt", lambda p: p), False),
    ".pth (legacy format), the payload beside the state dict": (
        _torch_save(
            "legacy.pth", lambda p: {"state_dict": _state(), "meta": p}, _use_new_zipfile_serialization=False
        ),
        False,
    ),
    ".ckpt (Lightning-style), the payload in hyper_parameters": (
        _torch_save("lightning.ckpt", lambda p: {"state_dict": _state(), "hyper_parameters": {"x": p}}),
        False,
    ),
    ".bin (Hugging Face style), the payload among the tensors": (
        _torch_save("pytorch_model.bin", lambda p: {**_state(), "evil": p}),
        False,
    ),
    ".pkl, a plain pickle": (_write("raw.pkl", lambda p: pickle.dumps({"state_dict": p}, protocol=2)), False),
    ".pt, a hand-written protocol-0 pickle": (_write("proto0.pt", _protocol_0), False),
    ".tar, torch's legacy tar format": (_write("old.tar", _legacy_tar), False),
    ".safetensors holding a torch pickle": (_torch_save("fake.safetensors", lambda p: {"w": p}), False),
    ".safetensors whose metadata holds a pickle": (_safetensors_with_pickled_metadata, True),
    "a checkpoint folder whose model.safetensors is a pickle": (_checkpoint_folder_holding_a_pickle, False),
}


def _runs_when_loaded_carelessly(path: Path, marker: Path, load=None) -> None:
    """The payload is live: ``torch.load(weights_only=False)`` (or ``load``) of the file runs it."""
    import torch

    try:
        if load is not None:
            load(path)
        else:
            with path.open("rb") as file:  # a file object: torch does not route .safetensors elsewhere
                torch.load(file, weights_only=False)
    except Exception:  # a plain pickle is no torch file: refused only after it ran
        pass
    assert marker.exists(), f"{path.name}: the test's payload does not run even when loaded carelessly"


def _metadata_pickle(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        pickle.loads(file.metadata()["pickle"].encode("latin-1"))


@pytest.mark.parametrize("case", list(PICKLED_CHECKPOINTS))
def test_a_pickled_checkpoint_never_runs_its_payload(case, forked_cli, tmp_path):
    write, loads = PICKLED_CHECKPOINTS[case]
    marker = tmp_path / "ran"
    path = write(tmp_path, _Payload(marker))
    proc = forked_cli("layers", "small", "--weights", f"checkpoint:{path}")
    assert not marker.exists(), "the pickle payload ran"
    if loads:
        assert proc.returncode == 0 and "backbone.stem" in proc.stdout, proc.stderr
    else:
        assert_one_line_error(proc, str(path))
    _runs_when_loaded_carelessly(path, marker, _metadata_pickle if loads else None)


def test_poisoned_imagenet_weights_in_the_torch_cache_never_run(forked_cli, tmp_path, monkeypatch):
    import torch

    from faceprobe.models.loading import imagenet_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = imagenet_path("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "hook": _Payload(tmp_path / "ran")}, cached)
    proc = forked_cli(
        "layers", "resnet18", "--weights", "imagenet", env={"TORCH_HOME": str(tmp_path / "torch")}
    )
    assert not (tmp_path / "ran").exists(), "the pickle payload ran"
    assert_one_line_error(proc, str(cached))
    _runs_when_loaded_carelessly(cached, tmp_path / "ran")


@pytest.mark.parametrize("which", ["features", "labels"])
def test_object_arrays_given_to_probe_array_never_run(which, forked_cli, tmp_path):
    marker = tmp_path / "ran"
    X, y = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(X, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    np.save(y, np.tile([0, 1], 10))
    hostile = X if which == "features" else y
    np.save(hostile, np.array([_Payload(marker)] * 20, dtype=object), allow_pickle=True)
    proc = forked_cli("probe-array", X, y)
    assert not marker.exists(), "the pickle payload ran"
    assert_one_line_error(proc, str(hostile), "Python objects")
    _runs_when_loaded_carelessly(hostile, marker, lambda path: np.load(path, allow_pickle=True))


def test_a_training_state_holding_a_pickle_never_runs_on_resume(tiny_faces, forked_cli, tmp_path):
    import torch

    marker, last = tmp_path / "ran", tmp_path / "train" / "last"
    last.mkdir(parents=True)
    (last / "state.json").write_text(json.dumps({"epoch": 0, "values": {}}))
    torch.save({"model.w": _Payload(marker)}, last / "state.safetensors")
    proc = forked_cli(
        "train", "recognition", "--model", "small", "--data", f"synthetic:{tiny_faces}", "--epochs", "1",
        "--input-size", "32", "--out", tmp_path / "train",
    )  # fmt: skip
    assert not marker.exists(), "the pickle payload ran"
    assert_one_line_error(proc, str(last / "state.safetensors"))
    _runs_when_loaded_carelessly(last / "state.safetensors", marker)


def test_a_results_part_carrying_a_pickled_arrow_type_never_runs(reference, study, forked_cli, tmp_path):
    """pyarrow once unpickled ``arrow.py_extension_type`` columns on reading (CVE-2023-47248)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = Path(shutil.copytree(reference, tmp_path / "run"))
    part = next((run / "results.parquet").glob("*.parquet"))
    table = pq.read_table(part)
    extension = {
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": pickle.dumps(_Payload(tmp_path / "ran")),
    }
    column = pa.array([b"x"] * len(table), pa.binary())
    table = table.append_column(pa.field("hook", pa.binary(), metadata=extension), column)
    pq.write_table(table, part)
    proc = forked_cli("run", study, "--out", run)  # a finished run reads its tables for the summary
    assert not (tmp_path / "ran").exists(), "the pickle payload ran"
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        assert_one_line_error(proc, str(part))
    hook = pq.read_schema(part).field("hook").metadata[b"ARROW:extension:metadata"]
    _runs_when_loaded_carelessly(part, tmp_path / "ran", lambda path: pickle.loads(hook))


# --- hostile names: text, never markup ----------------------------------------------------------------------

#: Each place the report prints a name, with the name put there: written into the run's tables, its manifest
#: or the groups file, each must reach the page escaped, never as markup, nor into the Markdown or SVG files.
HOSTILE = {
    "attribute": "<script>alert('attribute')</script>",
    "layer": "stage</td><script>alert('layer')</script>",
    "model": "m'><iframe srcdoc=x></iframe>",
    "variant, in figure captions and alt attributes": '../../escape"><img src=x onerror=alert(1)>',
    "run folder": "run<svg onload=alert(2)>",
    "manifest model architecture": "arch<style>body{display:none}</style>",
    "manifest model weights": "checkpoint:</pre><script>alert(5)</script>",
    "manifest data spec": "synthetic:<object data=x></object>",
    "manifest git revision": "'; --<b onmouseover=alert(6)>bold</b>",
    "manifest versions": "<meta http-equiv=refresh content='0;url=//evil'>",
    "study settings in the manifest": "</pre><script>alert(7)</script>",
    "attribute group": "<marquee>group</marquee>",
    "already escaped entities, in the manifest": "&lt;script&gt;alert(8)&lt;/script&gt;",
}
RICH = "[bold red]rich[/bold red] [/]"  # Rich markup: text in HTML too
MATH = r"$\frac{1}{0}$ $x^"  # math text: drawn literally, not parsed (a parse error would end the report)


def _hostile_run(folder: Path) -> Path:
    from faceprobe.results import to_frame, write_results

    run = folder / HOSTILE["run folder"]
    variant = HOSTILE["variant, in figure captions and alt attributes"]
    rows = [
        {
            "model": f"{HOSTILE['model']}/s0",
            "variant": variant,
            "layer": f"{HOSTILE['layer']}{depth}",
            "depth": depth,
            "attribute": attribute,
            "representation": representation,
            "k": 0 if representation == "layer" else 2,
            "unit": 1 if representation in ("channel", "neuron") else -1,
            "split": split,
            "accuracy": 0.55 + depth / 10 + (0.1 if attribute == HOSTILE["attribute"] else 0),
            "n_train": 8,
            "n_eval": 8,
            "architecture": "toynet",
            "weights": "random",
            "kind": "block",
        }
        for depth in range(3)
        for attribute in (HOSTILE["attribute"], RICH, MATH, "Control_Random")
        for representation in ("layer", "channels", "neurons", "channel", "neuron")
        for split in ("val", "test")
    ]
    write_results(to_frame(rows), run / "results.parquet" / "part.parquet")
    manifest = {
        "faceprobe_version": "0.1.0",
        "created": HOSTILE["already escaped entities, in the manifest"],
        "git_revision": HOSTILE["manifest git revision"],
        "config": {"models": [{"name": HOSTILE["study settings in the manifest"]}], "data": {"test": -1}},
        "models": [
            {
                "name": HOSTILE["model"],
                "architecture": HOSTILE["manifest model architecture"],
                "weights": HOSTILE["manifest model weights"],
                "seed": 0,
            }
        ],
        "data": {"spec": HOSTILE["manifest data spec"], "attributes": [HOSTILE["attribute"], RICH]},
        "versions": {"python": HOSTILE["manifest versions"]},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def hostile_report(forked_cli, tmp_path_factory) -> tuple[Path, object]:
    """`faceprobe report` of a run whose names are hostile, into a folder whose name is Rich markup."""
    folder = tmp_path_factory.mktemp("hostile")
    run = _hostile_run(folder / "runs")
    groups = folder / "groups.json"
    groups.write_text(json.dumps({HOSTILE["attribute group"]: ["Not_In_This_Run"], "Mine": [RICH, MATH]}))
    out = folder / "out" / "report [/bold] [red]"
    proc = forked_cli("report", run, "--out", out, "--groups", groups)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.parametrize("place", list(HOSTILE))
def test_a_hostile_name_is_text_on_the_report_page(place, hostile_report):
    out, _ = hostile_report
    page = (out / "index.html").read_text()
    name = HOSTILE[place]
    assert name not in page, "printed as markup"
    assert html.escape(name) in page, "not printed where the report shows it, or not escaped"
    for path in [*out.rglob("*.md"), *out.rglob("*.svg")]:
        assert name not in path.read_text() or "<" not in name, path


def test_rich_markup_and_math_text_in_names_are_printed_as_written(hostile_report):
    out, _ = hostile_report
    page = (out / "index.html").read_text()
    assert RICH in page and html.escape(MATH) in page
    svgs = "".join(path.read_text() for path in (out / "figures").glob("*.svg"))
    assert html.escape(MATH, quote=False) in svgs, "the math text was not drawn as written"


class _Markup(HTMLParser):
    """The elements, attributes and script text of a page, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.code: list[str] = []  # the text of script and style elements
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.code.append(data)


def test_no_hostile_name_becomes_an_element_an_attribute_or_code(hostile_report):
    out, _ = hostile_report
    page = _Markup()
    page.feed((out / "index.html").read_text())
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"iframe", "object", "embed", "marquee"}, tags
    assert not [(tag, a) for tag, attrs in page.tags for a in attrs if a.startswith("on")]
    assert not [attrs for tag, attrs in page.tags if tag == "img" and attrs.get("src") == "x"]
    assert not [attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("http-equiv") == "refresh"]
    assert not [code for code in page.code if "alert(" in code or "display:none" in code]
    csp = [
        attrs["content"] for tag, attrs in page.tags if attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0]


def test_report_files_have_plain_names_inside_the_report_folder(hostile_report):
    """The variant named ``../../escape...`` names figure files: they stay in the report's folder."""
    out, _ = hostile_report
    assert not (out.parent.parent / "escape").exists() and not (out.parent / "escape").exists()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in written), written
    assert any(p.name.startswith("depth-") for p in written)  # named after the variant


def test_the_report_command_prints_its_folder_as_written(hostile_report):
    out, proc = hostile_report
    assert f"wrote {out / 'index.html'}" in proc.stdout, proc.stdout


def _markup(folder: Path) -> Path:
    return folder / "[/bold][red]x"


def _rich_case(command: str, path: Path, reference: Path, tiny_faces: Path) -> tuple[list, str]:
    """The command line of a command printing ``path`` (made here), and the line it must print."""
    path.parent.mkdir(parents=True, exist_ok=True)  # the / of [/bold] makes a folder "["
    if command == "synth":
        return ["synth", "--out", path, "--identities", "2", "--images-per-identity", "2"], f"faces to {path}"
    if command == "init":
        return ["init", path], f"wrote {path}; edit [data] and [[models]], then: faceprobe run {path}"
    if command == "data check":
        path.symlink_to(tiny_faces, target_is_directory=True)
        return ["data", "check", f"synthetic:{path}"], f"synthetic dataset at {path}: 72 usable images"
    if command == "layers":
        from safetensors.torch import save_file

        save_file(_state(), str(path))
        return ["layers", "small", "--weights", f"checkpoint:{path}"], f"small/{path.name}/s0 at 112x112"
    if command == "probe-array":
        np.save(path, np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
        np.save(path.parent / "y.npy", np.tile([0, 1], 20))
        return ["probe-array", path, path.parent / "y.npy"], f"{path.name}: validation accuracy"
    shutil.copytree(reference, path)
    if command == "status":
        return ["status", path], f"{path}: 3/3 work units finished"
    return ["clean", path], f"freed 0.0 MiB in {path}"


@pytest.mark.parametrize(
    ("command", "suffix"),
    [
        ("synth", ""),
        ("init", ".toml"),
        ("data check", ""),
        ("layers", ".safetensors"),
        ("probe-array", ".npy"),
        ("status", ""),
        ("clean", ""),
    ],
)
def test_names_holding_rich_markup_are_printed_as_written(
    command, suffix, reference, tiny_faces, forked_cli, tmp_path
):
    path = _markup(tmp_path).with_suffix(suffix) if suffix else _markup(tmp_path)
    args, says = _rich_case(command, path, reference, tiny_faces)
    proc = forked_cli(*args)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr + proc.stdout
    assert "".join(says.split()) in "".join(proc.stdout.split()), proc.stdout  # a table title wraps


def test_a_study_of_hostile_names_prints_them_as_written(tiny_faces, forked_cli, tmp_path):
    """A run folder and an attribute named in Rich markup and HTML: the end-of-run summary prints both."""
    attribute = "[/bold]<b>Eyeglasses</b>"
    labels = pd.read_csv(tiny_faces / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    table = tmp_path / "labels.csv"
    pd.DataFrame({"image_id": labels.index, attribute: labels["Eyeglasses"].to_numpy()}).to_csv(
        table, index=False
    )
    out = _markup(tmp_path)
    proc = forked_cli(
        "probe", "--model", "small", "--input-size", "32", "--layers", "backbone.stage2.0",
        "--data", f"folder:{tiny_faces / 'img_align_celeba'},{table}", "--attributes", attribute,
        "--train", "16", "--val", "16", "--vip-study", "0", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"results in {out}" in proc.stdout and attribute in proc.stdout, proc.stdout
