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
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammocad.data.images import probe_image
from mammocad.data.importers.base import NO_SIZE_LIMIT, ImportContext
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "cbis-ddsm"
CSV_PATTERN = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
CASE_PATTERN = re.compile(r"^(mass|calc)-(training|test)_(p_\d+)_(left|right)_(cc|mlo)(?:_(\d+))?$", re.IGNORECASE)
# A DICOM UID as a folder name (the Kaggle ``jpeg/<SeriesInstanceUID>/`` folders, the CSV paths).
UID_PATTERN = re.compile(r"^\d+(?:\.\d+){3,}$")
DICOM_INFO_NAME = "dicom_info.csv"
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
LESION_TYPES = {"mass": "mass", "calc": "calcification", "calcification": "calcification"}
REQUIRED = ("patient id", "left or right breast", "image view", "pathology", "image file path")
# Descriptors copied per lesion into meta (normalised column names).
DESCRIPTORS = ("mass shape", "mass margins", "calc type", "calc distribution", "subtlety", "assessment")
# A mask smaller than this share of the full image's area is a crop, whatever its series says.
MIN_MASK_AREA_SHARE = 0.5
# Image files indexed below the source, by suffix -> kind (a copy may hold one image in two kinds).
IMAGE_KINDS = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
}
# Suffixes tried when a CSV path ending ``.dcm`` does not exist as written (re-released copies).
ALTERNATE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


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


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


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


def _parts(csv_path: str) -> list[str]:
    return [p.strip() for p in csv_path.replace("\\", "/").strip().strip("/").split("/") if p.strip()]


def series_uid(csv_path: str) -> str | None:
    """The SeriesInstanceUID in a CSV path (``<case>/<StudyUID>/<SeriesUID>/<file>``), if it has one."""
    parts = _parts(csv_path)
    candidates = [parts[2]] if len(parts) >= 4 else []
    candidates += parts[-2:-1]
    return next((c for c in candidates if UID_PATTERN.match(c)), None)


def _kind(path: Path | str) -> str | None:
    return IMAGE_KINDS.get(os.path.splitext(str(path))[1].lower())


class CaseTree:
    """Index of the image files below the source: by case folder (``Mass-Training_P_00001_LEFT_CC[_1]``),
    by series-UID folder (``jpeg/1.3.6.1.4.1.9590...``) and by (folder, file name); plus each file's
    series kind (``dicom_info.csv``'s SeriesDescription, else its folder name)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.roots = [source, source / "CBIS-DDSM"]
        self.cases: dict[str, list[Path]] = {}
        self.series: dict[str, list[Path]] = {}
        self.by_tail: dict[tuple[str, str], Path] = {}
        self.descriptions: dict[Path, str] = {}
        self.file_cases: dict[Path, str] = {}  # the case folder a file lies in, if any
        self.info_files: list[Path] = []
        seen: set[str] = set()
        for folder, dirs, names in os.walk(source, followlinks=True):  # data folders are often symlinked
            seen.add(os.path.realpath(folder))
            dirs[:] = sorted(d for d in dirs if os.path.realpath(Path(folder) / d) not in seen)
            here = Path(folder)
            if DICOM_INFO_NAME in names:
                self.info_files.append(here / DICOM_INFO_NAME)
            files = [here / n for n in sorted(names) if _kind(n) and not n.startswith(".")]
            if not files:
                continue
            for path in files:
                self.by_tail.setdefault((here.name.lower(), path.name.lower()), path)
            if UID_PATTERN.match(here.name):
                self.series.setdefault(here.name, []).extend(files)
            case = next((part for part in here.relative_to(source).parts if CASE_PATTERN.match(part)), None)
            if case is not None:
                self.cases.setdefault(case.lower(), []).extend(files)
                self.file_cases.update(dict.fromkeys(files, case.lower()))

    def description(self, path: Path) -> str:
        """What kind of series a file belongs to: dicom_info's description, else its folder's name."""
        return self.descriptions.get(path, path.parent.name).lower()

    def exact(self, csv_path: str) -> Path | None:
        """The CSV path itself when it exists below the source (or its ``CBIS-DDSM`` folder); a path
        ending ``.dcm`` is also tried as ``.png``/``.jpg``/``.tif`` (re-released copies)."""
        rel = "/".join(_parts(csv_path))
        if not rel:
            return None
        variants = [rel]
        if _kind(rel) == "dicom":
            variants += [os.path.splitext(rel)[0] + suffix for suffix in ALTERNATE_SUFFIXES]
        for variant in variants:
            for root in self.roots:
                candidate = root / variant
                if candidate.is_file():
                    return candidate
        return None

    def locate(self, listed: str) -> Path | None:
        """A file named by a path from another machine (``CBIS-DDSM/jpeg/<uid>/1-1.jpg``): by its
        last folder and name, else below the source with leading components dropped."""
        parts = _parts(listed)
        if len(parts) >= 2:
            found = self.by_tail.get((parts[-2].lower(), parts[-1].lower()))
            if found is not None:
                return found
        for start in range(len(parts)):
            candidate = self.source.joinpath(*parts[start:])
            if candidate.is_file():
                return candidate
        return None

    def case_files(self, csv_path: str) -> tuple[str, list[Path]]:
        """(case folder name, its image files) for a CSV path, by the path's first component."""
        parts = _parts(csv_path)
        case = parts[0] if parts else ""
        return case, self.cases.get(case.lower(), [])

    def series_files(self, csv_path: str) -> tuple[str | None, list[Path]]:
        """(series UID, the image files of the folder of that name) for a CSV path; files that lie
        in another case's folder are never taken (UIDs are unique, copies are not always)."""
        uid = series_uid(csv_path)
        if uid is None:
            return None, []
        case = self.case_files(csv_path)[0].lower()
        return uid, [f for f in self.series.get(uid, []) if self.file_cases.get(f, case) == case]

    def add_dicom_info(self, path: Path, ctx: ImportContext) -> int:
        """Index the files that ``dicom_info.csv`` lists (Kaggle copy); returns how many were found."""
        try:
            header, records = read_csv_records(path)
        except DatasetError as exc:
            ctx.skip(path, f"dicom_info.csv not used: {exc}")
            return 0
        columns = [re.sub(r"[\s_]+", "", c).lower() for c in header]
        if not {"imagepath", "filepath"} & set(columns):
            ctx.skip(path, f"dicom_info.csv not used: no image_path or file_path column (found: {header})")
            return 0
        found = 0
        for _, _, fields in records:
            values = dict(zip(columns, fields, strict=False))
            listed = [values.get(c) for c in ("imagepath", "filepath") if values.get(c)]
            image = next((p for p in (self.locate(v) for v in listed if _kind(v)) if p is not None), None)
            if image is None:
                continue
            found += 1
            description = _cell(values.get("seriesdescription"))
            if description:
                self.descriptions[image] = description
            uid = _cell(values.get("seriesinstanceuid"))
            if uid and image not in self.series.setdefault(uid, []):
                self.series[uid].append(image)
            case = _cell(values.get("patientid"))
            if case and CASE_PATTERN.match(case) and image not in self.cases.setdefault(case.lower(), []):
                self.cases[case.lower()].append(image)
        return found


def find_dicom_info(csv_folders: list[Path], tree: CaseTree) -> Path | None:
    """The Kaggle copy's ``dicom_info.csv``: next to the case CSVs, else anywhere below the source."""
    for folder in csv_folders:
        if (folder / DICOM_INFO_NAME).is_file():
            return folder / DICOM_INFO_NAME
    return tree.info_files[0] if tree.info_files else None


def _prefer_kind(paths: list[Path], *wanted: str | None) -> list[Path]:
    """Where ``paths`` mix image kinds (one image stored as .dcm and .png), keep the first wanted kind."""
    if len({_kind(p) for p in paths}) <= 1:
        return paths
    for kind in wanted:
        same = [p for p in paths if _kind(p) == kind]
        if same:
            return same
    return paths


def _pick_full(tree: CaseTree, files: list[Path], csv_path: str) -> Path | None:
    files = _prefer_kind(files, _kind(csv_path), "dicom")
    named = [f for f in files if "full mammogram" in tree.description(f)]
    if len(named) == 1:
        return named[0]
    if not named and len(files) == 1:
        return files[0]
    return None


def resolve_full_image(tree: CaseTree, csv_path: str) -> tuple[Path | None, str]:
    """The full-mammogram image for a CSV path, or ``None`` and why."""
    exact = tree.exact(csv_path)
    if exact is not None:
        return exact, ""
    uid, in_series = tree.series_files(csv_path)
    case, in_case = tree.case_files(csv_path)
    problems = []
    for where, files in ((f"series folder {uid!r}", in_series), (f"case folder {case!r}", in_case)):
        if files:
            chosen = _pick_full(tree, files, csv_path)
            if chosen is not None:
                return chosen, ""
            problems.append(f"full mammogram ambiguous in {where}: {len(files)} candidate images")
    if problems:
        return None, problems[0]
    series = f"no series folder {uid!r} and " if uid else ""
    return None, f"full mammogram not found: {series}no case folder {case!r} with image files below the source"


def resolve_mask_and_crop(
    tree: CaseTree, row: CsvRow, full_size: tuple[int, int], full_kind: str | None = None
) -> tuple[Path | None, Path | None, str]:
    """(ROI mask, cropped image, problem) for one abnormality, told apart by header size."""
    candidates: list[Path] = []
    for listed in (row.mask_path, row.crop_path):
        if listed:
            exact = tree.exact(listed)
            if exact is not None:
                candidates.append(exact)
            candidates += tree.series_files(listed)[1]
            candidates += tree.case_files(listed)[1]
    candidates = _prefer_kind(list(dict.fromkeys(candidates)), _kind(row.mask_path or ""), full_kind, "dicom")
    if not candidates:
        return None, None, "ROI mask not found (no abnormality case or series folder with image files)"
    sizes: dict[Path, tuple[int, int]] = {}
    for path in candidates:
        try:
            info = probe_image(path, max_pixels=NO_SIZE_LIMIT)
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
        if len(closest) > 1:  # equal sizes: trust the series description
            closest = [p for p in closest if "mask" in tree.description(p)] or closest
        mask = closest[0] if len(closest) == 1 else None
    crop = min(small, key=lambda p: sizes[p][0] * sizes[p][1]) if small else None
    if mask is None:
        reason = "ROI mask ambiguous" if large else "ROI mask not found (no image of about the full image's size)"
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
    info = ctx.probe(full, item, "full mammogram")
    if info is None:
        return None

    lesions: list[Lesion] = []
    lesion_meta: list[dict[str, Any]] = []
    for row in rows:
        mask, crop, problem = resolve_mask_and_crop(tree, row, (info.width, info.height), _kind(full))
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
