"""Serving draws overlays without loading the explain command's evaluation and dataset code."""

from __future__ import annotations

import subprocess
import sys


def test_display_module_imports_no_evaluation_or_training_data() -> None:
    code = (
        "import sys, mammocad.explain.display\n"
        "loaded = [m for m in sys.modules if m.startswith(('mammocad.evaluation', 'mammocad.training.data',"
        " 'mammocad.explain.run'))]\n"
        "print(','.join(sorted(loaded)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"mammocad.explain.display loaded: {result.stdout.strip()}"


def test_old_import_paths_still_work() -> None:
    import importlib

    from mammocad.explain import display, png, run

    overlay = importlib.import_module("mammocad.explain.overlay")  # the package's `overlay` is cam.overlay
    assert run.display_overlay is display.display_overlay
    assert run.overlay_rgba is display.overlay_rgba
    assert run.MAX_OVERLAY_SIDE == display.MAX_OVERLAY_SIDE
    assert overlay.encode_png is png.encode_png
