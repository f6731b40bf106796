"""DICOM reading done right for mammography.

- modality LUT (rescale slope/intercept), then the VOI LUT or window when present;
- MONOCHROME1 inverted so dense tissue is bright, as in every other format;
- 16-bit values kept (uint16) until preprocessing chooses the conversion;
- RLE, JPEG (baseline, lossless, 2000) decoded through pydicom's pixel backends and pylibjpeg;
- laterality and view read from tags.

Patient identifiers (name, ID, birth date...) are never returned, logged or put into errors:
``extra`` carries only acquisition facts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammocad.data.images import DEFAULT_MAX_PIXELS, ImageInfo, MammoImage, _check_size
from mammocad.errors import ImageReadError

# Acquisition facts safe to carry along; nothing here identifies a person.
_SAFE_TAGS = ("Modality", "PhotometricInterpretation", "BitsStored", "Manufacturer", "PresentationIntentType")


def _open(path: Path, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(path, f"DICOM header is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def probe_dicom(path: str | Path) -> ImageInfo:
    """Read the header only and check the pixel data is plausibly complete."""
    path = Path(path)
    ds = _open(path, stop_before_pixels=True)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_allocated = int(ds.get("BitsAllocated", 16))
        bits_stored = int(ds.get("BitsStored", bits_allocated))
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, ValueError, TypeError) as exc:
        raise ImageReadError(path, f"DICOM has no usable image size tags ({exc})") from exc
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_compressed:
        expected = rows * cols * samples * frames * bits_allocated // 8
        if path.stat().st_size < expected:
            raise ImageReadError(
                path, f"DICOM pixel data is truncated: file has {path.stat().st_size} bytes, {expected} needed"
            )
    return ImageInfo("dicom", cols, rows, bits_stored, samples)


def read_dicom(path: str | Path, apply_voi: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> MammoImage:
    """Decode a DICOM mammogram to display-ready grey values (see module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    ds = _open(path, stop_before_pixels=False)
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM has no pixel data")
    _check_size(path, int(ds.Columns), int(ds.Rows), max_pixels)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoders raise many types; the message is what matters
        raise ImageReadError(path, f"DICOM pixel data could not be decoded ({type(exc).__name__}: {exc})") from exc
    if raw.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        raw = raw[0]  # multi-frame: first frame
    if raw.ndim != 2:
        raise ImageReadError(path, f"expected a grey image, got pixel array of shape {raw.shape}")

    bits_stored = int(ds.get("BitsStored", 16))
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float64)
    pixels, max_value = _to_unsigned(values, bits_stored)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = (max_value - pixels).astype(pixels.dtype)
    extra = {tag: str(ds.get(tag)) for tag in _SAFE_TAGS if tag in ds}
    return MammoImage(
        pixels=np.ascontiguousarray(pixels),
        max_value=max_value,
        file_format="dicom",
        laterality=_laterality(ds),
        view=_view(ds),
        extra=extra,
    )


def _to_unsigned(values: np.ndarray, bits_stored: int) -> tuple[np.ndarray, int]:
    """Map LUT output to uint8/uint16 without losing precision.

    Values already inside [0, 2^bits - 1] are kept as they are (the common case); anything else
    (negative Hounsfield-like output, rescaled floats) is shifted and scaled into that range.
    """
    bits = max(8, min(16, bits_stored))
    top = (1 << bits) - 1
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > top:
        values = (values - lo) * (top / max(hi - lo, 1e-9))
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.rint(values).clip(0, top).astype(dtype), top


def _laterality(ds) -> str | None:  # noqa: ANN001 - pydicom Dataset
    for tag in ("ImageLaterality", "Laterality", "FrameLaterality"):
        value = str(ds.get(tag, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _view(ds) -> str | None:  # noqa: ANN001 - pydicom Dataset
    value = str(ds.get("ViewPosition", "") or "").strip().upper()
    if value:
        return value
    # Mammography IODs code the view in ViewCodeSequence (e.g. "cranio-caudal").
    for item in ds.get("ViewCodeSequence", []) or []:
        meaning = str(item.get("CodeMeaning", "")).lower()
        if "cranio-caudal" in meaning:
            return "CC"
        if "medio-lateral oblique" in meaning:
            return "MLO"
    return None
