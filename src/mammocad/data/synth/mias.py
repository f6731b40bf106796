"""The MIAS MiniMammographic Database layout (SYNTHETIC), read back by ``mammocad data import mias``
(:func:`mammocad.data.importers.mias.import_mias`).

Square ``height x height`` P5 PGMs, MLO only; ``Info.txt`` with a MIAS-style header
and rows ``REFNUM BG CLASS SEVERITY X Y RADIUS`` (one per lesion, BOTTOM-left origin; round and
oval masses are CIRC, spiculated SPIC, irregular MISC, calcifications CALC, some CALC rows
without coordinates as in the real file); refnums (2k-1, 2k) are the right and left breast of
patient k.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammocad.data.synth.plan import derived_seed, plan_images, planned_cases
from mammocad.io import atomic_write_bytes, atomic_write_text

IMPORTER_FORMAT = "mias"
#: MIAS refnums have three digits (mdb001..mdb999).
MAX_REFNUM = 999

_MIAS_CLASS = {"round": "CIRC", "oval": "CIRC", "spiculated": "SPIC", "irregular": "MISC"}
_MIAS_BACKGROUND = {"A": "F", "B": "G", "C": "G", "D": "D"}
_MIAS_HEADER = """\
              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database

   SYNTHETIC PHANTOM IMAGES written by `mammocad synth` in the layout of the
   MIAS MiniMammographic Database. They are not patient images.

=================================================================

INFORMATION:

This file lists the films in the database and provides
appropriate details as follows:

1st column: MIAS database reference number.

2nd column: Character of background tissue:
                F - Fatty
                G - Fatty-glandular
                D - Dense-glandular

3rd column: Class of abnormality present:
                CALC - Calcification
                CIRC - Well-defined/circumscribed masses
                SPIC - Spiculated masses
                MISC - Other, ill-defined masses
                ARCH - Architectural distortion
                ASYM - Asymmetry
                NORM - Normal

4th column: Severity of abnormality;
                B - Benign
                M - Malignant

5th,6th columns: x,y image-coordinates of centre of abnormality.

7th column: Approximate radius (in pixels) of a circle enclosing
            the abnormality.

NOTES
=====
1) The list is arranged in pairs of films, where each pair
   represents the left (even filename numbers) and right mammograms
   (odd filename numbers) of a single patient.

2) The size of ALL the images is {size} pixels x {size} pixels.

3) When calcifications are present, centre locations and radii
   apply to clusters rather than individual calcifications.
   Coordinate system origin is the bottom-left corner.

4) In some cases calcifications are widely distributed throughout
   the image rather than concentrated at a single site. In these
   cases centre locations and radii are inappropriate and have
   been omitted.

=================================================================

"""


def write_mias(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item, case in planned_cases(counts, seed, height, height, ("MLO",)):
        number = 2 * item.patient - (1 if item.laterality == "R" else 0)  # (odd, even) = (right, left)
        ref = f"mdb{number:03d}"
        write_pgm(out / f"{ref}.pgm", case.pixels)
        background = _MIAS_BACKGROUND[case.density]
        if not case.lesions:
            rows.append((number, f"{ref} {background} NORM "))
        severity = "B" if case.pathology == "benign" else "M"
        for k, lesion in enumerate(case.lesions):
            cls = _MIAS_CLASS.get(lesion.shape, "CALC")
            if cls == "CALC" and derived_seed(seed, ref, k) % 4 == 0:
                rows.append((number, f"{ref} {background} CALC {severity}"))  # spread: no coordinates (NOTE 4)
                continue
            x, y = lesion.center
            bottom_up_y = (height - 1) - round(y)
            rows.append(
                (number, f"{ref} {background} {cls} {severity} {round(x)} {bottom_up_y} {max(1, round(lesion.radius))}")
            )
    rows.sort(key=lambda pair: pair[0])  # by refnum; stable, so the rows of one image keep their order
    body = "\n".join(row for _, row in rows)
    atomic_write_text(out / "Info.txt", _MIAS_HEADER.replace("{size}", str(height)) + body + "\n")
    return out


def mias_refnums_needed(counts: dict[str, int]) -> int:
    """The largest refnum a MIAS layout of ``counts`` uses (two refnums per patient)."""
    patients = max(item.patient for item in plan_images(counts, 0, ("MLO",)))
    return 2 * patients


def write_pgm(path: Path, pixels: np.ndarray) -> None:
    height, width = pixels.shape
    atomic_write_bytes(path, f"P5\n{width} {height}\n255\n".encode() + pixels.astype(np.uint8).tobytes())
