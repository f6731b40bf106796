"""Write a synthetic dataset in any format the importers read (so it also feeds their tests).

``write_synthetic_dataset(out_dir, fmt, ...)`` returns the path to hand to
``mammocad.data.importers.import_dataset(fmt, path, ...)``. All images are SYNTHETIC (see
:mod:`mammocad.data.synth.phantom` and ``docs/synthetic-data.md``).

Patients (:func:`plan_images`): the requested counts are exact per IMAGE class. A patient with a
finding has it in one breast, seen in every requested view (the lesion is drawn independently in
each view); that patient's other breast is imaged too, as normal images, while normal images are
still wanted. The remaining normal images form normal patients (both breasts, every view). So a
patient-grouped split has real work to do: one patient can hold normal and abnormal images.
The views of one patient share a BI-RADS density.

Per-format notes:

- ``mias``: square ``height x height`` P5 PGMs, MLO only; ``Info.txt`` with a MIAS-style header
  and rows ``REFNUM BG CLASS SEVERITY X Y RADIUS`` (one per lesion, BOTTOM-left origin; round and
  oval masses are CIRC, spiculated SPIC, irregular MISC, calcifications CALC, some CALC rows
  without coordinates as in the real file); refnums (2k-1, 2k) are the right and left breast of
  patient k.
- ``folders``: ``Normal/``, ``Benign/``, ``Malignant/`` with ``P<patient>_<view>_<lat>.png``; the
  patient key is recovered with ``patient_regex=r"^(P\\d+)_"``.
- ``csv``: ``labels.csv`` (path, label, patient_id, mask_path, laterality, view, density, study_id)
  with images and lesion-union masks as PNG; the CSV file is the path to import.
- ``ddsm-tfrecord``: square patches (side ``min(height, width)``) cut around the first lesion (or
  the breast's centre for normals), ``label`` 0 negative, 1 benign calcification, 2 benign mass,
  3 malignant calcification, 4 malignant mass, and ``label_normal``; every fifth patch goes into
  the ``test_data.npy`` / ``test_labels.npy`` pair instead of the TFRecord file. Patients are not
  part of this format.
- ``kaumds``: JPEGs in ``BIRAD k/`` + ``KAU-BCMD.xlsx`` with the real sheet's quirky columns,
  ``Image path`` ending in ``.dcm`` with a stray space; normal -> BI-RADS 1, benign -> 3 (every
  fourth benign patient 2: import with ``include_birads2=True`` to keep those), malignant -> 4 or 5
  (per patient). Labels of this format are BI-RADS.
- ``cbis-ddsm``: a TCIA-style tree below ``CBIS-DDSM/`` (full mammograms as 16-bit MONOCHROME2
  RLE-compressed DICOMs; ROI mask and cropped DICOMs in ``<case>_<abnormality id>`` folders, in
  one series folder or two) and the four case-description CSVs whose paths name DICOM UIDs that
  do not exist on disk, as in a real download. Normal images are not part of CBIS-DDSM: they are
  not written.
- ``bcdr``: PNGs + ``bcdr_synthetic_outlines.csv`` with ``lw_x_points``/``lw_y_points`` polygons
  traced from the lesion masks (cv2.findContours; one row per contour, rows of one lesion share
  its ``lesion_id``). BCDR outlines have no normal class: normal images are not written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammocad.data.provenance import SYNTHETIC_MARKER, marker_content
from mammocad.data.synth.phantom import DENSITIES, PATHOLOGIES, SynthCase, generate_case
from mammocad.defaults import SYNTH_FORMATS
from mammocad.io import atomic_write_bytes, atomic_write_png, atomic_write_text, staging_dir

FORMATS = SYNTH_FORMATS
DEFAULT_COUNTS = {"normal": 20, "benign": 20, "malignant": 20}
#: Formats whose real source has no normal images; their writers leave normals out.
WITHOUT_NORMALS = ("cbis-ddsm", "bcdr")
FOLDERS_PATIENT_REGEX = r"^(P\d+)_"


@dataclass(frozen=True)
class PlannedImage:
    """One image of a synthetic dataset: who, which breast and view, what it shows, and its seed."""

    patient: int  # 1-based
    laterality: str
    view: str
    pathology: str
    density: str
    seed: int


def _derived_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for one item, independent of Python's hash randomisation."""
    text = ":".join(map(str, ("mammocad-synth", seed, *parts)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def written_counts(fmt: str, n_per_class: dict[str, int] | None = None) -> dict[str, int]:
    """Images per class that ``fmt`` gets for the requested counts (normals dropped where the source has none)."""
    counts = _validated_counts(n_per_class)
    return {**counts, "normal": 0} if fmt in WITHOUT_NORMALS else counts


def plan_images(n_per_class: dict[str, int], seed: int, views: tuple[str, ...] = ("CC", "MLO")) -> list[PlannedImage]:
    """Group exactly ``n_per_class`` images into patients (see the module docstring).

    Output order: patient by patient, abnormal patients first (benign, then malignant), each
    patient's lesion breast before the other breast, views in the order given.
    """
    if not views or any(view not in ("CC", "MLO") for view in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct values out of ('CC', 'MLO'), got {views!r}")
    normals_left = n_per_class.get("normal", 0)
    plan: list[PlannedImage] = []
    patient = 0

    def image(laterality: str, view: str, pathology: str, density: str) -> PlannedImage:
        return PlannedImage(
            patient, laterality, view, pathology, density, _derived_seed(seed, patient, laterality, view)
        )

    for pathology in ("benign", "malignant"):
        wanted = n_per_class.get(pathology, 0)
        while wanted > 0:
            patient += 1
            rng = np.random.default_rng(_derived_seed(seed, "patient", patient))
            density = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.33, 0.12]))
            side = str(rng.choice(["L", "R"]))
            other = "R" if side == "L" else "L"
            for view in views[:wanted]:
                plan.append(image(side, view, pathology, density))
            wanted -= min(wanted, len(views))
            for view in views[:normals_left]:
                plan.append(image(other, view, "normal", density))
            normals_left -= min(normals_left, len(views))
    while normals_left > 0:
        patient += 1
        rng = np.random.default_rng(_derived_seed(seed, "patient", patient))
        density = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.33, 0.12]))
        for laterality in ("R", "L"):
            for view in views[:normals_left]:
                plan.append(image(laterality, view, "normal", density))
            normals_left -= min(normals_left, len(views))
    return plan


def write_synthetic_dataset(
    out_dir: str | Path,
    fmt: str,
    n_per_class: dict[str, int] | None = None,
    seed: int = 0,
    height: int = 512,
    width: int = 384,
    views: tuple[str, ...] = ("CC", "MLO"),
) -> Path:
    """Write a synthetic dataset in format ``fmt`` into the new directory ``out_dir``.

    Inputs: ``n_per_class`` images per class (``normal``/``benign``/``malignant``; default 20
    each), the seed (same inputs -> same files), the image size (``mias`` writes
    ``height x height``) and the views per breast (``mias`` is MLO only).
    Output: the path to import (``out_dir`` itself, or ``out_dir/labels.csv`` for ``csv``).
    Raises ``ValueError`` for an unknown format or class and ``FileExistsError`` when ``out_dir``
    exists and is not empty; the directory appears only complete (built in a staging dir).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    counts = written_counts(fmt, n_per_class)
    if sum(counts.values()) == 0:
        raise ValueError(
            f"nothing to write: no images requested for {fmt}"
            + (" (it has no normal images)" if fmt in WITHOUT_NORMALS else "")
        )
    if fmt == "mias" and _mias_refnums_needed(counts) > 999:
        raise ValueError("mias refnums have three digits (mdb001..mdb999): ask for fewer images")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir}: exists and is not an empty directory; not overwriting")
        out_dir.rmdir()  # an empty directory is taken over (the staging rename needs it gone)
    with staging_dir(out_dir) as scratch:
        entry = _WRITERS[fmt](scratch, counts, seed, height, width, views)
        # The mark `mammocad data import` carries into the dataset (and model cards read back).
        atomic_write_text(scratch / SYNTHETIC_MARKER, json.dumps(marker_content(fmt, seed), indent=2) + "\n")
    return out_dir / entry.relative_to(scratch)


def _validated_counts(n_per_class: dict[str, int] | None) -> dict[str, int]:
    counts = dict(DEFAULT_COUNTS if n_per_class is None else n_per_class)
    unknown = set(counts) - set(PATHOLOGIES)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; synthetic classes are {', '.join(PATHOLOGIES)}")
    bad = {name: value for name, value in counts.items() if not isinstance(value, int) or value < 0}
    if bad:
        raise ValueError(f"image counts must be integers >= 0, got {bad}")
    return {name: counts.get(name, 0) for name in PATHOLOGIES}


def _cases(
    counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...], bits: int = 8
) -> Iterator[tuple[PlannedImage, SynthCase]]:
    """The planned images with their phantoms, one at a time (a large dataset never sits in memory)."""
    for item in plan_images(counts, seed, views):
        case = generate_case(
            item.seed, item.pathology, item.view, item.laterality, height, width, bits, density=item.density
        )
        yield item, case


Writer = Callable[[Path, dict[str, int], int, int, int, tuple[str, ...]], Path]


# --- mias -----------------------------------------------------------------------------------

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


def _write_mias(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item, case in _cases(counts, seed, height, height, ("MLO",)):
        number = 2 * item.patient - (1 if item.laterality == "R" else 0)  # (odd, even) = (right, left)
        ref = f"mdb{number:03d}"
        _write_pgm(out / f"{ref}.pgm", case.pixels)
        background = _MIAS_BACKGROUND[case.density]
        if not case.lesions:
            rows.append((number, f"{ref} {background} NORM "))
        severity = "B" if case.pathology == "benign" else "M"
        for k, lesion in enumerate(case.lesions):
            cls = _MIAS_CLASS.get(lesion.shape, "CALC")
            if cls == "CALC" and _derived_seed(seed, ref, k) % 4 == 0:
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


def _mias_refnums_needed(counts: dict[str, int]) -> int:
    """The largest refnum a MIAS layout of ``counts`` uses (two refnums per patient)."""
    patients = max(item.patient for item in plan_images(counts, 0, ("MLO",)))
    return 2 * patients


def _write_pgm(path: Path, pixels: np.ndarray) -> None:
    height, width = pixels.shape
    atomic_write_bytes(path, f"P5\n{width} {height}\n255\n".encode() + pixels.astype(np.uint8).tobytes())


# --- folders and csv ------------------------------------------------------------------------


def _stem(item: PlannedImage) -> str:
    return f"P{item.patient:04d}_{item.view}_{item.laterality}"


def _write_folders(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    for item, case in _cases(counts, seed, height, width, views):
        atomic_write_png(out / case.pathology.capitalize() / f"{_stem(item)}.png", case.pixels)
    return out


def _write_csv(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    for item, case in _cases(counts, seed, height, width, views):
        name = _stem(item)
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


# --- ddsm-tfrecord --------------------------------------------------------------------------

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


def _write_ddsm(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    from tfrecord.writer import TFRecordWriter

    side = min(height, width)
    npy_data, npy_labels = [], []
    # TFRecordWriter writes straight to its path; inside the staging dir that is still atomic.
    writer = TFRecordWriter(str(out / "training10_0.tfrecords"))
    try:
        for position, (_, case) in enumerate(_cases(counts, seed, height, width, views)):
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


# --- kaumds ---------------------------------------------------------------------------------

_KAUMDS_BREAST_TYPE = {"A": "Fatty", "B": "Scattered fibroglandular", "C": "Heterogeneously dense", "D": "Dense"}
_KAUMDS_DENSITY = {"A": "<25%", "B": "25-50%", "C": "51-75%", "D": ">75%"}


def _kaumds_birads(item: PlannedImage, seed: int) -> int:
    """BI-RADS per patient: normal 1, benign 3 (every fourth benign patient 2), malignant 4 or 5."""
    if item.pathology == "normal":
        return 1
    if item.pathology == "benign":  # benign patients are numbered 1, 2, ... first (see plan_images)
        return 2 if item.patient % 4 == 0 else 3
    return 4 if _derived_seed(seed, "birads", item.patient) % 2 == 0 else 5


def _write_kaumds(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    rows = []
    for item, case in _cases(counts, seed, height, width, views):
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
                "Patient age ": 38 + _derived_seed(seed, "age", item.patient) % 40,
                "Breast type": _KAUMDS_BREAST_TYPE[case.density],
                "Breast view": f"{case.view}_{case.laterality}",
                "Percentage of\n granular tissue(density)": _KAUMDS_DENSITY[case.density],
                "Assesment": f"BIRAD {birads}",
                "Image path": f"{folder}/{stem}.dcm",
            }
        )
    pd.DataFrame(rows).to_excel(out / "KAU-BCMD.xlsx", index=False)
    return out


# --- cbis-ddsm ------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    """A deterministic DICOM-style UID (the CSV paths are made of these, as in CBIS-DDSM)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=12).digest()
    return "1.3.6.1.4.1.9590.100.1.2." + str(int.from_bytes(digest, "big"))


def _write_dicom(path: Path, pixels: np.ndarray, case_name: str, laterality: str, compress: bool) -> None:
    """A minimal MG DICOM: MONOCHROME2, 8 or 16 bits as the array, RLE Lossless when ``compress``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = _uid(case_name, path.parent.name, path.name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(case_name, "study")
    ds.SeriesInstanceUID = _uid(case_name, path.parent.name)
    ds.Modality = "MG"
    ds.BodyPartExamined = "BREAST"
    ds.Laterality = laterality
    ds.PatientName = case_name  # CBIS-DDSM puts its (public, pseudonymous) case name here
    ds.PatientID = case_name
    ds.SeriesDescription = "SYNTHETIC phantom (mammocad synth)"
    ds.set_pixel_data(pixels, "MONOCHROME2", 16 if pixels.dtype == np.uint16 else 8)
    if compress:
        ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _cbis_descriptors(lesion_shape: str, pathology: str) -> dict[str, str]:
    if lesion_shape in ("round", "oval", "irregular", "spiculated"):
        shape = {"round": "ROUND", "oval": "OVAL"}.get(lesion_shape, "IRREGULAR")
        margins = {"spiculated": "SPICULATED", "irregular": "ILL_DEFINED"}.get(lesion_shape, "CIRCUMSCRIBED")
        return {"mass shape": shape, "mass margins": margins}
    if pathology == "malignant":
        return {"calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED"}
    return {"calc type": "COARSE", "calc distribution": "REGIONAL"}


def _write_cbis(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    tree = out / "CBIS-DDSM"
    tables: dict[tuple[str, str], list[dict[str, object]]] = {}
    for index, (item, case) in enumerate(_cases(counts, seed, height, width, views, bits=16)):
        split = "test" if _derived_seed(seed, "split", item.patient) % 5 == 0 else "train"
        side = "LEFT" if case.laterality == "L" else "RIGHT"
        patient = f"P_{item.patient:05d}"
        for kind in sorted({lesion.kind for lesion in case.lesions}):
            table_kind = "mass" if kind == "mass" else "calc"
            prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{'Training' if split == 'train' else 'Test'}"
            case_name = f"{prefix}_{patient}_{side}_{case.view}"
            # TCIA stores the mammogram once per abnormality type, in folders named by dates and
            # series numbers; the CSVs name UIDs instead (resolved by the importer).
            series = f"{index + 1:05d}"
            full = (
                tree / case_name / f"07-20-2016-DDSM-{series}" / f"1.000000-full mammogram images-{series}" / "1-1.dcm"
            )
            _write_dicom(full, case.pixels, case_name, case.laterality, compress=True)
            for abnormality_id, lesion in enumerate((les for les in case.lesions if les.kind == kind), start=1):
                roi_case = f"{case_name}_{abnormality_id}"
                study = tree / roi_case / f"08-29-2017-DDSM-{series}"
                x0, y0, x1, y1 = lesion.box
                crop = np.ascontiguousarray(case.pixels[y0:y1, x0:x1])
                mask = lesion.mask.astype(np.uint8) * 255
                if (index + abnormality_id) % 2:  # both in one series folder, the crop first
                    _write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-1.dcm",
                        crop,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                    _write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-2.dcm",
                        mask,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                else:  # or in two series folders
                    _write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-1.dcm",
                        mask,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                    _write_dicom(
                        study / f"1.000000-cropped images-{series}" / "1-1.dcm",
                        crop,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                roi_path = f"{roi_case}/{_uid(roi_case, 'study')}/{_uid(roi_case, 'series')}"
                row: dict[str, object] = {
                    "patient_id": patient,
                    "breast_density" if kind == "mass" else "breast density": DENSITIES.index(case.density) + 1,
                    "left or right breast": side,
                    "image view": case.view,
                    "abnormality id": abnormality_id,
                    "abnormality type": kind,
                    **_cbis_descriptors(lesion.shape, case.pathology),
                    "assessment": 3 if case.pathology == "benign" else 4 + _derived_seed(seed, roi_case) % 2,
                    "pathology": "MALIGNANT"
                    if case.pathology == "malignant"
                    else ("BENIGN" if _derived_seed(seed, "callback", roi_case) % 3 else "BENIGN_WITHOUT_CALLBACK"),
                    "subtlety": 1 + _derived_seed(seed, "subtlety", roi_case) % 5,
                    "image file path": f"{case_name}/{_uid(case_name, 'study')}/{_uid(case_name, 'series')}/000000.dcm",
                    "cropped image file path": f"{roi_path}/000000.dcm",
                    "ROI mask file path": f"{roi_path}/000001.dcm\n",  # real cells sometimes end in a newline
                }
                tables.setdefault((table_kind, split), []).append(row)
    for table_kind in ("mass", "calc"):
        descriptors = ["mass shape", "mass margins"] if table_kind == "mass" else ["calc type", "calc distribution"]
        density = "breast_density" if table_kind == "mass" else "breast density"
        columns = [
            "patient_id",
            density,
            "left or right breast",
            "image view",
            "abnormality id",
            "abnormality type",
            *descriptors,
            "assessment",
            "pathology",
            "subtlety",
            "image file path",
            "cropped image file path",
            "ROI mask file path",
        ]
        for split in ("train", "test"):
            table = pd.DataFrame(tables.get((table_kind, split), []), columns=columns)
            atomic_write_text(out / f"{table_kind}_case_description_{split}_set.csv", table.to_csv(index=False))
    return out


# --- bcdr -----------------------------------------------------------------------------------


def _write_bcdr(out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]) -> Path:
    rows = []
    images = []  # the image list BCDR ships beside the outlines (``bcdr_d01_img.csv``)
    lesion_id = 0
    for index, (item, case) in enumerate(_cases(counts, seed, height, width, views)):
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
                "age": 38 + _derived_seed(seed, "age", item.patient) % 40,
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
                        "age": 38 + _derived_seed(seed, "age", item.patient) % 40,
                    }
                )
    atomic_write_text(out / "bcdr_synthetic_outlines.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / "bcdr_synthetic_img.csv", pd.DataFrame(images).to_csv(index=False))
    return out


_WRITERS: dict[str, Writer] = {
    "mias": _write_mias,
    "folders": _write_folders,
    "csv": _write_csv,
    "ddsm-tfrecord": _write_ddsm,
    "kaumds": _write_kaumds,
    "cbis-ddsm": _write_cbis,
    "bcdr": _write_bcdr,
}
