"""BCDR import: outline polygons -> masks and boxes, lesion grouping, bad outlines, lookups, views,
views without outlines (img CSV), and the real BCDR-D01 CSVs in both published spellings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.bcdr import parse_classification, parse_points, read_table, resolve_view
from mammocad.data.manifest import lesions_of, read_manifest, resolve_path
from mammocad.errors import DatasetError
from tests.conftest import real_file

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
    # no img CSV next to the outlines CSV: the views without an outline cannot be seen, and it says so
    assert any("no BCDR img CSV" in w and "cannot be seen" in w for w in summary.warnings)


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


def write_img_csv(root: Path, rows: list[str], name: str = "bcdr_d01_img.csv") -> Path:
    """An img CSV in BCDR's ``, `` spelling (trailing spaces included)."""
    header = "patient_id, study_id, series, image_filename, image_type_name, image_type_id, age, density"
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_views_without_outline_from_img_csv(bcdr, tmp_path):
    write_tif(bcdr / "patient_2/study_3/img_2_3_7.tif", 7)  # no view in the name: image_type_id says RCC
    write_tif(bcdr / "patient_1/study_1/img_1_1_1_LCC.tif", 8)
    write_tif(bcdr / "patient_3/study_9/img_3_9_1_RCC.tif", 9)
    write_img_csv(
        bcdr,
        [
            "1, 1, 1,  patient_1/study_1/img_1_1_1_RCC.tif, RCC, 0, 57, 3 ",  # outlined (line 2)
            "2, 3, 1,  patient_2/study_3/img_2_3_7.tif, , 0, 61, 4 ",  # line 3: right breast, lesion is left
            "1, 1, 1,  patient_1/study_1/img_1_1_1_LCC.tif, LCC, 1, 57, 3 ",  # line 4: left has lesion 12 (study 2)
            "3, 9, 1,  patient_3/study_9/img_3_9_1_RCC.tif, RCC, 0, 58, 2 ",  # line 5: right has lesion 32 (study 4)
            "9, 9, 1,  patient_9/study_9/img_9_9_1_LO.tif, LO, 3, 40, 1 ",  # line 6: file missing
        ],
    )
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    normal = manifest.loc["img_2_3_7"]
    assert (normal.label_name, normal.pathology, normal.n_lesions) == ("normal", "normal", 0)
    assert (normal.laterality, normal.view, normal.density, normal.study_id) == ("R", "CC", "4", "bcdr-2-3")
    assert pd.isna(normal.mask_path)
    meta = json.loads(normal.meta)
    assert meta["no_outline"] is True and meta["age"] == 61 and meta["img_csv_line"] == 3
    assert summary.per_class == {"normal": 1, "benign": 2, "malignant": 2}
    # the outlined image keeps its outline row's density and age; the img CSV adds its line
    rcc = json.loads(manifest.loc["img_1_1_1_RCC"].meta)
    assert rcc["img_csv_line"] == 2 and rcc["age"] == 56 and manifest.loc["img_1_1_1_RCC"].density == "2"

    reasons = {s.item: s.reason for s in summary.skipped}
    ipsi = reasons["patient_1/study_1/img_1_1_1_LCC.tif (bcdr_d01_img.csv line 4)"]
    assert "same breast has an outlined lesion" in ipsi and "study 2 lesion 12" in ipsi
    assert "lesion 32" in reasons["patient_3/study_9/img_3_9_1_RCC.tif (bcdr_d01_img.csv line 5)"]
    assert reasons["patient_9/study_9/img_9_9_1_LO.tif (bcdr_d01_img.csv line 6)"] == "image file not found"
    assert any(w.startswith("1 view(s) listed in bcdr_d01_img.csv") and "'normal'" in w for w in summary.warnings)
    assert not any("no BCDR img CSV" in w for w in summary.warnings)

    off = import_dataset("bcdr", bcdr, tmp_path / "ds-off", normals=False)
    assert off.per_class == {"benign": 2, "malignant": 2}
    listed = {s.item: s.reason for s in off.skipped}
    assert listed["patient_2/study_3/img_2_3_7.tif (bcdr_d01_img.csv line 3)"].endswith("normals=false)")
    assert not any("'normal'" in w for w in off.warnings)


def test_img_csv_option_and_several_candidates(bcdr, tmp_path):
    write_tif(bcdr / "patient_2/study_3/img_2_3_5_RCC.tif", 7)
    tables = tmp_path / "tables"
    tables.mkdir()
    given = write_img_csv(tables, ["2, 3, 1, patient_2/study_3/img_2_3_5_RCC.tif, RCC, 0, 61, 4"], "info.csv")
    write_img_csv(bcdr, [], "a_img.csv")
    write_img_csv(bcdr, [], "b_img.csv")
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds0")
    assert summary.per_class.get("normal", 0) == 0
    assert any("several img CSVs" in w for w in summary.warnings)
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds1", img_csv=str(given))
    assert summary.per_class["normal"] == 1
    with pytest.raises(DatasetError, match="img CSV"):
        import_dataset("bcdr", bcdr, tmp_path / "ds2", img_csv=str(tables / "nope.csv"))


@pytest.mark.parametrize(
    ("filename", "outline_row", "img_row", "expected"),
    [
        ("patient_3/study_4/img_3_4_1_LO.tif", {}, {}, ("L", "MLO", "file name")),
        ("p/img_1", {"image_view": "1"}, {}, ("R", "CC", "image_view")),  # outlines CSV: 1=RCC 2=LCC 3=RO 4=LO
        ("p/img_1", {"image_view": " 2"}, {}, ("L", "CC", "image_view")),
        ("p/img_1", {"image_view": "3"}, {}, ("R", "MLO", "image_view")),
        ("p/img_1", {"image_view": "4"}, {}, ("L", "MLO", "image_view")),
        ("p/img_1", {"image_view": "RCC"}, {}, ("R", "CC", "image_view")),  # text codes too
        ("p/img_1", {"image_view": "0"}, {}, (None, None, None)),  # not a code of the outlines CSV
        ("p/img_1", {}, {"image_type_id": "0"}, ("R", "CC", "image_type_id")),  # img CSV: 0=RCC .. 3=LO
        ("p/img_1", {}, {"image_type_id": "3"}, ("L", "MLO", "image_type_id")),
        ("p/img_1", {}, {"image_type_name": " RO"}, ("R", "MLO", "image_type_name")),
        (
            "p/img_1",
            {"image_view": "2"},
            {"image_type_name": "LCC", "image_type_id": "1"},
            ("L", "CC", "image_type_name"),
        ),
    ],
)
def test_resolve_view(filename, outline_row, img_row, expected):
    info = resolve_view(filename, outline_row, img_row)
    assert (info.side, info.view, info.source) == expected and not info.conflicts


def test_view_codes_disagreeing_with_the_file_name(bcdr, tmp_path):
    """The file name wins; the codes are kept in meta.view_conflict and the import warns."""
    info = resolve_view("patient_1/study_2/img_1_2_1_LO.tif", {"image_view": "1"}, {"image_type_id": "3"})
    assert (info.side, info.view) == ("L", "MLO") and info.conflicts == {"file name": "LO", "image_view": "RCC"}
    csv_path = bcdr / "bcdr_d01_outlines.csv"
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table["image_view"] = table["image_view"].replace({"LO": "1"})  # RCC, but the files are *_LO
    table.to_csv(csv_path, index=False)
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    lo = read_manifest(tmp_path / "ds").set_index("image_id").loc["img_1_2_1_LO"]
    assert (lo.laterality, lo.view) == ("L", "MLO")
    assert json.loads(lo.meta)["view_conflict"] == {"file name": "LO", "image_view": "RCC"}
    assert any(w.startswith("1 image(s) whose view sources disagree") for w in summary.warnings)


def test_column_spelling_and_real_line_numbers(bcdr, tmp_path):
    """``axiliary`` (BCDR's notes) reads as ``axillary``; items name the file's real line numbers."""
    csv_path = bcdr / "bcdr_d01_outlines.csv"
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table = table.rename(columns={"mammography_axillary_adenopathy": "Mammography_Axiliary_Adenopathy "})
    table.loc[0, "Mammography_Axiliary_Adenopathy "] = "1"
    lines = table.to_csv(index=False).splitlines()
    lines[2:2] = ["", ",,,,"]  # lines 3-4: a blank line and an empty row, then the data rows go on
    lines.insert(7, lines[7].replace(" patient_2/study_3/IMG_2_3_5_LCC.tif", ""))  # line 8: no filename
    csv_path.write_text("\n".join(lines) + "\n")
    assert [line for line, _ in read_table(csv_path, ()).rows[:3]] == [2, 5, 6]
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    [lesion] = lesions_of(manifest.loc["img_1_1_1_RCC"])
    assert lesion.lesion_type == "mass+axillary_adenopathy"
    reasons = {s.item: s.reason for s in summary.skipped}
    assert reasons["bcdr_d01_outlines.csv line 8"] == "no image_filename or patient_id"
    assert "img_1_2_1_LO lesion 13 (bcdr_d01_outlines.csv line 6)" in reasons
    assert "13" in lines[6 - 1].split(",")[3]  # line 6 is lesion 13's row
    assert reasons["patient_2/study_3/img_2_3_6_LO.tif (bcdr_d01_outlines.csv line 10)"] == "image file not found"
    assert "img_2_3_6_LO" in lines[10 - 1]
    assert json.loads(manifest.loc["img_2_3_5_LCC"].meta)["csv_lines"] == [7, 9]


# --- the real BCDR-D01 metadata (ecobost/cnn4brca database_info), both published spellings -------------

D01_WIDTH, D01_HEIGHT = 3328, 4084  # the size of the real mask createMask/img_20_30_1_RCC_mask.png
SPELLINGS = ("createMask", "createMask_binary")  # "," and ", " separated


@pytest.fixture(scope="module")
def real_bcdr(real_formats, tmp_path_factory):
    """The real CSVs with placeholder mammograms: BCDR's TIFFs are not in the real-formats copy (too
    large), so black 3328x4084 TIFFs (the D01 size) are written at the paths the img CSV names,
    each with a distinct first row so that duplicate detection keeps them apart."""
    base = real_file(real_formats, "bcdr-d01")
    for spelling in SPELLINGS:
        for name in ("bcdr_d01_outlines.csv", "bcdr_d01_img.csv"):
            real_file(base, f"{spelling}/{name}")
    root = tmp_path_factory.mktemp("bcdr-real")
    with (base / "createMask/bcdr_d01_img.csv").open() as handle:
        names = [row["image_filename"].strip() for row in csv.DictReader(handle)]
    for k, name in enumerate(names):
        pixels = np.zeros((D01_HEIGHT, D01_WIDTH), dtype=np.uint8)
        pixels[0, : k + 1] = 1
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "images" / name), pixels)
    summaries = {}
    for spelling in SPELLINGS:
        summaries[spelling] = import_dataset("bcdr", base / spelling, root / spelling, image_dir=str(root / "images"))
    return base, root, names, summaries


@pytest.mark.realdata
def test_real_bcdr_d01(real_bcdr):
    base, root, names, summaries = real_bcdr
    assert len(names) == 26
    summary = summaries["createMask"]
    manifest = read_manifest(root / "createMask")
    # 15 outlines = 15 outlined images (4 patients); of the 11 views without an outline, 8 are of a
    # lesion-free breast (normal) and 3 (patient 8's RCC views) of a breast whose RO views are outlined.
    assert (summary.n_images, summary.n_patients, summary.n_lesions, summary.n_with_mask) == (23, 4, 15, 15)
    assert summary.per_class == {"normal": 8, "benign": 13, "malignant": 2}
    assert sorted(manifest["patient_id"].unique()) == ["bcdr-3", "bcdr-4", "bcdr-5", "bcdr-8"]
    assert len(summary.skipped) == 3
    assert all(
        s.item.startswith("patient_8/study_")
        and "_RCC.tif" in s.item
        and "same breast has an outlined lesion" in s.reason
        for s in summary.skipped
    )
    assert any(w.startswith("8 view(s) listed in bcdr_d01_img.csv") for w in summary.warnings)
    # laterality and view on every image, agreeing with the file name and the img CSV's type name
    expected = {"RCC": ("R", "CC"), "LCC": ("L", "CC"), "RO": ("R", "MLO"), "LO": ("L", "MLO")}
    for row in manifest.itertuples():
        assert (row.laterality, row.view) == expected[row.image_id.rsplit("_", 1)[-1]]
        meta = json.loads(row.meta)
        assert expected[meta["image_type_name"]] == (row.laterality, row.view) and "view_conflict" not in meta
        assert meta["age"] > 0 and row.density in ("1", "2", "3", "4")
        outlined = row.label_name != "normal"
        assert outlined == pd.notna(row.mask_path) == (row.n_lesions > 0) == (not meta.get("no_outline"))
        if outlined:
            mask = cv2.imread(str(resolve_path(root / "createMask", row.mask_path)), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (D01_HEIGHT, D01_WIDTH) and 500 < (mask > 0).sum() < 0.05 * mask.size
            [lesion] = lesions_of(manifest.iloc[row.Index])
            ys, xs = np.nonzero(mask)
            assert (lesion.x0, lesion.y0, lesion.x1, lesion.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # items and meta name real lines of the files (these CSVs have no quotes, so no line holds two rows)
    for spelling in SPELLINGS:
        for name in ("bcdr_d01_outlines.csv", "bcdr_d01_img.csv"):
            assert '"' not in (base / spelling / name).read_text()
    outline_lines = (base / "createMask/bcdr_d01_outlines.csv").read_text().splitlines()
    img_lines = (base / "createMask/bcdr_d01_img.csv").read_text().splitlines()
    for row in manifest.itertuples():
        meta = json.loads(row.meta)
        file_name = f"{row.image_id}.tif"
        assert file_name in img_lines[meta["img_csv_line"] - 1].split("/")[-1]
        assert all(file_name in outline_lines[n - 1] for n in meta.get("csv_lines", []))
    for s in summary.skipped:
        number = int(s.item.rsplit("line ", 1)[1].rstrip(")"))
        assert s.item.split(" (")[0] in img_lines[number - 1]


@pytest.mark.realdata
def test_real_bcdr_d01_spellings_import_identically(real_bcdr):
    _, root, _, summaries = real_bcdr
    first, second = (read_manifest(root / s).sort_values("image_id").reset_index(drop=True) for s in SPELLINGS)
    pd.testing.assert_frame_equal(first, second)
    a, b = (summaries[s] for s in SPELLINGS)
    assert (a.per_class, a.skipped, a.warnings, a.n_lesions) == (b.per_class, b.skipped, b.warnings, b.n_lesions)
    for rel in first["mask_path"].dropna():
        assert (root / SPELLINGS[0] / rel).read_bytes() == (root / SPELLINGS[1] / rel).read_bytes()


@pytest.mark.realdata
def test_real_bcdr_d01_without_normals(real_bcdr, tmp_path):
    base, root, _, _ = real_bcdr
    summary = import_dataset(
        "bcdr", base / "createMask_binary", tmp_path / "ds", image_dir=str(root / "images"), normals=False
    )
    assert summary.n_images == 15 and summary.per_class == {"benign": 13, "malignant": 2}
    assert len(summary.skipped) == 11 and summary.skipped_by_reason == {
        "no lesion outline": 8,
        "no lesion outline, but the same breast has an outlined lesion": 3,
    }


@pytest.mark.realdata
def test_real_bcdr_mask_png_against_our_fill(real_bcdr):
    """The curator's own mask (createMask/img_20_30_1_RCC_mask.png, Octave poly2mask) can only be
    compared where its image has outline rows; this copy of the CSVs has none for patient 20."""
    base, root, _, _ = real_bcdr
    mask_png = real_file(base, "createMask/img_20_30_1_RCC_mask.png")
    manifest = read_manifest(root / "createMask").set_index("image_id")
    if "img_20_30_1_RCC" not in manifest.index:
        pytest.skip("img_20_30_1_RCC has no rows in this copy of bcdr_d01_outlines.csv: nothing to compare")
    theirs = cv2.imread(str(mask_png), cv2.IMREAD_UNCHANGED) == 255
    ours = cv2.imread(str(resolve_path(root / "createMask", manifest.loc["img_20_30_1_RCC"].mask_path)), 0) > 0
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.95


def test_image_without_any_view_is_kept_and_warned_about(bcdr, tmp_path):
    csv_path = bcdr / "bcdr_d01_outlines.csv"
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table.loc[0, ["image_view", "image_filename"]] = ["", " patient_1/study_1/img_1_1_1.tif"]
    table.to_csv(csv_path, index=False)
    (bcdr / "patient_1/study_1/img_1_1_1_RCC.tif").rename(bcdr / "patient_1/study_1/img_1_1_1.tif")
    summary = import_dataset("bcdr", bcdr, tmp_path / "ds")
    row = read_manifest(tmp_path / "ds").set_index("image_id").loc["img_1_1_1"]
    assert row.label_name == "malignant" and pd.isna(row.laterality) and pd.isna(row.view)
    assert any(w.startswith("1 image(s) without laterality/view") for w in summary.warnings)
