"""INbreast (public release): ``INbreast.csv`` + ``AllDICOMs/`` + ``AllXML/`` lesion outlines.

Layout read (``ctx.source`` is the INbreast folder, or its ``INbreast.csv``/``INbreast.xls``):

- ``INbreast.csv`` (``;``-separated, CRLF; the same table ships as ``INbreast.xls``), columns
  ``Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads``, one row per
  image. ``Patient ID`` and ``Patient age`` are the literal text ``removed`` in the public release.
  Column names match case-insensitively ignoring spaces/punctuation; ``File Name`` and ``Bi-Rads``
  are required. The CSV is preferred when both exist; ``.xls``/``.xlsx`` copies are read too.
- ``AllDICOMs/<File Name>_<16-hex patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm``: the file is matched to
  its row by the leading ``File Name``; the hash is the only patient key the release has.
- ``AllXML/<File Name>.xml``: OsiriX ROI export, an Apple XML plist read with :mod:`plistlib`
  (entity declarations are refused, no code is run): ``{"Images": [{"ImageIndex", "NumberOfROIs",
  "ROIs": [{"Name", "NumberOfPoints", "Point_px": ["(x, y)", ...], "Area", "Center", ...}]}]}``.

Cleaning, step by step:

- One manifest row per CSV row whose DICOM exists, in CSV order; ``image_id`` = ``File Name``.
  Rows without a DICOM (``DICOM not found``), with two DICOMs of one ``File Name`` (ambiguous), a
  repeated ``File Name`` or no ``File Name`` are skipped as ``INbreast.csv row N`` (the header is
  row 1). DICOMs that no row names are skipped (``no row in INbreast.csv``), and so are XMLs.
- Labels: ``label="birads"`` (default) gives ``birads_1`` ... ``birads_6`` with ``4a``/``4b``/``4c``
  kept as distinct classes (``birads_4a``); ``label="normal-benign-malignant"`` groups BI-RADS
  1 -> ``normal``, 2-3 -> ``benign``, 4a-6 -> ``malignant``. INbreast publishes **no biopsy
  pathology** in this table, so the grouping is a BI-RADS-based approximation and ``pathology``
  stays empty in both modes. ``birads`` is the digit (4 for 4a/4b/4c); the raw value is in
  ``meta.birads_raw``. A BI-RADS cell that is not 0-6/4a-4c is skipped naming the row and value
  (BI-RADS 0 is skipped in the grouping mode, which has no class for it).
- ``density`` = the ACR value 1-4; an empty or other value (one real row has an empty ACR) leaves
  density empty, with one warning listing the rows.
- Patients: ``pseudonymous_id(<hash>, "inbreast")`` from the DICOM file name. A file name without
  a hash falls back to a usable CSV ``Patient ID`` (anything but ``removed``/empty, pseudonymised),
  else the image is its own patient, with a warning (such images cannot be kept together in a
  split). ``study_id`` = patient + acquisition month (``YYYYMM``). Messages name ``File Name``
  only, never the hash.
- Laterality and view from the CSV (``CC``, ``MLO``, and ``FB`` as written); when a cell is empty,
  from the file name, whose ``ML`` means MLO. A CSV/file-name disagreement keeps the CSV value and
  is reported in one warning.
- ``meta``: ``csv_row``, ``acr`` and ``birads_raw`` as written, ``acquisition_month`` (``YYYY-MM``;
  never a full date), ``annotated`` (an XML was found). ``Patient age`` is not read.
- Images without an XML are kept as unannotated (no lesions). An XML that cannot be parsed
  (truncated, not a plist, entity declarations, missing ``Images``/``ROIs``, wrong types,
  unparseable points) makes the image's annotation unknown, so **the image is skipped** with the
  XML name and reason (``annotation XML unreadable``) rather than imported as lesion-free.
- Each ROI becomes one :class:`Lesion` with ``lesion_type`` = the normalised ROI name (``mass``,
  ``calcification`` (also ``Calcifications``), ``cluster``, ``spiculated_region`` (also
  ``Espiculated Region``), ``distortion``, ``asymmetry`` (also ``Assymetry``), otherwise the name
  lower-cased with ``_`` for other characters, e.g. ``point_1``, ``unnamed``); pectoral-muscle
  ROIs are not lesions and are ignored. ROIs of all ``Images`` entries are used.
- Geometry (pixels, top-left origin, ``Point_px`` rounded to the nearest pixel): ROIs with >= 3
  points are filled polygons (``cv2.fillPoly``, outline included) written to
  ``masks/<id>_<k>.png``, box = the mask's bounding box, centre = the box centre; the image gets
  the union ``masks/<id>.png``. ROIs with 1-2 points (most calcifications are single points) are
  point lesions: centre = mean of the points as given (sub-pixel), box = the pixels they fall in,
  no mask. Points more than one pixel outside the image (or an ROI with no points) cost that lesion
  its geometry (listed as skipped ``<File Name> ROI k``); the lesion itself is kept; points up to
  one pixel outside are clipped to the border.

Why one module: INbreast's workbook, file naming and OsiriX outlines are its
format quirks, and they belong together.
"""

from __future__ import annotations

import math
import plistlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import cv2
import numpy as np
import pandas as pd

from mammocad.data.importers.base import ImportContext, cell_text, pseudonymous_id
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.data.masks import mask_bounding_box
from mammocad.data.sheets import WORKBOOK_SUFFIXES, read_csv_table, read_workbook_table
from mammocad.errors import DatasetError

SOURCE_NAME = "inbreast"
LABEL_MODES = ("birads", "normal-benign-malignant")
BIRADS_GROUPS = {"1": "normal", "2": "benign", "3": "benign"}  # 4*, 5, 6 -> malignant
BIRADS_PATTERN = re.compile(r"^(?:bi-?rads)?\s*([0-6])(?:\.0+)?\s*([abc])?$", re.IGNORECASE)
HASH_PATTERN = re.compile(r"^[0-9a-f]{16}$", re.IGNORECASE)
POINT_PATTERN = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)$")
NO_PATIENT = {"", "removed", "nan", "none"}
ROI_NAMES = {
    "mass": "mass",
    "calcification": "calcification",
    "calcifications": "calcification",
    "cluster": "cluster",
    "spiculated_region": "spiculated_region",
    "espiculated_region": "spiculated_region",
    "distortion": "distortion",
    "asymmetry": "asymmetry",
    "assymetry": "asymmetry",
    "asimmetry": "asymmetry",
}
NOT_LESIONS = {"pectoralmuscle", "pectoral_muscle"}
FILE_VIEWS = {"ML": "MLO"}  # INbreast file names say ML for the MLO view
EDGE_TOLERANCE = 1  # outline points may sit on the far border; farther out means a wrong outline
MAX_XML_BYTES = 64 * 1024 * 1024  # real files are kilobytes; refuse to parse absurd ones
_LISTED = 10  # file names listed in a warning


@dataclass
class DicomFile:
    """An ``AllDICOMs`` file and what its name says."""

    path: Path
    file_name: str
    patient_hash: str | None
    laterality: str | None
    view: str | None


@dataclass
class Roi:
    """One parsed ROI: its lesion type and pixel points (x, y) as given."""

    lesion_type: str
    points: list[tuple[float, float]]


class _BadXml(Exception):
    """An annotation file that cannot be trusted; the message is the reason."""


def import_inbreast(
    ctx: ImportContext,
    label: str = "birads",
    csv: str | None = None,
    dicom_dir: str | None = None,
    xml_dir: str | None = None,
) -> None:
    """Import the INbreast release (see module docstring).

    Inputs: ``ctx.source`` = the INbreast folder (holding ``INbreast.csv`` or ``INbreast.xls``,
    ``AllDICOMs/``, ``AllXML/``) or the table file itself; ``csv``, ``dicom_dir`` and ``xml_dir``
    override where each part is; ``label`` = ``birads`` (default) or ``normal-benign-malignant``.
    Output: one :class:`ImageRecord` per usable row via ``ctx.add`` (lesion and union masks through
    ``ctx.write_mask``); everything unusable via ``ctx.skip``. Raises :class:`DatasetError` when the
    table or the DICOM folder is missing or unreadable, or ``label`` is unknown.
    """
    if label not in LABEL_MODES:
        raise DatasetError(f"inbreast: unknown label {label!r}; valid: {', '.join(LABEL_MODES)}")
    source = ctx.source
    root = source.parent if source.is_file() else source
    table_path = Path(csv).expanduser().resolve() if csv else (source if source.is_file() else find_table(root))
    dicoms_root = Path(dicom_dir).expanduser().resolve() if dicom_dir else _child(root, "AllDICOMs")
    if dicoms_root is None or not dicoms_root.is_dir():
        where = dicoms_root if dicoms_root is not None else root / "AllDICOMs"
        raise DatasetError(f"{where}: INbreast DICOM folder not found (pass --set dicom_dir=PATH)")
    xml_root = Path(xml_dir).expanduser().resolve() if xml_dir else _child(root, "AllXML")
    if xml_root is not None and not xml_root.is_dir():
        if xml_dir:
            raise DatasetError(f"{xml_root}: INbreast XML folder not found")
        xml_root = None
    if xml_root is None:
        ctx.warn(f"{root}: no AllXML folder; no lesion annotations imported (every image unannotated)")

    table = read_inbreast_table(table_path)
    columns = {_column_key(name): name for name in table.columns}
    missing = [name for name in ("file_name", "bi_rads") if name not in columns]
    if missing:
        names = [{"file_name": "File Name", "bi_rads": "Bi-Rads"}[m] for m in missing]
        raise DatasetError(
            f"{table_path}: not the INbreast table, lacks {names} (columns found: {list(table.columns)})"
        )
    dicoms = index_dicoms(ctx, dicoms_root)
    xmls = index_xmls(xml_root) if xml_root is not None else {}

    table_name = table_path.name
    seen: dict[str, int] = {}
    no_density: list[int] = []
    disagreements: list[str] = []
    own_patient: list[str] = []
    for position, row in enumerate(table.to_dict("records")):
        row_no = position + 2
        item = f"{table_name} row {row_no}"
        cells = {key: cell_text(row.get(name)) for key, name in columns.items()}
        if not any(cells.values()):
            continue  # a blank spreadsheet row
        file_name = _file_name(cells.get("file_name"))
        if file_name is None:
            ctx.skip(item, f"no usable File Name ({cells.get('file_name')!r})")
            continue
        item = f"{table_name} row {row_no} (File Name {file_name})"
        if file_name in seen:
            ctx.skip(item, f"File Name listed twice (first on row {seen[file_name]})")
            continue
        seen[file_name] = row_no
        raw_birads = cells.get("bi_rads") or ""
        parsed = parse_birads(raw_birads)
        if parsed is None:
            ctx.skip(item, f"unknown BI-RADS value: {raw_birads!r} (expected 0-6, 4a/4b/4c)")
            continue
        birads, suffix = parsed
        if label == "birads":
            label_name = f"birads_{birads}{suffix}"
        elif birads == 0:
            ctx.skip(item, "BI-RADS 0 (incomplete) has no normal/benign/malignant group")
            continue
        else:
            label_name = BIRADS_GROUPS.get(str(birads), "malignant")
        found = dicoms.get(file_name, [])
        if not found:
            ctx.skip(item, f"DICOM not found (no {dicoms_root.name} file named {file_name}_*.dcm)")
            continue
        if len(found) > 1:
            ctx.skip(item, f"DICOM ambiguous: {len(found)} files in {dicoms_root.name} start with {file_name}_")
            continue
        dicom = found[0]

        acr = cells.get("acr")
        density = acr if acr in ("1", "2", "3", "4") else None
        if density is None:
            no_density.append(row_no)
        month = _month(cells.get("acquisition_date"))
        patient = _patient(dicom, cells.get("patient_id"))
        if patient is None:
            own_patient.append(file_name)
            patient = pseudonymous_id(f"file:{file_name}", SOURCE_NAME)
        laterality = _laterality(cells.get("laterality")) or dicom.laterality
        view = (cells.get("view") or "").upper() or dicom.view
        if (dicom.laterality and laterality != dicom.laterality) or (dicom.view and view != dicom.view):
            disagreements.append(f"{file_name} (CSV {laterality} {view}, file {dicom.laterality} {dicom.view})")

        record = ImageRecord(
            image_id=file_name,
            image_path=str(dicom.path.resolve()),
            label_name=label_name,
            patient_id=patient,
            source=SOURCE_NAME,
            birads=birads,
            density=density,
            study_id=f"{patient}-{month.replace('-', '')}" if month else patient,
            laterality=laterality,
            view=view or None,
            meta={
                "csv_row": row_no,
                "acr": acr,
                "birads_raw": raw_birads,
                "annotated": file_name in xmls,
                **({"acquisition_month": month} if month else {}),
            },
        )
        xml_path = xmls.pop(file_name, None)
        if xml_path is not None and not _add_lesions(ctx, record, dicom.path, xml_path, item):
            continue
        ctx.add(record)

    for file_name in sorted(set(dicoms) - set(seen)):
        ctx.skip(f"{dicoms_root.name} file {file_name}", f"no row in {table_name}")
    for file_name, path in sorted(xmls.items()):
        if file_name not in seen:
            ctx.skip(f"{path.parent.name}/{path.name}", f"no row in {table_name}")
    if no_density:
        ctx.warn(f"{table_name}: no valid ACR density (1-4) on row(s) {_listed(no_density)}; density left empty")
    if disagreements:
        ctx.warn(
            f"{len(disagreements)} image(s) whose file name disagrees with {table_name} on laterality/view; "
            f"the CSV value is kept: {_listed(disagreements)}"
        )
    if own_patient:
        ctx.warn(
            f"{len(own_patient)} image(s) have no patient hash in their DICOM file name and no Patient ID in "
            f"{table_name}; each is its own patient, so a split cannot keep a person's images together: "
            f"{_listed(own_patient)}"
        )


# --- inputs ---------------------------------------------------------------------------------


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name``, matched case-insensitively; ``None`` when absent."""
    exact = folder / name
    if exact.exists():
        return exact
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.name.lower() == name.lower():
                return entry
    return None


def find_table(root: Path) -> Path:
    """``INbreast.csv`` in ``root``, else ``INbreast.xls``/``.xlsx``."""
    for name in ("INbreast.csv", "INbreast.xls", "INbreast.xlsx"):
        found = _child(root, name)
        if found is not None and found.is_file():
            return found
    raise DatasetError(f"{root}: no INbreast.csv or INbreast.xls here (pass the table as the source or --set csv=PATH)")


def read_inbreast_table(path: Path) -> pd.DataFrame:
    """The INbreast table as strings, from the CSV (separator and encoding sniffed) or the XLS."""
    if not path.is_file():
        raise DatasetError(f"{path}: INbreast table not found")
    if path.suffix.lower() not in WORKBOOK_SUFFIXES:
        return read_csv_table(path)

    def missing(header: list[str]) -> list[str]:
        names = {re.sub(r"[\s_-]+", " ", h).strip().lower() for h in header}
        return [column for column in ("file name", "bi rads") if column not in names]

    sheet = read_workbook_table(path, missing)
    cells = [
        ["" if v is None else str(int(v) if isinstance(v, float) and v.is_integer() else v) for v in row]
        for _, row in sheet.rows
    ]
    table = pd.DataFrame(cells, columns=sheet.columns, dtype=str)
    table = table.loc[:, [c for c in table.columns if c]]
    if table.empty:
        raise DatasetError(f"{path}: the spreadsheet has no rows")
    return table


def index_dicoms(ctx: ImportContext, folder: Path) -> dict[str, list[DicomFile]]:
    """``File Name`` -> the ``.dcm`` files below ``folder`` whose names start with it."""
    found: dict[str, list[DicomFile]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() != ".dcm" or path.name.startswith("."):
            continue
        parsed = parse_dicom_name(path)
        if parsed is None:
            ctx.skip(f"{folder.name} file {path.name}", "name does not start with an INbreast File Name")
            continue
        found.setdefault(parsed.file_name, []).append(parsed)
    return found


def parse_dicom_name(path: Path) -> DicomFile | None:
    """What ``<File Name>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm`` says; ``None`` without a File Name."""
    tokens = path.stem.split("_")
    if not tokens[0].isdigit():
        return None
    patient_hash = tokens[1].lower() if len(tokens) > 1 and HASH_PATTERN.match(tokens[1]) else None
    laterality = view = None
    upper = [t.upper() for t in tokens]
    if "MG" in upper[1:]:
        after = upper[upper.index("MG", 1) + 1 :]
        if after and after[0] in ("L", "R"):
            laterality = after[0]
        if len(after) > 1 and after[1] != "ANON":
            view = FILE_VIEWS.get(after[1], after[1])
    return DicomFile(path, _file_name(tokens[0]) or tokens[0], patient_hash, laterality, view)


def index_xmls(folder: Path) -> dict[str, Path]:
    """``File Name`` -> ``AllXML/<File Name>.xml``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() == ".xml" and not path.name.startswith("."):
            key = _file_name(path.stem)
            if key is not None:
                found.setdefault(key, path)
    return found


# --- cells ----------------------------------------------------------------------------------


def _column_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")
    return {"birads": "bi_rads", "filename": "file_name", "patientid": "patient_id"}.get(key, key)


def _file_name(value: str | None) -> str | None:
    """The File Name as digits (a spreadsheet may hand it over as ``22678622.0``)."""
    text = re.sub(r"\.0+$", "", (value or "").strip())
    return text if text.isdigit() else None


def parse_birads(text: str) -> tuple[int, str] | None:
    """``(digit, suffix)`` from ``1``..``6``, ``4a``/``4b``/``4c`` (any case); ``None`` otherwise."""
    match = BIRADS_PATTERN.match(text.strip())
    if match is None:
        return None
    digit, suffix = int(match.group(1)), (match.group(2) or "").lower()
    if suffix and digit != 4:
        return None
    return digit, suffix


def _month(value: str | None) -> str | None:
    """``YYYY-MM`` from ``YYYYMM`` (or the first six digits of a longer date); never the day."""
    digits = re.sub(r"\D", "", value or "")
    if len(digits) < 6:
        return None
    year, month = digits[:4], digits[4:6]
    return f"{year}-{month}" if 1900 <= int(year) <= 2100 and 1 <= int(month) <= 12 else None


def _laterality(value: str | None) -> str | None:
    return {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get((value or "").strip().upper())


def _patient(dicom: DicomFile, csv_patient: str | None) -> str | None:
    if dicom.patient_hash:
        return pseudonymous_id(dicom.patient_hash, SOURCE_NAME)
    if csv_patient and csv_patient.strip().lower() not in NO_PATIENT:
        return pseudonymous_id(csv_patient, SOURCE_NAME)
    return None


def _listed(items: list[Any]) -> str:
    shown = ", ".join(map(str, items[:_LISTED]))
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


# --- annotations ----------------------------------------------------------------------------


def roi_type(name: Any) -> str | None:
    """The normalised lesion type of an ROI name; ``None`` for ROIs that are not lesions."""
    key = re.sub(r"[^a-z0-9]+", "_", str(name or "").strip().lower()).strip("_") or "unnamed"
    if key in NOT_LESIONS:
        return None
    return ROI_NAMES.get(key, key)


def parse_point(text: Any) -> tuple[float, float]:
    """``(x, y)`` from a ``Point_px`` string ``"(x, y)"``; raises :class:`_BadXml` otherwise."""
    match = POINT_PATTERN.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise _BadXml(f"Point_px entry {str(text)[:40]!r} is not '(x, y)'")
    try:
        x, y = float(match.group(1)), float(match.group(2))
    except ValueError as exc:
        raise _BadXml(f"Point_px entry {text[:40]!r} is not '(x, y)'") from exc
    if not (math.isfinite(x) and math.isfinite(y)):
        raise _BadXml(f"Point_px entry {text[:40]!r} is not finite")
    return x, y


def read_rois(path: Path) -> list[Roi]:
    """The lesion ROIs of an INbreast XML plist; raises :class:`_BadXml` with the reason."""
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            raise _BadXml(f"file larger than {MAX_XML_BYTES // (1024 * 1024)} MiB")
        with path.open("rb") as handle:
            data = plistlib.load(handle, fmt=plistlib.FMT_XML)
    except _BadXml:
        raise
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, KeyError, OSError) as exc:
        raise _BadXml(f"not a readable XML plist ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Images"), list):
        raise _BadXml("no 'Images' array at the top")
    rois: list[Roi] = []
    for i, image in enumerate(data["Images"]):
        if not isinstance(image, dict) or not isinstance(image.get("ROIs", []), list):
            raise _BadXml(f"Images[{i}] is not a dict with a 'ROIs' array")
        for k, roi in enumerate(image.get("ROIs", [])):
            if not isinstance(roi, dict):
                raise _BadXml(f"Images[{i}].ROIs[{k}] is not a dict")
            points = roi.get("Point_px", [])
            if not isinstance(points, list):
                raise _BadXml(f"Images[{i}].ROIs[{k}].Point_px is not an array")
            kind = roi_type(roi.get("Name"))
            parsed = [parse_point(p) for p in points]
            if kind is not None:
                rois.append(Roi(kind, parsed))
    return rois


def _add_lesions(ctx: ImportContext, record: ImageRecord, image: Path, xml_path: Path, item: str) -> bool:
    """Turn the XML's ROIs into the record's lesions and masks; ``False`` when the image is skipped."""
    xml_item = f"{xml_path.parent.name}/{xml_path.name}"
    try:
        rois = read_rois(xml_path)
    except _BadXml as exc:
        ctx.skip(xml_item, f"annotation XML unreadable: {exc}; image {record.image_id} skipped (lesions unknown)")
        return False
    if not rois:
        return True
    info = ctx.probe(image, item, "DICOM")
    if info is None:
        return False
    width, height = info.width, info.height
    union = np.zeros((height, width), dtype=np.uint8)
    for k, roi in enumerate(rois):
        lesion = Lesion(lesion_type=roi.lesion_type)
        record.lesions.append(lesion)
        roi_item = f"{record.image_id} ROI {k} ({xml_item})"
        if not roi.points:
            ctx.skip(roi_item, "ROI has no points; lesion kept without geometry")
            continue
        points = np.rint(np.asarray(roi.points, dtype=np.float64)).astype(np.int64)
        low, high = points.min(axis=0), points.max(axis=0)
        if (
            (low < -EDGE_TOLERANCE).any()
            or high[0] > width - 1 + EDGE_TOLERANCE
            or high[1] > height - 1 + EDGE_TOLERANCE
        ):
            ctx.skip(
                roi_item,
                f"ROI points outside the {width}x{height} image (x {low[0]}..{high[0]}, y {low[1]}..{high[1]});"
                " lesion kept without geometry",
            )
            continue
        points[:, 0] = points[:, 0].clip(0, width - 1)
        points[:, 1] = points[:, 1].clip(0, height - 1)
        if len(points) < 3:  # a point (or two): no outline to fill
            xs, ys = points[:, 0], points[:, 1]
            lesion.x0, lesion.y0, lesion.x1, lesion.y1 = (
                int(xs.min()),
                int(ys.min()),
                int(xs.max()) + 1,
                int(ys.max()) + 1,
            )
            lesion.center_x = float(np.mean([p[0] for p in roi.points]))
            lesion.center_y = float(np.mean([p[1] for p in roi.points]))
            continue
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(mask, [points.astype(np.int32).reshape(-1, 1, 2)], 1)
        box = mask_bounding_box(mask)
        if box is None:  # unreachable: fillPoly marks the outline's own pixels, all clipped into the image
            raise ValueError(f"{record.image_id} ROI {k}: the outline filled no pixel")
        lesion.x0, lesion.y0, lesion.x1, lesion.y1 = box
        lesion.center_x, lesion.center_y = (lesion.x0 + lesion.x1) / 2, (lesion.y0 + lesion.y1) / 2
        lesion.mask_path = ctx.write_mask(f"{record.image_id}_{k}", mask)
        union |= mask
    if union.any():
        record.mask_path = ctx.write_mask(record.image_id, union)
    return True
