"""MIAS (MiniMammographic Database): native ``Info.txt`` + ``mdbNNN.pgm``, and common copies.

- ``Info.txt`` rows: ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]``; an image may have several rows
  (one per abnormality); some calcification rows have no coordinates (spread calcifications).
  Copies that ship the table as CSV (``mdb001,G,CIRC,B,535,425,197``, ``;`` or tab separated,
  with or without a ``REFNUM,BG,CLASS,SEVERITY,X,Y,RADIUS`` header, empty/``NaN`` cells for
  absent values) read alike. The file is ``Info.txt`` (or ``info``, ``info.csv``, the single
  ``*info*.txt|csv``) in the source folder, or the source itself. A file without a single
  ``mdbNNN`` row is an error that names the file and shows what a row looks like.
- Images: ``mdbNNN`` with ``.pgm`` (native), ``.png``, ``.tif``/``.tiff``, ``.bmp``, ``.jpg``/``.jpeg``
  (case-insensitive), next to the Info file or in ``image_dir``. When several copies of one refnum
  exist, the first in that order is used and the others are listed. A listed refnum without an
  image is listed; if a file of that name with another extension exists, the reason names it.
- Coordinates have their origin at the BOTTOM-left of the native square (1024 px, or the size the
  file's notes declare: ``The size of ALL the images is N pixels x N pixels``; option
  ``native_size`` overrides); they are converted to the top-left convention of the manifest:
  ``row = N - 1 - Y``.
- Images that are not N x N: a square image is taken as a uniform resize, its coordinates and
  radii are scaled by ``size / N`` (pixel centres map to pixel centres; ``meta.coordinate_scale``)
  and one warning counts them. A non-square image (a cropped copy) is skipped with the reason when
  it has an abnormality (the coordinates cannot be placed, and the crop may have cut it off); a
  non-square NORM image has nothing to place and is kept (counted in a warning).
- Image label: malignant if any row is M, else benign if any row is B, else normal.
- Patient: refnums (2k-1, 2k) are the right and left breast of one patient; all images are MLO.
- Each lesion circle becomes a binary mask (``masks/<id>_<k>.png``), and their union the image mask.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammocad.data.images import probe_image
from mammocad.data.importers.base import ImportContext
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError, ImageReadError

REFNUM = re.compile(r"^mdb\d{3}$", re.IGNORECASE)
BACKGROUNDS = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
CLASSES = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"}
SEVERITIES = {"B": "benign", "M": "malignant"}
IMAGE_SUFFIXES = (".pgm", ".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")  # preference order
NATIVE_SIZE = 1024
EXAMPLE_ROW = "mdb001 G CIRC B 535 425 197"
_ABSENT = {"", "nan", "na", "n/a", "none", "null", "-"}
_DECLARED_SIZE = re.compile(r"(\d{2,5})\s*pixels?\s*x\s*(\d{2,5})\s*pixels?", re.IGNORECASE)


@dataclass
class InfoRow:
    """One parsed ``Info.txt`` row (coordinates as written: bottom-left origin)."""

    refnum: str
    background: str
    abnormality: str
    severity: str | None
    x: float | None
    y: float | None
    radius: float | None
    line_no: int


def split_row(line: str) -> list[str]:
    """The fields of one row: comma/semicolon/tab separated when it has those, else whitespace.

    Absent values (empty, ``NaN``, ...) become ``""``; trailing absent fields are dropped.
    """
    text = line.strip().lstrip("\ufeff")
    if re.search(r"[,;\t]", text):
        fields = [f.strip().strip("\"'").strip() for f in re.split(r"[,;\t]", text)]
    else:
        fields = text.split()
    fields = ["" if f.lower() in _ABSENT else f for f in fields]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def parse_info(path: Path, ctx: ImportContext | None = None) -> list[InfoRow]:
    """Parse a MIAS ``Info.txt`` (or a CSV copy); unparseable data rows are reported through ``ctx.skip``.

    Raises :class:`DatasetError` when the file has no ``mdbNNN`` row at all.
    """
    rows: list[InfoRow] = []
    data_rows = 0
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = split_row(line)
        if not fields or not REFNUM.match(fields[0]):
            continue  # title, notes, a REFNUM,BG,... header
        data_rows += 1
        refnum = fields[0].lower()
        background = fields[1].upper() if len(fields) > 1 else ""
        abnormality = fields[2].upper() if len(fields) > 2 else ""
        severity = fields[3].upper() if len(fields) > 3 and fields[3] else None
        problem = None
        if background not in BACKGROUNDS:
            problem = f"unknown background tissue {background!r}"
        elif abnormality not in CLASSES:
            problem = f"unknown abnormality class {abnormality!r}"
        elif abnormality != "NORM" and severity not in SEVERITIES:
            problem = f"abnormality {abnormality} has no valid severity (got {severity!r})"
        if problem:
            if ctx is not None:
                ctx.skip(f"{path.name}:{line_no}", f"row does not parse: {problem}")
            continue
        coords = _numbers(fields[4:7]) if abnormality != "NORM" else None
        x, y, radius = coords if coords else (None, None, None)
        rows.append(
            InfoRow(refnum, background, abnormality, severity if abnormality != "NORM" else None, x, y, radius, line_no)
        )
    if data_rows == 0:
        raise DatasetError(
            f"{path}: no MIAS annotation rows found; a row looks like {EXAMPLE_ROW!r} "
            "(REFNUM BG CLASS [SEVERITY [X Y RADIUS]], separated by spaces, commas, semicolons or tabs; "
            "a header row REFNUM,BG,CLASS,SEVERITY,X,Y,RADIUS may come first)"
        )
    return rows


def declared_size(path: Path) -> int | None:
    """The image size the file's notes declare (``... N pixels x N pixels``), if any."""
    for match in _DECLARED_SIZE.finditer(path.read_text(errors="replace")):
        if match.group(1) == match.group(2):
            return int(match.group(1))
    return None


def _numbers(tokens: list[str]) -> tuple[float | None, float | None, float | None] | None:
    """X, Y, RADIUS when present and numeric; spread calcifications have none (``*NOTE 3*``)."""
    values: list[float] = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            break
        if not math.isfinite(value):
            break
        values.append(value)
    if len(values) < 2:
        return None
    x, y = values[0], values[1]
    radius = values[2] if len(values) > 2 else None
    return x, y, radius


def find_info_file(source: Path) -> Path:
    """``Info.txt`` inside ``source`` (case-insensitive; also ``info``, ``info.csv``, the single
    ``*info*.txt``/``*info*.csv``), or ``source`` itself when it is the file."""
    if source.is_file():
        return source
    files = sorted(p for p in source.iterdir() if p.is_file())
    for name in ("info.txt", "info", "info.csv"):
        for candidate in files:
            if candidate.name.lower() == name:
                return candidate
    loose = [p for p in files if "info" in p.stem.lower() and p.suffix.lower() in (".txt", ".csv")]
    if len(loose) == 1:
        return loose[0]
    if loose:
        names = ", ".join(p.name for p in loose)
        raise DatasetError(f"{source}: several possible MIAS annotation files ({names}); pass the one to use")
    raise DatasetError(f"{source}: no Info.txt found (the MIAS annotation file)")


def _image_files(ctx: ImportContext, folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Supported images by refnum (preferred copy; the other copies listed), and other files by refnum."""
    copies: dict[str, list[Path]] = {}
    others: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            copies.setdefault(path.stem.lower(), []).append(path)
        elif REFNUM.match(path.name.split(".", 1)[0]):
            others.setdefault(path.name.split(".", 1)[0].lower(), []).append(path)
    files = {}
    for stem, paths in copies.items():
        paths.sort(key=lambda p: IMAGE_SUFFIXES.index(p.suffix.lower()))
        files[stem] = paths[0]
        for extra in paths[1:]:
            ctx.skip(extra, f"another copy of {stem} is used ({paths[0].name})")
    return files, others


def import_mias(ctx: ImportContext, image_dir: str | Path | None = None, native_size: int | None = None) -> None:
    """Import a MIAS folder (``Info.txt`` and the ``mdbNNN`` images next to it, or in ``image_dir``).

    ``native_size`` is the square size the coordinates refer to (default: as the Info file's
    notes declare, else 1024).
    """
    info = find_info_file(ctx.source)
    folder = Path(image_dir) if image_dir else info.parent
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder does not exist")
    rows = parse_info(info, ctx)
    size = int(native_size) if native_size else declared_size(info) or NATIVE_SIZE
    by_image: dict[str, list[InfoRow]] = {}
    for row in rows:
        by_image.setdefault(row.refnum, []).append(row)
    files, others = _image_files(ctx, folder)
    for refnum in sorted(files.keys() - by_image.keys()):
        ctx.skip(files[refnum], f"image has no row in {info.name} (no label)")
    resized: list[str] = []
    cropped_normals: list[str] = []
    for refnum, image_rows in sorted(by_image.items()):
        path = files.get(refnum)
        if path is None:
            if refnum in others:
                found = ", ".join(p.name for p in others[refnum])
                reason = (
                    f"listed in {info.name} but no image file in a supported format: found {found} "
                    f"(supported: {', '.join(IMAGE_SUFFIXES)})"
                )
            else:
                reason = (
                    f"listed in {info.name} but the image file is missing "
                    f"(looked for {refnum} with {', '.join(IMAGE_SUFFIXES)})"
                )
            ctx.skip(refnum, reason)
            continue
        backgrounds = {r.background for r in image_rows}
        if len(backgrounds) > 1:
            ctx.skip(path, f"rows disagree on background tissue {sorted(backgrounds)}")
            continue
        try:
            probed = probe_image(path)
        except ImageReadError as exc:
            ctx.skip(path, exc.reason)
            continue
        width, height = probed.width, probed.height
        abnormal = [r for r in image_rows if r.abnormality != "NORM"]
        meta: dict[str, object] = {"background_tissue": BACKGROUNDS[image_rows[0].background]}
        scale = 1.0
        if (width, height) != (size, size):
            if width == height:
                scale = width / size
                meta["coordinate_scale"] = scale
                resized.append(f"{refnum}: {width}x{height}")
            elif abnormal:
                ctx.skip(
                    path,
                    f"not {size}x{size} but {width}x{height} (cropped copy?): lesion coordinates cannot be "
                    "placed and the abnormality may be cut off",
                )
                continue
            else:
                meta["not_native_size"] = True
                cropped_normals.append(f"{refnum}: {width}x{height}")
        number = int(refnum[3:])
        lesions = []
        union = np.zeros((height, width), dtype=np.uint8)
        for k, row in enumerate(abnormal):
            lesion = _lesion(row, width, height, size, scale)
            if lesion.radius is not None and lesion.center_x is not None:
                mask = circle_mask(width, height, lesion.center_x, lesion.center_y, lesion.radius)
                lesion.mask_path = ctx.write_mask(f"{refnum}_{k}", mask)
                union |= mask
            lesions.append(lesion)
        severities = {r.severity for r in image_rows}
        pathology = "malignant" if "M" in severities else "benign" if "B" in severities else "normal"
        ctx.add(
            ImageRecord(
                image_id=refnum,
                image_path=str(path.resolve()),
                label_name=pathology,
                pathology=pathology,
                patient_id=f"mias-{(number + 1) // 2:03d}",
                study_id=f"mias-{(number + 1) // 2:03d}",
                laterality="R" if number % 2 == 1 else "L",
                view="MLO",
                density=backgrounds.pop(),
                source="mias",
                lesions=lesions,
                mask_path=ctx.write_mask(refnum, union) if union.any() else None,
                meta=meta,
            )
        )
    if resized:
        ctx.warn(
            f"{len(resized)} image(s) are square but not {size}x{size} (e.g. {resized[0]}): taken as uniform "
            f"resizes of the native {size}x{size}, their lesion coordinates and radii scaled by size/{size}"
        )
    if cropped_normals:
        ctx.warn(
            f"{len(cropped_normals)} normal image(s) are not {size}x{size} and not square (cropped copies?, "
            f"e.g. {cropped_normals[0]}): kept, as they have no coordinates to place"
        )


def _lesion(row: InfoRow, width: int, height: int, size: int, scale: float) -> Lesion:
    lesion = Lesion(lesion_type=row.abnormality, pathology=SEVERITIES.get(row.severity or ""))
    if row.x is None or row.y is None:
        return lesion
    # bottom-left origin of the native square -> top-left; native pixel centres -> this image's (scale 1: as is)
    cx, cy = (row.x + 0.5) * scale - 0.5, (size - 1 - row.y + 0.5) * scale - 0.5
    lesion.center_x, lesion.center_y = cx, cy
    if row.radius is not None:
        r = row.radius * scale
        lesion.radius = r
        lesion.x0, lesion.y0 = max(0, int(np.floor(cx - r))), max(0, int(np.floor(cy - r)))
        lesion.x1, lesion.y1 = min(width, int(np.ceil(cx + r)) + 1), min(height, int(np.ceil(cy + r)) + 1)
    return lesion


def circle_mask(width: int, height: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """A uint8 0/1 disc of ``radius`` pixels centred at (cx, cy) (top-left origin)."""
    yy, xx = np.ogrid[:height, :width]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).astype(np.uint8)
