"""Fitting a run's temperature scaling on its validation split: at the end of training, and again
for a finished run (``mammocad calibrate``).

The numbers (temperature, NLL, ECE, the ``indeterminate`` thresholds) are
:mod:`mammocad.training.calibration`'s; this module scores the val images to fit them on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.training.calibration import calibration_document, read_calibration
from mammocad.training.predict import LoadedRun, load_run
from mammocad.training.run_dir import RunDir
from mammocad.training.scoring import frame_logits, run_config, split_frames


def fit_calibration(run: LoadedRun, val: pd.DataFrame, thresholds: dict[str, float]) -> dict[str, Any]:
    """The calibration document of ``run``'s temperature fitted on the cached images of ``val``."""
    logits = frame_logits(run, val)[0] if len(val) else np.zeros((0, len(run.classes)))
    labels = val["target"].to_numpy() if len(val) else np.zeros(0, dtype=np.int64)
    return calibration_document(logits, labels, thresholds)


def calibrate_run(run_dir: str | Path, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """(Re)fit the temperature of a finished run on its validation split; writes ``calibration.json``.

    ``thresholds`` override the indeterminate thresholds (default: those stored, else the config's, else
    the defaults)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    config = run_config(run_dir)
    part = split_frames(run, config, None, ("val",))["val"]
    stored = read_calibration(run_dir)["indeterminate"]
    document = fit_calibration(run, part, stored | (thresholds or {}))
    RunDir(run_dir).write_calibration(document)
    return document


__all__ = ["calibrate_run", "fit_calibration"]
