"""Preprocessing skips images that cannot be decoded (bombs, Rust panics, corrupt data, over budget), in
worker processes too, and keeps the rest."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammocad.data.images import DECODE_BUDGET_ENV
from mammocad.data.importers import import_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.data.synth.hostile import write_bomb, write_corrupt_png, write_panicking_rle_dicom, write_rgb16_png
from mammocad.errors import ConfigError
from mammocad.preprocess import PreprocessConfig
from mammocad.preprocess.cache import preprocess_dataset


@pytest.fixture
def dataset(tmp_path):
    source = write_synthetic_dataset(
        tmp_path / "src", "csv", {"normal": 3, "benign": 3, "malignant": 3}, seed=1, height=160, width=128
    )
    import_dataset("csv", source, tmp_path / "ds")
    return tmp_path / "ds"


@pytest.mark.parametrize("workers", [1, 2])
def test_undecodable_images_are_skipped_with_their_reason(dataset, monkeypatch, workers):
    hostile = {
        "panic": write_panicking_rle_dicom(dataset / "bad" / "panics.dcm"),
        "bomb": write_bomb(dataset / "bad" / "bomb.png", "png"),
        "corrupt": write_corrupt_png(dataset / "bad" / "corrupt.png"),
        "budget": write_rgb16_png(dataset / "bad" / "rgb16.png", side=400),  # ~3 MB needed
    }
    # Files replaced after import (import would have refused them): normal images, no masks.
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    normal, benign = (manifest.index[manifest["label_name"] == name].tolist() for name in ("normal", "benign"))
    rows = [*normal, benign[0]]
    expected = {}
    for row, (kind, path) in zip(rows, hostile.items(), strict=True):
        manifest.loc[row, "image_path"] = str(path)
        manifest.loc[row, "mask_path"] = None
        manifest.at[row, "lesions"] = []
        expected[manifest.loc[row, "image_id"]] = kind
    manifest.to_parquet(dataset / "manifest.parquet", index=False)
    monkeypatch.setenv(DECODE_BUDGET_ENV, "2")

    result = preprocess_dataset(dataset, PreprocessConfig(image_size=32), workers=workers)
    assert result.n_samples == 5 and result.n_processed == 5
    reasons = {s["item"]: s["reason"] for s in result.skipped}
    assert set(reasons) == set(expected)
    patterns = {
        "panic": "could not be decoded (PanicException",
        "bomb": "too large to decode",
        "corrupt": "could not be decoded (corrupt file)",
        "budget": "too large to decode: ~3 MB needed > budget 2 MB",
    }
    for image_id, kind in expected.items():
        assert patterns[kind] in reasons[image_id], (kind, reasons[image_id])
    assert json.loads((result.cache_dir / "skipped.json").read_text()) == result.skipped


def test_a_bad_budget_setting_stops_the_run_instead_of_failing_every_image(dataset, monkeypatch):
    monkeypatch.setenv(DECODE_BUDGET_ENV, "lots")
    with pytest.raises(ConfigError, match=DECODE_BUDGET_ENV):
        preprocess_dataset(dataset, PreprocessConfig(image_size=32), workers=1)
    monkeypatch.delenv(DECODE_BUDGET_ENV)
    result = preprocess_dataset(dataset, PreprocessConfig(image_size=32), workers=1)
    assert result.n_samples == 9 and not result.skipped  # nothing was remembered as failed
