"""Breast region: segmentation, bounding box and which side the chest wall is on."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

_WORK_SIDE = 256  # segmentation runs on a copy this size: fast and plenty for a silhouette


def breast_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean mask of the breast: Otsu threshold, largest connected component, holes filled.

    Film labels, markers and scanner noise are separate components and are dropped. Works on
    uint8 and uint16; a constant image yields an all-True mask (nothing to crop).
    """
    height, width = pixels.shape
    small = breast_mask_small(pixels)
    return cv2.resize(small.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0


def breast_mask_small(pixels: np.ndarray) -> np.ndarray:
    """:func:`breast_mask` at working resolution (longest side 256): cheap for 30-megapixel DICOMs."""
    height, width = pixels.shape
    scale = _WORK_SIDE / max(height, width)
    small = cv2.resize(
        pixels, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small.astype(np.float32), (5, 5), 0)
    lo, hi = float(small.min()), float(small.max())
    if hi - lo < 1e-6:
        return np.ones(small.shape, dtype=bool)
    grey = ((small - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    threshold, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu splits tissue from dense tissue when the background is tiny; cap it low so fatty breast stays in.
    foreground = grey > min(threshold, 40)
    foreground = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.ones(small.shape, dtype=bool)
    sizes = ndimage.sum(foreground, labels, index=range(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def breast_bbox(
    mask: np.ndarray, margin: float = 0.02, image_hw: tuple[int, int] | None = None
) -> tuple[int, int, int, int]:
    """Half-open box ``(x0, y0, x1, y1)`` around the mask, grown by ``margin`` of the image size.

    ``image_hw``: the full image size when ``mask`` is a downscaled mask (box scaled up to it).
    """
    m_height, m_width = mask.shape
    height, width = image_hw or mask.shape
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return 0, 0, width, height
    sy, sx = height / m_height, width / m_width
    y0, y1 = np.argmax(rows) * sy, (m_height - np.argmax(rows[::-1])) * sy
    x0, x1 = np.argmax(cols) * sx, (m_width - np.argmax(cols[::-1])) * sx
    pad_y, pad_x = margin * height, margin * width
    return (
        max(0, int(np.floor(x0 - pad_x))),
        max(0, int(np.floor(y0 - pad_y))),
        min(width, int(np.ceil(x1 + pad_x))),
        min(height, int(np.ceil(y1 + pad_y))),
    )


def chest_wall_side(mask: np.ndarray) -> str:
    """``left`` or ``right``: the side where the breast touches the image edge more (the chest wall)."""
    left = mask[:, : max(1, mask.shape[1] // 20)].sum()
    right = mask[:, -max(1, mask.shape[1] // 20) :].sum()
    if left == right:  # fall back on where the tissue mass is
        half = mask.shape[1] // 2
        return "left" if mask[:, :half].sum() >= mask[:, half:].sum() else "right"
    return "left" if left > right else "right"
