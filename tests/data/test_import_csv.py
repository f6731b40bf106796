"""The generic CSV importer on tiny real files: images (PNG/JPEG/PGM), masks and tables written here."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.base import pseudonymous_id
from mammocad.data.manifest import SUMMARY_NAME, lesions_of, read_classes, read_manifest
from mammocad.errors import DatasetError
from tests.conftest import real_file


def write_image(path: Path, seed: int, shape: tuple[int, int] = (40, 48)) -> Path:
    """A distinct grey image (random content per seed, so fixtures are never duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_mask(path: Path, box: tuple[int, int, int, int] | None, shape: tuple[int, int] = (40, 48)) -> Path:
    """A 0/1 mask (as some tools save them) with the half-open box ``(x0, y0, x1, y1)`` set."""
    mask = np.zeros(shape, dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)
    return path


def img_id(rel: str) -> str:
    """The image id the importer derives for a file at ``rel`` below the base folder (a keyed hash,
    never the file name)."""
    return pseudonymous_id(rel, "csv-img", digest_size=8)


def skipped(ds: Path) -> dict[str, str]:
    return {s["item"]: s["reason"] for s in json.loads((ds / SUMMARY_NAME).read_text())["skipped"]}


def test_full_table_with_known_extra_and_identifier_columns(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "img" / "a.png", 1)
    write_image(src / "img" / "b.jpg", 2)
    write_image(src / "img" / "c.pgm", 3)
    write_image(src / "other" / "a.png", 4)  # same file name in another folder: its own id
    table = pd.DataFrame(
        {
            "Path": ["img/a.png", "img/b.jpg", "img/c.pgm", "other/a.png"],
            "Label": [" Malignant", "BENIGN", "normal", "Normal "],
            "Patient ID": ["MRN-0001", "MRN-0001", "MRN-0002", "MRN-0003"],
            "Laterality": ["left", "R", "L", "x"],
            "View": ["cc", "MLO", "CC", "MLO"],
            "Study-ID": ["ACC1", "ACC1", "", "ACC9"],
            "BIRADS": ["5", "BI-RADS 4A", "1", ""],
            "density": ["B", "C", "", "A"],
            "split": ["Training", "test", "train", "val"],
            "scanner": ["GE", "", "Hologic", "GE"],
            "Patient Name": ["Doe^Jane", "Doe^Jane", "Roe^Rich", "Poe^Ed"],
        }
    )
    table.to_csv(src / "table.csv", index=False)
    ds = tmp_path / "ds"
    summary = import_dataset("csv", src / "table.csv", ds, patient_column="Patient ID")
    df = read_manifest(ds).set_index("image_id")
    ids = {img_id(rel): rel.split(".")[0].replace("/", "__") for rel in ("img/a.png", "img/b.jpg", "img/c.pgm")}
    ids[img_id("other/a.png")] = "other__a"
    df = df.rename(index=ids)  # the test's own names for the keyed ids
    assert read_classes(ds) == ["normal", "benign", "malignant"]
    assert summary.per_class == {"normal": 2, "benign": 1, "malignant": 1}
    assert summary.n_patients == 3
    assert sorted(df.index) == ["img__a", "img__b", "img__c", "other__a"]
    a = df.loc["img__a"]
    assert (a["label_name"], a["pathology"], a["birads"], a["laterality"], a["view"]) == (
        "malignant",
        "malignant",
        5,
        "L",
        "CC",
    )
    assert a["patient_id"] == pseudonymous_id("MRN-0001", "csv") == df.loc["img__b", "patient_id"]
    assert a["study_id"] == pseudonymous_id("ACC1", "csv-study")
    assert pd.isna(df.loc["img__c", "study_id"])
    assert (a["official_split"], df.loc["img__b", "official_split"], df.loc["other__a", "official_split"]) == (
        "train",
        "test",
        "validation",
    )
    assert df.loc["img__b", "birads"] == 4 and df.loc["img__b", "density"] == "C"
    assert pd.isna(df.loc["other__a", "laterality"])
    meta_a, meta_b, meta_o = (json.loads(df.loc[i, "meta"]) for i in ("img__a", "img__b", "other__a"))
    assert meta_a == {"csv_row": 2, "scanner": "GE"}  # scanner: on the meta whitelist
    assert meta_b == {"csv_row": 3, "birads_raw": "BI-RADS 4A"}
    assert meta_o["laterality_raw"] == "x"
    # No raw identifier anywhere in the manifest (patient name column is dropped, ids pseudonymised).
    text = df.reset_index().astype(str).to_string()
    assert "MRN-0001" not in text and "Doe^Jane" not in text and "ACC1" not in text
    assert Path(a["image_path"]) == (src / "img" / "a.png").resolve()  # no identifier in the path: not linked
    assert any("1 column(s) not copied into meta" in w and "'Patient Name'" in w for w in summary.warnings)
    assert df.loc["img__b", "file_format"] == "jpeg" and df.loc["img__c", "file_format"] == "pgm"


def test_bad_rows_are_skipped_with_row_numbers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    good = write_image(src / "good.png", 1)
    write_image(src / "good2.png", 2)
    write_image(src / "nolabel.png", 3)
    write_image(src / "badbirads.png", 4)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00junk" * 20)
    png = write_image(tmp_path / "whole.png", 5).read_bytes()
    (src / "truncated.png").write_bytes(png[:-40])
    jpeg = write_image(tmp_path / "whole.jpg", 6).read_bytes()
    (src / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (src / "copy.png").write_bytes(good.read_bytes())
    (src / "notes.txt").write_text("hello")
    rows = [
        ("good.png", "benign", ""),  # row 2
        ("nolabel.png", "  ", ""),  # row 3: empty label
        ("", "benign", ""),  # row 4: empty path
        ("missing.png", "benign", ""),  # row 5: file not there
        ("badbirads.png", "benign", "seven"),  # row 6
        ("corrupt.png", "benign", ""),  # row 7
        ("truncated.png", "malignant", ""),  # row 8
        ("truncated.jpg", "malignant", ""),  # row 9
        ("copy.png", "malignant", ""),  # row 10: duplicate content of good.png
        ("notes.txt", "normal", ""),  # row 11: not an image
        ("good2.png", "normal", "2"),  # row 12
    ]
    pd.DataFrame(rows, columns=["path", "label", "birads"]).to_csv(src / "t.csv", index=False)
    ds = tmp_path / "ds"
    summary = import_dataset("csv", src / "t.csv", ds)
    assert summary.per_class == {"normal": 1, "benign": 1}
    reasons = skipped(ds)
    assert reasons["t.csv row 3"] == "empty label"
    assert reasons["t.csv row 4"] == "empty image path"
    assert reasons["t.csv row 5"].startswith("image file not found:") and "missing.png" in reasons["t.csv row 5"]
    assert reasons["t.csv row 6"] == "unparseable BI-RADS value 'seven' (expected 0-6)"
    by_file = {Path(k).name: v for k, v in reasons.items()}
    assert "PNG header is corrupt" in by_file["corrupt.png"]
    assert by_file["truncated.png"] == "PNG is truncated (no IEND chunk)"
    assert by_file["truncated.jpg"] == "JPEG is truncated (no end-of-image marker)"
    assert by_file["copy.png"].startswith("duplicate file: same content as")
    assert by_file["notes.txt"].startswith("not a supported image")
    assert len(reasons) == 9
    df = read_manifest(ds).set_index("image_id")
    # Without a patient column each image is its own patient.
    assert df["patient_id"].nunique() == 2
    assert json.loads(df.loc[img_id("good.png"), "meta"])["patient_unknown"] is True


def test_masks_give_boxes_and_normalised_mask_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "a.png", 1)
    write_image(src / "b.png", 2)
    write_image(src / "c.png", 3)
    write_image(src / "d.png", 4)
    write_image(src / "e.png", 5)
    write_mask(src / "masks" / "a_mask.png", (5, 7, 20, 15))
    write_mask(src / "masks" / "b_mask.png", None)  # empty mask: kept, no lesion
    write_mask(src / "masks" / "d_mask.png", (0, 0, 4, 4), shape=(20, 20))  # wrong size
    (src / "masks" / "e_mask.png").write_bytes(b"broken")
    table = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png", "e.png"],
            "class": ["malignant", "benign", "normal", "benign", "benign"],
            "ROI mask": ["masks/a_mask.png", "masks/b_mask.png", "", "masks/d_mask.png", "masks/e_mask.png"],
            "lesion_type": ["MASS", "", "", "", ""],
        }
    )
    table.to_csv(src / "t.csv", index=False)
    ds = tmp_path / "ds"
    summary = import_dataset(
        "csv", src / "t.csv", ds, path_column="image", label_column="class", mask_column="roi_mask"
    )
    assert summary.n_images == 3 and summary.n_with_mask == 2 and summary.n_lesions == 1
    df = read_manifest(ds).set_index("image_id").rename(index={img_id(f"{n}.png"): n for n in "abcde"})
    (lesion,) = lesions_of(df.loc["a"])
    assert (lesion.x0, lesion.y0, lesion.x1, lesion.y1) == (5, 7, 20, 15)
    assert (lesion.lesion_type, lesion.pathology) == ("MASS", "malignant")
    assert df.loc["a", "mask_path"] == f"masks/{img_id('a.png')}.png"  # named by the id, not the file
    stored = cv2.imread(str(ds / df.loc["a", "mask_path"]), cv2.IMREAD_UNCHANGED)
    assert stored.shape == (40, 48) and set(np.unique(stored)) == {0, 255}
    assert int((stored == 255).sum()) == 15 * 8
    assert df.loc["b", "n_lesions"] == 0 and json.loads(df.loc["b", "meta"])["mask_empty"] is True
    assert pd.isna(df.loc["c", "mask_path"])
    reasons = skipped(ds)
    assert "is 20x20 but the image is 48x40" in reasons["t.csv row 5"]
    assert reasons["t.csv row 6"].startswith("mask unreadable:") and "e_mask.png" in reasons["t.csv row 6"]


def test_base_dir_semicolon_separator_and_image_id_column(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_image(images / "x.png", 1)
    write_image(images / "y.png", 2)
    sheet = tmp_path / "sheets" / "list.csv"
    sheet.parent.mkdir()
    sheet.write_text("image_id;path;label;patient_id\nid-1;x.png;BIRADS 2;p1\nid-2;y.png;birads 4;p1\n")
    ds = tmp_path / "ds"
    summary = import_dataset("csv", sheet, ds, base_dir=str(images))
    df = read_manifest(ds).set_index("image_id")
    assert read_classes(ds) == ["birads 2", "birads 4"]
    assert summary.n_patients == 1 and sorted(df.index) == ["id-1", "id-2"]
    assert df["pathology"].isna().all()


def test_missing_columns_and_non_csv_files_raise(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"file": ["a.png"], "diagnosis": ["benign"]}).to_csv(wrong, index=False)
    with pytest.raises(
        DatasetError, match=r"missing required column\(s\) \['path', 'label'\]; columns found: \['file', 'diagnosis'\]"
    ):
        import_dataset("csv", wrong, tmp_path / "ds")
    named = tmp_path / "named.csv"
    pd.DataFrame({"path": ["a.png"], "label": ["benign"]}).to_csv(named, index=False)
    with pytest.raises(DatasetError, match="column 'subject' not found"):
        import_dataset("csv", named, tmp_path / "ds", patient_column="subject")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="file is empty"):
        import_dataset("csv", empty, tmp_path / "ds")
    binary = tmp_path / "junk.csv"
    binary.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes() + b"\x00")
    with pytest.raises(DatasetError, match="binary content"):
        import_dataset("csv", binary, tmp_path / "ds")
    header_only = tmp_path / "header.csv"
    header_only.write_text("path,label\n")
    with pytest.raises(DatasetError, match="no rows"):
        import_dataset("csv", header_only, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_no_usable_rows_leaves_nothing_and_existing_target_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"path": ["gone.png", "also_gone.png"], "label": ["benign", "normal"]}).to_csv(
        src / "t.csv", index=False
    )
    ds = tmp_path / "ds"
    with pytest.raises(DatasetError, match="no usable images"):
        import_dataset("csv", src / "t.csv", ds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    write_image(src / "gone.png", 1)
    ds.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        import_dataset("csv", src / "t.csv", ds)
    assert list(ds.iterdir()) == []


def test_birads_column_as_label(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    write_image(tmp_path / "c.png", 3)
    sheet = tmp_path / "t.csv"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "BIRADS": ["BI-RADS 5", "2", "NAN"]}).to_csv(sheet, index=False)
    ds = tmp_path / "ds"
    summary = import_dataset("csv", sheet, ds, label_column="birads")
    df = read_manifest(ds).set_index("image_id").rename(index={img_id(f"{n}.png"): n for n in "abc"})
    assert read_classes(ds) == ["2", "bi-rads 5"]
    assert summary.n_images == 2
    assert (df.loc["a", "birads"], df.loc["b", "birads"]) == (5, 2)
    assert skipped(ds)["t.csv row 4"] == "unparseable BI-RADS value 'NAN' (expected 0-6)"


def test_repeated_image_id_keeps_the_first_row_and_its_mask(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    write_mask(tmp_path / "ma.png", (1, 2, 5, 6))
    write_mask(tmp_path / "mb.png", (10, 10, 30, 30))
    sheet = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "image_id": ["x", "x"],
            "path": ["a.png", "b.png"],
            "label": ["benign", "malignant"],
            "mask_path": ["ma.png", "mb.png"],
        }
    ).to_csv(sheet, index=False)
    ds = tmp_path / "ds"
    summary = import_dataset("csv", sheet, ds)
    assert summary.per_class == {"benign": 1}
    df = read_manifest(ds).set_index("image_id")
    (lesion,) = lesions_of(df.loc["x"])
    assert (lesion.x0, lesion.y0, lesion.x1, lesion.y1) == (1, 2, 5, 6)
    stored = cv2.imread(str(ds / df.loc["x", "mask_path"]), cv2.IMREAD_UNCHANGED)
    assert int((stored == 255).sum()) == 16  # the first row's mask, not overwritten by the second
    assert skipped(ds)["t.csv row 3"] == "duplicate image id 'x' (first: row 2)"


def test_real_inbreast_table_placeholder_patients_and_published_column_names(real_formats, tmp_path: Path) -> None:
    """INbreast.csv as published (``;``, CRLF, ``Patient ID`` = ``removed``, ``Bi-Rads``, ``ACR``,
    ``File Name`` without extension). Images are placeholders written here under the real naming
    ``<File Name>_<patient hash>_MG_<side>_<view>_ANON``; only the first 24 rows get one."""
    table_path = real_file(real_formats, "inbreast/INbreast.csv")
    rows = pd.read_csv(table_path, sep=";", dtype=str)
    images = tmp_path / "AllDICOMs"
    for index, row in rows.head(24).iterrows():
        patient = f"{index // 4:016x}"  # four views per woman
        view = "ML" if row["View"] == "MLO" else row["View"]
        write_image(images / f"{row['File Name']}_{patient}_MG_{row['Laterality']}_{view}_ANON.png", int(index))
    options = {"path_column": "File Name", "label_column": "Bi-Rads", "base_dir": str(images)}

    summary = import_dataset("csv", table_path, tmp_path / "ds", **options)
    assert summary.n_images == 24 and summary.skipped_by_reason == {"image file not found": len(rows) - 24}
    assert any("'Patient ID' holds no identifier ('removed' on every row)" in w for w in summary.warnings)
    assert any("24 image(s) have no patient key" in w for w in summary.warnings)
    manifest = read_manifest(tmp_path / "ds")
    head = rows.head(24)
    assert sorted(manifest["density"]) == sorted(head["ACR"])  # ACR fills density
    expected_birads = sorted(int(v[0]) for v in head["Bi-Rads"])  # "4a" -> 4, the letter kept in meta
    assert sorted(manifest["birads"].astype(int)) == expected_birads
    classes = read_classes(tmp_path / "ds")
    assert classes == sorted(set(head["Bi-Rads"].str.lower()))  # 1 < 2 < ... < 4a < 4b < 4c < 5, every time

    grouped = import_dataset("csv", table_path, tmp_path / "grouped", patient_regex=r"_([0-9a-f]{16})_", **options)
    assert grouped.n_patients == 6 and not any("no patient key" in w for w in grouped.warnings)
