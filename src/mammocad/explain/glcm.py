"""GLCM variance texture maps (the Lesion image of Li & Zwiggelaar, 2024), vectorised.

The GLCM variance of a window is ``Σ_{m,n} (m − μ)² p(m, n)`` with ``μ = Σ m p(m, n)``: the variance of
the *first* grey level of the co-occurring pairs inside the window (both endpoints when the matrix is
symmetric). So it only needs, per window, the number of pairs and the sums of the first (and partner)
values and of their squares — box sums over the window, read from integral images in one vectorised
step per angle instead of building a levels × levels matrix for every pixel. The result equals
scikit-image's ``graycoprops(graycomatrix(window, [d], angles, levels, symmetric, normed=True),
"variance")`` averaged over the angles.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mammocad.errors import ConfigError

DEFAULT_ANGLES: tuple[float, ...] = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def quantise(image: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels ``0 .. levels-1`` of a 2-D image, as a uint8 array of the same shape.

    Args:
        image: 2-D uint8 (full range 0..255), uint16 (0..65535) or float image in [0, 1].
        levels: number of grey levels, 2 ≤ levels ≤ 256.

    Returns:
        uint8 (H, W): ``floor(v * levels / 256)`` for uint8, ``floor(v * levels / 65536)`` for uint16,
        ``min(floor(v * levels), levels - 1)`` for floats.

    Raises ConfigError for a bad ``levels``, ValueError for a non-2-D image, an unsupported dtype, or
    float values outside [0, 1] (NaN included).
    """
    levels = _check_levels(levels)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"quantise needs a 2-D image, got shape {image.shape}")
    if image.dtype == np.uint8:
        # v * levels ≤ 255 * 256 fits uint16; the shift is the exact floor of the division by 256
        return ((image.astype(np.uint16) * levels) >> 8).astype(np.uint8)
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * levels) >> 16).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        values = image.astype(np.float64, copy=False)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise ValueError("quantise needs float images in [0, 1] (finite); scale the image first")
        # v == 1.0 would give `levels`: clamp it into the top level
        return np.minimum(np.floor(values * levels), levels - 1).astype(np.uint8)
    raise ValueError(f"quantise supports uint8, uint16 or float images in [0, 1], got dtype {image.dtype}")


def glcm_variance_map(
    image: np.ndarray,
    window: int = 7,
    levels: int = 16,
    distance: int = 1,
    angles: Sequence[float] = DEFAULT_ANGLES,
    symmetric: bool = True,
) -> np.ndarray:
    """GLCM variance of the ``window`` × ``window`` neighbourhood of every pixel, averaged over ``angles``.

    Args:
        image: 2-D uint8, uint16 or float image in [0, 1]; quantised to ``levels`` grey levels (:func:`quantise`).
        window: odd side (≥ 3) of the square neighbourhood centred on each pixel.
        levels: grey levels of the co-occurrence matrix, 2 ≤ levels ≤ 256.
        distance: pixel-pair distance d ≥ 1, smaller than ``window``.
        angles: pair angles θ in radians; scikit-image's convention: the partner of (r, c) is
            ``(r + round(d sin θ), c + round(d cos θ))``, rounded half away from zero.
        symmetric: count each pair in both orders (scikit-image's ``symmetric=True``).

    Returns:
        float32 (H, W), the input's shape: the borders use a reflected copy of the image (``window // 2``
        pixels, reflect-101), so every window is full.

    Raises ConfigError for bad options, ValueError for a bad image.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise ConfigError(f"glcm window must be an odd integer ≥ 3, got {window!r}")
    if isinstance(distance, bool) or not isinstance(distance, (int, np.integer)) or not 1 <= distance < window:
        raise ConfigError(f"glcm distance must be an integer with 1 ≤ distance < window ({window}), got {distance!r}")
    angle_list = [float(a) for a in np.atleast_1d(np.asarray(angles, dtype=np.float64))]
    if not angle_list or not all(np.isfinite(angle_list)):
        raise ConfigError(f"glcm angles must be a non-empty sequence of finite radians, got {angles!r}")
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"glcm_variance_map needs a non-empty 2-D image, got shape {image.shape}")
    grey = quantise(image, levels)
    height, width = grey.shape
    pad = window // 2
    padded = np.pad(grey, pad, mode="reflect") if min(height, width) > 1 else np.pad(grey, pad, mode="edge")
    # integral images (exact in float64): sums[i, j] = Σ padded[:i, :j], likewise for the squares
    sums, squares = cv2.integral2(padded, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)

    total = np.zeros((height, width), dtype=np.float64)
    for angle in angle_list:
        d_row = _round_half_away(distance * np.sin(angle))
        d_col = _round_half_away(distance * np.cos(angle))
        # first elements of the pairs inside a window form a (window-|dr|) × (window-|dc|) rectangle; the
        # partners the same rectangle shifted by (dr, dc)
        rows, cols = window - abs(d_row), window - abs(d_col)
        first = (max(0, -d_row), max(0, -d_col))
        second = (max(0, d_row), max(0, d_col))
        count = float(rows * cols)
        first_sum = _box(sums, first, rows, cols, height, width)
        first_sq = _box(squares, first, rows, cols, height, width)
        if symmetric:
            # the symmetric matrix P + Pᵀ counts each pair twice, once with each endpoint first
            mean = (first_sum + _box(sums, second, rows, cols, height, width)) / (2 * count)
            moment = (first_sq + _box(squares, second, rows, cols, height, width)) / (2 * count)
        else:
            mean = first_sum / count
            moment = first_sq / count
        total += np.maximum(moment - mean * mean, 0.0)  # E[m²] − E[m]² can dip below 0 by rounding
    return (total / len(angle_list)).astype(np.float32)


def _box(integral: np.ndarray, offset: tuple[int, int], rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """(height, width) sums of the ``rows`` × ``cols`` rectangle at ``offset`` inside every window."""
    top, left = offset
    bottom, right = top + rows, left + cols
    return (
        integral[bottom : bottom + height, right : right + width]
        - integral[top : top + height, right : right + width]
        - integral[bottom : bottom + height, left : left + width]
        + integral[top : top + height, left : left + width]
    )


def _round_half_away(value: float) -> int:
    """Round half away from zero (scikit-image's C ``round``; Python's ``round`` rounds half to even)."""
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= 256:
        raise ConfigError(f"glcm levels must be an integer in [2, 256], got {levels!r}")
    return int(levels)
