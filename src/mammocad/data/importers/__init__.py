"""Importers: one module per dataset format, each turning its source into manifest records.

:data:`IMPORTERS` is the one registry of formats: ``mammocad data import``, :func:`import_dataset`
and the tests all read it (the command's ``--help`` lists the formats registered when the CLI loads). Built-in formats are listed there as
``module:function`` and load lazily, so a missing optional dependency of one format never breaks
the others; code outside this package adds a format with :func:`register_importer`. What an
importer must do: see :mod:`mammocad.data.importers.base` and ``docs/contributing.md``
("Adding an importer").
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.errors import DatasetError

if TYPE_CHECKING:
    from mammocad.data.importers.base import ImportContext, ImportSummary, Skipped

#: An importer: ``importer(ctx: ImportContext, **options) -> None`` (the contract: ``base``'s docstring).
Importer = Callable[..., None]

#: Format name -> its importer: the ``"module:function"`` path of a built-in one (imported on first
#: use) or the function itself (one added with :func:`register_importer`).
IMPORTERS: dict[str, str | Importer] = {
    "mias": "mammocad.data.importers.mias:import_mias",
    "folders": "mammocad.data.importers.folders:import_folders",
    "ddsm-tfrecord": "mammocad.data.importers.ddsm_tfrecord:import_ddsm_tfrecord",
    "kaumds": "mammocad.data.importers.kaumds:import_kaumds",
    "cbis-ddsm": "mammocad.data.importers.cbis_ddsm:import_cbis_ddsm",
    "bcdr": "mammocad.data.importers.bcdr:import_bcdr",
    "inbreast": "mammocad.data.importers.inbreast:import_inbreast",
    "csv": "mammocad.data.importers.csv_table:import_csv",
}
# Format names are typed on the command line: lower-case words joined by hyphens.
_FORMAT_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def register_importer(fmt: str, importer: str | Importer, *, replace: bool = False) -> None:
    """Make ``importer`` the importer of format ``fmt`` for ``mammocad data import`` and :func:`import_dataset`.

    ``importer`` is the function, or its ``"module:function"`` path (imported on first use).
    Raises ``ValueError`` for a name that is not lower-case words joined by hyphens, a path
    without ``:``, or a format already registered (unless ``replace``).
    """
    if not _FORMAT_NAME.fullmatch(fmt):
        raise ValueError(f"import format name {fmt!r}: use lower-case letters, digits and hyphens")
    if isinstance(importer, str) and len(importer.split(":")) != 2:
        raise ValueError(f"importer path {importer!r}: expected 'module:function'")
    if not isinstance(importer, str) and not callable(importer):
        raise ValueError(f"importer for {fmt!r} must be a function or a 'module:function' path")
    if fmt in IMPORTERS and not replace:
        raise ValueError(f"import format {fmt!r} is already registered")
    IMPORTERS[fmt] = importer


def unregister_importer(fmt: str) -> None:
    """Remove format ``fmt`` (``KeyError`` when it is not registered)."""
    del IMPORTERS[fmt]


def get_importer(fmt: str) -> Importer:
    """The importer function for a format name; unknown names list the valid ones."""
    if fmt not in IMPORTERS:
        raise DatasetError(f"unknown import format {fmt!r}; valid formats: {', '.join(IMPORTERS)}")
    target = IMPORTERS[fmt]
    if not isinstance(target, str):
        return target
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def import_dataset(fmt: str, source: str | Path, out: str | Path, **options: Any) -> ImportSummary:
    """Import ``source`` in format ``fmt`` into a new dataset directory ``out``.

    Returns the :class:`ImportSummary` (also written next to the manifest). Options are the
    format's own (see each importer) plus the runner's: ``max_pixels``, ``keep_duplicates``,
    ``workers``, ``progress``.
    """
    from mammocad.data.importers.base import run_import

    importer = get_importer(fmt)
    return run_import(fmt, importer, source, out, **check_options(fmt, importer, options))


RUNNER_OPTIONS = {"max_pixels": int, "keep_duplicates": bool, "workers": int, "progress": object}
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def importer_options(importer: Importer) -> dict[str, tuple[type, ...]]:
    """Option name -> accepted types of an importer function (its parameters after ``ctx``)."""
    hints = typing.get_type_hints(importer)
    names = list(inspect.signature(importer).parameters)[1:]
    return {name: tuple(t for t in typing.get_args(hints[name]) or (hints[name],)) for name in names}


def check_options(fmt: str, importer: Importer, options: dict[str, Any]) -> dict[str, Any]:
    """The options with command-line text read into the types the importer takes.

    Raises :class:`DatasetError` in one line naming the option and what it accepts, for an
    unknown option or a value of the wrong kind (never a ``TypeError`` traceback).
    """
    accepted = importer_options(importer)
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name in RUNNER_OPTIONS:
            checked[name] = value
            continue
        if name not in accepted:
            known = ", ".join(accepted) or "none"
            raise DatasetError(f"{fmt}: unknown option {name!r}; the {fmt} options are: {known}")
        checked[name] = _coerce(fmt, name, value, accepted[name])
    return checked


def _coerce(fmt: str, name: str, value: Any, types: tuple[type, ...]) -> Any:
    plain = tuple(typing.get_origin(t) or t for t in types)
    if type(value) in plain or (isinstance(value, Path) and Path in plain):
        return value
    if bool in plain:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
    elif (isinstance(value, int) and not isinstance(value, bool) and int in plain) or (
        isinstance(value, dict) and dict in plain
    ):
        return value
    elif str in plain and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)  # "--set sheet=2019" or a numeric file name read as a number
    shown = " or ".join(sorted({t.__name__ for t in plain if t is not type(None)}))
    raise DatasetError(f"{fmt}: option {name!r} expects {shown}, got {value!r}")


def __getattr__(name: str) -> Any:
    # The runner's classes load with the runner (pandas): listing the formats (the CLI's help) stays light.
    if name in ("ImportContext", "ImportSummary", "Skipped"):
        return getattr(importlib.import_module("mammocad.data.importers.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMPORTERS",
    "ImportContext",
    "ImportSummary",
    "Importer",
    "Skipped",
    "get_importer",
    "import_dataset",
    "register_importer",
    "unregister_importer",
]
