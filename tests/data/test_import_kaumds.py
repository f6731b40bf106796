"""KAUMDS import: quirky sheet columns, .dcm paths for .jpg files, stray spaces, BI-RADS 2, privacy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.base import pseudonymous_id
from mammocad.data.importers.kaumds import parse_birads, read_sheet
from mammocad.data.manifest import read_classes, read_manifest, resolve_path
from mammocad.errors import DatasetError
from tests.conftest import real_file

# Raw patient IDs: distinctive strings, so finding one anywhere in the output is a real leak.
PID_A = "KAUPID-740011"
PID_B = "KAUPID-740022"
PID_C = "KAUPID-740033"  # this patient's file names embed the ID, as KAUMDS names can
PID_D = "KAUPID-740044"
PID_E = "KAUPID-740055"
ALL_PIDS = (PID_A, PID_B, PID_C, PID_D, PID_E)
HEADERS = [
    "Study date",
    "PatientID",
    "Patient age ",
    "Breast type",
    "Breast view",
    "Percentage of\n granular tissue(density)",
    "Assesment",
    "Image path",
]


def write_jpeg(path: Path, seed: int) -> Path:
    """A small distinct grey JPEG (distinct content: the runner drops duplicate files)."""
    rng = np.random.default_rng(seed)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (64, 48), dtype=np.uint8), (5, 5), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture
def kaumds(tmp_path) -> Path:
    root = tmp_path / "KAUMDS"
    write_jpeg(root / "BIRAD 1" / "2019_BC000101_CC_R.jpg", 1)  # the sheet adds a stray space
    write_jpeg(root / "BIRAD 1" / "2019_BC000101_ MLO_R.jpg", 2)  # the file has the stray space
    write_jpeg(root / "BIRAD 4" / "2020_bc000202_lcc.JPG", 3)  # case differs from the sheet
    write_jpeg(root / "BIRAD 5" / f"2021_{PID_C}_ MLO_L.jpg", 4)  # the ID is in the file name
    write_jpeg(root / "BIRAD 2" / "2019_BC000404_CC_L.jpg", 5)
    write_jpeg(root / "BIRAD 4" / "2020_BC000505_MLO_L.jpg", 6)  # "BIRADS4a" in the sheet
    write_jpeg(root / "BIRAD 4" / "2020_BC000606_CC_R.jpg", 7)  # the sheet says 3: label conflict
    corrupt = write_jpeg(root / "BIRAD 3" / "2020_BC000707_CC_R.jpg", 8)
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size * 2 // 3])  # truncated JPEG
    (root / "BIRAD 3" / "2020_BC000717_CC_L.jpg").write_text("not an image at all")
    write_jpeg(root / "BIRAD 1" / "2018_BC000909_CC_L.jpg", 9)  # no sheet row names it
    write_jpeg(root / "NAN" / "2019_BC000808_CC_L.jpg", 10)  # its row has no assessment
    rows = [
        ["2019-03-04", PID_A, "45", "Right", "CC_R", "25%", "BIRAD 1", "BIRAD 1/2019_BC000101_ CC_R.dcm"],
        ["2019-03-04", PID_A, "45", "Right", "R MLO", "25%", "BIRAD 1", "BIRAD 1\\2019_BC000101_MLO_R.dcm"],
        ["2020-01-10", PID_B, 51, "Left", "LCC", "50%", "BI-RADS 4", "2020_BC000202_ LCC.dcm"],
        ["2021-06-01", PID_C, "60 Y", None, "MLO_L", "75%", 5, f"BIRAD 5/2021_{PID_C}_MLO_L.dcm"],
        ["2019-05-05", PID_D, "39", "Left", "CC_L", "10%", "BIRAD 2", "BIRAD 2/2019_BC000404_CC_L.dcm"],
        ["2020-02-02", PID_D, "40", "Left", "MLO_L", "10%", "BIRADS4a", "BIRAD 4/2020_BC000505_MLO_L.dcm"],
        ["2020-02-02", PID_E, "58", "Right", "CC_R", "50%", "BIRAD 3", "BIRAD 3/2020_BC000606_CC_R.dcm"],
        ["2020-02-02", PID_E, "58", "Right", "CC_R", "50%", "BIRAD 3", "BIRAD 3/2020_BC000707_CC_R.dcm"],
        ["2020-02-02", PID_E, "58", "Left", "MLO_L", "50%", "BIRAD 3", "BIRAD 3/2020_BC000999_MLO_L.dcm"],
        ["2019-09-09", PID_E, "57", "Left", "CC_L", "50%", "NAN", "NAN/2019_BC000808_CC_L.dcm"],
        ["2020-02-02", PID_E, "58", "Left", "CC_L", "50%", "BIRAD 3", "BIRAD 3/2020_BC000717_CC_L.dcm"],
    ]
    pd.DataFrame(rows, columns=HEADERS).to_excel(root / "KAUMDS.xlsx", index=False)
    return root


def all_output_text(dataset: Path) -> str:
    """Every file of the dataset dir as text (binary decoded leniently) plus the decoded manifest."""
    texts = [p.read_bytes().decode("latin-1") for p in dataset.rglob("*") if p.is_file()]
    manifest = read_manifest(dataset)
    texts.append(manifest.to_json())
    return "\n".join(texts)


def test_default_import_cleans_the_sheet_and_excludes_birads_2(kaumds, tmp_path):
    summary = import_dataset("kaumds", kaumds, tmp_path / "ds")
    dataset = tmp_path / "ds"
    manifest = read_manifest(dataset).set_index("image_id")
    assert summary.n_images == 5
    assert read_classes(dataset) == ["birads_1", "birads_4", "birads_5"]
    assert summary.per_class == {"birads_1": 2, "birads_4": 2, "birads_5": 1}

    # Sheet row numbers (header = row 1) make the image ids.
    assert sorted(manifest.index) == ["kaumds-00002", "kaumds-00003", "kaumds-00004", "kaumds-00005", "kaumds-00007"]
    first, second = manifest.loc["kaumds-00002"], manifest.loc["kaumds-00003"]
    # The file names hold patient codes (BC + digits): each image is linked in under its image id.
    linked = {image_id: (dataset / manifest.loc[image_id].image_path).read_bytes() for image_id in manifest.index}
    assert first.image_path == "images/kaumds-00002.jpg"
    assert linked["kaumds-00002"] == (kaumds / "BIRAD 1" / "2019_BC000101_CC_R.jpg").read_bytes()  # ".dcm" + space
    assert linked["kaumds-00003"] == (kaumds / "BIRAD 1" / "2019_BC000101_ MLO_R.jpg").read_bytes()
    assert manifest.loc["kaumds-00004"].image_path == "images/kaumds-00004.jpg"
    assert linked["kaumds-00004"] == (kaumds / "BIRAD 4" / "2020_bc000202_lcc.JPG").read_bytes()
    assert (first.laterality, first.view, second.laterality, second.view) == ("R", "CC", "R", "MLO")
    assert (manifest.loc["kaumds-00004"].laterality, manifest.loc["kaumds-00004"].view) == ("L", "CC")
    assert first.birads == 1 and first.label_name == "birads_1" and pd.isna(first.pathology)
    assert manifest.loc["kaumds-00007"].birads == 4  # "BIRADS4a"
    assert first.density == "25%"
    meta = json.loads(first.meta)
    assert meta["age"] == 45 and meta["sheet_row"] == 2 and meta["birads_folder"] == 1
    assert json.loads(manifest.loc["kaumds-00005"].meta)["age"] == 60

    # One patient, one study for the two views of patient A; other patients differ.
    assert first.patient_id == second.patient_id and first.study_id == second.study_id
    assert first.patient_id.startswith("kaumds-") and first.patient_id != manifest.loc["kaumds-00004"].patient_id
    assert summary.n_patients == 4

    reasons = {s.item.split(" (")[0]: s.reason for s in summary.skipped}
    assert "BI-RADS 2 excluded" in reasons["KAUMDS.xlsx row 6"]
    assert "label conflict" in reasons["KAUMDS.xlsx row 8"]
    assert "unreadable image" in reasons["KAUMDS.xlsx row 9"] and "truncated" in reasons["KAUMDS.xlsx row 9"]
    assert "not found" in reasons["KAUMDS.xlsx row 10"]
    assert reasons["KAUMDS.xlsx row 11"] == "no BI-RADS assessment"
    assert "unreadable image: not a supported image" in reasons["KAUMDS.xlsx row 12"]
    unlisted = [s for s in summary.skipped if "not named by any sheet row" in s.reason]
    # A file no row names may carry an ID the sheet never lists: the message shows its pseudonym.
    assert [Path(s.item).name for s in unlisted] == [f"2018_{pseudonymous_id('BC000909', 'kaumds')}_CC_L.jpg"]
    assert len(summary.skipped) == 7
    assert "BI-RADS 2 excluded" in (dataset / "import_summary.txt").read_text()


def test_raw_patient_ids_appear_nowhere_in_the_dataset(kaumds, tmp_path):
    summary = import_dataset("kaumds", kaumds, tmp_path / "ds", include_birads2=True)
    dataset = tmp_path / "ds"
    text = all_output_text(dataset) + summary.to_text() + json.dumps([s.__dict__ for s in summary.skipped])
    for pid in ALL_PIDS:
        assert pid not in text
        assert pid.lower() not in text.lower()
    # The image whose file name holds the ID is linked into the dataset under its image id.
    row = read_manifest(dataset).set_index("image_id").loc["kaumds-00005"]
    assert row.image_path == "images/kaumds-00005.jpg"
    original = kaumds / "BIRAD 5" / f"2021_{PID_C}_ MLO_L.jpg"
    assert resolve_path(dataset, row.image_path).read_bytes() == original.read_bytes()
    assert (row.laterality, row.view, row.birads) == ("L", "MLO", 5)


def test_birads_2_can_be_included(kaumds, tmp_path):
    summary = import_dataset("kaumds", kaumds, tmp_path / "ds", include_birads2=True)
    manifest = read_manifest(tmp_path / "ds").set_index("image_id")
    assert summary.n_images == 6
    assert manifest.loc["kaumds-00006"].label_name == "birads_2"
    assert read_classes(tmp_path / "ds") == ["birads_1", "birads_2", "birads_4", "birads_5"]
    assert not any("BI-RADS 2" in s.reason for s in summary.skipped)


def test_sheet_can_be_named_and_columns_are_matched_loosely(kaumds, tmp_path):
    sheet = kaumds / "KAUMDS.xlsx"
    moved = tmp_path / "sheets" / "labels.xlsx"
    moved.parent.mkdir()
    sheet.rename(moved)
    with pytest.raises(DatasetError, match="no Excel workbook"):
        import_dataset("kaumds", kaumds, tmp_path / "ds0")
    summary = import_dataset("kaumds", kaumds, tmp_path / "ds", excel=str(moved))
    assert summary.n_images == 5
    table = read_sheet(moved)
    assert list(table.columns[:4]) == ["sheet_row", "study_date", "patient_id", "age"]
    assert table["density"].tolist()[0] == "25%"


def test_sheet_without_required_columns_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    pd.DataFrame({"PatientID": ["x"], "Breast view": ["CC_R"]}).to_excel(root / "s.xlsx", index=False)
    with pytest.raises(
        DatasetError, match=r"no sheet has the columns .*'Sheet1' \(lacks \['assessment', 'image_path'\]"
    ):
        import_dataset("kaumds", root, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BIRAD 3", 3),
        ("BI-RADS 4", 4),
        ("4", 4),
        ("4.0", 4),
        ("BIRADS4a", 4),
        ("birad5", 5),
        ("BI-RADS: 1", 1),
        ("NAN", None),
        ("", None),
        (None, None),
        ("BIRAD 7", None),
        ("benign", None),
    ],
)
def test_parse_birads(text, expected):
    assert parse_birads(text) == expected


def test_workbook_with_a_summary_sheet_first_blank_rows_and_several_workbooks(kaumds, tmp_path):
    """The real download's shape: a summary sheet before the data sheet, a used range far longer
    than the data, stray cells below it, and a second workbook with other columns beside it."""
    import openpyxl

    rows = pd.read_excel(kaumds / "KAUMDS.xlsx", dtype=object)
    (kaumds / "KAUMDS.xlsx").unlink()
    book = openpyxl.Workbook()
    book.active.title = "tabel "
    book["tabel "].append(["ASSESEMENT ", "number of cases "])
    book["tabel "].append(["BIRAD 1", 2])
    data = book.create_sheet("correctSheet")
    data.append(HEADERS)
    for values in rows.itertuples(index=False):
        data.append([None if pd.isna(v) else v for v in values])
    data.cell(row=5000, column=3, value=11)  # a stray count far below the data (the real sheet has one)
    book.save(kaumds / "correctSheetlast.xlsx")
    other = openpyxl.Workbook()
    other.active.append(["patientID", "patient No", "Right Mammogram", "Left Mammogram"])
    other.save(kaumds / "BC with ultrasound.xlsx")

    summary = import_dataset("kaumds", kaumds, tmp_path / "ds")
    assert summary.n_images == 5 and len(summary.skipped) == 7  # as with the plain one-sheet workbook
    assert any("ignored 1 row(s)" in w and "row 5000" in w for w in summary.warnings)

    with pytest.raises(
        DatasetError, match=r"no sheet named 'data'; the workbook's sheets are \['tabel ', 'correctSheet'\]"
    ):
        import_dataset("kaumds", kaumds, tmp_path / "ds1", excel="correctSheetlast.xlsx", sheet="data")
    with pytest.raises(DatasetError, match=r"'tabel ' \(lacks \['patient_id', 'assessment', 'image_path'\]"):
        import_dataset("kaumds", kaumds, tmp_path / "ds2", excel="correctSheetlast.xlsx", sheet=0)
    assert import_dataset("kaumds", kaumds, tmp_path / "ds3", sheet="correctsheet").n_images == 5


def test_bare_number_class_folders_are_cross_checked(kaumds, tmp_path):
    """The published folders are named ``1 3 4 5``: the folder/sheet cross-check must still run."""
    for folder in kaumds.glob("BIRAD *"):
        folder.rename(kaumds / folder.name.split()[-1])
    summary = import_dataset("kaumds", kaumds, tmp_path / "ds")
    reasons = {s.item.split(" (")[0]: s.reason for s in summary.skipped}
    assert "label conflict" in reasons["KAUMDS.xlsx row 8"] and "folder BIRAD 4" in reasons["KAUMDS.xlsx row 8"]
    assert summary.n_images == 5


def test_real_kaumds_download_imports_fast_with_no_identifier(real_formats, tmp_path):
    """The real workbook (~1.05 million rows, ~5.4k with data) and its 22 JPEGs in folders 1 3 4 5."""
    import time

    source = real_file(real_formats, "kaumds")
    start = time.perf_counter()
    summary = import_dataset("kaumds", source, tmp_path / "ds")
    elapsed = time.perf_counter() - start
    assert elapsed < 120  # was: never finished (every blank row an item); reading the sheet takes ~4 s
    # 5386 data rows (+ 1 stray cell, not an item); 21 JPEGs, of which 11 are named by a row.
    assert summary.per_class == {"birads_1": 6, "birads_5": 5}
    assert summary.skipped_by_reason == {
        "BI-RADS 2 excluded": 3118,
        "image file not found": 2257,
        "image file not named by any sheet row": 10,
    }
    assert sum(summary.skipped_by_reason.values()) == len(summary.skipped) < 6000
    assert any("ignored 1 row(s)" in w for w in summary.warnings)
    manifest = read_manifest(tmp_path / "ds")
    assert set(manifest["laterality"]) == {"L", "R"} and set(manifest["view"]) == {"CC", "MLO"}
    assert manifest["image_path"].str.startswith("images/kaumds-").all()  # the file names hold patient codes
    # No patient code (BC + digits, as the sheet and the file names write them) in any output.
    text = all_output_text(tmp_path / "ds") + summary.to_text() + json.dumps([s.__dict__ for s in summary.skipped])
    assert not re.search(r"BC ?\d{5,}", text)  # upper case: a pseudonym's hex may hold "bc37103"
    # Two imports of the same source: byte-identical manifest and classes.
    import_dataset("kaumds", source, tmp_path / "again")
    for name in ("manifest.parquet", "classes.json"):
        assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
