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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import cv2
import numpy as np

PATHOLOGIES = ("normal", "benign", "malignant")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
#: BI-RADS breast density: A almost entirely fatty, B scattered, C heterogeneously dense, D extremely dense.
DENSITIES = ("A", "B", "C", "D")
#: Share of the breast drawn as fibroglandular tissue, per density (jittered per case).
_GLAND_SHARE = {"A": 0.1, "B": 0.28, "C": 0.5, "D": 0.72}
#: The image size the pixel lengths below are tuned for; other sizes scale them.
_REFERENCE_PIXELS = 512 * 384
MASS_SHAPES = ("round", "oval", "irregular", "spiculated")
CALCIFICATION_SHAPES = ("coarse", "clustered-fine")


@dataclass
class SynthLesion:
    """One synthetic finding. ``box`` is half-open ``(x0, y0, x1, y1)``; ``center`` is ``(x, y)``;
    ``radius`` is the radius of a circle about ``center`` that encloses ``mask`` (bool HxW)."""

    kind: str  # "mass" or "calcification"
    shape: str  # round, oval, irregular, spiculated, coarse, clustered-fine
    pathology: str
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    radius: float
    mask: np.ndarray = field(repr=False)


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
    lesions, lesion_attenuation = _draw_lesions(lesion_rng, pathology, anatomy, scale)
    image = _expose_film(film_rng, anatomy, lesion_attenuation, scale)

    breast, pectoral = anatomy.breast, anatomy.pectoral
    if laterality == "R":
        image = image[:, ::-1]
        breast = breast[:, ::-1]
        pectoral = pectoral[:, ::-1] if pectoral is not None else None
        lesions = [_mirror(lesion, width) for lesion in lesions]
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


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
    gland = _sigmoid((gland_field - threshold) / rng.uniform(0.45, 0.7))
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


# --- lesions ---------------------------------------------------------------------------------


def _draw_lesions(
    rng: np.random.Generator, pathology: str, anatomy: _Anatomy, scale: float
) -> tuple[list[SynthLesion], np.ndarray]:
    """The findings of ``pathology`` plus unannotated specks; returns them and their added attenuation."""
    added = np.zeros(anatomy.breast.shape, dtype=np.float32)
    # Room around each pixel: distance to the skin, to the image border (a finding is seen whole,
    # with context around it) and to the pectoral muscle on MLO views.
    height, width = anatomy.breast.shape
    to_border = np.minimum.outer(
        np.minimum(np.arange(height), np.arange(height)[::-1]), np.minimum(np.arange(width), np.arange(width)[::-1])
    )
    room = np.minimum(anatomy.depth, to_border.astype(np.float32))
    if anatomy.pectoral is not None:
        room = np.minimum(room, cv2.distanceTransform((~anatomy.pectoral).astype(np.uint8), cv2.DIST_L2, 5))
    # Findings arise in fibroglandular tissue more often than in fat (but not only there).
    sites = _Sites(room, 0.3 + anatomy.gland)

    plan: list[str] = []
    if pathology != "normal":
        mass = rng.choice(("round", "oval") if pathology == "benign" else ("spiculated", "irregular"))
        calcification = "coarse" if pathology == "benign" else "clustered-fine"
        plan = [[mass], [calcification], [mass, calcification]][int(rng.choice(3, p=[0.55, 0.3, 0.15]))]

    lesions: list[SynthLesion] = []
    for shape in plan:
        if lesions:  # a second finding keeps clear of the first
            clear = cv2.distanceTransform((~lesions[-1].mask).astype(np.uint8), cv2.DIST_L2, 5)
            sites = _Sites(np.minimum(sites.room, clear), sites.weight)
        draw = _mass if shape in MASS_SHAPES else _calcifications
        lesions.append(draw(rng, str(shape), pathology, sites, added, scale))

    # Isolated specks in every class, anywhere: a lone bright dot is not a cluster.
    anywhere = _Sites(room, np.ones_like(room))
    for _ in range(int(rng.integers(0, 4))):
        x, y = _place(rng, anywhere, 3.0)
        sigma = max(0.5, rng.uniform(0.6, 1.2) * scale)
        _stamp_grains(
            added,
            np.array([[x, y]]),
            np.array([sigma]),
            np.array([1.0]),
            np.array([0.0]),
            np.array([rng.uniform(0.08, 0.3)]),
        )
    added *= anatomy.breast
    return lesions, added


@dataclass
class _Sites:
    """Where findings may go: ``room`` (px free around each pixel) and a preference ``weight``."""

    room: np.ndarray
    weight: np.ndarray


def _place(rng: np.random.Generator, sites: _Sites, needed: float) -> tuple[float, float]:
    """A random pixel (x, y) with at least ``needed`` px of room, drawn in proportion to the weight
    (the roomiest pixel when none has enough room)."""
    candidates = np.flatnonzero(sites.room >= needed)
    if candidates.size:
        weight = sites.weight.ravel()[candidates].astype(np.float64)
        index = int(candidates[rng.choice(candidates.size, p=weight / weight.sum())])
    else:
        index = int(np.argmax(sites.room))
    y, x = divmod(index, sites.room.shape[1])
    return float(x), float(y)


def _window(shape: tuple[int, int], cx: float, cy: float, half: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """A square window about (cx, cy) clipped to the image: its slices and pixel offsets from the centre."""
    rows = slice(max(0, int(cy - half)), min(shape[0], int(cy + half) + 2))
    cols = slice(max(0, int(cx - half)), min(shape[1], int(cx + half) + 2))
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    return rows, cols, xx - cx, yy - cy


def _mass(
    rng: np.random.Generator, shape: str, pathology: str, sites: _Sites, added: np.ndarray, scale: float
) -> SynthLesion:
    # Benign and malignant size and contrast ranges overlap on purpose: shape and margin decide.
    # The added density (about that of dense glands) is higher than real masses often show: with
    # subtler masses a small CNN trained on a few hundred phantoms stayed at chance.
    radius = max(2.5, scale * (rng.uniform(11.0, 32.0) if pathology == "benign" else rng.uniform(10.0, 30.0)))
    contrast = rng.uniform(0.26, 0.38) if pathology == "benign" else rng.uniform(0.28, 0.4)
    harmonics: list[tuple[int, float, float]] = []
    if shape == "irregular":
        harmonics = [(k, rng.uniform(0.05, 0.14), rng.uniform(0, 2 * np.pi)) for k in range(2, 8)]
        margin = rng.uniform(0.12, 0.22)  # ill-defined
    elif shape == "spiculated":
        harmonics = [(k, rng.uniform(0.03, 0.09), rng.uniform(0, 2 * np.pi)) for k in range(2, 7)]
        margin = rng.uniform(0.12, 0.22)
    else:
        margin = rng.uniform(0.025, 0.06)  # circumscribed: a sharp edge
    extent = radius * (1.0 + sum(amplitude for _, amplitude, _ in harmonics))
    spicule_length = radius * rng.uniform(0.8, 1.6) if shape == "spiculated" else 0.0
    cx, cy = _place(rng, sites, extent * (1.0 + 2 * margin) + 3.0)
    rows, cols, dx, dy = _window(added.shape, cx, cy, extent * (1.0 + 4 * margin) + spicule_length + 3.0)

    if shape in ("round", "oval"):
        ratio = 1.0 if shape == "round" else rng.uniform(0.55, 0.8)
        tilt = rng.uniform(0, np.pi)
        along = dx * np.cos(tilt) + dy * np.sin(tilt)
        across = -dx * np.sin(tilt) + dy * np.cos(tilt)
        distance = np.hypot(along, across / ratio) / radius
    else:
        theta = np.arctan2(dy, dx)
        outline = np.ones_like(theta)
        for k, amplitude, phase in harmonics:
            outline += amplitude * np.cos(k * theta + phase)
        distance = np.hypot(dx, dy) / (radius * outline)
    # Denser towards the centre (a dome over a plateau), edge as sharp as the margin says.
    body = _sigmoid((1.0 - distance) / (margin / 2.2)) * (0.75 + 0.25 * np.clip(1.0 - distance**2, 0.0, 1.0))
    patch = contrast * body

    if shape == "spiculated":  # thin radial spicules, slightly curved, thinning and fading outwards
        count = int(rng.integers(8, 19))
        angles = (np.arange(count) + rng.uniform(-0.35, 0.35, count)) * (2 * np.pi / count) + rng.uniform(0, 2 * np.pi)
        lengths = (spicule_length * rng.uniform(0.4, 1.0, count))[:, None, None]
        widths = np.maximum(0.5, rng.uniform(0.6, 1.1, count) * max(scale, 0.6))[:, None, None]
        bends = (rng.normal(0.0, 0.15, count) / max(spicule_length, 1.0))[:, None, None]
        strengths = (contrast * rng.uniform(0.5, 0.9, count))[:, None, None]
        cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
        start = 0.7 * radius
        along = dx[None] * cos + dy[None] * sin - start
        across = -dx[None] * sin + dy[None] * cos - bends * np.maximum(along, 0.0) ** 2
        progress = np.clip(along / (lengths + 0.3 * radius), 0.0, 1.0)
        thickness = widths * (1.0 - 0.5 * progress)
        lines = strengths * (1.0 - progress) * (along > 0) * np.exp(-0.5 * (across / thickness) ** 2)
        patch = np.maximum(patch, lines.max(axis=0))

    added[rows, cols] += patch
    mask = np.zeros(added.shape, dtype=bool)
    mask[rows, cols] = distance <= 1.0  # the mass body; spicules are outside the outline, as in ROI masks
    return _lesion("mass", shape, pathology, mask, (cx, cy))


def _stamp_grains(
    target: np.ndarray,
    centers: np.ndarray,
    sigmas: np.ndarray,
    aspects: np.ndarray,
    angles: np.ndarray,
    amplitudes: np.ndarray,
) -> None:
    """Add elongated Gaussian grains (centres as (x, y)) to ``target``, vectorised over one window."""
    reach = float(np.max(sigmas * aspects)) * 3.0 + 1.0
    (x_lo, y_lo), (x_hi, y_hi) = centers.min(axis=0) - reach, centers.max(axis=0) + reach
    rows = slice(max(0, int(y_lo)), min(target.shape[0], int(y_hi) + 2))
    cols = slice(max(0, int(x_lo)), min(target.shape[1], int(x_hi) + 2))
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    dx = xx[None] - centers[:, 0, None, None].astype(np.float32)
    dy = yy[None] - centers[:, 1, None, None].astype(np.float32)
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = (dx * cos + dy * sin) / (sigmas * aspects)[:, None, None]
    across = (-dx * sin + dy * cos) / sigmas[:, None, None]
    grains = amplitudes[:, None, None] * np.exp(-0.5 * (along**2 + across**2))
    target[rows, cols] += grains.max(axis=0)  # max, not sum: touching grains do not add up to glare


def _calcifications(
    rng: np.random.Generator, shape: str, pathology: str, sites: _Sites, added: np.ndarray, scale: float
) -> SynthLesion:
    if shape == "clustered-fine":  # many tiny pleomorphic grains in a small cluster
        spread = max(4.0, scale * rng.uniform(10.0, 24.0))
        wanted = int(rng.integers(10, 31))
        cx, cy = _place(rng, sites, spread + 5.0)
        candidates = np.clip(rng.normal(0.0, spread / 2.0, (4 * wanted, 2)), -spread, spread)
        if rng.random() < 0.5:  # half the clusters follow a duct: a linear, branching arrangement
            on_line = 2 * wanted
            direction = rng.uniform(0, np.pi)
            steps = rng.uniform(-spread, spread, on_line)
            candidates[:on_line] = np.c_[steps * np.cos(direction), steps * np.sin(direction)]
            candidates[:on_line] += rng.normal(0.0, 0.8, (on_line, 2))
        offsets = _spaced(candidates, wanted, gap=max(2.0, 4.5 * scale))  # grains stay distinct
        count = len(offsets)
        centers = np.array([cx, cy]) + offsets
        sigmas = np.maximum(0.5, scale * rng.uniform(0.6, 1.2, count))
        aspects = rng.uniform(1.0, 2.2, count)  # pleomorphic: round, elongated, rod-like
        amplitudes = rng.uniform(0.25, 0.55, count)
    else:  # coarse "popcorn": few, large, lumpy, very bright
        spread = max(2.0, scale * rng.uniform(4.0, 14.0))
        cx, cy = _place(rng, sites, spread + max(4.0, 10.0 * scale))
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            center = np.array([cx, cy]) + rng.uniform(-spread, spread, 2)
            size = max(1.0, scale * rng.uniform(1.5, 3.5))
            parts += [center + rng.normal(0.0, size, 2) for _ in range(int(rng.integers(2, 6)))]
        centers = np.array(parts)
        count = len(parts)
        sigmas = np.maximum(0.6, scale * rng.uniform(1.3, 2.8, count))
        aspects = rng.uniform(1.0, 1.5, count)
        amplitudes = rng.uniform(0.35, 0.6, count)
    centers = np.clip(centers, 0, np.array([added.shape[1] - 1, added.shape[0] - 1]))
    _stamp_grains(added, centers, sigmas, aspects, rng.uniform(0, np.pi, count), amplitudes)

    # The finding's region: the grains' convex hull, grown by a margin (how calcification ROIs are drawn).
    hull = np.zeros(added.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(centers).astype(np.int32).reshape(-1, 1, 2)), 1)
    grow = int(np.ceil(1.5 * float(np.max(sigmas * aspects)) + max(1.0, 2.0 * scale)))
    hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    mask = hull.astype(bool) & (sites.room > 0)
    middle = centers.mean(axis=0)  # inside the hull, unlike the anchor the grains were scattered about
    return _lesion("calcification", shape, pathology, mask, (float(middle[0]), float(middle[1])))


def _spaced(candidates: np.ndarray, wanted: int, gap: float) -> np.ndarray:
    """Up to ``wanted`` of the candidate points, in order, each at least ``gap`` from those kept."""
    kept = [candidates[0]]
    for point in candidates[1:]:
        if len(kept) == wanted:
            break
        if np.min(np.hypot(*(np.asarray(kept) - point).T)) >= gap:
            kept.append(point)
    return np.asarray(kept)


def _lesion(kind: str, shape: str, pathology: str, mask: np.ndarray, center: tuple[float, float]) -> SynthLesion:
    if not mask.any():  # a finding too small for the pixel grid still marks its centre pixel
        mask[round(center[1]), round(center[0])] = True
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    radius = float(np.sqrt(((xs - center[0]) ** 2 + (ys - center[1]) ** 2).max())) + 0.5
    return SynthLesion(kind, shape, pathology, box, center, radius, mask)


def _mirror(lesion: SynthLesion, width: int) -> SynthLesion:
    x0, y0, x1, y1 = lesion.box
    return SynthLesion(
        lesion.kind,
        lesion.shape,
        lesion.pathology,
        (width - x1, y0, width - x0, y1),
        (width - 1 - lesion.center[0], lesion.center[1]),
        lesion.radius,
        np.ascontiguousarray(lesion.mask[:, ::-1]),
    )


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
