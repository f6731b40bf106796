"""Synthetic mammogram phantoms: the project's embedded default data.

THESE IMAGES ARE SYNTHETIC. They imitate what matters to a CAD pipeline, so every stage can be
exercised and tested without patient data; they carry no clinical information and results on them
say nothing about real performance (see ``docs/synthetic-data.md``).

What is drawn (in an "attenuation" space where bright = dense, then mapped to grey values):

- the breast: a perturbed half-ellipse against the chest wall (on MLO views it runs up into the
  axilla, i.e. reaches the top edge), compressed-thickness roll-off (tissue darkens towards the
  skin) and a thin bright skin line just outside that darker band;
- fibroglandular tissue: Gaussian noise with a 1/f^beta power spectrum (beta ~ 3), soft-thresholded
  to the case's density (BI-RADS A fatty .. D extremely dense), fading to subcutaneous fat near the
  skin, with thin curvilinear strands (ligaments) and fine texture;
- MLO views: a bright pectoral-muscle triangle in the top chest-wall corner;
- lesions (benign: circumscribed round/oval masses with sharp margins and/or a few coarse
  "popcorn" calcifications; malignant: irregular ill-defined or spiculated masses and/or a tight
  cluster of fine pleomorphic microcalcifications). Size and contrast ranges of benign and
  malignant findings overlap; lesions never sit on the pectoral muscle;
- in every class, a few isolated bright specks (vascular/dermal calcifications, not annotated), so
  a lone bright dot does not mean "calcification finding";
- the film: a dark, noisy, slightly uneven background, a bright film label with letters on about
  half the images (away from the breast, for breast-region cropping to remove), and a per-image
  gain and gamma so the class cannot be read from global brightness.

Conventions: top-left origin, x right, y down; boxes are half-open ``(x0, y0, x1, y1)``. The chest
wall is at the LEFT edge for ``laterality="L"`` and at the RIGHT edge for ``"R"`` (the nipple points
away from it), as MIAS and CBIS-DDSM display their images. Anatomy, lesions and film each draw from
their own random stream of the seed, so the same seed gives the same breast whatever the pathology.

The findings are drawn in :mod:`mammocad.data.synth.lesions` (re-exported here: :class:`SynthLesion`,
``MASS_SHAPES``, ``CALCIFICATION_SHAPES``); this module draws the breast and the film around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import cv2
import numpy as np

from mammocad.data.synth.lesions import (
    CALCIFICATION_SHAPES,
    MASS_SHAPES,
    SynthLesion,
    draw_lesions,
    mirror_lesion,
    sigmoid,
)

PATHOLOGIES = ("normal", "benign", "malignant")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
#: BI-RADS breast density: A almost entirely fatty, B scattered, C heterogeneously dense, D extremely dense.
DENSITIES = ("A", "B", "C", "D")
#: Share of the breast drawn as fibroglandular tissue, per density (jittered per case).
_GLAND_SHARE = {"A": 0.1, "B": 0.28, "C": 0.5, "D": 0.72}
#: The image size the pixel lengths below are tuned for; other sizes scale them.
_REFERENCE_PIXELS = 512 * 384


@dataclass
class SynthCase:
    """One synthetic mammogram and its ground truth.

    ``breast_mask`` is the whole tissue foreground (pectoral muscle included); ``pectoral_mask`` is
    set on MLO views only; ``label_box`` is the film label's ``(x0, y0, x1, y1)`` when the image
    has one (it never touches the breast).
    """

    pixels: np.ndarray = field(repr=False)  # uint8, or uint16 when bits=16
    breast_mask: np.ndarray = field(repr=False)
    lesions: list[SynthLesion]
    pathology: str
    view: str
    laterality: str
    density: str  # BI-RADS density letter A (fatty) .. D (extremely dense)
    pectoral_mask: np.ndarray | None = field(default=None, repr=False)
    label_box: tuple[int, int, int, int] | None = None

    @property
    def lesion_mask(self) -> np.ndarray:
        """Union of the lesion masks (bool HxW; all False for a normal case)."""
        union = np.zeros(self.pixels.shape, dtype=bool)
        for lesion in self.lesions:
            union |= lesion.mask
        return union


def generate_case(
    seed: int,
    pathology: str,
    view: str = "CC",
    laterality: str = "L",
    height: int = 512,
    width: int = 384,
    bits: int = 8,
    *,
    density: str | None = None,
) -> SynthCase:
    """Generate one synthetic mammogram.

    Args:
        seed: the case is a function of the seed and the other arguments (same in, same out).
        pathology: ``normal`` (no lesion), ``benign`` (round/oval mass and/or coarse
            calcifications) or ``malignant`` (irregular/spiculated mass and/or fine clustered
            microcalcifications).
        view: ``CC`` or ``MLO`` (MLO adds the pectoral muscle).
        laterality: ``L`` (chest wall at the left edge) or ``R`` (mirrored).
        height, width: image size in pixels (each side at least 48).
        bits: 8 (uint8) or 16 (uint16, full 16-bit range).
        density: BI-RADS density ``A``..``D``; drawn from the seed when ``None`` (pass it to give
            the views of one patient the same density).

    Returns:
        A :class:`SynthCase`: pixels, breast and pectoral masks, film label box, and the lesions
        with their masks, boxes, centres and enclosing radii.
    """
    _check_arguments(pathology, view, laterality, height, width, bits, density)
    anatomy_rng, lesion_rng, film_rng = np.random.default_rng(seed).spawn(3)
    scale = math.sqrt(height * width / _REFERENCE_PIXELS)

    anatomy = _draw_anatomy(anatomy_rng, view, height, width, density)
    lesions, lesion_attenuation = draw_lesions(lesion_rng, pathology, anatomy, scale)
    image = _expose_film(film_rng, anatomy, lesion_attenuation, scale)

    breast, pectoral = anatomy.breast, anatomy.pectoral
    if laterality == "R":
        image = image[:, ::-1]
        breast = breast[:, ::-1]
        pectoral = pectoral[:, ::-1] if pectoral is not None else None
        lesions = [mirror_lesion(lesion, width) for lesion in lesions]
    image = np.ascontiguousarray(image)
    # The label goes on after mirroring so its letters read the right way round.
    label_box = _film_label(film_rng, image, breast, laterality, view, scale)
    image += film_rng.normal(0.0, film_rng.uniform(0.003, 0.008), image.shape).astype(np.float32)  # quantum noise

    top = 65535 if bits == 16 else 255
    pixels = np.rint(np.clip(image, 0.0, 1.0) * top).astype(np.uint16 if bits == 16 else np.uint8)
    return SynthCase(
        pixels=pixels,
        breast_mask=np.ascontiguousarray(breast),
        lesions=lesions,
        pathology=pathology,
        view=view,
        laterality=laterality,
        density=anatomy.density,
        pectoral_mask=np.ascontiguousarray(pectoral) if pectoral is not None else None,
        label_box=label_box,
    )


def _check_arguments(
    pathology: str, view: str, laterality: str, height: int, width: int, bits: int, density: str | None
) -> None:
    if pathology not in PATHOLOGIES:
        raise ValueError(f"pathology must be one of {PATHOLOGIES}, got {pathology!r}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be one of {LATERALITIES}, got {laterality!r}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if min(height, width) < 48 or height * width > 40_000_000:
        raise ValueError(f"image size {height}x{width} is out of range (each side >= 48, at most 40 MP)")
    if density is not None and density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES} or None, got {density!r}")


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum (beta ~ 3 matches mammographic texture), zero mean, unit std."""
    height, width = shape
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    freq2 = fx * fx + fy * fy
    freq2[0, 0] = 1.0
    amplitude = freq2 ** np.float32(-beta / 4)  # power ~ f^-beta, so amplitude ~ f^(-beta/2)
    amplitude[0, 0] = 0.0
    real = rng.standard_normal(amplitude.shape, dtype=np.float32)
    imag = rng.standard_normal(amplitude.shape, dtype=np.float32)
    field_ = np.fft.irfft2((real + 1j * imag) * amplitude, s=shape).astype(np.float32)
    field_ -= field_.mean()
    field_ /= field_.std() + 1e-12
    return field_


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# --- anatomy (drawn as a LEFT breast, chest wall at x = 0; R is mirrored afterwards) --------


@dataclass
class _Anatomy:
    attenuation: np.ndarray  # float32 HxW: tissue inside the breast (no skin line, no film)
    breast: np.ndarray  # bool HxW
    depth: np.ndarray  # float32 HxW: distance to the skin in px (0 outside the breast)
    pectoral: np.ndarray | None  # bool HxW, MLO only
    density: str
    gland: np.ndarray  # float32 HxW: fibroglandular share 0..1


def _draw_anatomy(rng: np.random.Generator, view: str, height: int, width: int, density: str | None) -> _Anatomy:
    drawn = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.33, 0.12]))  # drawn always: the stream stays aligned
    density = density or drawn
    short = min(height, width)

    # Silhouette: a half-ellipse on the chest wall; MLO runs up into the axilla (top edge). Drawn
    # as a polygon (cheap) from the outline's radius at each angle.
    if view == "MLO":
        cy, half_height = height * rng.uniform(0.38, 0.45), height * rng.uniform(0.5, 0.56)
    else:
        cy, half_height = height * rng.uniform(0.45, 0.55), height * rng.uniform(0.36, 0.45)
    half_height = min(half_height, (height - cy) * 0.97)  # the inframammary fold stays in the image
    reach = width * rng.uniform(0.62, 0.85)
    angle = np.linspace(-np.pi / 2, np.pi / 2, 721)
    outline = np.ones_like(angle)
    for harmonic in (2, 3, 4):  # low-order bumps: no two breasts are ellipses
        outline += rng.normal(0, 0.03) * np.cos(harmonic * angle + rng.uniform(0, 2 * np.pi))
    points = np.c_[reach * outline * np.cos(angle), cy + half_height * outline * np.sin(angle)]
    points = np.vstack([[-2.0, points[0, 1]], points, [-2.0, points[-1, 1]]])  # close along the chest wall
    breast_u8 = np.zeros((height, width), np.uint8)
    cv2.fillPoly(breast_u8, [np.rint(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    breast = breast_u8.astype(bool)
    depth = cv2.distanceTransform(breast_u8, cv2.DIST_L2, 5)

    # Fibroglandular tissue: the 1/f^3 field soft-thresholded at the quantile of this density.
    gland_field = power_law_noise(rng, (height, width), beta=rng.uniform(2.8, 3.2))
    share = float(np.clip(_GLAND_SHARE[density] * rng.uniform(0.8, 1.2), 0.04, 0.9))
    threshold = NormalDist().inv_cdf(1.0 - share)
    gland = sigmoid((gland_field - threshold) / rng.uniform(0.45, 0.7))
    fat_band = short * rng.uniform(0.06, 0.12)  # subcutaneous fat: glands fade out towards the skin
    gland *= _smoothstep(depth / fat_band)
    # Strands (Cooper's ligaments) follow level lines of the same field, wrapping the lobules.
    strands = np.exp(-(((gland_field - threshold + 0.6) / 0.08) ** 2)) * _smoothstep(depth / (0.5 * fat_band))
    fine = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), max(1.0, short / 200))
    fine /= fine.std() + 1e-12

    tissue = (
        rng.uniform(0.26, 0.34)  # fat
        + rng.uniform(0.24, 0.34) * gland
        + 0.05 * strands * (1.0 - gland)
        + 0.012 * fine * (0.3 + gland)
    )
    # Compressed thickness falls off near the skin: the periphery is darker than the centre.
    rolloff = short * rng.uniform(0.035, 0.07)
    tissue *= 0.5 + 0.5 * _smoothstep(depth / rolloff)

    pectoral = None
    if view == "MLO":
        top, side = width * rng.uniform(0.22, 0.38), height * rng.uniform(0.38, 0.58)
        bulge = rng.uniform(-0.06, 0.12)  # 0 = straight edge; > 0 bulges towards the breast
        t = np.linspace(0.0, 1.0, 64)
        normal = np.array([side, top]) / math.hypot(side, top)  # points away from the corner
        edge = np.c_[top * (1 - t), side * t] + (bulge * min(top, side) * np.sin(np.pi * t))[:, None] * normal
        corner = np.vstack([[-2.0, -2.0], edge, [-2.0, side]])
        muscle_u8 = np.zeros((height, width), np.uint8)
        cv2.fillPoly(muscle_u8, [np.rint(corner * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        pectoral = muscle_u8.astype(bool) & breast
        soft = cv2.GaussianBlur(pectoral.astype(np.float32), (0, 0), max(0.8, short / 300))
        # Brightest at the chest-wall corner, a little fainter towards its free edge.
        yy, xx = np.ogrid[:height, :width]
        muscle = rng.uniform(0.66, 0.8) * (1.0 - 0.1 * np.clip(xx / top + yy / side, 0.0, 1.0)) + 0.015 * fine
        tissue = tissue * (1.0 - soft) + muscle * soft

    return _Anatomy(tissue.astype(np.float32), breast, depth, pectoral, density, gland.astype(np.float32))


# --- film -------------------------------------------------------------------------------------


def _expose_film(rng: np.random.Generator, anatomy: _Anatomy, lesions: np.ndarray, scale: float) -> np.ndarray:
    """Tissue, lesions and the skin line on a dark uneven background, through a per-image display curve."""
    height, width = anatomy.breast.shape
    skin_width = max(0.6, 0.9 * scale)
    tissue = anatomy.attenuation + lesions
    band = (anatomy.depth > 0) & (anatomy.depth < 6 * skin_width)  # the skin line only lives here
    tissue[band] += rng.uniform(0.1, 0.18) * np.exp(-0.5 * ((anatomy.depth[band] - 1.2 * skin_width) / skin_width) ** 2)
    yy, xx = np.ogrid[:height, :width]
    background = (
        rng.uniform(0.015, 0.05)
        + rng.uniform(-0.012, 0.012) * (xx / width)
        + rng.uniform(-0.012, 0.012) * (yy / height)
    )
    mottle = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), 3.0)
    background = background + 0.006 * mottle / (mottle.std() + 1e-12)
    coverage = cv2.GaussianBlur(anatomy.breast.astype(np.float32), (0, 0), max(0.5, 0.6 * scale))
    image = background + (tissue - background) * coverage
    gain, gamma = rng.uniform(0.92, 1.1), rng.uniform(0.85, 1.15)
    return cv2.pow(np.clip(image * gain, 0.0, 1.0).astype(np.float32), gamma)


def _film_label(
    rng: np.random.Generator, image: np.ndarray, breast: np.ndarray, laterality: str, view: str, scale: float
) -> tuple[int, int, int, int] | None:
    """On about half the images, a bright label with dark letters in a free corner, away from the breast."""
    if rng.random() >= 0.5:
        return None
    height, width = image.shape
    label_w, label_h = max(14, int(width * rng.uniform(0.14, 0.22))), max(8, int(height * rng.uniform(0.04, 0.065)))
    gap = max(3, round(6 * scale))
    far = gap if laterality == "R" else width - label_w - gap  # the side away from the chest wall
    spots = [(far, gap), (far, height - label_h - gap), (far, (height - label_h) // 2)]
    grown = cv2.dilate(breast.astype(np.uint8), np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))
    for index in rng.permutation(len(spots)):
        x0, y0 = spots[int(index)]
        if x0 < 0 or y0 < 0 or grown[y0 : y0 + label_h, x0 : x0 + label_w].any():
            continue
        text = str(rng.choice([f"{laterality} {view}", f"{laterality}{view}", f"{view} {rng.integers(1, 99)}"]))
        letters = np.zeros((label_h, label_w), np.uint8)
        font_scale, thickness = label_h / 32.0, max(1, round(label_h / 14))
        (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        if text_w > label_w - 4:
            font_scale *= (label_w - 4) / text_w
            (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        origin = (max(1, (label_w - text_w) // 2), min(label_h - 2, (label_h + text_h) // 2))
        cv2.putText(letters, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thickness, cv2.LINE_AA)
        ink = letters.astype(np.float32) / 255.0
        paper = rng.uniform(0.82, 0.95)
        image[y0 : y0 + label_h, x0 : x0 + label_w] = paper - ink * rng.uniform(0.5, 0.7)
        return (int(x0), int(y0), int(x0 + label_w), int(y0 + label_h))
    return None


__all__ = [
    "CALCIFICATION_SHAPES",
    "DENSITIES",
    "LATERALITIES",
    "MASS_SHAPES",
    "PATHOLOGIES",
    "VIEWS",
    "SynthCase",
    "SynthLesion",
    "generate_case",
    "power_law_noise",
]
