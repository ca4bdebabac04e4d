"""Run configuration: one TOML file (or the flags of ``faceprobe probe``) describes a whole study.

Example (every key but ``data.spec`` and one model is optional)::

    [data]
    spec = "celeba:/data/celeba"      # KIND:PATH
    attributes = "all"                # or a list; Control_Random (random labels) is always added
    train = 2048                      # balanced train draw per attribute
    val = 6144                        # balanced validation draw per attribute
    test = 0                          # images of the untouched test split scored too (0: none, -1: all)
    seed = 0
    skip_bad_images = false           # true: leave out missing/corrupt images and list them in the manifest

    [[models]]
    architecture = "resnet50"
    weights = ["random", "imagenet", "checkpoint:runs/face/model.safetensors"]
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
    depths = [10, 25, 40]
    fractions = [0.01, 0.05, 0.10]
    attributes = ["Eyeglasses"]       # default: all

    [run]
    executor = "local"                # local | dask
    scheduler = ""                    # dask scheduler address; empty: a local cluster of `workers`
    workers = 2
    layers_per_unit = 4               # a work unit is (model, group of layers)
    batch_size = 64
    device = "auto"
    memory_gb = 4.0                   # a unit whose layers outgrow this streams them through the store
    store = "store"                   # activation store folder, inside the run folder
    store_dtype = "float32"           # float32 | float16 (half the disk; mind overflow in wide layers)
    precision = "float32"             # float32 | bfloat16 (autocast forward passes; for GPUs)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from faceprobe.errors import FaceprobeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "AblationConfig",
    "DataConfig",
    "ModelConfig",
    "ProbeConfig",
    "RunConfig",
    "RunnerConfig",
    "load_config",
]

CONTROL = "Control_Random"


@dataclass(frozen=True)
class DataConfig:
    spec: str
    attributes: tuple[str, ...] | str = "all"
    train: int = 2048
    val: int = 6144
    test: int = 0
    seed: int = 0
    skip_bad_images: bool = False


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
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
    depths: tuple[int, ...] = (10, 25, 40)
    fractions: tuple[float, ...] = (0.01, 0.05, 0.10)
    attributes: tuple[str, ...] | str = "all"


@dataclass(frozen=True)
class RunnerConfig:
    executor: str = "local"
    scheduler: str = ""
    workers: int = 2
    layers_per_unit: int = 4
    batch_size: int = 64
    device: str = "auto"
    memory_gb: float = 4.0
    store: str = "store"
    store_dtype: str = "float32"
    precision: str = "float32"


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    models: tuple[ModelConfig, ...]
    probe: ProbeConfig = ProbeConfig()
    ablation: AblationConfig | None = None
    run: RunnerConfig = RunnerConfig()
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "source"}


def _section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise FaceprobeError(f"{where} must be a table of keys; see `faceprobe run --help` for an example")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise FaceprobeError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        values[name] = tuple(value) if isinstance(value, list) else value
    for name in ("weights", "seeds"):
        if name in values and not isinstance(values[name], tuple):
            values[name] = (values[name],)
    try:
        return cls(**values)
    except TypeError as err:
        raise FaceprobeError(f"{where}: {err}") from None


def parse_config(raw: dict[str, Any], source: str = "") -> RunConfig:
    """Validate a config dict (as read from TOML) into a :class:`RunConfig`."""
    where = source or "config"
    unknown = sorted(set(raw) - {"data", "models", "probe", "ablation", "run"})
    if unknown:
        raise FaceprobeError(
            f"{where}: unknown table(s) {', '.join(unknown)}; use data, models, probe, ablation, run"
        )
    if not isinstance(raw.get("data"), dict) or "spec" not in raw["data"]:
        raise FaceprobeError(f'{where}: [data] needs spec = "KIND:PATH", e.g. "celeba:/data/celeba"')
    models = raw.get("models")
    if not models or not isinstance(models, (list, tuple)):
        raise FaceprobeError(f'{where}: add at least one [[models]] table with architecture = "..."')
    config = RunConfig(
        data=_section(DataConfig, raw["data"], f"{where} [data]"),
        models=tuple(_section(ModelConfig, m, f"{where} [[models]] #{i + 1}") for i, m in enumerate(models)),
        probe=_section(ProbeConfig, raw.get("probe", {}), f"{where} [probe]"),
        ablation=_section(AblationConfig, raw["ablation"], f"{where} [ablation]")
        if raw.get("ablation") is not None
        else None,
        run=_section(RunnerConfig, raw.get("run", {}), f"{where} [run]"),
        source=source,
    )
    _check(config, where)
    return config


def _check(config: RunConfig, where: str) -> None:
    problems = []
    if config.data.train < 4 or config.data.val < 4:
        problems.append("data.train and data.val must be at least 4")
    if config.probe.components < 1 or config.probe.top_k < 1:
        problems.append("probe.components and probe.top_k must be positive")
    if config.run.executor not in ("local", "dask"):
        problems.append(f"run.executor must be local or dask, not {config.run.executor!r}")
    if config.run.layers_per_unit < 1 or config.run.batch_size < 1:
        problems.append("run.layers_per_unit and run.batch_size must be positive")
    if config.run.memory_gb < 0:
        problems.append("run.memory_gb must be 0 or more (0 streams every layer through the store)")
    if config.run.store_dtype not in ("float32", "float16"):
        problems.append(f"run.store_dtype must be float32 or float16, not {config.run.store_dtype!r}")
    if config.run.precision not in ("float32", "bfloat16"):
        problems.append(f"run.precision must be float32 or bfloat16, not {config.run.precision!r}")
    store = Path(str(config.run.store))
    if not str(config.run.store) or store.is_absolute() or ".." in store.parts:
        problems.append(
            f"run.store must be a relative folder inside the run folder, not {config.run.store!r} "
            "(a config never writes outside its run folder)"
        )
    if config.ablation and not all(0 < f < 1 for f in config.ablation.fractions):
        problems.append("ablation.fractions must lie strictly between 0 and 1 (0.05 = top 5% of neurons)")
    if problems:
        raise FaceprobeError(f"{where}: " + "; ".join(problems))


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration; every problem is one line naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FaceprobeError(f"{path}: no such config file; `faceprobe run --help` shows an example")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FaceprobeError(f"{path}: not valid TOML ({err})") from None
    return parse_config(raw, str(path))
