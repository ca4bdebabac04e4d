"""Procedural faces with known attributes, written in CelebA's published layout.

Real attribute labels are noisy and confounded with identity and with each other; a generator whose labels
are true by construction lets a probe's findings be checked against ground truth. Writing CelebA's layout
means one loader, and one pipeline, read synthetic and real data alike.

Beyond the thesis, for targets of other kinds (:mod:`faceprobe.targets`): ``targets.csv`` lists, per image,
continuous and multi-class values that are true by construction too, read as a ``folder:`` dataset
(``folder:DIR/targets.csv``): the head's in-plane angle, the lighting and the skin tone as drawn (each changes
what is rendered), the hair colour as one target of four classes, and ``Random_Value``, a continuous control
nothing drawn depends on. They are read off what the generator draws anyway, so the images and the binary
labels are the same as without them.

With ``yaw_and_age`` two more are drawn and rendered: ``Yaw``, the head's turn out of the image plane (drawn
in 2D: the inner features shift toward the turn, the face and ears foreshorten and the cheek turned away
darkens), and ``Age``, an age in years that marks the skin (forehead lines, folds) and greys the hair. It
is off by default so that faces drawn before it, and the thresholds measured on them, stay byte-identical;
a ``synthetic:`` dataset's study probes these columns where it names them.

Every identity and every image draws from its own random stream, seeded by ``(seed, identity[, image])``,
so the output is byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from faceprobe.errors import DataError

__all__ = [
    "SYNTH_ATTRIBUTES",
    "FaceTraits",
    "ImageParams",
    "attribute_labels",
    "generate",
    "identity_traits",
    "image_params",
    "render_face",
    "target_names",
    "target_values",
]

SYNTH_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
    "Control_Random",
)
"""Columns of the synthetic ``list_attr_celeba.txt``: CelebA's names, in CelebA's order, for every attribute
the generator draws, then ``Control_Random``, a coin flip per image that nothing in the image depends on."""

Color = tuple[int, int, int]

# Key points of the aligned crop, as fractions of the image side (CelebA's aligned faces put the eyes,
# nose tip and mouth near fixed points).
_CX = 0.5
_EYE_Y = 0.42
_NOSE_Y = 0.585
_MOUTH_Y = 0.72
_CHIN_Y = 0.83
_HAIR_SIDE_Y = 0.40  # short hair covers the head's sides down to here, just above the ears
# How far in front of the head's outline a yawed face's parts lie (fractions of the side): how far they shift.
_SKIN_DEPTH = 0.06
_FEATURE_DEPTH = 0.08
_NOSE_DEPTH = 0.12

_HAIR_COLORS: dict[str, Sequence[Color]] = {
    "black": [(28, 24, 24), (40, 32, 30)],
    "brown": [(92, 58, 36), (110, 72, 45)],
    "blond": [(214, 178, 108), (196, 160, 96)],
    "gray": [(172, 170, 166), (140, 138, 136)],
    "other": [(160, 64, 30), (122, 46, 36)],  # red and auburn: no CelebA hair colour applies
}
_IRIS_COLORS: Sequence[Color] = [(95, 60, 35), (60, 40, 25), (80, 120, 170), (85, 125, 80), (125, 135, 140)]
_LIPSTICK_COLORS: Sequence[Color] = [(185, 25, 45), (215, 70, 120), (140, 25, 60), (225, 95, 80)]
_EYESHADOW_COLORS: Sequence[Color] = [(120, 90, 160), (90, 120, 170), (150, 105, 85), (200, 130, 160)]
_FRAME_COLORS: Sequence[Color] = [(22, 22, 26), (30, 30, 60), (70, 40, 25), (120, 25, 30)]
_JEWEL_COLORS: Sequence[Color] = [(226, 186, 70), (205, 205, 215), (240, 236, 225)]


@dataclass(frozen=True)
class FaceTraits:
    """What one identity keeps in every image: its primary attributes, the continuous features that tell it
    apart from other identities, and how often it wears each accessory. Lengths are fractions of the image."""

    male: bool
    young: bool
    chubby: bool
    oval_face: bool
    face_width: float  # half-width of the face at the cheekbones
    face_height: float  # half-height, from the face centre to the chin
    jaw_width: float  # width of the lower face relative to the upper
    jaw_power: float  # superellipse exponent of the jaw: 2 is round, higher is squarer
    skin: Color
    pale_skin: bool
    skin_tone: (
        float  # 0 light to 1 dark, as mixed for the skin colour; NaN for pale skin (a colour of its own)
    )
    hair_color_name: str  # one of black, brown, blond, gray, other
    hair: Color
    hair_volume: float
    hairline: float  # height of the hairline above the eyes
    bald: bool
    bangs: bool
    wavy_hair: bool
    long_hair: bool
    receding_hairline: bool
    mustache: bool
    goatee: bool
    sideburns: bool
    stubble: bool
    eye_spacing: float  # half the distance between the eye centres
    eye_size: float
    iris: Color
    brow_raise: float
    bushy_eyebrows: bool
    brow_thickness: float
    arched_eyebrows: bool
    big_nose: bool
    nose_scale: float
    pointy_nose: bool
    big_lips: bool
    lip_scale: float
    mouth_width: float  # half-width of the closed mouth
    lips: Color
    lipstick: Color
    eyeshadow: Color
    ear_size: float
    mark: tuple[float, float] | None  # a beauty mark's position, if any
    bags_under_eyes: bool
    double_chin: bool
    frame: Color  # eyeglasses frame colour
    frame_power: float  # 2 gives round lenses, higher squarer ones
    frame_width: float
    p_eyeglasses: float
    p_hat: float
    p_earrings: float
    p_necklace: float
    p_necktie: float
    p_lipstick: float
    p_makeup: float
    p_rosy_cheeks: float
    age: float | None = None  # years, with ``yaw_and_age``: its marks replace the young/old creases


@dataclass(frozen=True)
class ImageParams:
    """What changes from one image of an identity to the next: expression, accessories, pose, lighting,
    background and image quality."""

    smiling: bool
    mouth_open: bool
    narrow_eyes: bool
    eyeglasses: bool
    hat: bool
    hat_brimmed: bool
    hat_color: Color
    earrings: bool
    earring_hoops: bool
    jewel: Color
    necklace: bool
    necktie: bool
    tie: Color
    clothes: Color
    lipstick: bool
    heavy_makeup: bool
    rosy_cheeks: bool
    blurry: bool
    blur_radius: float  # in pixels of a 112-pixel image
    control_random: bool
    angle: float  # degrees
    scale: float
    shift: tuple[float, float]
    brightness: float
    light_angle: float  # radians
    light_strength: float
    tint: tuple[float, float, float]
    background: tuple[Color, Color]
    background_angle: float
    background_noise: float
    noise_sigma: float
    noise_seed: int
    jpeg_quality: int
    yaw: float = 0.0  # degrees out of the image plane, positive turning the features to the image's right


def _jitter(rng: np.random.Generator, color: Color, spread: float) -> Color:
    r, g, b = np.clip(np.asarray(color) + rng.uniform(-spread, spread, 3), 0, 255).round().astype(int)
    return (int(r), int(g), int(b))


def _pick(rng: np.random.Generator, colors: Sequence[Color]) -> Color:
    return colors[int(rng.integers(len(colors)))]


def _mix(a: Color, b: Color, t: float) -> Color:
    r, g, bl = (round(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))
    return (r, g, bl)


def _shade(color: Color, factor: float) -> Color:
    r, g, b = (min(255, round(c * factor)) for c in color)
    return (r, g, b)


def _bimodal(
    rng: np.random.Generator, on: bool, low: tuple[float, float], high: tuple[float, float]
) -> float:
    """A trait behind a binary attribute lives in one of two separated ranges, so the label is visible."""
    return float(rng.uniform(*(high if on else low)))


def identity_traits(seed: int, identity: int, aged: bool = False) -> FaceTraits:
    """Draw the traits of ``identity`` from its own stream, so they do not depend on how many identities or
    which worker draws them; ``aged`` adds an age (its own stream, so every other trait is unchanged)."""
    rng = np.random.default_rng([seed, 1, identity])
    u = rng.random
    male = u() < 0.45
    young = u() < 0.75
    chubby = u() < 0.2
    oval_face = not chubby and u() < 0.3
    if chubby:
        face_width, face_height = rng.uniform(0.285, 0.305), rng.uniform(0.325, 0.345)
        jaw_width, jaw_power = rng.uniform(1.02, 1.08), rng.uniform(2.2, 2.8)
    elif oval_face:
        face_width, face_height = rng.uniform(0.225, 0.24), rng.uniform(0.36, 0.38)
        jaw_width, jaw_power = rng.uniform(0.86, 0.92), rng.uniform(1.8, 2.1)
    else:
        face_width, face_height = rng.uniform(0.245, 0.268), rng.uniform(0.325, 0.35)
        jaw_width, jaw_power = rng.uniform(0.9, 1.0), rng.uniform(1.9, 2.8)

    pale_skin = u() < 0.18
    skin_tone = float("nan")
    if pale_skin:
        skin = _jitter(rng, (246, 228, 216), 6)
    else:
        skin_tone = float(u())
        skin = _jitter(rng, _mix((226, 182, 150), (96, 62, 44), skin_tone), 8)

    hair_probs = [0.3, 0.3, 0.25, 0.04, 0.11] if young else [0.12, 0.12, 0.08, 0.6, 0.08]
    hair_color_name = str(rng.choice(list(_HAIR_COLORS), p=hair_probs))
    hair = _shade(_jitter(rng, _pick(rng, _HAIR_COLORS[hair_color_name]), 14), rng.uniform(0.88, 1.12))
    bald = male and u() < (0.25 if young else 0.55)
    bangs = not bald and u() < (0.15 if male else 0.3)
    receding = not bald and not bangs and u() < ((0.45 if young else 0.7) if male else 0.06)

    big_nose = u() < 0.3
    big_lips = u() < (0.2 if male else 0.35)
    bushy = u() < (0.35 if male else 0.12)
    lip_scale = _bimodal(rng, big_lips, (0.85, 1.1), (1.55, 1.85))
    lips = _shade(_mix(skin, (200, 90, 95), 0.45), 0.9)
    eyeglasses_wearer = u() < (0.2 if young else 0.45)
    age = None
    if aged:  # Young stays what it was: young faces are 20-40, the others 45-80
        age = float(np.random.default_rng([seed, 8, identity]).uniform(*((20, 40) if young else (45, 80))))
        if hair_color_name != "gray":  # greying: up to a third of the way to gray, from 40 on
            hair = _mix(hair, _HAIR_COLORS["gray"][0], 0.35 * float(np.clip((age - 40) / 40, 0, 1)))
    return FaceTraits(
        male=male,
        young=young,
        chubby=chubby,
        oval_face=oval_face,
        face_width=float(face_width),
        face_height=float(face_height),
        jaw_width=float(jaw_width),
        jaw_power=float(jaw_power),
        skin=skin,
        skin_tone=skin_tone,
        pale_skin=pale_skin,
        hair_color_name=hair_color_name,
        hair=hair,
        hair_volume=float(rng.uniform(0.015, 0.05)),
        hairline=float(rng.uniform(0.175, 0.205)),
        bald=bald,
        bangs=bangs,
        wavy_hair=not bald and u() < 0.4,
        long_hair=not bald and u() < (0.12 if male else 0.8),
        receding_hairline=receding,
        mustache=male and u() < 0.4,
        goatee=male and u() < 0.4,
        sideburns=male and u() < 0.4,
        stubble=male and u() < 0.32,
        eye_spacing=float(rng.uniform(0.125, 0.155)),
        eye_size=float(rng.uniform(0.85, 1.15)),
        iris=_jitter(rng, _pick(rng, _IRIS_COLORS), 15),
        brow_raise=float(rng.uniform(-0.01, 0.012)),
        bushy_eyebrows=bushy,
        brow_thickness=_bimodal(rng, bushy, (0.009, 0.013), (0.024, 0.03)),
        arched_eyebrows=u() < (0.12 if male else 0.45),
        big_nose=big_nose,
        nose_scale=_bimodal(rng, big_nose, (0.78, 0.94), (1.18, 1.35)),
        pointy_nose=u() < 0.3,
        big_lips=big_lips,
        lip_scale=lip_scale,
        mouth_width=float(rng.uniform(0.085, 0.105)),
        lips=lips,
        lipstick=_jitter(rng, _pick(rng, _LIPSTICK_COLORS), 10),
        eyeshadow=_jitter(rng, _pick(rng, _EYESHADOW_COLORS), 10),
        ear_size=float(rng.uniform(0.85, 1.15)),
        mark=(float(_CX + rng.choice([-1, 1]) * rng.uniform(0.1, 0.18)), float(rng.uniform(0.5, 0.66)))
        if u() < 0.35
        else None,
        bags_under_eyes=u() < (0.15 if young else 0.6),
        double_chin=u() < (0.6 if chubby else 0.03 if young else 0.25),
        frame=_pick(rng, _FRAME_COLORS),
        frame_power=float(rng.uniform(2.0, 5.0)),
        frame_width=float(rng.uniform(0.014, 0.02)),
        p_eyeglasses=0.8 if eyeglasses_wearer else 0.03,
        p_hat=0.55 if u() < 0.3 else 0.04,
        p_earrings=(0.7 if u() < 0.06 else 0.0) if male else (0.8 if u() < 0.6 else 0.05),
        p_necklace=(0.6 if u() < 0.03 else 0.0) if male else (0.75 if u() < 0.4 else 0.02),
        p_necktie=(0.7 if u() < 0.45 else 0.02) if male else (0.6 if u() < 0.02 else 0.0),
        p_lipstick=(0.5 if u() < 0.02 else 0.0) if male else (0.9 if u() < 0.75 else 0.1),
        p_makeup=0.0 if male else (0.75 if u() < 0.45 else 0.05),
        p_rosy_cheeks=(0.6 if u() < 0.1 else 0.02) if male else (0.75 if u() < 0.35 else 0.03),
        age=age,
    )


def image_params(
    seed: int, identity: int, index: int, traits: FaceTraits, turned: bool = False
) -> ImageParams:
    """Draw what varies in image ``index`` of ``identity`` from that image's own stream; ``turned`` adds a
    yaw (a stream of its own, so every other parameter is unchanged)."""
    rng = np.random.default_rng([seed, 2, identity, index])
    u = rng.random
    smiling = u() < 0.48
    heavy_makeup = u() < traits.p_makeup
    gray = (128, 128, 128)
    background = (_mix(_jitter(rng, gray, 110), gray, 0.4), _mix(_jitter(rng, gray, 110), gray, 0.4))
    return ImageParams(
        smiling=smiling,
        mouth_open=u() < (0.6 if smiling else 0.3),
        narrow_eyes=u() < (0.2 if smiling else 0.12),
        eyeglasses=u() < traits.p_eyeglasses,
        hat=u() < traits.p_hat,
        hat_brimmed=u() < 0.5,
        hat_color=_jitter(rng, (120, 120, 120), 100),
        earrings=u() < traits.p_earrings,
        earring_hoops=u() < 0.5,
        jewel=_jitter(rng, _pick(rng, _JEWEL_COLORS), 10),
        necklace=u() < traits.p_necklace,
        necktie=u() < traits.p_necktie,
        tie=_jitter(rng, (128, 128, 128), 120),
        clothes=_jitter(rng, (125, 125, 125), 105),
        lipstick=heavy_makeup or u() < traits.p_lipstick,
        heavy_makeup=heavy_makeup,
        rosy_cheeks=u() < traits.p_rosy_cheeks,
        blurry=u() < 0.12,
        blur_radius=float(rng.uniform(1.3, 2.2)),
        control_random=bool(np.random.default_rng([seed, 3, identity, index]).random() < 0.5),
        angle=float(rng.uniform(-8, 8)),
        scale=float(rng.uniform(0.95, 1.05)),
        shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        brightness=float(rng.uniform(0.8, 1.15)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0, 0.35)),
        tint=(float(rng.uniform(0.94, 1.06)), float(rng.uniform(0.94, 1.06)), float(rng.uniform(0.94, 1.06))),
        background=background,
        background_angle=float(rng.uniform(0, 2 * np.pi)),
        background_noise=float(rng.uniform(0, 40)),
        noise_sigma=float(rng.uniform(1, 4)),
        noise_seed=int(rng.integers(2**32)),
        jpeg_quality=int(rng.integers(82, 97)),
        yaw=float(np.random.default_rng([seed, 7, identity, index]).uniform(-35, 35)) if turned else 0.0,
    )


def attribute_labels(traits: FaceTraits, params: ImageParams) -> dict[str, bool]:
    """The label of every attribute in :data:`SYNTH_ATTRIBUTES`, read off what :func:`render_face` draws."""
    hair = traits.hair_color_name
    return {
        "5_o_Clock_Shadow": traits.stubble,
        "Arched_Eyebrows": traits.arched_eyebrows,
        "Bags_Under_Eyes": traits.bags_under_eyes,
        "Bald": traits.bald,
        "Bangs": traits.bangs,
        "Big_Lips": traits.big_lips,
        "Big_Nose": traits.big_nose,
        "Black_Hair": hair == "black",
        "Blond_Hair": hair == "blond",
        "Blurry": params.blurry,
        "Brown_Hair": hair == "brown",
        "Bushy_Eyebrows": traits.bushy_eyebrows,
        "Chubby": traits.chubby,
        "Double_Chin": traits.double_chin,
        "Eyeglasses": params.eyeglasses,
        "Goatee": traits.goatee,
        "Gray_Hair": hair == "gray",
        "Heavy_Makeup": params.heavy_makeup,
        "Male": traits.male,
        "Mouth_Slightly_Open": params.mouth_open,
        "Mustache": traits.mustache,
        "Narrow_Eyes": params.narrow_eyes,
        "No_Beard": not (traits.mustache or traits.goatee or traits.sideburns),
        "Oval_Face": traits.oval_face,
        "Pale_Skin": traits.pale_skin,
        "Pointy_Nose": traits.pointy_nose,
        "Receding_Hairline": traits.receding_hairline,
        "Rosy_Cheeks": params.rosy_cheeks,
        "Sideburns": traits.sideburns,
        "Smiling": params.smiling,
        "Straight_Hair": not traits.bald and not traits.wavy_hair,
        "Wavy_Hair": traits.wavy_hair,
        "Wearing_Earrings": params.earrings,
        "Wearing_Hat": params.hat,
        "Wearing_Lipstick": params.lipstick,
        "Wearing_Necklace": params.necklace,
        "Wearing_Necktie": params.necktie,
        "Young": traits.young,
        "Control_Random": params.control_random,
    }


# --- drawing ---------------------------------------------------------------------------------------------

_CIRCLE_T = np.linspace(0, 2 * np.pi, 40, endpoint=False)


def _superellipse(
    cx: float, cy: float, rx: float, ry: float, power: float = 2.0, t: np.ndarray = _CIRCLE_T
) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    e = 2 / power
    return np.column_stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e])


def _polyline(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.column_stack([x, y])


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """The polygon between two curves over the same x, e.g. a lip or an eyebrow."""
    return np.concatenate([_polyline(x, top), _polyline(x, bottom)[::-1]])


class _Canvas:
    """ImageDraw in face coordinates (fractions of the side, origin top left), seen through the image's pose:
    transforming the shapes rather than the rendered image keeps edges sharp and needs no compositing.

    A yaw turns the head in 2D: shapes drawn :meth:`at_depth` (the inner features, in front of the head's
    outline) shift toward the turn and narrow, the rest foreshortens on the side the face turns to (where
    :func:`_draw_skin` shades the cheek).
    """

    def __init__(self, image: Image.Image, params: ImageParams) -> None:
        self.draw = ImageDraw.Draw(image)
        self.turn = float(np.sin(np.deg2rad(params.yaw)))
        self._depth = 0.0
        side = image.width
        a = np.deg2rad(params.angle)
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = np.array([0.5, 0.5])
        self._matrix = rotation.T * params.scale * side
        self._offset = (centre + params.shift) * side - centre @ self._matrix
        self._unit = params.scale * side

    @contextmanager
    def at_depth(self, depth: float) -> Iterator[None]:
        """Draw the shapes inside at ``depth`` (a fraction of the side) in front of the face's outline."""
        self._depth = depth
        try:
            yield
        finally:
            self._depth = 0.0

    def _turned(self, points: np.ndarray) -> np.ndarray:
        if not self.turn:  # no yaw: the points untouched, so unturned faces keep their exact pixels
            return points
        dx = points[:, 0] - _CX
        if self._depth:  # narrowed half as much as a rigid turn: the eyes' spacing tells identities apart
            x = _CX + dx * (1 + np.sqrt(1 - self.turn**2)) / 2 + self._depth * self.turn
        else:
            x = _CX + dx * (1 - 0.2 * np.sign(dx) * self.turn)
        return np.column_stack([x, points[:, 1]])

    def _xy(self, points: np.ndarray) -> list[float]:
        return (self._turned(points) @ self._matrix + self._offset).ravel().tolist()

    def _width(self, width: float) -> int:
        return max(1, round(width * self._unit))

    def polygon(
        self, points: np.ndarray, fill: Color | None, outline: Color | None = None, width: float = 0
    ) -> None:
        self.draw.polygon(self._xy(points), fill=fill, outline=outline, width=self._width(width))

    def line(self, points: np.ndarray, fill: Color, width: float) -> None:
        self.draw.line(self._xy(points), fill=fill, width=self._width(width), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Color) -> None:
        self.polygon(_superellipse(cx, cy, rx, ry), fill)


@dataclass(frozen=True)
class _Head:
    """Derived geometry shared by several parts of the drawing."""

    cy: float
    rx: float
    ry: float
    outline: np.ndarray

    @classmethod
    def of(cls, traits: FaceTraits) -> _Head:
        rx, ry = traits.face_width, traits.face_height
        cy = _CHIN_Y - ry
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        upper = _superellipse(_CX, cy, rx, ry, 2.0, t)
        lower = _superellipse(_CX, cy, rx * traits.jaw_width, ry, traits.jaw_power, t)
        return cls(cy, rx, ry, np.where((np.sin(t) > 0)[:, None], lower, upper))

    def half_width(self, y: np.ndarray | float) -> np.ndarray:
        """Half-width of the upper (elliptic) head at height ``y``."""
        return self.rx * np.sqrt(np.clip(1 - ((np.asarray(y) - self.cy) / self.ry) ** 2, 0, 1))


def _hairline(traits: FaceTraits, u: np.ndarray) -> np.ndarray:
    """Height of the hair's lower edge across the forehead, ``u`` running from -1 (left temple) to 1."""
    top = _EYE_Y - traits.hairline
    if traits.bangs:
        zigzag = 0.012 * (np.arange(u.size) % 2)
        return 0.33 + 0.01 * u**2 - zigzag
    y = top + 0.045 * u**4
    if traits.receding_hairline:
        y = y - 0.06 * np.exp(-(((np.abs(u) - 0.55) / 0.2) ** 2))
    return y


def _hair_outline(traits: FaceTraits, head: _Head, t: np.ndarray) -> np.ndarray:
    """Outer edge of the hair at angles ``t``; wavy hair gets a scalloped edge."""
    volume = traits.hair_volume + (0.012 * np.sin(14 * t) if traits.wavy_hair else 0.0)
    rx, ry = head.rx + volume, head.ry + 1.4 * volume
    return np.column_stack([_CX + rx * np.cos(t), head.cy + ry * np.sin(t)])


def _draw_back_hair(c: _Canvas, traits: FaceTraits, head: _Head) -> None:
    """Hair behind the face: a bald head's fringe above the ears, or long hair falling to the shoulders."""
    if traits.bald:
        y = np.linspace(_HAIR_SIDE_Y - 0.03, 0.53, 8)
        width = head.half_width(y)
        for side in (-1, 1):
            c.polygon(_side_strip(side, width - 0.02, width + 0.022, y), traits.hair)
        return
    top = _hair_outline(traits, head, np.linspace(np.pi, 2 * np.pi, 30))
    y = np.linspace(head.cy, 1.05, 16)
    flare = head.rx + traits.hair_volume + 0.03 + 0.04 * (y - head.cy)
    wave = 0.015 * np.sin(y / 0.025) if traits.wavy_hair else 0.0
    right = _polyline(_CX + flare + wave, y)
    left = _polyline(_CX - flare - wave, y)[::-1]
    c.polygon(np.concatenate([top, right, left]), traits.hair)


def _draw_body(c: _Canvas, traits: FaceTraits, params: ImageParams, head: _Head) -> None:
    """Neck, shoulders and whatever is worn there."""
    neck = 0.4 * head.rx
    c.polygon(
        np.array(
            [[_CX - neck, head.cy], [_CX + neck, head.cy], [_CX + neck * 1.1, 1.05], [_CX - neck * 1.1, 1.05]]
        ),
        _shade(traits.skin, 0.86),
    )
    if traits.double_chin:
        c.ellipse(_CX, _CHIN_Y + 0.004, 0.13 * traits.jaw_width, 0.04, _shade(traits.skin, 0.97))
        u = np.linspace(-1, 1, 9)
        c.line(
            _polyline(_CX + 0.1 * u, _CHIN_Y + 0.03 + 0.012 * (1 - u**2)), _shade(traits.skin, 0.75), 0.006
        )
    neckline = 0.905 if params.necktie else 0.965
    c.polygon(
        np.array(
            [
                [_CX - neck, 0.885],
                [_CX - neck - 0.12, 0.93],
                [0.02, 0.97],
                [-0.1, 1.1],
                [1.1, 1.1],
                [0.98, 0.97],
                [_CX + neck + 0.12, 0.93],
                [_CX + neck, 0.885],
                [_CX, neckline],
            ]
        ),
        params.clothes,
    )
    if params.necktie:
        shirt = (236, 236, 240)
        for side in (-1, 1):
            c.polygon(np.array([[_CX + side * neck, 0.875], [_CX, 0.905], [_CX + side * 0.04, 0.945]]), shirt)
        c.polygon(
            np.array([[_CX - 0.016, 0.9], [_CX + 0.016, 0.9], [_CX + 0.011, 0.927], [_CX - 0.011, 0.927]]),
            params.tie,
        )
        c.polygon(
            np.array([[_CX - 0.011, 0.925], [_CX + 0.011, 0.925], [_CX + 0.026, 1.05], [_CX - 0.026, 1.05]]),
            params.tie,
        )
    if params.necklace:
        u = np.linspace(-1, 1, 11)
        for x, y in zip(_CX + 0.085 * u, 0.872 + 0.05 * (1 - u**2), strict=True):
            c.ellipse(x, y, 0.009, 0.009, params.jewel)
        c.ellipse(_CX, 0.935, 0.016, 0.018, _shade(params.jewel, 0.85))


def _ears(traits: FaceTraits, head: _Head) -> list[tuple[float, float, float, float]]:
    """Centre and radii of both ears."""
    x = float(head.half_width(0.495)) * 0.98
    s = traits.ear_size
    return [(_CX + side * x, 0.495, 0.032 * s, 0.06 * s) for side in (-1, 1)]


def _draw_ears(c: _Canvas, traits: FaceTraits, head: _Head) -> None:
    for side, (x, y, rx, ry) in zip((-1, 1), _ears(traits, head), strict=True):
        rx = rx * (1 - 0.9 * side * c.turn)  # the ear on the side the face turns to goes behind the head
        c.ellipse(x, y, rx, ry, _shade(traits.skin, 0.95))
        c.ellipse(x, y, rx * 0.55, ry * 0.65, _shade(traits.skin, 0.8))


def _draw_skin(c: _Canvas, traits: FaceTraits, params: ImageParams, head: _Head) -> None:
    """The face and what marks its skin: stubble, age, blush."""
    skin = traits.skin
    c.polygon(head.outline, skin)
    # The cheek on the turned side faces away from the camera and darkens, the other faces it and lightens;
    # the face's mean tone, part of who it is, barely changes, and the eyes keep their light.
    for side, light in ((np.sign(c.turn), -0.4), (-np.sign(c.turn), 0.3)) if c.turn else ():
        below_eyes = head.outline[:, 1] > _EYE_Y + 0.05
        outer = head.outline[(np.sign(head.outline[:, 0] - _CX) == side) & below_eyes]
        outer = outer[np.argsort(outer[:, 1])]
        inner = np.column_stack([_CX + (outer[:, 0] - _CX) * 0.5, outer[:, 1]])
        c.polygon(np.concatenate([outer, inner[::-1]]), _shade(skin, 1 + light * abs(c.turn)))
    if traits.stubble:
        jaw = head.outline[head.outline[:, 1] > 0.56]
        below_nose = _polyline(
            _CX + np.array([-0.1, -0.05, 0.0, 0.05, 0.1]), np.array([0.66, 0.615, 0.622, 0.615, 0.66])
        )
        c.polygon(np.concatenate([jaw, below_nose]), _mix(skin, (60, 50, 45), 0.25))
    with c.at_depth(_SKIN_DEPTH):
        _draw_skin_marks(c, traits, params)


def _draw_skin_marks(c: _Canvas, traits: FaceTraits, params: ImageParams) -> None:
    skin = traits.skin
    if params.rosy_cheeks:
        for side in (-1, 1):
            c.ellipse(_CX + side * 0.15, 0.61, 0.055, 0.035, _mix(skin, (235, 80, 95), 0.4))
    if traits.age is not None:
        _draw_age(c, traits, traits.age)
    elif not traits.young:
        lines = (_EYE_Y - 0.15, _EYE_Y - 0.12)
        _draw_creases(c, traits, _shade(skin, 0.72), lines, True, True, (0.005, 0.004))
    if traits.bags_under_eyes:
        u = np.linspace(-1, 1, 9)
        for side in (-1, 1):
            ex = _CX + side * traits.eye_spacing
            c.line(
                _polyline(ex + 0.045 * u, _EYE_Y + 0.032 + 0.012 * (1 - u**2)),
                _mix(skin, (90, 55, 80), 0.4),
                0.008,
            )
    if traits.mark is not None:
        c.ellipse(*traits.mark, 0.006, 0.006, (70, 45, 35))


def _draw_age(c: _Canvas, traits: FaceTraits, age: float) -> None:
    """Marks that grow with ``age``: forehead lines from about 33 (one more every 15 years, up to three),
    folds beside the nose from 35, crow's feet from 50, all darker and wider the older the face."""
    t = float(np.clip((age - 20) / 60, 0, 1))
    lines = [_EYE_Y - 0.16 + 0.025 * k for k in range(int(np.clip(round((age - 25) / 15), 0, 3)))]
    width = 0.003 + 0.003 * t
    _draw_creases(
        c, traits, _shade(traits.skin, 0.85 - 0.25 * t), lines, age >= 35, age >= 50, (width, width)
    )


def _draw_creases(
    c: _Canvas,
    traits: FaceTraits,
    color: Color,
    lines: Sequence[float],
    folds: bool,
    crows_feet: bool,
    widths: tuple[float, float],
) -> None:
    """Forehead lines at heights ``lines``, folds from the nose to the mouth's corners, crow's feet."""
    u = np.linspace(-1, 1, 9)
    for y in lines:
        c.line(_polyline(_CX + 0.09 * u, y - 0.008 * (1 - u**2)), color, widths[0])
    for side in (-1, 1):
        if folds:
            fold = np.linspace(0, 1, 6)
            c.line(
                _polyline(_CX + side * (0.05 * traits.nose_scale + 0.06 * fold), 0.6 + 0.125 * fold),
                color,
                widths[0],
            )
        if crows_feet:
            ex = _CX + side * (traits.eye_spacing + 0.06)
            for dy in (-0.012, 0.0, 0.012):
                c.line(
                    np.array([[ex, _EYE_Y + dy * 0.5], [ex + side * 0.025, _EYE_Y + dy * 1.6]]),
                    color,
                    widths[1],
                )


def _draw_eyes(c: _Canvas, traits: FaceTraits, params: ImageParams) -> None:
    size = traits.eye_size
    rx, ry = 0.05 * size, 0.024 * size * (0.42 if params.narrow_eyes else 1.0)
    iris = 0.021 * size
    lid = (35, 25, 25)
    u = np.linspace(0, 1, 9)
    brow = traits.brow_thickness * (1 - 0.45 * u)
    arch = 0.022 * np.sin(np.pi * u**0.8) if traits.arched_eyebrows else 0.006 * np.sin(np.pi * u)
    brow_color = _mix(traits.hair, (40, 30, 25), 0.35)
    for side in (-1, 1):
        ex = _CX + side * traits.eye_spacing
        if params.heavy_makeup:
            c.ellipse(ex, _EYE_Y - 0.014, rx * 1.15, 0.03 * size, _mix(traits.skin, traits.eyeshadow, 0.65))
        c.ellipse(ex, _EYE_Y, rx, ry, (240, 236, 230))
        c.ellipse(ex, _EYE_Y, iris, min(iris, ry * 0.95), traits.iris)
        c.ellipse(ex, _EYE_Y, 0.4 * iris, min(0.4 * iris, ry * 0.6), (15, 12, 12))
        upper = _superellipse(ex, _EYE_Y, rx, ry, 2.0, np.linspace(np.pi, 2 * np.pi, 12))
        c.line(upper, lid, 0.011 if params.heavy_makeup else 0.006)
        x = ex + side * (-0.05 + 0.11 * u)
        y = _EYE_Y - 0.058 - traits.brow_raise - arch
        c.polygon(_band(x, y - brow / 2, y + brow / 2), brow_color)


def _draw_nose(c: _Canvas, traits: FaceTraits) -> None:
    s, skin = traits.nose_scale, traits.skin
    half = 0.038 * s
    shadow, nostril = _shade(skin, 0.82), _shade(skin, 0.45)
    for side in (-1, 1):
        c.line(
            np.array([[_CX + side * 0.014, 0.47], [_CX + side * 0.022 * s, _NOSE_Y - 0.03]]), shadow, 0.006
        )
    if traits.pointy_nose:
        c.polygon(
            np.array(
                [
                    [_CX - half, _NOSE_Y + 0.004],
                    [_CX, _NOSE_Y - 0.05 * s],
                    [_CX + half, _NOSE_Y + 0.004],
                    [_CX, _NOSE_Y + 0.02 * s],
                ]
            ),
            _shade(skin, 0.93),
            shadow,
            0.006,
        )
        for side in (-1, 1):
            c.line(
                np.array(
                    [
                        [_CX + side * 0.35 * half, _NOSE_Y + 0.01 * s],
                        [_CX + side * 0.75 * half, _NOSE_Y + 0.002],
                    ]
                ),
                nostril,
                0.006,
            )
    else:
        for side in (-1, 1):
            c.ellipse(_CX + side * 0.85 * half, _NOSE_Y, 0.018 * s, 0.016 * s, _shade(skin, 0.9))
        c.ellipse(_CX, _NOSE_Y - 0.004, 0.024 * s, 0.02 * s, _shade(skin, 0.98))
        for side in (-1, 1):
            c.ellipse(_CX + side * 0.45 * half, _NOSE_Y + 0.013 * s, 0.009 * s, 0.005 * s, nostril)


@dataclass(frozen=True)
class _Mouth:
    """Curves of the mouth over x, left to right: the lips' outer edges and the opening between them."""

    x: np.ndarray
    lip_top: np.ndarray
    opening_top: np.ndarray
    opening_bottom: np.ndarray
    lip_bottom: np.ndarray

    @classmethod
    def of(cls, traits: FaceTraits, params: ImageParams) -> _Mouth:
        u = np.linspace(-1, 1, 17)
        width = traits.mouth_width * (1.15 if params.smiling else 1.0)
        middle = _MOUTH_Y + (0.016 * (1 - u**2) - 0.006 if params.smiling else 0.003 * (1 - u**2))
        gap = {(True, True): 0.048, (True, False): 0.026, (False, True): 0.03}.get(
            (params.smiling, params.mouth_open), 0.0
        )
        envelope = np.sqrt(1 - u**2)
        opening = (1 - u**2) ** 0.8
        top, bottom = middle - 0.35 * gap * opening, middle + 0.65 * gap * opening
        bow = 1 - 0.35 * np.exp(-((u / 0.18) ** 2))
        lip_top = top - 0.011 * traits.lip_scale * envelope**0.5 * bow
        lip_bottom = bottom + 0.016 * traits.lip_scale * envelope**0.7
        return cls(_CX + width * u, lip_top, top, bottom, lip_bottom)


def _draw_mouth(c: _Canvas, traits: FaceTraits, params: ImageParams, mouth: _Mouth) -> None:
    """Lips around the opening: a smile shows teeth, an open mouth a dark gap, a closed one a line."""
    lips = traits.lipstick if params.lipstick else traits.lips
    x = mouth.x
    if params.smiling or params.mouth_open:
        c.polygon(_band(x, mouth.opening_top, mouth.opening_bottom), (60, 20, 25))
    if params.smiling:
        teeth = mouth.opening_bottom
        if params.mouth_open:  # upper teeth only, the gap below them dark
            teeth = np.minimum(mouth.opening_top + 0.024, teeth)
        c.polygon(_band(x, mouth.opening_top, teeth), (236, 232, 222))
    c.polygon(_band(x, mouth.lip_top, mouth.opening_top), lips)
    c.polygon(_band(x, mouth.opening_bottom, mouth.lip_bottom), _shade(lips, 1.08))
    if not (params.smiling or params.mouth_open):
        c.line(_polyline(x, mouth.opening_top), _shade(lips, 0.6), 0.005)


def _draw_facial_hair(c: _Canvas, traits: FaceTraits, head: _Head, mouth: _Mouth) -> None:
    beard = _shade(traits.hair, 0.85)
    with c.at_depth(_FEATURE_DEPTH):
        _draw_beard(c, traits, mouth, beard)
    if traits.sideburns:
        y = np.linspace(_HAIR_SIDE_Y, 0.6, 8)
        outer = head.half_width(y) + 0.004
        for side in (-1, 1):
            c.polygon(_side_strip(side, outer - 0.028 + 0.012 * (y - _HAIR_SIDE_Y) / 0.2, outer, y), beard)


def _draw_beard(c: _Canvas, traits: FaceTraits, mouth: _Mouth, beard: Color) -> None:
    if traits.mustache:
        top = np.minimum(mouth.lip_top, _MOUTH_Y - 0.012) - 0.028
        c.polygon(_band(_CX + 1.12 * (mouth.x - _CX), top, mouth.lip_top + 0.004), beard)
    if traits.goatee:
        inner = np.abs(mouth.x - _CX) <= 0.7 * (mouth.x[-1] - _CX)
        x = mouth.x[inner]
        u = (x - _CX) / (x[-1] - _CX)
        c.polygon(_band(x, mouth.lip_bottom[inner] + 0.004, _CHIN_Y - 0.008 - 0.02 * u**2), beard)


def _side_strip(side: int, inner: np.ndarray, outer: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A vertical strip at the side of the head between two distances from the centre line."""
    return np.concatenate([_polyline(_CX + side * inner, y), _polyline(_CX + side * outer, y)[::-1]])


def _draw_hair(c: _Canvas, traits: FaceTraits, head: _Head) -> None:
    """Hair on the head: a cap from the hairline over the crown, with strands showing its texture (a bald
    head shows the light on its scalp instead)."""
    if traits.bald:
        c.ellipse(_CX - 0.06, head.cy - 0.8 * head.ry, 0.05, 0.025, _shade(traits.skin, 1.1))
        return
    sin_side = np.clip((head.cy - _HAIR_SIDE_Y) / (head.ry + 1.4 * traits.hair_volume), -1, 1)
    b = float(np.arcsin(sin_side))
    outer = _hair_outline(traits, head, np.linspace(np.pi + b, 2 * np.pi - b, 40))
    u = np.linspace(1, -1, 21)
    line_y = _hairline(traits, u)
    hairline = _polyline(_CX + u * 0.97 * head.half_width(line_y), line_y)
    sides = [np.linspace(_HAIR_SIDE_Y, line_y[0], 5), np.linspace(line_y[-1], _HAIR_SIDE_Y, 5)]
    right = _polyline(_CX + 0.97 * head.half_width(sides[0]), sides[0])
    left = _polyline(_CX - 0.97 * head.half_width(sides[1]), sides[1])
    c.polygon(np.concatenate([outer, right, hairline, left]), traits.hair)

    strand = _shade(traits.hair, 0.75) if traits.hair_color_name != "black" else _shade(traits.hair, 1.9)
    top = head.cy - head.ry - traits.hair_volume
    v = np.linspace(0, 1, 10)
    for k in np.linspace(-0.8, 0.8, 7):
        x0 = _CX + k * head.rx * 0.5
        x = x0 + k * head.rx * 0.45 * v
        if traits.wavy_hair:
            x = x + 0.01 * np.sin(v * 3 * np.pi)
        y = top + 0.015 + v * (_hairline(traits, np.array([k]))[0] - top - 0.03)
        c.line(_polyline(x, y), strand, 0.005)


def _draw_hat(c: _Canvas, traits: FaceTraits, params: ImageParams, head: _Head) -> None:
    band = head.cy - 0.66 * head.ry
    crown_top = head.cy - head.ry - 1.4 * traits.hair_volume - 0.035
    width = head.rx + traits.hair_volume + 0.02
    dark = _shade(params.hat_color, 0.65)
    if params.hat_brimmed:
        c.polygon(
            np.array(
                [
                    [_CX - 0.85 * width, band],
                    [_CX - 0.72 * width, crown_top - 0.02],
                    [_CX + 0.72 * width, crown_top - 0.02],
                    [_CX + 0.85 * width, band],
                ]
            ),
            params.hat_color,
        )
        c.polygon(
            np.array(
                [
                    [_CX - 0.83 * width, band - 0.045],
                    [_CX + 0.83 * width, band - 0.045],
                    [_CX + 0.84 * width, band - 0.012],
                    [_CX - 0.84 * width, band - 0.012],
                ]
            ),
            dark,
        )
        c.ellipse(_CX, band, width + 0.09, 0.028, _shade(params.hat_color, 0.85))
    else:
        dome = _superellipse(_CX, band, width, band - crown_top, 2.0, np.linspace(np.pi, 2 * np.pi, 24))
        c.polygon(dome, params.hat_color)
        c.polygon(
            np.array(
                [
                    [_CX - width, band - 0.045],
                    [_CX + width, band - 0.045],
                    [_CX + width, band + 0.01],
                    [_CX - width, band + 0.01],
                ]
            ),
            dark,
        )


def _draw_glasses(c: _Canvas, traits: FaceTraits, head: _Head) -> None:
    y = _EYE_Y + 0.005
    hx, hy = 0.068, 0.052
    for side in (-1, 1):
        ex = _CX + side * traits.eye_spacing
        c.polygon(_superellipse(ex, y, hx, hy, traits.frame_power), None, traits.frame, traits.frame_width)
        temple = _CX + side * float(head.half_width(_EYE_Y))
        c.line(
            np.array([[ex + side * hx, y - 0.01], [temple, _EYE_Y + 0.01]]), traits.frame, traits.frame_width
        )
    inner = traits.eye_spacing - hx
    c.line(
        np.array([[_CX - inner, y - 0.01], [_CX, y - 0.02], [_CX + inner, y - 0.01]]),
        traits.frame,
        traits.frame_width,
    )


def _draw_earrings(c: _Canvas, traits: FaceTraits, params: ImageParams, head: _Head) -> None:
    for x, y, _, ry in _ears(traits, head):
        y = y + ry + 0.01
        if params.earring_hoops:
            c.polygon(_superellipse(x, y + 0.012, 0.02, 0.022), None, params.jewel, 0.008)
        else:
            c.ellipse(x, y, 0.012, 0.012, params.jewel)
            c.ellipse(x, y + 0.024, 0.014, 0.018, _shade(params.jewel, 0.85))


def _background(params: ImageParams, side: int, rng: np.random.Generator) -> Image.Image:
    """A two-colour gradient in a random direction with blotches; it has no fine detail, so it is computed on
    a coarse grid and upsampled."""
    ramp = np.linspace(-0.5, 0.5, 6)
    g = (
        0.5
        + np.cos(params.background_angle) * ramp[None, :]
        + np.sin(params.background_angle) * ramp[:, None]
    )
    a, b = (np.asarray(color, dtype=float) for color in params.background)
    texture = (rng.random((6, 6, 3)) - 0.5) * params.background_noise
    coarse = np.clip(a + (b - a) * np.clip(g, 0, 1)[..., None] + texture, 0, 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.BILINEAR)


def _finish(image: Image.Image, params: ImageParams, rng: np.random.Generator) -> Image.Image:
    """Camera effects on the final-size image: blur, directional light with a colour cast, sensor noise."""
    side = image.width
    if params.blurry:
        image = image.filter(ImageFilter.GaussianBlur(params.blur_radius * side / 112))
    ramp = np.linspace(-0.5, 0.5, side, dtype=np.float32)
    light = params.brightness * (
        1
        + params.light_strength
        * (np.cos(params.light_angle) * ramp[None, :] + np.sin(params.light_angle) * ramp[:, None])
    )
    noise = rng.standard_normal((side, side, 1), dtype=np.float32) * params.noise_sigma
    pixels = (
        np.asarray(image, dtype=np.float32) * light[..., None] * np.asarray(params.tint, dtype=np.float32)
        + noise
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_face(traits: FaceTraits, params: ImageParams, size: int = 112) -> Image.Image:
    """Draw one RGB face image, ``size`` pixels square, from its identity's traits and its own parameters.

    A pure function: the same arguments always give the same pixels. Shapes are drawn at twice the size and
    averaged down, which anti-aliases them at a fraction of the cost of supersampled primitives.
    """
    rng = np.random.default_rng(params.noise_seed)
    side = 2 * size
    image = _background(params, side, rng)
    c = _Canvas(image, params)
    head = _Head.of(traits)
    mouth = _Mouth.of(traits, params)
    if traits.long_hair or traits.bald:
        _draw_back_hair(c, traits, head)
    _draw_body(c, traits, params, head)
    _draw_ears(c, traits, head)
    _draw_skin(c, traits, params, head)
    with c.at_depth(_FEATURE_DEPTH):
        _draw_eyes(c, traits, params)
    with c.at_depth(_NOSE_DEPTH):
        _draw_nose(c, traits)
    with c.at_depth(_FEATURE_DEPTH):
        _draw_mouth(c, traits, params, mouth)
    _draw_facial_hair(c, traits, head, mouth)
    _draw_hair(c, traits, head)
    if params.hat:
        _draw_hat(c, traits, params, head)
    if params.eyeglasses:
        with c.at_depth(_FEATURE_DEPTH):
            _draw_glasses(c, traits, head)
    if params.earrings:
        _draw_earrings(c, traits, params, head)
    return _finish(image.reduce(2), params, rng)


# --- writing the dataset -------------------------------------------------------------------------------


#: The columns of ``targets.csv`` after the image id, identity and partition: continuous values, then the
#: hair colour's classes (CelebA's four; red and auburn hair are left unlabelled), then the control.
#: ``Yaw`` and ``Age`` are written only when drawn (``generate(yaw_and_age=True)``).
TARGETS: tuple[str, ...] = ("Head_Roll", "Lighting", "Skin_Tone", "Yaw", "Age", "Hair_Color", "Random_Value")
_YAW_AND_AGE = ("Yaw", "Age")
_TARGET_HAIR = ("black", "blond", "brown", "gray")


def target_names(yaw_and_age: bool = False) -> tuple[str, ...]:
    """The target columns ``generate`` writes, in :data:`TARGETS` order."""
    return TARGETS if yaw_and_age else tuple(t for t in TARGETS if t not in _YAW_AND_AGE)


def target_values(seed: int, identity: int, index: int, traits: FaceTraits, params: ImageParams) -> list:
    """The planted non-binary targets of one image, in :func:`target_names` order ("" or NaN: no label);
    ``Yaw`` and ``Age`` when the face was drawn with an age.

    ``Head_Roll`` is the in-plane angle the face is drawn at (degrees), ``Lighting`` the brightness factor
    applied to the whole image, ``Skin_Tone`` the mix from light to dark skin, ``Yaw`` the turn out of the
    image plane (degrees), ``Age`` the age in years; ``Random_Value`` is drawn from a stream of its own that
    nothing rendered reads.
    """
    hair = traits.hair_color_name if traits.hair_color_name in _TARGET_HAIR else ""
    control = float(np.random.default_rng([seed, 6, identity, index]).random())
    drawn = [params.yaw, traits.age] if traits.age is not None else []
    return [params.angle, params.brightness, traits.skin_tone, *drawn, hair, control]


def _file_name(number: int) -> str:
    return f"{number:06d}.jpg"


_Job = tuple[Path, int, int, int, int, bool]


def _render_identity(job: _Job) -> tuple[int, np.ndarray, list[list]]:
    """Render and write every image of one identity; return its labels, one 0/1 row per image, and its
    planted non-binary targets, one row per image."""
    image_dir, seed, identity, count, size, yaw_and_age = job
    traits = identity_traits(seed, identity, aged=yaw_and_age)
    labels = np.empty((count, len(SYNTH_ATTRIBUTES)), dtype=np.int8)
    targets = []
    for index in range(count):
        params = image_params(seed, identity, index, traits, turned=yaw_and_age)
        image = render_face(traits, params, size)
        image.save(
            image_dir / _file_name(identity * count + index + 1), format="JPEG", quality=params.jpeg_quality
        )
        drawn = attribute_labels(traits, params)
        labels[index] = [drawn[name] for name in SYNTH_ATTRIBUTES]
        targets.append(target_values(seed, identity, index, traits, params))
    return identity, labels, targets


def _default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run(jobs: list[_Job], workers: int) -> Iterator[tuple[int, np.ndarray, list[list]]]:
    """Render identities in ``workers`` processes, yielding each as it finishes."""
    if workers == 1:
        yield from map(_render_identity, jobs)
        return
    # On Linux, fork starts workers without re-importing faceprobe (and torch); they use only numpy and PIL.
    method = "fork" if sys.platform.startswith("linux") else None
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap_unordered(_render_identity, jobs)


def _partitions(identities: int, seed: int) -> np.ndarray:
    """CelebA-style identity-disjoint split: about 80% train (0), 10% val (1), 10% test (2)."""
    split = np.zeros(identities, dtype=np.int8)
    if identities >= 3:
        held_out = max(1, round(0.1 * identities))
        order = np.random.default_rng([seed, 0]).permutation(identities)
        split[order[:held_out]] = 1
        split[order[held_out : 2 * held_out]] = 2
    return split


def _write_lists(out: Path, labels: np.ndarray, partitions: np.ndarray) -> None:
    identities, per_identity, _ = labels.shape
    names = [_file_name(n + 1) for n in range(identities * per_identity)]
    identity_of = np.repeat(np.arange(identities), per_identity)
    rows = (2 * labels.reshape(len(names), -1) - 1).tolist()
    with open(out / "list_attr_celeba.txt", "w") as f:
        f.write(f"{len(names)}\n{' '.join(SYNTH_ATTRIBUTES)}\n")
        f.writelines(
            f"{name} {' '.join(f'{v:2d}' for v in row)}\n" for name, row in zip(names, rows, strict=True)
        )
    with open(out / "identity_CelebA.txt", "w") as f:
        f.writelines(f"{name} {i + 1}\n" for name, i in zip(names, identity_of, strict=True))
    with open(out / "list_eval_partition.txt", "w") as f:
        f.writelines(f"{name} {partitions[i]}\n" for name, i in zip(names, identity_of, strict=True))


def _write_targets(
    out: Path, targets: list[list[list]], partitions: np.ndarray, names: Sequence[str]
) -> None:
    """``targets.csv``: per image its id (relative to ``out``), identity, partition and planted targets."""
    lines = [",".join(("image_id", "identity", "partition", *names))]
    number = 0
    for identity, rows in enumerate(targets):
        for row in rows:
            number += 1
            cells = [v if isinstance(v, str) else ("" if np.isnan(v) else f"{v:.6g}") for v in row]
            lines.append(
                ",".join(
                    (
                        f"img_align_celeba/{_file_name(number)}",
                        str(identity + 1),
                        str(partitions[identity]),
                        *cells,
                    )
                )
            )
    (out / "targets.csv").write_text("\n".join(lines) + "\n")


def _write_readme(
    out: Path, identities: int, per_identity: int, size: int, seed: int, yaw_and_age: bool
) -> None:
    from faceprobe import __version__  # here, not at the top: faceprobe's __init__ may import this module

    drawn = _YAW_AND_AGE_README if yaw_and_age else ""

    (out / "README.md").write_text(
        f"""# Synthetic faces (faceprobe)

Procedurally drawn, aligned face images whose attribute labels are true by construction, written in
CelebA's published layout so that the same loader reads them and real CelebA.

Generated by `faceprobe.data.synth.generate` (faceprobe {__version__}) with:

- seed: {seed}
- identities: {identities}
- images per identity: {per_identity}
- image size: {size}x{size} RGB JPEG
- yaw and age drawn: {"yes" if yaw_and_age else "no"}

The same parameters (and the same numpy and Pillow) give byte-identical files whatever the number of
worker processes.

- `img_align_celeba/NNNNNN.jpg`: images, numbered identity by identity.
- `list_attr_celeba.txt`: image count, attribute names, then one row of -1/1 labels per image.
  `Control_Random` is a fair coin per image that nothing drawn depends on: no probe should predict it.
- `identity_CelebA.txt`: identity (1-based) of each image; identities fix the primary traits.
- `list_eval_partition.txt`: 0 train, 1 val, 2 test, split by identity (about 80/10/10%).
- `targets.csv`: targets beyond binary ones, probed as `folder:DIR/targets.csv`: `Head_Roll` (the face's
  in-plane angle, degrees), `Lighting` (the image's brightness factor), `Skin_Tone` (0 light to 1 dark;
  empty for pale skin), `Hair_Color` (black, blond, brown or gray; empty for red hair) and `Random_Value`
  (drawn apart from everything rendered: no probe should predict it).{drawn}
  A `synthetic:DIR` study probes these columns too when it names them (`attributes = ["Yaw", ...]`);
  `attributes = "all"` means the binary columns of `list_attr_celeba.txt`.
"""
    )


_YAW_AND_AGE_README = """
  With them, `Yaw` (degrees, -35 to 35, per image: the head turned out of the image plane, positive to the
  image's right; the eyes, brows, nose and mouth shift toward the turn, the face and ears foreshorten and
  the cheek on the turned side darkens)
  and `Age` (years, per identity: 20-40 for `Young` faces, 45-80 for the others; forehead lines, folds
  beside the nose and crow's feet come and darken with it, and the hair greys from 40 on)."""


def generate(
    out: str | Path,
    identities: int = 100,
    images_per_identity: int = 30,
    size: int = 112,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    yaw_and_age: bool = False,
) -> Path:
    """Write a synthetic face dataset in CelebA's published layout to ``out`` and return its path.

    ``workers`` processes (default: one per available core) render identities in parallel; ``progress`` is
    called with the number of images each time some are finished, e.g. to advance a progress bar.
    ``yaw_and_age`` also draws and plants ``Yaw`` and ``Age`` (off: the files are those drawn without them).
    """
    for name, value, least in (
        ("identities", identities, 1),
        ("images_per_identity", images_per_identity, 1),
        ("size", size, 16),
        ("seed", seed, 0),
        ("workers", workers or 1, 1),
    ):
        if value < least:
            raise DataError(f"synthetic data: {name} must be at least {least}, got {value}")
    out = Path(out)
    image_dir = out / "img_align_celeba"
    if image_dir.is_dir() and any(image_dir.iterdir()):
        raise DataError(f"{image_dir} already holds images; generate into a new or empty folder")
    image_dir.mkdir(parents=True, exist_ok=True)

    jobs = [
        (image_dir, seed, identity, images_per_identity, size, yaw_and_age) for identity in range(identities)
    ]
    labels = np.empty((identities, images_per_identity, len(SYNTH_ATTRIBUTES)), dtype=np.int8)
    targets: list[list[list]] = [[] for _ in range(identities)]
    for identity, rows, values in _run(jobs, min(workers or _default_workers(), identities)):
        labels[identity], targets[identity] = rows, values
        if progress is not None:
            progress(len(rows))
    _write_lists(out, labels, _partitions(identities, seed))
    _write_targets(out, targets, _partitions(identities, seed), target_names(yaw_and_age))
    _write_readme(out, identities, images_per_identity, size, seed, yaw_and_age)
    return out
