"""Comparing cross-validation results: paired tests across folds and DeLong on pooled OOF predictions.

Two CVs on the same folds give, per metric, one score per fold for each model; the fold is the
pairing unit (same training and validation patients), so the tests are the paired t-test and the
Wilcoxon signed-rank test on those per-fold scores. The pooled out-of-fold predictions (every image
scored once by a model that never saw its patient) are compared image by image with DeLong's test
(AUC, one-vs-rest per class) and McNemar's test (accuracy).

Output directory (new, never overwritten; :class:`~mammocad.experiments.layout.CVComparisonDir`)::

    table.csv / .md           mean and std (n - 1) across folds of every headline metric, per CV
    fold_tests.csv / .md      paired t-test and Wilcoxon per metric, for every pair of CVs
    significance.csv / .md    DeLong and McNemar on the pooled OOF predictions
    comparison.json           all of the above
    figures/*.png             per-fold scores paired across CVs, mean ± std bars, pooled ROC overlays
    report.html
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.errors import MammocadError
from mammocad.evaluation import figures
from mammocad.evaluation.compare import RunEvaluation, markdown_table, paired_tests, roc_overlays, unique_names
from mammocad.evaluation.significance import paired_t_test, wilcoxon_test
from mammocad.experiments import figures as study_figures
from mammocad.experiments.layout import CVComparisonDir, CVDir
from mammocad.io import unique_new_dir
from mammocad.progress import ProgressFn
from mammocad.reporting.html import HtmlReport, figure_to_png

TABLE_METRICS = (
    "auc_macro",
    "f1_macro",
    "accuracy",
    "loss",
    "recall_min",
    "recall_std",
    "overfit_acc",
    "overfit_f1",
    "overfit_loss",
)
PAIRED_METRICS = ("auc_macro", "f1_macro", "accuracy", "recall_min")
TEST_COLUMNS = [
    "run_a",
    "run_b",
    "metric",
    "test",
    "n",
    "mean_a",
    "mean_b",
    "mean_difference",
    "statistic",
    "p_value",
    "note",
]


@dataclass
class LoadedCV:
    """A finished cross-validation as the comparison reads it."""

    name: str
    cv_dir: Path
    folds: pd.DataFrame
    oof: pd.DataFrame
    summary: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.summary["classes"])

    def as_evaluation(self) -> RunEvaluation:
        """The pooled OOF predictions in the shape :func:`paired_tests` takes."""
        return RunEvaluation(self.name, self.cv_dir, {"classes": self.classes}, self.oof)


@dataclass
class CVComparisonResult:
    """Where a CV comparison (or an ablation) wrote its files, and its tables."""

    out_dir: Path
    table: pd.DataFrame
    fold_tests: pd.DataFrame
    significance: pd.DataFrame

    @property
    def report(self) -> Path:
        return CVComparisonDir(self.out_dir).report_path


def load_cv(cv_dir: str | Path, name: str | None = None) -> LoadedCV:
    """Read a finished CV directory (its folds.csv, OOF predictions and summary)."""
    cv = CVDir(cv_dir)
    cv.require()
    if not cv.is_summarised():
        raise MammocadError(f"{cv.path}: the cross-validation has not finished; resume it with `mammocad cv --resume`")
    return LoadedCV(name or cv.name, cv.path, cv.read_folds(), cv.read_oof(), cv.read_summary())


def check_same_folds(a: LoadedCV, b: LoadedCV) -> None:
    """Refuse to pair CVs that differ in classes, images or fold assignment."""
    if a.classes != b.classes:
        raise MammocadError(f"{a.name} has classes {a.classes}, {b.name} has {b.classes}")
    folds_a = a.oof.set_index("sample_id")["fold"].sort_index()
    folds_b = b.oof.set_index("sample_id")["fold"].sort_index()
    if not folds_a.index.equals(folds_b.index):
        raise MammocadError(
            f"{a.name} and {b.name} were cross-validated on different images; paired tests need the same"
        )
    if not (folds_a == folds_b).all():
        moved = int((folds_a != folds_b).sum())
        raise MammocadError(
            f"{a.name} and {b.name} use different folds ({moved} images in another fold); "
            "paired tests need the same folds: use the same split and --seed"
        )


def mean_std_table(cvs: Sequence[LoadedCV], metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """``<metric>_mean`` and ``<metric>_std`` columns (fold std, n - 1), one row per CV."""
    rows = {}
    for cv in cvs:
        row: dict[str, float] = {}
        for metric in metrics:
            values = cv.folds[metric].astype(float) if metric in cv.folds else pd.Series(dtype=float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1)
        rows[cv.name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    return table


def display_table(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``mean ± std`` strings per metric, for Markdown and the report."""

    def cell(mean: float, std: float) -> str:
        if pd.isna(mean):
            return "–"
        return f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}"

    shown = pd.DataFrame(
        {
            m: [cell(r[f"{m}_mean"], r[f"{m}_std"]) for _, r in table.iterrows()]
            for m in metrics
            if f"{m}_mean" in table
        },
        index=table.index,
    )
    return shown


def fold_tests(
    cvs: Sequence[LoadedCV], metrics: Sequence[str] = PAIRED_METRICS, pairs: Sequence[tuple[int, int]] | None = None
) -> pd.DataFrame:
    """Paired t-test and Wilcoxon on per-fold scores for each pair (default: every pair) and metric."""
    rows = []
    for i, j in pairs if pairs is not None else itertools.combinations(range(len(cvs)), 2):
        a, b = cvs[i], cvs[j]
        check_same_folds(a, b)
        joined = a.folds.merge(b.folds, on="fold", suffixes=("_a", "_b"))
        for metric in metrics:
            if f"{metric}_a" not in joined or f"{metric}_b" not in joined:
                continue
            for test in (paired_t_test, wilcoxon_test):
                result = test(joined[f"{metric}_a"], joined[f"{metric}_b"])
                rows.append({"run_a": a.name, "run_b": b.name, "metric": metric, **result.to_dict()})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def pooled_tests(cvs: Sequence[LoadedCV], pairs: Sequence[tuple[int, int]] | None = None) -> pd.DataFrame:
    """DeLong (per class) and McNemar on the pooled OOF predictions of each pair."""
    frames = []
    for i, j in pairs if pairs is not None else itertools.combinations(range(len(cvs)), 2):
        frames.append(paired_tests([cvs[i].as_evaluation(), cvs[j].as_evaluation()], cvs[i].classes))
    return pd.concat(frames, ignore_index=True)


def compare_cvs(
    cv_dirs: Sequence[str | Path], out_dir: str | Path, progress: ProgressFn | None = None
) -> CVComparisonResult:
    """Compare two or more finished CVs on the same folds; files as in the module docstring."""
    step = progress or (lambda _message: None)
    paths = [Path(p) for p in cv_dirs]
    if len(paths) < 2:
        raise MammocadError("compare needs at least two cross-validation directories")
    cvs = [load_cv(path, name) for path, name in zip(paths, unique_names(paths), strict=True)]
    for other in cvs[1:]:
        check_same_folds(cvs[0], other)
    step("paired tests across folds and on the pooled OOF predictions")
    table = mean_std_table(cvs)
    tests = fold_tests(cvs)
    significance = pooled_tests(cvs)
    out = CVComparisonDir(unique_new_dir(out_dir))
    shown = display_table(table, TABLE_METRICS)
    out.write_table(out.TABLE, table.to_csv())
    out.write_table(out.TABLE, markdown_table(shown), ".md")
    for name, frame in ((out.FOLD_TESTS, tests), (out.SIGNIFICANCE, significance)):
        out.write_table(name, frame.to_csv(index=False))
        out.write_table(name, markdown_table(frame), ".md")
    out.write_comparison(
        {
            "runs": {cv.name: str(cv.cv_dir) for cv in cvs},
            "classes": cvs[0].classes,
            "folds": int(cvs[0].folds["fold"].nunique()),
            "table": json.loads(table.to_json(orient="index")),
            "fold_tests": json.loads(tests.to_json(orient="records")),
            "significance": json.loads(significance.to_json(orient="records")),
        },
    )
    step("figures and report")
    pngs = comparison_figures(cvs, table)
    for name, png in pngs.items():
        out.write_figure(name, png)
    report = HtmlReport(f"Comparison of {len(cvs)} cross-validations")
    describe(report, cvs)
    report.heading("Mean ± std across folds")
    report.table(shown)
    add_tests(report, tests, significance)
    report.heading("Figures")
    for name, png in pngs.items():
        report.figure(png, name.replace("_", " "), width=420 if name.startswith("roc") else None)
    report.write(out.report_path)
    return CVComparisonResult(out.path, table, tests, significance)


def describe(report: HtmlReport, cvs: Sequence[LoadedCV]) -> None:
    """The opening paragraph: what was cross-validated on which folds."""
    first = cvs[0]
    report.paragraph(
        f"{len(cvs)} cross-validations of task {first.summary['task']} on the same {first.summary['folds']} "
        f"patient-grouped folds of split {first.summary['split']!r} ({first.summary['n_images']} images, "
        f"{first.summary['n_patients']} patients): " + ", ".join(f"{cv.name} ({cv.cv_dir})" for cv in cvs) + "."
    )


def add_tests(report: HtmlReport, tests: pd.DataFrame, significance: pd.DataFrame) -> None:
    """The paired-test sections of a CV comparison or ablation report."""
    report.heading("Paired tests across folds")
    report.paragraph(
        "Each fold is one pair (same training and validation patients). Paired t-test and Wilcoxon "
        "signed-rank test, two-sided; with 5 folds the exact Wilcoxon p cannot fall below 0.0625. "
        "p-values are not corrected for multiple comparisons."
    )
    report.table(tests, index=False)
    report.heading("Pooled out-of-fold predictions: DeLong and McNemar")
    report.paragraph("DeLong's test per class (one-vs-rest AUC) and McNemar's test (accuracy), image by image.")
    report.table(significance, index=False)


def comparison_figures(cvs: Sequence[LoadedCV], table: pd.DataFrame) -> dict[str, bytes]:
    """Per-fold scores paired across CVs, mean ± std bars and pooled ROC overlays."""
    pngs = {}
    for metric in ("auc_macro", "f1_macro"):
        scores = pd.DataFrame({cv.name: cv.folds.set_index("fold")[metric] for cv in cvs})
        pngs[f"folds_{metric}"] = figure_to_png(study_figures.paired_folds_figure(scores, metric))
    pngs["mean_std_bars"] = figure_to_png(
        figures.mean_std_bars_figure(table, [(m, f"{m}_mean", f"{m}_std") for m in PAIRED_METRICS], across="folds")
    )
    pngs.update(roc_overlays({cv.name: cv.oof for cv in cvs}, cvs[0].classes, "roc_pooled", "pooled OOF ROC"))
    return pngs
