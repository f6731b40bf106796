"""The command line, stage by stage, including its error messages and exit codes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
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


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """A small imported dataset and the wrong kinds of files: a folder, binary data, non-text keys, bad YAML."""
    root = tmp_path_factory.mktemp("bad-options")
    synth_small(root / "src", "csv")
    assert invoke("data", "import", "csv", root / "src" / "labels.csv", "-o", root / "ds").exit_code == 0
    (root / "dir.yaml").mkdir()
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81 not text")
    (root / "intkeys.yaml").write_text("1: 2\n")
    (root / "x.png").write_bytes(b"\x89PNG")
    return root


BAD_OPTIONS = [
    (["data", "split", "{ds}", "--folds", "-1"], "--folds"),
    (["data", "split", "{ds}", "--folds", "1"], "folds must be 0 (none) or >= 2"),
    (["data", "split", "{ds}", "--folds", "²"], "--folds"),
    (["data", "split", "{ds}", "--test", "1.5"], "test_size must be in [0, 1)"),
    (["data", "split", "{ds}", "--val", "nan"], "val_size must be in [0, 1)"),
    (["data", "split", "{ds}", "--name", "../escape"], "split name '../escape'"),
    (["data", "import", "csv", "{root}/src/labels.csv", "-o", "{root}/o1", "--workers", "0"], "--workers"),
    (["data", "import", "csv", "{root}/src/labels.csv", "-o", "{root}/o2", "--max-pixels", "0"], "--max-pixels"),
    (["data", "import", "folders", "{root}/src", "-o", "{root}/o3", "--set", "class_map=[a"], "not valid YAML"),
    (["preprocess", "{ds}", "--image-size", "abc"], "--image-size"),
    (["preprocess", "{ds}", "--image-size", "0"], "image_size must be between 16 and 4096"),
    (["preprocess", "{ds}", "--workers", "0"], "--workers"),
    (["preprocess", "{ds}", "--config", "{root}/missing.yaml"], "config file does not exist"),
    (["preprocess", "{ds}", "--config", "{root}/dir.yaml"], "is a directory, not a config file"),
    (["preprocess", "{ds}", "--config", "{root}/binary.yaml"], "not a text file"),
    (["preprocess", "{ds}", "--config", "{root}/intkeys.yaml"], "setting names must be text, got 1"),
    (["train", "--config", "{root}/dir.yaml"], "is a directory, not a config file"),
    (["train", "--dataset", "{ds}", "--set", "train.lr=[0.1"], "not valid YAML"),
    (["train", "--dataset", "{ds}", "--set", "train.lr=.inf"], "train.lr: Input should be a finite number"),
    (["train", "--dataset", "{ds}", "--set", "train.epochs=-1"], "train.epochs"),
    (["train", "--dataset", "{ds}", "--set", "train.nope=1"], "train.nope: Extra inputs"),
    (["train", "--dataset", "{ds}", "--set", "nosection.x=1"], "nosection: Extra inputs"),
    (["train", "--dataset", "{ds}", "--devices", "²"], "train.devices"),
    (["train", "--dataset", "{ds}", "--devices", "0"], "train.devices"),
    (["train", "--dataset", "{ds}", "--strategy", "warp"], "unknown Lightning strategy 'warp'"),
    (["cv", "--dataset", "{ds}", "--folds", "1"], "--folds"),
    (["cv", "--dataset", "{ds}", "--folds", "-3"], "--folds"),
    (["cv", "--config", "{root}/dir.yaml"], "is a directory, not a config file"),
    (["tune", "--config", "{root}/binary.yaml", "--search", "{root}/dir.yaml", "--trials", "1"], "not a text file"),
    (["tune", "--config", "{root}/dir.yaml", "--search", "{root}/dir.yaml", "--trials", "0"], "--trials"),
    (["explain", "{root}/no-run", "{root}/x.png", "--box", "²,0,10,10"], "four integers"),
    (["explain", "{root}/no-run", "{root}/x.png", "--box", "--1,0,10,10"], "four integers"),
    (["predict", "{root}/no-run", "{root}/x.png", "--box", "1,2,3"], "four integers"),
    (["export", "{root}/no-run", "--opset", "99"], "--opset"),
    (["serve", "{root}/no-run", "--port", "70000"], "--port"),
    (["serve", "{root}/no-run", "--workers", "0"], "--workers"),
    (["serve", "{root}/no-run", "--token", "s3cret-on-the-command-line"], "--token is not accepted"),
    (["serve", "{root}/no-run", "--token-file", "{root}/dir.yaml"], "not a regular file"),
    (["synth", "-o", "{root}/s1", "--height", "100000"], "--height"),
    (["synth", "-o", "{root}/s2", "--normal", "-1"], "--normal"),
    (["demo", "-o", "{root}/d1", "--format", "xyz"], "unknown format 'xyz'"),
    (["demo", "--n-per-class", "5"], "--n-per-class"),
    (["bench", "preprocess", "--mias", "{root}/missing"], "--mias"),
    (["dashboard", "{root}/no-run", "--blind-n", "0"], "--blind-n"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_OPTIONS, ids=[" ".join(a[:3]) + " " + a[-1] for a, _ in BAD_OPTIONS])
def test_bad_option_values_exit_2_with_the_reason_never_a_traceback(bad_inputs, args, expected):
    paths = {"ds": bad_inputs / "ds", "root": bad_inputs}
    result = invoke(*(arg.format(**paths) for arg in args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and expected in result.text
    assert "s3cret-on-the-command-line" not in result.output


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (IsADirectoryError(21, "Is a directory", "/data/out.csv"), "error: /data/out.csv: Is a directory"),
        (PermissionError(13, "Permission denied", "/data/a", None, "/data/b"), "error: /data/b: Permission denied"),
        (OSError(28, "No space left on device"), "error: No space left on device"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "a file is not UTF-8 text"),
    ],
)
def test_user_errors_turns_os_errors_into_one_line(error, expected, capsys):
    from mammocad.cli.common import user_errors

    with pytest.raises(typer.Exit) as raised, user_errors():
        raise error
    assert raised.value.exit_code == 2
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()) and err.startswith("error:") and "Traceback" not in err


# What `mammocad --help` may not import: each costs seconds on a small machine, and help needs none.
HEAVY_MODULES = ("torch", "lightning", "sklearn", "pandas", "mlflow", "fastapi", "timm", "scipy", "matplotlib")
_HELP_IMPORTS = """
import sys
from typer.testing import CliRunner
from mammocad.cli.main import app
for args in ([], ["--help"], ["predict", "--help"], ["serve", "--help"], ["data", "import", "--help"],
             ["data", "split", "--help"], ["synth", "--help"], ["preprocess", "--help"], ["bench", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2) and "Usage" in result.output, (args, result.output)
print(" ".join(sorted(m for m in HEAVY if m in sys.modules)))
"""


def test_help_imports_no_heavy_module():
    import subprocess
    import sys

    script = f"HEAVY = {HEAVY_MODULES!r}\n{_HELP_IMPORTS}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"--help imported {done.stdout.strip()}"


@pytest.fixture
def fake_predict(monkeypatch, tmp_path):
    """`mammocad predict` with the model replaced: one image read, one unreadable (no training needed)."""
    from mammocad.training import predict as predict_module

    rows = [
        {"path": "a [1].png", "label": "abnormal", "prediction": "abnormal", "p_normal": 0.2, "p_abnormal": 0.8,
         "caveat": None, "refused": False, "error": None},
        {"path": "missing.png", "label": None, "prediction": None, "p_normal": None, "p_abnormal": None,
         "caveat": None, "refused": False, "error": "file does not exist"},
    ]  # fmt: skip
    monkeypatch.setattr(predict_module, "load_run", lambda run, which=None: object())
    monkeypatch.setattr(predict_module, "predict_paths", lambda loaded, paths, lesion_boxes=None: pd.DataFrame(rows))
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def test_predict_prints_csv_when_piped_and_exits_1_when_an_image_failed(fake_predict, tmp_path):
    import io

    result = runner.invoke(app, ["predict", str(fake_predict), "a [1].png", "missing.png"])
    assert result.exit_code == 1, result.output  # CliRunner's stdout is no terminal: CSV, notes on stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table["path"]) == ["a [1].png", "missing.png"] and table["p_abnormal"].iloc[0] == 0.8
    assert table["error"].iloc[1] == "file does not exist"
    assert "1 image(s) could not be read" in result.stderr
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(fake_predict), "a [1].png", "missing.png", "-o", str(out)])
    assert result.exit_code == 1 and len(pd.read_csv(out)) == 2  # the rows that were read are still written
    assert "wrote" in result.stdout


def test_tables_run_past_a_narrow_console_instead_of_folding(capsys):
    from rich.table import Table

    from mammocad.cli.common import console, print_table

    wide = "malignant_" * 12
    table = Table(title="split")
    table.add_column("split")
    table.add_column(wide)
    table.add_row("train", "7")
    width = console.width
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert console.width == width and any(wide in line for line in lines) and any("train" in line for line in lines)
    assert len(lines) == 6  # title, top rule, header, separator, one row, bottom rule: nothing folded
