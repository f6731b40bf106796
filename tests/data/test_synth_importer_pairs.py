"""Every importer has a synthetic writer (or a stated reason not to), and every writer feeds an importer.

The writers declare the importer format they produce (``IMPORTER_FORMAT`` in each module of
:mod:`mammocad.data.synth`, collected in ``writers.WRITERS``). That each synthetic format imports
cleanly with its importer (exact counts, patients, masks, nothing skipped) is the job of
``test_synth_roundtrip.py``, parametrized over the same formats.
"""

from __future__ import annotations

import importlib
import inspect

from mammocad.data.importers import IMPORTERS, get_importer
from mammocad.data.synth import writers
from mammocad.defaults import SYNTH_FORMATS
from tests.data import test_synth_roundtrip


def test_every_importer_has_a_synthetic_writer_or_a_stated_exemption():
    missing = set(IMPORTERS) - set(writers.WRITERS) - set(writers.IMPORTERS_WITHOUT_WRITER)
    assert not missing, f"importers without a synthetic writer (add one, or an exemption with the reason): {missing}"
    assert all(reason.strip() for reason in writers.IMPORTERS_WITHOUT_WRITER.values())
    # An exemption for a format that has a writer, or that is no importer, is stale.
    assert set(writers.IMPORTERS_WITHOUT_WRITER) <= set(IMPORTERS) - set(writers.WRITERS)


def test_every_synthetic_writer_produces_a_registered_importer_format():
    for fmt, write in writers.WRITERS.items():
        assert fmt in IMPORTERS, f"synthetic format {fmt!r} has no importer"
        assert callable(get_importer(fmt))
        module = importlib.import_module(write.__module__)
        assert fmt == module.IMPORTER_FORMAT, (
            f"{write.__module__} declares {module.IMPORTER_FORMAT!r}, registered as {fmt!r}"
        )
        assert list(inspect.signature(write).parameters) == ["out", "counts", "seed", "height", "width", "views"]


def test_the_command_line_lists_exactly_the_writers():
    # SYNTH_FORMATS is the light copy `mammocad synth --help` reads (no numpy): same formats, same order.
    assert tuple(writers.WRITERS) == SYNTH_FORMATS == writers.FORMATS


def test_the_round_trip_test_covers_every_writer():
    assert tuple(test_synth_roundtrip.FORMATS) == tuple(writers.WRITERS)
