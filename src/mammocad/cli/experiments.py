"""``mammocad cv`` and ``mammocad ablate``: repeated, controlled experiments."""

from __future__ import annotations

from pathlib import Path

import typer

from mammocad.cli.common import console, quiet_training_logs, run_config_from_options, stepper, user_errors


def cv(
    config: Path | None = typer.Option(None, "--config", help="Run config (YAML) of every fold."),
    folds: int = typer.Option(5, min=2, help="Number of patient-grouped, stratified folds."),
    option: list[str] | None = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    dataset: Path | None = typer.Option(None, help="Shortcut for --set data.dataset=..."),
    seed: int = typer.Option(0, help="Seed of the fold assignment when the split has no such folds."),
    out: Path | None = typer.Option(None, "-o", "--out", help="CV directory (default: runs_dir/<name>-cv<k>-<time>)."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted CV directory."),
    resamples: int = typer.Option(1000, min=0, help="Patient-bootstrap resamples for the pooled OOF CIs."),
) -> None:
    """k-fold cross-validation: one run per fold, mean ± std of every metric, pooled OOF predictions."""
    from mammocad.evaluation.compare import markdown_table
    from mammocad.experiments.cv import HEADLINE_METRICS, cross_validate, resume_cv

    quiet_training_logs()
    with user_errors():
        with console.status("cv") as status:
            if resume is not None:
                result = resume_cv(resume, progress=stepper(status, "cv"))
            else:
                run_config = run_config_from_options(config, option, dataset)
                result = cross_validate(
                    run_config, folds, out, seed=seed, n_resamples=resamples, progress=stepper(status, "cv")
                )
        table = result.folds.set_index("fold")[[m for m in HEADLINE_METRICS if m in result.folds]]
        console.print(markdown_table(table), soft_wrap=True, markup=False)
        for metric in HEADLINE_METRICS:
            values = result.summary["metrics"].get(metric)
            if values and values["mean"] is not None:
                console.print(f"{metric}: {values['mean']:.3f} ± {values['std'] or 0:.3f}")
        console.print(f"report: [bold]{result.report.resolve()}[/]")


def ablate(
    config: Path | None = typer.Option(None, "--config", help="Run config (YAML) of the full model."),
    ablations: str | None = typer.Option(
        None, "--ablations", help="Ablations file (YAML), or toggles separated by commas: gagm,sevector,fsl."
    ),
    folds: int | None = typer.Option(None, min=2, help="Folds (default: the file's, else 5)."),
    option: list[str] | None = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    dataset: Path | None = typer.Option(None, help="Shortcut for --set data.dataset=..."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Ablation directory (default under runs_dir)."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted ablation directory."),
    resamples: int = typer.Option(1000, min=0, help="Patient-bootstrap resamples for each CV's pooled OOF CIs."),
) -> None:
    """Ablation study: the full model and one variant per removed component, each cross-validated."""
    from mammocad.experiments.ablate import ablate as run_ablation
    from mammocad.experiments.ablate import load_ablations, resume_ablation

    quiet_training_logs()
    with user_errors():
        with console.status("ablate") as status:
            if resume is not None:
                result = resume_ablation(resume, progress=stepper(status, "ablate"))
            else:
                if ablations is None:
                    raise typer.BadParameter("give --ablations FILE (or toggles: gagm,sevector,fsl) or --resume DIR")
                spec = load_ablations(ablations)
                run_config = run_config_from_options(config, option, dataset)
                result = run_ablation(run_config, spec, folds, out, resamples, progress=stepper(status, "ablate"))
        console.print((result.out_dir / "ablation.md").read_text(), soft_wrap=True, markup=False)
        console.print(f"report: [bold]{result.report.resolve()}[/]")
