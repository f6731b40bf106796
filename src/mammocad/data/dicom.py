"""DICOM reading done right for mammography.

- modality LUT (rescale slope/intercept, or a Modality LUT table), then the VOI LUT table or the
  window (LINEAR, LINEAR_EXACT or SIGMOID) when present and ``apply_voi`` is set;
- the result is mapped onto ``[0, max_value]`` with ``max_value = 2**BitsStored - 1`` (BitsStored
  clamped to 8..16), using the *nominal* output range of the last LUT (never the image's own
  min/max), so the same acquisition always maps the same way; stored values of an unsigned image
  without any LUT are kept exactly;
- MONOCHROME1 inverted so dense tissue is bright, as in every other format;
- 16-bit values kept (uint16) until preprocessing chooses the conversion;
- RLE, JPEG (baseline, extended, lossless, LS, 2000) decoded through pydicom's pixel backends and
  pylibjpeg; any failure of theirs, Rust panics included, is an ImageReadError for that file;
- refused from the header when over the decode budget (see :mod:`mammocad.data.decode_budget`); only the
  first frame of a multi-frame file is decoded, and the LUTs run on row blocks, so a decode needs
  the file, one frame and its output, not float64 copies of the image. What the header cannot
  vouch for is checked too: a JPEG/JPEG-LS/JPEG 2000 frame whose own header declares a larger image
  than Rows x Columns is refused before a decoder allocates it, and a deflated dataset is inflated
  (and discarded) with a cap at the budget before pydicom inflates it whole;
- laterality and view read from tags.

Patient identifiers (name, ID, birth date...) are never returned, logged or put into errors: only
the tags listed in ``_PIXEL_TAGS``/``_HEADER_TAGS`` are parsed at all (``specific_tags``), so an
identifier cannot leak through a value, a warning or an exception message; ``extra`` carries only
acquisition facts.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammocad.data.decode_budget import MIB, check_decode_budget, decode_budget_mb, decoder_failures, format_mib
from mammocad.data.pixels import CHUNK_PIXELS as _CHUNK_PIXELS  # module-level: LUT blocks read it at call time
from mammocad.data.pixels import ImageInfo, MammoImage, check_size, to_grey
from mammocad.defaults import DEFAULT_MAX_PIXELS
from mammocad.errors import ImageReadError

# Acquisition facts safe to carry along; nothing here identifies a person.
_SAFE_TAGS = ("Modality", "PhotometricInterpretation", "BitsStored", "Manufacturer", "PresentationIntentType")

# What the size/completeness probe needs.
_HEADER_TAGS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "NumberOfFrames",
    "PixelRepresentation",
)

# Everything decoding, the LUTs, laterality/view and ``extra`` need -- and nothing else.
_PIXEL_TAGS = (
    *_HEADER_TAGS,
    *_SAFE_TAGS,
    "HighBit",
    "PlanarConfiguration",
    "PixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "ImageLaterality",
    "Laterality",
    "FrameLaterality",
    "ViewPosition",
    "ViewCodeSequence",
    "PatientOrientation",
)

# Encapsulated (compressed) pixel data ends with a Sequence Delimitation Item, always little endian.
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_TAIL_BYTES = 1 << 16

# Codes seen in ViewPosition (and, in CBIS-DDSM, misplaced in PatientOrientation).
_VIEW_CODES = {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV", "RCC", "LCC"}


def _open(path: Path, stop_before_pixels: bool, tags: tuple[str, ...], budget_mb: float | None = None) -> Any:
    """Parse only ``tags`` (plus the file meta); every failure becomes an :class:`ImageReadError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _check_deflated(path, budget_mb)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, specific_tags=list(tags))
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from exc
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(path, "is a directory, not an image file") from exc
    except Exception as exc:  # the parser raises many types on damaged files; the message is what matters
        raise ImageReadError(path, f"DICOM header is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def _check_deflated(path: Path, budget_mb: float | None) -> None:
    """Refuse a Deflated Explicit VR dataset that inflates to more than the decode budget.

    pydicom inflates the whole dataset into memory when it opens such a file: 64 MB of deflate
    stream can declare 64 GB. Other transfer syntaxes, and files that are not DICOM at all, pass
    (``dcmread`` reports those).
    """
    try:
        from pydicom.filereader import _read_file_meta_info, read_preamble
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        with path.open("rb") as handle:
            read_preamble(handle, False)
            if _read_file_meta_info(handle).get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return
            budget = decode_budget_mb(budget_mb)
            inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
            while chunk := handle.read(MIB):
                while chunk:
                    total += len(inflater.decompress(chunk, 16 * MIB))
                    chunk = inflater.unconsumed_tail
                    if total > budget * MIB:
                        raise ImageReadError(
                            path,
                            f"too large to decode: ~{format_mib(total)}+ MB needed > budget {budget:,.0f} MB (deflated)",
                        )
    except ImageReadError:
        raise
    except Exception:  # not DICOM, damaged meta, or a pydicom without these helpers: dcmread decides
        return


def _codestream_size(frame: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) a JPEG, JPEG-LS or JPEG 2000 frame declares in its own header."""
    if frame[:2] == b"\xff\xd8":
        from pydicom.pixels.utils import _get_jpg_parameters

        info = _get_jpg_parameters(frame)
        return (int(info["width"]), int(info["height"]), int(info.get("components", 1))) if "width" in info else None
    at = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # JPEG 2000: SOC then SIZ (maybe inside JP2 boxes)
    if at < 0 or len(frame) < at + 42:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[at + 8 : at + 24])
    (components,) = struct.unpack(">H", frame[at + 40 : at + 42])
    return xsiz - xosiz, ysiz - yosiz, components


def _check_codestream(path: Path, ds: Any, rows: int, cols: int, samples: int, frames: int) -> None:
    """Refuse compressed pixel data whose frame declares more pixels than the DICOM header: decoders
    allocate what the codestream says, and the header is what the budget was checked against."""
    try:
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
        size = _codestream_size(bytes(frame[:65536]))
    except Exception:  # unparsable: the decoder will say what is wrong
        return
    if size is None:
        return
    width, height, components = size
    if width * height * max(1, components) > rows * cols * max(1, samples):
        raise ImageReadError(
            path,
            f"compressed pixel data declares a {width}x{height} image with {components} component(s), "
            f"larger than the header's {cols}x{rows}",
        )


def _transfer_syntax(ds: Any, path: Path) -> Any:
    """The file's transfer syntax UID (None when absent); a UID that is not a transfer syntax (a
    damaged meta group) is an :class:`ImageReadError`, not pydicom's ValueError later."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and not syntax.is_transfer_syntax:
        raise ImageReadError(path, f"DICOM transfer syntax {str(syntax)[:64]!r} is not a known transfer syntax")
    return syntax


def _encapsulated_is_truncated(path: Path) -> bool:
    """True when compressed pixel data lacks its closing delimiter (the file was cut short)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    return _SEQUENCE_DELIMITER not in tail


def is_encapsulated(path: str | Path) -> bool:
    """True when the file's transfer syntax compresses its pixel data (RLE, JPEG, JPEG 2000...).

    Reads the file meta group only; an unreadable one counts as compressed (the caller decodes, and
    the decode says what is wrong)."""
    from pydicom.filereader import read_file_meta_info

    try:
        syntax = read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:
        return True
    return syntax is None or not syntax.is_transfer_syntax or bool(syntax.is_encapsulated)


def probe_dicom(path: str | Path, budget_mb: float | None = None) -> ImageInfo:
    """Read the header only and check the pixel data is plausibly complete (see :func:`_probe_dicom`).

    Any failure inside pydicom (a damaged element it cannot convert raises ``NotImplementedError``,
    ``ValueError``, ``KeyError``...) is an :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    with decoder_failures(path, "DICOM header"):
        return _probe_dicom(path, budget_mb)


def _probe_dicom(path: Path, budget_mb: float | None = None) -> ImageInfo:
    """Read the header only and check the pixel data is plausibly complete.

    Input: a DICOM file path. Output: :class:`ImageInfo` (size, bits stored, samples per pixel).
    Raises :class:`ImageReadError` for a file that is not DICOM, has no image size, or is truncated
    (uncompressed: shorter than the pixel data needs; compressed: no closing delimiter).
    """
    path = Path(path)
    ds = _open(path, stop_before_pixels=True, tags=_HEADER_TAGS, budget_mb=budget_mb)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_allocated = int(ds.get("BitsAllocated", 16))
        bits_stored = int(ds.get("BitsStored", bits_allocated))
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # missing or malformed size tags
        raise ImageReadError(path, f"DICOM has no usable image size tags ({type(exc).__name__}: {exc})") from exc
    syntax = _transfer_syntax(ds, path)
    if syntax is not None and syntax.is_encapsulated:
        if _encapsulated_is_truncated(path):
            raise ImageReadError(path, "DICOM pixel data is truncated (compressed data has no end delimiter)")
    else:
        expected = rows * cols * samples * frames * bits_allocated // 8
        if path.stat().st_size < expected:
            raise ImageReadError(
                path, f"DICOM pixel data is truncated: file has {path.stat().st_size} bytes, {expected} needed"
            )
    return ImageInfo("dicom", cols, rows, bits_stored, samples, samples * max(1, -(-bits_allocated // 8)))


def read_dicom(
    path: str | Path, apply_voi: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, budget_mb: float | None = None
) -> MammoImage:
    """Decode a DICOM mammogram to display-ready grey values (see :func:`_read_dicom`); any failure
    inside pydicom or a decoder plugin, panics included, is an :class:`ImageReadError`."""
    path = Path(path)
    with decoder_failures(path, "DICOM"):
        return _read_dicom(path, apply_voi, max_pixels, budget_mb)


def _read_dicom(path: Path, apply_voi: bool, max_pixels: int, budget_mb: float | None) -> MammoImage:
    """Decode a DICOM mammogram to display-ready grey values (see module docstring).

    Input: a DICOM file path; ``apply_voi`` applies the VOI LUT/window when the file has one;
    ``budget_mb`` the decode budget (see :func:`mammocad.data.decode_budget.decode_budget_mb`).
    Output: :class:`MammoImage` with uint8/uint16 ``pixels`` (bright = dense), ``max_value``,
    laterality/view from the tags, and ``extra`` (acquisition facts plus ``voi``: which VOI
    transform was applied: ``lut``, ``window`` or ``none``).
    Raises :class:`ImageReadError` naming the file for anything unreadable.
    """
    path = Path(path)
    ds = _open(path, stop_before_pixels=False, tags=_PIXEL_TAGS, budget_mb=budget_mb)
    if "PixelData" not in ds:
        syntax = _transfer_syntax(ds, path)
        if syntax is not None and syntax.is_encapsulated and _encapsulated_is_truncated(path):
            raise ImageReadError(path, "DICOM pixel data is truncated (compressed data has no end delimiter)")
        raise ImageReadError(path, "DICOM has no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    except Exception as exc:  # missing or malformed size tags
        raise ImageReadError(path, f"DICOM has no usable image size tags ({type(exc).__name__}: {exc})") from exc
    check_size(path, cols, rows, max_pixels)
    sample_bytes = max(1, -(-bits_allocated // 8))
    check_decode_budget(path, ImageInfo("dicom", cols, rows, bits_stored, samples, samples * sample_bytes), budget_mb)
    syntax = _transfer_syntax(ds, path)
    if syntax is not None and syntax.is_encapsulated:
        _check_codestream(path, ds, rows, cols, samples, frames)
    if syntax is not None and not syntax.is_encapsulated:
        expected = rows * cols * samples * frames * bits_allocated // 8
        if len(ds.PixelData) < expected:
            raise ImageReadError(path, f"DICOM pixel data is truncated: {len(ds.PixelData)} bytes, {expected} needed")
    with decoder_failures(path, "DICOM pixel data"):
        if frames > 1:
            ds.pixel_array_options(index=0)  # multi-frame: decode the first frame only
        raw = ds.pixel_array
        if raw.ndim == 3 and samples == 3:
            raw = to_grey(raw)  # secondary captures are sometimes stored as RGB
    del ds.PixelData  # the compressed/native bytes are not needed any more
    if raw.ndim != 2:
        raise ImageReadError(path, f"expected a grey image, got pixel array of shape {raw.shape}")

    try:
        pixels, max_value, voi = _display_values(raw, ds, apply_voi)
    except MemoryError:
        raise ImageReadError(path, "DICOM LUTs could not be applied: not enough memory") from None
    except Exception as exc:  # malformed LUT/window tags
        raise ImageReadError(path, f"DICOM LUT tags are invalid ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        pixels = (max_value - pixels).astype(pixels.dtype)
    extra = {tag: str(ds.get(tag)) for tag in _SAFE_TAGS if tag in ds}
    extra["voi"] = voi
    return MammoImage(
        pixels=np.ascontiguousarray(pixels),
        max_value=max_value,
        file_format="dicom",
        laterality=_laterality(ds),
        view=_view(ds),
        extra=extra,
    )


def _display_values(raw: np.ndarray, ds: Any, apply_voi: bool) -> tuple[np.ndarray, int, str]:
    """Apply the modality and VOI transforms; return (uint8/uint16 pixels, max_value, voi kind)."""
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels import apply_voi as apply_voi_table

    bits_stored = int(ds.get("BitsStored", raw.dtype.itemsize * 8))
    bits = max(8, min(16, bits_stored))
    top = (1 << bits) - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored_lo, stored_hi = (
        (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    )

    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    modality_lut = ds.get("ModalityLUTSequence")
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    use_lut = apply_voi and bool(ds.get("VOILUTSequence"))
    use_window = apply_voi and not use_lut and has_window

    # Fast path, and the common case (e.g. CBIS-DDSM): nothing to apply, keep the stored values exactly.
    untouched = not modality_lut and slope == 1 and intercept == 0 and not signed
    if untouched and not use_lut and not use_window and bits_stored == bits:
        return raw.astype(dtype, copy=False), top, "none"

    def transform(block: np.ndarray) -> tuple[np.ndarray, str]:
        # Element-wise throughout (rescale, LUT lookups, window), so row blocks give the same values
        # as the whole image at once, with float64 temporaries of a block instead of the image.
        if modality_lut:
            values = np.asarray(apply_modality_lut(block, ds), dtype=np.float64)
            out_lo, out_hi = 0.0, float((1 << int(modality_lut[0].LUTDescriptor[2])) - 1)
        else:
            values = block.astype(np.float64) * slope + intercept
            out_lo, out_hi = sorted((stored_lo * slope + intercept, stored_hi * slope + intercept))

        voi = "none"
        if use_lut:
            # The VOI LUT table is indexed by the (integer) modality output.
            values = np.asarray(apply_voi_table(np.rint(values).astype(np.int64), ds), dtype=np.float64)
            out_lo, out_hi = 0.0, float((1 << int(ds.VOILUTSequence[0].LUTDescriptor[2])) - 1)
            voi = "lut"
        elif use_window:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            windowed = window(values, center, width, function)
            if windowed is None:
                voi = "invalid window ignored"  # a bad window must not lose the image; stay on the modality range
            else:
                values, out_lo, out_hi = windowed, 0.0, 1.0
                voi = "window"

        if (out_lo, out_hi) != (0.0, float(top)):
            values = (values - out_lo) * (top / max(out_hi - out_lo, 1e-12))
        return np.rint(values).clip(0, top).astype(dtype), voi

    out = np.empty(raw.shape, dtype=dtype)
    voi = "none"
    rows = max(1, _CHUNK_PIXELS // max(1, raw[:1].size))
    for start in range(0, raw.shape[0], rows):
        out[start : start + rows], voi = transform(raw[start : start + rows])
    return out, top, voi


def _first(value: Any) -> float:
    """The first of a multi-valued window tag (alternatives are offered in order of preference)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0]
    return float(value)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray | None:
    """DICOM VOI window (PS3.3 C.11.2.1.2) mapped onto ``[0, 1]``; ``None`` for an invalid width.

    ``function`` is ``LINEAR`` (the default), ``LINEAR_EXACT`` or ``SIGMOID``.
    """
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None
    if width == 1:  # a threshold at the centre
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _laterality(ds: Any) -> str | None:
    for tag in ("ImageLaterality", "Laterality", "FrameLaterality"):
        value = str(ds.get(tag, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def _view(ds: Any) -> str | None:
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
    # CBIS-DDSM writes the view into PatientOrientation; accept it only when it is a view code.
    orientation = str(ds.get("PatientOrientation", "") or "").strip().upper()
    return orientation if orientation in _VIEW_CODES else None
