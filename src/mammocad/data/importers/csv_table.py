"""Generic CSV table: one row per image, ``path,label[,patient_id,mask_path,...]``.

- Column names match case-insensitively, with spaces and hyphens read as underscores
  (``Patient ID`` = ``patient_id``).
- Required: the image path and label columns. Optional known columns: ``patient_id``,
  ``mask_path``, ``image_id``, ``study_id``, ``laterality``, ``view``, ``birads``, ``density``,
  ``pathology``, ``lesion_type`` and ``split`` (-> ``official_split``).
- Privacy: other columns reach ``meta`` only when they are on a short whitelist of clinically
  useful, non-identifying columns (:data:`META_COLUMNS`: ``age`` as an integer up to 89, lesion
  descriptors, scanner) or named by ``keep_columns=a,b`` (never an identifier-like column: name,
  birth date, MRN, accession, institution ...). Every other column is dropped, and the summary
  warns once with the dropped column names (never their values). The values of identifier-like
  columns, of the patient and study columns (and ``patient_regex`` keys) are identifiers: they are
  replaced by pseudonyms in skip messages, and an image whose path holds one is linked into the
  dataset as ``images/<image_id><ext>`` so that the manifest never records that path.
- Relative paths resolve against ``base_dir`` or else the CSV's own folder.
- Labels are stripped and lower-cased; ``pathology`` is inferred when the label is ``normal``,
  ``benign`` or ``malignant`` and the table has no pathology value.
- Patients: pseudonymised (keyed, see :mod:`mammocad.data.privacy`) from the patient column;
  without one (or with an empty cell) each image is its own patient, which cannot keep images of
  one person on one side of a split.
- Image ids: the ``image_id`` column (pseudonymised when it holds an identifier); without one,
  ``csv-img-<keyed hash of the path below base_dir>``, so that no file name (which may be a
  patient's name) becomes an id, a mask name or a cache file name.
- Masks: read, checked against the image size, re-written as 0/255 PNG under ``masks/``, and turned
  into one :class:`Lesion` with the bounding box of the nonzero pixels.
- Bad rows are skipped with their row number (the header is row 1, as in a spreadsheet).

Why one module: its column matching, row checks and file resolution all read
the same user table, and splitting them would scatter one format's rules over several files.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.data.images import probe_image, read_image
from mammocad.data.importers.base import ImportContext, compile_patient_regex, patient_key, pseudonymous_id
from mammocad.data.manifest import PATHOLOGIES, ImageRecord, Lesion
from mammocad.data.masks import mask_bounding_box
from mammocad.data.privacy import Redactor
from mammocad.data.sheets import listed_names
from mammocad.data.sheets import read_csv_table as read_table  # its old home: kept importable
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "csv"
DEFAULT_PATIENT_COLUMN = "patient_id"
DEFAULT_MASK_COLUMN = "mask_path"
KNOWN_COLUMNS = (
    "image_id",
    "study_id",
    "laterality",
    "view",
    "birads",
    "density",
    "pathology",
    "lesion_type",
    "split",
)
# Other spellings of the known columns in published tables (INbreast.csv: "Bi-Rads", "ACR").
COLUMN_ALIASES = {
    "birads": ("bi_rads", "bi_rads_assessment", "birads_assessment"),
    "density": ("acr", "acr_density", "breast_density", "birads_density"),
    "laterality": ("side", "left_or_right_breast"),
    "view": ("image_view",),
}
# Patient cells that are placeholders, not identifiers (INbreast.csv says "removed" on every row).
PLACEHOLDER_PATIENTS = {"removed", "anonymized", "anonymised", "anon", "unknown", "n/a", "na", "none", "null", "-"}
# A patient column with one value on this many rows is a placeholder, not one woman's images.
SINGLE_PATIENT_ROWS = 20
# Column names that suggest a personal identifier: their values are identifiers (looked for in
# paths and messages), and keep_columns cannot keep them.
IDENTIFIER_COLUMN = re.compile(
    r"name|birth|date|medical_record|record_n|accession|social_sec|address|street|postal|postcode|phone|e_?mail"
    r"|patient_?(id|no|num|key|code)|subject|person|institution|hospital|clinic|physician|doctor|referr"
    r"|insurance|serial|licen[cs]e|(?<![a-z])(dob|mrn|ssn|zip|city|fax|operator|account)(?![a-z])",
    re.IGNORECASE,
)
# The only extra columns copied into ``meta`` (normalised column name -> meta key): clinically useful
# and not identifying. ``age`` is kept as an integer up to MAX_AGE (HIPAA: ages over 89 identify).
META_COLUMNS = {
    "age": "age",
    "patient_age": "age",
    "age_at_exam": "age",
    "age_years": "age",
    "abnormality_type": "abnormality_type",
    "abnormality": "abnormality_type",
    "mass_shape": "mass_shape",
    "mass_margins": "mass_margins",
    "calc_type": "calc_type",
    "calc_distribution": "calc_distribution",
    "subtlety": "subtlety",
    "manufacturer": "manufacturer",
    "scanner": "scanner",
}
MAX_AGE = 89
AGE_PATTERN = re.compile(r"^\s*(\d{1,3})(?:\.0+)?\s*(?:y|yr|yrs|years?)?\s*$", re.IGNORECASE)
BIRADS_PATTERN = re.compile(r"^(?:bi-?rads)?[\s_-]*([0-6])(?:\.0+)?([a-c])?$", re.IGNORECASE)
LATERALITIES = {"l": "L", "left": "L", "r": "R", "right": "R"}
SPLITS = {"training": "train", "testing": "test", "val": "validation", "valid": "validation"}


def import_csv(
    ctx: ImportContext,
    path_column: str = "path",
    label_column: str = "label",
    patient_column: str | None = DEFAULT_PATIENT_COLUMN,
    mask_column: str | None = DEFAULT_MASK_COLUMN,
    base_dir: str | None = None,
    patient_regex: str | None = None,
    keep_columns: str | None = None,
) -> None:
    """Import the images listed in the CSV file ``ctx.source``.

    Inputs: the names of the path/label/patient/mask columns (matched case-insensitively;
    ``None`` ignores that column; a non-default patient or mask column that is absent is an
    error), ``base_dir`` for relative paths (default: the CSV's folder) and ``patient_regex``,
    searched in each image's file name, whose group ``patient`` (else group 1) is the patient key
    (used instead of the patient column; INbreast names its files ``<id>_<patient hash>_MG_...``),
    and ``keep_columns``, a comma list of extra columns the user knows hold no personal data, to
    copy into ``meta`` besides the whitelisted :data:`META_COLUMNS`.
    Output: one :class:`ImageRecord` per good row through ``ctx.add``; bad rows go through
    ``ctx.skip`` as ``<csv name> row <n>`` with the reason (identifiers pseudonymised). Raises
    :class:`DatasetError` when the file is not a readable CSV, lacks the required columns, or
    ``keep_columns`` names a missing or identifier-like column.
    """
    csv_path = ctx.source
    table = read_table(csv_path)
    columns = {_normalise(name): name for name in table.columns}
    found = list(table.columns)

    required = {"path": path_column, "label": label_column}
    missing = [name for name in required.values() if _normalise(name) not in columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing required column(s) {missing}; columns found: {listed_names(found)}")
    chosen: dict[str, str | None] = {
        "path": columns[_normalise(path_column)],
        "label": columns[_normalise(label_column)],
        "patient": _optional_column(csv_path, columns, patient_column, DEFAULT_PATIENT_COLUMN, found),
        "mask": _optional_column(csv_path, columns, mask_column, DEFAULT_MASK_COLUMN, found),
    }
    for key in KNOWN_COLUMNS:
        # May be the label column too (a BI-RADS label column also fills ``birads``).
        chosen[key] = next((columns[a] for a in (key, *COLUMN_ALIASES.get(key, ())) if a in columns), None)
    used = {c for c in chosen.values() if c}
    kept = _kept_columns(csv_path, columns, keep_columns, found)
    extras = {
        c: META_COLUMNS.get(_normalise(c), c)
        for c in table.columns
        if c not in used and (_normalise(c) in META_COLUMNS or c in kept)
    }
    dropped = [c for c in table.columns if c not in used and c not in extras]
    if dropped:
        ctx.warn(
            f"{len(dropped)} column(s) not copied into meta, as they may hold personal data: {listed_names(dropped)}; "
            "keep_columns=NAME[,NAME] keeps a column you know is safe"
        )
    # Identifier values: never in an output; a path or message holding one gets the pseudonym instead.
    identifying = [
        c
        for c in table.columns
        if c in (chosen["patient"], chosen["study_id"])
        or (c not in used and c not in extras and IDENTIFIER_COLUMN.search(_normalise(c)))
    ]
    redactor = Redactor(SOURCE_NAME, (str(v) for c in identifying for v in table[c]))

    base = Path(base_dir).expanduser().resolve() if base_dir else csv_path.parent
    chosen["patient"] = _usable_patient_column(ctx, table, chosen["patient"], patient_regex)
    pattern = compile_patient_regex(patient_regex)
    seen_ids: dict[str, int] = {}  # image_id -> row: a repeated id would overwrite the first row's mask file
    listings: dict[Path, dict[str, list[Path]]] = {}  # folder -> its files, for paths given without extension
    left_out: list[str] = []  # meta values not kept (ages over 89, unreadable ages)
    for index, row in enumerate(table.to_dict("records")):
        item = f"{csv_path.name} row {index + 2}"
        row_ids = [_cell(row, c) for c in identifying]
        try:
            record = _row_record(
                ctx, row, chosen, extras, base, index + 2, seen_ids, pattern, listings, redactor, row_ids, left_out
            )
        except _BadRow as exc:
            ctx.skip(item, redactor(str(exc), row_ids))
            continue
        ctx.add(record)
    if left_out:
        ctx.warn(
            f"{len(left_out)} age value(s) left out of meta: over {MAX_AGE} (an age over {MAX_AGE} identifies) "
            "or not a number of years"
        )
    unknown = sum(1 for r in ctx.records if r.meta.get("patient_unknown"))
    if unknown:
        ctx.warn(
            f"{unknown} image(s) have no patient key, so each is its own patient and a split cannot keep one "
            "woman's images on one side; give patient_column=NAME or patient_regex=REGEX (on the file name)"
        )


class _BadRow(Exception):
    """A row that cannot become a record; the message is the reason."""


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _usable_patient_column(
    ctx: ImportContext, table: pd.DataFrame, column: str | None, patient_regex: str | None
) -> str | None:
    """The patient column, unless its cells are placeholders ("removed") or one value on every row."""
    if column is None or patient_regex:
        return None
    values = [str(v).strip() for v in table[column]]
    filled = [v for v in values if v and v.lower() not in PLACEHOLDER_PATIENTS]
    placeholders = sum(1 for v in values if v.lower() in PLACEHOLDER_PATIENTS and v)
    if not filled:
        shown = ", ".join(sorted({repr(v) for v in values if v})[:3]) or "empty"
        ctx.warn(f"patient column {column!r} holds no identifier ({shown} on every row): ignored")
        return None
    if len(filled) >= SINGLE_PATIENT_ROWS and len(set(filled)) == 1:
        ctx.warn(
            f"patient column {column!r} has one value on all {len(filled)} filled rows: not a patient key, ignored"
        )
        return None
    if placeholders:
        ctx.warn(f"patient column {column!r}: {placeholders} placeholder cell(s) (e.g. 'removed') read as unknown")
    return column


def _kept_columns(csv_path: Path, columns: dict[str, str], keep_columns: str | None, found: list[str]) -> set[str]:
    """The columns ``keep_columns`` names (``a,b``); each must exist and must not look like an identifier."""
    kept: set[str] = set()
    for name in (keep_columns or "").split(","):
        if not name.strip():
            continue
        actual = columns.get(_normalise(name))
        if actual is None:
            raise DatasetError(
                f"{csv_path}: keep_columns: column {name.strip()!r} not found; columns found: {listed_names(found)}"
            )
        if IDENTIFIER_COLUMN.search(_normalise(actual)):
            raise DatasetError(
                f"{csv_path}: keep_columns: column {actual!r} looks like a personal identifier (name, birth date, "
                "MRN, accession, institution ...) and is never copied into the dataset"
            )
        kept.add(actual)
    return kept


def _optional_column(
    csv_path: Path, columns: dict[str, str], wanted: str | None, default: str, found: list[str]
) -> str | None:
    """The actual column for an optional role; an explicitly named column must exist."""
    if wanted is None:
        return None
    actual = columns.get(_normalise(wanted))
    if actual is None and _normalise(wanted) != _normalise(default):
        raise DatasetError(f"{csv_path}: column {wanted!r} not found; columns found: {listed_names(found)}")
    return actual


def _cell(row: dict[str, Any], column: str | None) -> str:
    if column is None:
        return ""
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _row_record(
    ctx: ImportContext,
    row: dict[str, Any],
    chosen: dict[str, str | None],
    extras: dict[str, str],
    base: Path,
    row_no: int,
    seen_ids: dict[str, int],
    pattern: re.Pattern[str] | None,
    listings: dict[Path, dict[str, list[Path]]],
    redactor: Redactor,
    row_ids: list[str],
    left_out: list[str],
) -> ImageRecord:
    raw_path = _cell(row, chosen["path"])
    if not raw_path:
        raise _BadRow("empty image path")
    label = _cell(row, chosen["label"]).lower()
    if not label:
        raise _BadRow("empty label")
    path = _find_file(_resolve(base, raw_path), listings)
    patient_raw = _cell(row, chosen["patient"])
    if patient_raw.lower() in PLACEHOLDER_PATIENTS:
        patient_raw = ""
    if pattern is not None:
        match = pattern.search(path.name)
        value = patient_key(match) if match else None
        if not value:
            raise _BadRow(f"file name does not match patient_regex {pattern.pattern!r} (no patient key)")
        patient_raw = value
        row_ids.append(value)
        redactor.add(value)

    def clean(text: str) -> str:
        """A value copied from the table, with any identifier of this row (or a known one) pseudonymised."""
        return redactor(text, row_ids)

    birads_raw = _cell(row, chosen["birads"])
    birads = _parse_birads(birads_raw)
    meta: dict[str, Any] = {"csv_row": row_no}
    if birads_raw and not birads_raw.isdigit():
        meta["birads_raw"] = clean(birads_raw)

    pathology_raw = _cell(row, chosen["pathology"]).lower()
    pathology = _parse_pathology(pathology_raw) if pathology_raw else (label if label in PATHOLOGIES else None)
    if pathology_raw and pathology is None:
        meta["pathology_raw"] = clean(pathology_raw)

    laterality_raw = _cell(row, chosen["laterality"])
    laterality = LATERALITIES.get(laterality_raw.lower())
    if laterality_raw and laterality is None:
        meta["laterality_raw"] = clean(laterality_raw)

    image_id = _cell(row, chosen["image_id"])
    if image_id and redactor.found_in(image_id, row_ids):
        image_id = pseudonymous_id(image_id, f"{SOURCE_NAME}-img", digest_size=8)
    if not image_id:  # never the file name: it may be the patient's name
        image_id = pseudonymous_id(_path_key(base, path), f"{SOURCE_NAME}-img", digest_size=8)
    if image_id in seen_ids:
        raise _BadRow(f"duplicate image id {image_id!r} (first: row {seen_ids[image_id]})")
    if not patient_raw:
        meta["patient_unknown"] = True  # each image its own patient: no leakage protection here
    study_raw = _cell(row, chosen["study_id"])
    split = _cell(row, chosen["split"]).lower()

    record = ImageRecord(
        image_id=image_id,
        image_path=str(path),
        label_name=label,
        pathology=pathology,
        birads=birads,
        density=clean(_cell(row, chosen["density"])) or None,
        # Source sheets may hold real identifiers: only pseudonyms reach the manifest.
        patient_id=pseudonymous_id(patient_raw or f"image:{path}", SOURCE_NAME),
        study_id=pseudonymous_id(study_raw, f"{SOURCE_NAME}-study") if study_raw else None,
        laterality=laterality,
        view=clean(_cell(row, chosen["view"])).upper() or None,
        official_split=SPLITS.get(split, split) or None,
        source=SOURCE_NAME,
        meta=meta,
    )
    for column, key in extras.items():
        value = _cell(row, column)
        if not value:
            continue
        if key == "age":
            age = _age(value)
            if age is None:
                left_out.append(column)
                continue
            meta[key] = age
        else:
            meta[key] = clean(value)

    mask_raw = _cell(row, chosen["mask"])
    if mask_raw:
        lesion_type = clean(_cell(row, chosen["lesion_type"])) or None
        _attach_mask(ctx, record, _resolve(base, mask_raw), lesion_type=lesion_type)
    # Last, once the row is good: a file whose path holds an identifier is linked into the dataset.
    record.image_path = ctx.pseudonymous_path(path, _safe_name(image_id), row_ids, redactor)
    seen_ids[image_id] = row_no
    return record


def _age(text: str) -> int | None:
    """Age in whole years from ``45``, ``45.0``, ``45y``, ``045Y``; ``None`` over :data:`MAX_AGE` or unreadable."""
    match = AGE_PATTERN.match(text)
    if not match:
        return None
    age = int(match.group(1))
    return age if 0 < age <= MAX_AGE else None


def _resolve(base: Path, raw: str) -> Path:
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _find_file(path: Path, listings: dict[Path, dict[str, list[Path]]]) -> Path:
    """``path``, or the one file in its folder named ``<path name>`` + ``.ext`` / ``_...``: tables often
    name images by an id alone (INbreast's ``File Name`` 22678622 is ``22678622_<hash>_MG_R_CC_ANON.dcm``)."""
    if path.is_file():
        return path
    if path.parent.is_dir():
        prefix = path.name
        found = _folder_files(path.parent, listings).get(prefix, [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:3])
            raise _BadRow(f"image file ambiguous: {len(found)} files start with {prefix!r} ({names})")
    raise _BadRow(f"image file not found: {path}")


def _folder_files(folder: Path, listings: dict[Path, dict[str, list[Path]]]) -> dict[str, list[Path]]:
    """Files of a folder by the part of their name before the first ``.``, ``_`` or ``-`` (each folder listed once)."""
    if folder not in listings:
        index: dict[str, list[Path]] = {}
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                index.setdefault(re.split(r"[._-]", entry.name, maxsplit=1)[0], []).append(entry)
        listings[folder] = index
    return listings[folder]


def _path_key(base: Path, path: Path) -> str:
    """What a derived image id hashes: the path below ``base`` (the whole path outside it), so that
    equal names in two folders, or ``a.png`` beside ``a.jpg``, get different ids."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _parse_birads(raw: str) -> int | None:
    if not raw:
        return None
    match = BIRADS_PATTERN.match(raw.strip())
    if not match:
        raise _BadRow(f"unparseable BI-RADS value {raw!r} (expected 0-6)")
    return int(match.group(1))


def _parse_pathology(raw: str) -> str | None:
    """``BENIGN_WITHOUT_CALLBACK`` -> benign, ``negative`` -> normal; unknown values -> ``None``."""
    for name in PATHOLOGIES:
        if raw.startswith(name):
            return name
    return "normal" if raw in ("negative", "healthy") else None


def _attach_mask(ctx: ImportContext, record: ImageRecord, mask_path: Path, lesion_type: str | None) -> None:
    """Read the mask, check it fits the image, store it as 0/255 PNG and add its lesion box."""
    try:
        mask = read_image(mask_path).pixels
    except ImageReadError as exc:
        raise _BadRow(f"mask unreadable: {exc}") from exc
    try:
        info = probe_image(record.image_path)
    except ImageReadError as exc:
        raise _BadRow(f"image unreadable: {exc.reason}") from exc
    if mask.shape != (info.height, info.width):
        raise _BadRow(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but the image is {info.width}x{info.height}"
        )
    name = _safe_name(record.image_id)
    record.mask_path = ctx.write_mask(name, mask)
    box = mask_bounding_box(mask)
    if box is None:
        record.meta["mask_empty"] = True  # a valid "no lesion" mask: keep it, no box
        return
    x0, y0, x1, y1 = box
    record.lesions.append(
        Lesion(
            lesion_type=lesion_type,
            pathology=record.pathology,
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            mask_path=record.mask_path,
        )
    )


def _safe_name(image_id: str) -> str:
    """A file name for ``image_id`` that stays inside ``masks/`` (and is unique even after cleaning)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "mask"
    if cleaned == image_id:
        return cleaned
    return f"{cleaned[:100]}-{hashlib.blake2b(image_id.encode(), digest_size=4).hexdigest()}"
