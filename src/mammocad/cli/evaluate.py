"""``mammocad evaluate`` and ``mammocad compare``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mammocad.cli.common import console, stepper, user_errors
from mammocad.errors import MammocadError


def evaluate(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train)."),
    data: Path | None = typer.Option(None, "--data", help="Dataset to evaluate on (default: the run's own)."),
    split: str = typer.Option("test", help="train, val, test, blind or all."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output directory (default: RUN/evaluation/<split>)."),
    layer: list[str] | None = typer.Option(None, help="Layer for the latent-space analysis (repeatable)."),
    resamples: int = typer.Option(1000, min=0, help="Bootstrap resamples for the 95% CIs (0: none)."),
    tsne: bool = typer.Option(True, help="Also compute t-SNE embeddings."),
    heatmaps: str | None = typer.Option(
        "gradcam",
        help="CAM method drawn over the gallery images and scored against lesion masks (pointing game, FROC): "
        "gradcam, gradcam++, ...; lesion-aware runs use their own lesion heatmap; 'none': plain images, no scoring.",
    ),
) -> None:
    """Metrics, CIs, calibration, figures, latent space and galleries (with heatmaps) of a run on one split."""
    from mammocad.evaluation.evaluate import evaluate_run
    from mammocad.explain import gallery_pictures_for, localization_maps_for

    with user_errors():
        start = time.perf_counter()
        with console.status("evaluate") as status:
            result = evaluate_run(
                run, data, split, out, layers=layer or None, n_resamples=resamples, tsne=tsne,
                progress=stepper(status, "evaluate"), gallery_pictures=gallery_pictures_for(heatmaps),
                localization_maps=localization_maps_for(heatmaps),
            )  # fmt: skip
        head = result.metrics["headline"]
        ci = result.metrics["confidence_intervals"].get("auc_macro", {})
        interval = f" (95% CI {ci['low']:.3f}–{ci['high']:.3f})" if ci.get("low") is not None else ""
        auc = head.get("auc_macro")
        console.print(
            f"{split}: {result.metrics['n_images']} images · accuracy {head['accuracy']:.3f} · "
            f"macro-F1 {head['f1_macro']:.3f} · macro-AUC {'undefined' if auc is None else f'{auc:.3f}'}{interval}"
        )
        located = result.metrics.get("localization")
        if located:
            pointing, froc = located["pointing_game"], located["froc"]
            rate = pointing["hit_rate"]
            sens = froc.get("sensitivity_at_1_fp")
            console.print(
                f"where it looks: pointing game {pointing['hits']}/{pointing['films']}"
                f"{'' if rate is None else f' ({rate:.0%})'} · lesion sensitivity at 1 FP/film "
                f"{'undefined' if sens is None else f'{sens:.2f}'} ({froc['lesions']} lesions)"
            )
        console.print(
            f"[green]done[/] in {time.perf_counter() - start:.1f} s · report: [bold]{result.report.resolve()}[/]"
        )


def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories, or two or more CV directories."),
    out: Path = typer.Option(Path("comparison"), "-o", "--out", help="Output directory (made unique if it exists)."),
    split: str = typer.Option("test", help="Split every run is scored on."),
    data: Path | None = typer.Option(None, "--data", help="Dataset to score on (default: each run's own)."),
    reuse: bool = typer.Option(True, help="Reuse each run's latest evaluation of the split."),
    resamples: int = typer.Option(1000, min=0, help="Bootstrap resamples when a run is evaluated now."),
) -> None:
    """Table 1 / Table 2, paired DeLong and McNemar tests, comparison figures and a report.

    Given cross-validation directories (from `mammocad cv`), compares them across folds instead:
    mean ± std, paired t-test and Wilcoxon per metric, DeLong and McNemar on the pooled OOF predictions.
    """
    from mammocad.evaluation.compare import compare_runs, markdown_table
    from mammocad.experiments.cv import is_cv_dir

    with user_errors():
        kinds = {is_cv_dir(r) for r in runs}
        if kinds == {True, False}:
            raise MammocadError("compare either run directories or cross-validation directories, not a mix")
        if kinds == {True}:
            from mammocad.experiments.compare_cv import TABLE_METRICS, compare_cvs, display_table

            with console.status("compare") as status:
                cv_result = compare_cvs(runs, out, progress=stepper(status, "compare"))
            console.print(
                markdown_table(display_table(cv_result.table, TABLE_METRICS[:5])), soft_wrap=True, markup=False
            )
            tests = cv_result.fold_tests[["run_a", "run_b", "metric", "test", "p_value"]]
            console.print(markdown_table(tests, "{:.4f}"), soft_wrap=True, markup=False)
            console.print(f"report: [bold]{cv_result.report.resolve()}[/]")
            return
        with console.status("compare") as status:
            result = compare_runs(runs, out, split, data, reuse, resamples, progress=stepper(status, "compare"))
        console.print(markdown_table(result.table1), soft_wrap=True, markup=False)
        console.print(f"report: [bold]{result.report.resolve()}[/]")
