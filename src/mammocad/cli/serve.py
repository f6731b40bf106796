"""``mammocad serve``: a trained run behind a REST API (FastAPI + uvicorn), OpenAPI docs at /docs."""

from __future__ import annotations

import inspect
import ipaddress
import os
from pathlib import Path

import typer

from mammocad.cli.common import console, error_console, url_host, user_errors


def serve(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train; export it first for ONNX Runtime)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    backend: str = typer.Option("auto", help="auto (ONNX Runtime when a current export exists), onnx or torch."),
    token: str | None = typer.Option(
        None,
        envvar="MAMMOCAD_API_TOKEN",
        show_default=False,
        help="Bearer token that /predict, /explain and /model require (default: $MAMMOCAD_API_TOKEN; none: open).",
    ),
    max_upload_mb: int = typer.Option(64, min=1, help="Largest accepted file, in MiB."),
    max_pixels: int | None = typer.Option(
        None, min=1, help="Refuse images with more pixels, from their header (default: the reader's 60,000,000)."
    ),
    max_batch: int = typer.Option(16, min=1, help="Most files in one /predict request."),
    workers: int = typer.Option(1, min=1, help="Server processes (each loads the model once)."),
) -> None:
    """Serve RUN over HTTP: POST /predict, POST /explain, GET /model, GET /health; docs at /docs."""
    import uvicorn

    from mammocad.data.images import DEFAULT_MAX_PIXELS
    from mammocad.serve.api import (
        SETTINGS_ENV,
        TOKEN_ENV,
        ApiSettings,
        ServeSettings,
        configure_logging,
        create_app_from_settings,
    )

    with user_errors():
        settings = ServeSettings(
            run=run.resolve(),
            backend=backend,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            api=ApiSettings(token=token, max_upload_bytes=max_upload_mb << 20, max_batch=max_batch),
        )
        # Built here even with workers: a run that cannot be served fails now, with its reason, not in N workers.
        app = create_app_from_settings(settings)
    configure_logging()
    engine = app.state.engine
    auth = "bearer token" if settings.api.token else "none"
    console.print(
        f"[green]serving[/] {engine.info()['name']} {engine.version} · backend {engine.backend} · auth: {auth}"
    )
    console.print(f"docs: http://{url_host(host)}:{port}/docs")
    if not settings.api.token and not _is_loopback(host):
        error_console.print(
            f"[yellow]warning:[/] listening on {host} without a token: anyone who can reach it can use the model "
            "(set --token or $MAMMOCAD_API_TOKEN)"
        )
    if workers == 1:
        uvicorn.run(app, host=host, port=port, access_log=False)
        return
    # Worker processes rebuild the app from the environment: uvicorn needs an import string for N > 1.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    if settings.api.token:
        os.environ[TOKEN_ENV] = settings.api.token
    else:
        os.environ.pop(TOKEN_ENV, None)
    del app, engine  # the workers load their own
    options: dict[str, int] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # A worker spends tens of seconds importing torch and loading the model, with the GIL too busy to
        # answer the supervisor's pings in uvicorn's default 5 s: it would be killed and restarted in a loop.
        options["timeout_worker_healthcheck"] = 120
    uvicorn.run(
        "mammocad.serve.api:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        **options,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
