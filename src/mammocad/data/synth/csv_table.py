"""A labels table (SYNTHETIC), read back by ``mammocad data import csv``
(:func:`mammocad.data.importers.csv_table.import_csv`).

``labels.csv`` (path, label, patient_id, mask_path, laterality, view, density, study_id)
with images and lesion-union masks as PNG; the CSV file is the path to import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammocad.data.synth.plan import patient_view_stem, planned_cases
from mammocad.io import atomic_write_png, atomic_write_text

IMPORTER_FORMAT = "csv"


def write_csv(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item, case in planned_cases(counts, seed, height, width, views):
        name = patient_view_stem(item)
        atomic_write_png(out / "images" / f"{name}.png", case.pixels)
        mask_path = ""
        if case.lesions:
            atomic_write_png(out / "masks" / f"{name}.png", case.lesion_mask.astype(np.uint8) * 255)
            mask_path = f"masks/{name}.png"
        rows.append(
            {
                "path": f"images/{name}.png",
                "label": case.pathology,
                "patient_id": f"P{item.patient:04d}",
                "mask_path": mask_path,
                "laterality": case.laterality,
                "view": case.view,
                "density": case.density,
                "study_id": f"P{item.patient:04d}-S1",
            }
        )
    atomic_write_text(out / "labels.csv", pd.DataFrame(rows).to_csv(index=False))
    return out / "labels.csv"
