"""Datasets: readers for every published layout, synthetic faces, images as tensors, the sampling protocol."""

from faceprobe.data.celeba import CelebA, load_celeba
from faceprobe.data.dataset import BadImage, FaceDataset
from faceprobe.data.images import FaceImages, eval_transform, load_image
from faceprobe.data.lfw import LFWPair, Verification, lfw_verification_accuracy, load_lfw_pairs
from faceprobe.data.registry import load_dataset, parse_data_spec
from faceprobe.data.sampling import Draw, Protocol, balanced_draws, sample_protocol, union_ids
from faceprobe.data.synth import SYNTH_ATTRIBUTES, generate, render_face

__all__ = [
    "SYNTH_ATTRIBUTES",
    "BadImage",
    "CelebA",
    "Draw",
    "FaceDataset",
    "FaceImages",
    "LFWPair",
    "Protocol",
    "Verification",
    "balanced_draws",
    "eval_transform",
    "generate",
    "lfw_verification_accuracy",
    "load_celeba",
    "load_dataset",
    "load_image",
    "load_lfw_pairs",
    "parse_data_spec",
    "render_face",
    "sample_protocol",
    "union_ids",
]
