"""Helpers shared by the CLI commands: one console, one way to report errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from mammocad.defaults import DEFAULT_DECODE_BUDGET_MB
from mammocad.errors import MammocadError
from mammocad.progress import ProgressFn

console = Console(stderr=False, highlight=False)
error_console = Console(stderr=True, highlight=False)
# Skipped items a command prints; its summary file holds them all (a real import can skip thousands).
CONSOLE_ITEMS = 10


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one red line and exit code 2 (no traceback).

    Besides mammocad's own errors: the operating system refusing a path the user gave (missing,
    a directory where a file is expected, no permission, disk full) and a file that is not text.
    """
    try:
        yield
    except MammocadError as exc:
        # Escaped: messages quote file names and lists, whose [brackets] rich would read as markup.
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc
    except OSError as exc:
        error_console.print(f"[bold red]error:[/] {escape(os_error_line(exc))}")
        raise typer.Exit(code=2) from exc
    except UnicodeDecodeError as exc:
        error_console.print(f"[bold red]error:[/] a file is not UTF-8 text ({escape(str(exc))})")
        raise typer.Exit(code=2) from exc
    except ValidationError as exc:
        error_console.print(f"[bold red]error:[/] invalid configuration\n{format_validation_error(exc)}")
        raise typer.Exit(code=2) from exc


def os_error_line(exc: OSError) -> str:
    """``path: reason`` for an OSError (the target of a failed rename rather than its temporary file)."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    return f"{path}: {reason}" if path is not None else reason


def format_validation_error(exc: ValidationError) -> str:
    """One line per bad field: ``field.path: reason (got value)``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(config)"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return "\n".join(lines)


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``--set key=value`` options; values are read as YAML scalars (``true``, ``3``...)."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MammocadError(f"--set expects key=value, got {item!r}")
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError as exc:
            reason = " ".join(str(getattr(exc, "problem", None) or "not a YAML value").split())
            raise MammocadError(
                f"--set {item!r}: the value is not valid YAML ({reason}); quote a text value, e.g. key='[a: b'"
            ) from exc
        result[key.strip().replace("-", "_")] = parsed
    return result


def quiet_training_logs() -> None:
    """Keep Lightning's and MLflow's start-up notices out of a command's own progress lines.

    Call it after ``mammocad.training`` is imported: importing Lightning resets its logger's level.
    """
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_config_from_options(config: Any, options: list[str] | None, dataset: Any = None, **shortcuts: Any) -> Any:
    """The RunConfig of a command's ``--config FILE``, ``--set a.b=v`` options and shortcuts.

    ``shortcuts`` map dotted fields to option values (None: not given); ``dataset`` sets data.dataset.
    """
    from mammocad.training.config import load_run_config

    overrides = parse_assignments(options)
    given = {"data.dataset": dataset, **shortcuts}
    overrides.update({k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in given.items() if v is not None})
    if config is None and "data.dataset" not in overrides:
        raise MammocadError("give --config run.yaml (or --dataset DIR)")
    return load_run_config(config, overrides)


def print_table(table: Table) -> None:
    """Print a rich table at its natural width: on a narrow terminal, or into a pipe (where rich
    assumes 80 columns), its rows run past the edge instead of folding every cell over two lines."""
    from rich.measure import Measurement

    natural = min(Measurement.get(console, console.options.update(width=_WIDEST), table).maximum, _WIDEST)
    if natural <= console.width:
        console.print(table)
        return
    width = console.width  # print(width=...) is capped at the console's: widen the console for this table
    console.width = natural
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


_WIDEST = 1000


def stepper(status: Status, label: str) -> ProgressFn:
    """Progress callback: the spinner shows the current step, the log keeps every step with its time."""

    def step(message: str) -> None:
        status.update(f"[bold]{label}[/]: {message}")
        console.log(message)

    return step


def max_decode_mb_option(what: str = "Memory (MiB) that decoding one image may need") -> Any:
    """The ``--max-decode-mb`` option (MiB; None: ``$MAMMOCAD_DECODE_BUDGET_MB``, else the readers' default).

    ``what`` says what the budget limits in this command; the default's source is appended.
    """
    return typer.Option(
        None,
        "--max-decode-mb",
        min=1,
        show_default=False,
        help=f"{what} (default: $MAMMOCAD_DECODE_BUDGET_MB, else {DEFAULT_DECODE_BUDGET_MB}).",
    )


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host
