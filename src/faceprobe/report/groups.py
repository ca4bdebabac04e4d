"""Attribute groups for the grouped views (thesis Figs 5.5-5.7), with a JSON file to replace them.

The thesis reads its results by semantic groups: hair colours against baldness (Brown_Hair's anomaly),
primary biometrics (face geometry) against soft ones (accessories, hair, make-up), and non-biometric
attributes (expression, image quality) whose accuracy falls with depth.
"""

from __future__ import annotations

import json
from pathlib import Path

from faceprobe.errors import FaceprobeError

__all__ = ["DEFAULT_GROUPS", "read_groups"]

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "Hair colours and baldness": ("Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"),
    "Primary biometrics": ("Big_Lips", "Big_Nose", "Pointy_Nose", "Oval_Face", "High_Cheekbones"),
    "Soft biometrics": (
        "Eyeglasses",
        "Wearing_Hat",
        "Wearing_Lipstick",
        "Heavy_Makeup",
        "Bangs",
        "Goatee",
        "Mustache",
        "No_Beard",
    ),
    "Non-biometric": ("Smiling", "Mouth_Slightly_Open", "Narrow_Eyes", "Blurry"),
}


def read_groups(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Groups from a JSON object mapping each group's name to its list of attribute names."""
    path = Path(path)
    example = 'e.g. {"Hair": ["Black_Hair", "Blond_Hair"]}'
    try:
        groups = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaceprobeError(f"groups file {path} does not exist; give a JSON file, {example}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FaceprobeError(f"groups file {path} is not valid JSON ({err}); {example}") from None
    valid = isinstance(groups, dict) and all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in groups.values()
    )
    if not valid or not groups:
        raise FaceprobeError(
            f"groups file {path} must map group names to lists of attribute names, {example}"
        )
    return {str(name): tuple(attributes) for name, attributes in groups.items()}
