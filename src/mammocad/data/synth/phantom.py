"""Synthetic mammogram phantoms: the project's embedded default data.

THESE IMAGES ARE SYNTHETIC. They imitate what matters to a CAD pipeline (a breast silhouette with a
skin line against a dark background, fibroglandular texture with a power-law spectrum, a pectoral
muscle on MLO views, film labels to be cropped away, and lesions whose appearance follows the
BI-RADS descriptors of benign and malignant findings), so every stage can be exercised and tested
without patient data. They carry no clinical information; results on them say nothing about real
performance.

Conventions: top-left origin; the chest wall is at the LEFT edge for ``laterality="L"`` and at the
RIGHT edge for ``"R"`` (the nipple points away from it); grey values are bright = dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

PATHOLOGIES = ("normal", "benign", "malignant")


@dataclass
class SynthLesion:
    """One synthetic finding. ``box`` is half-open ``(x0, y0, x1, y1)``; ``mask`` is bool HxW."""

    kind: str  # "mass" or "calcification"
    shape: str  # round, oval, irregular, spiculated, coarse, clustered-fine
    pathology: str
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    radius: float
    mask: np.ndarray = field(repr=False)


@dataclass
class SynthCase:
    """One synthetic mammogram and its ground truth."""

    pixels: np.ndarray = field(repr=False)  # uint8, or uint16 when bits=16
    breast_mask: np.ndarray = field(repr=False)
    lesions: list[SynthLesion]
    pathology: str
    view: str
    laterality: str
    density: str  # BI-RADS density letter A (fatty) .. D (extremely dense)

    @property
    def lesion_mask(self) -> np.ndarray:
        """Union of the lesion masks (bool HxW)."""
        union = np.zeros(self.pixels.shape, dtype=bool)
        for lesion in self.lesions:
            union |= lesion.mask
        return union


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum (beta ~ 3 matches mammographic texture), zero mean, unit std."""
    height, width = shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    freq[0, 0] = 1.0
    amplitude = freq ** (-beta / 2)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    field_ = np.fft.irfft2(spectrum, s=shape)
    return ((field_ - field_.mean()) / (field_.std() + 1e-12)).astype(np.float32)


def _breast_silhouette(rng: np.random.Generator, height: int, width: int, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Half-ellipse-like breast against the left edge; returns (mask, depth-from-skin in px).

    On MLO views the breast reaches the top of the image along the chest wall (the axilla), where
    the pectoral muscle lies.
    """
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    if view == "MLO":
        cy, half_height = height * rng.uniform(0.38, 0.45), height * rng.uniform(0.5, 0.58)
    else:
        cy, half_height = height * rng.uniform(0.45, 0.55), height * rng.uniform(0.36, 0.46)
    depth = width * rng.uniform(0.62, 0.85)
    angle = np.arctan2((yy - cy) / half_height, xx / depth)
    # Low-order harmonics make each outline a little different (no two breasts are ellipses).
    wobble = 1 + sum(rng.normal(0, 0.03) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    radius = np.sqrt((xx / depth) ** 2 + ((yy - cy) / half_height) ** 2)
    mask = radius <= wobble
    inside_distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return mask, inside_distance


def _pectoral(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Triangle in the top chest-wall corner (MLO views)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    top = width * rng.uniform(0.18, 0.32)
    side = height * rng.uniform(0.35, 0.55)
    return (xx / top + yy / side) <= 1.0


def _smooth_disc(dist: np.ndarray, radius: np.ndarray | float, softness: float) -> np.ndarray:
    """1 inside, 0 outside, with a sigmoid edge of width ``softness`` px."""
    return 1.0 / (1.0 + np.exp((dist - radius) / max(softness, 1e-3)))


def _place(rng: np.random.Generator, inside_distance: np.ndarray, margin: float) -> tuple[float, float]:
    """A random point at least ``margin`` px inside the breast (falls back to the deepest point)."""
    ys, xs = np.nonzero(inside_distance > margin)
    if len(xs) == 0:
        y, x = np.unravel_index(np.argmax(inside_distance), inside_distance.shape)
        return float(x), float(y)
    k = rng.integers(len(xs))
    return float(xs[k]), float(ys[k])


def _mass(rng: np.random.Generator, image: np.ndarray, inside: np.ndarray, pathology: str, scale: float) -> SynthLesion:
    height, width = image.shape
    # Benign and malignant size ranges overlap on purpose: shape and margin, not size, should decide.
    radius = scale * rng.uniform(0.03, 0.075) * (1.15 if pathology == "malignant" else 1.0)
    cx, cy = _place(rng, inside, radius * 2.2)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    dist = np.sqrt(dx**2 + dy**2)
    angle = np.arctan2(dy, dx)
    if pathology == "benign":
        shape = "round" if rng.random() < 0.5 else "oval"
        elong = 1.0 if shape == "round" else rng.uniform(1.3, 1.7)
        theta = rng.uniform(0, np.pi)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        dist = np.sqrt((u / elong) ** 2 + v**2)
        body = _smooth_disc(dist, radius, softness=radius * 0.06)
    else:
        shape = "spiculated" if rng.random() < 0.55 else "irregular"
        harmonics = sum(
            rng.uniform(0.06, 0.16) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in rng.integers(3, 9, size=4)
        )
        body = _smooth_disc(dist, radius * (1 + harmonics), softness=radius * 0.15)
        if shape == "spiculated":
            spicules = np.zeros_like(body)
            for phi in rng.uniform(0, 2 * np.pi, size=rng.integers(8, 16)):
                length = radius * rng.uniform(1.5, 2.6)
                end = (int(cx + length * np.cos(phi)), int(cy + length * np.sin(phi)))
                cv2.line(spicules, (int(cx), int(cy)), end, 1.0, thickness=max(1, round(scale / 400)))
            spicules = cv2.GaussianBlur(spicules, (0, 0), 0.8)
            body = np.maximum(body, 0.7 * spicules)
    contrast = rng.uniform(0.10, 0.20)
    image += contrast * body * (0.9 + 0.1 * rng.standard_normal(body.shape).astype(np.float32))
    mask = body > 0.5
    return _lesion("mass", shape, pathology, mask, (cx, cy))


def _calcifications(
    rng: np.random.Generator, image: np.ndarray, inside: np.ndarray, pathology: str, scale: float
) -> SynthLesion:
    height, width = image.shape
    if pathology == "benign":  # coarse: few, large, scattered ("popcorn")
        shape, count = "coarse", rng.integers(3, 7)
        spread, dot_radius = scale * rng.uniform(0.03, 0.05), (scale / 512) * rng.uniform(2.0, 3.5, size=count)
    else:  # fine pleomorphic microcalcifications in a tight cluster
        shape, count = "clustered-fine", rng.integers(10, 26)
        spread, dot_radius = scale * rng.uniform(0.015, 0.03), (scale / 512) * rng.uniform(0.6, 1.4, size=count)
    cx, cy = _place(rng, inside, spread * 2)
    dots = np.zeros((height, width), dtype=np.float32)
    offsets = rng.normal(0, spread / 2, size=(count, 2))
    for (ox, oy), r in zip(offsets, dot_radius, strict=True):
        axes = (max(1, round(r * rng.uniform(0.7, 1.4))), max(1, round(r)))
        cv2.ellipse(dots, (int(cx + ox), int(cy + oy)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    dots = cv2.GaussianBlur(dots, (0, 0), 0.6)
    image += rng.uniform(0.25, 0.4) * dots
    # The finding's region: the cluster's hull, slightly dilated (how calcification ROIs are drawn).
    points = np.column_stack([cx + offsets[:, 0], cy + offsets[:, 1]]).astype(np.int32)
    hull = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    hull = cv2.dilate(hull, np.ones((5, 5), np.uint8), iterations=max(1, round(scale / 256)))
    return _lesion("calcification", shape, pathology, (hull > 0) | (dots > 0.3), (cx, cy))


def _lesion(kind: str, shape: str, pathology: str, mask: np.ndarray, center: tuple[float, float]) -> SynthLesion:
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    radius = float(np.sqrt(((xs - center[0]) ** 2 + (ys - center[1]) ** 2).max()))
    return SynthLesion(kind, shape, pathology, box, center, radius, mask)


def _film_label(rng: np.random.Generator, image: np.ndarray, breast: np.ndarray) -> None:
    """A bright patient-label sticker with dark 'letters', in the background (to be cropped away)."""
    height, width = image.shape
    lw, lh = int(width * rng.uniform(0.12, 0.2)), int(height * rng.uniform(0.04, 0.07))
    for _ in range(20):
        x0 = int(rng.integers(width - lw - 2))
        y0 = int(rng.choice([rng.integers(2, height // 6), rng.integers(5 * height // 6, height - lh - 2)]))
        if not breast[max(0, y0 - 4) : y0 + lh + 4, max(0, x0 - 4) : x0 + lw + 4].any():
            image[y0 : y0 + lh, x0 : x0 + lw] = rng.uniform(0.8, 0.95)
            step = max(3, lw // 8)
            for k in range(1, 7):
                lx = x0 + k * step
                image[y0 + lh // 4 : y0 + 3 * lh // 4, lx : lx + max(1, step // 2)] = 0.3
            return


def generate_case(
    seed: int,
    pathology: str,
    view: str = "CC",
    laterality: str = "L",
    height: int = 512,
    width: int = 384,
    bits: int = 8,
) -> SynthCase:
    """Generate one synthetic mammogram.

    Args:
        seed: the whole case is a function of the seed (and the other arguments).
        pathology: ``normal`` (no lesion), ``benign`` (round/oval mass and/or coarse
            calcifications) or ``malignant`` (irregular/spiculated mass and/or fine clustered
            microcalcifications).
        view: ``CC`` or ``MLO`` (MLO adds the pectoral muscle).
        laterality: ``L`` (chest wall at the left edge) or ``R`` (mirrored).
        height, width: image size in pixels.
        bits: 8 (uint8) or 16 (uint16, full 16-bit range).

    Returns:
        A :class:`SynthCase` with pixels, the breast mask and the lesions with their masks.
    """
    if pathology not in PATHOLOGIES:
        raise ValueError(f"pathology must be one of {PATHOLOGIES}, got {pathology!r}")
    if view not in ("CC", "MLO") or laterality not in ("L", "R") or bits not in (8, 16):
        raise ValueError(f"bad view/laterality/bits: {view!r}, {laterality!r}, {bits!r}")
    rng = np.random.default_rng(seed)
    breast, inside = _breast_silhouette(rng, height, width, view)
    depth = inside.max()
    density_level = rng.uniform(0.0, 1.0)
    density = "ABCD"[min(3, int(density_level * 4))]

    texture = power_law_noise(rng, (height, width), beta=rng.uniform(2.8, 3.2))
    # Glandular tissue concentrates behind the nipple and fades to fat near the skin.
    fade = np.clip(inside / (0.25 * depth + 1e-6), 0, 1)
    glandular = np.clip(texture * 0.5 + (density_level - 0.5), -1, 1.5) * fade
    image = np.where(breast, 0.38 + 0.16 * glandular + 0.05 * fade, 0.0).astype(np.float32)
    skin = breast & (inside <= max(1.5, height / 300))
    image[skin] += 0.12
    if view == "MLO":
        pectoral = _pectoral(rng, height, width) & breast
        image[pectoral] = 0.72 + 0.04 * texture[pectoral]

    scale = float(height)
    lesions: list[SynthLesion] = []
    if pathology != "normal":
        kinds = rng.choice(["mass", "calcification", "both"], p=[0.55, 0.3, 0.15])
        if kinds in ("mass", "both"):
            lesions.append(_mass(rng, image, inside, pathology, scale))
        if kinds in ("calcification", "both"):
            lesions.append(_calcifications(rng, image, inside, pathology, scale))
    image = np.where(breast, image, 0.0)
    if rng.random() < 0.5:
        _film_label(rng, image, breast)
    image += rng.normal(0, 0.01, size=image.shape).astype(np.float32) + 0.03
    image = cv2.GaussianBlur(image, (0, 0), 0.5)

    top = 65535 if bits == 16 else 255
    pixels = np.clip(image * top, 0, top).round().astype(np.uint16 if bits == 16 else np.uint8)
    if laterality == "R":
        pixels, breast = pixels[:, ::-1].copy(), breast[:, ::-1].copy()
        lesions = [_mirror(lesion, width) for lesion in lesions]
    return SynthCase(pixels, breast, lesions, pathology, view, laterality, density)


def _mirror(lesion: SynthLesion, width: int) -> SynthLesion:
    x0, y0, x1, y1 = lesion.box
    return SynthLesion(
        lesion.kind,
        lesion.shape,
        lesion.pathology,
        (width - x1, y0, width - x0, y1),
        (width - 1 - lesion.center[0], lesion.center[1]),
        lesion.radius,
        lesion.mask[:, ::-1].copy(),
    )
