"""MIAS (MiniMammographic Database): native ``Info.txt`` + ``mdbNNN.pgm``.

- ``Info.txt`` rows: ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]``; an image may have several rows
  (one per abnormality); some calcification rows have no coordinates (spread calcifications).
- Coordinates have their origin at the BOTTOM-left; they are converted to the top-left convention
  of the manifest: ``row = height - 1 - Y``.
- Image label: malignant if any row is M, else benign if any row is B, else normal.
- Patient: refnums (2k-1, 2k) are the right and left breast of one patient; all images are MLO.
- Each lesion circle becomes a binary mask (``masks/<id>_<k>.png``), and their union the image mask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammocad.data.images import probe_image
from mammocad.data.importers.base import ImportContext
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError, ImageReadError

ROW_PATTERN = re.compile(r"^(mdb\d{3})\s+(\S+)\s+(\S+)(.*)$", re.IGNORECASE)
BACKGROUNDS = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
CLASSES = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"}
SEVERITIES = {"B": "benign", "M": "malignant"}


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


def parse_info(path: Path, ctx: ImportContext | None = None) -> list[InfoRow]:
    """Parse a MIAS ``Info.txt``; unparseable data rows are reported through ``ctx.skip``."""
    rows: list[InfoRow] = []
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        match = ROW_PATTERN.match(line.strip())
        if not match:
            continue
        refnum, background, abnormality, rest = match.groups()
        refnum, background, abnormality = refnum.lower(), background.upper(), abnormality.upper()
        problem = None
        if background not in BACKGROUNDS:
            problem = f"unknown background tissue {background!r}"
        elif abnormality not in CLASSES:
            problem = f"unknown abnormality class {abnormality!r}"
        tokens = rest.split()
        severity = tokens[0].upper() if tokens else None
        if problem is None and abnormality != "NORM" and severity not in SEVERITIES:
            problem = f"abnormality {abnormality} has no valid severity (got {severity!r})"
        if problem:
            if ctx is not None:
                ctx.skip(f"{path.name}:{line_no}", f"row does not parse: {problem}")
            continue
        coords = _numbers(tokens[1:4]) if abnormality != "NORM" else None
        x, y, radius = coords if coords else (None, None, None)
        rows.append(
            InfoRow(refnum, background, abnormality, severity if abnormality != "NORM" else None, x, y, radius, line_no)
        )
    return rows


def _numbers(tokens: list[str]) -> tuple[float | None, float | None, float | None] | None:
    """X, Y, RADIUS when present and numeric; spread calcifications have none (``*NOTE 3*``)."""
    values: list[float | None] = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            break
    if len(values) < 2:
        return None
    x, y = values[0], values[1]
    radius = values[2] if len(values) > 2 else None
    return x, y, radius


def find_info_file(source: Path) -> Path:
    """``Info.txt`` inside ``source`` (case-insensitive), or ``source`` itself when it is the file."""
    if source.is_file():
        return source
    for candidate in sorted(source.iterdir()):
        if candidate.name.lower() in ("info.txt", "info"):
            return candidate
    raise DatasetError(f"{source}: no Info.txt found (the MIAS annotation file)")


def import_mias(ctx: ImportContext, image_dir: str | Path | None = None) -> None:
    """Import a MIAS folder (``Info.txt`` and the ``mdbNNN.pgm`` files next to it, or in ``image_dir``)."""
    info = find_info_file(ctx.source)
    folder = Path(image_dir) if image_dir else info.parent
    rows = parse_info(info, ctx)
    by_image: dict[str, list[InfoRow]] = {}
    for row in rows:
        by_image.setdefault(row.refnum, []).append(row)
    files = {p.stem.lower(): p for p in folder.iterdir() if p.suffix.lower() in (".pgm", ".png", ".tif", ".tiff")}
    for refnum in sorted(files.keys() - by_image.keys()):
        ctx.skip(files[refnum], "image has no row in Info.txt (no label)")
    for refnum, image_rows in sorted(by_image.items()):
        path = files.get(refnum)
        if path is None:
            ctx.skip(f"{refnum}.pgm", f"listed in {info.name} but the image file is missing")
            continue
        backgrounds = {r.background for r in image_rows}
        if len(backgrounds) > 1:
            ctx.skip(path, f"rows disagree on background tissue {sorted(backgrounds)}")
            continue
        try:
            height = probe_image(path).height
            width = probe_image(path).width
        except ImageReadError as exc:
            ctx.skip(path, exc.reason)
            continue
        number = int(refnum[3:])
        lesions = []
        union = np.zeros((height, width), dtype=np.uint8)
        for k, row in enumerate(r for r in image_rows if r.abnormality != "NORM"):
            lesion = _lesion(row, width, height)
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
                meta={"background_tissue": BACKGROUNDS[image_rows[0].background]},
            )
        )


def _lesion(row: InfoRow, width: int, height: int) -> Lesion:
    lesion = Lesion(lesion_type=row.abnormality, pathology=SEVERITIES.get(row.severity or ""))
    if row.x is None or row.y is None:
        return lesion
    cx, cy = row.x, (height - 1) - row.y  # bottom-left origin -> top-left
    lesion.center_x, lesion.center_y = cx, cy
    if row.radius is not None:
        r = row.radius
        lesion.radius = r
        lesion.x0, lesion.y0 = max(0, int(np.floor(cx - r))), max(0, int(np.floor(cy - r)))
        lesion.x1, lesion.y1 = min(width, int(np.ceil(cx + r)) + 1), min(height, int(np.ceil(cy + r)) + 1)
    return lesion


def circle_mask(width: int, height: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """A uint8 0/1 disc of ``radius`` pixels centred at (cx, cy) (top-left origin)."""
    yy, xx = np.ogrid[:height, :width]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).astype(np.uint8)
