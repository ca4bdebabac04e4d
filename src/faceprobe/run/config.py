"""Run configuration: one TOML file (or the flags of ``faceprobe probe``) describes a whole study.

Example (every key but ``data.spec`` and one model is optional)::

    [data]
    spec = "celeba:/data/celeba"      # KIND:PATH
    attributes = "all"                # or a list; Control_Random (random labels) is always added
    train = 2048                      # balanced train draw per attribute
    val = 6144                        # balanced validation draw per attribute
    test = 0                          # images of the untouched test split scored too (0: none, -1: all)
    seed = 0
    controls = 1                      # random-label controls: Control_Random, Control_Random_2, ... (a
                                      #   spread of what noise reaches per layer; each its own labels)
    skip_bad_images = false           # true: leave out missing/corrupt images and list them in the manifest
    kinds = { age = "continuous" }    # a target's kind (binary | multiclass | continuous), where the kind
                                      #   read from its column's values is not the one meant
    groups = { Hair = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"] }
                                      # multi-class targets from 0/1 columns, one per class (CelebA's)

    [[models]]
    name = "arcface-r50"              # display name (default: ARCHITECTURE/ORIGIN); ids add a digest
    architecture = "resnet50"         # a registry name, or package.module:factory (code: see allow_code)
    weights = ["random", "imagenet", "checkpoint:runs/face/model.safetensors"]
                                      # "epochs:runs/face": each epoch a training run kept (train
                                      #   recognition --save-every), one model per epoch
    seeds = [0]
    layers = "auto"                   # auto | all | names or glob patterns, comma-separated
    input_size = "112x96"             # HxW or one number (default: the architecture's); preprocessing:
    crop = [35, 60, 143, 186]         #   LEFT,TOP,RIGHT,BOTTOM on the source image (default: none)
    mean = [0.5, 0.5, 0.5]            #   R,G,B on the 0-1 scale (default: the architecture's)
    std = [0.5, 0.5, 0.5]
    bgr = false                       #   channel order the network expects
    strict = true                     # false: accept a checkpoint that fits only partly (reported)

    [probe]
    components = 8
    top_k = 8
    single_units = true               # best single channel / neuron (Table 5.2)
    vip_study = 50                    # neurons per (layer, attribute) for Fig. 5.9; 0 turns it off

    [ablation]                        # Table 5.4; omit the table to skip the study
    depths = [10, 25, 40]             # catalogue depths (the tables' depth column) or layer names
    fractions = [0.01, 0.05, 0.10]
    attributes = ["Eyeglasses"]       # default: all

    [run]
    executor = "local"                # local | dask
    scheduler = ""                    # dask scheduler address; empty: a local cluster of `workers`
    workers = 2
    layers_per_unit = 0               # a work unit is (model, group of layers); 0: as many as fit
    batch_size = 64
    device = "auto"
    memory_gb = 4.0                   # RAM a unit may hold its layers in (default: 3/4 of the free RAM)
    store = "store"                   # activation store folder, inside the run folder
    store_dtype = "float32"           # float32 | float16 (half the disk; mind overflow in wide layers)
    precision = "float32"             # float32 | bfloat16 (autocast forward passes; for GPUs)
    allow_code = false                # true: a package.module:factory architecture may run its code
    keep_store = false                # true: keep the activation store once the run is finished
    disk_gb = 0.0                     # disk the run may fill; 0: the free space of its disk less 10%
    mode = "auto"                     # auto | ram | store | stream: where the train layers are held

    [baseline]                        # the multitask ceiling of Table 5.2 (faceprobe train attributes)
    path = "runs/attributes/baseline.parquet"

Relative paths (data, checkpoints, training folders, baseline) are read against the study file's folder,
once, and recorded as absolute paths; a study file that names a ``package.module:factory`` runs that code,
so it needs ``allow_code = true`` (or ``faceprobe run --allow-code``).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from faceprobe.controls import CONTROL
from faceprobe.errors import FaceprobeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "CONTROL",
    "MAX_CONTROLS",
    "AblationConfig",
    "BaselineConfig",
    "DataConfig",
    "ModelConfig",
    "ProbeConfig",
    "RunConfig",
    "RunnerConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class DataConfig:
    spec: str
    attributes: tuple[str, ...] | str = "all"
    train: int = 2048
    val: int = 6144
    test: int = 0
    seed: int = 0
    controls: int = 1
    skip_bad_images: bool = False
    kinds: tuple[tuple[str, str], ...] = ()
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    name: str | None = None
    weights: tuple[str, ...] = ("random",)
    seeds: tuple[int, ...] = (0,)
    layers: str = "auto"
    input_size: int | str | None = None
    crop: tuple[int, int, int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    bgr: bool | None = None
    strict: bool = True


@dataclass(frozen=True)
class ProbeConfig:
    components: int = 8
    top_k: int = 8
    single_units: bool = True
    vip_study: int = 50


@dataclass(frozen=True)
class AblationConfig:
    depths: tuple[int | str, ...] = (10, 25, 40)
    fractions: tuple[float, ...] = (0.01, 0.05, 0.10)
    attributes: tuple[str, ...] | str = "all"


@dataclass(frozen=True)
class RunnerConfig:
    executor: str = "local"
    scheduler: str = ""
    workers: int = 2
    layers_per_unit: int = 0
    batch_size: int = 64
    device: str = "auto"
    memory_gb: float | None = None
    store: str = "store"
    store_dtype: str = "float32"
    precision: str = "float32"
    allow_code: bool = False
    keep_store: bool = False
    disk_gb: float = 0.0
    mode: str = "auto"


@dataclass(frozen=True)
class BaselineConfig:
    path: str


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    models: tuple[ModelConfig, ...]
    probe: ProbeConfig = ProbeConfig()
    ablation: AblationConfig | None = None
    run: RunnerConfig = RunnerConfig()
    baseline: BaselineConfig | None = None
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "source"}


#: The most random-label controls a study may ask for: each is probed like an attribute.
MAX_CONTROLS = 20
#: Where a unit's train layers are held (run.mode): chosen by the plan's budgets, in RAM, in the activation
#: store, or nowhere (streamed through the network, one forward pass per pass of the fits).
MODES = ("auto", "ram", "store", "stream")
#: Settings that change how a run goes, never what it computes: a resume may change them.
RESUMABLE = {
    "run": (
        "executor",
        "scheduler",
        "workers",
        "batch_size",
        "device",
        "memory_gb",
        "store",
        "keep_store",
        "disk_gb",
        "mode",
    )
}
#: Files and folders of a run folder that faceprobe writes; the activation store may not be one of them.
RESERVED = (
    "config.toml",
    "manifest.json",
    "draws.parquet",
    "labels.parquet",
    "results.parquet",
    "vip_study.parquet",
    "ablation.parquet",
    "baseline.parquet",
    "units",
    "log.jsonl",
    "report",
    ".lock",
)
_TABLES = {
    "data": DataConfig,
    "models": ModelConfig,
    "probe": ProbeConfig,
    "ablation": AblationConfig,
    "run": RunnerConfig,
    "baseline": BaselineConfig,
}
_SCALAR_LISTS = ("weights", "seeds")  # a single value stands for a list of one
_NAMED_TABLES = ("kinds", "groups")  # a TOML table {name = value}, held as (name, value) pairs
#: How to write each key a table cannot do without.
_REQUIRED = {
    "spec": 'spec = "KIND:PATH", e.g. "celeba:/data/celeba"',
    "architecture": 'architecture = "resnet50" (or another `faceprobe layers --help` name)',
    "path": 'path = "runs/attributes/baseline.parquet"',
}


def _describe(value: Any) -> str:
    return f"{value!r} (a {type(value).__name__})"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` names, or a FaceprobeError naming ``key``; nothing is guessed."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        problems = []
        for arm in typing.get_args(hint):
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, key)
            except FaceprobeError as err:
                problems.append(str(err))
        raise FaceprobeError(problems[0] if len(problems) == 1 else f"{key} is not valid: {_describe(value)}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise FaceprobeError(f"{key} must be a list, not {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise FaceprobeError(f"{key} must be a list of {len(args)} values, not {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise FaceprobeError(f"{key} must be true or false, not {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FaceprobeError(f"{key} must be a whole number, not {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FaceprobeError(f"{key} must be a number, not {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FaceprobeError(f"{key} must be a string, not {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {hint!r}")  # a faceprobe bug: a field of a new type


def _section(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    """``raw`` checked key by key into ``cls``; every problem is appended to ``problems`` (then None)."""
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a table of keys; see `faceprobe run --help` for an example")
        return None
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(known)}"
        )
    values, ok = {}, not unknown
    for name, value in raw.items():
        if name not in known:
            continue
        if name in _SCALAR_LISTS and not isinstance(value, (list, tuple)):
            value = [value]
        if name in _NAMED_TABLES and isinstance(value, dict):  # {name = value} as (name, value) pairs
            value = [[key, item] for key, item in value.items()]
        if name == "attributes" and isinstance(value, str) and value != "all":
            example = json.dumps([value], ensure_ascii=False)  # control characters escaped: one line
            problems.append(f'{where} {name} must be "all" or a list of names, e.g. {example}')
            ok = False
            continue
        try:
            values[name] = _coerce(value, hints[name], f"{where} {name}")
        except FaceprobeError as err:
            problems.append(str(err))
            ok = False
    required = [f.name for f in fields(cls) if f.default is MISSING and f.name not in raw]
    if required:
        problems.append(f"{where} needs {', '.join(_REQUIRED.get(name, name) for name in required)}")
    return cls(**values) if ok and not required else None


def parse_config(raw: dict[str, Any], source: str = "", base: str | Path | None = None) -> RunConfig:
    """Validate a config dict (as read from TOML) into a :class:`RunConfig`, reporting every problem at once.

    ``base`` is the folder relative paths are read against (the study file's; default: the working
    folder); the config keeps them absolute, so a resume from anywhere reads the same files.
    """
    where = source or "config"
    problems: list[str] = []
    unknown = sorted(set(raw) - set(_TABLES))
    if unknown:
        problems.append(f"unknown table(s) {', '.join(unknown)}; use {', '.join(_TABLES)}")
    if "data" not in raw:
        problems.append(f"add a [data] table with {_REQUIRED['spec']}")
    models = raw.get("models")
    if not models or not isinstance(models, (list, tuple)):
        problems.append('add at least one [[models]] table with architecture = "..."')
        models = []
    sections = {
        "data": _section(DataConfig, raw.get("data", {}), "[data]", problems) if "data" in raw else None,
        "models": tuple(
            _section(ModelConfig, m, f"[[models]] #{i + 1}", problems) for i, m in enumerate(models)
        ),
        **{
            name: _section(_TABLES[name], raw[name], f"[{name}]", problems)
            for name in ("probe", "ablation", "run", "baseline")
            if raw.get(name) is not None
        },
    }
    if problems or None in sections["models"] or any(v is None for v in sections.values()):
        raise FaceprobeError(f"{where}: " + "; ".join(problems))
    config = RunConfig(**sections, source=source)
    _check(config, problems)
    if problems:
        raise FaceprobeError(f"{where}: " + "; ".join(problems))
    return _resolved(config, Path(base) if base is not None else Path.cwd())


def _check(config: RunConfig, problems: list[str]) -> None:
    """Ranges and choices, each problem appended to ``problems``."""
    data, probe, run = config.data, config.probe, config.run
    if data.train < 4 or data.val < 4:
        problems.append("data.train and data.val must be at least 4")
    if not 1 <= data.controls <= MAX_CONTROLS:
        problems.append(
            f"data.controls must be 1 to {MAX_CONTROLS} (random-label controls: Control_Random, "
            f"Control_Random_2, ...), not {data.controls}"
        )
    from faceprobe.targets import KINDS

    bad_kinds = [f"{name} = {kind!r}" for name, kind in data.kinds if kind not in KINDS]
    if bad_kinds:
        problems.append(f"data.kinds: {', '.join(bad_kinds)}; a kind is {', '.join(KINDS)}")
    small = [name for name, members in data.groups if len(set(members)) < 2]
    if small:
        problems.append(f"data.groups: {', '.join(small)} need two or more distinct columns, one per class")
    if data.test < -1:
        problems.append("data.test must be 0 (no test images), -1 (all) or a count")
    if probe.components < 1 or probe.top_k < 1 or probe.vip_study < 0:
        problems.append("probe.components and probe.top_k must be positive, probe.vip_study 0 or more")
    if run.executor not in ("local", "dask"):
        problems.append(f"run.executor must be local or dask, not {run.executor!r}")
    if run.layers_per_unit < 0:
        problems.append("run.layers_per_unit must be 0 (as many layers as fit in a unit) or positive")
    if run.batch_size < 1 or run.workers < 1:
        problems.append("run.batch_size and run.workers must be positive")
    if run.disk_gb < 0:
        problems.append("run.disk_gb must be 0 (the free space of the run's disk) or more")
    if run.memory_gb is not None and run.memory_gb < 0:
        problems.append("run.memory_gb must be 0 or more (0 streams every layer through the store)")
    if run.mode not in MODES:
        problems.append(f"run.mode must be one of {', '.join(MODES)}, not {run.mode!r}")
    if run.store_dtype not in ("float32", "float16"):
        problems.append(f"run.store_dtype must be float32 or float16, not {run.store_dtype!r}")
    if run.precision not in ("float32", "bfloat16"):
        problems.append(f"run.precision must be float32 or bfloat16, not {run.precision!r}")
    store = Path(run.store)
    if store.is_absolute() or ".." in store.parts or not store.parts:
        problems.append(
            f"run.store must be a folder inside the run folder, not {run.store!r} "
            "(a config never writes outside its run folder)"
        )
    elif store.parts[0] in RESERVED:
        problems.append(
            f"run.store {run.store!r} would write into the run's own {store.parts[0]}; "
            f"name another folder (reserved: {', '.join(RESERVED)})"
        )
    for i, model in enumerate(config.models):
        if ":" in model.architecture and not run.allow_code:
            problems.append(
                f"[[models]] #{i + 1} architecture {model.architecture!r} is code that would run on "
                "import; allow it with allow_code = true in [run] (or --allow-code)"
            )
        if not model.weights or not model.seeds:
            problems.append(f"[[models]] #{i + 1} needs at least one weights entry and one seed")
    if config.ablation is not None:
        ablation = config.ablation
        if not all(0 < f < 1 for f in ablation.fractions):
            problems.append("ablation.fractions must lie strictly between 0 and 1 (0.05 = top 5% of neurons)")
        negative = [d for d in ablation.depths if isinstance(d, int) and d < 0]
        if negative:
            problems.append(
                f"ablation.depths {negative} are negative; give catalogue depths (the tables' depth "
                "column, from 0) or layer names"
            )


def _resolved(config: RunConfig, base: Path) -> RunConfig:
    """``config`` with its data, checkpoint, training-folder and baseline paths made absolute against
    ``base``."""
    from faceprobe.data.registry import absolute_spec

    def weights(spec: str) -> str:
        kind, _, path = spec.partition(":")
        return f"{kind}:{_absolute(path, base)}" if kind in ("checkpoint", "epochs") and path else spec

    return replace(
        config,
        data=replace(config.data, spec=absolute_spec(config.data.spec, base)),
        models=tuple(replace(m, weights=tuple(weights(w) for w in m.weights)) for m in config.models),
        baseline=replace(config.baseline, path=_absolute(config.baseline.path, base))
        if config.baseline
        else None,
    )


def _absolute(path: str, base: Path) -> str:
    return str((base / Path(path).expanduser()).resolve())


def load_config(path: str | Path, allow_code: bool = False) -> RunConfig:
    """Read and validate a TOML study file; every problem is named in one line with the file and key.

    Relative paths inside are read against the file's folder. ``allow_code`` (``--allow-code``) lets a
    ``package.module:factory`` architecture run, as ``allow_code = true`` in ``[run]`` does.
    """
    path = Path(path)
    if path.suffix != ".toml":
        raise FaceprobeError(f"{path}: a study file is TOML and ends in .toml; `faceprobe init` writes one")
    if not path.is_file():
        raise FaceprobeError(f"{path}: no such study file; `faceprobe run --help` shows an example")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FaceprobeError(f"{path}: not valid TOML ({err})") from None
    if allow_code:
        raw.setdefault("run", {})
        if isinstance(raw["run"], dict):
            raw["run"]["allow_code"] = True
    return parse_config(raw, str(path), base=path.resolve().parent)
