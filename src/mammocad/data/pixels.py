"""What every image reader shares: the image types, the size check and colour handling.

:mod:`mammocad.data.images` (PGM, PNG, JPEG, TIFF, BMP) and :mod:`mammocad.data.dicom` both build on
this module (and on :mod:`mammocad.data.decode_budget`), so neither needs the other's internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammocad.errors import ImageReadError

#: Images smaller than this on either side are refused (no mammogram is that small).
MIN_SIDE = 8
#: Colour conversion and DICOM LUTs run on row blocks of this many pixels (float64: 8 MB a block).
CHUNK_PIXELS = 1 << 20
#: Side of the subsample :func:`colour_saturation` looks at.
COLOUR_SAMPLE_SIDE = 256


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image, found without decoding its pixels."""

    file_format: str
    width: int
    height: int
    bits_stored: int
    channels: int = 1
    #: Bytes per pixel the decoder allocates for its output (0: ``channels`` samples of
    #: ``bits_stored`` rounded up to whole bytes). Differs for 16-bit colour PNGs (Pillow reports
    #: them as 8-bit), palette PNGs (decoded to RGB), DICOM (BitsAllocated) and ASCII PGM.
    decode_bytes_per_pixel: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def bytes_per_pixel(self) -> int:
        """Bytes per pixel of the decoder's output array."""
        if self.decode_bytes_per_pixel:
            return self.decode_bytes_per_pixel
        return max(1, self.channels) * max(1, math.ceil(self.bits_stored / 8))


@dataclass
class MammoImage:
    """A decoded grey image with the acquisition facts later stages need.

    ``pixels`` is 2-D uint8 or uint16 in display orientation (bright = dense), with all DICOM
    LUTs applied; ``max_value`` is the largest value the bit depth allows.
    """

    pixels: np.ndarray
    max_value: int
    file_format: str
    laterality: str | None = None
    view: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image smaller than :data:`MIN_SIDE` on a side or with more than ``max_pixels`` pixels."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageReadError(path, f"image is {width}x{height} pixels, too small to be a mammogram")
    if width * height > max_pixels:
        raise ImageReadError(
            path, f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in the input's dtype, computed on row blocks: the float64 intermediates of a
    whole 60-megapixel image would take 2 GB, a block's take 8 MB (same values either way)."""
    weights = np.array([0.299, 0.587, 0.114])
    grey = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    rows = max(1, CHUNK_PIXELS // max(1, rgb.shape[1]))
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows, :, :3].astype(np.float32) @ weights
        grey[start : start + rows] = block.round()
    return grey


def colour_saturation(rgb: np.ndarray) -> float:
    """Mean HSV saturation of a subsample of an (H, W, 3) image, 0 for grey stored as colour."""
    step = max(1, max(rgb.shape[:2]) // COLOUR_SAMPLE_SIDE)
    sample = rgb[::step, ::step, :3].astype(np.float32)
    top, bottom = sample.max(axis=2), sample.min(axis=2)
    lit = top > (0.05 * (65535 if rgb.dtype == np.uint16 else 255))
    if not lit.any():
        return 0.0
    return float(((top - bottom) / np.maximum(top, 1e-6))[lit].mean())
