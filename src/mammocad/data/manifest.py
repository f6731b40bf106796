"""The manifest: one table (Parquet) describing every image of a dataset, whatever its source.

Schema (one row per image; ``None``/null where the source does not say):

==================  ========  =================================================================
column              type      meaning
==================  ========  =================================================================
image_id            str       unique within the dataset (e.g. ``mdb001``)
image_path          str       the image file: absolute, or relative to the dataset directory
label               int       index of ``label_name`` in the dataset's ``classes.json``
label_name          str       the class of this image for the dataset's primary task
pathology           str       ``normal`` / ``benign`` / ``malignant`` where known
birads              Int       BI-RADS assessment 0..6 where known
density             str       breast density (BI-RADS A-D / 1-4, or MIAS F/G/D)
patient_id          str       pseudonymous patient key; the only patient column there is
study_id            str       study/exam key (groups the views of one visit)
laterality          str       ``L`` or ``R``
view                str       ``CC``, ``MLO``, ...
source              str       importer name (``mias``, ``cbis-ddsm``, ...)
official_split      str       the source's own split (``train``/``test``) where it has one
abnormality         str       lesion types joined by ``+`` (e.g. ``CIRC+CALC``)
n_lesions           int       number of annotated lesions
lesions             list      one struct per lesion, see :class:`Lesion`
mask_path           str       union of the lesion masks (uint8 PNG, 255 = lesion), same size as image
width, height       int       image size in pixels
bits_stored         int       8 or 16 (native depth before any conversion)
file_format         str       sniffed from content: pgm, png, jpeg, tiff, bmp, dicom
fingerprint         str       content hash used to find duplicate files
meta                str       JSON object with source-specific extras (never patient identifiers)
==================  ========  =================================================================

Lesion boxes use the usual image convention: origin top-left, x to the right, y down, half-open
``[x0, x1) × [y0, y1)`` in pixels of the image as stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mammocad.errors import DatasetError

MANIFEST_NAME = "manifest.parquet"
CLASSES_NAME = "classes.json"
SUMMARY_NAME = "import_summary.json"
SUMMARY_TEXT_NAME = "import_summary.txt"

PATHOLOGIES = ("normal", "benign", "malignant")


@dataclass
class Lesion:
    """One annotated abnormality. Coordinates are pixels, top-left origin (see module doc)."""

    lesion_type: str | None = None
    pathology: str | None = None
    x0: int | None = None
    y0: int | None = None
    x1: int | None = None
    y1: int | None = None
    center_x: float | None = None
    center_y: float | None = None
    radius: float | None = None
    mask_path: str | None = None

    @property
    def has_box(self) -> bool:
        return None not in (self.x0, self.y0, self.x1, self.y1)


@dataclass
class ImageRecord:
    """One manifest row as an importer builds it (``label`` is assigned by the import runner)."""

    image_id: str
    image_path: str
    label_name: str
    patient_id: str
    source: str
    pathology: str | None = None
    birads: int | None = None
    density: str | None = None
    study_id: str | None = None
    laterality: str | None = None
    view: str | None = None
    official_split: str | None = None
    lesions: list[Lesion] = field(default_factory=list)
    mask_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Filled by the import runner from the file itself.
    width: int | None = None
    height: int | None = None
    bits_stored: int | None = None
    file_format: str | None = None
    fingerprint: str | None = None
    label: int | None = None


LESION_TYPE = pa.struct(
    [
        ("lesion_type", pa.string()),
        ("pathology", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
        ("center_x", pa.float32()),
        ("center_y", pa.float32()),
        ("radius", pa.float32()),
        ("mask_path", pa.string()),
    ]
)

SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("image_path", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("pathology", pa.string()),
        ("birads", pa.int32()),
        ("density", pa.string()),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("laterality", pa.string()),
        ("view", pa.string()),
        ("source", pa.string()),
        ("official_split", pa.string()),
        ("abnormality", pa.string()),
        ("n_lesions", pa.int32()),
        ("lesions", pa.list_(LESION_TYPE)),
        ("mask_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bits_stored", pa.int32()),
        ("file_format", pa.string()),
        ("fingerprint", pa.string()),
        ("meta", pa.string()),
    ]
)

COLUMNS = tuple(SCHEMA.names)


def class_order(label_names: list[str] | set[str]) -> list[str]:
    """Canonical class order: normal < benign < malignant, BI-RADS numerically, else alphabetical."""
    names = set(label_names)
    if names <= set(PATHOLOGIES):
        return [p for p in PATHOLOGIES if p in names]

    def key(name: str) -> tuple[int, float, str]:
        # The name breaks ties so that BI-RADS 4a/4b/4c never depend on set order (hash seed).
        digits = "".join(ch for ch in name if ch.isdigit())
        return (0, float(digits), name) if digits else (1, 0.0, name)

    return sorted(names, key=key)


def records_to_table(records: list[ImageRecord], classes: list[str]) -> pa.Table:
    """Build the manifest table (assigning ``label`` from ``classes``)."""
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for rec in records:
        row = asdict(rec)
        row["label"] = index[rec.label_name]
        row["lesions"] = [asdict(lesion) for lesion in rec.lesions]
        row["n_lesions"] = len(rec.lesions)
        types = [lesion.lesion_type for lesion in rec.lesions if lesion.lesion_type]
        row["abnormality"] = "+".join(dict.fromkeys(types)) or None
        row["meta"] = json.dumps(rec.meta, sort_keys=True, default=str)
        rows.append({name: row.get(name) for name in COLUMNS})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_manifest(table: pa.Table, dataset_dir: str | Path) -> Path:
    """Write the manifest Parquet file (the caller writes into a staging dir, so this is atomic)."""
    path = Path(dataset_dir) / MANIFEST_NAME
    pq.write_table(table, path)
    return path


def read_manifest(dataset_dir: str | Path) -> pd.DataFrame:
    """Read a dataset's manifest as a DataFrame, with a clear error when it is missing or wrong."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST_NAME if dataset_dir.is_dir() else dataset_dir
    if not path.exists():
        raise DatasetError(f"{path}: no manifest here; create one with `mammocad data import`")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{path}: manifest is not a readable Parquet file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: manifest lacks columns {missing}")
    return table.to_pandas()


def read_classes(dataset_dir: str | Path) -> list[str]:
    """The dataset's class names in label order."""
    path = Path(dataset_dir) / CLASSES_NAME
    if not path.exists():
        raise DatasetError(f"{path}: missing; the dataset directory is incomplete")
    return list(json.loads(path.read_text())["classes"])


def resolve_path(dataset_dir: str | Path, value: str | None) -> Path | None:
    """Turn a manifest path (absolute or relative to the dataset dir) into an absolute path."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(dataset_dir) / path


def lesions_of(row: pd.Series | dict[str, Any]) -> list[Lesion]:
    """The lesions of a manifest row as :class:`Lesion` objects."""
    items = row["lesions"]
    if items is None:
        return []
    lesions = []
    for item in list(items):
        clean = {k: (None if _is_null(v) else v) for k, v in dict(item).items()}
        lesions.append(Lesion(**clean))
    return lesions


def _is_null(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
