"""The synthetic face generator: determinism, CelebA layout, label rates, and labels that match the pixels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprobe.data import SYNTH_ATTRIBUTES, generate, load_celeba, render_face
from faceprobe.data.synth import attribute_labels, identity_traits, image_params
from faceprobe.errors import DataError

SEED = 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("synth"), identities=12, images_per_identity=8, seed=SEED, workers=2
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_is_identical_for_any_number_of_workers(tmp_path: Path, dataset: Path) -> None:
    serial = generate(tmp_path / "serial", identities=12, images_per_identity=8, seed=SEED, workers=1)
    assert _files(serial) == _files(dataset)
    other = generate(tmp_path / "other", identities=3, images_per_identity=2, seed=SEED + 1, workers=1)
    assert _files(other)["img_align_celeba/000001.jpg"] != _files(dataset)["img_align_celeba/000001.jpg"]


def test_layout_reads_back_with_the_celeba_loader(dataset: Path) -> None:
    data = load_celeba(dataset)
    assert data.attribute_names == list(SYNTH_ATTRIBUTES)
    assert data.attributes.index[0] == "000001.jpg" and len(data.attributes) == 96
    assert sorted(data.identities.unique()) == list(range(1, 13))
    assert (data.identities.value_counts() == 8).all()
    assert set(data.partitions) == {0, 1, 2}
    with Image.open(data.image_path("000096.jpg")) as image:
        assert image.size == (112, 112) and image.mode == "RGB"
    first_line = (dataset / "list_attr_celeba.txt").read_text().splitlines()[0]
    assert first_line == "96"
    assert "seed: 7" in (dataset / "README.md").read_text()


def test_partitions_are_identity_disjoint(dataset: Path) -> None:
    data = load_celeba(dataset)
    splits_per_identity = data.partitions.groupby(data.identities).nunique()
    assert (splits_per_identity == 1).all()


def test_files_hold_what_the_pure_functions_draw(dataset: Path) -> None:
    """Each written row is the labels of the drawn image, and each JPEG is that image."""
    data = load_celeba(dataset)
    for number in (1, 30, 96):
        identity, index = divmod(number - 1, 8)
        traits = identity_traits(SEED, identity)
        params = image_params(SEED, identity, index, traits)
        name = f"{number:06d}.jpg"
        labels = attribute_labels(traits, params)
        assert data.attributes.loc[name].to_dict() == {a: int(labels[a]) for a in SYNTH_ATTRIBUTES}
        with Image.open(data.image_path(name)) as image:
            written = np.asarray(image, dtype=float)
        drawn = np.asarray(render_face(traits, params), dtype=float)
        assert np.abs(written - drawn).mean() < 4  # JPEG error only


def test_positive_rates_allow_balanced_draws() -> None:
    rows = []
    for identity in range(100):
        traits = identity_traits(0, identity)
        for index in range(30):
            labels = attribute_labels(traits, image_params(0, identity, index, traits))
            rows.append([labels[a] for a in SYNTH_ATTRIBUTES])
    table = np.array(rows, dtype=float)
    rates = dict(zip(SYNTH_ATTRIBUTES, table.mean(axis=0), strict=True))
    assert all(0.08 <= rate <= 0.92 for rate in rates.values()), rates
    assert 0.45 <= rates["Control_Random"] <= 0.55
    control = table[:, -1]
    correlations = [abs(np.corrcoef(control, column)[0, 1]) for column in table[:, :-1].T]
    assert max(correlations) < 0.08


def _pixels(traits, params) -> np.ndarray:
    return np.asarray(render_face(traits, params), dtype=float)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114])


def _pairs(**changes):
    """Images without and with one per-image feature, everything else (pose, light, noise) equal."""
    for identity in range(6):
        traits = identity_traits(SEED, identity)
        params = image_params(SEED, identity, 0, traits)
        off = replace(params, **{key: False for key in changes})
        yield _pixels(traits, off), _pixels(traits, replace(params, **changes))


def test_control_random_changes_no_pixel() -> None:
    for without, with_ in _pairs(control_random=True):
        assert np.array_equal(without, with_)


def test_eyeglasses_darken_the_eye_band_and_nothing_else() -> None:
    for without, with_ in _pairs(eyeglasses=True):
        changed = np.abs(with_ - without).sum(axis=2) > 0
        rows = np.flatnonzero(changed.any(axis=1))
        assert 0.28 * 112 < rows.min() and rows.max() < 0.56 * 112  # the eye band, whatever the pose
        assert _luminance(with_[changed]).mean() < _luminance(without[changed]).mean() - 10


def test_hats_cover_the_top_of_the_head_only() -> None:
    for without, with_ in _pairs(hat=True):
        change = np.abs(with_ - without).sum(axis=2)
        assert change[: int(0.25 * 112)].mean() > 20
        assert change[int(0.5 * 112) :].sum() == 0


def test_smiles_show_teeth_and_open_mouths_a_dark_gap() -> None:
    for without, with_ in _pairs(smiling=True, mouth_open=False):
        changed = np.abs(with_ - without).sum(axis=2) > 0
        rows = np.flatnonzero(changed.any(axis=1))
        assert 0.6 * 112 < rows.min() and rows.max() < 0.85 * 112
        teeth = (with_[changed].min(axis=1) > 150) & (np.ptp(with_[changed], axis=1) < 60)
        assert teeth.sum() >= 10  # near-white pixels; skin and lips are more saturated
    for closed, open_ in _pairs(mouth_open=True, smiling=False):
        changed = np.abs(open_ - closed).sum(axis=2) > 0
        assert _luminance(open_[changed]).min() < _luminance(closed[changed]).min() - 20


def test_blurry_images_lose_fine_detail() -> None:
    for sharp, blurred in _pairs(blurry=True):
        # The steepest steps are edges, not sensor noise (which is added after the blur).
        edges = [np.percentile(np.abs(np.diff(_luminance(image), axis=1)), 99) for image in (sharp, blurred)]
        assert edges[1] < 0.6 * edges[0]


def test_identity_traits_are_visible() -> None:
    """Turning an identity bald removes hair from the crown; a big nose changes the nose region."""
    traits = next(t for t in (identity_traits(SEED, i) for i in range(50)) if not t.bald and not t.long_hair)
    params = replace(image_params(SEED, 0, 0, traits), hat=False, angle=0.0, shift=(0.0, 0.0), scale=1.0)
    hair = _pixels(traits, params)
    bald = _pixels(replace(traits, bald=True, wavy_hair=False), params)
    crown = (slice(int(0.12 * 112), int(0.2 * 112)), slice(45, 67))
    assert np.abs(hair[crown] - bald[crown]).mean() > 10
    small = _pixels(replace(traits, big_nose=False, nose_scale=0.8), params)
    big = _pixels(replace(traits, big_nose=True, nose_scale=1.3), params)
    changed = np.flatnonzero((np.abs(big - small).sum(axis=2) > 0).any(axis=1))
    assert 0.4 * 112 < changed.min() and changed.max() < 0.68 * 112


def test_progress_counts_every_image(tmp_path: Path) -> None:
    seen: list[int] = []
    generate(tmp_path, identities=3, images_per_identity=2, workers=1, progress=seen.append)
    assert seen == [2, 2, 2]


def test_refuses_to_mix_with_existing_images(dataset: Path) -> None:
    with pytest.raises(DataError, match="already holds images"):
        generate(dataset, identities=1, images_per_identity=1)


@pytest.mark.parametrize(
    "argument", [{"identities": 0}, {"images_per_identity": 0}, {"seed": -1}, {"size": 8}]
)
def test_rejects_bad_arguments(tmp_path: Path, argument: dict[str, int]) -> None:
    with pytest.raises(DataError, match=next(iter(argument))):
        generate(tmp_path, **argument)
