"""The evaluation's figures, galleries and ``report.html`` (:func:`~mammocad.evaluation.evaluate.evaluate_run`
computes the numbers and writes the files; this module draws the figures and lays out the page)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.evaluation import figures
from mammocad.evaluation.calibration import reliability_table
from mammocad.evaluation.latent import LayerProjection
from mammocad.evaluation.localization import FP_RATES
from mammocad.evaluation.predictions import SplitPredictions
from mammocad.preprocess import read_sample
from mammocad.reporting.html import HtmlReport, array_to_png, figure_to_png
from mammocad.training.predict import LoadedRun
from mammocad.training.run_dir import RunDir

# Clinically worst mistakes: a cancer (or any abnormality) called normal or benign.
CRITICAL_TRUE = ("malignant", "abnormal")
CRITICAL_PREDICTED = ("normal", "benign")


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


def evaluation_figures(
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
    run = RunDir(run_dir)
    if run.has_history():
        pngs["learning_curves"] = figure_to_png(figures.learning_curves_figure(run.read_history()))
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


def evaluation_report(
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
