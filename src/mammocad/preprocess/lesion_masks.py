"""A lesion's mask and box on the original image grid, from whatever the manifest gives.

Sources differ: some ship mask files (CBIS-DDSM, INbreast outlines drawn at import), MIAS gives a
centre and radius, others only a box. Each sample gets one mask (or None) and, in roi mode, one box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammocad.data.images import read_image
from mammocad.data.manifest import Lesion, resolve_path
from mammocad.data.masks import Box, mask_bounding_box
from mammocad.errors import DatasetError


def read_mask(dataset_dir: Path, value: str, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask file ``value`` (relative to the dataset), aligned to an image of ``shape``."""
    pixels = read_image(resolve_path(dataset_dir, value)).pixels
    # Half the mask's own maximum: 0/1 and 0/255 masks alike, and the ringing that JPEG copies of
    # masks (the Kaggle CBIS-DDSM re-release) put around the edge stays outside.
    mask = pixels > pixels.max() / 2
    if mask.shape != shape:
        # Source masks can be off by a few pixels (CBIS-DDSM); align them to the image grid.
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def drawn_mask(lesion: Lesion, shape: tuple[int, int]) -> np.ndarray | None:
    """A mask from geometry alone: the MIAS circle, else the box; None without either."""
    mask = np.zeros(shape, dtype=np.uint8)
    if lesion.radius is not None and lesion.center_x is not None and lesion.center_y is not None:
        cv2.circle(mask, (round(lesion.center_x), round(lesion.center_y)), round(lesion.radius), 1, -1)
    elif lesion.has_box:
        mask[int(lesion.y0) : int(lesion.y1), int(lesion.x0) : int(lesion.x1)] = 1
    else:
        return None
    return mask > 0


def lesion_mask(dataset_dir: Path, lesion: Lesion, shape: tuple[int, int]) -> np.ndarray | None:
    """One lesion's mask: its own file, else drawn from its geometry; None without either."""
    if lesion.mask_path:
        return read_mask(dataset_dir, lesion.mask_path, shape)
    return drawn_mask(lesion, shape)


def union_mask(
    dataset_dir: Path, row: dict[str, Any], lesions: list[Lesion], shape: tuple[int, int]
) -> np.ndarray | None:
    """The image's lesion mask: the manifest's union mask, else the union of the lesions' own."""
    if isinstance(row.get("mask_path"), str) and row["mask_path"]:
        return read_mask(dataset_dir, row["mask_path"], shape)
    masks = [m for m in (lesion_mask(dataset_dir, lesion, shape) for lesion in lesions) if m is not None]
    return np.logical_or.reduce(masks) if masks else None


def lesion_box(lesion: Lesion, mask: np.ndarray | None, shape: tuple[int, int], item: str) -> Box:
    """The lesion's box clipped to the image: its own, else its mask's extent, else its centre.

    Raises :class:`~mammocad.errors.DatasetError` naming ``item`` when none lies inside the image.
    """
    height, width = shape
    if lesion.has_box:
        x0, y0 = max(0, int(lesion.x0)), max(0, int(lesion.y0))
        x1, y1 = min(width, int(lesion.x1)), min(height, int(lesion.y1))
        if x1 > x0 and y1 > y0:
            return x0, y0, x1, y1
        raise DatasetError(f"{item}: lesion box {lesion.x0, lesion.y0, lesion.x1, lesion.y1} is outside the image")
    box = mask_bounding_box(mask) if mask is not None else None
    if box is not None:
        return box
    if lesion.center_x is not None and lesion.center_y is not None:
        cx, cy = round(lesion.center_x), round(lesion.center_y)
        if 0 <= cx < width and 0 <= cy < height:
            return cx, cy, cx + 1, cy + 1
    raise DatasetError(f"{item}: lesion has no location inside the image")


__all__ = ["drawn_mask", "lesion_box", "lesion_mask", "read_mask", "union_mask"]
