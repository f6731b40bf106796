"""``mammocad evaluate``: score a run on a split and write predictions, metrics, figures and a report.

Output directory (new, never overwritten; default ``RUN/evaluation/<split>``, then ``-2``, ``-3``...)::

    predictions.parquet   one row per image: patient, label, probabilities, prediction, loss
    metrics.json          the metric suite, overfitting gaps, bootstrap CIs, calibration, latent-space summary
    figures/*.png         confusion matrices, ROC, precision-recall, reliability, learning curves, PCA, t-SNE
    report.html           everything above in one self-contained page (opens offline)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from mammocad.errors import DatasetError
from mammocad.evaluation import figures
from mammocad.evaluation.bootstrap import cluster_bootstrap
from mammocad.evaluation.calibration import calibration_summary, reliability_table
from mammocad.evaluation.latent import LayerProjection, project_layer
from mammocad.evaluation.localization import FP_RATES, score_localization
from mammocad.evaluation.metrics import classification_metrics, headline, overfit_metrics
from mammocad.evaluation.predictions import (
    SplitPredictions,
    default_feature_layers,
    predict_frame,
    predictions_table,
    run_config,
    split_frames,
)
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_text, unique_new_dir
from mammocad.models import is_lesion_aware
from mammocad.preprocess import read_sample
from mammocad.reporting.html import HtmlReport, array_to_png, figure_to_png
from mammocad.training.calibration import is_indeterminate
from mammocad.training.predict import LoadedRun, load_run

ProgressFn = Callable[[str], None]
#: ``(run, batch) -> (N, h, w)``: where a model sees a lesion (see ``evaluate_run``).
LocalizationMaps = Callable[[LoadedRun, torch.Tensor], np.ndarray]

# Clinically worst mistakes: a cancer (or any abnormality) called normal or benign.
CRITICAL_TRUE = ("malignant", "abnormal")
CRITICAL_PREDICTED = ("normal", "benign")


@dataclass
class EvaluationResult:
    """Where the evaluation wrote its files, with the metrics it computed."""

    out_dir: Path
    metrics: dict[str, Any]
    predictions: SplitPredictions

    @property
    def report(self) -> Path:
        return self.out_dir / "report.html"


def fast_headline(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, f1_macro, recall_min and auc_macro on one bootstrap resample, quickly.

    Same definitions as :func:`classification_metrics` (a class absent from the resample has no
    recall and is left out of the macro averages); NaN where nothing is defined.
    """
    predicted = probs.argmax(axis=1)
    confusion = np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    support, predicted_count, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = support > 0
    recall = np.divide(hits, support, out=np.full(n_classes, np.nan), where=present)
    # F1 = 2TP / (2TP + FP + FN); undefined only for a class neither present nor predicted.
    denominator = support + predicted_count
    f1 = np.divide(2 * hits, denominator, out=np.full(n_classes, np.nan), where=denominator > 0)
    aucs = []
    for k in range(n_classes):
        truth = labels == k
        if truth.any() and not truth.all():
            aucs.append(roc_auc_score(truth, probs[:, k]))
    result = {
        "accuracy": float(np.mean(predicted == labels)),
        "f1_macro": float(np.nanmean(f1)) if np.isfinite(f1).any() else np.nan,
        "recall_min": float(np.nanmin(recall)) if present.any() else np.nan,
        "auc_macro": float(np.mean(aucs)) if aucs else np.nan,
        # mean recall of the classes present (= recall_macro); chance is 1 / n_classes
        "balanced_accuracy": float(np.nanmean(recall)) if present.any() else np.nan,
    }
    if n_classes == 2:
        result["auc_macro"] = float(roc_auc_score(labels, probs[:, 1])) if 0 < labels.sum() < len(labels) else np.nan
        result["sensitivity"] = float(recall[1])
        result["specificity"] = float(recall[0])
    return result


def subtask_aucs(predictions: SplitPredictions, n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The binary questions inside a 3-class (normal/benign/malignant) task, each AUC with its patient CI.

    ``normal_vs_abnormal``: score 1 − p(normal) over every image; ``benign_vs_malignant``: score
    p(malignant) / (p(benign) + p(malignant)) over the abnormal images. Empty for other class sets.
    """
    classes = predictions.classes
    if len(classes) < 3 or not {"normal", "benign", "malignant"} <= set(classes):
        return {}
    labels, probs = predictions.labels, predictions.probs
    groups = predictions.frame["patient_id"].to_numpy()
    normal, benign, malignant = (classes.index(c) for c in ("normal", "benign", "malignant"))
    lesion = np.isin(labels, [benign, malignant])
    questions = {
        "normal_vs_abnormal": (np.ones(len(labels), bool), labels != normal, 1 - probs[:, normal]),
        "benign_vs_malignant": (
            lesion,
            labels == malignant,
            probs[:, malignant] / np.clip(probs[:, benign] + probs[:, malignant], 1e-12, None),
        ),
    }
    result: dict[str, dict[str, Any]] = {}
    for name, (rows, positive, score) in questions.items():
        index = np.flatnonzero(rows)

        def auc(indices: np.ndarray, positive: np.ndarray = positive, score: np.ndarray = score) -> float | None:
            truth = positive[indices]
            return float(roc_auc_score(truth, score[indices])) if 0 < truth.sum() < len(truth) else None

        point = auc(index)
        entry: dict[str, Any] = {"auc": point, "n_images": len(index)}
        if n_resamples and point is not None:
            ci = cluster_bootstrap(groups[index], lambda idx, index=index: auc(index[idx]), n_resamples, seed=seed)
            entry |= {"low": ci.low, "high": ci.high}
        result[name] = entry
    return result


def bootstrap_intervals(
    predictions: SplitPredictions, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Patient-level percentile bootstrap CIs of the headline metrics (images of a patient move together)."""
    labels, probs, n_classes = predictions.labels, predictions.probs, len(predictions.classes)
    groups = predictions.frame["patient_id"].to_numpy()
    cache: dict[bytes, dict[str, float]] = {}  # every metric sees the same resamples (same seed): score each once

    def scores(indices: np.ndarray) -> dict[str, float]:
        key = indices.tobytes()
        if key not in cache:
            cache[key] = fast_headline(labels[indices], probs[indices], n_classes)
        return cache[key]

    names = ["accuracy", "balanced_accuracy", "f1_macro", "recall_min", "auc_macro"] + (
        ["sensitivity", "specificity"] if n_classes == 2 else []
    )
    intervals = {}
    for name in names:
        result = cluster_bootstrap(
            groups, lambda idx, name=name: scores(idx)[name], n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        intervals[name] = result.to_dict()
    return intervals


def _critical_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """Cancers called normal/benign (binary: abnormal called normal), most confident first.

    Tasks without those classes fall back to every error.
    """
    wrong = frame[~frame["correct"]]
    if frame["label_name"].isin(CRITICAL_TRUE).any():
        wrong = wrong[wrong["label_name"].isin(CRITICAL_TRUE) & wrong["prediction_name"].isin(CRITICAL_PREDICTED)]
    return wrong.sort_values("confidence", ascending=False)


def _thumbnail(pixels: np.ndarray, width: int = 180) -> bytes:
    import cv2

    if pixels.dtype != np.uint8:
        pixels = (pixels / 257).astype(np.uint8)
    height = max(1, round(pixels.shape[0] * width / pixels.shape[1]))
    return array_to_png(cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA))


#: Draws a picture per gallery row (e.g. a Grad-CAM overlay, RGB uint8) from the run and the rows.
GalleryPictures = Callable[[LoadedRun, pd.DataFrame], list[np.ndarray]]


def gallery_items(
    frame: pd.DataFrame,
    per_class: int = 4,
    errors: int = 8,
    pictures: Callable[[pd.DataFrame], list[np.ndarray]] | None = None,
) -> dict[str, list[tuple[bytes, str]]]:
    """Thumbnails for the report: correct high-confidence cases per class, and critical errors.

    ``pictures`` (optional) draws the shown rows instead of the plain cached image, e.g. with a
    heatmap of the predicted class over it (the explain stage's ``gallery_overlays``).
    """
    groups: dict[str, pd.DataFrame] = {}
    for name in frame["label_name"].unique():
        groups[f"correct, high confidence: {name}"] = frame[frame["correct"] & (frame["label_name"] == name)].nlargest(
            per_class, "confidence"
        )
    groups["critical errors"] = _critical_errors(frame).head(errors)
    shown = pd.concat(list(groups.values()))
    drawn = pictures(shown) if pictures is not None and len(shown) else [read_sample(p) for p in shown["image"]]
    by_sample = dict(zip(shown["sample_id"], drawn, strict=True))
    items: dict[str, list[tuple[bytes, str]]] = {}
    for title, rows in groups.items():
        items[title] = [(_thumbnail(by_sample[row.sample_id]), _caption(row, title)) for row in rows.itertuples()]
    return items


def _caption(row: Any, title: str) -> str:
    if title == "critical errors":
        return f"{row.image_id} · true {row.label_name} → {row.prediction_name} (p={row.confidence:.2f})"
    return f"{row.image_id} · {row.label_name} p={row.confidence:.2f}"


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

    out = unique_new_dir(Path(out_dir) if out_dir is not None else run_dir / "evaluation" / split)
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
    atomic_write_bytes(out / "predictions.parquet", buffer)
    atomic_write_json(out / "metrics.json", document)
    pngs = _figures(predictions, metrics, calibration, projections, run_dir)
    if localization is not None and localization["froc"]["fp_per_film"]:
        pngs["froc"] = figure_to_png(figures.froc_figure(localization["froc"]))
    for name, png in pngs.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    step("writing the report")
    if gallery_pictures is not None:
        step("heatmaps for the galleries")
    pictures = None if gallery_pictures is None else (lambda rows: gallery_pictures(run, rows))
    galleries = gallery_items(predictions.frame, pictures=pictures)
    note = getattr(gallery_pictures, "meaning", None)
    from mammocad.training.model_card import model_card

    card = model_card(run_dir, evaluation=document)
    report = _report(
        document, pngs, projections, galleries, predictions, note(run) if callable(note) else None, card=card
    )
    atomic_write_text(out / "report.html", report.render())
    return EvaluationResult(out, document, predictions)


def _figures(
    predictions: SplitPredictions,
    metrics: dict[str, Any],
    calibration: dict[str, Any],
    projections: list[LayerProjection],
    run_dir: Path,
) -> dict[str, bytes]:
    labels, probs, classes = predictions.labels, predictions.probs, predictions.classes
    matrix = np.asarray(metrics["confusion_matrix"])
    pngs = {
        "confusion_counts": figure_to_png(figures.confusion_matrix_figure(matrix, classes)),
        "confusion_normalised": figure_to_png(figures.confusion_matrix_figure(matrix, classes, normalise=True)),
        "roc": figure_to_png(figures.roc_figure(labels, probs, classes)),
        "precision_recall": figure_to_png(figures.pr_figure(labels, probs, classes)),
        "reliability": figure_to_png(figures.reliability_figure(reliability_table(labels, probs), calibration["ece"])),
    }
    history = run_dir / "history.csv"
    if history.exists():
        pngs["learning_curves"] = figure_to_png(figures.learning_curves_figure(pd.read_csv(history)))
    usable = [p for p in projections if len(p.explained_variance_ratio)]
    if usable:
        ratios = {p.layer: p.explained_variance_ratio for p in usable}
        pngs["pca_variance"] = figure_to_png(figures.pca_variance_figure(ratios))
    for p in usable:
        safe = p.layer.replace(".", "_")
        pngs[f"pca2d_{safe}"] = figure_to_png(
            figures.embedding_figure(p.pca, labels, classes, f"PCA · {p.layer} ({p.dimensions}-d)")
        )
        if p.tsne is not None:
            pngs[f"tsne_{safe}"] = figure_to_png(
                figures.embedding_figure(p.tsne, labels, classes, f"t-SNE · {p.layer} ({p.dimensions}-d)")
            )
    return pngs


def _lesion_maps(run: LoadedRun, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return run.model.lesion_map(batch).float().numpy()


def _localization_section(report: HtmlReport, localization: dict[str, Any], pngs: dict[str, bytes]) -> None:
    pointing, froc = localization["pointing_game"], localization["froc"]
    report.heading("Where the model looks")
    report.paragraph(
        f"Pointing game: the heatmap's peak falls inside an annotated lesion on {pointing['hits']} of "
        f"{pointing['films']} films with a located lesion (hit rate {_fmt(pointing['hit_rate'])}). "
        f"FROC-style lesion sensitivity over {froc['films']} films ({froc['lesions']} lesions; normal films count "
        "for false positives): "
        + ", ".join(f"{_fmt(froc.get(f'sensitivity_at_{r:g}_fp'))} at {r:g} FP/film" for r in FP_RATES)
        + "."
    )
    if "froc" in pngs:
        report.figure(pngs["froc"], "FROC: lesion sensitivity against false positives per film", width=360)


def subtask_text(subtasks: dict[str, dict[str, Any]]) -> str:
    """``normal vs abnormal AUC 0.71 (95% CI 0.62–0.80), ...`` for a report."""
    parts = []
    for name, entry in subtasks.items():
        interval = f" (95% CI {_fmt(entry['low'])}–{_fmt(entry['high'])})" if entry.get("low") is not None else ""
        parts.append(f"{name.replace('_', ' ')} AUC {_fmt(entry['auc'])}{interval} over {entry['n_images']} images")
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    return "undefined" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _report(
    document: dict[str, Any],
    pngs: dict[str, bytes],
    projections: list[LayerProjection],
    galleries: dict[str, list[tuple[bytes, str]]],
    predictions: SplitPredictions,
    gallery_note: str | None = None,
    card: dict[str, Any] | None = None,
) -> HtmlReport:
    metrics = document["metrics"]
    report = HtmlReport(f"Evaluation · {Path(document['run']).name} · {document['split']}")
    if card is not None:
        report.fitness(card)  # what the model is fit for, before any number
    report.paragraph(
        f"Run {document['run']} ({document['model'].get('name', '?')}), task {document['task']}, "
        f"evaluated on the {document['split']} split of {document['dataset']}: {document['n_images']} images "
        f"from {document['n_patients']} patients. Classes: {', '.join(document['classes'])}."
    )
    report.heading("Headline metrics")
    rows = []
    for name, value in document["headline"].items():
        ci = document["confidence_intervals"].get(name, {})
        interval = (
            f"{_fmt(ci.get('low'))} – {_fmt(ci.get('high'))}" if ci.get("low") is not None else ci.get("note") or ""
        )
        train = (document["train_headline"] or {}).get(name)
        rows.append(
            {"metric": name, "value": _fmt(value), "95% CI (patient bootstrap)": interval, "train": _fmt(train)}
        )
    report.table(pd.DataFrame(rows), index=False)
    overfit = document["overfit"] or {}
    if overfit:
        report.paragraph(
            "Overfitting gaps: "
            + ", ".join(f"{k} = {_fmt(v) if not isinstance(v, str) else v}" for k, v in overfit.items())
        )
    if document.get("subtasks"):
        report.paragraph("Inside the 3-class task: " + subtask_text(document["subtasks"]) + ".")
    cal = document["calibration"]
    report.paragraph(f"Calibration: Brier score {_fmt(cal['brier'])}, expected calibration error {_fmt(cal['ece'])}.")
    if "temperature" in document:
        undecided = document.get("indeterminate") or {}
        report.paragraph(
            f"Probabilities are temperature-scaled (T = {document['temperature']:.3f}; 1 = uncalibrated). "
            + (f"{undecided['rate']:.0%} of these images would be answered 'indeterminate'." if undecided else "")
        )

    if document.get("localization"):
        _localization_section(report, document["localization"], pngs)

    report.heading("Per class")
    per_class = pd.DataFrame(metrics["per_class"]).T
    report.table(per_class.apply(lambda column: column.map(str if column.name == "support" else _fmt)))
    if metrics.get("undefined"):
        report.paragraph(
            "Undefined metrics: " + "; ".join(f"{k}: {reason}" for k, reason in metrics["undefined"].items()), note=True
        )

    report.heading("Confusion matrices, ROC, precision-recall, calibration")
    for name in ("confusion_counts", "confusion_normalised", "roc", "precision_recall", "reliability"):
        report.figure(pngs[name], name.replace("_", " "), width=360)
    if "learning_curves" in pngs:
        report.heading("Learning curves")
        report.figure(pngs["learning_curves"], "train (solid) vs validation (dashed); dotted line: best epoch")

    usable = [p for p in projections if len(p.explained_variance_ratio)]
    if usable:
        report.heading("Latent space")
        report.figure(pngs["pca_variance"], "cumulative PCA explained variance per layer", width=420)
        report.raw('<div class="grid">')
        for p in usable:
            safe = p.layer.replace(".", "_")
            report.figure(pngs[f"pca2d_{safe}"], f"PCA {p.layer}", width=300)
            if f"tsne_{safe}" in pngs:
                report.figure(pngs[f"tsne_{safe}"], f"t-SNE {p.layer}", width=300)
        report.raw("</div>")
        last = usable[-1]
        report.paragraph(f"Interactive 3-D PCA of {last.layer} (drag to rotate):")
        report.plotly(
            figures.embedding_3d_html(last.pca, predictions.labels, predictions.classes, f"3-D PCA · {last.layer}")
        )

    report.heading("Galleries")
    if gallery_note:
        report.paragraph(gallery_note)
    for title, items in galleries.items():
        report.paragraph(title if items else f"{title}: none")
        if items:
            report.gallery(items, width=190)
    report.heading("Files")
    report.preformatted(json.dumps({"figures": sorted(f"figures/{n}.png" for n in pngs)}, indent=1))
    return report
