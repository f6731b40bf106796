"""``mammocad compare``: the papers' comparison tables, figures and paired significance tests.

Each run is scored on the same split (its latest ``evaluation/<split>`` is reused, or evaluated
now). Output directory (new, never overwritten)::

    table1.csv / .md      accuracy, loss, f1_macro, auc_macro, recall_min, recall_std, overfit_* per run (Dahes (2025), Table 1)
    table2.csv / .md      f1_mean, f1_std, rec_mean, rec_std per run (Dahes (2025), Table 2)
    significance.csv/.md  every pair of runs on the images they share: DeLong (AUC) and McNemar (accuracy)
    comparison.json       all of the above, machine-readable
    figures/*.png         scatter pairs, radar triplets, F1/recall bars with error bars, ROC overlays
    report.html           everything in one self-contained page

The file names are :class:`ComparisonDir`'s; a run's evaluation files are read through
:class:`~mammocad.training.run_dir.EvaluationDir`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.errors import MammocadError
from mammocad.evaluation import figures
from mammocad.evaluation.evaluate import evaluate_run
from mammocad.evaluation.significance import delong_test, mcnemar_test
from mammocad.folders import ReportFolder
from mammocad.io import atomic_write_json, atomic_write_text, unique_new_dir
from mammocad.progress import ProgressFn
from mammocad.reporting.html import HtmlReport, figure_to_png
from mammocad.training.run_dir import EvaluationDir, RunDir

TABLE1 = [
    "accuracy",
    "loss",
    "f1_macro",
    "auc_macro",
    "recall_min",
    "recall_std",
    "overfit_acc",
    "overfit_f1",
    "overfit_loss",
]
TABLE2 = ["f1_mean", "f1_std", "rec_mean", "rec_std"]
SCATTER_PAIRS = [("accuracy", "loss"), ("f1_macro", "recall_min"), ("recall_std", "overfit_loss")]
RADAR_GROUPS = {
    "global": ["accuracy", "loss", "f1_macro"],
    "coverage": ["recall_min", "recall_std", "f1_macro"],
    "overfitting": ["overfit_acc", "overfit_f1", "overfit_loss"],
}


class ComparisonDir(ReportFolder):
    """One ``mammocad compare`` output folder (see the module docstring)."""

    TABLE1 = "table1"
    TABLE2 = "table2"
    SIGNIFICANCE = "significance"
    DOCUMENT = "comparison.json"

    def table_path(self, table: str, suffix: str = ".csv") -> Path:
        """``<table>.csv`` or ``<table>.md`` (``suffix`` ".csv" or ".md") of TABLE1, TABLE2 or SIGNIFICANCE."""
        return self.path / f"{table}{suffix}"

    @property
    def document_path(self) -> Path:
        return self.path / self.DOCUMENT


@dataclass
class RunEvaluation:
    """One run's evaluation as the comparison reads it."""

    name: str
    run_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame


@dataclass
class ComparisonResult:
    """Where the comparison wrote its files, and its tables."""

    out_dir: Path
    table1: pd.DataFrame
    table2: pd.DataFrame
    significance: pd.DataFrame

    @property
    def report(self) -> Path:
        return ComparisonDir(self.out_dir).report_path


def latest_evaluation(run_dir: Path, split: str) -> Path | None:
    """The newest finished ``evaluation/<split>[-k]`` directory of a run (:meth:`RunDir.latest_evaluation`)."""
    found = RunDir(run_dir).latest_evaluation(split)
    return None if found is None else found.path


def load_evaluation(run_dir: Path, evaluation_dir: Path, name: str) -> RunEvaluation:
    """One finished evaluation's metrics and predictions, as the comparison reads them."""
    evaluation = EvaluationDir(evaluation_dir)
    return RunEvaluation(name, run_dir, evaluation.read_metrics(), evaluation.read_predictions())


def unique_names(run_dirs: list[Path]) -> list[str]:
    """Run directory names, made unique when two runs share one."""
    names: list[str] = []
    for run in run_dirs:
        name, n = run.name, 1
        while name in names:
            n += 1
            name = f"{run.name}#{n}"
        names.append(name)
    return names


def tables(evaluations: list[RunEvaluation]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 and Table 2 of Dahes (2025), one row per run."""
    rows1, rows2 = {}, {}
    for ev in evaluations:
        m, overfit = ev.metrics["metrics"], ev.metrics.get("overfit") or {}
        rows1[ev.name] = {
            **{k: m.get(k) for k in TABLE1 if not k.startswith("overfit")},
            **{k: overfit.get(k) for k in TABLE1 if k.startswith("overfit")},
        }
        rows2[ev.name] = {
            "f1_mean": m.get("f1_macro"),
            "f1_std": m.get("f1_std"),
            "rec_mean": m.get("recall_macro"),
            "rec_std": m.get("recall_std"),
        }
    table1 = pd.DataFrame.from_dict(rows1, orient="index", columns=TABLE1).astype(float)
    table2 = pd.DataFrame.from_dict(rows2, orient="index", columns=TABLE2).astype(float)
    table1.index.name = table2.index.name = "run"
    return table1, table2


def paired_tests(evaluations: list[RunEvaluation], classes: list[str]) -> pd.DataFrame:
    """DeLong and McNemar for every pair of runs, on the images both scored (joined by sample id).

    Binary tasks test the positive class's AUC; multi-class tasks test each class one-vs-rest.
    A test that cannot run (e.g. a class without positives) gets its reason in ``note``.
    """
    rows = []
    for a, b in itertools.combinations(evaluations, 2):
        joined = a.predictions.merge(b.predictions, on="sample_id", suffixes=("_a", "_b"))
        if joined.empty:
            rows.append({"run_a": a.name, "run_b": b.name, "test": "-", "note": "no images in common"})
            continue
        if not (joined["label_a"] == joined["label_b"]).all():
            raise MammocadError(f"{a.name} and {b.name} disagree on the labels of the same images")
        labels = joined["label_a"].to_numpy()
        mc = mcnemar_test(joined["correct_a"].to_numpy(), joined["correct_b"].to_numpy())
        rows.append(
            {
                "run_a": a.name,
                "run_b": b.name,
                "test": "McNemar (accuracy)",
                "class": "",
                "n": len(joined),
                "value_a": float(joined["correct_a"].mean()),
                "value_b": float(joined["correct_b"].mean()),
                "statistic": mc.statistic,
                "p_value": mc.p_value,
                "note": f"{mc.method}; b={mc.b}, c={mc.c}",
            }
        )
        tested = classes[1:] if len(classes) == 2 else classes
        for name in tested:
            k = classes.index(name)
            row = {"run_a": a.name, "run_b": b.name, "test": "DeLong (AUC)", "class": name, "n": len(joined)}
            try:
                result = delong_test((labels == k).astype(int), joined[f"p_{name}_a"], joined[f"p_{name}_b"])
            except ValueError as exc:
                row.update({"note": str(exc)})
            else:
                row.update(
                    {
                        "value_a": result.auc_a,
                        "value_b": result.auc_b,
                        "statistic": result.z,
                        "p_value": result.p_value,
                        "note": "",
                    }
                )
            rows.append(row)
    columns = ["run_a", "run_b", "test", "class", "n", "value_a", "value_b", "statistic", "p_value", "note"]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A GitHub-flavoured Markdown table (index included when it is named)."""
    table = frame.reset_index() if frame.index.name else frame

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if np.isnan(value) else float_format.format(value)
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def compare_runs(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    split: str = "test",
    dataset: str | Path | None = None,
    reuse: bool = True,
    n_resamples: int = 1000,
    progress: ProgressFn | None = None,
) -> ComparisonResult:
    """Compare runs on the same split: tables, paired tests, figures and a report in ``out_dir``.

    Args:
        run_dirs: two or more run directories trained for the same task.
        out_dir: a new directory (made unique with ``-2``... if it exists).
        split: the split every run is scored on.
        dataset: dataset to score on (default: each run's own; they must share the images for the tests).
        reuse: reuse each run's latest evaluation of ``split`` when it exists (only without ``dataset``).
        n_resamples: bootstrap resamples when a run has to be evaluated now.
        progress: called with a short message as each step starts.
    """
    step = progress or (lambda _message: None)
    paths = [Path(r) for r in run_dirs]
    if len(paths) < 2:
        raise MammocadError("compare needs at least two run directories")
    evaluations = []
    for path, name in zip(paths, unique_names(paths), strict=True):
        existing = latest_evaluation(path, split) if reuse and dataset is None else None
        if existing is None:
            step(f"evaluating {name} on {split}")
            existing = evaluate_run(path, dataset, split, n_resamples=n_resamples, progress=step).out_dir
        else:
            step(f"reusing {existing}")
        evaluations.append(load_evaluation(path, existing, name))
    classes = evaluations[0].metrics["classes"]
    for ev in evaluations[1:]:
        if ev.metrics["classes"] != classes:
            raise MammocadError(f"{ev.name} has classes {ev.metrics['classes']}, {evaluations[0].name} has {classes}")

    step("tables and paired tests")
    table1, table2 = tables(evaluations)
    significance = paired_tests(evaluations, classes)
    out = ComparisonDir(unique_new_dir(out_dir))
    written = {ComparisonDir.TABLE1: table1, ComparisonDir.TABLE2: table2, ComparisonDir.SIGNIFICANCE: significance}
    for name, frame in written.items():
        atomic_write_text(out.table_path(name, ".csv"), frame.to_csv(index=name != ComparisonDir.SIGNIFICANCE))
        atomic_write_text(out.table_path(name, ".md"), markdown_table(frame))
    atomic_write_json(
        out.document_path,
        {
            "split": split,
            "classes": classes,
            "runs": {ev.name: str(ev.run_dir) for ev in evaluations},
            "table1": json.loads(table1.to_json(orient="index")),
            "table2": json.loads(table2.to_json(orient="index")),
            "confidence_intervals": {ev.name: ev.metrics.get("confidence_intervals", {}) for ev in evaluations},
            "fitness": fitness_table(evaluations).to_dict("records"),
            "significance": json.loads(significance.to_json(orient="records")),
        },
    )
    step("figures and report")
    pngs = _figures(evaluations, table1, table2, classes)
    for name, png in pngs.items():
        out.write_figure(name, png)
    _report(evaluations, table1, table2, significance, pngs, split).write(out.report_path)
    return ComparisonResult(out.path, table1, table2, significance)


def _figures(
    evaluations: list[RunEvaluation], table1: pd.DataFrame, table2: pd.DataFrame, classes: list[str]
) -> dict[str, bytes]:
    pngs = {
        "scatter_pairs": figure_to_png(figures.scatter_pairs_figure(table1, SCATTER_PAIRS)),
        "radar_triplets": figure_to_png(figures.radar_figure(table1, RADAR_GROUPS)),
        "f1_recall_bars": figure_to_png(
            figures.mean_std_bars_figure(table2, [("F1", "f1_mean", "f1_std"), ("recall", "rec_mean", "rec_std")])
        ),
    }
    pngs.update(roc_overlays({ev.name: ev.predictions for ev in evaluations}, classes))
    return pngs


def roc_overlays(
    predictions: dict[str, pd.DataFrame], classes: list[str], prefix: str = "roc_overlay", title: str = "ROC"
) -> dict[str, bytes]:
    """``{<prefix>_<class>: PNG}``: every run's one-vs-rest ROC per class (binary: the positive class).

    ``predictions`` maps a run name to its predictions table (``label_name``, ``p_<class>``).
    """
    pngs = {}
    for name in classes[1:] if len(classes) == 2 else classes:
        curves = {}
        for run, frame in predictions.items():
            truth = (frame["label_name"] == name).to_numpy()
            if truth.any() and not truth.all():
                curves[run] = (truth, frame[f"p_{name}"].to_numpy())
        if curves:
            pngs[f"{prefix}_{name}"] = figure_to_png(figures.roc_overlay_figure(curves, f"{title} · {name} vs rest"))
    return pngs


def _with_ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    if not entry.get("ci"):
        return f"{entry['value']:.3f} (no CI)"
    low, high = entry["ci"]
    return f"{entry['value']:.3f} [{low:.3f}, {high:.3f}]"


def fitness_table(evaluations: list[RunEvaluation]) -> pd.DataFrame:
    """One row per run: AUC and balanced accuracy with their CIs, chance level, training data, and a flag
    (:func:`~mammocad.training.model_card.chance_flag`) where the CI reaches chance."""
    from mammocad.training.model_card import chance_flag, model_card, summarise_evaluation

    rows = []
    for ev in evaluations:
        summary = summarise_evaluation(ev.metrics)
        card = model_card(ev.run_dir, evaluation=ev.metrics)
        flag = chance_flag(summary)
        rows.append(
            {
                "run": ev.name,
                "AUC [95% CI]": _with_ci(summary["metrics"].get("auc")),
                "balanced accuracy [95% CI]": _with_ci(summary["metrics"].get("balanced_accuracy")),
                "accuracy [95% CI]": _with_ci(summary["metrics"].get("accuracy")),
                "chance (AUC / bal. acc.)": f"0.50 / {summary['chance']['balanced_accuracy']:.2f}",
                "trained on": ("SYNTHETIC " if card["trained_on"].get("synthetic") else "")
                + str(card["trained_on"].get("dataset") or "?"),
                "flag": ("AT CHANCE: " + flag) if flag else "",
            }
        )
    return pd.DataFrame(rows)


def comparison_card(evaluations: list[RunEvaluation], fitness: pd.DataFrame) -> dict[str, Any]:
    """A fitness box for a comparison: how many runs are at chance, how many were trained on synthetic data."""
    chance = [row["run"] for row in fitness.to_dict("records") if row["flag"]]
    synthetic = [row["run"] for row in fitness.to_dict("records") if row["trained on"].startswith("SYNTHETIC")]
    warnings = []
    if synthetic:
        warnings.append(
            f"{len(synthetic)} of {len(evaluations)} runs were trained on synthetic phantoms only ({', '.join(synthetic)}): "
            "not validated on real mammograms; do not use for patients."
        )
    if chance:
        warnings.append(
            f"{len(chance)} of {len(evaluations)} runs cannot be told from chance on this split ({', '.join(chance)}): "
            "their ranking below says nothing."
        )
    warnings.append("Research software: not a medical device; no prediction is a diagnosis.")
    headline = (
        "NOT FOR CLINICAL USE: " + ("models trained on synthetic data" if synthetic else "models at chance level")
        if synthetic or chance
        else "Research comparison: not for clinical use."
    )
    return {"headline": headline, "warnings": warnings}


def _report(
    evaluations: list[RunEvaluation],
    table1: pd.DataFrame,
    table2: pd.DataFrame,
    significance: pd.DataFrame,
    pngs: dict[str, bytes],
    split: str,
) -> HtmlReport:
    report = HtmlReport(f"Comparison of {len(evaluations)} runs · {split}")
    fitness = fitness_table(evaluations)
    report.fitness(comparison_card(evaluations, fitness))
    sizes = ", ".join(f"{ev.name}: {ev.metrics['n_images']} images" for ev in evaluations)
    report.paragraph(f"Every run scored on the {split} split ({sizes}).")
    report.heading("Fitness: is each model better than chance? (95% patient-bootstrap CIs)")
    report.table(fitness, index=False)
    report.heading("Table 1 — global metrics and overfitting")
    report.table(table1)
    report.heading("Table 2 — per-class F1 and recall, mean ± std")
    report.table(table2)
    cis = []
    for ev in evaluations:
        for metric, ci in (ev.metrics.get("confidence_intervals") or {}).items():
            if ci.get("low") is not None:
                cis.append(
                    {"run": ev.name, "metric": metric, "estimate": ci["estimate"], "low": ci["low"], "high": ci["high"]}
                )
    if cis:
        report.heading("95% confidence intervals (patient-level bootstrap)")
        report.table(pd.DataFrame(cis), index=False)
    report.heading("Paired significance tests (same images)")
    report.paragraph(
        "DeLong's test compares ROC AUCs, McNemar's test compares accuracies, each on the images both runs "
        "scored. p-values are not corrected for multiple comparisons."
    )
    report.table(significance, index=False)
    report.heading("Figures")
    report.figure(
        pngs["scatter_pairs"], "scatter pairs: accuracy vs loss, macro-F1 vs recall_min, recall_std vs overfit_loss"
    )
    report.figure(pngs["radar_triplets"], "radar triplets: global, coverage, overfitting")
    report.figure(pngs["f1_recall_bars"], "F1 and recall across classes: mean ± std")
    for name, png in pngs.items():
        if name.startswith("roc_overlay_"):
            report.figure(png, name.replace("roc_overlay_", "ROC overlay: "), width=360)
    return report
