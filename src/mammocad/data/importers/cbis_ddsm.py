"""CBIS-DDSM: ``{mass,calc}_case_description_{train,test}_set.csv`` + the images, in any of its layouts.

Layouts handled (images may be DICOM, PNG, JPEG or TIFF; every file is probed by content):

- the TCIA download (``CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-NN/1.000000-full
  mammogram images-NN/1-1.dcm``): the CSV paths (``<case>/<StudyUID>/<SeriesUID>/000000.dcm``) rarely
  exist as written, so a path is resolved through its first component, the case folder, found
  anywhere below the source;
- re-releases that store the images at exactly the CSV paths, often rewritten to ``.../1-1.png``
  or ``.jpg`` (a CSV path ending ``.dcm`` is also tried with those suffixes);
- the Kaggle copy ("CBIS-DDSM: Breast Cancer Image Dataset"): ``csv/`` with the four CSVs (original
  DICOM paths) and ``dicom_info.csv``, and ``jpeg/<SeriesInstanceUID>/1-N.jpg``. The third
  component of a CSV path is the SeriesInstanceUID, so the image is looked up in the folder of that
  name; ``dicom_info.csv`` (columns ``image_path``/``file_path``, ``PatientID`` = case folder name,
  ``SeriesDescription``, ``SeriesInstanceUID``), when present, names each file's series kind and
  indexes files by case folder as well, for series folders that are missing or hold several files.

Resolution order for a CSV path: the path itself (below the source or ``CBIS-DDSM/``), then the
folder named by its SeriesInstanceUID, then its case folder. The full mammogram is the one image
there, or the one whose series is ``full mammogram images``. The ROI mask and the cropped image
live in the ``<case>_<abnormality id>`` folder or series, in one series or two, and the CSV
sometimes swaps them, so they are told apart by their header size alone (no pixel decoding): the
mask has (about) the full mammogram's size, the crop is small. Where a folder holds the same image
in two formats (e.g. ``.dcm`` next to ``.png``), the format the CSV path names is preferred.

- CSV columns are matched after lower-casing and treating ``_`` as a space (the mass CSVs say
  ``breast_density``, the calc CSVs ``breast density``); path cells are stripped (most end in a
  quoted newline, so a CSV record spans two file lines: rows are reported as
  ``<csv> record N (line L)``, L being the file line where the record starts).
- One manifest row per full mammogram, keyed by patient, side and view (``P_00001_LEFT_CC``): the
  CSV rows of that image become its lesions, from the mass and the calc CSVs alike (TCIA stores
  the same mammogram once per abnormality type, so keying by the CSV path would import it twice).
- Label: ``malignant`` if any lesion is MALIGNANT, else ``benign`` (BENIGN and
  BENIGN_WITHOUT_CALLBACK; the latter is flagged in ``meta``). ``birads`` is the highest lesion
  ``assessment``; ``density`` is ``breast density``; ``lesion_type`` is ``mass`` or
  ``calcification``; per-lesion descriptors (abnormality id, shape/margins or type/distribution,
  subtlety, assessment, cropped image) are in ``meta["lesions"]``, in lesion order.
- ``official_split`` is ``train``/``test`` from the CSV name (``None`` when an image's rows
  disagree, which ``meta["official_splits"]`` then lists). The official split is **not
  patient-disjoint** (31 patients of the official CSVs have films in both): the import warns with
  the count among the imported images and points to ``mammocad data split``.
- Unresolvable full mammograms skip the image; an unresolvable mask leaves that lesion without
  ``mask_path`` (and is listed) but keeps the lesion and the image.
- Masks stay the source's files (0/255; lossy in the Kaggle JPEGs); the importer decodes no pixels,
  so lesion boxes and the image's union ``mask_path`` are left empty: preprocessing derives them
  from the lesion masks.
- ``patient_id = "cbis-P_00001"`` (CBIS-DDSM ids are already public pseudonyms);
  ``study_id = patient + side``.

Reading the CSVs lives in :mod:`~mammocad.data.importers.cbis_ddsm_csv`, finding the files they
name in :mod:`~mammocad.data.importers.cbis_ddsm_tree`; this module joins the two into records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammocad.data.importers.base import ImportContext
from mammocad.data.importers.cbis_ddsm_csv import (
    CSV_PATTERN,
    CsvRow,
    find_csvs,
    read_case_csv,
    read_csv_records,
    row_item,
)
from mammocad.data.importers.cbis_ddsm_tree import (
    CaseTree,
    find_dicom_info,
    image_kind,
    resolve_full_image,
    resolve_mask_and_crop,
    series_uid,
)
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError

SOURCE_NAME = "cbis-ddsm"


@dataclass
class SplitOverlap:
    """Patients (and images) that the official CSVs put in both the train and the test split."""

    patients: list[str]
    images: list[str]


def import_cbis_ddsm(ctx: ImportContext, abnormality: str = "both", csv_dir: str | None = None) -> None:
    """Import CBIS-DDSM (see module docstring).

    Inputs: ``ctx.source`` is the download root (the TCIA tree with or without its ``CBIS-DDSM``
    folder, a re-release with images at the CSV paths, or the Kaggle ``csv/`` + ``jpeg/`` copy; it
    normally holds the CSVs); ``csv_dir`` is where the CSVs (and ``dicom_info.csv``) are when
    elsewhere; ``abnormality`` is ``mass``, ``calc`` or ``both``. Output: one :class:`ImageRecord`
    per full mammogram via ``ctx.add``; unusable rows, images and masks via ``ctx.skip`` with the
    reason; a ``ctx.warn`` when the imported images' official splits share patients.
    """
    kinds = {"mass": ("mass",), "calc": ("calc",), "both": ("mass", "calc")}.get(abnormality.strip().lower())
    if kinds is None:
        raise DatasetError(f"abnormality must be 'mass', 'calc' or 'both', got {abnormality!r}")
    csv_files = find_csvs(Path(csv_dir) if csv_dir else ctx.source, kinds)
    rows: list[CsvRow] = []
    for csv_path in csv_files:
        rows += read_case_csv(csv_path, ctx)

    tree = CaseTree(ctx.source)
    info = find_dicom_info([p.parent for p in csv_files], tree)
    if info is not None:
        tree.add_dicom_info(info, ctx)
    by_image: dict[str, list[CsvRow]] = {}
    for row in rows:
        by_image.setdefault(image_key(row), []).append(row)
    imported: list[CsvRow] = []
    for image_id, image_rows in sorted(by_image.items()):
        record = _image_record(ctx, tree, image_id, image_rows)
        if record is not None:
            ctx.add(record)
            imported += image_rows
    overlap = split_overlap(imported)
    if overlap.patients:
        ctx.warn(overlap_warning(overlap))


def image_key(row: CsvRow) -> str:
    """The manifest id of a row's full mammogram, read like CBIS-DDSM's own case names."""
    return f"{row.patient}_{'LEFT' if row.side == 'L' else 'RIGHT'}_{row.view}"


def split_overlap(rows: list[CsvRow]) -> SplitOverlap:
    """Patients with rows in both official splits, and the images whose own rows are in both."""
    patient_splits: dict[str, set[str]] = {}
    image_splits: dict[str, set[str]] = {}
    for row in rows:
        patient_splits.setdefault(row.patient, set()).add(row.split)
        image_splits.setdefault(image_key(row), set()).add(row.split)
    return SplitOverlap(
        patients=sorted(p for p, splits in patient_splits.items() if len(splits) > 1),
        images=sorted(i for i, splits in image_splits.items() if len(splits) > 1),
    )


def overlap_warning(overlap: SplitOverlap) -> str:
    n = len(overlap.patients)
    examples = ", ".join(overlap.patients[:5]) + (", ..." if n > 5 else "")
    text = (
        f"{n} patient{'s' if n != 1 else ''} ({examples}) {'have' if n != 1 else 'has'} images in both "
        "official CBIS-DDSM splits (train and test), so official_split is not patient-disjoint and "
        "scores on its test split are optimistic"
    )
    if overlap.images:
        text += (
            f"; {len(overlap.images)} of their mammograms are listed in both splits (official_split is left "
            "empty for those; meta.official_splits lists both)"
        )
    return text + ". For a leak-free split use `mammocad data split`, which keeps each patient on one side."


def _image_record(ctx: ImportContext, tree: CaseTree, image_id: str, rows: list[CsvRow]) -> ImageRecord | None:
    first = rows[0]
    item = f"{image_id} ({', '.join(r.item for r in rows[:3])}{', ...' if len(rows) > 3 else ''})"
    full, problem = None, ""
    for path in dict.fromkeys(r.image_path for r in rows):  # mass and calc rows name different copies
        full, problem = resolve_full_image(tree, path)
        if full is not None:
            break
    if full is None:
        ctx.skip(item, problem)
        return None
    info = ctx.probe(full, item, "full mammogram")
    if info is None:
        return None

    lesions: list[Lesion] = []
    lesion_meta: list[dict[str, Any]] = []
    for row in rows:
        mask, crop, problem = resolve_mask_and_crop(tree, row, (info.width, info.height), image_kind(full))
        if problem:
            ctx.skip(f"{image_id} abnormality {row.abnormality_id} ({row.item})", problem)
        lesions.append(
            Lesion(
                lesion_type=row.lesion_type,
                pathology=row.pathology,
                mask_path=str(mask.resolve()) if mask else None,
            )
        )
        extra: dict[str, Any] = {"abnormality_id": row.abnormality_id, "pathology_raw": row.raw_pathology}
        extra.update(row.descriptors)
        if crop is not None:
            extra["cropped_image"] = str(crop.resolve())
        lesion_meta.append(extra)

    label = "malignant" if any(r.pathology == "malignant" for r in rows) else "benign"
    splits = sorted({r.split for r in rows})
    assessments = [r.assessment for r in rows if r.assessment is not None]
    density = next((r.density for r in rows if r.density), None)
    meta: dict[str, Any] = {"lesions": lesion_meta, "csv_rows": [r.item for r in rows]}
    if any(r.raw_pathology == "BENIGN_WITHOUT_CALLBACK" for r in rows):
        meta["benign_without_callback"] = True
    if len(splits) > 1:
        meta["official_splits"] = splits
    return ImageRecord(
        image_id=image_id,
        image_path=str(full.resolve()),
        label_name=label,
        pathology=label,
        birads=max(assessments) if assessments else None,
        density=density,
        patient_id=f"cbis-{first.patient}",
        study_id=f"cbis-{first.patient}-{first.side}",
        laterality=first.side,
        view=first.view,
        source=SOURCE_NAME,
        official_split=splits[0] if len(splits) == 1 else None,
        lesions=lesions,
        meta=meta,
    )


# Names tests and callers import from here, though they live in the CSV and tree modules now.
__all__ = [
    "CSV_PATTERN",
    "SOURCE_NAME",
    "CaseTree",
    "CsvRow",
    "SplitOverlap",
    "find_csvs",
    "find_dicom_info",
    "image_key",
    "import_cbis_ddsm",
    "overlap_warning",
    "read_case_csv",
    "read_csv_records",
    "resolve_full_image",
    "resolve_mask_and_crop",
    "row_item",
    "series_uid",
    "split_overlap",
]
