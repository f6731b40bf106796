"""Turn one decoded mammogram into a model input, remembering the geometry to undo it.

Full mode: window to [0, 1] → breast crop (background and film labels faded to zero by a soft
breast mask) → flip so the chest wall is on ``flip_to`` (content first, laterality tag when the
content is ambiguous) → CLAHE (8-bit) → resize → output bit depth. ROI mode: window → mass-centred crop
(``roi.roi_box``) → flip → CLAHE → resize. :class:`Geometry` maps anything drawn on the output
(a heatmap, a point) back onto the original image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

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

    def to_original(
        self, points_or_map: np.ndarray | float, y: float | None = None
    ) -> np.ndarray | tuple[float, float]:
        """Undo crop, flip and resize for points or for a map.

        - ``to_original(x, y)``: one output point -> ``(x, y)`` in original pixels;
        - an array of shape ``(..., 2)`` of ``(x, y)`` output points -> the same shape, original pixels;
        - any other 2-D array (a heatmap on the output grid, any resolution) -> :meth:`map_to_original`.
        """
        if y is not None:
            (ox, oy) = self.points_to_original(np.array([float(points_or_map), float(y)]))
            return float(ox), float(oy)
        array = np.asarray(points_or_map)
        if array.ndim >= 1 and array.shape[-1] == 2 and not (array.ndim == 2 and array.shape == self.output_hw):
            return self.points_to_original(array)
        return self.map_to_original(array)

    def points_to_original(self, xy: np.ndarray) -> np.ndarray:
        """Output points ``(..., 2)`` as ``(x, y)`` (pixel-centre convention, like cv2.resize) -> original."""
        xy = np.asarray(xy, dtype=np.float64)
        x0, y0, x1, y1 = self.crop
        out_h, out_w = self.output_hw
        cx = (xy[..., 0] + 0.5) * (x1 - x0) / out_w - 0.5
        cy = (xy[..., 1] + 0.5) * (y1 - y0) / out_h - 0.5
        if self.flipped:
            cx = (x1 - x0) - 1 - cx
        return np.stack([x0 + cx, y0 + cy], axis=-1)

    def points_to_output(self, xy: np.ndarray) -> np.ndarray:
        """Original points ``(..., 2)`` as ``(x, y)`` -> output pixels (the inverse of :meth:`points_to_original`)."""
        xy = np.asarray(xy, dtype=np.float64)
        x0, y0, x1, y1 = self.crop
        out_h, out_w = self.output_hw
        cx, cy = xy[..., 0] - x0, xy[..., 1] - y0
        if self.flipped:
            cx = (x1 - x0) - 1 - cx
        return np.stack([(cx + 0.5) * out_w / (x1 - x0) - 0.5, (cy + 0.5) * out_h / (y1 - y0) - 0.5], axis=-1)

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

    def as_record(self) -> dict[str, int | bool]:
        """Flat columns for a table (``samples.parquet``); :meth:`from_record` reads them back."""
        return {
            "original_height": int(self.original_hw[0]),
            "original_width": int(self.original_hw[1]),
            "crop_x0": int(self.crop[0]),
            "crop_y0": int(self.crop[1]),
            "crop_x1": int(self.crop[2]),
            "crop_y1": int(self.crop[3]),
            "flipped": bool(self.flipped),
            "output_height": int(self.output_hw[0]),
            "output_width": int(self.output_hw[1]),
        }

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Geometry:
        """The geometry of a ``samples.parquet`` row (or any mapping with :meth:`as_record`'s keys)."""
        return cls(
            original_hw=(int(row["original_height"]), int(row["original_width"])),
            crop=(int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_x1"]), int(row["crop_y1"])),
            flipped=bool(row["flipped"]),
            output_hw=(int(row["output_height"]), int(row["output_width"])),
        )


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
    values *= 1.0 / float(max_value)  # in place: a full-size image must not need a second float copy
    return values


def _finish(
    unit: np.ndarray, mask: np.ndarray | None, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """CLAHE, resize and bit depth: the steps both modes share.

    CLAHE always runs on 8 bits. OpenCV's 16-bit CLAHE histograms 65,536 bins and floors the clip
    limit to 1 count per bin on small tiles, so the same clip limit barely changes an 8-bit source
    (MIAS) and over-equalises a sparse 16-bit one (CBIS-DDSM: 2,642 distinct levels). With
    ``output_bits=16`` the equalised image is scaled to 16 bits before the resize, whose averaging
    adds sub-8-bit detail; without CLAHE the 16-bit path keeps the native precision throughout.
    """
    if config.clahe:
        clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
        pixels = clahe.apply(np.rint(unit * 255.0).astype(np.uint8))
        if config.output_bits == 16:
            pixels = pixels.astype(np.uint16) * np.uint16(257)
    elif config.output_bits == 16:
        pixels = np.rint(unit * 65535.0).astype(np.uint16)
    else:
        pixels = np.rint(unit * 255.0).astype(np.uint8)
    pixels = resize_image(pixels, config.image_size)
    out_mask = None
    if mask is not None:
        out_mask = np.where(resize_mask(mask.astype(np.uint8), config.image_size) > 0, 255, 0).astype(np.uint8)
    return pixels, out_mask


def _should_flip(whole_breast: np.ndarray, config: PreprocessConfig, laterality: str | None) -> bool:
    # Content decides when it is clear, the laterality tag when it is not (see chest_wall_side);
    # the mask must cover the whole image, not a crop, for the tissue balance to mean anything.
    return config.flip_to is not None and chest_wall_side(whole_breast, laterality) != config.flip_to


def _working_size(crop_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[int, int]:
    """Shrink a crop to at most WORK_FACTOR x the output before the per-pixel steps.

    A 30-megapixel DICOM is reduced to ~0.2 MP before windowing and CLAHE: the output is 224², so
    full-resolution work is wasted, and CLAHE's tiles keep the same share of the breast.
    """
    factor = min(1.0, WORK_FACTOR * max(output_hw[0] / crop_hw[0], output_hw[1] / crop_hw[1]))
    return max(1, round(crop_hw[0] * factor)), max(1, round(crop_hw[1] * factor))


WORK_FACTOR = 2.0


def preprocess_image(
    image: MammoImage, config: PreprocessConfig, mask: np.ndarray | None = None, laterality: str | None = None
) -> Preprocessed:
    """Full-mode preprocessing of one image (see module doc).

    ``mask``: a lesion mask aligned with the image (any dtype, nonzero = lesion), cropped, flipped
    and resized with the image (nearest neighbour) into ``Preprocessed.mask`` (uint8 0/255).
    ``laterality`` (``L``/``R``, default ``image.laterality``) settles the flip when the content
    cannot. Returns the output pixels (uint8 or uint16 per ``config.output_bits``), mask, geometry.
    """
    height, width = image.pixels.shape
    small = breast_mask_small(image.pixels)
    crop: Box = breast_bbox(small, image_hw=(height, width)) if config.crop_breast else (0, 0, width, height)
    x0, y0, x1, y1 = crop
    work_hw = _working_size((y1 - y0, x1 - x0), config.image_size)
    pixels = resize_image(image.pixels[y0:y1, x0:x1], work_hw)
    alpha = _breast_alpha(small, (height, width), crop, work_hw)
    unit = _window(pixels, image.max_value, config, alpha > 0.5)
    if config.crop_breast:
        unit *= alpha  # film labels and markers inside the box go too, with a soft edge at the skin
    mask_crop = resize_mask(mask[y0:y1, x0:x1].astype(np.uint8), work_hw) if mask is not None else None
    flipped = _should_flip(small, config, laterality or image.laterality)
    if flipped:
        unit = unit[:, ::-1]
        mask_crop = mask_crop[:, ::-1] if mask_crop is not None else None
    out_pixels, out_mask = _finish(np.ascontiguousarray(unit), mask_crop, config)
    return Preprocessed(out_pixels, out_mask, Geometry((height, width), crop, flipped, config.image_size))


def _breast_alpha(small: np.ndarray, image_hw: tuple[int, int], box: Box, grid_hw: tuple[int, int]) -> np.ndarray:
    """The low-resolution breast mask as a soft weight in [0, 1] on the grid of ``box`` resized to ``grid_hw``.

    The mask is grown by one low-resolution pixel and blurred by about as much: a 256-pixel
    mask's outline is ragged where the skin fades out gradually, and cutting the image along it
    leaves visible stairs; a soft edge keeps the skin's own fall-off. Sampled exactly (an affine
    map, pixel centres aligned as in cv2.resize) and zero outside the image, so padded ROIs work.
    """
    grown = cv2.dilate(small.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), sigmaX=1.0)
    height, width = image_hw
    x0, y0, x1, y1 = box
    grid_h, grid_w = grid_hw
    sx, sy = small.shape[1] / width, small.shape[0] / height
    step_x, step_y = (x1 - x0) / grid_w, (y1 - y0) / grid_h
    # grid pixel u -> original x = x0 + (u + 0.5) * step - 0.5 -> small (x + 0.5) * s - 0.5
    matrix = np.array(
        [[step_x * sx, 0.0, (x0 + 0.5 * step_x) * sx - 0.5], [0.0, step_y * sy, (y0 + 0.5 * step_y) * sy - 0.5]]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(soft, matrix, (grid_w, grid_h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def preprocess_roi(
    image: MammoImage,
    config: PreprocessConfig,
    lesion_box: Box,
    mask: np.ndarray | None = None,
    laterality: str | None = None,
) -> Preprocessed:
    """ROI-mode preprocessing: a ``max(min, w) × max(h, min)`` crop centred on ``lesion_box``.

    ``lesion_box`` is ``(x0, y0, x1, y1)`` in image pixels (half-open); ``mask`` and ``laterality``
    as for :func:`preprocess_image`. The crop is padded with black where it leaves the image.
    """
    height, width = image.pixels.shape
    small = breast_mask_small(image.pixels)
    box = roi_box(lesion_box, (height, width), config.roi_min_size)
    raw = crop_padded(image.pixels, box)
    work_hw = _working_size(raw.shape, config.image_size)
    region = _breast_alpha(small, (height, width), box, work_hw) > 0.5
    crop = _window(resize_image(raw, work_hw), image.max_value, config, region)
    mask_crop = resize_mask(crop_padded(mask, box).astype(np.uint8), work_hw) if mask is not None else None
    flipped = _should_flip(small, config, laterality or image.laterality)
    if flipped:
        crop = crop[:, ::-1]
        mask_crop = mask_crop[:, ::-1] if mask_crop is not None else None
    pixels, out_mask = _finish(np.ascontiguousarray(crop), mask_crop, config)
    return Preprocessed(pixels, out_mask, Geometry((height, width), box, flipped, config.image_size))
