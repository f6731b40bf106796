"""KAUMDS (King Abdulaziz University Mammogram Dataset): JPEGs in ``BIRAD k/`` folders + an Excel sheet.

The sheet (one row per image) has the columns ``Study date``, ``PatientID``, ``Patient age ``
(trailing space), ``Breast type``, ``Breast view``, ``Percentage of\\n granular tissue(density)``,
``Assesment`` (sic) and ``Image path``. Cleaning done here:

- Column names are matched after stripping, collapsing whitespace/newlines and lower-casing, with
  a few spellings accepted (``Assesment``/``Assessment``, ``PatientID``/``Patient ID`` ...).
- BI-RADS from ``Assesment``: ``BIRAD 3``, ``BI-RADS 4``, ``4``, ``4.0``, ``BIRADS4a`` (-> 4);
  ``NAN``/empty -> the row is skipped ("no BI-RADS assessment"). BI-RADS 2 rows are skipped by
  default (the KAU-BCMD study, Alsolami et al. (2021), excluded the class; most of its images are
  missing) unless ``include_birads2``. A row whose file sits in a ``BIRAD k`` folder that disagrees with its sheet
  assessment is skipped as a label conflict (never guess a label).
- ``Image path`` names ``.dcm`` files while the images are ``.jpg``, and has stray spaces
  (``2019_BC007741_ CC_R``): paths are matched on a key that ignores the extension, case and all
  whitespace, against an index of the real image files; a listed parent folder, the ``BIRAD k``
  folder and the extension break ties. Missing, ambiguous and corrupt (unreadable, truncated)
  files are skipped and listed, as are image files that no row names.
- Labels: ``label_name = "birads_k"`` and ``birads = k``. ``pathology`` stays ``None``: BI-RADS is
  a radiologist's assessment of suspicion, not a pathology result (a benign/malignant mapping such
  as 1 -> normal, 2-3 -> benign, 4-5 -> malignant would be an approximation; make it downstream
  and say so).
- ``laterality``/``view`` from ``Breast view`` (``CC_R``, ``R MLO``, ``RCC`` ...), falling back
  to ``Breast type`` and then to the file name; ``density`` is the density column as written;
  ``meta`` holds the sheet row, the BI-RADS folder, ``age`` (int) and ``breast_type``.

Privacy: the raw ``PatientID`` never reaches the manifest, the summary or a message.
``patient_id = pseudonymous_id(PatientID, "kaumds")`` (keyed with the installation's secret, see
:mod:`mammocad.data.privacy`) and
``study_id = pseudonymous_id(PatientID + study date, "kaumds-study")``; ``image_id`` is
``kaumds-<sheet row>``; skip messages name the sheet row and the file with every known patient ID
masked. KAUMDS file names can embed the patient's ID (or another ID-like code); such an image is hard-linked (or copied when
linking is impossible) into the dataset as ``images/<image_id><ext>`` so that its path carries no
ID. The study date is used only inside the study pseudonym.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.data.images import probe_image
from mammocad.data.importers.base import NO_SIZE_LIMIT, ImportContext, pseudonymous_id
from mammocad.data.manifest import ImageRecord
from mammocad.data.privacy import Redactor
from mammocad.data.sheets import read_workbook_table
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "kaumds"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}
SHEET_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
# IDs shorter than this are too unspecific to look for inside paths and messages.
_MIN_ID_LENGTH = 4

# Canonical field -> accepted normalised column names (see _normalise_column).
COLUMNS: dict[str, tuple[str, ...]] = {
    "study_date": ("study date", "studydate", "date"),
    "patient_id": ("patientid", "patient id", "patient_id"),
    "age": ("patient age", "age", "patient_age"),
    "breast_type": ("breast type", "breast_type"),
    "view": ("breast view", "view", "breast_view"),
    "density": ("percentage of granular tissue(density)", "percentage of granular tissue (density)", "density"),
    "assessment": ("assesment", "assessment", "bi-rads", "birads", "birad"),
    "image_path": ("image path", "image_path", "path", "image"),
}
REQUIRED = ("patient_id", "assessment", "image_path")

BIRADS_PATTERN = re.compile(r"^(?:bi[\s\-_]*rads?)?[\s:#\-_]*([0-6])(?:\.0+)?\s*[a-c]?$", re.IGNORECASE)
# Class folders: "BIRAD 3", "BI-RADS 3" or, in the published download, bare "3".
FOLDER_PATTERN = re.compile(r"^(?:bi[\s\-_]*rads?[\s\-_]*)?([0-6])$", re.IGNORECASE)
# Identifier-like tokens in file names no sheet row explains ("BC009941", "BC 0021806", long numbers).
# Case-sensitive where a space may split the code, so that "row 1047846" stays readable.
ID_LIKE = r"(?<![A-Za-z0-9])(?-i:[A-Z]{1,4} ?\d{5,}|[A-Za-z]{1,4}\d{5,}|\d{7,})(?![0-9])"
VIEW_CODES = ("XCCL", "XCCM", "MLO", "CC", "ML", "LM", "LMO", "FB", "SIO", "AT")
MISSING_TEXT = {"", "nan", "none", "null", "na", "n/a", "-"}


@dataclass
class ImageFile:
    """One image file found under the source, with the keys used to match sheet paths."""

    path: Path
    stem_key: str
    folder_keys: tuple[str, ...]
    folder_birads: int | None


def import_kaumds(
    ctx: ImportContext,
    include_birads2: bool = False,
    sheet: str | int | None = None,
    excel: str | None = None,
) -> None:
    """Import KAUMDS (see module docstring for every cleaning step).

    Inputs: ``ctx.source`` is the dataset folder (the ``BIRAD k/`` folders and the sheet) or the
    sheet itself; ``excel`` names the sheet file when the folder holds several (relative paths are
    taken from ``ctx.source``); ``sheet`` is the worksheet name or index; ``include_birads2`` keeps
    BI-RADS 2 rows. Output: one :class:`ImageRecord` per usable sheet row via ``ctx.add``; every
    skipped row or unlisted file via ``ctx.skip``, with the reason.
    """
    sheet_path, table = find_sheet(ctx.source, excel, sheet)
    root = ctx.source if ctx.source.is_dir() else sheet_path.parent
    raw_ids = {_text(value) for value in table["patient_id"]} - {None}
    # Every sheet ID, and any identifier-like token (a file no row names may belong to a patient the
    # sheet never lists), becomes its pseudonym (the manifest's ``patient_id``) in messages.
    redact = Redactor(SOURCE_NAME, {value for value in raw_ids if value and len(value) >= _MIN_ID_LENGTH}, ID_LIKE)

    def skip(item: str, reason: str) -> None:
        ctx.skip(redact(item), redact(reason))

    files = index_images(root)
    by_stem: dict[str, list[ImageFile]] = {}
    for image in files:
        by_stem.setdefault(image.stem_key, []).append(image)
    claimed: set[Path] = set()

    stray: list[int] = []
    for row in table.to_dict("records"):
        sheet_row = int(row["sheet_row"])
        listed = _text(row.get("image_path"))
        if listed is None and all(_text(row.get(f)) is None for f in ("patient_id", "assessment")):
            stray.append(sheet_row)  # a stray cell (a count, a note) far below the data: not an image row
            continue
        item = f"{sheet_path.name} row {sheet_row}" + (f" ({listed})" if listed else "")
        raw_id = _text(row.get("patient_id"))
        assessment = _text(row.get("assessment"))
        birads = parse_birads(assessment)
        image, problem = (None, "no image path") if listed is None else _match(listed, by_stem, birads)
        if image is not None:
            claimed.add(image.path)
        if birads is None:
            skip(item, "no BI-RADS assessment" if assessment is None else f"unrecognised BI-RADS {assessment!r}")
            continue
        if birads == 2 and not include_birads2:
            skip(
                item,
                "BI-RADS 2 excluded (as in the KAU-BCMD study, Alsolami et al., 2021; "
                "pass --include-birads2 to keep it)",
            )
            continue
        if raw_id is None:
            skip(item, "no PatientID (patient-level splits need one)")
            continue
        if image is None:
            skip(item, problem or "image file not found")
            continue
        if image.folder_birads is not None and image.folder_birads != birads:
            skip(item, f"label conflict: sheet says BI-RADS {birads}, file is in folder BIRAD {image.folder_birads}")
            continue
        try:
            probe_image(image.path, max_pixels=NO_SIZE_LIMIT)
        except ImageReadError as exc:
            skip(item, f"unreadable image: {exc.reason}")
            continue
        image_id = f"{SOURCE_NAME}-{sheet_row:05d}"
        ctx.add(_record(ctx, row, image, image_id, raw_id, birads, sheet_row, redact))

    if stray:
        rows = ", ".join(map(str, stray[:5])) + (", ..." if len(stray) > 5 else "")
        ctx.warn(
            f"{sheet_path.name}: ignored {len(stray)} row(s) with no image path, PatientID or assessment (row {rows})"
        )
    for image in files:
        if image.path not in claimed:
            skip(str(image.path.relative_to(root)), "image file not named by any sheet row (no label)")


def find_sheet(source: Path, excel: str | None, sheet: str | int | None = None) -> tuple[Path, pd.DataFrame]:
    """The workbook and its data table: ``excel`` (absolute or relative to ``source``), ``source``
    itself, or the one workbook in the folder that has a sheet with the KAUMDS columns (the real
    download holds a second workbook, ``BC with ultrasound.xlsx``, with other columns)."""
    if excel:
        path = Path(excel)
        if not path.is_absolute() and source.is_dir():
            path = source / path
        if not path.is_file():
            raise DatasetError(f"{path}: Excel workbook not found (option excel=PATH)")
        return path, read_sheet(path, sheet)
    if source.is_file():
        if source.suffix.lower() not in SHEET_SUFFIXES:
            raise DatasetError(f"{source}: expected the KAUMDS folder or its Excel workbook (.xlsx)")
        return source, read_sheet(source, sheet)
    found = _workbooks(source.iterdir()) or _workbooks(source.rglob("*"))
    if not found:
        raise DatasetError(f"{source}: no Excel workbook (.xlsx) found; pass --set excel=PATH")
    if len(found) == 1:
        return found[0], read_sheet(found[0], sheet)
    fitting: list[tuple[Path, pd.DataFrame]] = []
    problems: list[str] = []
    for path in found:
        try:
            fitting.append((path, read_sheet(path, sheet)))
        except DatasetError as exc:
            problems.append(str(exc))
    if len(fitting) == 1:
        return fitting[0]
    names = ", ".join(repr(str(p.relative_to(source))) for p in ([p for p, _ in fitting] or found))
    detail = "" if fitting else " None has the KAUMDS columns: " + " | ".join(problems)
    raise DatasetError(f"{source}: several Excel workbooks ({names}); choose one with --set excel=NAME.{detail}")


def _workbooks(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.suffix.lower() in SHEET_SUFFIXES and not p.name.startswith(("~$", ".")))


def _normalise_column(name: Any) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().lower()


def column_fields(header: list[str]) -> dict[str, int]:
    """Canonical field -> column index for a header row (see :data:`COLUMNS`)."""
    found: dict[str, int] = {}
    for index, name in enumerate(header):
        found.setdefault(_normalise_column(name), index)
    fields: dict[str, int] = {}
    for field, accepted in COLUMNS.items():
        index = next((found[name] for name in accepted if name in found and found[name] not in fields.values()), None)
        if index is None and field == "density":  # the long density header varies most; any "density" column will do
            index = next((i for n, i in found.items() if "density" in n and i not in fields.values()), None)
        if index is not None:
            fields[field] = index
    return fields


def read_sheet(path: Path, sheet: str | int | None = None) -> pd.DataFrame:
    """The data rows of the sheet, columns renamed to the fields of :data:`COLUMNS`.

    ``sheet=None`` takes the first sheet whose header has the required columns (the real
    workbook's first sheet is a summary table; its data sheet is ``correctSheet``). Blank rows are
    dropped (the real sheet's used range is ~1.05 million rows for ~5.4k images); the column
    ``sheet_row`` keeps each row's Excel row number. ``table.attrs["sheet"]`` names the sheet read.
    """

    def missing(header: list[str]) -> list[str]:
        fields = column_fields(header)
        return [field for field in REQUIRED if field not in fields]

    table = read_workbook_table(path, missing, sheet)
    fields = column_fields(table.columns)
    data = {field: [cells[fields[field]] if field in fields else None for _, cells in table.rows] for field in COLUMNS}
    frame = pd.DataFrame({"sheet_row": [number for number, _ in table.rows], **data}, dtype=object)
    frame.attrs["sheet"] = table.sheet
    return frame


def _text(value: Any) -> str | None:
    """A cell as stripped text; ``None`` for empty/NaN/"NAN" cells. Whole floats lose their ``.0``."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        if value.is_integer():
            value = int(value)
    text = re.sub(r"\s+", " ", str(value)).strip()
    return None if text.lower() in MISSING_TEXT else text


def parse_birads(text: str | None) -> int | None:
    """BI-RADS category 0..6 from ``BIRAD 3``, ``BI-RADS 4``, ``4``, ``4.0``, ``BIRADS4a``...; else ``None``."""
    if text is None:
        return None
    match = BIRADS_PATTERN.match(text.strip())
    return int(match.group(1)) if match else None


def _key(text: str) -> str:
    """Matching key: lower case, no whitespace at all (KAUMDS paths have stray spaces)."""
    return re.sub(r"\s+", "", text).lower()


def _split_path(text: str) -> tuple[tuple[str, ...], str, str]:
    """(folder keys, stem key, lower-case extension) of a path as written in the sheet."""
    parts = [part for part in text.replace("\\", "/").split("/") if part.strip() not in ("", ".")]
    name = parts[-1].strip() if parts else ""
    stem, ext = os.path.splitext(name)
    if ext.lower().strip() not in IMAGE_SUFFIXES:
        stem, ext = name, ""  # a dot inside the name, not an extension
    return tuple(_key(p) for p in parts[:-1]), _key(stem), ext.lower().strip()


def index_images(root: Path) -> list[ImageFile]:
    """Every image file below ``root`` (hidden files and folders ignored), with matching keys."""
    files: list[ImageFile] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):  # data folders are often symlinked
        seen.add(os.path.realpath(folder))
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d.lower() != "__macosx" and os.path.realpath(Path(folder) / d) not in seen
        )
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = path.relative_to(root)
            folder_keys = tuple(_key(p) for p in rel.parts[:-1])
            birads_folders = [FOLDER_PATTERN.match(p.strip()) for p in rel.parts[:-1]]
            folder_birads = next((int(m.group(1)) for m in reversed(birads_folders) if m), None)
            files.append(ImageFile(path, _key(path.stem), folder_keys, folder_birads))
    return files


def _match(listed: str, by_stem: dict[str, list[ImageFile]], birads: int | None) -> tuple[ImageFile | None, str | None]:
    """The image file a sheet path names, or ``None`` and why."""
    folders, stem, ext = _split_path(listed)
    candidates = by_stem.get(stem, [])
    if not candidates:
        return None, "image file not found (no file with this name, ignoring extension, case and spaces)"
    if len(candidates) > 1 and folders:
        # Prefer files whose folders end with the listed folders (the sheet may use another root).
        def overlap(image: ImageFile) -> int:
            n = 0
            while n < min(len(folders), len(image.folder_keys)) and folders[-1 - n] == image.folder_keys[-1 - n]:
                n += 1
            return n

        best = max(overlap(c) for c in candidates)
        candidates = [c for c in candidates if overlap(c) == best]
    if len(candidates) > 1 and birads is not None:
        same = [c for c in candidates if c.folder_birads == birads]
        candidates = same or candidates
    if len(candidates) > 1 and ext:
        same = [c for c in candidates if c.path.suffix.lower() == ext]
        candidates = same or candidates
    if len(candidates) > 1:
        return None, f"ambiguous image path: {len(candidates)} files match"
    return candidates[0], None


def _view_and_side(*texts: str | None) -> tuple[str | None, str | None]:
    """(laterality, view) from texts like ``CC_R``, ``R MLO``, ``RCC``, ``LMLO``, ``Right``; first hit wins."""
    side: str | None = None
    view: str | None = None
    for text in texts:
        if not text:
            continue
        for token in re.split(r"[^A-Z]+", text.upper()):
            if not token:
                continue
            if token in ("R", "RIGHT", "L", "LEFT"):
                side = side or token[0]
            elif token in VIEW_CODES:
                view = view or token
            elif token[0] in "LR" and token[1:] in VIEW_CODES:
                side, view = side or token[0], view or token[1:]
            elif token[-1] in "LR" and token[:-1] in VIEW_CODES:
                side, view = side or token[-1], view or token[:-1]
        if side and view:
            break
    return side, view


def _age(text: str | None) -> int | None:
    match = re.match(r"^\s*(\d{1,3})(?:\.0+)?\s*(?:y|yr|yrs|years?)?\s*$", text or "", re.IGNORECASE)
    return int(match.group(1)) if match and 0 < int(match.group(1)) < 130 else None


def _record(
    ctx: ImportContext,
    row: dict[str, Any],
    image: ImageFile,
    image_id: str,
    raw_id: str,
    birads: int,
    sheet_row: int,
    redact: Redactor,
) -> ImageRecord:
    study_date = _text(row.get("study_date")) or ""
    breast_type = _text(row.get("breast_type"))
    side, view = _view_and_side(_text(row.get("view")), breast_type, image.path.stem)
    meta: dict[str, Any] = {"sheet_row": sheet_row, "birads_folder": image.folder_birads}
    age = _age(_text(row.get("age")))
    if age is not None:
        meta["age"] = age
    if breast_type is not None:
        meta["breast_type"] = breast_type
    return ImageRecord(
        image_id=image_id,
        image_path=ctx.pseudonymous_path(image.path, image_id, [raw_id], redact),
        label_name=f"birads_{birads}",
        pathology=None,
        birads=birads,
        density=_text(row.get("density")),
        patient_id=pseudonymous_id(raw_id, SOURCE_NAME),
        study_id=pseudonymous_id(f"{raw_id}|{study_date}", f"{SOURCE_NAME}-study"),
        laterality=side,
        view=view,
        source=SOURCE_NAME,
        meta=meta,
    )
