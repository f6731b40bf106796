"""A new importer needs nothing but what ``docs/contributing.md`` ("Adding an importer") lists.

This test adds a format exactly the way that section says, without touching any other file: an
importer function following the contract of :mod:`mammocad.data.importers.base`, registered through
the public API, then used through ``mammocad data import <format>`` and through
:func:`~mammocad.data.importers.import_dataset`. The registration is undone after each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.importers import IMPORTERS, import_dataset, register_importer, unregister_importer
from mammocad.data.importers.base import ImportContext, pseudonymous_id
from mammocad.data.manifest import PATHOLOGIES, ImageRecord, read_manifest
from mammocad.errors import DatasetError
from mammocad.io import atomic_write_png
from tests.conftest import textured

FORMAT = "test-listing"


def import_listing(ctx: ImportContext, label: str = "normal", strict: bool = False) -> None:
    """A made-up format: PNGs beside a ``listing.txt`` of ``<file> <patient>`` lines.

    Inputs: ``ctx.source`` is the folder; ``label`` is the class of every image; ``strict`` turns a
    malformed line into an error instead of a skipped item. Output: one record per listed file
    through ``ctx.add``; what cannot be used goes through ``ctx.skip`` with the reason.
    """
    listing = ctx.source / "listing.txt"
    if not listing.is_file():
        raise DatasetError(f"{ctx.source}: no listing.txt (is this a {FORMAT} folder?)")
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        item = f"listing.txt line {number}"
        parts = line.split()
        if len(parts) != 2:
            if strict:
                raise DatasetError(f"{item}: expected '<file> <patient>'")
            ctx.skip(item, "expected '<file> <patient>'")
            continue
        name, patient = parts
        path = ctx.source / name
        if not path.is_file():
            ctx.skip(item, f"listed file {name} does not exist")
            continue
        ctx.add(
            ImageRecord(
                image_id=pseudonymous_id(name, f"{FORMAT}-img"),
                image_path=str(path.resolve()),
                label_name=label,
                pathology=label if label in PATHOLOGIES else None,
                patient_id=pseudonymous_id(patient, FORMAT),  # never the raw patient key
                source=FORMAT,
            )
        )


@pytest.fixture
def listing_format():
    before = dict(IMPORTERS)
    register_importer(FORMAT, import_listing)
    yield FORMAT
    unregister_importer(FORMAT)
    assert before == IMPORTERS


@pytest.fixture
def source(tmp_path) -> Path:
    folder = tmp_path / "listing-source"
    for seed in range(3):
        atomic_write_png(folder / f"img{seed}.png", textured(seed))
    lines = ["img0.png alice", "img1.png alice", "img2.png bob", "missing.png bob", "a line without a patient"]
    (folder / "listing.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_a_registered_importer_imports_through_the_command_line(listing_format, source, tmp_path):
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app, ["data", "import", listing_format, str(source), "-o", str(out), "--set", "label=benign"]
    )
    assert result.exit_code == 0, result.output
    frame = read_manifest(out)
    assert len(frame) == 3 and set(frame["label_name"]) == {"benign"} and set(frame["source"]) == {FORMAT}
    assert frame["patient_id"].nunique() == 2 and "alice" not in " ".join(frame["patient_id"])
    assert set(frame["width"]) == {64}  # the runner checked the files, as for every built-in format
    summary = (out / "import_summary.txt").read_text()
    assert f"mammocad import ({FORMAT})" in summary and "skipped: 2" in summary


def test_a_registered_importer_imports_through_the_library(listing_format, source, tmp_path):
    summary = import_dataset(listing_format, source, tmp_path / "dataset", strict="no")
    assert summary.n_images == 3 and summary.per_class == {"normal": 3}
    assert sorted(s.reason for s in summary.skipped) == [
        "expected '<file> <patient>'",
        "listed file missing.png does not exist",
    ]
    with pytest.raises(DatasetError, match="unknown option 'colour'.*label, strict"):
        import_dataset(listing_format, source, tmp_path / "other", colour="red")
    with pytest.raises(DatasetError, match="expected '<file> <patient>'"):
        import_dataset(listing_format, source, tmp_path / "strict", strict=True)


def test_registration_refuses_what_the_command_line_could_not_use():
    with pytest.raises(ValueError, match="already registered"):
        register_importer("mias", import_listing)
    with pytest.raises(ValueError, match="lower-case"):
        register_importer("My Format", import_listing)
    with pytest.raises(ValueError, match="module:function"):
        register_importer(FORMAT, "tests.data.test_new_importer_contract.import_listing")
    assert FORMAT not in IMPORTERS
