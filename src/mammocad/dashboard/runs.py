"""A trained, evaluated run as the dashboard reads it: checked (:func:`validate_run`), its evaluation's
metrics and per-image predictions, its cached evaluation images, its model-comparison row and its errors.

Privacy: nothing here returns patient or image identifiers for display; sample ids (which can embed
patient numbers) stay internal, for joins only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.dashboard.settings import DEFAULT_SPLIT, check_split
from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.compare import load_evaluation, tables, unique_names
from mammocad.evaluation.evaluate import CRITICAL_PREDICTED, CRITICAL_TRUE
from mammocad.preprocess import Geometry, read_sample
from mammocad.reporting.html import array_to_png
from mammocad.serve.engine import InferenceEngine, PreparedImage
from mammocad.training.predict import pixels_to_input, run_weights
from mammocad.training.run_dir import EvaluationDir, RunDir


@dataclass(frozen=True)
class DashboardRun:
    """A trained run with an evaluation of a held-out split, as the dashboard reads it."""

    run_dir: Path
    name: str
    split: str
    evaluation_dir: Path
    classes: tuple[str, ...]

    def metrics(self) -> dict[str, Any]:
        """The evaluation's metrics (see :meth:`~mammocad.training.run_dir.EvaluationDir.read_metrics`)."""
        return EvaluationDir(self.evaluation_dir).read_metrics()

    def predictions(self) -> pd.DataFrame:
        """The evaluation's per-image table (see :class:`~mammocad.evaluation.predictions.SplitPredictions`)."""
        return EvaluationDir(self.evaluation_dir).read_predictions()


def validate_run(run_dir: str | Path, split: str = DEFAULT_SPLIT, name: str | None = None) -> DashboardRun:
    """Check that ``run_dir`` is trained and evaluated on ``split``; MammocadError naming the run and what's missing."""
    check_split(split)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MammocadError(f"run {run_dir} does not exist")
    run = RunDir(run_dir)
    if not run.has_model():
        raise MammocadError(f"run {run_dir} is not a trained run (no {RunDir.MODEL}); train it with `mammocad train`")
    meta = run.require_model()
    run_weights(run_dir, meta)  # the weights InferenceEngine will load, checked before any model is built
    evaluation = run.latest_evaluation(split)
    if evaluation is None:
        raise MammocadError(
            f"run {run_dir} has no evaluation of the {split} split; run `mammocad evaluate {run_dir} --split {split}`"
        )
    return DashboardRun(run_dir, name or run_dir.name, split, evaluation.path, tuple(meta["classes"]))


def load_runs(run_dirs: Sequence[str | Path], split: str = DEFAULT_SPLIT) -> list[DashboardRun]:
    """Validate every run (unique display names); one MammocadError listing every unusable run."""
    if not run_dirs:
        raise MammocadError("give at least one run directory")
    paths = [Path(run) for run in run_dirs]
    runs, problems = [], []
    for path, name in zip(paths, unique_names(paths), strict=True):
        try:
            runs.append(validate_run(path, split, name))
        except ConfigError:
            raise  # a bad split is the same for every run: say it once
        except MammocadError as exc:
            problems.append(str(exc))
    if problems:
        raise MammocadError("; ".join(problems))
    return runs


# ---- images --------------------------------------------------------------------------------------


def cached_image(engine: InferenceEngine, path: str | Path, name: str = "case") -> PreparedImage:
    """A cached preprocessed sample (what the evaluation scored) as an engine input.

    The cache holds the model input itself, so its "original" is that image and the geometry is
    the identity: heatmaps come back on the image shown. ImageReadError when the cache is not
    reachable (e.g. a run copied without its dataset).
    """
    pixels = read_sample(path)
    tensor = pixels_to_input(pixels, engine.run.model.in_chans)
    height, width = pixels.shape[:2]
    geometry = Geometry(
        original_hw=(height, width), crop=(0, 0, width, height), flipped=False, output_hw=(height, width)
    )
    return PreparedImage(name, tensor, geometry, tensor[0].numpy().copy(), "png")


def display_png(image: PreparedImage) -> bytes:
    """The image as an 8-bit grey PNG for display."""
    return array_to_png(np.rint(np.clip(image.original, 0.0, 1.0) * 255).astype(np.uint8))


def comparison_table(runs: Sequence[DashboardRun]) -> pd.DataFrame:
    """One row per run: images scored, then ``mammocad compare``'s Table 1 (accuracy, loss, macro-F1, macro-AUC,
    recall_min, recall_std, overfitting gaps), straight from each evaluation's metrics file."""
    evaluations = [load_evaluation(run.run_dir, run.evaluation_dir, run.name) for run in runs]
    table, _ = tables(evaluations)
    table.insert(0, "n_images", [int(ev.metrics["n_images"]) for ev in evaluations])
    return table


def misclassified(frame: pd.DataFrame) -> pd.DataFrame:
    """Wrong predictions, critical ones first (malignant/abnormal called normal/benign), then most confident first.

    Adds ``critical``; keeps the evaluation's columns (``image``, ``label_name``, ``prediction_name``,
    ``confidence``, ``p_<class>``...).
    """
    wrong = frame[~frame["correct"]].copy()
    wrong["critical"] = wrong["label_name"].isin(CRITICAL_TRUE) & wrong["prediction_name"].isin(CRITICAL_PREDICTED)
    return wrong.sort_values(["critical", "confidence"], ascending=[False, False], kind="stable").reset_index(drop=True)
