"""The demo (README command 1) runs end to end — train, evaluate, compare — and writes a report Chromium shows."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from mammocad.cli.main import app
from tests.browser import render


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--n-per-class", "12", "--quick"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    assert "SYNTHETIC" in report
    figures = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', report)
    assert len(figures) >= 19  # split chart, galleries, 4 × (confusion, ROC), comparison figures
    assert (out / "dataset" / "manifest.parquet").exists() and (out / "dataset" / "splits" / "default.parquet").exists()
    runs = sorted(p.name.split("-")[0] for p in (out / "runs").iterdir() if p.is_dir())
    assert runs == ["baseline", "icnt", "lesion", "lite0"]
    for run in (out / "runs").iterdir():
        if run.is_dir():
            assert (run / "checkpoints" / "best.safetensors").exists()
            assert (run / "evaluation" / "test" / "report.html").exists()
    assert (out / "comparison" / "table1.md").exists() and (out / "comparison" / "significance.csv").exists()
    for label in ("baseline: epoch 1/1", "evaluating icnt", "comparing the models", "report:"):
        assert label in result.output
    shown = render(out / "report.html", tmp_path)
    assert shown["decoded"] == shown["images"] == len(figures)
    assert {
        "Training (3-class: normal / benign / malignant)",
        "Test split: each model",
        "Where the models look",
        "Comparison",
    } <= set(shown["headings"])
    lesion_eval = next((out / "runs").glob("lesion-*")) / "evaluation" / "test" / "metrics.json"
    assert json.loads(lesion_eval.read_text())["localization"]["pointing_game"]["films"] > 0
    again = CliRunner().invoke(app, ["demo", "-o", str(out)])
    assert again.exit_code == 2 and "never overwrites" in again.output
