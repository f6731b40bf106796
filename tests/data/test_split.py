"""Splits: patient-grouped, stratified, blind holdout, k folds; never a patient on two sides."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammocad.data.split import (
    SplitSpec,
    check_no_patient_leak,
    make_splits,
    read_splits,
    split_dataset,
)
from mammocad.errors import DatasetError


def manifest(n_patients: int = 60, views: int = 4, seed: int = 0) -> pd.DataFrame:
    """Patients with several views each; labels vary inside a patient (one lesion breast)."""
    rows = []
    classes = ["normal", "benign", "malignant"]
    for p in range(n_patients):
        cls = classes[p % 3]
        for v in range(views):
            name = cls if (cls == "normal" or v < 2) else "normal"
            rows.append(
                {"image_id": f"p{p}v{v}", "patient_id": f"p{p}", "label_name": name, "label": classes.index(name)}
            )
    return pd.DataFrame(rows)


def test_no_patient_on_two_sides_and_every_image_assigned():
    splits = make_splits(manifest(), SplitSpec(test_size=0.2, val_size=0.25, blind_size=40, folds=5, seed=3))
    check_no_patient_leak(splits)
    assert len(splits) == 240
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    dev = splits[splits["split"] != "blind"]
    assert (dev.groupby("patient_id")["fold"].nunique() == 1).all()
    assert set(dev["fold"]) == set(range(5)) and (splits.loc[splits["split"] == "blind", "fold"] == -1).all()


def test_sizes_and_stratification_are_close_to_requested():
    splits = make_splits(manifest(120), SplitSpec(test_size=0.2, val_size=0.2, blind_size=96, seed=1))
    counts = splits["split"].value_counts()
    assert abs(counts["blind"] - 96) <= 12
    assert abs(counts["test"] / (480 - counts["blind"]) - 0.2) < 0.05
    overall = splits["label_name"].value_counts(normalize=True)
    for split in ("train", "test"):
        share = splits[splits["split"] == split]["label_name"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.08


def test_deterministic_by_seed():
    a = make_splits(manifest(), SplitSpec(folds=3, seed=7))
    b = make_splits(manifest(), SplitSpec(folds=3, seed=7))
    c = make_splits(manifest(), SplitSpec(folds=3, seed=8))
    assert a.equals(b) and not a.equals(c)


def test_refuses_folds_a_class_cannot_fill():
    frame = manifest(60)
    frame = frame[~((frame["label_name"] == "malignant") & ~frame["patient_id"].isin(["p2", "p5"]))]
    with pytest.raises(DatasetError, match=r"malignant: 2 patients"):
        make_splits(frame, SplitSpec(folds=5))


def test_bad_specs_are_refused():
    with pytest.raises(DatasetError, match="test_size"):
        make_splits(manifest(), SplitSpec(test_size=1.5))
    with pytest.raises(DatasetError, match="folds"):
        make_splits(manifest(), SplitSpec(folds=1))
    with pytest.raises(DatasetError, match="more than half"):
        make_splits(manifest(10), SplitSpec(blind_size=150))


def test_leak_check_catches_a_leak():
    splits = make_splits(manifest(), SplitSpec())
    splits.loc[0, "split"] = "test" if splits.loc[0, "split"] != "test" else "train"
    with pytest.raises(DatasetError, match="two sides"):
        check_no_patient_leak(splits)


def test_split_dataset_writes_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr("mammocad.data.split.read_manifest", lambda _: manifest())
    path = split_dataset(tmp_path, SplitSpec(folds=5), name="cv")
    assert read_splits(tmp_path, "cv").equals(pd.read_parquet(path))
    assert path.with_suffix(".json").exists()
    with pytest.raises(DatasetError, match="exists already"):
        split_dataset(tmp_path, SplitSpec(), name="cv")
    with pytest.raises(DatasetError, match="available: cv"):
        read_splits(tmp_path, "other")


def test_splits_do_not_depend_on_the_installation_key(tmp_path, monkeypatch):
    """Pseudonyms are keyed per installation; a split (and so every result) must not change with
    the key: two installations splitting the same source get the same images on the same sides."""
    from mammocad.data.importers import import_dataset
    from mammocad.data.manifest import read_manifest
    from mammocad.data.privacy import KEY_FILE_ENV
    from mammocad.data.synth import write_synthetic_dataset

    source = write_synthetic_dataset(tmp_path / "src", "csv", {"normal": 12, "benign": 12, "malignant": 12}, seed=1)
    sides = []
    for name in ("a", "b"):
        monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / f"{name}.key"))
        import_dataset("csv", source, tmp_path / name)
        split_dataset(tmp_path / name, SplitSpec(test_size=0.25, val_size=0.25, folds=3, seed=0))
        manifest = read_manifest(tmp_path / name)
        manifest["row"] = [json.loads(meta)["csv_row"] for meta in manifest["meta"]]  # ids and paths are keyed too
        splits = pd.read_parquet(tmp_path / name / "splits" / "default.parquet").merge(manifest, on="image_id")
        sides.append(splits.set_index("row")[["split", "fold"]].sort_index())
    assert not set(read_manifest(tmp_path / "a")["patient_id"]) & set(read_manifest(tmp_path / "b")["patient_id"])
    pd.testing.assert_frame_equal(sides[0], sides[1])
