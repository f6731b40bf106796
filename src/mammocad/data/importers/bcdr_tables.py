"""BCDR's two CSVs (see :mod:`mammocad.data.importers.bcdr`): finding the outlines and the img CSV,
and reading either spelling (``,`` or ``, `` separated, trailing spaces) with real line numbers.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from mammocad.data.importers.base import ImportContext, cell_text
from mammocad.errors import DatasetError


@dataclass
class Table:
    """A CSV read as text: normalised column names, and each data row with its real line number."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


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


def find_img_csv(outlines: Path, given: str | Path | None, ctx: ImportContext | None = None) -> Path | None:
    """The per-image CSV: ``given``, else ``<prefix>_img.csv`` next to the outlines CSV, else the single ``*_img.csv``."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise DatasetError(f"{path}: img CSV (img_csv=) does not exist")
        return path
    twin = outlines.with_name(re.sub("outlines?", "img", outlines.name, flags=re.IGNORECASE))
    if twin != outlines and twin.is_file():
        return twin
    found = sorted(
        p for p in outlines.parent.iterdir() if p.is_file() and re.search(r"(^|_)img\.csv$", p.name, re.IGNORECASE)
    )
    if len(found) == 1:
        return found[0]
    if found and ctx is not None:
        ctx.warn(
            f"several img CSVs next to {outlines.name} ({', '.join(p.name for p in found)}): none used; pass --set img_csv=PATH"
        )
    return None


def read_table(path: Path, required: tuple[str, ...]) -> Table:
    """Read a BCDR CSV as text with normalised column names; check the needed columns.

    The separator is decided from the header alone (the point lists are full of spaces); spaces
    after it are dropped (the ``, `` spelling). Each row keeps the number of its first line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable CSV ({exc.strerror or exc})") from exc
    header_line = text.split("\n", 1)[0]
    sep = max((",", ";", "\t"), key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    columns: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if not any(c.strip() for c in cells):
                continue
            if not columns:
                columns = [_column_name(c) for c in cells]
                continue
            rows.append((line, dict(zip(columns, cells, strict=False))))
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV (line {reader.line_num}: {exc})") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetError(f"{path}: lacks the columns {missing} (found: {columns})")
    return Table(path, columns, rows)


def _column_name(text: str) -> str:
    name = re.sub(r"\s+", "_", text.strip().lower())
    return name.replace("axiliary", "axillary")


def rows_by_image(ctx: ImportContext, table: Table) -> dict[str, tuple[int, dict[str, str]]]:
    """The img CSV's rows by image file; a repeated file is listed and its first row kept."""
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for line, row in table.rows:
        filename = cell_text(row.get("image_filename"))
        if filename is None or cell_text(row.get("patient_id")) is None:
            ctx.skip(f"{table.path.name} line {line}", "no image_filename or patient_id")
            continue
        key = file_key(filename)
        if key in rows:
            ctx.skip(f"{filename} ({table.path.name} line {line})", f"listed twice (first on line {rows[key][0]})")
            continue
        rows[key] = (line, row)
    return rows


def file_key(filename: str) -> str:
    """How an image file is matched across the two CSVs: its path parts stripped, lower-cased."""
    return "/".join(part.strip() for part in filename.replace("\\", "/").split("/") if part.strip()).lower()
