"""BCDR (Breast Cancer Digital Repository, D01 digital / F01 film): images + an outlines CSV.

The outlines CSV (e.g. ``bcdr_d01_outlines.csv``) has one row per lesion outline with
``patient_id``, ``study_id``, ``series``, ``lesion_id``, ``image_filename`` (relative, often with
leading spaces), ``image_view`` (``RCC``, ``LCC``, ``RO``/``LO`` = right/left oblique, i.e. MLO),
``classification`` (``Benign``/``Malign``/``Malignant``, with stray spaces), ``lw_x_points`` and
``lw_y_points`` (space-separated pixel coordinates of the outline polygon), the
``mammography_*`` finding flags, ``age`` and ``density``.

- One manifest row per image: its outline rows are its lesions (rows sharing a ``lesion_id`` are
  one lesion whose polygons are united). Label: ``malignant`` if any lesion is malignant, else
  ``benign``; an image with a lesion of unknown classification and no malignant lesion is skipped
  (its label cannot be known).
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
  ``axillary_adenopathy``); ``density`` and ``age`` (in ``meta``) as given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mammocad.data.images import probe_image
from mammocad.data.importers.base import ImportContext
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "bcdr"
REQUIRED = ("patient_id", "image_filename", "lw_x_points", "lw_y_points", "classification")
VIEWS = {
    "RCC": ("R", "CC"),
    "LCC": ("L", "CC"),
    "RO": ("R", "MLO"),
    "LO": ("L", "MLO"),
    "RMLO": ("R", "MLO"),
    "LMLO": ("L", "MLO"),
}
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
_NO_SIZE_LIMIT = 10**12  # the runner applies the size policy; probing here is for the image size


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


def import_bcdr(ctx: ImportContext, image_dir: str | None = None) -> None:
    """Import a BCDR outlines CSV (see module docstring).

    Inputs: ``ctx.source`` is the dataset folder holding one ``*outlines*.csv`` (or the CSV
    itself); images are found at ``image_filename`` below ``image_dir`` (default: the CSV's
    folder). Output: one :class:`ImageRecord` per image via ``ctx.add``, lesion and union masks
    written through ``ctx.write_mask``; unusable rows, images and outlines via ``ctx.skip``.
    """
    csv_path = find_outlines_csv(ctx.source)
    root = Path(image_dir) if image_dir else csv_path.parent
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder does not exist")
    table = read_outlines(csv_path)
    finder = ImageFinder(root)

    images: dict[str, ImageRows] = {}
    for position, record in enumerate(table.to_dict("records")):
        line = position + 2  # header is line 1
        filename = _cell(record.get("image_filename"))
        if filename is None or _cell(record.get("patient_id")) is None:
            ctx.skip(f"{csv_path.name} line {line}", "no image_filename or patient_id")
            continue
        key = filename.replace("\\", "/").strip().lower()
        entry = images.setdefault(key, ImageRows(filename, record))
        lesion_key = _cell(record.get("lesion_id")) or f"line{line}"
        entry.outlines.append(
            Outline(
                line=line,
                lesion_key=lesion_key,
                pathology=parse_classification(_cell(record.get("classification"))),
                xs=str(record.get("lw_x_points") or ""),
                ys=str(record.get("lw_y_points") or ""),
                lesion_type="+".join(name for column, name in FINDINGS.items() if _flag(record.get(column))) or None,
            )
        )
    used_ids: set[str] = set()
    for entry in images.values():
        record = _image_record(ctx, csv_path.name, finder, entry, used_ids)
        if record is not None:
            ctx.add(record)


def find_outlines_csv(source: Path) -> Path:
    """The outlines CSV: ``source`` itself, or the single ``*outline*.csv`` in it."""
    if source.is_file():
        return source
    found = sorted(p for p in source.iterdir() if p.suffix.lower() == ".csv" and "outline" in p.name.lower())
    if not found:
        raise DatasetError(f"{source}: no BCDR outlines CSV (*outlines*.csv) found")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(f"{source}: several outlines CSVs ({names}); pass the one to import as the source")
    return found[0]


def read_outlines(path: Path) -> pd.DataFrame:
    """Read the outlines CSV as text with stripped, lower-case column names; check the needed columns."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
        # The point lists are full of spaces, so sniffing could pick " "; decide from the header alone.
        sep = max((",", ";", "\t"), key=header.count)
        table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from exc
    table.columns = [re.sub(r"\s+", "_", str(c).strip().lower()) for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: lacks the columns {missing} (found: {list(table.columns)})")
    return table


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool:
    return (_cell(value) or "0").lower() in ("1", "1.0", "true", "yes", "y")


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


def _image_record(
    ctx: ImportContext, csv_name: str, finder: ImageFinder, entry: ImageRows, used_ids: set[str]
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

    try:
        info = probe_image(path, max_pixels=_NO_SIZE_LIMIT)
    except ImageReadError as exc:
        ctx.skip(item, f"unreadable image: {exc.reason}")
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
        if mask.any():
            ys, xs = np.nonzero(mask)
            lesion.x0, lesion.y0, lesion.x1, lesion.y1 = (
                int(xs.min()),
                int(ys.min()),
                int(xs.max()) + 1,
                int(ys.max()) + 1,
            )
            lesion.center_x, lesion.center_y = (lesion.x0 + lesion.x1) / 2, (lesion.y0 + lesion.y1) / 2
            lesion.mask_path = ctx.write_mask(f"{image_id}_{k}", mask)
            union |= mask
        lesions.append(lesion)

    first = entry.first
    patient = _cell(first.get("patient_id"))
    study = _cell(first.get("study_id"))
    view_code = re.sub(r"\s+", "", (_cell(first.get("image_view")) or "").upper())
    side, view = VIEWS.get(view_code, (None, None))
    meta: dict[str, Any] = {"csv_lines": lines, "lesion_ids": list(lesions_by_key)}
    for name in ("series", "mammography_type", "image_view"):
        if _cell(first.get(name)):
            meta[name] = _cell(first.get(name))
    age = _cell(first.get("age"))
    if age is not None and re.fullmatch(r"\d{1,3}(\.0+)?", age):
        meta["age"] = int(float(age))
    return ImageRecord(
        image_id=image_id,
        image_path=str(path.resolve()),
        label_name=label,
        pathology=label,
        density=_cell(first.get("density")),
        patient_id=f"bcdr-{patient}",
        study_id=f"bcdr-{patient}-{study}" if study else f"bcdr-{patient}",
        laterality=side,
        view=view,
        source=SOURCE_NAME,
        lesions=lesions,
        mask_path=ctx.write_mask(image_id, union) if union.any() else None,
        meta=meta,
    )
