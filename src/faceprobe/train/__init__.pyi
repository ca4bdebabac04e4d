"""Names of :mod:`faceprobe.train`, for type checkers; ``__init__.py`` imports each on first use."""

from .attributes import attribute_accuracy as attribute_accuracy, train_attributes as train_attributes
from .heads import MarginHead as MarginHead
from .jobs import Recipe as Recipe, run_attributes as run_attributes, run_recognition as run_recognition
from .loop import TrainResult as TrainResult, fit as fit
from .recognition import (
    evaluate as evaluate,
    train_recognition as train_recognition,
    train_transform as train_transform,
)
