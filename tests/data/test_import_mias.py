"""MIAS importer: on files written here in the native format and in common copies (CSV tables,
PNG/JPEG/BMP/TIFF files, resized and cropped images), and on the real dev subset."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mammocad.data.images import read_image
from mammocad.data.importers import import_dataset
from mammocad.data.importers.mias import declared_size, parse_info
from mammocad.data.manifest import lesions_of, read_classes, read_manifest, resolve_path
from mammocad.errors import DatasetError
from tests.conftest import textured, write_pgm

INFO = """\
              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database
2) The size of ALL the images is 64 pixels x 64 pixels.
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
    assert "severity" in reasons["Info.txt:9"]  # mdb004 has severity X
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


CSV_ROWS = [
    "mdb001,G,CIRC,B,535,425,197",
    "mdb002,F,NORM,,,,",
    "mdb003,D,CALC,M,NaN,NaN,NaN",
    "mdb004,D,SPIC,M,10,50,5",
]


@pytest.mark.parametrize(
    ("header", "sep"),
    [
        ("REFNUM,BG,CLASS,SEVERITY,X,Y,RADIUS\n", ","),
        ("", ","),
        ("REFNUM;BG;CLASS;SEVERITY;X;Y;RADIUS\n", ";"),
        ("", "\t"),
    ],
)
def test_info_as_csv_reads_like_the_native_file(tmp_path, header, sep):
    path = tmp_path / "Info.csv"
    path.write_text(header + "\n".join(row.replace(",", sep) for row in CSV_ROWS) + "\n")
    rows = parse_info(path)
    native = tmp_path / "Info.txt"
    native.write_text("mdb001 G CIRC B 535 425 197\nmdb002 F NORM\nmdb003 D CALC M\nmdb004 D SPIC M 10 50 5\n")
    expected = parse_info(native)
    assert [(r.refnum, r.background, r.abnormality, r.severity, r.x, r.y, r.radius) for r in rows] == [
        (r.refnum, r.background, r.abnormality, r.severity, r.x, r.y, r.radius) for r in expected
    ]
    assert rows[0].line_no == (2 if header else 1)


def test_info_file_without_rows_is_an_error_naming_it(tmp_path):
    src = tmp_path / "mias"
    src.mkdir()
    (src / "Info.txt").write_text("REFNUM BG CLASS SEVERITY X Y RADIUS\n001|G|CIRC|B|535|425|197\n")
    write_pgm(src / "mdb001.pgm", textured(1, (64, 64)))
    with pytest.raises(DatasetError, match=r"Info.txt: no MIAS annotation rows found; a row looks like 'mdb001 G CIRC"):
        import_dataset("mias", src, tmp_path / "ds")


def test_declared_size_and_native_size_option(mias_source, tmp_path):
    assert declared_size(mias_source / "Info.txt") == 64
    # told that the coordinates refer to 128x128, the 64x64 files are taken as halved copies
    summary = import_dataset("mias", mias_source, tmp_path / "ds", native_size=128)
    (lesion,) = lesions_of(read_manifest(tmp_path / "ds").set_index("image_id").loc["mdb001"])
    assert (lesion.center_x, lesion.center_y, lesion.radius) == (19.75, (127 - 20 + 0.5) / 2 - 0.5, 4)
    assert any(w.startswith("4 image(s) are square but not 128x128") for w in summary.warnings)


@pytest.fixture
def mias_copy(tmp_path):
    """A Kaggle-style copy: Info as CSV with a header, files in several formats and sizes."""
    src = tmp_path / "mias-copy"
    src.mkdir()
    (src / "Info.csv").write_text(
        "REFNUM,BG,CLASS,SEVERITY,X,Y,RADIUS\n"
        "mdb001,G,CIRC,B,512,256,64\n"
        "mdb002,F,NORM,,,,\n"
        "mdb003,D,SPIC,M,100,900,40\n"
        "mdb004,F,NORM,,,,\n"
        "mdb005,F,CALC,B,,,\n"
        "mdb006,G,NORM,,,,\n"
    )
    # mdb001: a native 1024x1024 film with a bright disc where the row says, shrunk to 256x256, as JPEG
    native = textured(1, (1024, 1024)) // 4
    cv2.circle(native, (512, 1023 - 256), 64, 250, -1)
    assert cv2.imwrite(str(src / "mdb001.jpg"), cv2.resize(native, (256, 256), interpolation=cv2.INTER_AREA))
    assert cv2.imwrite(str(src / "mdb002.png"), textured(2, (200, 256)))  # cropped, but NORM
    write_pgm(src / "mdb003.pgm", textured(3, (256, 200)))  # cropped, with a lesion
    (src / "mdb004.gif").write_bytes(b"GIF89a")  # only in an unsupported format
    assert cv2.imwrite(str(src / "mdb005.bmp"), textured(5, (1024, 1024)))  # native size
    assert cv2.imwrite(str(src / "mdb005.jpeg"), textured(55, (256, 256)))  # a second copy
    assert cv2.imwrite(str(src / "MDB007.TIF"), textured(7, (512, 512)))  # no row
    return src


def test_import_mias_copies_in_other_formats_and_sizes(mias_copy, tmp_path):
    summary = import_dataset("mias", mias_copy, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds").set_index("image_id")
    assert sorted(frame.index) == ["mdb001", "mdb002", "mdb005"]
    assert summary.per_class == {"normal": 1, "benign": 2}
    assert frame.loc["mdb001", "file_format"] == "jpeg" and frame.loc["mdb005", "file_format"] == "bmp"

    # mdb001: square 256x256, so a uniform resize: the coordinates scale by 256/1024
    (lesion,) = lesions_of(frame.loc["mdb001"])
    assert (lesion.center_x, lesion.center_y, lesion.radius) == (127.625, 191.375, 16)
    assert json.loads(frame.loc["mdb001", "meta"])["coordinate_scale"] == 0.25
    pixels = read_image(frame.loc["mdb001", "image_path"]).pixels
    ys, xs = np.nonzero(pixels > 150)  # the disc drawn on the native film lands on the scaled circle
    assert abs(xs.mean() - lesion.center_x) < 0.5 and abs(ys.mean() - lesion.center_y) < 0.5
    mask = read_image(resolve_path(tmp_path / "ds", lesion.mask_path)).pixels
    assert mask.shape == (256, 256) and (mask > 0).sum() == pytest.approx(np.pi * 16**2, rel=0.05)
    (calc,) = lesions_of(frame.loc["mdb005"])  # native size: nothing to scale, no coordinates anyway
    assert calc.lesion_type == "CALC" and "coordinate_scale" not in json.loads(frame.loc["mdb005", "meta"])
    assert json.loads(frame.loc["mdb002", "meta"])["not_native_size"] is True

    reasons = {s.item.rsplit("/", 1)[-1]: s.reason for s in summary.skipped}
    assert reasons["mdb003.pgm"].startswith("not 1024x1024 but 200x256 (cropped copy?): lesion coordinates cannot")
    assert "found mdb004.gif" in reasons["mdb004"] and "supported" in reasons["mdb004"]
    assert reasons["mdb006"].startswith("listed in Info.csv but the image file is missing")
    assert reasons["mdb005.jpeg"] == "another copy of mdb005 is used (mdb005.bmp)"
    assert reasons["MDB007.TIF"] == "image has no row in Info.csv (no label)"
    assert len(summary.skipped) == 5
    assert any(w.startswith("1 image(s) are square but not 1024x1024 (e.g. mdb001: 256x256)") for w in summary.warnings)
    assert any(w.startswith("1 normal image(s) are not 1024x1024 and not square") for w in summary.warnings)


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
