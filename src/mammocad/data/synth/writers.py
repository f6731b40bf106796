"""Write a synthetic dataset in any format the importers read (so it also feeds their tests).

``write_synthetic_dataset(out_dir, fmt, ...)`` returns the path to hand to
``mammocad.data.importers.import_dataset(fmt, path, ...)``. All images are SYNTHETIC (see
:mod:`mammocad.data.synth.phantom` and ``docs/synthetic-data.md``). Who is in a dataset is planned
in :mod:`mammocad.data.synth.plan`; each format's layout is written by its own module in this
package (named like the importer module that reads it back), which declares the importer format it
produces as ``IMPORTER_FORMAT``. :data:`WRITERS` maps those formats to the writers, and
:data:`IMPORTERS_WITHOUT_WRITER` names the importers that have none, with the reason
(``tests/data/test_synth_importer_pairs.py`` keeps the two in step with the importer registry).
"""

from __future__ import annotations

import json
from pathlib import Path

import mammocad.data.synth.bcdr as bcdr
import mammocad.data.synth.cbis_ddsm as cbis_ddsm
import mammocad.data.synth.csv_table as csv_table
import mammocad.data.synth.ddsm_tfrecord as ddsm_tfrecord
import mammocad.data.synth.folders as folders
import mammocad.data.synth.kaumds as kaumds
import mammocad.data.synth.mias as mias
from mammocad.data.provenance import SYNTHETIC_MARKER, marker_content
from mammocad.data.synth.folders import FOLDERS_PATIENT_REGEX
from mammocad.data.synth.plan import (
    DEFAULT_COUNTS,
    WITHOUT_NORMALS,
    PlannedImage,
    Writer,
    plan_images,
    written_counts,
)
from mammocad.defaults import SYNTH_FORMATS
from mammocad.io import atomic_write_text, staging_dir

#: Importer format (``mammocad data import <format>``) -> the writer of a synthetic source it reads.
#: Each writer module declares the format it produces; the order is the command line's.
WRITERS: dict[str, Writer] = {
    mias.IMPORTER_FORMAT: mias.write_mias,
    folders.IMPORTER_FORMAT: folders.write_folders,
    csv_table.IMPORTER_FORMAT: csv_table.write_csv,
    ddsm_tfrecord.IMPORTER_FORMAT: ddsm_tfrecord.write_ddsm_tfrecord,
    kaumds.IMPORTER_FORMAT: kaumds.write_kaumds,
    cbis_ddsm.IMPORTER_FORMAT: cbis_ddsm.write_cbis_ddsm,
    bcdr.IMPORTER_FORMAT: bcdr.write_bcdr,
}
#: Importers with no synthetic writer, and why; every other importer must have one.
IMPORTERS_WITHOUT_WRITER: dict[str, str] = {
    # A faithful INbreast source needs OsiriX ROI plists (XML) beside its DICOMs and the INbreast
    # workbook; tests/data/test_import_inbreast.py builds small ones by hand (with cbis_ddsm.write_dicom).
    "inbreast": "OsiriX XML outlines and workbook: the importer's tests build their own fixtures",
}
#: The synthetic formats, in the command line's order (``mammocad.defaults.SYNTH_FORMATS``: the CLI
#: lists them without importing numpy; a test checks it equals the keys of :data:`WRITERS`).
FORMATS = SYNTH_FORMATS


def write_synthetic_dataset(
    out_dir: str | Path,
    fmt: str,
    n_per_class: dict[str, int] | None = None,
    seed: int = 0,
    height: int = 512,
    width: int = 384,
    views: tuple[str, ...] = ("CC", "MLO"),
) -> Path:
    """Write a synthetic dataset in format ``fmt`` into the new directory ``out_dir``.

    Inputs: ``n_per_class`` images per class (``normal``/``benign``/``malignant``; default 20
    each), the seed (same inputs -> same files), the image size (``mias`` writes
    ``height x height``) and the views per breast (``mias`` is MLO only).
    Output: the path to import (``out_dir`` itself, or ``out_dir/labels.csv`` for ``csv``).
    Raises ``ValueError`` for an unknown format or class and ``FileExistsError`` when ``out_dir``
    exists and is not empty; the directory appears only complete (built in a staging dir).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    counts = written_counts(fmt, n_per_class)
    if sum(counts.values()) == 0:
        raise ValueError(
            f"nothing to write: no images requested for {fmt}"
            + (" (it has no normal images)" if fmt in WITHOUT_NORMALS else "")
        )
    if fmt == "mias" and mias.mias_refnums_needed(counts) > mias.MAX_REFNUM:
        raise ValueError("mias refnums have three digits (mdb001..mdb999): ask for fewer images")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir}: exists and is not an empty directory; not overwriting")
        out_dir.rmdir()  # an empty directory is taken over (the staging rename needs it gone)
    with staging_dir(out_dir) as scratch:
        entry = WRITERS[fmt](scratch, counts, seed, height, width, views)
        # The mark `mammocad data import` carries into the dataset (and model cards read back).
        atomic_write_text(scratch / SYNTHETIC_MARKER, json.dumps(marker_content(fmt, seed), indent=2) + "\n")
    return out_dir / entry.relative_to(scratch)


# The writers' helpers that lived here before each format had its module (tests import them).
_write_dicom = cbis_ddsm.write_dicom

__all__ = [
    "DEFAULT_COUNTS",
    "FOLDERS_PATIENT_REGEX",
    "FORMATS",
    "IMPORTERS_WITHOUT_WRITER",
    "WITHOUT_NORMALS",
    "WRITERS",
    "PlannedImage",
    "Writer",
    "plan_images",
    "write_synthetic_dataset",
    "written_counts",
]
