"""Every synthetic format imports with the matching importer: exact counts, patients, masks, nothing skipped."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.manifest import lesions_of, read_manifest, resolve_path
from mammocad.data.provenance import dataset_provenance
from mammocad.data.synth import FORMATS, generate_case, write_synthetic_dataset
from mammocad.data.synth.writers import FOLDERS_PATIENT_REGEX, plan_images, written_counts

COUNTS = {"normal": 5, "benign": 4, "malignant": 3}
SIZE = {"height": 128, "width": 96}
SEED = 5
OPTIONS = {"folders": {"patient_regex": FOLDERS_PATIENT_REGEX}, "kaumds": {"include_birads2": True}}
#: Formats whose manifest keeps the synthetic patients (ddsm patches record none).
WITH_PATIENTS = {"mias", "folders", "csv", "kaumds", "cbis-ddsm", "bcdr"}
#: Formats that carry lesion outlines (MIAS: circles; spread calcification rows have none).
WITH_MASKS = {"mias", "csv", "cbis-ddsm", "bcdr"}


def expected_labels(fmt: str, source: Path) -> dict[str, int]:
    counts = written_counts(fmt, COUNTS)
    if fmt == "ddsm-tfrecord":  # default label field: label_normal
        return {"negative": counts["normal"], "abnormal": counts["benign"] + counts["malignant"]}
    if fmt == "kaumds":  # BI-RADS: every image of a BIRAD k folder is one birads_k image
        return {f"birads_{d.name.split()[-1]}": len(list(d.glob("*.jpg"))) for d in source.glob("BIRAD *")}
    return {name: count for name, count in counts.items() if count}


def image_mask_exists(row: pd.Series, dataset: Path) -> bool:
    paths = [row["mask_path"]] + [lesion.mask_path for lesion in lesions_of(row)]
    return any(path is not None and resolve_path(dataset, path).exists() for path in paths if isinstance(path, str))


@pytest.mark.parametrize("fmt", FORMATS)
def test_synthetic_format_round_trip(fmt, tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", fmt, n_per_class=COUNTS, seed=SEED, **SIZE)
    summary = import_dataset(fmt, source, tmp_path / "ds", **OPTIONS.get(fmt, {}))
    frame = read_manifest(tmp_path / "ds")

    assert summary.skipped == []
    assert (
        summary.synthetic and dataset_provenance(tmp_path / "ds")["synthetic"]
    )  # the SYNTHETIC.json mark carried over
    assert frame["label_name"].value_counts().to_dict() == expected_labels(fmt, source)
    if fmt in ("mias", "folders", "csv", "cbis-ddsm", "bcdr"):
        assert frame["pathology"].value_counts().to_dict() == expected_labels(fmt, source)

    views = ("MLO",) if fmt == "mias" else ("CC", "MLO")
    plan = plan_images(written_counts(fmt, COUNTS), SEED, views)
    if fmt in WITH_PATIENTS:
        # The importer's patients are the synthetic ones: same number, same images per patient.
        assert frame["patient_id"].nunique() == len({item.patient for item in plan})
        planned_sizes = sorted(Counter(item.patient for item in plan).values())
        assert sorted(frame.groupby("patient_id").size().tolist()) == planned_sizes
        if fmt not in ("cbis-ddsm", "bcdr"):  # with normals: some patient has both kinds of image
            kinds = frame.groupby("patient_id")["label_name"].nunique()
            assert (kinds > 1).any()

    abnormal = frame[frame["n_lesions"] > 0]
    if fmt in WITH_MASKS:
        with_mask = abnormal.apply(image_mask_exists, axis=1, dataset=tmp_path / "ds")
        if fmt == "mias":  # only spread-calcification rows come without a circle
            assert with_mask.mean() > 0.5
        else:
            assert with_mask.all()
    if fmt != "kaumds" and fmt != "folders":
        assert len(abnormal) == sum(count for name, count in written_counts(fmt, COUNTS).items() if name != "normal")


def test_mias_coordinates_come_back_top_left(tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", "mias", n_per_class=COUNTS, seed=SEED, **SIZE)
    info = (source / "Info.txt").read_text()
    assert "MiniMammographic Database" in info and "SYNTHETIC" in info
    assert (source / "mdb001.pgm").read_bytes().startswith(b"P5\n128 128\n255\n")
    import_dataset("mias", source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds").set_index("image_id")
    height = SIZE["height"]
    compared = 0
    for item in plan_images(written_counts("mias", COUNTS), SEED, ("MLO",)):
        number = 2 * item.patient - (1 if item.laterality == "R" else 0)
        row = frame.loc[f"mdb{number:03d}"]
        assert row["laterality"] == item.laterality and row["pathology"] == item.pathology
        case = generate_case(item.seed, item.pathology, "MLO", item.laterality, height, height, density=item.density)
        imported = [lesion for lesion in lesions_of(row) if lesion.center_x is not None]
        for lesion in imported:  # every circle sits on one of the drawn lesions
            distance = min(np.hypot(lesion.center_x - c.center[0], lesion.center_y - c.center[1]) for c in case.lesions)
            assert distance <= 1.0
            compared += 1
    assert compared >= 4


def test_folders_names_and_csv_masks_match_the_phantom(tmp_path):
    source = write_synthetic_dataset(tmp_path / "folders", "folders", n_per_class=COUNTS, seed=SEED, **SIZE)
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
    assert names[0].startswith("Benign/P0001_CC_") and all(
        n.split("/")[0] in ("Normal", "Benign", "Malignant") for n in names
    )

    csv_path = write_synthetic_dataset(tmp_path / "csv", "csv", n_per_class=COUNTS, seed=SEED, **SIZE)
    table = pd.read_csv(csv_path)
    assert list(table.columns[:6]) == ["path", "label", "patient_id", "mask_path", "laterality", "view"]
    assert table["mask_path"].notna().sum() == COUNTS["benign"] + COUNTS["malignant"]
    import_dataset("csv", csv_path, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    assert set(frame["laterality"]) == {"L", "R"} and set(frame["view"]) == {"CC", "MLO"}


def test_ddsm_finer_labels_and_official_split(tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", "ddsm-tfrecord", n_per_class=COUNTS, seed=SEED, **SIZE)
    assert sorted(p.name for p in source.iterdir()) == [
        "SYNTHETIC.json",  # the synthetic marker (model cards read it back through the import)
        "test_data.npy",
        "test_labels.npy",
        "training10_0.tfrecords",
    ]
    patches = np.load(source / "test_data.npy", allow_pickle=False)
    assert patches.dtype == np.uint8 and patches.shape[1:] == (96, 96)  # square: min(height, width)
    import_dataset("ddsm-tfrecord", source, tmp_path / "ds", label_field="label")
    frame = read_manifest(tmp_path / "ds")
    names = frame["label_name"].value_counts().to_dict()
    assert names.get("negative") == COUNTS["normal"]
    assert sum(v for k, v in names.items() if k.startswith("benign")) == COUNTS["benign"]
    assert sum(v for k, v in names.items() if k.startswith("malignant")) == COUNTS["malignant"]
    assert frame["official_split"].value_counts().to_dict() == {"train": 10, "test": 2}


def test_kaumds_birads2_rows_are_skipped_by_default(tmp_path):
    counts = {"normal": 2, "benign": 12, "malignant": 2}
    source = write_synthetic_dataset(tmp_path / "src", "kaumds", n_per_class=counts, seed=1, **SIZE)
    sheet = pd.read_excel(source / "KAU-BCMD.xlsx")
    assert "Patient age " in sheet.columns and "Percentage of\n granular tissue(density)" in sheet.columns
    assert sheet["Image path"].str.endswith(".dcm").all() and sheet["Image path"].str.contains("_ ").all()
    birads2 = len(list((source / "BIRAD 2").glob("*.jpg")))
    assert birads2 > 0
    summary = import_dataset("kaumds", source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    assert len(frame) == sum(counts.values()) - birads2 and "birads_2" not in set(frame["label_name"])
    assert len(summary.skipped) == birads2 and all("BI-RADS 2 excluded" in s.reason for s in summary.skipped)


def test_cbis_tree_is_tcia_like_and_16_bit(tmp_path):
    import pydicom

    source = write_synthetic_dataset(tmp_path / "src", "cbis-ddsm", n_per_class=COUNTS, seed=SEED, **SIZE)
    table = pd.read_csv(source / "mass_case_description_train_set.csv")
    listed = table["image file path"].iloc[0]
    assert not (source / listed).exists() and not (source / "CBIS-DDSM" / listed).exists()  # as in TCIA downloads
    assert (source / "CBIS-DDSM" / listed.split("/")[0]).is_dir()
    full = next((source / "CBIS-DDSM").rglob("*full mammogram images*/1-1.dcm"))
    ds = pydicom.dcmread(full)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert ds.BitsStored == 16 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.max() > 255
    import_dataset("cbis-ddsm", source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    assert set(frame["bits_stored"]) == {16} and set(frame["official_split"]) <= {"train", "test"}
    assert (frame["n_lesions"] >= 1).all()


def test_bcdr_outlines_rebuild_the_lesion_masks(tmp_path):
    source = write_synthetic_dataset(
        tmp_path / "src", "bcdr", n_per_class={"benign": 2, "malignant": 2}, seed=SEED, **SIZE
    )
    outlines = pd.read_csv(source / "bcdr_synthetic_outlines.csv")
    assert set(outlines["image_view"]) <= {"RCC", "LCC", "RO", "LO"}
    import_dataset("bcdr", source, tmp_path / "ds")
    frame = read_manifest(tmp_path / "ds")
    plan = plan_images(written_counts("bcdr", {"benign": 2, "malignant": 2}), SEED, ("CC", "MLO"))
    for item in plan:
        case = generate_case(item.seed, item.pathology, item.view, item.laterality, **SIZE, density=item.density)
        row = frame[
            (frame["patient_id"] == f"bcdr-{item.patient}")
            & (frame["laterality"] == item.laterality)
            & (frame["view"] == item.view)
        ]
        assert len(row) == 1
        mask_path = resolve_path(tmp_path / "ds", row["mask_path"].iloc[0])
        rebuilt = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
        truth = case.lesion_mask
        assert (rebuilt & truth).sum() / (rebuilt | truth).sum() > 0.85  # polygon vs pixel mask


def test_two_imports_of_one_source_are_byte_identical_whatever_the_hash_seed(tmp_path):
    """Label numbers and row order must never depend on Python's per-process string hashing
    (BI-RADS 4a/4b/4c once came out in set order): import every format twice, in two processes
    with different ``PYTHONHASHSEED``, and compare the files byte for byte."""
    import os
    import subprocess
    import sys

    sources = {
        fmt: write_synthetic_dataset(tmp_path / fmt, fmt, n_per_class=COUNTS, seed=SEED, **SIZE) for fmt in FORMATS
    }
    script = (
        "import json, sys\n"
        "from mammocad.data.importers import import_dataset\n"
        "jobs = json.loads(sys.argv[1])\n"
        "for fmt, source, out, options in jobs:\n"
        "    import_dataset(fmt, source, out, **options)\n"
    )
    for seed in ("1", "2"):
        jobs = [[fmt, str(src), str(tmp_path / f"{fmt}-{seed}"), OPTIONS.get(fmt, {})] for fmt, src in sources.items()]
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], check=True, env=env, timeout=600)
    for fmt in FORMATS:
        for name in ("manifest.parquet", "classes.json"):
            first, second = (tmp_path / f"{fmt}-{seed}" / name for seed in ("1", "2"))
            assert first.read_bytes() == second.read_bytes(), f"{fmt}: {name} differs between two imports"
