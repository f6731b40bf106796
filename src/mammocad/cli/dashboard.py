"""``mammocad dashboard``: the clinician dashboard (Streamlit) over trained, evaluated runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from mammocad.cli.common import console, url_host, user_errors
from mammocad.extras import require


def dashboard(
    runs: list[Path] = typer.Argument(..., help="Run directories, each trained and evaluated (mammocad evaluate)."),
    port: int = typer.Option(8501, min=0, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    blind_n: int = typer.Option(
        150, min=1, help="Cases in the reader study: a seeded, class-stratified sample of the split (all when larger)."
    ),
    split: str = typer.Option("test", help="Evaluated held-out split to show: test, val or blind."),
    study_dir: Path | None = typer.Option(
        None,
        help="Where reader studies live: DIR/<run>-<case set>/ (cases, answers, exports); default ~/.mammocad/studies.",
    ),
    rating: str = typer.Option("confidence", help="What readers rate with each answer: confidence or birads (1-5)."),
) -> None:
    """Blind test (you vs the model), upload & explain, model comparison, latent space, misclassifications."""
    with user_errors():
        require("dashboard", command="mammocad dashboard")
    from mammocad.dashboard.runs import load_runs
    from mammocad.dashboard.settings import RATINGS, DashboardSettings, settings_env
    from mammocad.errors import ConfigError

    with user_errors():
        # Every run is checked here, so an incomplete one is refused with its reason before the server starts.
        checked = load_runs(runs, split)
        if rating not in RATINGS:
            raise ConfigError(f"--rating must be one of {', '.join(RATINGS)}, got {rating!r}")
    settings = DashboardSettings(
        tuple(run.run_dir.resolve() for run in checked),
        blind_n,
        split,
        None if study_dir is None else study_dir.expanduser().resolve(),
        rating,
    )
    console.print(f"[green]dashboard[/] {', '.join(run.name for run in checked)} · http://{url_host(host)}:{port}")
    sys.stdout.flush()
    # exec, not a child process: Streamlit gets the signals directly (Ctrl-C, docker stop).
    os.execve(sys.executable, streamlit_command(host, port), {**os.environ, **settings_env(settings)})


def streamlit_command(host: str, port: int) -> list[str]:
    """The argv that serves the dashboard app headless on ``host:port``, without usage statistics."""
    from mammocad.dashboard import APP_PATH

    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # A clinical audience needs no "Deploy" button or developer menu.
        "--client.toolbarMode",
        "minimal",
        # The installed app does not change while it runs: no file watcher polling the package.
        "--server.fileWatcherType",
        "none",
    ]
