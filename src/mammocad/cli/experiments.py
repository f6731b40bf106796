"""``mammocad cv`` and ``mammocad ablate``: repeated, controlled experiments."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from mammocad.cli.common import (
    console,
    error_console,
    quiet_training_logs,
    run_config_from_options,
    stepper,
    user_errors,
)
from mammocad.progress import ProgressFn

# Shared by cv and ablate. The storage's environment variable is spelled out (not imported from the
# work-queue module) so that `--help` imports nothing beyond typer.
STORAGE_ENV = "MAMMOCAD_CV_STORAGE"
WORKERS_HELP = (
    "Spread the units over N worker processes on this machine through a work queue other machines can "
    "join (1: this process is the worker)."
)
STORAGE_HELP = (
    "Work-queue database URL (SQLAlchemy: sqlite:///..., postgresql://...); default sqlite:///<dir>/queue.db. "
    "Giving it turns the work queue on."
)
GPUS_HELP = "GPU numbers shared out among the workers, e.g. 0,1,2,3 (each worker sees its own share)."
GRACE_HELP = "Seconds without a heartbeat before another worker takes a unit over (recorded when the queue is made)."

Result = TypeVar("Result")


def _queued(workers: int | None, storage: str | None, gpus: str | None, resume: Path | None, state_file: str) -> bool:
    """Whether the command works through a work queue: asked for, or the resumed directory has one."""
    if workers is not None or storage is not None or gpus is not None:
        return True
    if resume is None:
        return False
    from mammocad.io import read_json_object

    return "queue" in read_json_object(resume / state_file)


@contextlib.contextmanager
def _progress(queued: bool, label: str) -> Iterator[ProgressFn]:
    """Progress as one printed line per step with a work queue (many workers print), else a status line."""
    if queued:
        prefix = f"[{label}] " if label else ""
        yield lambda message: console.print(escape(prefix + message), soft_wrap=True)
        return
    with console.status(label) as status:
        yield stepper(status, label)


@contextlib.contextmanager
def _incomplete_is_exit_1() -> Iterator[None]:
    """Units that failed on the queue: one red line and exit code 1 (the rest of the work is kept)."""
    from mammocad.experiments.work_queue import IncompleteWork

    try:
        yield
    except IncompleteWork as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from exc


def _check_join(join: Path | None, resume: Path | None, config: Path | None, option: list[str] | None) -> None:
    if join is not None and resume is not None:
        raise typer.BadParameter("give --join DIR or --resume DIR, not both")
    if join is not None and (config is not None or option):
        raise typer.BadParameter("--join DIR works on the directory's own config; leave out --config and --set")


@dataclass(frozen=True)
class _QueueOptions:
    """The work-queue options ``cv`` and ``ablate`` share."""

    workers: int | None
    storage: str | None
    gpus: str | None
    grace_period: float
    join: Path | None
    resume: Path | None


def _run_experiment(
    label: str,
    state_file: str,
    options: _QueueOptions,
    entry_points: Callable[[], tuple[Callable[..., Result], Callable[..., Result]]],
    start: Callable[[ProgressFn, dict[str, Any]], Result],
    show: Callable[[Result], None],
) -> None:
    """What ``cv`` and ``ablate`` share: join a queue, resume, or start anew; then show the result.

    ``entry_points()`` imports the experiment's ``(work_on, resume)`` functions (after a worker has
    set itself up to die with its launcher); ``start(progress, queue_options)`` starts a new
    experiment; ``show(result)`` prints it (not in a worker started by ``--workers N``: its
    launcher prints the result).
    """
    queued = _queued(options.workers, options.storage, options.gpus, options.resume, state_file)
    queued = queued or options.join is not None
    worker_label = ""
    if options.join is not None:
        from mammocad.experiments.work_queue import become_local_worker

        worker_label = become_local_worker()  # a worker started by `--workers N`: dies with its launcher
    work_on, resume = entry_points()
    from mammocad.experiments.work_queue import parse_gpus

    quiet_training_logs()
    with user_errors(), _incomplete_is_exit_1():
        queue = {"workers": options.workers, "storage": options.storage, "gpus": parse_gpus(options.gpus)}
        with _progress(queued, worker_label or label) as progress:
            if options.join is not None:
                result = work_on(options.join, progress=progress, **queue)
            elif options.resume is not None:
                result = resume(options.resume, progress=progress, **queue)
            else:
                result = start(progress, {**queue, "grace_period": options.grace_period} if queued else {})
        if not worker_label:
            show(result)


def cv(
    config: Path | None = typer.Option(None, "--config", help="Run config (YAML) of every fold."),
    folds: int = typer.Option(5, min=2, help="Number of patient-grouped, stratified folds."),
    option: list[str] | None = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    dataset: Path | None = typer.Option(None, help="Shortcut for --set data.dataset=..."),
    seed: int = typer.Option(0, help="Seed of the fold assignment when the split has no such folds."),
    out: Path | None = typer.Option(None, "-o", "--out", help="CV directory (default: runs_dir/<name>-cv<k>-<time>)."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted CV directory."),
    resamples: int = typer.Option(1000, min=0, help="Patient-bootstrap resamples for the pooled OOF CIs."),
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP.replace("units", "folds")),
    storage: str | None = typer.Option(None, "--storage", envvar=STORAGE_ENV, help=STORAGE_HELP),
    gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
    join: Path | None = typer.Option(
        None, "--join", help="Add a worker (or --workers N) to the CV with a work queue in this directory."
    ),
    grace_period: float = typer.Option(180.0, "--grace-period", min=0.1, help=GRACE_HELP),
) -> None:
    """k-fold cross-validation: one run per fold, mean ± std of every metric, pooled OOF predictions."""
    _check_join(join, resume, config, option)
    from mammocad.experiments.layout import CVDir

    def entry_points() -> tuple[Callable[..., Any], Callable[..., Any]]:
        from mammocad.experiments.cv import resume_cv, work_on_cv

        return work_on_cv, resume_cv

    def start(progress: ProgressFn, queue: dict[str, Any]) -> Any:
        from mammocad.experiments.cv import cross_validate

        run_config = run_config_from_options(config, option, dataset)
        return cross_validate(run_config, folds, out, seed=seed, n_resamples=resamples, progress=progress, **queue)

    def show(result: Any) -> None:
        from mammocad.evaluation.compare import markdown_table
        from mammocad.experiments.cv import HEADLINE_METRICS

        table = result.folds.set_index("fold")[[m for m in HEADLINE_METRICS if m in result.folds]]
        console.print(markdown_table(table), soft_wrap=True, markup=False)
        for metric in HEADLINE_METRICS:
            values = result.summary["metrics"].get(metric)
            if values and values["mean"] is not None:
                console.print(f"{metric}: {values['mean']:.3f} ± {values['std'] or 0:.3f}")
        console.print(f"report: [bold]{escape(str(result.report.resolve()))}[/]")

    options = _QueueOptions(workers, storage, gpus, grace_period, join, resume)
    _run_experiment("cv", CVDir.STATE, options, entry_points, start, show)


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
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP.replace("units", "variant × fold units")),
    storage: str | None = typer.Option(None, "--storage", envvar=STORAGE_ENV, help=STORAGE_HELP),
    gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
    join: Path | None = typer.Option(
        None, "--join", help="Add a worker (or --workers N) to the ablation with a work queue in this directory."
    ),
    grace_period: float = typer.Option(180.0, "--grace-period", min=0.1, help=GRACE_HELP),
) -> None:
    """Ablation study: the full model and one variant per removed component, each cross-validated."""
    _check_join(join, resume, config, option)
    from mammocad.experiments.layout import AblationDir

    def entry_points() -> tuple[Callable[..., Any], Callable[..., Any]]:
        from mammocad.experiments.ablate import resume_ablation, work_on_ablation

        return work_on_ablation, resume_ablation

    def start(progress: ProgressFn, queue: dict[str, Any]) -> Any:
        from mammocad.experiments.ablate import ablate as run_ablation
        from mammocad.experiments.ablate import load_ablations

        if ablations is None:
            raise typer.BadParameter("give --ablations FILE (or toggles: gagm,sevector,fsl) or --resume DIR")
        spec = load_ablations(ablations)
        run_config = run_config_from_options(config, option, dataset)
        return run_ablation(run_config, spec, folds, out, resamples, progress=progress, **queue)

    def show(result: Any) -> None:
        console.print(AblationDir(result.out_dir).table_markdown_path.read_text(), soft_wrap=True, markup=False)
        console.print(f"report: [bold]{escape(str(result.report.resolve()))}[/]")

    options = _QueueOptions(workers, storage, gpus, grace_period, join, resume)
    _run_experiment("ablate", AblationDir.STATE, options, entry_points, start, show)
