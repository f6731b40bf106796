"""``mammocad serve``: a trained run behind a REST API (FastAPI + uvicorn), OpenAPI docs at /docs.

The bearer token never goes on the command line, where every user of the machine sees it in ``ps``:
it comes from ``$MAMMOCAD_API_TOKEN`` or from a file only its owner can read (``--token-file``).
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import typer

from mammocad.cli.common import console, error_console, max_decode_mb_option, url_host, user_errors
from mammocad.defaults import DEFAULT_MAX_PIXELS
from mammocad.errors import ConfigError
from mammocad.extras import require

#: The environment variable that turns the API docs off (0/false/no), like ``--no-docs``.
DOCS_ENV = "MAMMOCAD_API_DOCS"
# Printable ASCII without spaces: what an HTTP Authorization header carries unchanged.
_TOKEN = re.compile(r"[!-~]+")
_TOKEN_MAX = 4096
_TOKEN_MIN_ADVISED = 16
_SAFE_TOKEN_WAYS = (
    "set $MAMMOCAD_API_TOKEN, or put it in a file only you can read (chmod 600) and give --token-file FILE"
)


def serve(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train; export it first for ONNX Runtime)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    backend: str = typer.Option("auto", help="auto (ONNX Runtime when a current export exists), onnx or torch."),
    onnx_variant: str = typer.Option(
        "fp32",
        "--onnx-variant",
        help="The export's model ONNX Runtime serves: fp32, or int8 (mammocad export RUN --int8); "
        "a variant that failed its parity check against fp32 is refused.",
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        show_default=False,
        help="File holding the bearer token that /predict, /explain and /model require; it must be readable by "
        "its owner only (chmod 600). Or set $MAMMOCAD_API_TOKEN. Without either the API is open. A token is "
        "never taken on the command line, where `ps` shows it to every user.",
    ),
    token: str | None = typer.Option(None, "--token", hidden=True, show_default=False),
    docs: bool = typer.Option(
        True,
        "--docs/--no-docs",
        envvar=DOCS_ENV,
        help="Serve the interactive API docs and schema (/docs, /redoc, /openapi.json); "
        f"--no-docs (or ${DOCS_ENV}=0) turns all three off.",
    ),
    max_upload_mb: int = typer.Option(64, min=1, max=16384, help="Largest accepted file, in MiB."),
    max_pixels: int | None = typer.Option(
        None,
        min=1,
        max=1_000_000_000,
        help="Refuse images with more pixels, from their header (default: the reader's 60,000,000).",
    ),
    max_batch: int = typer.Option(16, min=1, max=1024, help="Most files in one /predict request."),
    max_decode_mb: float | None = max_decode_mb_option(
        "Memory (MiB) that decoding one upload (and its heatmap) may need, refused with a 413 above it; "
        "uploads decoding at once share it"
    ),
    workers: int = typer.Option(1, min=1, max=64, help="Server processes (each loads the model once)."),
) -> None:
    """Serve RUN over HTTP: POST /predict, POST /explain, GET /model, GET /health; docs at /docs.

    The bearer token comes from $MAMMOCAD_API_TOKEN or --token-file FILE (owner-only permissions),
    never from the command line.
    """
    with user_errors():
        require("serve", command="mammocad serve")
    import uvicorn

    from mammocad.serve.api import (
        SETTINGS_ENV,
        TOKEN_ENV,
        ApiSettings,
        ServeSettings,
        configure_logging,
        create_app_from_settings,
    )

    if token is not None:
        error_console.print(
            "[bold red]error:[/] --token is not accepted: a token on the command line is visible to every user "
            f"in `ps`; {_SAFE_TOKEN_WAYS}"
        )
        raise typer.Exit(code=2)
    with user_errors():
        secret = resolve_token(token_file, os.environ)
        if secret is not None and len(secret) < _TOKEN_MIN_ADVISED:
            error_console.print(
                f"[yellow]warning:[/] the token has only {len(secret)} characters; "
                "a random one is safer, e.g. `openssl rand -hex 32`"
            )
        settings = ServeSettings(
            run=run.resolve(),
            backend=backend,
            onnx_variant=onnx_variant,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            decode_budget_mb=max_decode_mb,
            api=ApiSettings(token=secret, max_upload_bytes=max_upload_mb << 20, max_batch=max_batch, docs=docs),
        )
        # Built here even with workers: a run that cannot be served fails now, with its reason, not in N workers.
        app = create_app_from_settings(settings)
    configure_logging()
    engine = app.state.engine
    auth = "bearer token" if settings.api.token else "none"
    served = f"onnx ({engine.onnx_variant['name']})" if engine.onnx_variant else engine.backend
    console.print(f"[green]serving[/] {engine.info()['name']} {engine.version} · backend {served} · auth: {auth}")
    if settings.api.docs:
        console.print(f"docs: http://{url_host(host)}:{port}/docs")
    else:
        console.print("docs: off (/docs, /redoc and /openapi.json are not served)")
    if not settings.api.token and not _is_loopback(host):
        error_console.print(
            f"[yellow]warning:[/] listening on {host} without a token: anyone who can reach it can use the model "
            "(set $MAMMOCAD_API_TOKEN or give --token-file FILE)"
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


def resolve_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token from ``--token-file`` or ``$MAMMOCAD_API_TOKEN`` (None: no auth); ConfigError otherwise.

    A blank variable counts as unset (``docker compose`` passes ``MAMMOCAD_API_TOKEN=`` when none is
    set). Giving both is refused rather than silently preferring one. Messages never quote the token.
    """
    from mammocad.serve.api import TOKEN_ENV

    from_env = (environ.get(TOKEN_ENV) or "").strip() or None
    if token_file is None:
        return _checked_token(from_env, f"${TOKEN_ENV}") if from_env is not None else None
    if from_env is not None:
        raise ConfigError(f"give the token one way: ${TOKEN_ENV} or --token-file, not both")
    return _checked_token(read_token_file(token_file), str(token_file))


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped); ConfigError for a file others can read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: token file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file; --token-file expects a file holding the token")
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigError(
            f"{path}: group or others may access the token file (mode {stat.S_IMODE(info.st_mode):o}); "
            f"make it private: chmod 600 {path}"
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(_TOKEN_MAX + 2)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the token must be printable ASCII (e.g. from `openssl rand -hex 32`)") from None


def _checked_token(token: str, source: str) -> str:
    if not token:
        raise ConfigError(f"{source}: the token is empty")
    if len(token) > _TOKEN_MAX:
        raise ConfigError(f"{source}: the token is longer than {_TOKEN_MAX} characters")
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            f"{source}: the token must be printable ASCII without spaces (e.g. from `openssl rand -hex 32`)"
        )
    return token


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
