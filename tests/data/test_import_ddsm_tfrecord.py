"""The DDSM-patch importer on tiny real TFRecord files (tfrecord's writer) and .npy pairs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from tfrecord.writer import TFRecordWriter

from mammocad.data.importers import import_dataset
from mammocad.data.importers.ddsm_tfrecord import iter_tfrecord
from mammocad.data.manifest import SUMMARY_NAME, lesions_of, read_classes, read_manifest
from mammocad.errors import DatasetError

SIDE = 32


def patch(seed: int, side: int = SIDE) -> np.ndarray:
    """Distinct random patch content per seed (the runner drops identical files)."""
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def write_tfrecord(path: Path, examples: list[dict]) -> Path:
    """Write examples given as {feature: value}; ``image`` is an array or raw bytes, the rest ints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    for example in examples:
        datum = {}
        for key, value in example.items():
            if key == "image":
                datum[key] = (value.tobytes() if isinstance(value, np.ndarray) else value, "byte")
            else:
                datum[key] = (value, "int")
        writer.write(datum)
    writer.close()
    return path


def skipped(ds: Path) -> dict[str, str]:
    return {s["item"]: s["reason"] for s in json.loads((ds / SUMMARY_NAME).read_text())["skipped"]}


# The five finer codes with their matching label_normal.
FINE = [(0, 0), (1, 1), (2, 1), (3, 1), (4, 1)]


def test_tfrecord_label_normal_scheme(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tfrecord(
        src / "training10_0.tfrecords",
        [{"image": patch(i), "label": code, "label_normal": normal} for i, (code, normal) in enumerate(FINE)],
    )
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", src, ds)
    assert read_classes(ds) == ["abnormal", "negative"]
    assert summary.per_class == {"abnormal": 4, "negative": 1}
    df = read_manifest(ds).set_index("image_id")
    assert list(df.index) == [f"training10_0-{i}" for i in range(5)]
    assert list(df["label_name"]) == ["negative", "abnormal", "abnormal", "abnormal", "abnormal"]
    assert list(df["pathology"]) == ["normal", "benign", "benign", "malignant", "malignant"]
    assert list(df["abnormality"].fillna("-")) == ["-", "calcification", "mass", "calcification", "mass"]
    assert list(df["n_lesions"]) == [0, 1, 1, 1, 1]
    (lesion,) = lesions_of(df.loc["training10_0-4"])
    assert (lesion.lesion_type, lesion.pathology, lesion.has_box) == ("mass", "malignant", False)
    assert (df["official_split"] == "train").all()
    assert df["patient_id"].nunique() == 5  # no patient information: each patch its own patient
    assert (df["width"] == SIDE).all() and (df["height"] == SIDE).all() and (df["file_format"] == "png").all()
    # The pixels written are exactly the record's bytes.
    stored = cv2.imread(str(ds / df.loc["training10_0-3", "image_path"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, patch(3))
    meta = json.loads(df.loc["training10_0-3", "meta"])
    assert meta == {"source_file": "training10_0.tfrecords", "record_index": 3, "label_code": 3, "label_normal": 1}


def test_tfrecord_fine_label_scheme_and_single_file_source(tmp_path: Path) -> None:
    path = write_tfrecord(
        tmp_path / "anything.tfrecord",
        [{"image": patch(i), "label": code, "label_normal": normal} for i, (code, normal) in enumerate(FINE)],
    )
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", path, ds, label_field="label")
    assert read_classes(ds) == [
        "benign_calcification",
        "benign_mass",
        "malignant_calcification",
        "malignant_mass",
        "negative",
    ]
    assert sum(summary.per_class.values()) == 5
    df = read_manifest(ds).set_index("image_id")
    assert df.loc["anything-2", "label_name"] == "benign_mass"
    assert df.loc["anything-0", "label_name"] == "negative"
    assert pd.isna(df.loc["anything-0", "official_split"])


def test_bad_records_are_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tfrecord(
        src / "a.tfrecords",
        [
            {"image": patch(0), "label": 2, "label_normal": 1},  # 0 good
            {"image": patch(1), "label": 7, "label_normal": 1},  # 1 unknown code
            {"image": patch(2)[:, :30], "label": 0, "label_normal": 0},  # 2 not square
            {"image": patch(3), "label": 0, "label_normal": 1},  # 3 codes disagree
            {"image": patch(0), "label": 2, "label_normal": 1},  # 4 duplicate content of 0
            {"label": 0, "label_normal": 0},  # 5 no image
            {"image": patch(6), "label_normal": 0},  # 6 good, label_normal only
            {"image": patch(7), "label_normal": 1},  # 7 good: abnormal, pathology unknown
        ],
    )
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", src, ds)
    assert summary.per_class == {"abnormal": 2, "negative": 1}
    reasons = skipped(ds)
    assert reasons["a.tfrecords#record1"] == "unknown label code 7 (expected 0-4)"
    assert reasons["a.tfrecords#record2"] == "image is 960 bytes, not a square 30x30 grey image of uint8 pixels"
    assert reasons["a.tfrecords#record3"] == "label 0 and label_normal 1 disagree"
    assert reasons["a.tfrecords#record5"] == "record has no 'image' bytes feature"
    assert reasons["images/a-4.png"].startswith("duplicate file: same content as images/a-0.png")
    assert len(reasons) == 5
    df = read_manifest(ds).set_index("image_id")
    assert df.loc["a-6", "pathology"] == "normal"
    assert pd.isna(df.loc["a-7", "pathology"])
    (lesion,) = lesions_of(df.loc["a-7"])
    assert lesion.lesion_type is None and lesion.pathology is None


def test_image_size_option_is_enforced(tmp_path: Path) -> None:
    src = write_tfrecord(
        tmp_path / "p.tfrecords",
        [{"image": patch(1), "label_normal": 0}, {"image": patch(2, side=16), "label_normal": 1}],
    )
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", src, ds, image_size=SIDE)
    assert summary.n_images == 1
    assert skipped(ds)["p.tfrecords#record1"] == "image is 256 bytes, not a square 32x32 grey image of uint8 pixels"


def test_truncated_tfrecord_keeps_the_records_before_the_damage(tmp_path: Path) -> None:
    src = tmp_path / "src"
    path = write_tfrecord(src / "t.tfrecords", [{"image": patch(i), "label": 0, "label_normal": 0} for i in range(4)])
    data = path.read_bytes()
    record_size = len(data) // 4
    path.write_bytes(data[: 2 * record_size + record_size // 2])  # cut inside record 2
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", src, ds)
    assert summary.n_images == 2
    assert list(read_manifest(ds)["image_id"]) == ["t-0", "t-1"]
    reason = skipped(ds)["t.tfrecords#record2 onwards"]
    assert reason.startswith("file is truncated (record needs")


def test_checksums_are_verified(tmp_path: Path) -> None:
    path = write_tfrecord(tmp_path / "c.tfrecords", [{"image": patch(i), "label_normal": 0} for i in range(3)])
    data = bytearray(path.read_bytes())
    record_size = len(data) // 3
    data[record_size + 100] ^= 0xFF  # flip a pixel byte inside record 1: data CRC fails, framing intact
    data[2 * record_size + 3] ^= 0x01  # damage record 2's length field: the rest is lost
    path.write_bytes(bytes(data))
    records = list(iter_tfrecord(path))
    assert [r.index for r in records] == [0, 1, 2]
    assert records[0].payload is not None
    assert records[1].problem == "record data checksum mismatch (corrupt record)" and not records[1].fatal
    assert records[2].problem == "record length checksum mismatch (file corrupt from here)" and records[2].fatal


def test_npy_pairs_and_mismatched_pair(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    np.save(src / "cv10_data.npy", np.stack([patch(10 + i) for i in range(3)])[..., None])  # N x H x W x 1
    np.save(src / "cv10_labels.npy", np.array([0, 4, 1], dtype=np.int64))
    np.save(src / "sub" / "test10_data.npy", np.stack([patch(20 + i) for i in range(3)]))
    np.save(src / "sub" / "test10_labels.npy", np.array([0, 1], dtype=np.int64))  # N mismatch
    np.save(src / "sub" / "lonely_data.npy", np.stack([patch(30)]))  # no labels file
    np.save(src / "obj_data.npy", np.stack([patch(40)]))
    np.save(src / "obj_labels.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)  # never unpickled
    ds = tmp_path / "ds"
    summary = import_dataset("ddsm-tfrecord", src, ds, label_field="label")
    assert summary.per_class == {"malignant_mass": 1, "negative": 1, "benign_calcification": 1}
    df = read_manifest(ds).set_index("image_id")
    assert sorted(df.index) == ["cv10-0", "cv10-1", "cv10-2"]
    assert (df["official_split"] == "validation").all()
    assert list(df.loc[["cv10-0", "cv10-1", "cv10-2"], "pathology"]) == ["normal", "malignant", "benign"]
    stored = cv2.imread(str(ds / df.loc["cv10-1", "image_path"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, patch(11))
    reasons = skipped(ds)
    assert reasons["test10_data.npy + test10_labels.npy"] == "data has 3 patches but labels has 2 values"
    assert reasons[str(src / "sub" / "lonely_data.npy")] == "no matching lonely_labels.npy next to it (labels unknown)"
    assert reasons["obj_data.npy + obj_labels.npy"].startswith("unreadable .npy file")
    assert len(reasons) == 3


def test_equal_stems_in_two_folders_get_distinct_ids(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tfrecord(src / "a" / "part.tfrecords", [{"image": patch(1), "label_normal": 0}])
    write_tfrecord(src / "b" / "part.tfrecords", [{"image": patch(2), "label_normal": 1}])
    ds = tmp_path / "ds"
    import_dataset("ddsm-tfrecord", src, ds)
    df = read_manifest(ds).set_index("image_id")
    assert sorted(df.index) == ["b__part-0", "part-0"]
    np.testing.assert_array_equal(cv2.imread(str(ds / df.loc["part-0", "image_path"]), cv2.IMREAD_UNCHANGED), patch(1))
    np.testing.assert_array_equal(
        cv2.imread(str(ds / df.loc["b__part-0", "image_path"]), cv2.IMREAD_UNCHANGED), patch(2)
    )


def test_unusable_sources_leave_nothing_behind(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no data")
    with pytest.raises(DatasetError, match="no TFRecord files"):
        import_dataset("ddsm-tfrecord", empty, tmp_path / "ds")
    bad = write_tfrecord(tmp_path / "bad" / "x.tfrecords", [{"image": patch(1), "label": 9, "label_normal": 1}])
    with pytest.raises(DatasetError, match="no usable images"):
        import_dataset("ddsm-tfrecord", bad.parent, tmp_path / "ds")
    with pytest.raises(DatasetError, match="label_field must be one of"):
        import_dataset("ddsm-tfrecord", bad.parent, tmp_path / "ds", label_field="pathology")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "empty"]


def test_existing_target_is_refused(tmp_path: Path) -> None:
    src = write_tfrecord(tmp_path / "p.tfrecords", [{"image": patch(1), "label_normal": 0}])
    ds = tmp_path / "ds"
    ds.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        import_dataset("ddsm-tfrecord", src, ds)
    assert list(ds.iterdir()) == []


def test_one_type_held_out_files_are_flagged(tmp_path: Path) -> None:
    """The Kaggle copy's test10 holds only masses and cv10 only calcifications: importing them as the
    official test/validation split warns; the training file and a mixed test file do not."""
    src = tmp_path / "src"
    write_tfrecord(src / "training10_0.tfrecords", [{"image": patch(i), "label": c} for i, c in enumerate([0, 1, 2])])
    np.save(src / "test10_data.npy", np.stack([patch(10 + i) for i in range(4)]))
    np.save(src / "test10_labels.npy", np.array([0, 2, 4, 2], dtype=np.int64))
    np.save(src / "cv10_data.npy", np.stack([patch(20 + i) for i in range(3)]))
    np.save(src / "cv10_labels.npy", np.array([1, 0, 3], dtype=np.int64))
    np.save(src / "test_mixed_data.npy", np.stack([patch(30 + i) for i in range(2)]))
    np.save(src / "test_mixed_labels.npy", np.array([1, 4], dtype=np.int64))
    summary = import_dataset("ddsm-tfrecord", src, tmp_path / "ds")
    assert summary.per_official_split == {"test": 6, "train": 3, "validation": 3}
    assert len(summary.warnings) == 2
    test10, cv10 = sorted(summary.warnings, key=lambda w: not w.startswith("test10"))
    assert test10.startswith("test10_data.npy was imported as the official 'test' split, but its abnormal patches")
    assert "all masses (found: 3 mass, 0 calcification and 1 negative patches)" in test10
    assert cv10.startswith("cv10_data.npy was imported as the official 'validation' split")
    assert "all calcifications (found: 0 mass, 2 calcification and 1 negative patches)" in cv10
    assert all("not a representative held-out split" in w and "merge test10 and cv10" in w for w in summary.warnings)
    text = (tmp_path / "ds" / "import_summary.txt").read_text()
    assert "warning: test10_data.npy was imported" in text


def test_documented_held_out_file_warns_even_when_mixed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    np.save(src / "x" / "cv10_data.npy", np.stack([patch(i) for i in range(2)]))
    np.save(src / "x" / "cv10_labels.npy", np.array([1, 2], dtype=np.int64))
    summary = import_dataset("ddsm-tfrecord", src, tmp_path / "ds")
    (warning,) = summary.warnings
    assert warning.startswith("x/cv10_data.npy was imported as the official 'validation' split, but it is documented")
    assert "calcifications only (found: 1 mass, 1 calcification and 0 negative patches)" in warning
