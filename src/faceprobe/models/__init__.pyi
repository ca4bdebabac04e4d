"""Names of :mod:`faceprobe.models`, for type checkers; ``__init__.py`` imports each on first use."""

from .loading import LoadedModel as LoadedModel, load_model as load_model
from .preprocessing import Preprocessing as Preprocessing
from .registry import ARCHITECTURES as ARCHITECTURES, ModelSpec as ModelSpec, build_model as build_model
from .small import SmallFaceNet as SmallFaceNet
