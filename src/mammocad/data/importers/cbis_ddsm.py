"""CBIS-DDSM: the TCIA DICOM tree + ``{mass,calc}_case_description_{train,test}_set.csv``.

- CSV columns are matched after lower-casing and treating ``_`` as a space (the mass CSVs say
  ``breast_density``, the calc CSVs ``breast density``); path cells are stripped (some end in a
  newline).
- One manifest row per full mammogram, keyed by patient, side and view (``P_00001_LEFT_CC``): the
  CSV rows of that image become its lesions, from the mass and the calc CSVs alike (TCIA stores
  the same mammogram once per abnormality type, so keying by the CSV path would import it twice).
- Label: ``malignant`` if any lesion is MALIGNANT, else ``benign`` (BENIGN and
  BENIGN_WITHOUT_CALLBACK; the latter is flagged in ``meta``). ``birads`` is the highest lesion
  ``assessment``; ``density`` is ``breast density``; ``lesion_type`` is ``mass`` or
  ``calcification``; per-lesion descriptors (abnormality id, shape/margins or type/distribution,
  subtlety, assessment, cropped image) are in ``meta["lesions"]``, in lesion order.
- ``official_split`` is ``train``/``test`` from the CSV name (``None`` when an image's rows
  disagree, which ``meta["official_splits"]`` then lists).
- Paths: the CSV paths (``Mass-Training_P_00001_LEFT_CC/1.3.6.../1.3.6.../000000.dcm``) rarely
  exist as written in a TCIA download
  (``CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-NN/1.000000-full mammogram images-NN/1-1.dcm``).
  A path is used as written when it exists (below the source or ``CBIS-DDSM/``); otherwise it is
  resolved through its first component, the case folder, found anywhere below the source: the full
  mammogram is the DICOM of the series folder named ``full mammogram images`` (or the case
  folder's only DICOM). The ROI mask and the cropped image live in the ``<case>_<abnormality id>``
  folder, in one series folder or two, and the CSV sometimes swaps them, so they are told apart by
  their header size alone (Rows/Columns, no pixel decoding): the mask has (about) the full
  mammogram's size, the crop is small.
- Unresolvable full mammograms skip the image; an unresolvable mask leaves that lesion without
  ``mask_path`` (and is listed) but keeps the lesion and the image.
- Masks stay the source's DICOM files (0/255); the importer decodes no pixels, so lesion boxes and
  the image's union ``mask_path`` are left empty: preprocessing derives them from the lesion masks.
- ``patient_id = "cbis-P_00001"`` (CBIS-DDSM ids are already public pseudonyms);
  ``study_id = patient + side``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.data.dicom import probe_dicom
from mammocad.data.importers.base import ImportContext
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "cbis-ddsm"
CSV_PATTERN = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
CASE_PATTERN = re.compile(r"^(mass|calc)-(training|test)_(p_\d+)_(left|right)_(cc|mlo)(?:_(\d+))?$", re.IGNORECASE)
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
LESION_TYPES = {"mass": "mass", "calc": "calcification", "calcification": "calcification"}
REQUIRED = ("patient id", "left or right breast", "image view", "pathology", "image file path")
# Descriptors copied per lesion into meta (normalised column names).
DESCRIPTORS = ("mass shape", "mass margins", "calc type", "calc distribution", "subtlety", "assessment")
# A mask smaller than this share of the full image's area is a crop, whatever its series says.
MIN_MASK_AREA_SHARE = 0.5


@dataclass
class CsvRow:
    """One usable CSV row: one abnormality of one full mammogram."""

    csv_name: str
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
        return f"{self.csv_name} line {self.line}"


def import_cbis_ddsm(ctx: ImportContext, abnormality: str = "both", csv_dir: str | None = None) -> None:
    """Import CBIS-DDSM (see module docstring).

    Inputs: ``ctx.source`` is the download root (the TCIA tree, with or without its ``CBIS-DDSM``
    folder, and normally the CSVs); ``csv_dir`` is where the CSVs are when elsewhere;
    ``abnormality`` is ``mass``, ``calc`` or ``both``. Output: one :class:`ImageRecord` per full
    mammogram via ``ctx.add``; unusable rows, images and masks via ``ctx.skip`` with the reason.
    """
    kinds = {"mass": ("mass",), "calc": ("calc",), "both": ("mass", "calc")}.get(abnormality.strip().lower())
    if kinds is None:
        raise DatasetError(f"abnormality must be 'mass', 'calc' or 'both', got {abnormality!r}")
    csv_files = find_csvs(Path(csv_dir) if csv_dir else ctx.source, kinds)
    rows: list[CsvRow] = []
    for csv_path in csv_files:
        rows += read_case_csv(csv_path, ctx)

    tree = CaseTree(ctx.source)
    by_image: dict[str, list[CsvRow]] = {}
    for row in rows:
        side = "LEFT" if row.side == "L" else "RIGHT"  # ids read like CBIS-DDSM's own case names
        by_image.setdefault(f"{row.patient}_{side}_{row.view}", []).append(row)
    for image_id, image_rows in sorted(by_image.items()):
        record = _image_record(ctx, tree, image_id, image_rows)
        if record is not None:
            ctx.add(record)


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
        raise DatasetError(f"{folder}: no CBIS-DDSM case CSVs found (expected {names}); pass csv_dir=PATH")
    return wanted


def _normalise_column(name: Any) -> str:
    return re.sub(r"[\s_]+", " ", str(name)).strip().lower()


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def read_case_csv(path: Path, ctx: ImportContext) -> list[CsvRow]:
    """Parse one case-description CSV; rows that cannot be used are reported through ``ctx.skip``."""
    match = CSV_PATTERN.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: not a CBIS-DDSM case-description CSV name")
    kind, split = match.group(1).lower(), match.group(2).lower()
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from exc
    table.columns = [_normalise_column(c) for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: lacks the columns {missing} (found: {list(table.columns)})")
    rows = []
    for position, record in enumerate(table.to_dict("records")):
        line = position + 2  # header is line 1
        row = _parse_row(record, path.name, line, kind, split)
        if isinstance(row, str):
            ctx.skip(f"{path.name} line {line}", row)
        else:
            rows.append(row)
    return rows


def _parse_row(record: dict[str, Any], csv_name: str, line: int, kind: str, split: str) -> CsvRow | str:
    """A :class:`CsvRow`, or the reason the row is unusable."""
    patient = (_cell(record.get("patient id")) or "").upper()
    if not re.fullmatch(r"P_\d+", patient):
        return f"unexpected patient_id {patient!r} (expected P_NNNNN)"
    side = {"LEFT": "L", "RIGHT": "R"}.get((_cell(record.get("left or right breast")) or "").upper())
    if side is None:
        return f"unknown breast side {record.get('left or right breast')!r}"
    view = (_cell(record.get("image view")) or "").upper()
    if view not in ("CC", "MLO"):
        return f"unknown image view {record.get('image view')!r}"
    raw_pathology = (_cell(record.get("pathology")) or "").upper()
    if raw_pathology not in PATHOLOGY:
        return f"unknown pathology {record.get('pathology')!r}"
    image_path = _cell(record.get("image file path"))
    if image_path is None:
        return "no image file path"
    lesion_kind = (_cell(record.get("abnormality type")) or kind).lower()
    density = _cell(record.get("breast density"))
    assessment = _int(record.get("assessment"))
    descriptors = {name.replace(" ", "_"): _cell(record.get(name)) for name in DESCRIPTORS if _cell(record.get(name))}
    if "subtlety" in descriptors:
        descriptors["subtlety"] = _int(descriptors["subtlety"])
    if "assessment" in descriptors:
        descriptors["assessment"] = assessment
    return CsvRow(
        csv_name=csv_name,
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
        abnormality_id=_cell(record.get("abnormality id")) or "1",
        image_path=image_path,
        crop_path=_cell(record.get("cropped image file path")),
        mask_path=_cell(record.get("roi mask file path")),
        descriptors=descriptors,
    )


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


class CaseTree:
    """Index of the DICOM files below the source by case folder (``Mass-Training_P_00001_LEFT_CC[_1]``)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.roots = [source, source / "CBIS-DDSM"]
        self.cases: dict[str, list[Path]] = {}
        seen: set[str] = set()
        for folder, dirs, names in os.walk(source, followlinks=True):  # data folders are often symlinked
            seen.add(os.path.realpath(folder))
            dirs[:] = sorted(d for d in dirs if os.path.realpath(Path(folder) / d) not in seen)
            case = next((part for part in Path(folder).relative_to(source).parts if CASE_PATTERN.match(part)), None)
            if case is None:
                continue
            files = self.cases.setdefault(case.lower(), [])
            files += [Path(folder) / n for n in sorted(names) if n.lower().endswith(".dcm") and not n.startswith(".")]

    def exact(self, csv_path: str) -> Path | None:
        """The CSV path itself when it exists below the source (or its ``CBIS-DDSM`` folder)."""
        rel = csv_path.replace("\\", "/").strip().strip("/")
        for root in self.roots:
            candidate = root / rel
            if candidate.is_file():
                return candidate
        return None

    def case_files(self, csv_path: str) -> tuple[str, list[Path]]:
        """(case folder name, its DICOM files) for a CSV path, by the path's first component."""
        case = csv_path.replace("\\", "/").strip().strip("/").split("/")[0].strip()
        return case, self.cases.get(case.lower(), [])


def _series_name(path: Path) -> str:
    return path.parent.name.lower()


def resolve_full_image(tree: CaseTree, csv_path: str) -> tuple[Path | None, str]:
    """The full-mammogram DICOM for a CSV path, or ``None`` and why."""
    exact = tree.exact(csv_path)
    if exact is not None:
        return exact, ""
    case, files = tree.case_files(csv_path)
    if not files:
        return None, f"full mammogram not found: no case folder {case!r} with DICOM files below the source"
    named = [f for f in files if "full mammogram" in _series_name(f)]
    if len(named) == 1:
        return named[0], ""
    if not named and len(files) == 1:
        return files[0], ""
    return None, f"full mammogram ambiguous in case folder {case!r}: {len(named) or len(files)} candidate DICOMs"


def resolve_mask_and_crop(
    tree: CaseTree, row: CsvRow, full_size: tuple[int, int]
) -> tuple[Path | None, Path | None, str]:
    """(ROI mask, cropped image, problem) for one abnormality, told apart by header size."""
    candidates: list[Path] = []
    for listed in (row.mask_path, row.crop_path):
        if listed:
            exact = tree.exact(listed)
            if exact is not None:
                candidates.append(exact)
            candidates += tree.case_files(listed)[1]
    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        return None, None, "ROI mask not found (no abnormality case folder with DICOM files)"
    sizes: dict[Path, tuple[int, int]] = {}
    for path in candidates:
        try:
            info = probe_dicom(path)
        except ImageReadError:
            continue  # a broken candidate is never chosen; the reason is reported if nothing fits
        sizes[path] = (info.width, info.height)
    full_area = full_size[0] * full_size[1]

    def mismatch(path: Path) -> float:
        width, height = sizes[path]
        return abs(width - full_size[0]) + abs(height - full_size[1])

    large = [p for p in sizes if sizes[p][0] * sizes[p][1] >= MIN_MASK_AREA_SHARE * full_area]
    small = [p for p in sizes if p not in large]
    mask = None
    if large:
        best = min(mismatch(p) for p in large)
        closest = [p for p in large if mismatch(p) == best]
        if len(closest) > 1:  # equal sizes: trust the series name
            closest = [p for p in closest if "mask" in _series_name(p)] or closest
        mask = closest[0] if len(closest) == 1 else None
    crop = min(small, key=lambda p: sizes[p][0] * sizes[p][1]) if small else None
    if mask is None:
        reason = "ROI mask ambiguous" if large else "ROI mask not found (no DICOM of about the full image's size)"
        return None, crop, reason
    return mask, crop, ""


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
    try:
        info = probe_dicom(full)
    except ImageReadError as exc:
        ctx.skip(item, f"unreadable full mammogram: {exc.reason}")
        return None

    lesions: list[Lesion] = []
    lesion_meta: list[dict[str, Any]] = []
    for row in rows:
        mask, crop, problem = resolve_mask_and_crop(tree, row, (info.width, info.height))
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
