"""BCDR (Breast Cancer Digital Repository, D01 digital / F01 film): images + an outlines CSV.

Layout (as BCDR distributes it, ``BCDR-D01_dataset/``)::

    bcdr_d01_outlines.csv          one row per lesion outline
    bcdr_d01_img.csv               one row per image (all views, with or without a lesion)
    patient_<P>/study_<S>/img_<P>_<S>_<series>_<VIEW>.tif      VIEW = RCC, LCC, RO, LO

Both CSVs exist in two spellings (``,`` and ``, `` separated, trailing spaces); both read alike.
Column names are matched after stripping, lower-casing and ``axiliary`` -> ``axillary``
(BCDR's own notes spell ``mammography_axiliary_adenopathy``). Items named ``<file> line N`` point
at the real line N of the file (blank lines are counted).

The outlines CSV has ``patient_id``, ``study_id``, ``series``, ``lesion_id``, ``image_filename``
(relative, often with leading spaces), ``image_view``, ``classification``
(``Benign``/``Malign``/``Malignant``, with stray spaces), ``lw_x_points`` and ``lw_y_points``
(space-separated pixel coordinates of the outline polygon), the ``mammography_*`` finding flags,
``age`` and ``density``. The img CSV has ``patient_id``, ``study_id``, ``series``,
``image_filename``, ``image_type_name`` (``RCC``/``LCC``/``RO``/``LO``), ``image_type_id``,
``age`` and ``density``.

- Laterality and view: the file name's suffix (``img_3_4_1_LO.tif``), else ``image_type_name``,
  else ``image_view`` (BCDR codes it as an integer, 1=RCC 2=LCC 3=RO 4=LO; text codes are read
  too), else ``image_type_id`` (0=RCC 1=LCC 2=RO 3=LO); ``RO``/``LO`` are MLO views. When codes
  disagree with the file name, the file name wins (the distributor's file naming
  ``img_<patient>_<study>_<series>_<view>`` is the one thing every copy shares, and the two CSVs
  number their view codes differently, so a mixed-up code is the likelier error): the image gets
  ``meta.view_conflict`` and the import a warning. Images whose view is unknown are warned about.
- One manifest row per outlined image: its outline rows are its lesions (rows sharing a
  ``lesion_id`` are one lesion whose polygons are united). Label: ``malignant`` if any lesion is
  malignant, else ``benign``; an image with a lesion of unknown classification and no malignant
  lesion is skipped (its label cannot be known).
- Views without an outline (rows of the img CSV, found next to the outlines CSV as
  ``<prefix>_img.csv`` / the single ``*_img.csv``, or given as ``img_csv=PATH``): BCDR outlines
  biopsied lesions only, so such a view shows no annotated lesion. It is imported as label
  ``normal`` (pathology ``normal``, ``meta.no_outline = true``, age/density from the img CSV)
  only when no study of that patient has an outlined lesion in the same breast; otherwise it is
  skipped and listed (the lesion may be in this view without an outline). ``normals=false``
  skips (and lists) them all. A warning counts the normals and says what they are (mostly the
  contralateral breast of a patient with a lesion, not screening-normal women). Without an img
  CSV a warning says that views without an outline cannot be seen.
- Each polygon is rasterised (``cv2.fillPoly``, the outline included) into ``masks/<id>_<k>.png``;
  the image gets the union ``masks/<id>.png``. Lesion box = the polygon's bounding box
  (half-open), centre = the box centre.
- An unusable outline (x/y lists of unequal length, fewer than 3 points, non-numeric values, or
  points outside the image by more than one pixel) costs that lesion its mask and box, and is
  listed; the lesion itself is kept because its classification still decides the image label
  (dropping a malignant lesion would turn the image benign). Points up to one pixel outside are
  clipped to the border.
- ``patient_id = "bcdr-<patient_id>"`` (BCDR ids are public pseudonyms), ``study_id`` adds the
  study; ``lesion_type`` joins the finding flags set on the row (``mass``, ``calcification``,
  ``microcalcification``, ``architectural_distortion``, ``stroma_distortion``,
  ``axillary_adenopathy``); ``density`` and ``age`` (in ``meta``) from the outline row, else
  from the img CSV.

Reading the two CSVs lives in :mod:`~mammocad.data.importers.bcdr_tables`. The rest stays in this
module. Why one module: BCDR's view codes, outline polygons and image records are one
dataset's format quirks, and they belong together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammocad.data.importers.base import ImportContext, cell_text
from mammocad.data.importers.bcdr_tables import (
    Table,
    file_key,
    find_img_csv,
    find_outlines_csv,
    read_table,
    rows_by_image,
)
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.data.masks import mask_bounding_box
from mammocad.errors import DatasetError

SOURCE_NAME = "bcdr"
REQUIRED = ("patient_id", "image_filename", "lw_x_points", "lw_y_points", "classification")
IMG_REQUIRED = ("patient_id", "image_filename")
VIEWS = {
    "RCC": ("R", "CC"),
    "LCC": ("L", "CC"),
    "RO": ("R", "MLO"),
    "LO": ("L", "MLO"),
    "RMLO": ("R", "MLO"),
    "LMLO": ("L", "MLO"),
}
# BCDR's integer view codes: the outlines CSV's image_view is 1-based, the img CSV's image_type_id 0-based.
OUTLINE_VIEW_CODES = {"1": "RCC", "2": "LCC", "3": "RO", "4": "LO"}
IMG_TYPE_CODES = {"0": "RCC", "1": "LCC", "2": "RO", "3": "LO"}
FILENAME_VIEW = re.compile(r"_(RCC|LCC|RO|LO|RMLO|LMLO)$", re.IGNORECASE)
FINDINGS = {
    "mammography_nodule": "mass",
    "mammography_calcification": "calcification",
    "mammography_microcalcification": "microcalcification",
    "mammography_architectural_distortion": "architectural_distortion",
    "mammography_stroma_distortion": "stroma_distortion",
    "mammography_axillary_adenopathy": "axillary_adenopathy",
}
# Outline points may sit on the far border (x == width); farther out means the outline is wrong.
EDGE_TOLERANCE = 1


@dataclass
class Outline:
    """One CSV row: a lesion outline on one image."""

    line: int
    lesion_key: str
    pathology: str | None
    xs: str
    ys: str
    lesion_type: str | None


@dataclass
class ImageRows:
    """The outline rows of one image file."""

    filename: str
    first: dict[str, Any]
    outlines: list[Outline] = field(default_factory=list)


@dataclass
class ViewInfo:
    """Laterality and view of an image, with where they came from and any disagreeing codes."""

    side: str | None
    view: str | None
    source: str | None
    conflicts: dict[str, str] = field(default_factory=dict)


def import_bcdr(
    ctx: ImportContext,
    image_dir: str | None = None,
    img_csv: str | None = None,
    normals: bool | str = True,
) -> None:
    """Import a BCDR outlines CSV, and the views without outlines from its img CSV (module docstring).

    Inputs: ``ctx.source`` is the dataset folder holding one ``*outlines*.csv`` (or the CSV
    itself); images are found at ``image_filename`` below ``image_dir`` (default: the CSV's
    folder); ``img_csv`` names the per-image CSV (default: found next to the outlines CSV);
    ``normals=False`` leaves the views without an outline out (listed as skipped). Output: one
    :class:`ImageRecord` per image via ``ctx.add``, lesion and union masks written through
    ``ctx.write_mask``; unusable rows, images and outlines via ``ctx.skip``; summaries via ``ctx.warn``.
    """
    csv_path = find_outlines_csv(ctx.source)
    root = Path(image_dir) if image_dir else csv_path.parent
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder does not exist")
    table = read_table(csv_path, REQUIRED)
    img_path = find_img_csv(csv_path, img_csv, ctx)
    img_rows = rows_by_image(ctx, read_table(img_path, IMG_REQUIRED)) if img_path else {}
    finder = ImageFinder(root)

    images: dict[str, ImageRows] = {}
    for line, record in table.rows:
        filename = cell_text(record.get("image_filename"))
        if filename is None or cell_text(record.get("patient_id")) is None:
            ctx.skip(f"{csv_path.name} line {line}", "no image_filename or patient_id")
            continue
        entry = images.setdefault(file_key(filename), ImageRows(filename, record))
        lesion_key = cell_text(record.get("lesion_id")) or f"line{line}"
        entry.outlines.append(
            Outline(
                line=line,
                lesion_key=lesion_key,
                pathology=parse_classification(cell_text(record.get("classification"))),
                xs=str(record.get("lw_x_points") or ""),
                ys=str(record.get("lw_y_points") or ""),
                lesion_type="+".join(name for column, name in FINDINGS.items() if _flag(record.get(column))) or None,
            )
        )

    views: dict[str, ViewInfo] = {}
    lesion_breasts: dict[tuple[str, str], list[str]] = {}  # (patient, side) -> "study S lesion L (VIEW)"
    for key, entry in images.items():
        img = img_rows.get(key, (0, {}))[1]
        views[key] = info = resolve_view(entry.filename, entry.first, img)
        if info.side is not None:
            patient = cell_text(entry.first.get("patient_id")) or ""
            study = cell_text(entry.first.get("study_id")) or "?"
            where = lesion_breasts.setdefault((patient, info.side), [])
            where += [
                f"study {study} lesion {k} ({_view_name(info)})"
                for k in dict.fromkeys(o.lesion_key for o in entry.outlines)
            ]

    used_ids: set[str] = set()
    for key, entry in images.items():
        record = _image_record(ctx, csv_path.name, finder, entry, img_rows.get(key), views[key], used_ids)
        if record is not None:
            ctx.add(record)

    if img_path is None:
        ctx.warn(
            f"no BCDR img CSV (*_img.csv) next to {csv_path.name}: only views with a lesion outline were "
            "imported; views without an outline (BCDR's lesion-free views) cannot be seen (pass --set img_csv=PATH)"
        )
    else:
        unoutlined = [(key, row) for key, row in img_rows.items() if key not in images]
        imported = _import_unoutlined(
            ctx, img_path.name, finder, unoutlined, lesion_breasts, _truthy(normals), used_ids
        )
        if imported:
            ctx.warn(
                f"{imported} view(s) listed in {img_path.name} without a lesion outline were imported as label "
                "'normal' (meta.no_outline=true): BCDR outlines biopsied lesions only, so these are breasts with "
                "no annotated lesion in any study (mostly the other breast of a patient with a lesion), not "
                "screening normals; views of a breast with an outlined lesion were skipped; pass --set normals=false "
                "to leave them out"
            )
    _warn_views(ctx)


def _warn_views(ctx: ImportContext) -> None:
    """Summarise images whose view sources disagree, and images without a view."""
    records = [r for r in ctx.records if r.source == SOURCE_NAME]
    conflicts = [r for r in records if r.meta.get("view_conflict")]
    if conflicts:
        example = conflicts[0]
        ctx.warn(
            f"{len(conflicts)} image(s) whose view sources disagree (e.g. {example.image_id}: "
            f"{example.meta['view_conflict']}); used the file name's view where it has one, else "
            "image_type_name, else image_view, else image_type_id (meta.view_conflict keeps them all)"
        )
    unknown = [r.image_id for r in records if r.laterality is None]
    if unknown:
        ctx.warn(
            f"{len(unknown)} image(s) without laterality/view (no view in the file name, no usable "
            f"image_view/image_type_name/image_type_id code), e.g. {unknown[0]}"
        )


def _import_unoutlined(
    ctx: ImportContext,
    img_name: str,
    finder: ImageFinder,
    rows: list[tuple[str, tuple[int, dict[str, str]]]],
    lesion_breasts: dict[tuple[str, str], list[str]],
    normals: bool,
    used_ids: set[str],
) -> int:
    """Views of the img CSV without an outline: ``normal`` records where that is safe; returns how many."""
    imported = 0
    for _key, (line, row) in rows:
        filename = cell_text(row.get("image_filename")) or ""
        item = f"{filename} ({img_name} line {line})"
        patient = cell_text(row.get("patient_id")) or ""
        info = resolve_view(filename, {}, row)
        if info.side is None:
            ctx.skip(
                item, "no lesion outline and the laterality is unknown: cannot tell whether the breast is lesion-free"
            )
            continue
        outlined = lesion_breasts.get((patient, info.side))
        if outlined:
            side = "right" if info.side == "R" else "left"
            ctx.skip(
                item,
                f"no lesion outline, but the same breast has an outlined lesion (patient {patient} {side}: "
                f"{'; '.join(outlined)}): the lesion may be in this view unoutlined, so it is not a normal view",
            )
            continue
        if not normals:
            ctx.skip(item, "no lesion outline (a lesion-free view; normals=false)")
            continue
        path, problem = finder.find(filename)
        if path is None:
            ctx.skip(item, problem)
            continue
        study = cell_text(row.get("study_id"))
        image_id = _image_id(path, used_ids)
        meta: dict[str, Any] = {"no_outline": True, "img_csv_line": line}
        meta.update(_common_meta(row, {}))
        ctx.add(
            ImageRecord(
                image_id=image_id,
                image_path=str(path.resolve()),
                label_name="normal",
                pathology="normal",
                density=cell_text(row.get("density")),
                patient_id=f"bcdr-{patient}",
                study_id=f"bcdr-{patient}-{study}" if study else f"bcdr-{patient}",
                laterality=info.side,
                view=info.view,
                source=SOURCE_NAME,
                lesions=[],
                mask_path=None,
                meta=meta,
            )
        )
        imported += 1
    return imported


def _flag(value: Any) -> bool:
    return (cell_text(value) or "0").lower() in ("1", "1.0", "true", "yes", "y")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "n", "off", "")
    return bool(value)


def _view_code(value: Any, numeric: dict[str, str] | None = None) -> str | None:
    """``RCC``/``LCC``/``RO``/``LO``/... from a text code, or from an integer code via ``numeric``."""
    code = re.sub(r"\s+", "", (cell_text(value) or "").upper())
    if numeric is not None and re.fullmatch(r"\d+(\.0+)?", code):
        return numeric.get(str(int(float(code))))
    return code if code in VIEWS else None


def resolve_view(filename: str, outline_row: dict[str, Any], img_row: dict[str, Any]) -> ViewInfo:
    """Laterality and view: file-name suffix, else image_type_name, else image_view, else image_type_id.

    Every code found is compared with the one used; a disagreeing one goes into ``conflicts``.
    """
    stem = Path(filename.replace("\\", "/").strip()).stem
    match = FILENAME_VIEW.search(stem)
    candidates = [
        ("file name", match.group(1).upper() if match else None),
        ("image_type_name", _view_code(img_row.get("image_type_name"))),
        ("image_view", _view_code(outline_row.get("image_view"), OUTLINE_VIEW_CODES)),
        ("image_type_id", _view_code(img_row.get("image_type_id"), IMG_TYPE_CODES)),
    ]
    found = [(name, code) for name, code in candidates if code]
    if not found:
        return ViewInfo(None, None, None)
    source, code = found[0]
    side, view = VIEWS[code]
    conflicts = {name: other for name, other in found[1:] if VIEWS[other] != (side, view)}
    if conflicts:
        conflicts = {source: code, **conflicts}
    return ViewInfo(side, view, source, conflicts)


def _view_name(info: ViewInfo) -> str:
    return f"{info.side}{'O' if info.view == 'MLO' else info.view}"


def parse_classification(text: str | None) -> str | None:
    """``benign``/``malignant`` from BCDR's ``Benign``, ``Malign``, ``Malignant`` (any case/spacing)."""
    value = (text or "").strip().lower()
    if value.startswith("malign"):
        return "malignant"
    if value.startswith("benign"):
        return "benign"
    return None


def parse_points(xs: str, ys: str, width: int, height: int) -> tuple[np.ndarray | None, str]:
    """Polygon vertices (N x 2 int32, x then y) from the two point lists, or ``None`` and why."""
    try:
        x = [float(v) for v in xs.replace(",", " ").split()]
        y = [float(v) for v in ys.replace(",", " ").split()]
    except ValueError:
        return None, "outline has non-numeric coordinates"
    if len(x) != len(y):
        return None, f"outline x/y lists differ in length ({len(x)} vs {len(y)})"
    if len(x) < 3:
        return None, f"outline has {len(x)} points; a polygon needs at least 3"
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        return None, "outline has non-numeric coordinates"
    points = np.rint(np.column_stack([x, y])).astype(np.int64)
    low, high = points.min(axis=0), points.max(axis=0)
    if (low < -EDGE_TOLERANCE).any() or high[0] > width - 1 + EDGE_TOLERANCE or high[1] > height - 1 + EDGE_TOLERANCE:
        return None, (
            f"outline points outside the {width}x{height} image (x {low[0]}..{high[0]}, y {low[1]}..{high[1]})"
        )
    points[:, 0] = points[:, 0].clip(0, width - 1)
    points[:, 1] = points[:, 1].clip(0, height - 1)
    return points.astype(np.int32), ""


def polygon_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """A uint8 0/1 mask of the filled polygon (outline pixels included)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [points.reshape(-1, 1, 2)], 1)
    return mask


class ImageFinder:
    """Finds ``image_filename`` below a root: as written, else case-insensitively, else by file name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_rel: dict[str, list[Path]] | None = None
        self._by_name: dict[str, list[Path]] = {}

    def _index(self) -> dict[str, list[Path]]:
        if self._by_rel is None:
            self._by_rel = {}
            seen: set[str] = set()
            for folder, dirs, names in os.walk(self.root, followlinks=True):  # data folders are often symlinked
                seen.add(os.path.realpath(folder))
                dirs[:] = sorted(d for d in dirs if os.path.realpath(Path(folder) / d) not in seen)
                for name in names:
                    path = Path(folder) / name
                    rel = path.relative_to(self.root).as_posix().lower()
                    self._by_rel.setdefault(rel, []).append(path)
                    self._by_name.setdefault(name.lower(), []).append(path)
        return self._by_rel

    def find(self, filename: str) -> tuple[Path | None, str]:
        rel = "/".join(part.strip() for part in filename.replace("\\", "/").split("/") if part.strip())
        exact = self.root / rel
        if exact.is_file():
            return exact, ""
        matches = self._index().get(rel.lower(), [])
        if not matches:
            matches = self._by_name.get(rel.rsplit("/", 1)[-1].lower(), [])
        if len(matches) == 1:
            return matches[0], ""
        if matches:
            return None, f"image file ambiguous: {len(matches)} files named {rel.rsplit('/', 1)[-1]!r}"
        return None, "image file not found"


def _image_id(path: Path, used: set[str]) -> str:
    """The file stem (BCDR names encode patient, study and view), made unique when needed."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)
    image_id, n = base, 2
    while image_id in used:
        image_id, n = f"{base}-{n}", n + 1
    used.add(image_id)
    return image_id


def _common_meta(row: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any]:
    """``series``, ``mammography_type``, the view codes and ``age`` from ``row``, else ``fallback``."""
    meta: dict[str, Any] = {}
    for name in ("series", "mammography_type", "image_view", "image_type_name", "image_type_id"):
        value = cell_text(row.get(name)) or cell_text(fallback.get(name))
        if value:
            meta[name] = value
    age = cell_text(row.get("age")) or cell_text(fallback.get("age"))
    if age is not None and re.fullmatch(r"\d{1,3}(\.0+)?", age):
        meta["age"] = int(float(age))
    return meta


def _image_record(
    ctx: ImportContext,
    csv_name: str,
    finder: ImageFinder,
    entry: ImageRows,
    img: tuple[int, dict[str, str]] | None,
    view_info: ViewInfo,
    used_ids: set[str],
) -> ImageRecord | None:
    lines = [o.line for o in entry.outlines]
    item = f"{entry.filename.strip()} ({csv_name} line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})"
    path, problem = finder.find(entry.filename)
    if path is None:
        ctx.skip(item, problem)
        return None

    # Group outlines into lesions; a lesion is malignant if any of its rows says so.
    lesions_by_key: dict[str, list[Outline]] = {}
    for outline in entry.outlines:
        lesions_by_key.setdefault(outline.lesion_key, []).append(outline)
    pathologies = []
    for outlines in lesions_by_key.values():
        found = {o.pathology for o in outlines}
        pathologies.append("malignant" if "malignant" in found else "benign" if "benign" in found else None)
    if "malignant" in pathologies:
        label = "malignant"
    elif None in pathologies:
        bad = [o.line for o in entry.outlines if o.pathology is None]
        ctx.skip(item, f"classification missing or unknown on line(s) {bad}; the image label cannot be known")
        return None
    else:
        label = "benign"

    info = ctx.probe(path, item)
    if info is None:
        return None
    width, height = info.width, info.height
    image_id = _image_id(path, used_ids)

    lesions: list[Lesion] = []
    union = np.zeros((height, width), dtype=np.uint8)
    for k, (outlines, pathology) in enumerate(zip(lesions_by_key.values(), pathologies, strict=True)):
        mask = np.zeros((height, width), dtype=np.uint8)
        for outline in outlines:
            points, problem = parse_points(outline.xs, outline.ys, width, height)
            if points is None:
                ctx.skip(f"{image_id} lesion {outline.lesion_key} ({csv_name} line {outline.line})", problem)
                continue
            mask |= polygon_mask(points, width, height)
        types = [o.lesion_type for o in outlines if o.lesion_type]
        lesion = Lesion(lesion_type=types[0] if types else None, pathology=pathology)
        box = mask_bounding_box(mask)
        if box is not None:
            lesion.x0, lesion.y0, lesion.x1, lesion.y1 = box
            lesion.center_x, lesion.center_y = (lesion.x0 + lesion.x1) / 2, (lesion.y0 + lesion.y1) / 2
            lesion.mask_path = ctx.write_mask(f"{image_id}_{k}", mask)
            union |= mask
        lesions.append(lesion)

    first = entry.first
    img_line, img_row = img if img is not None else (None, {})
    patient = cell_text(first.get("patient_id"))
    study = cell_text(first.get("study_id")) or cell_text(img_row.get("study_id"))
    meta: dict[str, Any] = {"csv_lines": lines, "lesion_ids": list(lesions_by_key)}
    if img_line is not None:
        meta["img_csv_line"] = img_line
    meta.update(_common_meta(first, img_row))
    if view_info.conflicts:
        meta["view_conflict"] = view_info.conflicts
    return ImageRecord(
        image_id=image_id,
        image_path=str(path.resolve()),
        label_name=label,
        pathology=label,
        density=cell_text(first.get("density")) or cell_text(img_row.get("density")),
        patient_id=f"bcdr-{patient}",
        study_id=f"bcdr-{patient}-{study}" if study else f"bcdr-{patient}",
        laterality=view_info.side,
        view=view_info.view,
        source=SOURCE_NAME,
        lesions=lesions,
        mask_path=ctx.write_mask(image_id, union) if union.any() else None,
        meta=meta,
    )


# Names callers and tests import from here, though the CSV readers live in bcdr_tables now.
__all__ = [
    "SOURCE_NAME",
    "Table",
    "find_img_csv",
    "find_outlines_csv",
    "import_bcdr",
    "parse_classification",
    "parse_points",
    "polygon_mask",
    "read_table",
    "resolve_view",
]
