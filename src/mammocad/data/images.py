"""Read mammograms from any supported file format into one array type.

Formats are sniffed from the file's content, never its name: PGM/PPM (P2/P5), PNG, JPEG, TIFF,
BMP and DICOM. Every failure raises :class:`~mammocad.errors.ImageReadError` naming the file and
the reason (missing, empty, truncated, not an image, absurd size).

Pixels keep their native depth (uint8 or uint16) until preprocessing converts them, and come with
``max_value`` so a later stage can normalise without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammocad.errors import ImageReadError

#: Larger than any full-field mammogram (CBIS-DDSM scans reach ~25 MP); guards against decompression bombs.
DEFAULT_MAX_PIXELS = 60_000_000
MIN_SIDE = 8


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image, found without decoding its pixels."""

    file_format: str
    width: int
    height: int
    bits_stored: int
    channels: int = 1


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


def probe_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Check an image cheaply: readable header, sane size, and no truncation.

    Decodes no pixels (except for formats whose completeness cannot be seen otherwise), so it is
    fit for importing tens of thousands of files.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "dicom":
        from mammocad.data.dicom import probe_dicom

        info = probe_dicom(path)
    elif fmt == "pgm":
        info = _probe_pnm(path)
    else:
        info = _probe_pillow(path, fmt)
    _check_size(path, info.width, info.height, max_pixels)
    return info


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageReadError(path, f"image is {width}x{height} pixels, too small to be a mammogram")
    if width * height > max_pixels:
        raise ImageReadError(
            path, f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )


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
    head = path.read_bytes()[:512]
    magic, width, height, maxval, offset = _parse_pnm_header(path, head)
    channels = 3 if magic in ("P3", "P6") else 1
    if magic in ("P5", "P6"):
        expected = offset + width * height * channels * (2 if maxval > 255 else 1)
        size = path.stat().st_size
        if size < expected:
            raise ImageReadError(path, f"PGM is truncated: {size} bytes, {expected} expected for {width}x{height}")
    return ImageInfo("pgm", width, height, 16 if maxval > 255 else 8, channels)


def _probe_pillow(path: Path, fmt: str) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"{fmt.upper()} header is corrupt ({exc})") from exc
    _check_complete(path, fmt)
    bits = 16 if mode in ("I;16", "I;16B", "I", "I;16L") else 8
    channels = {"L": 1, "P": 1, "1": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)
    return ImageInfo(fmt, width, height, bits, channels)


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


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, apply_voi: bool = True) -> MammoImage:
    """Decode any supported image to a :class:`MammoImage` (grey, native bit depth).

    Colour images are converted to grey (ITU-R 601 luma). DICOM pixels have the modality LUT
    (rescale slope/intercept) and, when ``apply_voi``, the VOI LUT or window applied, and
    MONOCHROME1 is inverted so that dense tissue is always bright.
    """
    path = Path(path)
    info = probe_image(path, max_pixels=max_pixels)
    if info.file_format == "dicom":
        from mammocad.data.dicom import read_dicom

        return read_dicom(path, apply_voi=apply_voi, max_pixels=max_pixels)
    pixels = _decode_pnm(path) if info.file_format == "pgm" else _decode_opencv(path, info.file_format)
    if pixels.ndim == 3:
        pixels = _to_grey(pixels)
    max_value = 65535 if pixels.dtype == np.uint16 else 255
    return MammoImage(pixels=np.ascontiguousarray(pixels), max_value=max_value, file_format=info.file_format)


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
    if arr is None:
        raise ImageReadError(path, f"{fmt.upper()} data could not be decoded (corrupt file)")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]  # OpenCV gives BGR
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")
    return arr


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    weights = np.array([0.299, 0.587, 0.114])
    grey = rgb[..., :3].astype(np.float32) @ weights
    return grey.round().astype(rgb.dtype)
