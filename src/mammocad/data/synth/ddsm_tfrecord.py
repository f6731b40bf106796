"""The Kaggle DDSM TFRecord patches (SYNTHETIC), read back by ``mammocad data import ddsm-tfrecord``
(:func:`mammocad.data.importers.ddsm_tfrecord.import_ddsm_tfrecord`).

Square patches (side ``min(height, width)``) cut around the first lesion (or
the breast's centre for normals), ``label`` 0 negative, 1 benign calcification, 2 benign mass,
3 malignant calcification, 4 malignant mass, and ``label_normal``; every fifth patch goes into
the ``test_data.npy`` / ``test_labels.npy`` pair instead of the TFRecord file. Patients are not
part of this format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammocad.data.synth.phantom import SynthCase
from mammocad.data.synth.plan import planned_cases

IMPORTER_FORMAT = "ddsm-tfrecord"

_DDSM_CODE = {
    ("benign", "calcification"): 1,
    ("benign", "mass"): 2,
    ("malignant", "calcification"): 3,
    ("malignant", "mass"): 4,
}


def _ddsm_code(case: SynthCase) -> int:
    """The Kaggle DDSM finer label of a patch centred on the case's first lesion (0 = negative)."""
    return _DDSM_CODE[(case.pathology, case.lesions[0].kind)] if case.lesions else 0


def _square_patch(case: SynthCase, side: int) -> np.ndarray:
    """A ``side x side`` patch around the first lesion (or the breast's centre for normals)."""
    if case.lesions:
        cx, cy = case.lesions[0].center
    else:
        ys, xs = np.nonzero(case.breast_mask)
        cx, cy = float(xs.mean()), float(ys.mean())
    height, width = case.pixels.shape
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return np.ascontiguousarray(case.pixels[y0 : y0 + side, x0 : x0 + side])


def write_ddsm_tfrecord(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    from tfrecord.writer import TFRecordWriter

    side = min(height, width)
    npy_data, npy_labels = [], []
    # TFRecordWriter writes straight to its path; inside the staging dir that is still atomic.
    writer = TFRecordWriter(str(out / "training10_0.tfrecords"))
    try:
        for position, (_, case) in enumerate(planned_cases(counts, seed, height, width, views)):
            patch, code = _square_patch(case, side), _ddsm_code(case)
            if position % 5 == 4:  # every fifth patch: the npy pair, so both parts hold every class
                npy_data.append(patch)
                npy_labels.append(code)
                continue
            writer.write(
                {"image": (patch.tobytes(), "byte"), "label": (code, "int"), "label_normal": (int(code > 0), "int")}
            )
    finally:
        writer.close()
    if npy_data:
        np.save(out / "test_data.npy", np.stack(npy_data))
        np.save(out / "test_labels.npy", np.array(npy_labels, dtype=np.int64))
    return out
