"""The databases of shared studies: URLs for ``tune`` (the Optuna study) and the ``cv``/``ablate``
work queue, and opening a tune study's storage (with retries).

Imports neither Optuna nor torch at module level, so the queue and the CLI import it cheaply.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

from mammocad.errors import ConfigError, MammocadError


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


#: How to get the PostgreSQL driver (named in the error when it is missing).
POSTGRES_DRIVER_HINT = (
    "install the postgres extra: `make setup` in a checkout (it installs every extra), "
    "`pip install 'mammocad[postgres]'`, or `pip install 'psycopg[binary]'`"
)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def database_url(url: str) -> str:
    """``url`` as SQLAlchemy should open it; a plain ``postgresql://`` (or ``postgres://``) URL uses
    psycopg 3 (``postgresql+psycopg://``) unless psycopg2, SQLAlchemy's default driver, is installed.

    Raises ConfigError for something that is not a database URL, or a PostgreSQL URL without a driver.
    """
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a database URL such as sqlite:///study.db or postgresql://...")
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        if _importable("psycopg2"):
            return f"postgresql://{rest}"
        if not _importable("psycopg"):
            raise ConfigError(f"storage {mask_url(url)}: no PostgreSQL driver is installed; {POSTGRES_DRIVER_HINT}")
        return f"postgresql+psycopg://{rest}"
    return url


def open_storage(url: str, heartbeat_interval: int | None = 60, grace_period: int | None = 180) -> Any:
    """An Optuna RDB storage; with a heartbeat, trials of a worker that died are marked FAIL."""
    url = database_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    import optuna
    from sqlalchemy.exc import DBAPIError

    engine_kwargs: dict[str, Any] = (
        # SQLite: a few workers on one machine wait for each other's writes instead of failing.
        {"connect_args": {"timeout": 60}}
        if url.startswith("sqlite")
        # A server may drop a connection that sat idle through a long trial: test before use.
        else {"pool_pre_ping": True}
    )

    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period if heartbeat_interval else None,
                )
        except ImportError as exc:
            cause = exc.__cause__ or exc
            hint = f"; {POSTGRES_DRIVER_HINT}" if url.startswith("postgres") else ""
            if url.startswith("postgresql+psycopg2"):
                hint = "; pip install psycopg2-binary, or write postgresql://... to use psycopg 3 (the postgres extra)"
            raise ConfigError(f"storage {mask_url(url)}: database driver missing ({cause}){hint}") from exc
        except DBAPIError as exc:
            # Workers started together race to create the tables (the loser gets an IntegrityError): retry.
            if attempt == attempts:
                raise MammocadError(f"storage {mask_url(url)}: cannot open ({type(exc).__name__}: {exc})") from exc
            time.sleep(attempt * (0.5 + random.random()))
        except Exception as exc:
            raise MammocadError(f"storage {mask_url(url)}: cannot open ({type(exc).__name__}: {exc})") from exc
    raise AssertionError("unreachable")


__all__ = ["POSTGRES_DRIVER_HINT", "database_url", "mask_url", "open_storage"]
