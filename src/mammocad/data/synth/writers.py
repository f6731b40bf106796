"""Write a synthetic dataset in any format the importers read (so it also feeds their tests).

``write_synthetic_dataset(out_dir, fmt, ...)`` returns the path to hand to
``mammocad.data.importers.import_dataset(fmt, path, ...)``. All images are SYNTHETIC (see
:mod:`mammocad.data.synth.phantom`).

Patients: images are grouped two per patient within a class (CC and MLO of one breast, the
lesion drawn independently in each view), so patient-grouped splitting has something to group.
Per-format notes:

- ``mias``: square images, MLO only, ``Info.txt`` rows with BOTTOM-left origin coordinates,
  spread calcification clusters sometimes without coordinates (as in the real file); (odd, even)
  refnums form one patient (right, left breast).
- ``cbis-ddsm``, ``bcdr``: these sources have no normal images: normal counts are ignored.
- ``ddsm-tfrecord``: square patches cropped around the lesion (or the breast, for normals); the
  last fifth of the patches goes into a ``test_data.npy`` / ``test_labels.npy`` pair.
- ``kaumds``: labels are BI-RADS (normal -> 1, benign -> 3, malignant -> 4 or 5); sheet paths end
  in ``.dcm`` and carry a stray space, as in the real sheet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammocad.data.synth.phantom import SynthCase, generate_case
from mammocad.io import atomic_write_png, staging_dir

FORMATS = ("mias", "folders", "csv", "ddsm-tfrecord", "kaumds", "cbis-ddsm", "bcdr")
DEFAULT_COUNTS = {"normal": 20, "benign": 20, "malignant": 20}


@dataclass
class SynthImage:
    """One image of the synthetic dataset with its patient and position in the dataset."""

    index: int
    patient: int
    case: SynthCase


def _case_seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"mammocad-synth:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def synth_images(
    n_per_class: dict[str, int],
    seed: int,
    height: int,
    width: int,
    views: tuple[str, ...] = ("CC", "MLO"),
    square: bool = False,
    bits: int = 8,
) -> Iterator[SynthImage]:
    """Yield the dataset's images: exact counts per class, two views of one breast per patient."""
    index = 0
    patient = 0
    for pathology in ("normal", "benign", "malignant"):
        count = n_per_class.get(pathology, 0)
        for k in range(count):
            if k % len(views) == 0:
                patient += 1
                laterality = "LR"[_case_seed(seed, -patient) % 2]
            view = views[k % len(views)]
            side = height if square else width
            case = generate_case(_case_seed(seed, index), pathology, view, laterality, height, side, bits)
            yield SynthImage(index, patient, case)
            index += 1


def write_synthetic_dataset(
    out_dir: str | Path,
    fmt: str,
    n_per_class: dict[str, int] | None = None,
    seed: int = 0,
    height: int = 512,
    width: int = 384,
    views: tuple[str, ...] = ("CC", "MLO"),
) -> Path:
    """Write a synthetic dataset in ``fmt`` into the new directory ``out_dir``.

    Returns the path to import (``out_dir`` itself, or the CSV file for ``csv``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    counts = dict(DEFAULT_COUNTS if n_per_class is None else n_per_class)
    unknown = set(counts) - set(DEFAULT_COUNTS)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; synthetic classes are normal, benign, malignant")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: exists and is not empty; not overwriting")
    if out_dir.exists():
        out_dir.rmdir()
    writer = _WRITERS[fmt]
    with staging_dir(out_dir) as scratch:
        entry = writer(scratch, counts, seed, height, width, views)
    return out_dir / entry.relative_to(scratch) if entry != scratch else out_dir


# --- mias -----------------------------------------------------------------------------------

_MIAS_CLASS = {"round": "CIRC", "oval": "CIRC", "irregular": "MISC", "spiculated": "SPIC"}
_MIAS_BACKGROUND = {"A": "F", "B": "G", "C": "G", "D": "D"}
_MIAS_HEADER = """\
              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database
            (SYNTHETIC phantom images written by mammocad synth)
=================================================================
"""


def _write_mias(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    # MIAS pairs the right and left MLO of one patient as (odd, even) refnums.
    images = list(synth_images(counts, seed, height, width, views=("MLO",), square=True))
    for position, item in enumerate(images):
        number = position + 1
        case = generate_case(
            _case_seed(seed, item.index), item.case.pathology, "MLO", "R" if number % 2 else "L", height, height
        )
        ref = f"mdb{number:03d}"
        _write_pgm(out / f"{ref}.pgm", case.pixels)
        background = _MIAS_BACKGROUND[case.density]
        if not case.lesions:
            rows.append(f"{ref} {background} NORM")
        severity = "B" if case.pathology == "benign" else "M"
        for k, lesion in enumerate(case.lesions):
            cls = _MIAS_CLASS.get(lesion.shape, "CALC")
            if cls == "CALC" and (number + k) % 3 == 0:
                rows.append(f"{ref} {background} CALC {severity}")  # spread: no coordinates (*NOTE 3*)
                continue
            x, y = lesion.center
            rows.append(
                f"{ref} {background} {cls} {severity} {round(x)} {height - 1 - round(y)} {round(lesion.radius)}"
            )
    (out / "Info.txt").write_text(_MIAS_HEADER + "\n".join(rows) + "\n")
    return out


def _write_pgm(path: Path, pixels: np.ndarray) -> None:
    height, width = pixels.shape
    path.write_bytes(f"P5\n{width} {height}\n255\n".encode() + pixels.astype(np.uint8).tobytes())


# --- folders and csv ------------------------------------------------------------------------


def _name(item: SynthImage) -> str:
    return f"P{item.patient:04d}_{item.case.view}_{item.case.laterality}_{item.index:05d}"


def _write_folders(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    for item in synth_images(counts, seed, height, width, views):
        atomic_write_png(out / item.case.pathology.capitalize() / f"{_name(item)}.png", item.case.pixels)
    return out


def _write_csv(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item in synth_images(counts, seed, height, width, views):
        name = _name(item)
        atomic_write_png(out / "images" / f"{name}.png", item.case.pixels)
        mask_path = ""
        if item.case.lesions:
            atomic_write_png(out / "masks" / f"{name}.png", item.case.lesion_mask.astype(np.uint8) * 255)
            mask_path = f"masks/{name}.png"
        rows.append(
            {
                "path": f"images/{name}.png",
                "label": item.case.pathology,
                "patient_id": f"P{item.patient:04d}",
                "mask_path": mask_path,
                "laterality": item.case.laterality,
                "view": item.case.view,
                "density": item.case.density,
            }
        )
    pd.DataFrame(rows).to_csv(out / "labels.csv", index=False)
    return out / "labels.csv"


# --- ddsm-tfrecord --------------------------------------------------------------------------

_DDSM_CODE = {("benign", "calcification"): 1, ("benign", "mass"): 2, ("malignant", "calcification"): 3}


def _ddsm_code(case: SynthCase) -> int:
    if not case.lesions:
        return 0
    return _DDSM_CODE.get((case.pathology, case.lesions[0].kind), 4)


def _patch(case: SynthCase, side: int) -> np.ndarray:
    """Square patch around the first lesion (or the breast's centre for normals)."""
    if case.lesions:
        cx, cy = case.lesions[0].center
    else:
        ys, xs = np.nonzero(case.breast_mask)
        cx, cy = float(xs.mean()), float(ys.mean())
    height, width = case.pixels.shape
    x0 = int(np.clip(cx - side / 2, 0, width - side))
    y0 = int(np.clip(cy - side / 2, 0, height - side))
    return case.pixels[y0 : y0 + side, x0 : x0 + side]


def _write_ddsm(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    from tfrecord.writer import TFRecordWriter

    side = min(height, width)
    items = list(synth_images(counts, seed, height, width, views))
    # Interleave classes so both the TFRecord part and the npy part hold every class.
    order = sorted(range(len(items)), key=lambda k: (k % 5 == 4, k))
    in_npy = {k for k in order if k % 5 == 4}
    writer = TFRecordWriter(str(out / "training10_0.tfrecords"))
    npy_data, npy_labels = [], []
    for k in order:
        case = items[k].case
        patch = np.ascontiguousarray(_patch(case, side))
        code = _ddsm_code(case)
        if k in in_npy:
            npy_data.append(patch)
            npy_labels.append(code)
        else:
            writer.write(
                {
                    "image": (patch.tobytes(), "byte"),
                    "label": (code, "int"),
                    "label_normal": (int(code > 0), "int"),
                }
            )
    writer.close()
    if npy_data:
        np.save(out / "test_data.npy", np.stack(npy_data))
        np.save(out / "test_labels.npy", np.array(npy_labels, dtype=np.int64))
    return out


# --- kaumds ---------------------------------------------------------------------------------


def _write_kaumds(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    rows = []
    start = date(2019, 1, 1)
    for item in synth_images(counts, seed, height, width, views):
        case = item.case
        birads = {"normal": 1, "benign": 3}.get(case.pathology, 4 + item.index % 2)
        patient = f"BC{700000 + item.patient:06d}"
        stem = f"2019_{patient}_ {case.view}_{case.laterality}"  # the real sheet's stray space
        folder = f"BIRAD {birads}"
        path = out / folder / f"{stem.replace(' ', '')}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buffer = cv2.imencode(".jpg", case.pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"{path}: JPEG encoding failed")
        path.write_bytes(buffer.tobytes())
        rows.append(
            {
                "Study date": pd.Timestamp(start + timedelta(days=item.patient)),
                "PatientID": patient,
                "Patient age ": 40 + item.patient % 35,
                "Breast type": {"A": "Fatty", "B": "Scattered", "C": "Heterogeneous", "D": "Dense"}[case.density],
                "Breast view": f"{case.view}_{case.laterality}",
                "Percentage of\n granular tissue(density)": {"A": "<25%", "B": "25-50%", "C": "50-75%", "D": ">75%"}[
                    case.density
                ],
                "Assesment": f"BIRAD {birads}",
                "Image path": f"{folder}/{stem}.dcm",
            }
        )
    pd.DataFrame(rows).to_excel(out / "KAU-BCMD.xlsx", index=False)
    return out


# --- cbis-ddsm ------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).hexdigest()
    return "1.3.6.1.4.1.9590.100.1.2." + str(int(digest, 16))


def _write_dicom(path: Path, pixels: np.ndarray, pseudonym: str, compress: bool) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name), pseudonym])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientName = pseudonym  # CBIS-DDSM puts its case name here; the reader never reads it out
    ds.PatientID = pseudonym
    ds.SeriesDescription = "SYNTHETIC"
    ds.set_pixel_data(pixels, "MONOCHROME2", 16 if pixels.dtype == np.uint16 else 8)
    if compress:
        ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    del pydicom


def _write_cbis(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    tree = out / "CBIS-DDSM"
    tables: dict[tuple[str, str], list[dict[str, object]]] = {}
    counts = {**counts, "normal": 0}
    test_patients = {p for p in range(1, 10_000) if _case_seed(seed, -p) % 5 == 0}
    for item in synth_images(counts, seed, height, width, views, bits=16):
        case = item.case
        split = "test" if item.patient in test_patients else "train"
        side = "LEFT" if case.laterality == "L" else "RIGHT"
        patient = f"P_{item.patient:05d}"
        kinds = {lesion.kind for lesion in case.lesions}
        for kind in sorted(kinds):
            prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{'Training' if split == 'train' else 'Test'}"
            case_name = f"{prefix}_{patient}_{side}_{case.view}"
            # TCIA folder names differ from the CSV's paths (dates and series numbers instead of UIDs).
            full = (
                tree
                / case_name
                / f"07-20-2016-DDSM-{item.index:05d}"
                / f"1.000000-full mammogram images-{item.index:05d}"
                / "1-1.dcm"
            )
            _write_dicom(full, case.pixels, case_name, compress=True)
            for abnormality_id, lesion in enumerate((les for les in case.lesions if les.kind == kind), start=1):
                roi = (
                    tree
                    / f"{case_name}_{abnormality_id}"
                    / f"08-29-2017-DDSM-{item.index:05d}"
                    / f"1.000000-ROI mask images-{item.index:05d}"
                )
                x0, y0, x1, y1 = lesion.box
                _write_dicom(roi / "1-1.dcm", case.pixels[y0:y1, x0:x1], case_name, compress=False)
                _write_dicom(roi / "1-2.dcm", lesion.mask.astype(np.uint8) * 255, case_name, compress=False)
                csv_case = f"{case_name}/{_uid(case_name, 'st')}/{_uid(case_name, 'se')}/000000.dcm"
                roi_case = f"{case_name}_{abnormality_id}/{_uid(case_name, abnormality_id, 'st')}/{_uid(case_name, abnormality_id)}"
                row: dict[str, object] = {
                    "patient_id": patient,
                    "breast_density" if kind == "mass" else "breast density": "ABCD".index(case.density) + 1,
                    "left or right breast": side,
                    "image view": case.view,
                    "abnormality id": abnormality_id,
                    "abnormality type": "mass" if kind == "mass" else "calcification",
                    "assessment": 3 if case.pathology == "benign" else 5,
                    "pathology": "BENIGN" if case.pathology == "benign" else "MALIGNANT",
                    "subtlety": 3,
                    "image file path": csv_case,
                    "cropped image file path": f"{roi_case}/000000.dcm",
                    "ROI mask file path": f"{roi_case}/000001.dcm\n",
                }
                if kind == "mass":
                    row.update(
                        {
                            "mass shape": lesion.shape.upper(),
                            "mass margins": "CIRCUMSCRIBED" if case.pathology == "benign" else "SPICULATED",
                        }
                    )
                else:
                    row.update(
                        {
                            "calc type": "PLEOMORPHIC" if case.pathology == "malignant" else "COARSE",
                            "calc distribution": "CLUSTERED",
                        }
                    )
                tables.setdefault(("mass" if kind == "mass" else "calc", split), []).append(row)
    for kind in ("mass", "calc"):
        descriptors = ["mass shape", "mass margins"] if kind == "mass" else ["calc type", "calc distribution"]
        density = "breast_density" if kind == "mass" else "breast density"
        columns = ["patient_id", density, "left or right breast", "image view", "abnormality id", "abnormality type",
                   *descriptors, "assessment", "pathology", "subtlety", "image file path",
                   "cropped image file path", "ROI mask file path"]  # fmt: skip
        for split in ("train", "test"):
            table = pd.DataFrame(tables.get((kind, split), []), columns=columns)
            table.to_csv(out / f"{kind}_case_description_{split}_set.csv", index=False)
    return out


# --- bcdr -----------------------------------------------------------------------------------


def _write_bcdr(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    counts = {**counts, "normal": 0}
    for item in synth_images(counts, seed, height, width, views):
        case = item.case
        view = {"CC": "CC", "MLO": "O"}[case.view]
        filename = (
            f"patient_{item.patient}/study_{item.patient}/img_{item.patient}_{item.index}_{case.laterality}{view}.png"
        )
        atomic_write_png(out / "images" / filename, case.pixels)
        for lesion_id, lesion in enumerate(case.lesions, start=1):
            contours, _ = cv2.findContours(lesion.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outline = max(contours, key=cv2.contourArea)[:, 0, :]
            if len(outline) < 3:
                x0, y0, x1, y1 = lesion.box
                outline = np.array([[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]])
            rows.append(
                {
                    "patient_id": item.patient,
                    "study_id": item.patient,
                    "series": 1,
                    "lesion_id": item.index * 10 + lesion_id,
                    "segmentation_id": item.index * 10 + lesion_id,
                    "image_view": f"{case.laterality}{view}",
                    "image_filename": f" images/{filename}",
                    "mammography_type": "SYNTHETIC",
                    "mammography_nodule": int(lesion.kind == "mass"),
                    "mammography_calcification": int(lesion.kind == "calcification"),
                    "mammography_microcalcification": int(lesion.shape == "clustered-fine"),
                    "lw_x_points": " ".join(str(int(x)) for x in outline[:, 0]),
                    "lw_y_points": " ".join(str(int(y)) for y in outline[:, 1]),
                    "classification": " Benign" if case.pathology == "benign" else "Malign ",
                    "density": "ABCD".index(case.density) + 1,
                    "age": 40 + item.patient % 35,
                }
            )
    pd.DataFrame(rows).to_csv(out / "bcdr_synthetic_outlines.csv", index=False)
    return out


_WRITERS = {
    "mias": _write_mias,
    "folders": _write_folders,
    "csv": _write_csv,
    "ddsm-tfrecord": _write_ddsm,
    "kaumds": _write_kaumds,
    "cbis-ddsm": _write_cbis,
    "bcdr": _write_bcdr,
}
