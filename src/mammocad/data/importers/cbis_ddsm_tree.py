"""Where a CBIS-DDSM CSV path's images are: the index of the image files below the source, in any of
its layouts, and the resolution of full mammograms, ROI masks and crops (the order and the rules
are in :mod:`mammocad.data.importers.cbis_ddsm`'s docstring).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mammocad.data.images import probe_image
from mammocad.data.importers.base import NO_SIZE_LIMIT, ImportContext, cell_text
from mammocad.data.importers.cbis_ddsm_csv import CsvRow, read_csv_records
from mammocad.errors import DatasetError, ImageReadError

CASE_PATTERN = re.compile(r"^(mass|calc)-(training|test)_(p_\d+)_(left|right)_(cc|mlo)(?:_(\d+))?$", re.IGNORECASE)
# A DICOM UID as a folder name (the Kaggle ``jpeg/<SeriesInstanceUID>/`` folders, the CSV paths).
UID_PATTERN = re.compile(r"^\d+(?:\.\d+){3,}$")
DICOM_INFO_NAME = "dicom_info.csv"
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


def _parts(csv_path: str) -> list[str]:
    return [p.strip() for p in csv_path.replace("\\", "/").strip().strip("/").split("/") if p.strip()]


def series_uid(csv_path: str) -> str | None:
    """The SeriesInstanceUID in a CSV path (``<case>/<StudyUID>/<SeriesUID>/<file>``), if it has one."""
    parts = _parts(csv_path)
    candidates = [parts[2]] if len(parts) >= 4 else []
    candidates += parts[-2:-1]
    return next((c for c in candidates if UID_PATTERN.match(c)), None)


def image_kind(path: Path | str) -> str | None:
    """``dicom``, ``png``, ``jpeg`` or ``tiff`` from a file name's suffix; None for other files."""
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
            files = [here / n for n in sorted(names) if image_kind(n) and not n.startswith(".")]
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
        if image_kind(rel) == "dicom":
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
            image = next((p for p in (self.locate(v) for v in listed if image_kind(v)) if p is not None), None)
            if image is None:
                continue
            found += 1
            description = cell_text(values.get("seriesdescription"))
            if description:
                self.descriptions[image] = description
            uid = cell_text(values.get("seriesinstanceuid"))
            if uid and image not in self.series.setdefault(uid, []):
                self.series[uid].append(image)
            case = cell_text(values.get("patientid"))
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
    if len({image_kind(p) for p in paths}) <= 1:
        return paths
    for kind in wanted:
        same = [p for p in paths if image_kind(p) == kind]
        if same:
            return same
    return paths


def _pick_full(tree: CaseTree, files: list[Path], csv_path: str) -> Path | None:
    files = _prefer_kind(files, image_kind(csv_path), "dicom")
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
    candidates = _prefer_kind(list(dict.fromkeys(candidates)), image_kind(row.mask_path or ""), full_kind, "dicom")
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
