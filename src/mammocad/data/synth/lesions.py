"""Synthetic findings (SYNTHETIC, see :mod:`mammocad.data.synth.phantom`): where they may go in a
breast, and how masses and calcifications are drawn into its attenuation.

Benign: circumscribed round/oval masses with sharp margins and/or a few coarse "popcorn"
calcifications; malignant: irregular ill-defined or spiculated masses and/or a tight cluster of fine
pleomorphic microcalcifications. Every class also gets a few unannotated bright specks. Findings are
drawn on a LEFT breast (chest wall at x = 0); :func:`mirror_lesion` turns one into a right breast's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from mammocad.data.masks import mask_bounding_box

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


class Anatomy(Protocol):
    """What lesion placement reads of the drawn breast (the phantom's anatomy)."""

    breast: np.ndarray  # bool HxW
    depth: np.ndarray  # float32 HxW: distance to the skin in px (0 outside the breast)
    pectoral: np.ndarray | None  # bool HxW, MLO only
    gland: np.ndarray  # float32 HxW: fibroglandular share 0..1


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, through tanh (no overflow for large ``|x|``)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def draw_lesions(
    rng: np.random.Generator, pathology: str, anatomy: Anatomy, scale: float
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
    body = sigmoid((1.0 - distance) / (margin / 2.2)) * (0.75 + 0.25 * np.clip(1.0 - distance**2, 0.0, 1.0))
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
    box = mask_bounding_box(mask)
    if box is None:  # unreachable: the mask holds at least its centre pixel
        raise ValueError(f"synthetic {kind} lesion has an empty mask")
    radius = float(np.sqrt(((xs - center[0]) ** 2 + (ys - center[1]) ** 2).max())) + 0.5
    return SynthLesion(kind, shape, pathology, box, center, radius, mask)


def mirror_lesion(lesion: SynthLesion, width: int) -> SynthLesion:
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
