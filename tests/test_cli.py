"""The command line, stage by stage, including its error messages and exit codes."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from mammocad.cli.main import app

runner = CliRunner()


def invoke(*args: object):
    """Run the CLI; ``.text`` is the output with rich's line wrapping undone."""
    result = runner.invoke(app, [str(a) for a in args])
    result.text = " ".join(result.output.split())
    return result


def synth_small(out, fmt: str) -> None:
    """Two images per class, 96x96, in ``fmt``."""
    args = ["--normal", "2", "--benign", "2", "--malignant", "2", "--height", "96", "--width", "96"]
    assert invoke("synth", "-o", out, "--format", fmt, *args).exit_code == 0


def test_synth_import_split_info_preprocess(tmp_path):
    result = invoke(
        "synth",
        "-o",
        tmp_path / "src",
        "--format",
        "mias",
        "--normal",
        "4",
        "--benign",
        "4",
        "--malignant",
        "4",
        "--height",
        "128",
    )
    assert result.exit_code == 0, result.output
    result = invoke("data", "import", "mias", tmp_path / "src", "-o", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    assert "per class: normal=4, benign=4, malignant=4" in result.text
    assert (tmp_path / "ds" / "import_summary.txt").read_text().startswith("mammocad import (mias)")
    result = invoke("data", "split", tmp_path / "ds", "--folds", "2", "--test", "0.34", "--val", "0.5")
    assert result.exit_code == 0, result.output
    splits = pd.read_parquet(tmp_path / "ds" / "splits" / "default.parquet")
    assert set(splits["fold"]) == {0, 1} and (splits.groupby("patient_id")["split"].nunique() == 1).all()
    result = invoke("data", "info", tmp_path / "ds")
    assert result.exit_code == 0 and "12 images, 8 patients" in result.text and "splits: default" in result.text
    result = invoke("preprocess", tmp_path / "ds", "--image-size", "32", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "12 samples (12 processed now, 0 from cache)" in result.text
    result = invoke("preprocess", tmp_path / "ds", "--image-size", "32", "--workers", "1")
    assert "(0 processed now, 12 from cache)" in result.text


def test_preprocess_config_file_and_overrides(tmp_path):
    synth_small(tmp_path / "src", "csv")
    invoke("data", "import", "csv", tmp_path / "src" / "labels.csv", "-o", tmp_path / "ds")
    config = tmp_path / "run.yaml"
    config.write_text("preprocess:\n  image_size: 40\n  clahe: false\n")
    result = invoke("preprocess", tmp_path / "ds", "--config", config, "--flip-to", "none", "--workers", "1")
    assert result.exit_code == 0, result.output
    (cache,) = (tmp_path / "ds" / "cache").iterdir()
    saved = json.loads((cache / "config.json").read_text())["config"]
    assert saved["image_size"] == [40, 40] and saved["clahe"] is False and saved["flip_to"] is None
    config.write_text("preprocess:\n  image_size: 40\n  clahe_clip: 3\n")
    result = invoke("preprocess", tmp_path / "ds", "--config", config)
    assert result.exit_code == 2 and "clahe_clip" in result.text and "Extra inputs" in result.text


def test_errors_are_one_clear_line_with_exit_code_2(tmp_path):
    result = invoke("data", "import", "nope", tmp_path, "-o", tmp_path / "ds")
    assert result.exit_code == 2 and "valid formats: mias, folders" in result.text
    result = invoke("data", "import", "mias", tmp_path / "missing", "-o", tmp_path / "ds")
    assert result.exit_code == 2 and "source does not exist" in result.text
    result = invoke("data", "split", tmp_path)
    assert result.exit_code == 2 and "no manifest here" in result.text
    result = invoke("data", "import", "csv", tmp_path / "x.csv", "-o", tmp_path / "ds", "--set", "novalue")
    assert result.exit_code == 2 and "key=value" in result.text
    assert "Traceback" not in result.text


def test_importer_options_pass_through(tmp_path):
    synth_small(tmp_path / "src", "folders")
    result = invoke(
        "data", "import", "folders", tmp_path / "src", "-o", tmp_path / "ds", "--patient-regex", r"^(P\d+)_"
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert frame["patient_id"].nunique() == 2  # the benign patient's other breast holds the two normals


def test_set_options_are_read_or_refused_in_one_line(tmp_path):
    """``--set`` values arrive as text: the documented forms work, anything else names the option."""
    synth_small(tmp_path / "src", "folders")
    mapping = "class_map=normal:negative,benign:positive,malignant:positive"
    result = invoke("data", "import", "folders", tmp_path / "src", "-o", tmp_path / "ds", "--set", mapping)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ds" / "classes.json").read_text())["classes"] == ["negative", "positive"]
    for option, message in [
        (
            "class_map=normal;negative",
            "class_map: cannot read 'normal;negative'; accepted form: class_map=FOLDER:LABEL",
        ),
        ("sheeet=1", "folders: unknown option 'sheeet'; the folders options are: patient_regex, class_map"),
    ]:
        result = invoke("data", "import", "folders", tmp_path / "src", "-o", tmp_path / "bad", "--set", option)
        assert result.exit_code == 2 and message in result.text and "Traceback" not in result.text


def test_a_large_import_prints_counts_and_a_few_items_not_every_skip(tmp_path):
    synth_small(tmp_path / "src", "folders")
    for k in range(40):  # 40 unreadable files: the console shows counts and examples, the summary file all
        (tmp_path / "src" / "Normal" / f"broken-{k:02d}.png").write_bytes(b"\x89PNG broken")
    result = invoke("data", "import", "folders", tmp_path / "src", "-o", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    assert "skipped: 40" in result.text and "... and 30 more" in result.text
    assert result.text.count("broken-") == 10
    assert (tmp_path / "ds" / "import_summary.txt").read_text().count("broken-") == 40
