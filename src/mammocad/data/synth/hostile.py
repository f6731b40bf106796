"""Crafted hostile image files: what a hospital network or an attacker can put in front of a reader.

Used by the tests and by ``mammocad bench fuzz`` (its seed corpus):

- header-only "bombs": a few dozen bytes declaring 60000 x 60000 pixels (PNG, BMP, TIFF, JPEG);
- a valid 16-bit RGB PNG (big per pixel: 6 bytes decoded, but tiny on disk);
- RLE DICOMs whose segment offsets are corrupted so that the Rust RLE decoder of pylibjpeg-rle
  panics (``pyo3_runtime.PanicException``, a BaseException) instead of raising an error;
- PNGs with a damaged compressed stream (header and end marker intact: only a decode sees it).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

BOMB_SIDE = 60_000
BOMB_FORMATS = ("png", "bmp", "tiff", "jpeg")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_bytes(fmt: str, side: int = BOMB_SIDE) -> bytes:
    """A header declaring ``side`` x ``side`` pixels and (almost) no pixel data."""
    if fmt == "png":
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b""))
            + _png_chunk(b"IEND", b"")
        )
    if fmt == "bmp":
        info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info
    if fmt == "tiff":
        tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
        tags += [(273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, (side * side) & 0xFFFFFFFF)]
        ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + b"\0\0\0\0"
        return b"II*\x00" + struct.pack("<I", 8) + ifd
    if fmt == "jpeg":
        sof = struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0])
        return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"
    raise ValueError(fmt)


def write_bomb(path: Path, fmt: str, side: int = BOMB_SIDE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bomb_bytes(fmt, side))
    return path


def write_rgb16_png(path: Path, side: int = 600, seed: int = 0) -> Path:
    """A valid 16-bit RGB PNG of ``side`` x ``side`` (a smooth disc, so it compresses well)."""
    yy, xx = np.mgrid[0:side, 0:side]
    disc = ((np.hypot(yy - side / 2, xx) < side * 0.45) * 40000 + (xx % 97) * 50 + seed).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.dstack([disc, disc, disc])):
        raise OSError(f"{path}: could not write the PNG")
    return path


def rle_segment_header(data: bytes) -> int:
    """Offset in ``data`` (a DICOM file) of the RLE header of the first fragment of its pixel data."""
    tag = data.find(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, then VR OB, 2 reserved, length
    table = tag + 12  # the Basic Offset Table item
    if data[table : table + 4] != b"\xfe\xff\x00\xe0":
        raise ValueError("not an encapsulated DICOM with a Basic Offset Table item")
    length = int.from_bytes(data[table + 4 : table + 8], "little")
    fragment = table + 8 + length
    if data[fragment : fragment + 4] != b"\xfe\xff\x00\xe0":
        raise ValueError("no pixel-data fragment after the offset table")
    return fragment + 8


def corrupt_rle(data: bytes, how: str = "offset") -> bytes:
    """One corrupted RLE DICOM: ``offset`` moves the second segment's start back (the decoded data
    then overruns its plane: pylibjpeg-rle panics); ``flip`` flips the low byte of that offset."""
    out = bytearray(data)
    header = rle_segment_header(data)
    second = int.from_bytes(out[header + 8 : header + 12], "little")
    if how == "flip":
        out[header + 8] ^= 0xFF
    else:
        out[header + 8 : header + 12] = (second - 100).to_bytes(4, "little")
    return bytes(out)


def dicom_bytes(pixels: np.ndarray, bits_stored: int = 16, compress: Any = None) -> bytes:
    """A minimal valid 16-bit MONOCHROME2 mammography DICOM of ``pixels`` (``compress``: a
    transfer syntax such as ``pydicom.uid.RLELossless``, or None for native pixel data)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("fixture", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = 16, bits_stored
    ds.HighBit, ds.PixelRepresentation = bits_stored - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if compress is not None:
        ds.compress(compress)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_panicking_rle_dicom(path: Path, seed: int = 0) -> Path:
    """A small 16-bit RLE DICOM (written here) whose decoding makes pylibjpeg-rle panic."""
    from pydicom.uid import RLELossless

    pixels = np.random.default_rng(seed).integers(0, 4096, (64, 48), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(corrupt_rle(dicom_bytes(pixels, compress=RLELossless)))
    return path


def _png(pixels: np.ndarray) -> np.ndarray:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded


def write_corrupt_png(path: Path, seed: int = 0, side: int = 64) -> Path:
    """A PNG whose compressed pixel stream is damaged; its header and IEND are intact."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    encoded = _png(pixels)
    data = bytearray(encoded.tobytes())
    start = data.find(b"IDAT") + 4
    data[start + 2 : start + 40] = bytes(38)  # zero the start of the zlib stream (after its header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def write_truncated_png(path: Path, seed: int = 0, side: int = 64) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    encoded = _png(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    return path
