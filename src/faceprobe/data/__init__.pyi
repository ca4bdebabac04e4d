"""Names of :mod:`faceprobe.data`, for type checkers; ``__init__.py`` imports each on first use."""

from .celeba import CelebA as CelebA, load_celeba as load_celeba
from .dataset import BadImage as BadImage, FaceDataset as FaceDataset
from .images import FaceImages as FaceImages, eval_transform as eval_transform, load_image as load_image
from .lfw import (
    LFWPair as LFWPair,
    Verification as Verification,
    lfw_verification_accuracy as lfw_verification_accuracy,
    load_lfw_pairs as load_lfw_pairs,
)
from .registry import load_dataset as load_dataset, parse_data_spec as parse_data_spec
from .sampling import (
    Draw as Draw,
    Protocol as Protocol,
    balanced_draws as balanced_draws,
    sample_protocol as sample_protocol,
    union_ids as union_ids,
)
from .synth import SYNTH_ATTRIBUTES as SYNTH_ATTRIBUTES, generate as generate, render_face as render_face
