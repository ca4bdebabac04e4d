"""Datasets: synthetic faces, the CelebA layout that holds them and real CelebA, and images as tensors."""

from faceprobe.data.celeba import CelebA, load_celeba
from faceprobe.data.images import FaceImages, eval_transform, load_image
from faceprobe.data.synth import SYNTH_ATTRIBUTES, generate, render_face

__all__ = [
    "SYNTH_ATTRIBUTES",
    "CelebA",
    "FaceImages",
    "eval_transform",
    "generate",
    "load_celeba",
    "load_image",
    "render_face",
]
