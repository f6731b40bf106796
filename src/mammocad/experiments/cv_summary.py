"""Summarising a cross-validation: per-fold metrics, mean ± std, pooled out-of-fold predictions, report.

Reads every fold run's validation evaluation (through :class:`~mammocad.experiments.layout.CVDir`)
and writes ``folds.csv``, ``summary.json``/``summary.md``, ``oof_predictions.parquet``, the figures
and ``report.html`` of the CV directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.errors import MammocadError
from mammocad.evaluation import figures
from mammocad.evaluation.compare import markdown_table
from mammocad.evaluation.evaluate import bootstrap_intervals, subtask_aucs, subtask_text
from mammocad.evaluation.metrics import classification_metrics
from mammocad.evaluation.predictions import SplitPredictions
from mammocad.experiments import figures as study_figures
from mammocad.experiments.layout import CVDir
from mammocad.reporting.html import HtmlReport, figure_to_png
from mammocad.training.run_dir import RunDir

# Scalar metrics of classification_metrics / overfit_metrics summarised across folds (when present).
FOLD_METRICS = (
    "accuracy",
    "loss",
    "f1_macro",
    "auc_macro",
    "precision_macro",
    "recall_macro",
    "recall_min",
    "recall_std",
    "f1_std",
    "sensitivity",
    "specificity",
    "overfit_acc",
    "overfit_f1",
    "overfit_loss",
)
PER_CLASS_METRICS = ("f1", "recall", "auc")
HEADLINE_METRICS = ("auc_macro", "f1_macro", "accuracy", "recall_min", "loss")


@dataclass
class CVResult:
    """A finished cross-validation: per-fold metrics, the summary and the pooled OOF predictions."""

    cv_dir: Path
    folds: pd.DataFrame
    summary: dict[str, Any]
    oof: pd.DataFrame

    @property
    def report(self) -> Path:
        return CVDir(self.cv_dir).report_path


def load_cv_result(cv_dir: str | Path) -> CVResult:
    """The result of a summarised CV, read from its files (``folds.csv``, ``summary.json``, OOF predictions)."""
    cv = CVDir(cv_dir)
    return CVResult(cv.path, cv.read_folds(), cv.read_summary(), cv.read_oof())


def fold_row(fold: int, run_dir: str | Path | RunDir, document: dict[str, Any]) -> dict[str, Any]:
    """One fold's metrics as a flat row (``f1_<class>``, ``recall_<class>``, ``auc_<class>`` per class)."""
    metrics, overfit = document["metrics"], document.get("overfit") or {}
    fold_run = RunDir(run_dir)
    run = fold_run.read_state()
    row: dict[str, Any] = {
        "fold": fold,
        "run": fold_run.name,
        "n_images": document["n_images"],
        "n_patients": document["n_patients"],
        "best_epoch": run.get("best_epoch"),
        "epochs": run.get("epochs_done"),
    }
    for name in FOLD_METRICS:
        if name in metrics:
            row[name] = metrics[name]
        elif name in overfit:
            row[name] = overfit[name]
    for name, per_class in metrics["per_class"].items():
        for metric in PER_CLASS_METRICS:
            row[f"{metric}_{name}"] = per_class[metric]
    located = document.get("localization")
    if located:
        row["pointing_hit_rate"] = located["pointing_game"]["hit_rate"]
        row["lesion_sensitivity_at_1_fp"] = located["froc"].get("sensitivity_at_1_fp")
    return row


def _summary_table(folds: pd.DataFrame) -> pd.DataFrame:
    """mean, std (n - 1), min, max and n of every metric column across folds."""
    numeric = folds.drop(columns=["fold", "run", "n_images", "n_patients", "best_epoch", "epochs"])
    numeric = numeric.apply(pd.to_numeric, errors="coerce").astype(float)
    table = pd.DataFrame(
        {
            "mean": numeric.mean(),
            "std": numeric.std(ddof=1),
            "min": numeric.min(),
            "max": numeric.max(),
            "n": numeric.notna().sum(),
        }
    )
    table.index.name = "metric"
    return table


def summarise(cv_dir: str | Path, n_resamples: int = 1000) -> CVResult:
    """Read every fold's validation evaluation and write folds.csv, summary, OOF predictions, report."""
    cv = CVDir(cv_dir)
    cv_dir = cv.path
    state = cv.read_state()
    classes = state["classes"]
    rows, parts, histories, matrices, pointing = [], [], {}, [], [0, 0]
    for fold in range(state["folds"]):
        run_dir = cv.recorded_run(state, fold)
        evaluation = cv.fold_evaluation(run_dir)
        if evaluation is None:
            raise MammocadError(f"{run_dir.path}: fold {fold} has no validation evaluation; resume the CV first")
        document = evaluation.read_metrics()
        rows.append(fold_row(fold, run_dir, document))
        if document.get("localization"):
            pointing[0] += document["localization"]["pointing_game"]["hits"]
            pointing[1] += document["localization"]["pointing_game"]["films"]
        matrices.append(np.asarray(document["metrics"]["confusion_matrix"]))
        parts.append(evaluation.read_predictions().assign(fold=fold))
        histories[f"fold {fold}"] = run_dir.read_history()
    folds = pd.DataFrame(rows)
    oof = pd.concat(parts, ignore_index=True)
    if oof["sample_id"].duplicated().any():
        raise MammocadError(f"{cv_dir}: an image was predicted in two folds; the folds overlap")
    pooled = SplitPredictions(classes, "oof", oof)
    pooled_metrics = classification_metrics(pooled.labels, pooled.probs, classes)
    intervals = bootstrap_intervals(pooled, n_resamples) if n_resamples else {}
    table = _summary_table(folds)
    summed = np.sum(matrices, axis=0)
    summary = {
        "cv_dir": str(cv_dir),
        "folds": state["folds"],
        "split": state["split"],
        "task": state["task"],
        "classes": classes,
        "n_images": len(oof),
        "n_patients": int(oof["patient_id"].nunique()),
        "metrics": json.loads(table.to_json(orient="index")),
        "confusion_matrix_summed": summed.tolist(),
        "pooled_oof": {
            "metrics": pooled_metrics,
            "confidence_intervals": intervals,
            "subtasks": subtask_aucs(pooled, n_resamples),
            "pointing_game": {
                "hits": pointing[0],
                "films": pointing[1],
                "hit_rate": pointing[0] / pointing[1] if pointing[1] else None,
            },
        },
    }
    cv.write_summary(folds, oof, summary, markdown_table(table))
    pngs = {
        "fold_scores": figure_to_png(study_figures.fold_scores_figure(folds, list(HEADLINE_METRICS[:4]))),
        "confusion_summed": figure_to_png(figures.confusion_matrix_figure(summed, classes)),
        "confusion_summed_normalised": figure_to_png(figures.confusion_matrix_figure(summed, classes, normalise=True)),
        "roc_pooled": figure_to_png(figures.roc_figure(pooled.labels, pooled.probs, classes, "ROC · pooled OOF")),
        "learning_curves": figure_to_png(study_figures.fold_curves_figure(histories)),
    }
    for name, png in pngs.items():
        cv.write_figure(name, png)
    _report(cv, summary, folds, table, pngs).write(cv.report_path)
    return CVResult(cv_dir, folds, summary, oof)


def mean_std(table: pd.DataFrame, metric: str) -> str:
    """``0.612 ± 0.034`` from a :func:`_summary_table`-shaped table (– when undefined)."""
    if metric not in table.index or pd.isna(table.loc[metric, "mean"]):
        return "–"
    std = table.loc[metric, "std"]
    return f"{table.loc[metric, 'mean']:.3f} ± {std:.3f}" if pd.notna(std) else f"{table.loc[metric, 'mean']:.3f}"


def cv_card(cv_dir: Path, summary: dict[str, Any], folds: pd.DataFrame) -> dict[str, Any]:
    """The model card of the first fold's run, judged on the pooled out-of-fold predictions."""
    from mammocad.training.model_card import model_card

    pooled = summary["pooled_oof"]
    evaluation = {
        "metrics": pooled["metrics"],
        "confidence_intervals": pooled["confidence_intervals"],
        "classes": summary["classes"],
        "split": "pooled out-of-fold",
        "n_images": summary["n_images"],
        "n_patients": summary["n_patients"],
    }
    first = cv_dir / str(folds["run"].iloc[0]) if len(folds) and "run" in folds else cv_dir
    return model_card(first, evaluation=evaluation)


def _report(
    cv: CVDir, summary: dict[str, Any], folds: pd.DataFrame, table: pd.DataFrame, pngs: dict[str, bytes]
) -> HtmlReport:
    config = cv.read_config()
    report = HtmlReport(f"Cross-validation · {cv.name}")
    report.fitness(cv_card(cv.path, summary, folds))
    report.paragraph(
        f"{config.model.name} (head {config.model.head or 'default'}), task {summary['task']}, "
        f"{summary['folds']} patient-grouped stratified folds of split {summary['split']!r} of "
        f"{config.data.dataset}: {summary['n_images']} images from {summary['n_patients']} patients, "
        "each predicted once by the fold model that never saw its patient."
    )
    report.heading("Mean ± std across folds")
    report.paragraph("std is the sample standard deviation across folds (n − 1).", note=True)
    headline = pd.DataFrame(
        {"mean ± std": [mean_std(table, m) for m in HEADLINE_METRICS]}, index=pd.Index(HEADLINE_METRICS, name="metric")
    )
    report.table(headline)
    report.heading("Per fold")
    report.table(folds, index=False)
    report.figure(pngs["fold_scores"], "per-fold scores (dots) with mean ± std")
    report.heading("Pooled out-of-fold predictions")
    pooled = summary["pooled_oof"]
    rows = []
    for metric in HEADLINE_METRICS:
        ci = pooled["confidence_intervals"].get(metric, {})
        value = pooled["metrics"].get(metric)
        rows.append(
            {
                "metric": metric,
                "pooled OOF": "–" if value is None else f"{value:.3f}",
                "95% CI (patient bootstrap)": f"{ci['low']:.3f} – {ci['high']:.3f}"
                if ci.get("low") is not None
                else "",
            }
        )
    report.table(pd.DataFrame(rows), index=False)
    if pooled.get("subtasks"):
        report.paragraph("Inside the 3-class task (pooled OOF): " + subtask_text(pooled["subtasks"]) + ".")
    pointing = pooled.get("pointing_game") or {}
    if pointing.get("films"):
        report.paragraph(
            f"Where the models look: the heatmap's peak fell inside the lesion on {pointing['hits']} of "
            f"{pointing['films']} validation films with a located lesion ({pointing['hit_rate']:.0%}, pointing game)."
        )
    report.figure(pngs["confusion_summed"], "confusion matrix summed over folds", width=360)
    report.figure(pngs["confusion_summed_normalised"], "summed, row-normalised", width=360)
    report.figure(pngs["roc_pooled"], "one-vs-rest ROC of the pooled OOF predictions", width=360)
    report.figure(pngs["learning_curves"], "validation loss per epoch, one line per fold")
    report.heading("All metrics")
    report.table(table)
    report.heading("Fold runs")
    links = "".join(
        f'<li><a href="{CVDir.fold_report_link(run)}">{run}</a> (fold {fold})</li>'
        for fold, run in zip(folds["fold"], folds["run"], strict=True)
    )
    report.raw(f"<ul>{links}</ul>")
    return report
