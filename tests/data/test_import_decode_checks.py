"""Import decodes what a header cannot vouch for: hostile files are skipped with their reason, the rest kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.images import DECODE_BUDGET_ENV
from mammocad.data.importers import import_dataset
from mammocad.data.manifest import SUMMARY_NAME, read_manifest
from mammocad.data.synth.hostile import (
    BOMB_FORMATS,
    write_bomb,
    write_corrupt_png,
    write_panicking_rle_dicom,
    write_rgb16_png,
    write_truncated_png,
)


def write_grey(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (48, 40), dtype=np.uint8))
    return path


def hostile_tree(src: Path) -> None:
    """Good images in two classes, and one of each hostile file among them."""
    write_grey(src / "benign" / "good1.png", 1)
    write_grey(src / "benign" / "good2.pgm", 2)
    write_grey(src / "normal" / "good3.png", 3)
    write_grey(src / "normal" / "good4.jpg", 4)
    for fmt in BOMB_FORMATS:
        write_bomb(src / "benign" / f"bomb.{fmt}", fmt)
    write_panicking_rle_dicom(src / "normal" / "panics.dcm")
    write_corrupt_png(src / "normal" / "corrupt.png")
    write_truncated_png(src / "benign" / "cut.png")
    write_rgb16_png(src / "benign" / "rgb16.png", side=400)  # 400² x (6 + 8) = 2.1 MB


def reasons_of(ds: Path) -> dict[str, str]:
    summary = json.loads((ds / SUMMARY_NAME).read_text())
    return {Path(s["item"]).name: s["reason"] for s in summary["skipped"]}


def test_import_skips_bombs_panics_corrupt_and_truncated_files_and_keeps_the_rest(tmp_path, monkeypatch):
    src = tmp_path / "src"
    hostile_tree(src)
    monkeypatch.setenv(DECODE_BUDGET_ENV, "2")  # the 16-bit RGB PNG needs ~3 MB
    summary = import_dataset("folders", src, tmp_path / "ds")
    reasons = reasons_of(tmp_path / "ds")
    assert summary.n_images == 4 and summary.per_class == {"normal": 2, "benign": 2}
    assert sorted(Path(p).name for p in read_manifest(tmp_path / "ds")["image_path"]) == [
        "good1.png",
        "good2.pgm",
        "good3.png",
        "good4.jpg",
    ]
    for fmt in BOMB_FORMATS:
        assert reasons[f"bomb.{fmt}"].startswith("too large to decode: ~"), reasons[f"bomb.{fmt}"]
    assert reasons["rgb16.png"] == "too large to decode: ~3 MB needed > budget 2 MB"
    assert reasons["panics.dcm"].startswith("DICOM pixel data could not be decoded (PanicException")
    assert reasons["corrupt.png"] == "PNG data could not be decoded (corrupt file)"
    assert reasons["cut.png"] == "PNG is truncated (no IEND chunk)"
    assert len(reasons) == 8


def test_cli_import_takes_the_budget_as_an_option(tmp_path, monkeypatch):
    monkeypatch.delenv(DECODE_BUDGET_ENV, raising=False)
    src = tmp_path / "src"
    write_grey(src / "benign" / "good.png", 1)
    write_grey(src / "normal" / "good.png", 2)
    write_rgb16_png(src / "normal" / "rgb16.png", side=400)
    result = CliRunner().invoke(
        app, ["data", "import", "folders", str(src), "-o", str(tmp_path / "small"), "--max-decode-mb", "2"]
    )
    assert result.exit_code == 0, result.output
    assert reasons_of(tmp_path / "small")["rgb16.png"].startswith("too large to decode")
    result = CliRunner().invoke(app, ["data", "import", "folders", str(src), "-o", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "default")) == 3  # within the default budget
    assert DECODE_BUDGET_ENV not in os.environ  # the option does not leak out of the command
