"""Importers: one module per dataset format, each turning its source into manifest records.

The registry maps the CLI's format names to ``module:function``; modules load lazily so a
missing optional dependency of one format never breaks the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mammocad.data.importers.base import ImportContext, ImportSummary, Skipped, run_import
from mammocad.errors import DatasetError

IMPORTERS: dict[str, str] = {
    "mias": "mammocad.data.importers.mias:import_mias",
    "folders": "mammocad.data.importers.folders:import_folders",
    "ddsm-tfrecord": "mammocad.data.importers.ddsm_tfrecord:import_ddsm_tfrecord",
    "kaumds": "mammocad.data.importers.kaumds:import_kaumds",
    "cbis-ddsm": "mammocad.data.importers.cbis_ddsm:import_cbis_ddsm",
    "bcdr": "mammocad.data.importers.bcdr:import_bcdr",
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
    return run_import(fmt, get_importer(fmt), source, out, **options)


__all__ = ["IMPORTERS", "ImportContext", "ImportSummary", "Skipped", "get_importer", "import_dataset"]
