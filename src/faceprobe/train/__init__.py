"""Training face-recognition networks to probe."""

from faceprobe.train.recognition import TrainResult, evaluate, train_recognition, train_transform

__all__ = ["TrainResult", "evaluate", "train_recognition", "train_transform"]
