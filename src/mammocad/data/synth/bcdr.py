"""The BCDR outlines layout (SYNTHETIC), read back by ``mammocad data import bcdr``
(:func:`mammocad.data.importers.bcdr.import_bcdr`).

PNGs + ``bcdr_synthetic_outlines.csv`` with ``lw_x_points``/``lw_y_points`` polygons
traced from the lesion masks (cv2.findContours; one row per contour, rows of one lesion share
its ``lesion_id``). BCDR outlines have no normal class: normal images are not written.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammocad.data.synth.phantom import DENSITIES
from mammocad.data.synth.plan import derived_seed, planned_cases
from mammocad.io import atomic_write_png, atomic_write_text

IMPORTER_FORMAT = "bcdr"


def write_bcdr(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    images = []  # the image list BCDR ships beside the outlines (``bcdr_d01_img.csv``)
    lesion_id = 0
    for index, (item, case) in enumerate(planned_cases(counts, seed, height, width, views)):
        view = {"CC": "CC", "MLO": "O"}[case.view]
        filename = (
            f"patient_{item.patient}/study_{item.patient}/img_{item.patient}_{index + 1}_{case.laterality}{view}.png"
        )
        atomic_write_png(out / filename, case.pixels)
        code = f"{case.laterality}{view}"
        images.append(
            {
                "patient_id": item.patient,
                "study_id": item.patient,
                "series": 1,
                "image_filename": f" {filename}",
                "image_type_name": code,
                "image_type_id": ("RCC", "LCC", "RO", "LO").index(code),
                "age": 38 + derived_seed(seed, "age", item.patient) % 40,
                "density": DENSITIES.index(case.density) + 1,
            }
        )
        for lesion in case.lesions:
            lesion_id += 1
            contours, _ = cv2.findContours(lesion.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outlines = [contour[:, 0, :] for contour in contours if len(contour) >= 3]
            if not outlines:  # a sliver too thin to trace: its box stands in for the outline
                x0, y0, x1, y1 = lesion.box
                outlines = [np.array([[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]])]
            for segmentation, outline in enumerate(outlines, start=1):  # one row per polygon, as in BCDR
                rows.append(
                    {
                        "patient_id": item.patient,
                        "study_id": item.patient,
                        "series": 1,
                        "lesion_id": lesion_id,
                        "segmentation_id": lesion_id * 100 + segmentation,
                        "image_view": f"{case.laterality}{view}",
                        "image_filename": f" {filename}",  # real cells carry a leading space
                        "mammography_type": "SYNTHETIC",
                        "mammography_nodule": int(lesion.kind == "mass"),
                        "mammography_calcification": int(lesion.shape == "coarse"),
                        "mammography_microcalcification": int(lesion.shape == "clustered-fine"),
                        "lw_x_points": " ".join(str(int(x)) for x in outline[:, 0]),
                        "lw_y_points": " ".join(str(int(y)) for y in outline[:, 1]),
                        "classification": " Benign" if case.pathology == "benign" else " Malign ",
                        "density": DENSITIES.index(case.density) + 1,
                        "age": 38 + derived_seed(seed, "age", item.patient) % 40,
                    }
                )
    atomic_write_text(out / "bcdr_synthetic_outlines.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / "bcdr_synthetic_img.csv", pd.DataFrame(images).to_csv(index=False))
    return out
