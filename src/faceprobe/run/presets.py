"""Studies that ship with faceprobe: the thesis's (Diniz 2021, chapter 5) as a study file to run or copy.

A preset is a commented TOML file in ``faceprobe/presets``; :func:`preset_config` fills in the dataset,
architecture and weights a user gives on the command line, with the layers and ablation depths that suit
that architecture.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from faceprobe.errors import FaceprobeError
from faceprobe.run.config import RunConfig, parse_config, tomllib

__all__ = ["PRESETS", "preset_config", "preset_text"]

PRESETS = ("thesis", "starter")
#: Post-skip block outputs and residual branches (the sawtooth of thesis Fig. 5.8), per architecture.
_LAYERS = {
    "resnet50": "conv1,maxpool,layer*.?,layer*.?.bn3,avgpool,fc",
    **{f"resnet{d}": "conv1,maxpool,layer*.?,layer*.?.bn2,avgpool,fc" for d in (18, 34)},
}
#: Where the thesis's ablation depths 10/25/40 fall along its probed layers, roughly.
_ABLATION_SHARES = (0.2, 0.5, 0.8)


def preset_text(name: str) -> str:
    """The commented study file of preset ``name``."""
    if name not in PRESETS:
        raise FaceprobeError(f"no preset {name!r}; presets: {', '.join(PRESETS)}")
    return resources.files("faceprobe.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")


def preset_config(
    name: str, data: str | None, model: str | None, weights: tuple[str, ...] = (), allow_code: bool = False
) -> RunConfig:
    """Preset ``name`` for dataset ``data`` and architecture ``model`` with ``weights`` (default random).

    Random weights get the preset's seeds (one curve per initialisation, averaged in the report); every
    other weight origin is one model of seed 0.
    """
    raw = tomllib.loads(preset_text(name))
    if not data or not model:
        raise FaceprobeError(f"--preset {name} needs --data KIND:PATH and --model ARCHITECTURE")
    raw["data"]["spec"] = data
    template = raw["models"][0]
    layers = _LAYERS.get(model, "auto")
    origins = list(weights) or ["random"]
    raw["models"] = [
        {**template, "architecture": model, "layers": layers, "weights": ["random"]},
        {**template, "architecture": model, "layers": layers, "weights": origins, "seeds": [0]},
    ]
    if "random" not in origins:
        raw["models"].pop(0)
    else:
        raw["models"][1]["weights"].remove("random")
        if not raw["models"][1]["weights"]:
            raw["models"].pop()
    if model != template["architecture"]:
        raw["ablation"]["depths"] = _ablation_layers(model, layers)
    raw["run"]["allow_code"] = allow_code or raw["run"].get("allow_code", False)
    return parse_config(raw, f"preset {name}", base=Path.cwd())


def _ablation_layers(architecture: str, layers: str) -> list[str]:
    """The probed layers at the preset's shares of the depth (none past the last, which has no later)."""
    import torch

    from faceprobe.extract.catalogue import catalogue, select_layers
    from faceprobe.models import load_model

    loaded = load_model(architecture, "random")
    h, w = loaded.preprocessing.input_size
    names = [info.name for info in select_layers(catalogue(loaded.module, torch.zeros(2, 3, h, w)), layers)]
    picked = [names[min(len(names) - 2, round(share * (len(names) - 1)))] for share in _ABLATION_SHARES]
    return list(dict.fromkeys(picked))
