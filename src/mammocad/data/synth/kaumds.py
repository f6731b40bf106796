"""The KAU-BCMD (KAUMDS) layout (SYNTHETIC), read back by ``mammocad data import kaumds``
(:func:`mammocad.data.importers.kaumds.import_kaumds`).

JPEGs in ``BIRAD k/`` + ``KAU-BCMD.xlsx`` with the real sheet's quirky columns,
``Image path`` ending in ``.dcm`` with a stray space; normal -> BI-RADS 1, benign -> 3 (every
fourth benign patient 2: import with ``include_birads2=True`` to keep those), malignant -> 4 or 5
(per patient). Labels of this format are BI-RADS.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import cv2
import pandas as pd

from mammocad.data.synth.plan import PlannedImage, derived_seed, planned_cases
from mammocad.io import atomic_write_bytes

IMPORTER_FORMAT = "kaumds"

_KAUMDS_BREAST_TYPE = {"A": "Fatty", "B": "Scattered fibroglandular", "C": "Heterogeneously dense", "D": "Dense"}
_KAUMDS_DENSITY = {"A": "<25%", "B": "25-50%", "C": "51-75%", "D": ">75%"}


def _kaumds_birads(item: PlannedImage, seed: int) -> int:
    """BI-RADS per patient: normal 1, benign 3 (every fourth benign patient 2), malignant 4 or 5."""
    if item.pathology == "normal":
        return 1
    if item.pathology == "benign":  # benign patients are numbered 1, 2, ... first (see plan_images)
        return 2 if item.patient % 4 == 0 else 3
    return 4 if derived_seed(seed, "birads", item.patient) % 2 == 0 else 5


def write_kaumds(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item, case in planned_cases(counts, seed, height, width, views):
        birads = _kaumds_birads(item, seed)
        patient = f"BC{700000 + item.patient:06d}"
        stem = f"2019_{patient}_ {case.view}_{case.laterality}"  # the real sheet's stray space
        folder = f"BIRAD {birads}"
        ok, buffer = cv2.imencode(".jpg", case.pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"{stem}: JPEG encoding failed")
        atomic_write_bytes(out / folder / f"{stem.replace(' ', '')}.jpg", buffer.tobytes())
        rows.append(
            {
                "Study date": pd.Timestamp(date(2019, 1, 1) + timedelta(days=item.patient)),
                "PatientID": patient,
                "Patient age ": 38 + derived_seed(seed, "age", item.patient) % 40,
                "Breast type": _KAUMDS_BREAST_TYPE[case.density],
                "Breast view": f"{case.view}_{case.laterality}",
                "Percentage of\n granular tissue(density)": _KAUMDS_DENSITY[case.density],
                "Assesment": f"BIRAD {birads}",
                "Image path": f"{folder}/{stem}.dcm",
            }
        )
    pd.DataFrame(rows).to_excel(out / "KAU-BCMD.xlsx", index=False)
    return out
