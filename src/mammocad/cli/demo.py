"""``mammocad demo``: the main job, end to end on synthetic data, ending in an HTML report."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mammocad.cli.common import console, quiet_training_logs, user_errors
from mammocad.defaults import SYNTH_FORMATS as FORMATS


def demo(
    out: Path | None = typer.Option(None, "-o", "--out", help="Run directory (default: demo-output/demo-<time>)."),
    n_per_class: int = typer.Option(40, min=10, help="Synthetic images per class (two per patient; 5 folds need 10)."),
    seed: int = typer.Option(0, help="Seed of the synthetic data and the splits."),
    source_format: str = typer.Option("csv", "--format", help="Format the synthetic source is written in."),
    workers: int = typer.Option(2, min=1, help="Worker processes for preprocessing."),
    quick: bool = typer.Option(
        False, help="Toy sizes (96 px, 1 epoch per model): the whole pipeline in about a minute."
    ),
) -> None:
    """Synthesise, import, split, preprocess, train, evaluate, compare and report — on SYNTHETIC data."""
    from mammocad.demo import default_run_dir, run_demo

    quiet_training_logs()

    with user_errors():
        if source_format not in FORMATS:
            raise typer.BadParameter(
                f"unknown format {source_format!r}; valid formats: {', '.join(FORMATS)}", param_hint="--format"
            )
        run_dir = out or default_run_dir()
        start = time.perf_counter()
        with console.status("demo") as status:

            def step(message: str) -> None:
                status.update(f"[bold]demo[/]: {message}")
                console.log(message)

            result = run_demo(
                run_dir,
                n_per_class=n_per_class,
                seed=seed,
                source_format=source_format,
                workers=workers,
                on_step=step,
                quick=quick,
            )
        console.print(f"[green]done[/] in {time.perf_counter() - start:.1f} s")
        console.print(f"report: [bold]{result.report.resolve()}[/]")
