"""Image reading: formats sniffed by content, and clear errors for every kind of bad file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammocad.data.images import probe_image, read_image, sniff_format
from mammocad.errors import ImageReadError
from tests.conftest import textured, write_pgm


def test_pgm_8_and_16_bit_round_trip(tmp_path):
    img8 = textured(1, (40, 30))
    img16 = (textured(2, (40, 30)).astype(np.uint16) * 257).astype(np.uint16)
    read8 = read_image(write_pgm(tmp_path / "a.pgm", img8))
    read16 = read_image(write_pgm(tmp_path / "b.pgm", img16))
    assert read8.pixels.dtype == np.uint8 and np.array_equal(read8.pixels, img8) and read8.max_value == 255
    assert read16.pixels.dtype == np.uint16 and np.array_equal(read16.pixels, img16) and read16.max_value == 65535


def test_pgm_with_comment_and_odd_maxval_is_stretched(tmp_path):
    pixels = np.array([[0, 50, 100] * 4] * 10, dtype=np.uint8)
    path = tmp_path / "c.pgm"
    path.write_bytes(b"P5\n# a comment\n12 10\n100\n" + pixels.tobytes())
    out = read_image(path).pixels
    assert out.shape == (10, 12) and np.allclose(out[0, :3], [0, 127.5, 255], atol=1)


def test_format_is_sniffed_from_content_not_name(tmp_path):
    png_named_jpg = tmp_path / "really_png.jpg"
    cv2.imwrite(str(tmp_path / "x.png"), textured(3))
    png_named_jpg.write_bytes((tmp_path / "x.png").read_bytes())
    assert sniff_format(png_named_jpg) == "png"
    assert np.array_equal(read_image(png_named_jpg).pixels, textured(3))


def test_colour_image_becomes_grey(tmp_path):
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    rgb[..., 2] = 200  # red in BGR order
    cv2.imwrite(str(tmp_path / "red.png"), rgb)
    grey = read_image(tmp_path / "red.png").pixels
    assert grey.ndim == 2 and int(grey[0, 0]) == round(0.299 * 200)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("patient notes, not an image"), "not a supported image"),
        (lambda p: p.write_bytes(b"P5\n64 64\n255\n" + bytes(100)), "PGM is truncated"),
        (lambda p: p.write_bytes(b"P5\n64 x\n255\n" + bytes(4096)), "PGM header is corrupt"),
    ],
)
def test_bad_files_name_the_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.pgm"
    make(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)


def test_truncated_jpeg_and_png_are_detected(tmp_path):
    for ext in ("jpg", "png"):
        good = tmp_path / f"good.{ext}"
        cv2.imwrite(str(good), textured(4, (128, 128)))
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(ImageReadError, match="truncated"):
            probe_image(cut)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


def test_absurd_sizes_are_refused_before_decoding(tmp_path):
    huge_header = tmp_path / "huge.pgm"
    huge_header.write_bytes(b"P5\n100000 100000\n255\n" + bytes(16))
    with pytest.raises(ImageReadError, match="truncated|over the limit"):
        read_image(huge_header)
    small = write_pgm(tmp_path / "ok.pgm", textured(5, (100, 100)))
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(small, max_pixels=5000)
    tiny = write_pgm(tmp_path / "tiny.pgm", textured(6, (4, 4)))
    with pytest.raises(ImageReadError, match="too small"):
        read_image(tiny)
