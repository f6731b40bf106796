"""The ablation table: every variant's CV against the full model's, paired tests, figure and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.evaluation.compare import markdown_table
from mammocad.experiments import figures as study_figures
from mammocad.experiments.ablation_variants import REFERENCE
from mammocad.experiments.compare_cv import (
    CVComparisonResult,
    LoadedCV,
    add_tests,
    describe,
    display_table,
    fold_tests,
    mean_std_table,
    pooled_tests,
)
from mammocad.experiments.layout import AblationDir, CVDir
from mammocad.reporting.html import HtmlReport, figure_to_png

ABLATION_METRICS = ("auc_macro", "f1_macro", "accuracy", "recall_min", "loss")

# Same files as a CV comparison (table, fold tests, pooled tests, report), against the full model.
AblationResult = CVComparisonResult


def load_ablation_result(out_dir: str | Path) -> AblationResult:
    """The result of a finished ablation, read from its files."""
    out = AblationDir(out_dir)
    return AblationResult(
        out.path,
        out.read_table(out.TABLE, index_col=0),
        out.read_table(out.FOLD_TESTS),
        out.read_table(out.SIGNIFICANCE),
    )


def write_ablation(out_dir: str | Path, cvs: list[LoadedCV], state: dict[str, Any]) -> AblationResult:
    """Write the ablation table (.csv/.md), fold and pooled tests, figure and report of finished variant CVs."""
    out = AblationDir(out_dir)
    pairs = [(i, 0) for i in range(1, len(cvs))]
    tests = fold_tests(cvs, ABLATION_METRICS[:2], pairs)
    significance = pooled_tests(cvs, pairs) if pairs else pd.DataFrame()
    means = mean_std_table(cvs, ABLATION_METRICS)
    table = means.copy()
    changes = {v: ", ".join(f"{k}={val}" for k, val in e["overrides"].items()) for v, e in state["variants"].items()}
    table.insert(0, "change", [changes[cv.name] or "(full model)" for cv in cvs])
    for metric in ABLATION_METRICS[:2]:
        table[f"{metric}_difference"] = means[f"{metric}_mean"] - means.loc[REFERENCE, f"{metric}_mean"]
        for test, column in (("paired t-test", "p_t"), ("Wilcoxon signed-rank", "p_wilcoxon")):
            rows = tests[(tests["metric"] == metric) & (tests["test"] == test)].set_index("run_a")["p_value"]
            table[f"{metric}_{column}"] = [rows.get(cv.name) for cv in cvs]
    delong = significance[significance["test"] == "DeLong (AUC)"] if len(significance) else significance
    for name in cvs[0].classes:
        rows = delong[delong["class"] == name].set_index("run_a")["p_value"] if len(delong) else pd.Series(dtype=float)
        table[f"delong_p_{name}"] = [rows.get(cv.name) for cv in cvs]
    table = table.astype({c: float for c in table.columns if c != "change"})

    shown = display_table(means, ABLATION_METRICS)
    for metric in ABLATION_METRICS[:2]:
        shown[f"Δ {metric}"] = table[f"{metric}_difference"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}")
        shown[f"p {metric} (t / W)"] = [
            ""
            if cv.name == REFERENCE
            else f"{table.loc[cv.name, f'{metric}_p_t']:.3g} / {table.loc[cv.name, f'{metric}_p_wilcoxon']:.3g}"
            for cv in cvs
        ]
    shown.insert(0, "change", table["change"])
    out.write_table(out.TABLE, table.to_csv())
    out.write_table(out.TABLE, markdown_table(shown), ".md")
    out.write_table(out.FOLD_TESTS, tests.to_csv(index=False))
    out.write_table(out.SIGNIFICANCE, significance.to_csv(index=False))
    png = figure_to_png(study_figures.ablation_figure(means, ["auc_macro", "f1_macro"], REFERENCE))
    out.write_figure(out.FIGURE, png)

    report = HtmlReport(f"Ablation study · {out.name}")
    describe(report, cvs)
    report.paragraph(
        "Each variant removes one component from the full model and is cross-validated on the same folds; "
        "differences and p-values are against the full model (paired across folds)."
    )
    report.heading("Ablation table")
    report.table(shown)
    report.figure(png, "mean ± std across folds per variant (hatched: full model)")
    add_tests(report, tests, significance)
    report.heading("Cross-validation reports")
    links = "".join(f'<li><a href="{cv.cv_dir.name}/{CVDir.REPORT}">{cv.name}</a></li>' for cv in cvs)
    report.raw(f"<ul>{links}</ul>")
    report.write(out.report_path)
    return AblationResult(out.path, table, tests, significance)


__all__ = ["ABLATION_METRICS", "AblationResult", "load_ablation_result", "write_ablation"]
