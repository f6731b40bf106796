"""Every synthetic format imports with the matching importer, counts intact."""

from __future__ import annotations

import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.manifest import read_manifest
from mammocad.data.synth import FORMATS, write_synthetic_dataset

COUNTS = {"normal": 4, "benign": 4, "malignant": 6}
EXPECTED = {
    "mias": {"normal": 4, "benign": 4, "malignant": 6},
    "folders": {"normal": 4, "benign": 4, "malignant": 6},
    "csv": {"normal": 4, "benign": 4, "malignant": 6},
    "ddsm-tfrecord": {"negative": 4, "abnormal": 10},
    "kaumds": {"birads_1": 4, "birads_3": 4, "birads_4": 3, "birads_5": 3},
    "cbis-ddsm": {"benign": 4, "malignant": 6},  # CBIS-DDSM has no normal images
    "bcdr": {"benign": 4, "malignant": 6},  # BCDR outlines have no normal images
}
WITH_MASKS = {"mias", "csv", "cbis-ddsm", "bcdr"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_synthetic_format_round_trip(fmt, tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", fmt, n_per_class=COUNTS, seed=5, height=128, width=96)
    summary = import_dataset(fmt, source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    assert summary.skipped == []
    assert frame["label_name"].value_counts().to_dict() == EXPECTED[fmt]
    if fmt not in ("folders", "ddsm-tfrecord"):  # these layouts carry no patient grouping
        assert frame["patient_id"].nunique() < len(frame)
    if fmt in WITH_MASKS:
        has_mask = frame["mask_path"].notna() | frame["lesions"].map(
            lambda ls: any(lesion["mask_path"] for lesion in ls)
        )
        abnormal = frame["n_lesions"] > 0
        assert has_mask[abnormal].mean() > 0.6
