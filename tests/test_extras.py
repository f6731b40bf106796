"""The optional extras: a command whose extra is missing says which one to install, with exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.extras import EXTRA_MODULES, MissingExtraError, is_installed, missing_modules, require

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_require_names_the_extra_the_install_line_and_the_missing_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the package were not installed
    with pytest.raises(MissingExtraError) as caught:
        require("serve", command="mammocad serve")
    message = str(caught.value)
    assert message.startswith("mammocad serve needs the 'serve' extra: pip install 'mammocad[serve]'")
    assert "(missing: fastapi;" in message
    assert missing_modules("fastapi", "json") == ["fastapi"]
    assert not is_installed("serve")


def test_require_passes_when_installed_and_defaults_to_the_extra_modules():
    for extra in EXTRA_MODULES:
        require(extra)  # make setup installs every extra
    require("tune", "optuna")
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        require("nope")


def test_tune_without_the_tune_extra_exits_2_with_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    args = ["tune", "--config", str(tmp_path / "run.yaml"), "--search", str(tmp_path / "s.yaml"), "--trials", "1"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "mammocad tune needs the 'tune' extra: pip install 'mammocad[tune]'" in text and "optuna" in text


def test_every_extra_of_pyproject_is_known_and_all_installs_them_all():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert set(extras) - {"all"} == set(EXTRA_MODULES)
    (everything,) = extras["all"]
    named = set(re.fullmatch(r"mammocad\[(.*)\]", everything).group(1).split(","))
    assert named == set(EXTRA_MODULES)


def test_the_core_commands_import_without_any_extra():
    """train/predict/evaluate/explain/cv/ablate and the CLI itself load with every extra's modules absent."""
    blocked = sorted({module for modules in EXTRA_MODULES.values() for module in modules})
    script = "\n".join(
        [
            "import importlib, sys",
            f"for name in {blocked!r}: sys.modules[name] = None",
            "for name in ('mammocad.cli.main', 'mammocad.training.run', 'mammocad.training.predict',",
            "             'mammocad.evaluation.evaluate', 'mammocad.evaluation.compare', 'mammocad.explain',",
            "             'mammocad.experiments.cv', 'mammocad.experiments.ablate'):",
            "    importlib.import_module(name)",
        ]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "extra", "module"),
    [
        (["serve", "RUN"], "serve", "uvicorn"),
        (["export", "RUN"], "serve", "onnxruntime"),
        (["dashboard", "RUN"], "dashboard", "streamlit"),
        (["bench", "serve"], "serve", "fastapi"),
    ],
)
def test_commands_without_their_extra_exit_2(monkeypatch, args, extra, module):
    """A command whose extra is missing names the install line instead of a traceback."""
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"pip install 'mammocad[{extra}]'" in text and module in text


def test_training_without_mlflow_is_unlogged_with_a_notice(tmp_path, monkeypatch, caplog):
    """output.mlflow defaults to on; without the mlflow extra the run trains unlogged and says so."""
    from mammocad.training.config import load_run_config
    from mammocad.training.run_dir import RunDir
    from mammocad.training.tracking import mlflow_logger

    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = load_run_config(None, {"data.dataset": str(tmp_path), "output.runs_dir": str(tmp_path)})
    assert config.output.mlflow
    with caplog.at_level("WARNING"):
        assert mlflow_logger(config, RunDir(tmp_path / "run")) is False
    assert "mammocad[mlflow]" in caplog.text
    assert RunDir(tmp_path / "run").read_state()["mlflow"].startswith("not installed")
