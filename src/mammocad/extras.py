"""The optional extras of the install, and one clear error when a command needs a missing one.

The core install trains, evaluates, predicts, explains and cross-validates; serving, the dashboard,
hyperparameter search and MLflow logging come as extras (``pip install 'mammocad[serve]'``, see
pyproject.toml; ``make setup`` installs them all). A command that needs an extra calls
:func:`require` before importing it, so a missing package reads as the install line to run instead
of a ``ModuleNotFoundError`` traceback. Nothing is imported here: modules are only looked up.
"""

from __future__ import annotations

import importlib.util

from mammocad.errors import MammocadError

#: The top-level modules mammocad imports from each extra's packages (pyproject.toml lists the packages).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "multipart", "fastapi_offline", "httpx", "onnx", "onnxruntime"),
    "dashboard": ("streamlit", "onnxruntime"),
    "tune": ("optuna",),
    "mlflow": ("mlflow",),
    "postgres": ("psycopg",),
}


class MissingExtraError(MammocadError):
    """A command needs an optional extra that is not installed (the message says how to install it)."""


def missing_modules(*modules: str) -> list[str]:
    """Those of ``modules`` (top-level names) that cannot be imported; none is imported."""
    absent = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed installation counts as missing
            found = False
        if not found:
            absent.append(module)
    return absent


def is_installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported."""
    return not missing_modules(*_modules_of(extra))


def require(extra: str, *modules: str, command: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``modules`` (default: all of the extra's) are importable.

    ``command`` names what needs them in the message (default ``mammocad <extra>``), e.g.
    ``mammocad serve needs the 'serve' extra: pip install 'mammocad[serve]' (missing: fastapi; ...)``.
    """
    absent = missing_modules(*(modules or _modules_of(extra)))
    if absent:
        raise MissingExtraError(
            f"{command or f'mammocad {extra}'} needs the {extra!r} extra: pip install 'mammocad[{extra}]' "
            f"(missing: {', '.join(absent)}; in a checkout, make setup installs every extra)"
        )


def _modules_of(extra: str) -> tuple[str, ...]:
    try:
        return EXTRA_MODULES[extra]
    except KeyError:
        raise ValueError(f"unknown extra {extra!r}; choose from {', '.join(EXTRA_MODULES)}") from None


__all__ = ["EXTRA_MODULES", "MissingExtraError", "is_installed", "missing_modules", "require"]
