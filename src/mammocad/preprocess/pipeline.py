"""Turn one decoded mammogram into a model input, remembering the geometry to undo it.

Full mode: window to [0, 1] → breast crop (background and film labels zeroed) → flip so the chest
wall is on ``flip_to`` → CLAHE → resize → output bit depth. ROI mode: window → mass-centred crop
(``roi.roi_box``) → flip → CLAHE → resize. :class:`Geometry` maps anything drawn on the output
(a heatmap, a point) back onto the original image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from mammocad.data.images import MammoImage
from mammocad.preprocess.breast import breast_bbox, breast_mask_small, chest_wall_side
from mammocad.preprocess.config import PreprocessConfig
from mammocad.preprocess.roi import Box, crop_padded, resize_image, resize_mask, roi_box


@dataclass(frozen=True)
class Geometry:
    """Where the output came from: ``crop`` (x0, y0, x1, y1) in original pixels (may extend past the
    image for padded ROIs), then a horizontal ``flipped`` mirror, then a resize to ``output_hw``."""

    original_hw: tuple[int, int]
    crop: Box
    flipped: bool
    output_hw: tuple[int, int]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a point of the output (pixel centres) to original image coordinates."""
        x0, y0, x1, y1 = self.crop
        out_h, out_w = self.output_hw
        cx = (x + 0.5) * (x1 - x0) / out_w - 0.5
        cy = (y + 0.5) * (y1 - y0) / out_h - 0.5
        if self.flipped:
            cx = (x1 - x0) - 1 - cx
        return x0 + cx, y0 + cy

    def map_to_original(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resample a map on the output grid (any size, e.g. a 7x7 CAM) onto the original image grid.

        Outside the crop the result is ``fill``. Bilinear resampling; returns float32.
        """
        x0, y0, x1, y1 = self.crop
        height, width = self.original_hw
        crop = cv2.resize(array.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        if self.flipped:
            crop = crop[:, ::-1]
        out = np.full((height, width), fill, dtype=np.float32)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        out[sy0:sy1, sx0:sx1] = crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        return out

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Preprocessed:
    """A model-ready image (uint8 or uint16), its mask (uint8 0/255 or None) and its geometry."""

    pixels: np.ndarray
    mask: np.ndarray | None
    geometry: Geometry


def to_unit(image: MammoImage, config: PreprocessConfig, region: np.ndarray | None = None) -> np.ndarray:
    """Native pixels → float32 in [0, 1] per ``config.window``."""
    return _window(image.pixels, image.max_value, config, region)


def _window(pixels: np.ndarray, max_value: int, config: PreprocessConfig, region: np.ndarray | None) -> np.ndarray:
    values = pixels.astype(np.float32)
    if config.window == "percentile":
        sample = values[region] if region is not None and region.any() else values
        lo, hi = np.percentile(sample, [0.5, 99.5])
        return np.clip((values - lo) / max(float(hi - lo), 1e-6), 0, 1)
    return values * (1.0 / float(max_value))


def _finish(
    unit: np.ndarray, mask: np.ndarray | None, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """CLAHE, resize and bit depth: the steps both modes share."""
    top = 65535 if config.output_bits == 16 else 255
    dtype = np.uint16 if config.output_bits == 16 else np.uint8
    pixels = np.rint(unit * top).astype(dtype)
    if config.clahe:
        clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
        pixels = clahe.apply(pixels)
    pixels = resize_image(pixels, config.image_size)
    out_mask = None
    if mask is not None:
        out_mask = np.where(resize_mask(mask.astype(np.uint8), config.image_size) > 0, 255, 0).astype(np.uint8)
    return pixels, out_mask


def _should_flip(breast: np.ndarray, config: PreprocessConfig) -> bool:
    # Content decides, not the laterality tag: which edge the chest wall touches is what the model
    # sees, and display conventions for L/R differ between datasets.
    return config.flip_to is not None and chest_wall_side(breast) != config.flip_to


def _working_size(crop_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[int, int]:
    """Shrink a crop to at most WORK_FACTOR x the output before the per-pixel steps.

    A 30-megapixel DICOM is reduced to ~0.2 MP before windowing and CLAHE: the output is 224², so
    full-resolution work is wasted, and CLAHE's tiles keep the same share of the breast.
    """
    factor = min(1.0, WORK_FACTOR * max(output_hw[0] / crop_hw[0], output_hw[1] / crop_hw[1]))
    return max(1, round(crop_hw[0] * factor)), max(1, round(crop_hw[1] * factor))


WORK_FACTOR = 2.0


def preprocess_image(image: MammoImage, config: PreprocessConfig, mask: np.ndarray | None = None) -> Preprocessed:
    """Full-mode preprocessing of one image (see module doc). ``mask`` is aligned with the image."""
    height, width = image.pixels.shape
    small = breast_mask_small(image.pixels)
    crop: Box = breast_bbox(small, image_hw=(height, width)) if config.crop_breast else (0, 0, width, height)
    x0, y0, x1, y1 = crop
    work_hw = _working_size((y1 - y0, x1 - x0), config.image_size)
    pixels = resize_image(image.pixels[y0:y1, x0:x1], work_hw)
    # The low-resolution breast mask, cut to the same crop and brought to the working size.
    sy, sx = small.shape[0] / height, small.shape[1] / width
    small_crop = small[
        int(y0 * sy) : max(int(y0 * sy) + 1, int(np.ceil(y1 * sy))),
        int(x0 * sx) : max(int(x0 * sx) + 1, int(np.ceil(x1 * sx))),
    ]
    # Bilinear then threshold: a smooth skin edge instead of the low-resolution mask's stairs.
    breast = cv2.resize(small_crop.astype(np.float32), work_hw[::-1], interpolation=cv2.INTER_LINEAR) > 0.5
    unit = _window(pixels, image.max_value, config, breast)
    if config.crop_breast:
        unit = np.where(breast, unit, np.float32(0.0))  # film labels and markers inside the box go too
    mask_crop = resize_mask(mask[y0:y1, x0:x1].astype(np.uint8), work_hw) if mask is not None else None
    flipped = _should_flip(breast, config)
    if flipped:
        unit = unit[:, ::-1]
        mask_crop = mask_crop[:, ::-1] if mask_crop is not None else None
    out_pixels, out_mask = _finish(np.ascontiguousarray(unit), mask_crop, config)
    return Preprocessed(out_pixels, out_mask, Geometry((height, width), crop, flipped, config.image_size))


def _upsample(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0


def preprocess_roi(
    image: MammoImage, config: PreprocessConfig, lesion_box: Box, mask: np.ndarray | None = None
) -> Preprocessed:
    """ROI-mode preprocessing: a ``max(min, w) × max(h, min)`` crop centred on ``lesion_box``."""
    height, width = image.pixels.shape
    small = breast_mask_small(image.pixels)
    box = roi_box(lesion_box, (height, width), config.roi_min_size)
    raw = crop_padded(image.pixels, box)
    work_hw = _working_size(raw.shape, config.image_size)
    region = resize_mask(crop_padded(_upsample(small, (height, width)), box).astype(np.uint8), work_hw) > 0
    crop = _window(resize_image(raw, work_hw), image.max_value, config, region)
    mask_crop = resize_mask(crop_padded(mask, box).astype(np.uint8), work_hw) if mask is not None else None
    flipped = _should_flip(small, config)
    if flipped:
        crop = crop[:, ::-1]
        mask_crop = mask_crop[:, ::-1] if mask_crop is not None else None
    pixels, out_mask = _finish(np.ascontiguousarray(crop), mask_crop, config)
    return Preprocessed(pixels, out_mask, Geometry((height, width), box, flipped, config.image_size))
