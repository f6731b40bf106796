"""The CBIS-DDSM (TCIA) layout (SYNTHETIC), read back by ``mammocad data import cbis-ddsm``
(:func:`mammocad.data.importers.cbis_ddsm.import_cbis_ddsm`).

A TCIA-style tree below ``CBIS-DDSM/`` (full mammograms as 16-bit MONOCHROME2
RLE-compressed DICOMs; ROI mask and cropped DICOMs in ``<case>_<abnormality id>`` folders, in
one series folder or two) and the four case-description CSVs whose paths name DICOM UIDs that
do not exist on disk, as in a real download. Normal images are not part of CBIS-DDSM: they are
not written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from mammocad.data.synth.phantom import DENSITIES
from mammocad.data.synth.plan import derived_seed, planned_cases
from mammocad.io import atomic_write_text

IMPORTER_FORMAT = "cbis-ddsm"


def dicom_uid(*parts: object) -> str:
    """A deterministic DICOM-style UID (the CSV paths are made of these, as in CBIS-DDSM)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=12).digest()
    return "1.3.6.1.4.1.9590.100.1.2." + str(int.from_bytes(digest, "big"))


def write_dicom(path: Path, pixels: np.ndarray, case_name: str, laterality: str, compress: bool) -> None:
    """A minimal MG DICOM: MONOCHROME2, 8 or 16 bits as the array, RLE Lossless when ``compress``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = dicom_uid(case_name, path.parent.name, path.name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = dicom_uid(case_name, "study")
    ds.SeriesInstanceUID = dicom_uid(case_name, path.parent.name)
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


def write_cbis_ddsm(
    out: Path, counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...]
) -> Path:
    tree = out / "CBIS-DDSM"
    tables: dict[tuple[str, str], list[dict[str, object]]] = {}
    for index, (item, case) in enumerate(planned_cases(counts, seed, height, width, views, bits=16)):
        split = "test" if derived_seed(seed, "split", item.patient) % 5 == 0 else "train"
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
            write_dicom(full, case.pixels, case_name, case.laterality, compress=True)
            for abnormality_id, lesion in enumerate((les for les in case.lesions if les.kind == kind), start=1):
                roi_case = f"{case_name}_{abnormality_id}"
                study = tree / roi_case / f"08-29-2017-DDSM-{series}"
                x0, y0, x1, y1 = lesion.box
                crop = np.ascontiguousarray(case.pixels[y0:y1, x0:x1])
                mask = lesion.mask.astype(np.uint8) * 255
                if (index + abnormality_id) % 2:  # both in one series folder, the crop first
                    write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-1.dcm",
                        crop,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                    write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-2.dcm",
                        mask,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                else:  # or in two series folders
                    write_dicom(
                        study / f"1.000000-ROI mask images-{series}" / "1-1.dcm",
                        mask,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                    write_dicom(
                        study / f"1.000000-cropped images-{series}" / "1-1.dcm",
                        crop,
                        roi_case,
                        case.laterality,
                        compress=False,
                    )
                roi_path = f"{roi_case}/{dicom_uid(roi_case, 'study')}/{dicom_uid(roi_case, 'series')}"
                row: dict[str, object] = {
                    "patient_id": patient,
                    "breast_density" if kind == "mass" else "breast density": DENSITIES.index(case.density) + 1,
                    "left or right breast": side,
                    "image view": case.view,
                    "abnormality id": abnormality_id,
                    "abnormality type": kind,
                    **_cbis_descriptors(lesion.shape, case.pathology),
                    "assessment": 3 if case.pathology == "benign" else 4 + derived_seed(seed, roi_case) % 2,
                    "pathology": "MALIGNANT"
                    if case.pathology == "malignant"
                    else ("BENIGN" if derived_seed(seed, "callback", roi_case) % 3 else "BENIGN_WITHOUT_CALLBACK"),
                    "subtlety": 1 + derived_seed(seed, "subtlety", roi_case) % 5,
                    "image file path": f"{case_name}/{dicom_uid(case_name, 'study')}/{dicom_uid(case_name, 'series')}/000000.dcm",
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
