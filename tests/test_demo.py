"""The demo (README command 1) runs end to end and writes a report with its figures."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from mammocad.cli.main import app


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--n-per-class", "10"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    assert "SYNTHETIC" in report
    figures = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', report)
    assert len(figures) >= 8  # split chart + before/after gallery + ROI gallery
    assert (out / "dataset" / "manifest.parquet").exists() and (out / "dataset" / "splits" / "default.parquet").exists()
    assert "report:" in result.output
    again = CliRunner().invoke(app, ["demo", "-o", str(out)])
    assert again.exit_code == 2 and "never overwrites" in again.output
