"""Importers: one module per dataset format, each turning its source into manifest records.

The registry maps the CLI's format names to ``module:function``; modules load lazily so a
missing optional dependency of one format never breaks the others.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.errors import DatasetError

if TYPE_CHECKING:
    from mammocad.data.importers.base import ImportContext, ImportSummary, Skipped

IMPORTERS: dict[str, str] = {
    "mias": "mammocad.data.importers.mias:import_mias",
    "folders": "mammocad.data.importers.folders:import_folders",
    "ddsm-tfrecord": "mammocad.data.importers.ddsm_tfrecord:import_ddsm_tfrecord",
    "kaumds": "mammocad.data.importers.kaumds:import_kaumds",
    "cbis-ddsm": "mammocad.data.importers.cbis_ddsm:import_cbis_ddsm",
    "bcdr": "mammocad.data.importers.bcdr:import_bcdr",
    "inbreast": "mammocad.data.importers.inbreast:import_inbreast",
    "csv": "mammocad.data.importers.csv_table:import_csv",
}


def get_importer(fmt: str) -> Callable[..., None]:
    """The importer function for a format name; unknown names list the valid ones."""
    if fmt not in IMPORTERS:
        raise DatasetError(f"unknown import format {fmt!r}; valid formats: {', '.join(IMPORTERS)}")
    module_name, func_name = IMPORTERS[fmt].split(":")
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


def importer_options(importer: Callable[..., None]) -> dict[str, tuple[type, ...]]:
    """Option name -> accepted types of an importer function (its parameters after ``ctx``)."""
    hints = typing.get_type_hints(importer)
    names = list(inspect.signature(importer).parameters)[1:]
    return {name: tuple(t for t in typing.get_args(hints[name]) or (hints[name],)) for name in names}


def check_options(fmt: str, importer: Callable[..., None], options: dict[str, Any]) -> dict[str, Any]:
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
        from mammocad.data.importers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IMPORTERS", "ImportContext", "ImportSummary", "Skipped", "get_importer", "import_dataset"]
