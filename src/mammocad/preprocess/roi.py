"""Mass-centred regions of interest (Li & Zwiggelaar (2024)): ``max(min, w) × max(h, min)`` around the lesion."""

from __future__ import annotations

import cv2
import numpy as np

from mammocad.parse import Box


def roi_box(lesion_box: Box, image_shape: tuple[int, int], min_size: int = 224) -> Box:
    """The ROI for a lesion: centred on its box, ``max(min_size, w) × max(h, min_size)``.

    Small lesions keep their context and shape; a box that would leave the image is shifted back
    inside. When the image itself is smaller than the ROI, the box extends past the image and
    :func:`extract_roi` pads it (zeros), so the lesion stays centred at the same scale.
    """
    x0, y0, x1, y1 = lesion_box
    height, width = image_shape
    roi_w, roi_h = max(min_size, x1 - x0), max(min_size, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - roi_w / 2), round(cy - roi_h / 2)
    if roi_w <= width:
        left = min(max(0, left), width - roi_w)
    if roi_h <= height:
        top = min(max(0, top), height - roi_h)
    return left, top, left + roi_w, top + roi_h


def crop_padded(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``box`` from a 2-D array, padding with zeros where the box leaves the array."""
    x0, y0, x1, y1 = box
    height, width = array.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0), dtype=array.dtype)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def resize_image(pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an image: area averaging when shrinking (no aliasing), bicubic when enlarging."""
    height, width = size_hw
    shrinking = pixels.shape[0] > height or pixels.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(pixels, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a mask with nearest neighbour so it stays binary."""
    height, width = size_hw
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def extract_roi(
    pixels: np.ndarray, mask: np.ndarray | None, box: Box, out_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop ``box`` (padding outside the image) and resize: image bicubic/area, mask nearest."""
    image = resize_image(crop_padded(pixels, box), out_size)
    roi_mask = resize_mask(crop_padded(mask, box), out_size) if mask is not None else None
    return image, roi_mask
