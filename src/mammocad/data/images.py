"""Read mammograms from any supported file format into one array type.

Formats are sniffed from the file's content, never its name: PGM/PPM (P2/P5), PNG, JPEG, TIFF,
BMP and DICOM. Every failure raises :class:`~mammocad.errors.ImageReadError` naming the file and
the reason (missing, empty, truncated, not an image, absurd size, too large to decode, or a
third-party decoder that failed in any way, Rust panics of the pylibjpeg plugins included).

Decode budget: every reader estimates from the header what decoding and preprocessing the image
will allocate (:func:`decode_estimate`) and refuses it, before allocating anything, when that is
over the budget (``budget_mb`` argument, else ``$MAMMOCAD_DECODE_BUDGET_MB``, else
:data:`DEFAULT_DECODE_BUDGET_MB`). A pixel count alone is no memory bound: a 60-megapixel 16-bit
RGB PNG decodes to 360 MB of samples, an 8-bit grey one to 60 MB.

Pixels keep their native depth (uint8 or uint16) until preprocessing converts them, and come with
``max_value`` so a later stage can normalise without guessing.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammocad.defaults import DEFAULT_DECODE_BUDGET_MB, DEFAULT_MAX_PIXELS
from mammocad.errors import ConfigError, ImageReadError

MIN_SIDE = 8

MIB = 1 << 20
#: Memory one decode (with its preprocessing) may need, in MiB; the API also admits decodes and
#: heatmaps at once only while their estimates fit into it together. Every image under the pixel
#: limit fits, with its heatmap: a 60-megapixel 16-bit grey DICOM is estimated at ~690 MB to decode
#: (+ ~650 MB for a heatmap), a 16-bit RGB PNG at ~800 MB.
#: That is DEFAULT_DECODE_BUDGET_MB, defined in mammocad.defaults (the command line's help reads it from there).
#: Environment variable that overrides :data:`DEFAULT_DECODE_BUDGET_MB` (a number of MiB).
DECODE_BUDGET_ENV = "MAMMOCAD_DECODE_BUDGET_MB"
#: Bytes per pixel that decoding and preprocessing allocate on top of the file's bytes and the decoded
#: samples: the grey/LUT output (up to 2), the float32 [0, 1] copy serving keeps for heatmaps (4) and
#: row-block temporaries. Measured peaks of ``read_image`` + ``preprocess_image`` + ``to_unit``
#: (VmHWM over a warmed-up process): 6.0 for a 7745x7745 16-bit RGB PNG, 4.0 for 16-bit grey PNG,
#: 4.2 for 12-bit DICOMs with a window and for RLE CBIS-DDSM films; 8 leaves a third as margin.
WORK_BYTES_PER_PIXEL = 8
# An ASCII PGM/PPM sample is parsed as a Python bytes token (~45 bytes) and an int64 (8).
_ASCII_PNM_BYTES_PER_SAMPLE = 56
# Colour conversion and DICOM LUTs run on row blocks of this many pixels (float64: 8 MB a block).
_CHUNK_PIXELS = 1 << 20
# Failures that are the user's or the interpreter's, never a decoder's: they always propagate.
_NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit)


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


def decode_budget_mb(budget_mb: float | None = None) -> float:
    """The decode budget in MiB: ``budget_mb`` when given, else ``$MAMMOCAD_DECODE_BUDGET_MB``, else the default.

    Raises :class:`~mammocad.errors.ConfigError` for a value that is not a positive number.
    """
    source, value = "decode budget", budget_mb
    if value is None:
        text = os.environ.get(DECODE_BUDGET_ENV, "").strip()
        if not text:
            return float(DEFAULT_DECODE_BUDGET_MB)
        source = f"${DECODE_BUDGET_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{source} must be a number of MiB, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{source} must be a positive number of MiB, got {value}")
    return float(value)


@contextlib.contextmanager
def decode_budget_override(budget_mb: float | None) -> Iterator[None]:
    """Within the block, ``$MAMMOCAD_DECODE_BUDGET_MB`` is ``budget_mb`` (None: unchanged), so every
    reader, the importers' own probes and worker processes started inside included, uses it."""
    if budget_mb is None:
        yield
        return
    decode_budget_mb(budget_mb)  # validate before changing anything
    before = os.environ.get(DECODE_BUDGET_ENV)
    os.environ[DECODE_BUDGET_ENV] = repr(float(budget_mb))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DECODE_BUDGET_ENV, None)
        else:
            os.environ[DECODE_BUDGET_ENV] = before


def decode_estimate(info: ImageInfo, file_size: int = 0) -> int:
    """Bytes that reading the image described by ``info`` and preprocessing it will allocate at most.

    The file's bytes (readers hold the whole file), the decoder's output, and
    :data:`WORK_BYTES_PER_PIXEL` per pixel for conversion, preprocessing and serving.
    """
    return int(file_size) + info.pixels * (info.bytes_per_pixel() + WORK_BYTES_PER_PIXEL)


def _mb(nbytes: float) -> str:
    return f"{math.ceil(nbytes / MIB):,}"


def _too_large(path: Path, needed: float, budget: float) -> ImageReadError:
    return ImageReadError(path, f"too large to decode: ~{_mb(needed)} MB needed > budget {budget:,.0f} MB")


def check_decode_budget(path: str | Path, info: ImageInfo, budget_mb: float | None = None) -> int:
    """The bytes decoding ``path`` will need (see :func:`decode_estimate`); ImageReadError when over budget."""
    path = Path(path)
    budget = decode_budget_mb(budget_mb)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    needed = decode_estimate(info, size)
    if needed > budget * MIB:
        raise _too_large(path, needed, budget)
    return needed


@contextlib.contextmanager
def decoder_failures(path: str | Path, what: str) -> Iterator[None]:
    """Turn any failure of a third-party decoder inside the block into an :class:`ImageReadError`.

    Decoders fail in every way: ``ValueError``, ``cv2.error``, ``struct.error``, ``MemoryError``, and
    the ``pyo3_runtime.PanicException`` of the Rust pylibjpeg plugins, which derives from
    ``BaseException``. Only Ctrl-C, ``SystemExit`` and ``GeneratorExit`` pass through. The message keeps
    the exception's type and first line (never more: a message could quote the file's bytes).
    """
    try:
        yield
    except ImageReadError:
        raise
    except BaseException as exc:
        if isinstance(exc, _NEVER_CAUGHT):
            raise
        if isinstance(exc, MemoryError):
            raise ImageReadError(path, f"{what} could not be decoded: not enough memory") from None
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ImageReadError(path, f"{what} could not be decoded ({detail})") from None


class DecodeGate:
    """Admits decodes while their estimated memory fits into a shared budget (a weighted semaphore).

    ``budget_mb`` None follows :func:`decode_budget_mb` at each call. A reservation larger than the
    whole budget waits until it is alone (readers refuse such images before they get here). A thread
    that already holds a reservation never waits (it is let through, over the budget): a holder
    waiting for room only other holders can free would deadlock.
    """

    def __init__(self, budget_mb: float | None = None) -> None:
        self._budget_mb = budget_mb
        self._used = 0
        self._holders: dict[int, int] = {}  # thread id -> reservations it holds
        self._cond = threading.Condition()

    @property
    def capacity(self) -> int:
        return int(decode_budget_mb(self._budget_mb) * MIB)

    @property
    def in_use(self) -> int:
        """Bytes reserved now."""
        return self._used

    def acquire(self, nbytes: int) -> Callable[[], None]:
        """Reserve ``nbytes`` (waiting for room); returns the function that gives them back (idempotent,
        callable from any thread)."""
        nbytes = max(0, min(int(nbytes), self.capacity))
        thread = threading.get_ident()
        with self._cond:
            if not self._holders.get(thread):
                self._cond.wait_for(lambda: self._used == 0 or self._used + nbytes <= self.capacity)
            self._used += nbytes
            self._holders[thread] = self._holders.get(thread, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                if not released:
                    released = True
                    self._used -= nbytes
                    left = self._holders.pop(thread, 1) - 1
                    if left:
                        self._holders[thread] = left
                    self._cond.notify_all()

        return release

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        release = self.acquire(nbytes)
        try:
            yield
        finally:
            release()


#: The gate of this process's import checks (each decode there is also within the budget alone).
IMPORT_GATE = DecodeGate()


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
        from mammocad.data.dicom import probe_dicom

        info = probe_dicom(path, budget_mb)
    elif fmt == "pgm":
        info = _probe_pnm(path)
    else:
        info = _probe_pillow(path, fmt, budget_mb)
    _check_size(path, info.width, info.height, max_pixels)
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
        from mammocad.data.dicom import is_encapsulated

        return not is_encapsulated(path)
    return False


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
            raise _too_large(path, needed, budget) from None
        raise ImageReadError(
            path, f"too large to decode: {pixels:,} pixels, over the decoder's limit of {2 * Image.MAX_IMAGE_PIXELS:,}"
        ) from None
    except BaseException as exc:  # Pillow's plugins raise many types on damaged headers
        if isinstance(exc, _NEVER_CAUGHT):
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
        from mammocad.data.dicom import read_dicom

        return read_dicom(path, apply_voi=apply_voi, max_pixels=max_pixels, budget_mb=budget_mb)
    extra: dict[str, str] = {}
    with decoder_failures(path, info.file_format.upper()):
        pixels = _decode_pnm(path) if info.file_format == "pgm" else _decode_opencv(path, info.file_format)
        if pixels.ndim == 3:
            from mammocad.preprocess.checks import colour_saturation  # kept: a colour photo is refused later

            extra["colour_saturation"] = f"{colour_saturation(pixels):.4f}"
            pixels = _to_grey(pixels)
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


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in the input's dtype, computed on row blocks: the float64 intermediates of a
    whole 60-megapixel image would take 2 GB, a block's take 8 MB (same values either way)."""
    weights = np.array([0.299, 0.587, 0.114])
    grey = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    rows = max(1, _CHUNK_PIXELS // max(1, rgb.shape[1]))
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows, :, :3].astype(np.float32) @ weights
        grey[start : start + rows] = block.round()
    return grey
