"""``mammocad tune``: hyperparameter search (Optuna) over a base run config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from mammocad.cli.common import console, error_console, quiet_training_logs, run_config_from_options, user_errors
from mammocad.extras import require


def tune(
    config: Path = typer.Option(..., "--config", help="Base run config (YAML); every trial starts from it."),
    search: Path = typer.Option(..., "--search", help="Search-space file (YAML/JSON): metric, params, pruner."),
    trials: int = typer.Option(
        ..., "--trials", min=1, help="Target number of finished (complete + pruned) trials in the whole study."
    ),
    option: list[str] | None = typer.Option(None, "--set", help="Override a base-config field: section.field=value."),
    dataset: Path | None = typer.Option(None, help="Shortcut for --set data.dataset=..."),
    study_dir: Path | None = typer.Option(
        None, "--study-dir", help="Study directory (default: <output.runs_dir>/tune-<study name>)."
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        envvar="MAMMOCAD_TUNE_STORAGE",
        help="Study database URL (default: sqlite:///<study-dir>/study.db); share one postgresql://user:pw@host/db "
        "URL across machines.",
    ),
    study_name: str | None = typer.Option(
        None, "--study-name", help="Study name in the database (default: output.name, else model.name)."
    ),
    seed: int | None = typer.Option(
        None, help="TPE sampler seed; overrides the search file's seed (give each machine its own)."
    ),
    heartbeat: int = typer.Option(
        60, "--heartbeat", min=1, help="Seconds between a running trial's heartbeats to the study database."
    ),
    grace: int = typer.Option(
        180,
        "--grace",
        min=1,
        help="Seconds without a heartbeat after which a trial (its worker killed or lost) is marked FAIL and replaced.",
    ),
) -> None:
    """Search hyperparameters: run trials (one training run each) until the study has --trials finished ones."""
    with user_errors():
        require("tune", command="mammocad tune")
    from mammocad.experiments.tune import StudyDir, load_search_space, tune_study

    quiet_training_logs()
    with user_errors():
        base = run_config_from_options(config, option, dataset)
        space = load_search_space(search)
        result = tune_study(
            base,
            space,
            trials,
            study_dir=study_dir,
            storage=storage,
            study_name=study_name,
            progress=lambda line: console.print(escape(line)),
            seed=seed,
            heartbeat_interval=heartbeat,
            grace_period=grace,
        )
    counts = ", ".join(f"{n} {state.lower()}" for state, n in result.counts.items() if n) or "no trials"
    console.print(f"study {escape(result.study_name)}: {counts} ({result.n_finished}/{result.n_trials} finished)")
    failed = result.counts.get("FAIL", 0)
    if failed:
        console.print(
            f"[yellow]{failed} trial(s) failed[/]: see the error column of "
            f"{escape(str(StudyDir(result.study_dir).trials_table_path))}"
        )
    running = result.counts.get("RUNNING", 0)
    if result.n_finished < result.n_trials and not running:
        console.print("run the same command again to run the missing trials")
    elif result.n_finished < result.n_trials:
        console.print(
            f"{running} trial(s) running elsewhere hold the remaining places; a trial whose worker died is "
            f"marked FAIL after {grace} s without a heartbeat: then run the same command again"
        )
    console.print(f"[green]report[/] {escape(str(result.report))}")
    if result.best_trial is None:
        error_console.print("[bold red]error:[/] no trial completed, so there is no best configuration")
        raise typer.Exit(code=1)
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    console.print(f"best {result.metric}={result.best_value:.4g} (trial {result.best_trial}): {escape(params)}")
    console.print(f"[green]best config[/] {escape(str(result.best_config))}")
