"""MIAS importer: on files written here in the native format, and on the real dev subset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammocad.data.images import read_image
from mammocad.data.importers import import_dataset
from mammocad.data.manifest import lesions_of, read_classes, read_manifest, resolve_path
from mammocad.errors import DatasetError
from tests.conftest import textured, write_pgm

INFO = """\
              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database
=================================================================
mdb001 G CIRC B 40 20 8
mdb002 F NORM
mdb003 D CALC M
mdb003 D SPIC M 10 50 5
mdb004 F CIRC X 1 2 3
mdb005 F NORM
mdb006 D ARCH B 30 30 6
"""


@pytest.fixture
def mias_source(tmp_path):
    src = tmp_path / "mias"
    src.mkdir()
    (src / "Info.txt").write_text(INFO)
    for k in range(1, 7):
        write_pgm(src / f"mdb{k:03d}.pgm", textured(k, (64, 64)))
    (src / "mdb005.pgm").write_bytes(b"P5\n64 64\n255\n" + bytes(10))  # truncated
    write_pgm(src / "mdb009.pgm", textured(9, (64, 64)))  # no Info.txt row
    return src


def test_import_mias_labels_patients_and_skips(mias_source, tmp_path):
    summary = import_dataset("mias", mias_source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds").set_index("image_id")
    assert read_classes(tmp_path / "ds") == ["normal", "benign", "malignant"]
    assert sorted(frame.index) == ["mdb001", "mdb002", "mdb003", "mdb006"]
    assert frame.loc["mdb003", "label_name"] == "malignant"  # any malignant row wins
    assert frame.loc["mdb002", "label_name"] == "normal" and frame.loc["mdb002", "n_lesions"] == 0
    # (odd, even) refnums are one patient: right then left breast
    assert frame.loc["mdb001", "patient_id"] == frame.loc["mdb002", "patient_id"]
    assert frame.loc["mdb001", "laterality"] == "R" and frame.loc["mdb002", "laterality"] == "L"
    assert frame.loc["mdb003", "patient_id"] != frame.loc["mdb001", "patient_id"]
    reasons = {
        s["item"].split("/")[-1]: s["reason"]
        for s in json.loads((tmp_path / "ds/import_summary.json").read_text())["skipped"]
    }
    assert "truncated" in reasons["mdb005.pgm"]
    assert "no row in Info.txt" in reasons["mdb009.pgm"]
    assert "severity" in reasons["Info.txt:8"]  # mdb004 has severity X
    assert summary.n_images == 4 and summary.per_class == {"normal": 1, "benign": 2, "malignant": 1}


def test_import_mias_converts_bottom_left_origin_and_draws_circles(mias_source, tmp_path):
    import_dataset("mias", mias_source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds").set_index("image_id")
    (lesion,) = lesions_of(frame.loc["mdb001"])
    # X=40, Y=20 from the bottom of a 64-row image -> row 63 - 20 = 43 from the top
    assert (lesion.center_x, lesion.center_y, lesion.radius) == (40, 43, 8)
    assert (lesion.x0, lesion.y0, lesion.x1, lesion.y1) == (32, 35, 49, 52)
    mask = read_image(resolve_path(tmp_path / "ds", lesion.mask_path)).pixels
    assert mask[43, 40] == 255 and mask[43, 48] == 255 and mask[43, 49] == 0 and mask[20, 40] == 0
    assert int((mask > 0).sum()) == pytest.approx(np.pi * 8**2, rel=0.1)
    # a calcification row without coordinates keeps the lesion, without geometry
    calc, spic = lesions_of(frame.loc["mdb003"])
    assert calc.lesion_type == "CALC" and not calc.has_box and calc.mask_path is None
    assert spic.lesion_type == "SPIC" and spic.center_y == 63 - 50
    assert frame.loc["mdb003", "abnormality"] == "CALC+SPIC"


def test_import_mias_without_info_file_fails_cleanly(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    with pytest.raises(DatasetError, match="no Info.txt"):
        import_dataset("mias", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob(".ds.*"))  # no half-written staging directory left


def test_import_refuses_existing_destination(mias_source, tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(FileExistsError, match="never overwrites"):
        import_dataset("mias", mias_source, tmp_path / "ds")


@pytest.mark.realdata
def test_real_mias_dev_subset(mias_dir, tmp_path):
    summary = import_dataset("mias", mias_dir, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    assert summary.n_images == 160 and not summary.skipped
    assert frame["label_name"].value_counts().to_dict() == {"normal": 102, "benign": 32, "malignant": 26}
    assert frame["patient_id"].nunique() == 80
    assert (frame.groupby("patient_id")["laterality"].apply(lambda s: sorted(s)) == [["L", "R"]] * 80).all()
    # Lesion circles are in the right place only with the bottom-left origin converted: a lesion is
    # brighter than the ring around it (radius r..2r). Measured on this subset: 98% of circles with
    # the conversion, 73% at the vertically mirrored (unconverted) position.
    contrast, mirrored = [], []
    for _, row in frame[frame["n_lesions"] > 0].iterrows():
        pixels = read_image(row["image_path"]).pixels.astype(float)
        yy, xx = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
        for lesion in lesions_of(row):
            if lesion.radius is None:
                continue
            for cy, out in ((lesion.center_y, contrast), (pixels.shape[0] - 1 - lesion.center_y, mirrored)):
                dist2 = (xx - lesion.center_x) ** 2 + (yy - cy) ** 2
                ring = (dist2 > lesion.radius**2) & (dist2 <= (2 * lesion.radius) ** 2)
                out.append(pixels[dist2 <= lesion.radius**2].mean() - pixels[ring].mean())
    contrast, mirrored = np.array(contrast), np.array(mirrored)
    assert len(contrast) >= 55
    assert (contrast > 0).mean() > 0.95
    assert (contrast > 0).mean() - (mirrored > 0).mean() > 0.15
