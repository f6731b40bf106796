"""INbreast import: the real INbreast.csv, AllDICOMs naming, plist XML outlines, labels, bad inputs.

The real INbreast DICOMs are not available here: the tests write small *placeholder* DICOMs
(64x48, uint16, distinct content) at the paths the real release uses, and XML annotations in the
real OsiriX plist structure.
"""

from __future__ import annotations

import csv
import hashlib
import json
import plistlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.inbreast import parse_birads, parse_dicom_name, roi_type
from mammocad.data.manifest import lesions_of, read_classes, read_manifest, resolve_path
from mammocad.data.synth.writers import _write_dicom
from mammocad.errors import DatasetError
from tests.conftest import real_file

WIDTH, HEIGHT = 64, 48
SQUARE = [(10, 20), (30, 20), (30, 40), (10, 40)]  # x 10..30, y 20..40: 21 x 21 pixels filled
TRIANGLE = [(40.4, 5.2), (60.0, 5.0), (40.0, 25.0)]
POINT = [(33.25, 12.75)]
BIRADS_ORDER = ["birads_1", "birads_2", "birads_3", "birads_4a", "birads_4b", "birads_4c", "birads_5", "birads_6"]
HEADER = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]


def patient_hash(patient: int) -> str:
    return hashlib.blake2b(f"patient-{patient}".encode(), digest_size=8).hexdigest()


def dicom_name(file_name: str, patient: str | None, laterality: str, view: str) -> str:
    """The real AllDICOMs naming; the file name says ML where the CSV says MLO."""
    code = {"MLO": "ML"}.get(view, view)
    middle = f"_{patient}" if patient else ""
    return f"{file_name}{middle}_MG_{laterality}_{code}_ANON.dcm"


def write_placeholder(path: Path, seed: int) -> None:
    """A valid, tiny MG DICOM standing in for a real INbreast image (distinct content per seed)."""
    pixels = np.random.default_rng(seed).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    _write_dicom(path, pixels, "PLACEHOLDER", "L", compress=False)


def roi(name: str, points: list[tuple[float, float]], index: int = 0) -> dict:
    """One ROI dict with the keys of the real INbreast XML (OsiriX export)."""
    xs = [p[0] for p in points] or [0.0]
    ys = [p[1] for p in points] or [0.0]
    return {
        "Area": 0.0,
        "Center": f"({sum(xs) / len(xs):.6f}, {sum(ys) / len(ys):.6f}, 0.000000)",
        "Dev": 0.0,
        "IndexInImage": index,
        "Max": 0.0,
        "Mean": 0.0,
        "Min": 0.0,
        "Name": name,
        "NumberOfPoints": len(points),
        "Point_mm": [f"({x * 0.07:.6f}, {y * 0.07:.6f}, 0.000000)" for x, y in points],
        "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points],
        "Total": 0.0,
        "Type": 15 if len(points) > 1 else 19,
    }


def write_xml(path: Path, rois: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
    path.write_bytes(plistlib.dumps(doc, fmt=plistlib.FMT_XML))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """``;``-separated with CRLF line ends, as the real INbreast.csv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(";".join(r) for r in [HEADER, *rows]) + "\r\n").encode())


def read_mask(dataset: Path, rel: str) -> np.ndarray:
    return cv2.imread(str(resolve_path(dataset, rel)), cv2.IMREAD_GRAYSCALE)


# --- the real INbreast.csv ------------------------------------------------------------------


def missing_dicom(index: int) -> bool:
    """Rows (0-based) whose DICOM the placeholder tree leaves out, to exercise 'DICOM not found'."""
    return index % 50 == 7


@pytest.fixture(scope="module")
def real_inbreast(real_formats, tmp_path_factory):
    """The real INbreast.csv in a folder with placeholder DICOMs (4 consecutive rows per patient)."""
    table = real_file(real_formats, "inbreast/INbreast.csv")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    root = tmp_path_factory.mktemp("inbreast") / "INbreast"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "INbreast.csv").write_bytes(table.read_bytes())
    for index, row in enumerate(rows):
        if not missing_dicom(index):
            name = dicom_name(row["File Name"], patient_hash(index // 4), row["Laterality"], row["View"])
            write_placeholder(root / "AllDICOMs" / name, index)
    names = [row["File Name"] for row in rows]
    write_xml(root / "AllXML" / f"{names[0]}.xml", [roi("Mass", SQUARE)])
    write_xml(root / "AllXML" / f"{names[1]}.xml", [roi("Calcification", POINT)])
    write_xml(root / "AllXML" / f"{names[2]}.xml", [roi("Spiculated Region", TRIANGLE), roi("Calcification", POINT, 1)])
    return root, rows


def test_real_csv_with_placeholder_dicoms(real_inbreast, tmp_path):
    root, rows = real_inbreast
    summary = import_dataset("inbreast", root, tmp_path / "ds")
    df = read_manifest(tmp_path / "ds").set_index("image_id")

    kept = [(i, row) for i, row in enumerate(rows) if not missing_dicom(i)]
    assert len(rows) == 410 and len(df) == len(kept) == 401
    expected = Counter(f"birads_{row['Bi-Rads'].strip()}" for _, row in kept)
    assert df["label_name"].value_counts().to_dict() == dict(expected)
    assert read_classes(tmp_path / "ds") == BIRADS_ORDER
    assert json.loads((tmp_path / "ds" / "classes.json").read_text())["classes"] == BIRADS_ORDER
    assert summary.n_patients == len({i // 4 for i, _ in kept}) == df["patient_id"].nunique()
    assert summary.skipped_by_reason == {"DICOM not found": 9}
    assert all(s.item.startswith("INbreast.csv row ") for s in summary.skipped)

    for index, row in kept:
        got = df.loc[row["File Name"]]
        assert (got["laterality"], got["view"]) == (row["Laterality"], row["View"])
        assert got["birads"] == int(row["Bi-Rads"][0])
        assert got["density"] == row["ACR"].strip() if row["ACR"].strip() else pd.isna(got["density"])
        assert got["source"] == "inbreast" and pd.isna(got["pathology"])
        meta = json.loads(got["meta"])
        assert meta["birads_raw"] == row["Bi-Rads"] and meta["csv_row"] == index + 2
        date = row["Acquisition date"]
        assert meta["acquisition_month"] == f"{date[:4]}-{date[4:]}"
        assert got["study_id"] == f"{got['patient_id']}-{date}"
    assert set(df["view"]) == {"CC", "MLO", "FB"}  # one real row is FB (kept as written)
    # Patients: pseudonyms of the file-name hash, never the hash itself; 4 rows share one.
    assert df["patient_id"].str.fullmatch(r"inbreast-[0-9a-f]{12}").all()
    first_four = [rows[i]["File Name"] for i in range(4)]
    assert df.loc[first_four, "patient_id"].nunique() == 1
    text = (tmp_path / "ds" / "import_summary.txt").read_text()
    assert patient_hash(0) not in text and patient_hash(0) not in df["patient_id"].to_string()
    # The real file has one row with a blank ACR cell: density empty, one warning naming the row.
    assert any("ACR" in w and "183" in w for w in summary.warnings)

    # Annotations: a mass polygon, a calcification point, and a spiculated region + a point.
    mass_id, calc_id, both_id = (rows[i]["File Name"] for i in range(3))
    (mass,) = lesions_of(df.loc[mass_id])
    assert mass.lesion_type == "mass" and (mass.x0, mass.y0, mass.x1, mass.y1) == (10, 20, 31, 41)
    assert mass.center_x == 20.5 and mass.center_y == 30.5
    assert int((read_mask(tmp_path / "ds", mass.mask_path) > 0).sum()) == 21 * 21
    union = read_mask(tmp_path / "ds", df.loc[mass_id, "mask_path"])
    assert union.shape == (HEIGHT, WIDTH) and int((union > 0).sum()) == 21 * 21

    (calc,) = lesions_of(df.loc[calc_id])
    assert calc.lesion_type == "calcification" and calc.mask_path is None
    assert (calc.center_x, calc.center_y) == POINT[0]
    assert (calc.x0, calc.y0, calc.x1, calc.y1) == (33, 13, 34, 14)
    assert pd.isna(df.loc[calc_id, "mask_path"]) and df.loc[calc_id, "n_lesions"] == 1

    spiculated, point = lesions_of(df.loc[both_id])
    assert df.loc[both_id, "abnormality"] == "spiculated_region+calcification"
    area = int((read_mask(tmp_path / "ds", spiculated.mask_path) > 0).sum())
    assert abs(area - 0.5 * 21 * 21) < 40  # the filled triangle, outline included
    assert point.mask_path is None
    assert json.loads(df.loc[both_id, "meta"])["annotated"] is True
    assert json.loads(df.loc[rows[3]["File Name"], "meta"])["annotated"] is False
    assert summary.n_lesions == 4 and summary.n_with_mask == 2


def test_two_imports_are_byte_identical(real_inbreast, tmp_path):
    root, _ = real_inbreast
    import_dataset("inbreast", root, tmp_path / "a", workers=2)
    import_dataset("inbreast", root, tmp_path / "b", workers=1)
    for name in ("manifest.parquet", "classes.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_real_csv_grouped_labels(real_inbreast, tmp_path):
    root, rows = real_inbreast
    summary = import_dataset("inbreast", root / "INbreast.csv", tmp_path / "ds", label="normal-benign-malignant")
    df = read_manifest(tmp_path / "ds")
    group = {"1": "normal", "2": "benign", "3": "benign"}
    expected = Counter(group.get(r["Bi-Rads"], "malignant") for i, r in enumerate(rows) if not missing_dicom(i))
    assert summary.per_class == {k: expected[k] for k in ("normal", "benign", "malignant")}
    assert summary.classes == ["normal", "benign", "malignant"]
    assert df["pathology"].isna().all()  # BI-RADS-based grouping, not biopsy pathology


# --- a small synthetic tree in the real layout ------------------------------------------------


@pytest.fixture
def small(tmp_path) -> Path:
    """Eight rows over three patients; see the comments for what each row exercises."""
    root = tmp_path / "INbreast Release 1.0"
    rows = [
        ["removed", "removed", "R", "CC", "201001", "10000001", "2", "1"],  # row 2: fine, mass
        ["removed", "removed", "L", "MLO", "201001", "10000002", "2", "4c"],  # row 3: truncated XML
        ["removed", "removed", "R", "MLO", "201001", "10000003", "3", "7"],  # row 4: bad BI-RADS
        ["removed", "removed", "L", "CC", "200902", "10000004", "", "5"],  # row 5: no DICOM, no ACR
        ["removed", "removed", "R", "CC", "200902", "10000005", "1", "2"],  # row 6: XML not a plist
        ["removed", "removed", "L", "CC", "200902", "10000006", "1", "3"],  # row 7: ROI outside image
        ["removed", "removed", "", "", "200801", "10000007", "4", "6"],  # row 8: no hash, no lat/view
        ["removed", "removed", "R", "CC", "200801", "10000008", "4", "4a"],  # row 9: wrong XML types
    ]
    write_csv(root / "INbreast.csv", rows)
    dicoms = root / "AllDICOMs"
    for seed, (file_name, patient, side, view) in enumerate(
        [
            ("10000001", patient_hash(1), "R", "CC"),
            ("10000002", patient_hash(1), "L", "MLO"),
            ("10000003", patient_hash(1), "R", "MLO"),
            ("10000005", patient_hash(2), "R", "CC"),
            ("10000006", patient_hash(2), "L", "CC"),
            ("10000007", None, "L", "MLO"),
            ("10000008", patient_hash(3), "R", "CC"),
            ("10000099", patient_hash(3), "L", "CC"),  # no CSV row
        ]
    ):
        write_placeholder(dicoms / dicom_name(file_name, patient, side, view), 100 + seed)
    xml = root / "AllXML"
    write_xml(xml / "10000001.xml", [roi("Mass", SQUARE)])
    write_xml(xml / "10000002.xml", [roi("Mass", SQUARE)])
    data = (xml / "10000002.xml").read_bytes()
    (xml / "10000002.xml").write_bytes(data[: len(data) // 2])
    (xml / "10000005.xml").write_text("<html><body>not a plist</body></html>")
    write_xml(xml / "10000006.xml", [roi("Assymetry", [(5, 5), (500, 5), (5, 40)]), roi("Cluster", [(3, 4)], 1)])
    write_xml(xml / "10000007.xml", [roi("Distortion", TRIANGLE), roi("PectoralMuscle", SQUARE, 1)])
    doc = {"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [{**roi("Mass", SQUARE), "Point_px": "(1, 2)"}]}]}
    (xml / "10000008.xml").write_bytes(plistlib.dumps(doc, fmt=plistlib.FMT_XML))
    return root


def reasons(summary) -> dict[str, str]:
    return {s.item: s.reason for s in summary.skipped}


def test_bad_inputs_are_skipped_with_reasons(small, tmp_path):
    summary = import_dataset("inbreast", small, tmp_path / "ds")
    df = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(df.index) == ["10000001", "10000006", "10000007"]
    why = reasons(summary)
    assert why["INbreast.csv row 4 (File Name 10000003)"].startswith("unknown BI-RADS value: '7'")
    assert why["INbreast.csv row 5 (File Name 10000004)"].startswith("DICOM not found")
    assert why["AllDICOMs file 10000099"] == "no row in INbreast.csv"
    assert why["AllXML/10000002.xml"].startswith("annotation XML unreadable: not a readable XML plist")
    assert why["AllXML/10000005.xml"].startswith("annotation XML unreadable")
    assert why["AllXML/10000008.xml"].startswith("annotation XML unreadable: Images[0].ROIs[0].Point_px")
    assert why["10000006 ROI 0 (AllXML/10000006.xml)"].startswith("ROI points outside the 64x48 image")
    # Messages name File Names only, never a patient hash.
    text = (tmp_path / "ds" / "import_summary.txt").read_text()
    assert not any(patient_hash(p) in text for p in (1, 2, 3))

    # The lesion whose outline leaves the image keeps its type, without geometry; the point is fine.
    asym, cluster = lesions_of(df.loc["10000006"])
    assert asym.lesion_type == "asymmetry" and not asym.has_box and asym.mask_path is None
    assert cluster.lesion_type == "cluster" and (cluster.x0, cluster.y0) == (3, 4)
    # Pectoral muscle outlines are not lesions.
    assert [les.lesion_type for les in lesions_of(df.loc["10000007"])] == ["distortion"]
    # No hash in the file name and "removed" in the CSV: own patient, laterality/view from the name.
    row = df.loc["10000007"]
    assert (row["laterality"], row["view"]) == ("L", "MLO")
    assert any("no patient hash" in w and "10000007" in w for w in summary.warnings)
    assert df.loc["10000001", "patient_id"] != row["patient_id"]
    assert df.loc["10000001", "study_id"] == df.loc["10000001", "patient_id"] + "-201001"


def test_source_as_table_and_folder_options(small, tmp_path):
    moved = tmp_path / "elsewhere"
    (small / "AllDICOMs").rename(moved)
    with pytest.raises(DatasetError, match="AllDICOMs: INbreast DICOM folder not found"):
        import_dataset("inbreast", small, tmp_path / "x")
    summary = import_dataset(
        "inbreast", small / "INbreast.csv", tmp_path / "ds", dicom_dir=str(moved), xml_dir=str(small / "AllXML")
    )
    assert summary.n_images == 3 and summary.n_lesions == 4


def test_missing_parts_are_clear_errors(small, tmp_path):
    with pytest.raises(DatasetError, match="unknown label 'pathology'"):
        import_dataset("inbreast", small, tmp_path / "a", label="pathology")
    (small / "INbreast.csv").unlink()
    with pytest.raises(DatasetError, match="no INbreast.csv or INbreast.xls"):
        import_dataset("inbreast", small, tmp_path / "b")


def test_the_table_may_be_a_workbook(small, tmp_path):
    """The release also ships the table as a spreadsheet: a workbook gives the same import."""
    expected = import_dataset("inbreast", small, tmp_path / "from-csv")
    rows = pd.read_csv(small / "INbreast.csv", sep=";", dtype=str, keep_default_na=False)
    (small / "INbreast.csv").unlink()
    rows.to_excel(small / "INbreast.xlsx", index=False)
    summary = import_dataset("inbreast", small, tmp_path / "from-xlsx")
    assert (summary.n_images, summary.per_class, summary.n_lesions) == (
        expected.n_images,
        expected.per_class,
        expected.n_lesions,
    )
    (small / "INbreast.xlsx").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match=r"INbreast\.xlsx: not a readable Excel workbook"):
        import_dataset("inbreast", small, tmp_path / "broken")


def test_entity_declarations_are_refused(small, tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        '<plist version="1.0"><dict><key>Images</key><array/><key>x</key><string>&b;</string></dict></plist>'
    )
    (small / "AllXML" / "10000001.xml").write_text(bomb)
    summary = import_dataset("inbreast", small, tmp_path / "ds")
    assert "entity declarations" in reasons(summary)["AllXML/10000001.xml"]


def test_grouped_labels(small, tmp_path):
    summary = import_dataset("inbreast", small, tmp_path / "ds", label="normal-benign-malignant")
    df = read_manifest(tmp_path / "ds").set_index("image_id")
    assert summary.classes == ["normal", "benign", "malignant"]
    assert df["label_name"].to_dict() == {"10000001": "normal", "10000006": "benign", "10000007": "malignant"}
    assert df["birads"].to_dict() == {"10000001": 1, "10000006": 3, "10000007": 6}
    assert df["pathology"].isna().all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", (1, "")),
        ("4a", (4, "a")),
        ("4C", (4, "c")),
        (" 6 ", (6, "")),
        ("5.0", (5, "")),
        ("7", None),
        ("3b", None),
        ("", None),
        ("removed", None),
    ],
)
def test_parse_birads(text, expected):
    assert parse_birads(text) == expected


def test_names():
    parsed = parse_dicom_name(Path("22678622_61b13c59bcba149e_MG_R_ML_ANON.dcm"))
    assert (parsed.file_name, parsed.patient_hash, parsed.laterality, parsed.view) == (
        "22678622",
        "61b13c59bcba149e",
        "R",
        "MLO",
    )
    assert parse_dicom_name(Path("22678622.dcm")).patient_hash is None
    assert parse_dicom_name(Path("readme.dcm")) is None
    assert [roi_type(n) for n in ("Mass", "Espiculated Region", "Assymetry", "Point 1", "", "PectoralMuscle")] == [
        "mass",
        "spiculated_region",
        "asymmetry",
        "point_1",
        "unnamed",
        None,
    ]
