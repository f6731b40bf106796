"""Class folders (SYNTHETIC), read back by ``mammocad data import folders``
(:func:`mammocad.data.importers.folders.import_folders`).

``Normal/``, ``Benign/``, ``Malignant/`` with ``P<patient>_<view>_<lat>.png``; the
patient key is recovered with ``patient_regex=r"^(P\\d+)_"``.
"""

from __future__ import annotations

from pathlib import Path

from mammocad.data.synth.plan import patient_view_stem, planned_cases
from mammocad.io import atomic_write_png

IMPORTER_FORMAT = "folders"
#: The ``patient_regex`` that recovers the patient key from the written file names.
FOLDERS_PATIENT_REGEX = r"^(P\d+)_"


def write_folders(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    for item, case in planned_cases(counts, seed, height, width, views):
        atomic_write_png(out / case.pathology.capitalize() / f"{patient_view_stem(item)}.png", case.pixels)
    return out
