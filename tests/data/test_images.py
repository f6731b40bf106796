"""Image reading: formats sniffed by content, and clear errors for every kind of bad file."""

from __future__ import annotations

import pickle
import threading
import time

import cv2
import numpy as np
import pytest

from mammocad.data import pixels
from mammocad.data.images import (
    DECODE_BUDGET_ENV,
    DEFAULT_DECODE_BUDGET_MB,
    DecodeGate,
    decode_budget_mb,
    decode_budget_override,
    probe_image,
    read_image,
    sniff_format,
    verify_image,
)
from mammocad.data.synth.hostile import (
    BOMB_FORMATS,
    write_bomb,
    write_corrupt_png,
    write_panicking_rle_dicom,
    write_rgb16_png,
    write_truncated_png,
)
from mammocad.errors import ConfigError, ImageReadError
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


# --- decode budget -------------------------------------------------------------------------------


def test_16_bit_rgb_png_is_estimated_at_6_bytes_a_pixel_and_refused_over_the_budget(tmp_path, monkeypatch):
    path = write_rgb16_png(tmp_path / "rgb16.png", side=600)  # 600² x (6 decoded + 8 work) = 5.04 MB, shown as ~6
    info = probe_image(path)
    assert (info.bits_stored, info.channels, info.bytes_per_pixel()) == (16, 3, 6)  # Pillow says 8-bit RGB
    assert read_image(path).pixels.dtype == np.uint16  # within the default budget

    for refuse in (lambda: read_image(path, budget_mb=2), lambda: probe_image(path, budget_mb=2)):
        with pytest.raises(ImageReadError, match=r"too large to decode: ~6 MB needed > budget 2 MB") as info:
            refuse()
        assert info.value.path == str(path)

    monkeypatch.setenv(DECODE_BUDGET_ENV, "2")
    with pytest.raises(ImageReadError, match="too large to decode"):
        read_image(path)
    with pytest.raises(ImageReadError, match="too large to decode"):
        verify_image(path)
    assert read_image(path, budget_mb=8).pixels.shape == (600, 600)  # the argument wins over the env


@pytest.mark.parametrize("fmt", BOMB_FORMATS)
def test_header_only_bombs_are_refused_before_any_allocation(tmp_path, monkeypatch, fmt):
    path = write_bomb(tmp_path / f"bomb.{fmt}", fmt)
    assert path.stat().st_size < 200

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a bomb must be refused from its header")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for reader in (probe_image, read_image, verify_image):
        with pytest.raises(ImageReadError, match=r"too large to decode: ~[\d,]+ MB needed > budget") as info:
            reader(path, max_pixels=10**12)
        assert info.value.path == str(path)


def test_bomb_under_pillows_limit_is_refused_by_the_budget(tmp_path):
    # 12000² = 144 MP: Pillow only warns; the budget (not the pixel limit: importers probe without one) refuses it.
    path = write_bomb(tmp_path / "bomb.png", "png", side=12_000)
    with pytest.warns(Warning, match="decompression bomb"), pytest.raises(ImageReadError, match="too large"):
        probe_image(path, max_pixels=10**12, budget_mb=512)


def test_budget_from_env_argument_and_default(monkeypatch):
    monkeypatch.delenv(DECODE_BUDGET_ENV, raising=False)
    assert decode_budget_mb() == DEFAULT_DECODE_BUDGET_MB
    monkeypatch.setenv(DECODE_BUDGET_ENV, " 512 ")
    assert decode_budget_mb() == 512 and decode_budget_mb(64) == 64
    with decode_budget_override(32):
        assert decode_budget_mb() == 32
    assert decode_budget_mb() == 512
    for bad in ("lots", "0", "-5", "nan"):
        monkeypatch.setenv(DECODE_BUDGET_ENV, bad)
        with pytest.raises(ConfigError, match=DECODE_BUDGET_ENV):
            decode_budget_mb()


def test_colour_conversion_in_row_blocks_matches_the_whole_image(monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 65536, (37, 29, 3), dtype=np.uint16)
    whole = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint16)
    monkeypatch.setattr(pixels, "CHUNK_PIXELS", 100)  # 3 rows a block
    assert np.array_equal(pixels.to_grey(rgb), whole)


# --- decoder failures ----------------------------------------------------------------------------


class FakePanic(BaseException):
    """Like ``pyo3_runtime.PanicException``: a BaseException, not an Exception."""


def test_any_decoder_failure_is_an_image_read_error_but_ctrl_c_is_not(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    cv2.imwrite(str(path), textured(7))

    def panic(*_args, **_kwargs):
        raise FakePanic("index out of bounds")

    monkeypatch.setattr(cv2, "imdecode", panic)
    with pytest.raises(ImageReadError, match=r"PNG could not be decoded \(FakePanic: index out of bounds\)"):
        read_image(path)

    def out_of_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(cv2, "imdecode", out_of_memory)
    with pytest.raises(ImageReadError, match="not enough memory"):
        read_image(path)

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cv2, "imdecode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_image(path)


def test_corruption_inside_compressed_data_is_found_by_a_decode_not_by_the_probe(tmp_path):
    corrupt = write_corrupt_png(tmp_path / "corrupt.png")
    assert probe_image(corrupt).width == 64  # header and IEND are intact
    with pytest.raises(ImageReadError, match="could not be decoded"):
        verify_image(corrupt)
    panics = write_panicking_rle_dicom(tmp_path / "panics.dcm")
    assert probe_image(panics).height == 64
    with pytest.raises(ImageReadError, match="PanicException") as info:
        verify_image(panics)
    assert info.value.path == str(panics)
    with pytest.raises(ImageReadError, match="truncated"):
        verify_image(write_truncated_png(tmp_path / "cut.png"))
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), textured(8))
    assert verify_image(good).width == 64


def test_image_read_errors_survive_pickling():
    error = pickle.loads(pickle.dumps(ImageReadError("/data/a.png", "too large to decode")))
    assert isinstance(error, ImageReadError)
    assert (error.path, error.reason, str(error)) == (
        "/data/a.png",
        "too large to decode",
        "/data/a.png: too large to decode",
    )


def test_gate_admits_reservations_while_they_fit_and_never_blocks_a_holder():
    gate = DecodeGate(budget_mb=10)
    mib = 1 << 20
    release_a = gate.acquire(6 * mib)
    admitted = threading.Event()

    def second() -> None:
        with gate.reserve(6 * mib):
            admitted.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    assert not admitted.is_set()  # 6 + 6 > 10: waits
    with gate.reserve(20 * mib):  # this thread holds already: let through, never deadlocked
        assert gate.in_use == 6 * mib + gate.capacity
    release_a()
    release_a()  # idempotent
    thread.join(5)
    assert admitted.is_set() and gate.in_use == 0
