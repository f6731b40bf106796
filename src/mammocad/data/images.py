"""Read mammograms from any supported file format into one array type.

Formats are sniffed from the file's content, never its name: PGM/PPM (P2/P5), PNG, JPEG, TIFF,
BMP and DICOM. Every failure raises :class:`~mammocad.errors.ImageReadError` naming the file and
the reason (missing, empty, truncated, not an image, absurd size, too large to decode, or a
third-party decoder that failed in any way, Rust panics of the pylibjpeg plugins included).

Decode budget: every reader estimates from the header what decoding and preprocessing the image
will allocate (:func:`decode_estimate`) and refuses it, before allocating anything, when that is
over the budget (``budget_mb`` argument, else ``$MAMMOCAD_DECODE_BUDGET_MB``, else
:data:`DEFAULT_DECODE_BUDGET_MB`). A pixel count alone is no memory bound: a 60-megapixel 16-bit
RGB PNG decodes to 360 MB of samples, an 8-bit grey one to 60 MB. The budget lives in
:mod:`mammocad.data.decode_budget`, the image types in :mod:`mammocad.data.pixels` (both
re-exported here); DICOM decoding in :mod:`mammocad.data.dicom`.

Pixels keep their native depth (uint8 or uint16) until preprocessing converts them, and come with
``max_value`` so a later stage can normalise without guessing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from mammocad.data.decode_budget import (
    DECODE_BUDGET_ENV,
    IMPORT_GATE,
    MIB,
    NEVER_CAUGHT,
    WORK_BYTES_PER_PIXEL,
    DecodeGate,
    check_decode_budget,
    decode_budget_mb,
    decode_budget_override,
    decode_estimate,
    decoder_failures,
    too_large_error,
)
from mammocad.data.dicom import is_encapsulated, probe_dicom, read_dicom
from mammocad.data.pixels import MIN_SIDE, ImageInfo, MammoImage, check_size, colour_saturation, to_grey
from mammocad.defaults import DEFAULT_DECODE_BUDGET_MB, DEFAULT_MAX_PIXELS
from mammocad.errors import ImageReadError

# An ASCII PGM/PPM sample is parsed as a Python bytes token (~45 bytes) and an int64 (8).
_ASCII_PNM_BYTES_PER_SAMPLE = 56


def sniff_format(path: str | Path) -> str:
    """Return ``pgm``, ``png``, ``jpeg``, ``tiff``, ``bmp`` or ``dicom`` from the file's first bytes."""
    path = Path(path)
    head = _read_head(path, 132)
    return _format_from_head(path, head)


def _read_head(path: Path, n: int) -> bytes:
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        with path.open("rb") as handle:
            head = handle.read(n)
    except OSError as exc:
        raise ImageReadError(path, f"cannot be opened ({exc.strerror or exc})") from exc
    if not head:
        raise ImageReadError(path, "file is empty")
    return head


def _format_from_head(path: Path, head: bytes) -> str:
    if head[:2] in (b"P2", b"P5", b"P3", b"P6") and len(head) > 2 and head[2:3].isspace():
        return "pgm"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    raise ImageReadError(path, "not a supported image (expected PGM, PNG, JPEG, TIFF, BMP or DICOM content)")


def probe_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, budget_mb: float | None = None) -> ImageInfo:
    """Check an image cheaply: readable header, sane size, within the decode budget, no truncation.

    Decodes no pixels, so it is fit for importing tens of thousands of files; corruption inside
    compressed data needs :func:`verify_image`. ``budget_mb``: see :func:`decode_budget_mb`.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "dicom":
        info = probe_dicom(path, budget_mb)
    elif fmt == "pgm":
        info = _probe_pnm(path)
    else:
        info = _probe_pillow(path, fmt, budget_mb)
    check_size(path, info.width, info.height, max_pixels)
    check_decode_budget(path, info, budget_mb)
    return info


def verify_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, budget_mb: float | None = None) -> ImageInfo:
    """:func:`probe_image`, then a full decode (:func:`read_image`): what passes, preprocessing can read.

    Headers cannot show corruption inside compressed pixel data (RLE/JPEG/JPEG 2000 DICOM, PNG,
    JPEG, TIFF); decoding can. Uncompressed DICOM and binary PGM are not decoded: their probe has
    checked that every byte is there, and decoding would only copy them. Decodes running at once
    in this process share the budget (:data:`IMPORT_GATE`).
    """
    info = probe_image(path, max_pixels=max_pixels, budget_mb=budget_mb)
    if not _is_raw(Path(path), info):
        with IMPORT_GATE.reserve(check_decode_budget(path, info, budget_mb)):
            read_image(path, max_pixels=max_pixels, budget_mb=budget_mb)
    return info


def _is_raw(path: Path, info: ImageInfo) -> bool:
    """True for uncompressed pixel data whose completeness the probe has checked (binary PGM, native DICOM)."""
    if info.file_format == "pgm":
        return _read_head(path, 2) in (b"P5", b"P6")
    if info.file_format == "dicom":
        return not is_encapsulated(path)
    return False


def _parse_pnm_header(path: Path, data: bytes) -> tuple[str, int, int, int, int]:
    """Return (magic, width, height, maxval, pixel_offset) of a PNM file."""
    tokens: list[bytes] = []
    pos = 2
    magic = data[:2].decode("ascii")
    needed = 3
    while len(tokens) < needed:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if pos < len(data) and data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ImageReadError(path, "PGM header is truncated")
        tokens.append(data[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError as exc:
        raise ImageReadError(path, f"PGM header is corrupt ({exc})") from exc
    if not 0 < maxval < 65536:
        raise ImageReadError(path, f"PGM maxval {maxval} is out of range 1..65535")
    return magic, width, height, maxval, pos + 1  # one whitespace byte ends the header


def _probe_pnm(path: Path) -> ImageInfo:
    head = _read_head(path, 512)
    magic, width, height, maxval, offset = _parse_pnm_header(path, head)
    channels = 3 if magic in ("P3", "P6") else 1
    sample = 2 if maxval > 255 else 1
    decode_bpp = 0
    if magic in ("P5", "P6"):
        expected = offset + width * height * channels * sample
        size = path.stat().st_size
        if size < expected:
            raise ImageReadError(path, f"PGM is truncated: {size} bytes, {expected} expected for {width}x{height}")
    else:
        decode_bpp = channels * (_ASCII_PNM_BYTES_PER_SAMPLE + sample)
    return ImageInfo("pgm", width, height, 16 if maxval > 255 else 8, channels, decode_bpp)


def _probe_pillow(path: Path, fmt: str, budget_mb: float | None = None) -> ImageInfo:
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
            tiff_bits = im.tag_v2.get(258) if fmt == "tiff" and hasattr(im, "tag_v2") else None
    except Image.DecompressionBombError as exc:
        # Pillow refuses more than 2 x Image.MAX_IMAGE_PIXELS from the header alone; the message
        # gives the pixel count (a lower bound for the estimate: one 8-bit sample per pixel).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        budget = decode_budget_mb(budget_mb)
        needed = pixels * (1 + WORK_BYTES_PER_PIXEL)
        if needed > budget * MIB:
            raise too_large_error(path, needed, budget) from None
        raise ImageReadError(
            path, f"too large to decode: {pixels:,} pixels, over the decoder's limit of {2 * Image.MAX_IMAGE_PIXELS:,}"
        ) from None
    except BaseException as exc:  # Pillow's plugins raise many types on damaged headers
        if isinstance(exc, NEVER_CAUGHT):
            raise
        raise ImageReadError(path, f"{fmt.upper()} header is corrupt ({type(exc).__name__}: {exc})") from None
    _check_complete(path, fmt)
    bits = 16 if mode in ("I;16", "I;16B", "I", "I;16L") else 8
    channels = {"L": 1, "P": 1, "1": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)
    decode_bpp = 0
    if fmt == "png":
        bits, decode_bpp = _png_depth(path, bits, channels)
    elif tiff_bits:
        depth = max(int(b) for b in (tiff_bits if isinstance(tiff_bits, tuple) else (tiff_bits,)))
        bits = max(bits, min(depth, 16))
        decode_bpp = max(1, channels) * max(1, math.ceil(depth / 8))
    return ImageInfo(fmt, width, height, bits, channels, decode_bpp)


# PNG colour type -> channels OpenCV's IMREAD_UNCHANGED decodes to (palettes become BGR).
_PNG_DECODED_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}


def _png_depth(path: Path, bits: int, channels: int) -> tuple[int, int]:
    """(bits per sample, decoded bytes per pixel) from the IHDR chunk: Pillow reports 16-bit colour as 8-bit."""
    ihdr = _read_head(path, 26)
    if len(ihdr) < 26 or ihdr[12:16] != b"IHDR":
        return bits, 0
    depth, colour = ihdr[24], ihdr[25]
    sample = 2 if depth == 16 else 1
    return (16 if depth == 16 else bits), _PNG_DECODED_CHANNELS.get(colour, max(1, channels)) * sample


def _check_complete(path: Path, fmt: str) -> None:
    """Detect truncation of JPEG/PNG from their end markers (cheap, no decode)."""
    if fmt not in ("jpeg", "png"):
        return
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - 4096))
        tail = handle.read().rstrip(b"\x00")
    if fmt == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise ImageReadError(path, "JPEG is truncated (no end-of-image marker)")
    if fmt == "png" and b"IEND" not in tail[-12:]:
        raise ImageReadError(path, "PNG is truncated (no IEND chunk)")
    if fmt == "png":
        _check_png_chunks(path, size)


def _check_png_chunks(path: Path, size: int) -> None:
    """Walk the PNG's chunk headers (8 bytes each, no data read): a chunk longer than the rest of the
    file is corruption that some decoders answer by allocating the declared length (4 GB)."""
    position = 8
    with path.open("rb") as handle:
        while position + 12 <= size:
            handle.seek(position)
            header = handle.read(8)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length > size - position - 12:
                name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
                raise ImageReadError(
                    path,
                    f"PNG header is corrupt: chunk {name} declares {length:,} bytes, the file has {size - position - 12:,} left",
                )
            if kind == b"IEND":
                return
            position += 12 + length


def read_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, apply_voi: bool = True, budget_mb: float | None = None
) -> MammoImage:
    """Decode any supported image to a :class:`MammoImage` (grey, native bit depth).

    Colour images are converted to grey (ITU-R 601 luma). DICOM pixels have the modality LUT
    (rescale slope/intercept) and, when ``apply_voi``, the VOI LUT or window applied, and
    MONOCHROME1 is inverted so that dense tissue is always bright. Images over the decode budget
    (``budget_mb``, see :func:`decode_budget_mb`) are refused from their header; any failure of a
    decoder is an :class:`ImageReadError`.
    """
    path = Path(path)
    info = probe_image(path, max_pixels=max_pixels, budget_mb=budget_mb)
    if info.file_format == "dicom":
        return read_dicom(path, apply_voi=apply_voi, max_pixels=max_pixels, budget_mb=budget_mb)
    extra: dict[str, str] = {}
    with decoder_failures(path, info.file_format.upper()):
        pixels = _decode_pnm(path) if info.file_format == "pgm" else _decode_opencv(path, info.file_format)
        if pixels.ndim == 3:
            # Kept for preprocessing's input checks: a colour photo is refused there.
            extra["colour_saturation"] = f"{colour_saturation(pixels):.4f}"
            pixels = to_grey(pixels)
    max_value = 65535 if pixels.dtype == np.uint16 else 255
    return MammoImage(
        pixels=np.ascontiguousarray(pixels), max_value=max_value, file_format=info.file_format, extra=extra
    )


def _decode_pnm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, width, height, maxval, offset = _parse_pnm_header(path, data)
    channels = 3 if magic in ("P3", "P6") else 1
    shape = (height, width, channels) if channels == 3 else (height, width)
    if magic in ("P2", "P3"):
        try:
            values = np.array(data[offset - 1 :].split(), dtype=np.int64)
        except ValueError as exc:
            raise ImageReadError(path, f"ASCII PGM has non-numeric pixel values ({exc})") from exc
        if values.size < np.prod(shape):
            raise ImageReadError(path, f"PGM is truncated: {values.size} values, {np.prod(shape)} expected")
        arr = values[: np.prod(shape)].reshape(shape)
    else:
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
    arr = arr.astype(np.uint16 if maxval > 255 else np.uint8)
    if maxval not in (255, 65535):
        # Stretch to the full range of the storage type so max_value stays meaningful.
        top = 65535 if maxval > 255 else 255
        arr = (arr.astype(np.float64) * (top / maxval)).round().clip(0, top).astype(arr.dtype)
    return arr


def _decode_opencv(path: Path, fmt: str) -> np.ndarray:
    import cv2

    buffer = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    del buffer
    if arr is None:
        raise ImageReadError(path, f"{fmt.upper()} data could not be decoded (corrupt file)")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]  # OpenCV gives BGR
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")
    return arr


# Names that lived here before the decode budget and the shared image types had their own modules.
__all__ = [
    "DECODE_BUDGET_ENV",
    "DEFAULT_DECODE_BUDGET_MB",
    "DEFAULT_MAX_PIXELS",
    "IMPORT_GATE",
    "MIB",
    "MIN_SIDE",
    "WORK_BYTES_PER_PIXEL",
    "DecodeGate",
    "ImageInfo",
    "MammoImage",
    "check_decode_budget",
    "decode_budget_mb",
    "decode_budget_override",
    "decode_estimate",
    "decoder_failures",
    "probe_image",
    "read_image",
    "sniff_format",
    "verify_image",
]
