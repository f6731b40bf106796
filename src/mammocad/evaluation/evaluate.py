"""``mammocad evaluate``: score a run on a split and write predictions, metrics, figures and a report.

Output directory (new, never overwritten; default ``RUN/evaluation/<split>``, then ``-2``, ``-3``...)::

    predictions.parquet   one row per image: patient, label, probabilities, prediction, loss
    metrics.json          the metric suite, overfitting gaps, bootstrap CIs, calibration, latent-space summary
    figures/*.png         confusion matrices, ROC, precision-recall, reliability, learning curves, PCA, t-SNE
    report.html           everything above in one self-contained page (opens offline)

The folder is an :class:`~mammocad.training.run_dir.EvaluationDir` (it spells the file names). This module
scores; the bootstrap intervals live in :mod:`~mammocad.evaluation.intervals`, the figures, galleries and
report layout in :mod:`~mammocad.evaluation.report` (their public names stay importable from here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.errors import DatasetError
from mammocad.evaluation import figures
from mammocad.evaluation.calibration import calibration_summary
from mammocad.evaluation.intervals import bootstrap_intervals, fast_headline, subtask_aucs
from mammocad.evaluation.latent import project_layer
from mammocad.evaluation.localization import score_localization
from mammocad.evaluation.metrics import classification_metrics, headline, overfit_metrics
from mammocad.evaluation.predictions import (
    SplitPredictions,
    default_feature_layers,
    predict_frame,
    predictions_table,
    run_config,
    split_frames,
)
from mammocad.evaluation.report import (
    CRITICAL_PREDICTED,
    CRITICAL_TRUE,
    GalleryPictures,
    evaluation_figures,
    evaluation_report,
    gallery_items,
    subtask_text,
)
from mammocad.io import atomic_write_bytes, unique_new_dir
from mammocad.models import is_lesion_aware
from mammocad.progress import ProgressFn
from mammocad.reporting.html import figure_to_png
from mammocad.training.calibration import is_indeterminate
from mammocad.training.predict import LoadedRun, load_run
from mammocad.training.run_dir import EvaluationDir, RunDir

#: ``(run, batch) -> (N, h, w)``: where a model sees a lesion (see ``evaluate_run``).
LocalizationMaps = Callable[[LoadedRun, torch.Tensor], np.ndarray]


@dataclass
class EvaluationResult:
    """Where the evaluation wrote its files, with the metrics it computed."""

    out_dir: Path
    metrics: dict[str, Any]
    predictions: SplitPredictions

    @property
    def report(self) -> Path:
        return EvaluationDir(self.out_dir).report_path


def evaluate_run(
    run_dir: str | Path,
    dataset: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    layers: list[str] | None = None,
    n_resamples: int = 1000,
    tsne: bool = True,
    seed: int = 0,
    progress: ProgressFn | None = None,
    gallery_pictures: GalleryPictures | None = None,
    localization_maps: LocalizationMaps | None = None,
) -> EvaluationResult:
    """Evaluate a run on ``split`` of ``dataset`` (default: the dataset it was trained on).

    Args:
        run_dir: a run directory from ``mammocad train``.
        dataset: dataset directory with the same task classes; None = the run's own.
        split: train, val, test, blind or all.
        out_dir: output directory (must not exist); default ``RUN/evaluation/<split>`` (made unique).
        layers: layers for the latent-space analysis (default: backbone output and head stages).
        n_resamples: bootstrap resamples for the confidence intervals (0: no CIs).
        tsne: also compute t-SNE embeddings (slower than PCA).
        seed: seed of the bootstrap and the embeddings.
        progress: called with a short message as each step starts.
        gallery_pictures: draws the gallery rows (e.g. ``mammocad.explain.gallery_overlays``: Grad-CAM
            of the predicted class); None shows the plain cached images.
        localization_maps: ``(run, batch) -> (N, h, w)`` maps of where the model sees a lesion, scored
            against the lesion masks (pointing game, FROC; e.g. ``mammocad.explain.localization_maps_for``).
            None: a lesion-aware run's own heatmap, no localization for other runs.

    Returns:
        :class:`EvaluationResult` with the output directory, the ``metrics.json`` content and the predictions.
    """
    step = progress or (lambda _message: None)
    run_dir = Path(run_dir)
    step("loading the run")
    run = load_run(run_dir)
    config = run_config(run_dir)
    wanted = (split,) if split == "train" else (split, "train")
    parts = split_frames(run, config, dataset, wanted)  # one read of manifest, splits and cache index
    if parts[split].empty:
        where = dataset if dataset is not None else config.data.dataset
        raise DatasetError(f"{where}: the {split} split has no images for task {config.data.task!r}")
    part = parts[split]
    layers = default_feature_layers(run.model) if layers is None else layers
    step(f"predicting {len(part)} {split} images")
    probs, features = predict_frame(run, part, layers)
    predictions = SplitPredictions(run.classes, split, predictions_table(part, probs, run.classes), features)
    metrics = classification_metrics(predictions.labels, predictions.probs, run.classes)

    train_headline, overfit = None, None
    if split != "train":
        train_part = parts["train"]
        if train_part.empty:
            overfit = {"undefined": "no training split to compare with (it holds no image for the task)"}
        else:
            step("scoring the training split (overfitting gaps)")
            train_probs, _ = predict_frame(run, train_part)
            train_metrics = classification_metrics(train_part["target"].to_numpy(), train_probs, run.classes)
            train_headline = headline(train_metrics)
            overfit = overfit_metrics(train_metrics, metrics)

    maps_fn = localization_maps or (_lesion_maps if is_lesion_aware(run.model) else None)
    localization = None
    if maps_fn is not None:
        step("localization (pointing game, FROC)")
        localization = score_localization(part, lambda batch: maps_fn(run, batch), run.model.in_chans)

    intervals = {}
    if n_resamples:
        step(f"patient-level bootstrap ({n_resamples} resamples)")
        intervals = bootstrap_intervals(predictions, n_resamples, seed=seed)
    calibration = calibration_summary(predictions.labels, predictions.probs)
    subtasks = subtask_aucs(predictions, n_resamples, seed)

    step("latent space (PCA" + (", t-SNE)" if tsne else ")"))
    projections = [project_layer(name, values, seed, tsne) for name, values in features.items()]

    out = EvaluationDir(
        unique_new_dir(Path(out_dir) if out_dir is not None else RunDir(run_dir).evaluation_dir(split).path)
    )
    document = {
        "run": str(run_dir),
        "dataset": str(dataset if dataset is not None else config.data.dataset),
        "split": split,
        "task": config.data.task,
        "classes": run.classes,
        "n_images": len(part),
        "n_patients": int(part["patient_id"].nunique()),
        "model": run.meta.get("model", {}),
        "metrics": metrics,
        "headline": headline(metrics),
        "train_headline": train_headline,
        "overfit": overfit,
        "confidence_intervals": intervals,
        "calibration": calibration,
        "temperature": run.temperature,  # applied to the logits before these probabilities (1: uncalibrated run)
        "indeterminate": {  # share of images the run would answer 'indeterminate' (metrics use the top class)
            "thresholds": run.thresholds,
            "rate": float(np.mean([is_indeterminate(p, run.thresholds) for p in predictions.probs])),
        },
        "localization": localization,
        "subtasks": subtasks,
        "latent": {
            p.layer: {"dimensions": p.dimensions, "explained_variance_ratio": p.explained_variance_ratio.tolist()}
            for p in projections
        },
    }
    step("writing predictions, metrics and figures")
    buffer = predictions.frame.to_parquet(index=False)
    atomic_write_bytes(out.predictions_path, buffer)
    out.write_metrics(document)
    pngs = evaluation_figures(predictions, metrics, calibration, projections, run_dir)
    if localization is not None and localization["froc"]["fp_per_film"]:
        pngs["froc"] = figure_to_png(figures.froc_figure(localization["froc"]))
    for name, png in pngs.items():
        atomic_write_bytes(out.figures_dir / f"{name}.png", png)
    step("writing the report")
    if gallery_pictures is not None:
        step("heatmaps for the galleries")
    pictures = None if gallery_pictures is None else (lambda rows: gallery_pictures(run, rows))
    galleries = gallery_items(predictions.frame, pictures=pictures)
    note = getattr(gallery_pictures, "meaning", None)
    from mammocad.training.model_card import model_card

    card = model_card(run_dir, evaluation=document)
    report = evaluation_report(
        document, pngs, projections, galleries, predictions, note(run) if callable(note) else None, card=card
    )
    out.write_report(report.render())
    return EvaluationResult(out.path, document, predictions)


def _lesion_maps(run: LoadedRun, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return run.model.lesion_map(batch).float().numpy()


__all__ = [
    "CRITICAL_PREDICTED",
    "CRITICAL_TRUE",
    "EvaluationResult",
    "GalleryPictures",
    "LocalizationMaps",
    "bootstrap_intervals",
    "evaluate_run",
    "fast_headline",
    "gallery_items",
    "subtask_aucs",
    "subtask_text",
]
