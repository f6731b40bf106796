"""Database URLs shared by ``tune`` (the Optuna study) and the ``cv``/``ablate`` work queue.

Kept free of Optuna and torch so the queue and the CLI import it cheaply.
"""

from __future__ import annotations

from mammocad.errors import ConfigError


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


#: How to get the PostgreSQL driver (named in the error when it is missing).
POSTGRES_DRIVER_HINT = (
    "install the postgres extra: `uv sync --extra postgres` in a checkout (make setup does), "
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
