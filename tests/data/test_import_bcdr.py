"""BCDR import: outline polygons -> masks and boxes, lesion grouping, bad outlines, lookups."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.bcdr import parse_classification, parse_points
from mammocad.data.manifest import lesions_of, read_manifest, resolve_path
from mammocad.errors import DatasetError

WIDTH, HEIGHT = 96, 80
SQUARE = ([10, 30, 30, 10], [20, 20, 40, 40])  # x 10..30, y 20..40 (outline included)
TRIANGLE = ([60, 90, 60], [5, 5, 35])


def write_tif(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)


def outline(patient, study, lesion, filename, view, classification, points, **extra) -> dict:
    xs, ys = points
    row = {
        "patient_id": patient,
        "study_id": study,
        "series": 1,
        "lesion_id": lesion,
        "segmentation_id": lesion,
        "image_view": view,
        "image_filename": filename,
        "lw_x_points": " " + " ".join(map(str, xs)),
        "lw_y_points": " " + " ".join(map(str, ys)),
        "mammography_type": 1,
        "mammography_nodule": 1,
        "mammography_calcification": 0,
        "mammography_microcalcification": 0,
        "mammography_axillary_adenopathy": 0,
        "mammography_architectural_distortion": 0,
        "mammography_stroma_distortion": 0,
        "age": 56,
        "density": 2,
        "classification": classification,
    }
    row.update(extra)
    return row


@pytest.fixture
def bcdr(tmp_path) -> Path:
    root = tmp_path / "BCDR-D01_dataset"
    write_tif(root / "patient_1/study_1/img_1_1_1_RCC.tif", 1)
    write_tif(root / "patient_1/study_2/img_1_2_1_LO.tif", 2)
    write_tif(root / "patient_2/study_3/img_2_3_5_LCC.tif", 3)
    write_tif(root / "patient_3/study_4/img_3_4_1_RO.tif", 5)
    write_tif(root / "patient_4/study_5/img_4_5_1_LCC.tif", 6)
    rows = [
        # Line 2: one malignant mass ("Malign" is BCDR's spelling; stray spaces as in the real file).
        outline(1, 1, 11, " patient_1/study_1/img_1_1_1_RCC.tif", "RCC", " Malign ", SQUARE),
        # Lines 3-4: two benign lesions; the second outline has unequal x/y lists.
        outline(1, 2, 12, " patient_1/study_2/img_1_2_1_LO.tif", "LO", "Benign", TRIANGLE),
        outline(
            1,
            2,
            13,
            " patient_1/study_2/img_1_2_1_LO.tif",
            "LO",
            "Benign",
            ([1, 2, 3, 4], [1, 2, 3]),
            **{"mammography_nodule": 0, "mammography_calcification": 1},
        ),
        # Lines 5-6: one lesion outlined twice (same lesion_id), file name in another case.
        outline(2, 3, 21, "  patient_2/study_3/IMG_2_3_5_LCC.tif", "LCC", "Benign", SQUARE),
        outline(2, 3, 21, "  patient_2/study_3/IMG_2_3_5_LCC.tif", "LCC", "Benign", TRIANGLE),
        # Line 7: the file does not exist.
        outline(2, 3, 22, "patient_2/study_3/img_2_3_6_LO.tif", "LO", "Malign", SQUARE),
        # Lines 8-9: a malignant lesion with points outside the image, and a benign one that is fine.
        outline(3, 4, 31, "patient_3/study_4/img_3_4_1_RO.tif", "RO", "Malignant", ([10, 300, 20], [10, 10, 30])),
        outline(3, 4, 32, "patient_3/study_4/img_3_4_1_RO.tif", "RO", "Benign", TRIANGLE),
        # Line 10: no usable classification, nothing malignant: the label cannot be known.
        outline(4, 5, 41, "patient_4/study_5/img_4_5_1_LCC.tif", "LCC", "unknown", SQUARE),
    ]
    pd.DataFrame(rows).to_csv(root / "bcdr_d01_outlines.csv", index=False)
    return root


def read_mask(dataset: Path, rel: str) -> np.ndarray:
    mask = cv2.imread(str(resolve_path(dataset, rel)), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
    return mask


def test_polygons_become_masks_and_boxes(bcdr, tmp_path):
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    dataset = tmp_path / "ds"
    manifest = read_manifest(dataset).set_index("image_id")
    assert sorted(manifest.index) == ["img_1_1_1_RCC", "img_1_2_1_LO", "img_2_3_5_LCC", "img_3_4_1_RO"]
    assert summary.per_class == {"benign": 2, "malignant": 2}

    rcc = manifest.loc["img_1_1_1_RCC"]
    assert (rcc.label_name, rcc.pathology, rcc.laterality, rcc.view) == ("malignant", "malignant", "R", "CC")
    assert (rcc.patient_id, rcc.study_id, rcc.density) == ("bcdr-1", "bcdr-1-1", "2")
    assert (rcc.width, rcc.height, rcc.file_format) == (WIDTH, HEIGHT, "tiff")
    [lesion] = lesions_of(rcc)
    assert (lesion.x0, lesion.y0, lesion.x1, lesion.y1) == (10, 20, 31, 41)  # half-open, outline included
    assert (lesion.center_x, lesion.center_y) == (20.5, 30.5)
    assert (lesion.lesion_type, lesion.pathology) == ("mass", "malignant")
    mask = read_mask(dataset, lesion.mask_path)
    assert mask[30, 20] == 255 and mask[20, 10] == 255 and mask[40, 30] == 255  # inside and on the outline
    assert mask[30, 31] == 0 and mask[19, 20] == 0 and mask[5, 5] == 0  # just outside
    assert set(np.unique(mask)) == {0, 255}
    assert (mask > 0).sum() == 21 * 21
    np.testing.assert_array_equal(read_mask(dataset, rcc.mask_path), mask)
    assert json.loads(rcc.meta)["age"] == 56

    lo = manifest.loc["img_1_2_1_LO"]
    assert (lo.label_name, lo.laterality, lo.view, lo.study_id) == ("benign", "L", "MLO", "bcdr-1-2")
    good, bad = lesions_of(lo)
    assert (good.x0, good.y0, good.x1, good.y1) == (60, 5, 91, 36)
    assert bad.mask_path is None and not bad.has_box and bad.lesion_type == "calcification"
    triangle = read_mask(dataset, good.mask_path)
    assert triangle[10, 65] == 255 and triangle[30, 85] == 0  # inside vs beyond the hypotenuse
    np.testing.assert_array_equal(read_mask(dataset, lo.mask_path), triangle)

    lcc = manifest.loc["img_2_3_5_LCC"]  # found despite leading spaces and another case
    [merged] = lesions_of(lcc)  # two outlines of one lesion_id: one lesion, united mask
    assert (merged.x0, merged.y0, merged.x1, merged.y1) == (10, 5, 91, 41)
    union = read_mask(dataset, merged.mask_path)
    assert union[30, 20] == 255 and union[10, 65] == 255 and union[30, 45] == 0

    ro = manifest.loc["img_3_4_1_RO"]  # the malignant lesion lost its outline, not its vote
    assert ro.label_name == "malignant" and ro.n_lesions == 2
    assert [lesion.mask_path is None for lesion in lesions_of(ro)] == [True, False]

    reasons = {s.item: s.reason for s in summary.skipped}
    assert "x/y lists differ in length (4 vs 3)" in reasons["img_1_2_1_LO lesion 13 (bcdr_d01_outlines.csv line 4)"]
    assert "outside the 96x80 image" in reasons["img_3_4_1_RO lesion 31 (bcdr_d01_outlines.csv line 8)"]
    assert reasons["patient_2/study_3/img_2_3_6_LO.tif (bcdr_d01_outlines.csv line 7)"] == "image file not found"
    assert "label cannot be known" in reasons["patient_4/study_5/img_4_5_1_LCC.tif (bcdr_d01_outlines.csv line 10)"]
    assert len(summary.skipped) == 4
    assert summary.n_with_mask == 4 and summary.n_lesions == 6


def test_image_dir_and_csv_as_source(bcdr, tmp_path):
    csv = tmp_path / "tables" / "bcdr_d01_outlines.csv"
    csv.parent.mkdir()
    (bcdr / "bcdr_d01_outlines.csv").rename(csv)
    with pytest.raises(DatasetError, match="no BCDR outlines CSV"):
        import_dataset("bcdr", bcdr, tmp_path / "ds0")
    summary = import_dataset("bcdr", csv, tmp_path / "ds", image_dir=str(bcdr))
    assert summary.n_images == 4


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_image_is_skipped(bcdr, tmp_path):
    (bcdr / "patient_1/study_1/img_1_1_1_RCC.tif").write_bytes(b"II*\x00garbage")
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    assert summary.n_images == 3
    assert any("img_1_1_1_RCC" in s.item and "unreadable image" in s.reason for s in summary.skipped)
    assert not list((tmp_path / "ds" / "masks").glob("img_1_1_1_RCC*"))


@pytest.mark.parametrize(
    ("xs", "ys", "problem"),
    [
        ("1 2", "1 2", "needs at least 3"),
        ("1 2 3", "1 2", "differ in length"),
        ("1 a 3", "1 2 3", "non-numeric"),
        ("-5 10 20", "1 2 3", "outside"),
    ],
)
def test_bad_outlines_are_explained(xs, ys, problem):
    points, reason = parse_points(xs, ys, WIDTH, HEIGHT)
    assert points is None and problem in reason


def test_points_on_the_far_border_are_clipped():
    points, reason = parse_points("0 96 96", "0 0 80", WIDTH, HEIGHT)
    assert reason == "" and points.tolist() == [[0, 0], [95, 0], [95, 79]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" Malign ", "malignant"), ("MALIGNANT", "malignant"), ("Benign", "benign"), ("", None), ("other", None)],
)
def test_parse_classification(text, expected):
    assert parse_classification(text) == expected
