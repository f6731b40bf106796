"""The Lesion and Background images of the Lesion/Background interpretation (Li & Zwiggelaar, 2024).

The *Lesion* image is an ROI's GLCM variance texture map; the *lesion region* is the lesion mask when
one is known, else the Otsu region of the Lesion image; the *Background* image is the ROI inpainted over
that region. :mod:`mammocad.explain.lesion_background` swaps their cells into the ROI.

Otsu stays scikit-image's: the Lesion image is float32, which OpenCV's Otsu (8/16-bit only) cannot take
without quantising, and quantising changes the region.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

from mammocad.explain.glcm import glcm_variance_map


def lesion_image(roi: np.ndarray, window: int = 7, levels: int = 16) -> np.ndarray:
    """The Lesion image: the ROI's GLCM variance map (:func:`~mammocad.explain.glcm.glcm_variance_map`,
    ``window``, ``levels``) scaled to [0, 1] by its maximum.

    Args:
        roi: 2-D uint8, uint16 or float image in [0, 1].

    Returns:
        float32 (H, W) in [0, 1]; all zeros for a flat ROI.
    """
    texture = glcm_variance_map(roi, window=window, levels=levels)
    peak = float(texture.max())
    if peak <= 0.0:
        return np.zeros_like(texture)
    return (texture / peak).astype(np.float32)


def lesion_region(lesion: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The lesion region on the ROI grid.

    Args:
        lesion: 2-D Lesion image (H, W).
        mask: optional lesion mask (H, W), any dtype, > 0 = lesion.

    Returns:
        bool (H, W): ``mask > 0`` when a non-empty mask is given; else the Otsu threshold of the Lesion
        image, closed (7 × 7 ellipse: fills the gaps between textured pixels), dilated by one pixel so the
        region covers the texture's rim, and with its holes filled (a mass's variance peaks on its border).
        All False for a flat Lesion image.
    """
    lesion = np.asarray(lesion)
    if lesion.ndim != 2:
        raise ValueError(f"lesion_region needs a 2-D lesion image, got shape {lesion.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != lesion.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the lesion image's {lesion.shape}")
        region = mask > 0
        if region.any():
            return region
    from skimage.filters import threshold_otsu

    values = np.nan_to_num(lesion.astype(np.float32), nan=0.0)
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return np.zeros(lesion.shape, dtype=bool)  # flat: no texture, no lesion
    region = (values > threshold_otsu(values)).astype(np.uint8)
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    # the variance peaks on a mass's rim: fill what the rim encloses so the whole lesion is removed
    return ndimage.binary_fill_holes(region > 0)


def background_image(roi: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The Background image: the ROI with the region's content removed.

    Args:
        roi: 2-D uint8, uint16 or float image in [0, 1].
        region: bool-like (H, W), the pixels to remove.

    Returns:
        float32 (H, W) in [0, 1]: Telea inpainting (radius 5) of the 8-bit ROI inside the region, the ROI
        itself outside it (so cells away from the lesion are unchanged). A region covering the whole ROI
        leaves nothing to inpaint from: it is filled with the ROI's median.
    """
    grey = as_grey(roi, "roi")
    region = np.asarray(region)
    if region.shape != grey.shape:
        raise ValueError(f"region shape {region.shape} differs from the ROI's {grey.shape}")
    inside = region > 0
    if not inside.any():
        return grey.copy()
    if inside.all():
        return np.full_like(grey, float(np.median(grey)))
    grey8 = np.rint(grey * 255.0).astype(np.uint8)
    filled = cv2.inpaint(grey8, inside.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return np.where(inside, filled.astype(np.float32) / 255.0, grey).astype(np.float32)


def as_grey(image: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """float32 (H, W) in [0, 1] from (H, W) or (C, H, W) uint8/uint16/float (channels averaged)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3:
        if not 1 <= array.shape[0] <= 4:
            raise ValueError(f"{what} must be (H, W) or (C, H, W) with C ≤ 4 channels, got shape {array.shape}")
    elif array.ndim != 2:
        raise ValueError(f"{what} must be (H, W) or (C, H, W), got shape {array.shape}")
    if array.shape[-1] == 0 or array.shape[-2] == 0:
        raise ValueError(f"{what} is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"{what} has NaN or infinite values")
        values = np.clip(values, 0.0, 1.0)
    else:
        raise ValueError(f"{what} must be uint8, uint16 or float in [0, 1], got dtype {array.dtype}")
    if values.ndim == 3:
        values = values.mean(axis=0)
    return np.ascontiguousarray(values, dtype=np.float32)


def checked_override(image: np.ndarray, what: str, shape: tuple[int, int]) -> np.ndarray:
    """A caller's Lesion or Background image, converted like the ROI; ValueError when its shape differs."""
    values = as_grey(image, what)
    if values.shape != shape:
        raise ValueError(f"{what} image shape {values.shape} differs from the ROI's {shape}")
    return values


def mask_on_grid(mask: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """The mask as uint8 (0/1) on the ROI grid, nearest-neighbour resized when its shape differs."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]  # (1, H, W) masks
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {np.asarray(mask).shape}")
    binary = (np.nan_to_num(array.astype(np.float64)) > 0).astype(np.uint8)
    if binary.shape != shape:
        binary = cv2.resize(binary, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return binary
