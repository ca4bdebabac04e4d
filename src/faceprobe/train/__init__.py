"""Training the networks to probe: face recognition by the thesis recipe, and the attribute baseline.

:mod:`~faceprobe.train.loop` is the shared loop (seeded, resumable, AMP, DDP),
:mod:`~faceprobe.train.recognition` and :mod:`~faceprobe.train.attributes` the two tasks,
:mod:`~faceprobe.train.heads` the ArcFace/CosFace margins, and :mod:`~faceprobe.train.jobs` whole jobs from
a dataset spec to a checkpoint folder.
"""

from faceprobe.train.attributes import attribute_accuracy, train_attributes
from faceprobe.train.heads import MarginHead
from faceprobe.train.jobs import Recipe, run_attributes, run_recognition
from faceprobe.train.loop import TrainResult, fit
from faceprobe.train.recognition import evaluate, train_recognition, train_transform

__all__ = [
    "MarginHead",
    "Recipe",
    "TrainResult",
    "attribute_accuracy",
    "evaluate",
    "fit",
    "run_attributes",
    "run_recognition",
    "train_attributes",
    "train_recognition",
    "train_transform",
]
