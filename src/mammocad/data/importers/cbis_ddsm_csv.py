"""The CBIS-DDSM case-description CSVs: finding them, reading records whose cells span lines, and
one :class:`CsvRow` per usable row (see :mod:`mammocad.data.importers.cbis_ddsm` for the format).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammocad.data.importers.base import ImportContext, cell_text
from mammocad.errors import DatasetError

CSV_PATTERN = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
LESION_TYPES = {"mass": "mass", "calc": "calcification", "calcification": "calcification"}
REQUIRED = ("patient id", "left or right breast", "image view", "pathology", "image file path")
# Descriptors copied per lesion into meta (normalised column names).
DESCRIPTORS = ("mass shape", "mass margins", "calc type", "calc distribution", "subtlety", "assessment")


@dataclass
class CsvRow:
    """One usable CSV row: one abnormality of one full mammogram."""

    csv_name: str
    record: int
    line: int
    split: str
    lesion_type: str
    patient: str
    side: str
    view: str
    pathology: str
    raw_pathology: str
    density: str | None
    assessment: int | None
    abnormality_id: str
    image_path: str
    crop_path: str | None
    mask_path: str | None
    descriptors: dict[str, Any] = field(default_factory=dict)

    @property
    def item(self) -> str:
        return row_item(self.csv_name, self.record, self.line)


def row_item(csv_name: str, record: int, line: int) -> str:
    """How a CSV record is named in skips: its number among the data records and its first file line."""
    return f"{csv_name} record {record} (line {line})"


def find_csvs(folder: Path, kinds: tuple[str, ...]) -> list[Path]:
    """The case-description CSVs of the wanted abnormality kinds in ``folder`` (or below it)."""
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DatasetError(f"{folder}: CSV folder does not exist")
    found = [p for p in sorted(folder.iterdir()) if CSV_PATTERN.match(p.name)]
    if not found:
        found = [p for p in sorted(folder.rglob("*.csv")) if CSV_PATTERN.match(p.name)]
    wanted = [p for p in found if (m := CSV_PATTERN.match(p.name)) and m.group(1).lower() in kinds]
    if not wanted:
        names = " and ".join(f"{k}_case_description_{{train,test}}_set.csv" for k in kinds)
        raise DatasetError(f"{folder}: no CBIS-DDSM case CSVs found (expected {names}); pass --set csv_dir=PATH")
    return wanted


def _normalise_column(name: Any) -> str:
    return re.sub(r"[\s_]+", " ", str(name)).strip().lower()


def read_csv_records(path: Path) -> tuple[list[str], list[tuple[int, int, list[str]]]]:
    """(header, [(record number, first file line, fields)]) of a CSV whose cells may hold newlines.

    Record numbers count the data records from 1; the line is the physical file line where the
    record starts (the header is line 1). Blank lines are passed over.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails; the cells that matter are ASCII
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: empty CSV (no header)")
        records = []
        start = reader.line_num + 1
        for fields in reader:
            if any(f.strip() for f in fields):
                records.append((len(records) + 1, start, fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV (line {reader.line_num}: {exc})") from exc
    return header, records


def read_case_csv(path: Path, ctx: ImportContext) -> list[CsvRow]:
    """Parse one case-description CSV; rows that cannot be used are reported through ``ctx.skip``."""
    match = CSV_PATTERN.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: not a CBIS-DDSM case-description CSV name")
    kind, split = match.group(1).lower(), match.group(2).lower()
    header, records = read_csv_records(path)
    columns = [_normalise_column(c) for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DatasetError(f"{path}: lacks the columns {missing} (found: {columns})")
    rows = []
    for number, line, fields in records:
        item = row_item(path.name, number, line)
        if len(fields) > len(columns):
            ctx.skip(item, f"{len(fields)} fields, the header has {len(columns)}")
            continue
        record = dict(zip(columns, fields, strict=False))
        row = _parse_row(record, path.name, number, line, kind, split)
        if isinstance(row, str):
            ctx.skip(item, row)
        else:
            rows.append(row)
    return rows


def _parse_row(record: dict[str, Any], csv_name: str, number: int, line: int, kind: str, split: str) -> CsvRow | str:
    """A :class:`CsvRow`, or the reason the row is unusable."""
    patient = (cell_text(record.get("patient id")) or "").upper()
    if not re.fullmatch(r"P_\d+", patient):
        return f"unexpected patient_id {patient!r} (expected P_NNNNN)"
    side = {"LEFT": "L", "RIGHT": "R"}.get((cell_text(record.get("left or right breast")) or "").upper())
    if side is None:
        return f"unknown breast side {record.get('left or right breast')!r}"
    view = (cell_text(record.get("image view")) or "").upper()
    if view not in ("CC", "MLO"):
        return f"unknown image view {record.get('image view')!r}"
    raw_pathology = (cell_text(record.get("pathology")) or "").upper()
    if raw_pathology not in PATHOLOGY:
        return f"unknown pathology {record.get('pathology')!r}"
    image_path = cell_text(record.get("image file path"))
    if image_path is None:
        return "no image file path"
    lesion_kind = (cell_text(record.get("abnormality type")) or kind).lower()
    density = cell_text(record.get("breast density"))
    assessment = _int(record.get("assessment"))
    descriptors = {
        name.replace(" ", "_"): cell_text(record.get(name)) for name in DESCRIPTORS if cell_text(record.get(name))
    }
    if "subtlety" in descriptors:
        descriptors["subtlety"] = _int(descriptors["subtlety"])
    if "assessment" in descriptors:
        descriptors["assessment"] = assessment
    return CsvRow(
        csv_name=csv_name,
        record=number,
        line=line,
        split=split,
        lesion_type=LESION_TYPES.get(lesion_kind, lesion_kind),
        patient=patient,
        side=side,
        view=view,
        pathology=PATHOLOGY[raw_pathology],
        raw_pathology=raw_pathology,
        density=str(_int(density)) if _int(density) is not None else density,
        assessment=assessment,
        abnormality_id=cell_text(record.get("abnormality id")) or "1",
        image_path=image_path,
        crop_path=cell_text(record.get("cropped image file path")),
        mask_path=cell_text(record.get("roi mask file path")),
        descriptors=descriptors,
    )


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None
