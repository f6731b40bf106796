"""Tables as dataset curators publish them. Excel workbooks: several sheets, a summary table first,
a header that is not always on row 1, and a "used range" of a million rows of which a few thousand
hold data (the real KAUMDS workbook).

:func:`read_workbook_table` streams the rows (openpyxl's read-only mode: memory stays flat and a
million-row sheet reads in seconds), finds the sheet and header row that have the columns asked
for, and returns only the rows that hold data, each with its Excel row number for messages.
Blank rows are not rows: they never become "skipped" items.

:func:`read_csv_table` reads their CSV exports: any of the usual separators and encodings, every
cell as text.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

WORKBOOK_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
# How many non-blank rows at the top of a sheet may precede its header (titles, notes).
HEADER_SEARCH_ROWS = 10
#: Bytes of a CSV read to sniff its encoding and separator.
SNIFF_BYTES = 64 * 1024

MissingColumns = Callable[[list[str]], list[str]]


@dataclass
class SheetTable:
    """The data rows of one worksheet."""

    path: Path
    sheet: str
    header_row: int  # Excel numbering: the first row is 1
    columns: list[str]
    rows: list[tuple[int, list[Any]]] = field(default_factory=list)  # (Excel row number, cells)


def read_workbook_table(path: Path, missing_columns: MissingColumns, sheet: str | int | None = None) -> SheetTable:
    """The first sheet (or the named one) whose header has every required column.

    Inputs: ``path`` (``.xlsx``/``.xlsm``/``.xls``); ``missing_columns(header)`` returns the required
    columns a header row lacks (empty when it fits); ``sheet`` is a name (matched exactly, then
    ignoring case and surrounding spaces), a 0-based index, or ``None`` to search every sheet.
    Output: a :class:`SheetTable` of the non-blank rows below the header (a row is blank when
    every cell under a named header column is empty). Raises :class:`DatasetError` naming the
    file, the workbook's sheets and what each one's header holds when no sheet fits.
    """
    workbook = _open(path)
    try:
        names = workbook.names
        chosen = names if sheet is None else [_sheet_name(path, names, sheet)]
        seen: list[str] = []
        for name in chosen:
            with warnings.catch_warnings():
                # Real workbooks carry extensions (data validation, slicers) openpyxl warns about and ignores.
                warnings.simplefilter("ignore", UserWarning)
                table, header, missing = _scan(path, workbook.rows(name), name, missing_columns)
            if table is not None:
                return table
            shown = ", ".join(repr(h) for h in header[:12] if h) or "nothing"
            seen.append(f"{name!r} (lacks {missing}; its first row holds {shown})")
    finally:
        workbook.close()
    wanted = missing_columns([])
    if sheet is None:
        raise DatasetError(
            f"{path}: no sheet has the columns {wanted}; sheets: {'; '.join(seen)}. Choose one with --set sheet=NAME"
        )
    raise DatasetError(f"{path}: sheet {seen[0]}; the workbook's sheets are {names}. Choose one with --set sheet=NAME")


class _Workbook:
    """Sheet names and a row iterator per sheet, for .xlsx (openpyxl, streamed) and .xls (xlrd)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.legacy = path.suffix.lower() == ".xls"
        if self.legacy:
            import xlrd

            self.book = xlrd.open_workbook(str(path), on_demand=True)
            self.names = list(self.book.sheet_names())
        else:
            import openpyxl

            with warnings.catch_warnings():
                # Real workbooks carry extensions (data validation, slicers) openpyxl warns about and ignores.
                warnings.simplefilter("ignore", UserWarning)
                self.book = openpyxl.load_workbook(path, read_only=True, data_only=True)
            self.names = list(self.book.sheetnames)

    def rows(self, name: str) -> Iterator[tuple[Any, ...]]:
        if self.legacy:
            sheet = self.book.sheet_by_name(name)
            return (tuple(sheet.row_values(i)) for i in range(sheet.nrows))
        return self.book[name].iter_rows(values_only=True)

    def close(self) -> None:
        if self.legacy:
            self.book.release_resources()
        else:
            self.book.close()


def _open(path: Path) -> _Workbook:
    if not path.is_file():
        raise DatasetError(f"{path}: workbook not found")
    try:
        return _Workbook(path)
    except Exception as exc:  # zipfile, XML, xlrd and openpyxl raise assorted types on damaged files
        raise DatasetError(f"{path}: not a readable Excel workbook ({type(exc).__name__}: {exc})") from exc


def _sheet_name(path: Path, names: list[str], sheet: str | int) -> str:
    if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.strip().isdigit() and sheet not in names):
        index = int(sheet)
        if not 0 <= index < len(names):
            raise DatasetError(f"{path}: sheet index {index} out of range; the workbook's sheets are {names}")
        return names[index]
    if sheet in names:
        return sheet
    loose = [n for n in names if n.strip().lower() == str(sheet).strip().lower()]
    if len(loose) == 1:
        return loose[0]
    raise DatasetError(f"{path}: no sheet named {sheet!r}; the workbook's sheets are {names}")


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # xlrd reads every number as a float
    return "" if value is None else str(value).strip()


def _scan(
    path: Path, rows: Iterator[tuple[Any, ...]], name: str, missing_columns: MissingColumns
) -> tuple[SheetTable | None, list[str], list[str]]:
    """(table, header, missing): the table when a header row fits, else the first row seen and what it lacks."""
    first_header: list[str] = []
    first_missing: list[str] = missing_columns([])
    table: SheetTable | None = None
    named: list[int] = []
    non_blank_seen = 0
    try:
        for row_number, cells in enumerate(rows, start=1):
            if table is None:
                header = [_cell_text(c) for c in cells]
                while header and not header[-1]:
                    header.pop()
                if not any(header):
                    continue
                non_blank_seen += 1
                missing = missing_columns(header)
                if non_blank_seen == 1:
                    first_header, first_missing = header, missing
                if not missing:
                    table = SheetTable(path, name, row_number, header)
                    named = [i for i, h in enumerate(header) if h]
                elif non_blank_seen >= HEADER_SEARCH_ROWS:
                    break
                continue
            if not any(cells):
                continue  # the common case in a used range of a million rows: nothing at all, decided in C
            values = [cells[i] if i < len(cells) else None for i in range(len(table.columns))]
            if any(_cell_text(values[i]) for i in named):
                table.rows.append((row_number, values))
    except Exception as exc:  # a damaged sheet part inside an otherwise valid zip
        raise DatasetError(f"{path}: sheet {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    return table, first_header, first_missing


def read_csv_table(csv_path: Path) -> pd.DataFrame:
    """Read a CSV as strings (empty cells as ``""``), with a clear error for anything that is not one.

    The encoding (UTF-8, else Latin-1) and the separator (``,`` ``;`` or tab, from the header line)
    are sniffed from the first :data:`SNIFF_BYTES`; column names are stripped.
    """
    import pandas as pd

    if csv_path.is_dir():
        raise DatasetError(f"{csv_path}: is a folder; the csv format expects the CSV file itself")
    with csv_path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        raise DatasetError(f"{csv_path}: file is empty, not a CSV table")
    if b"\x00" in head:
        raise DatasetError(f"{csv_path}: binary content, not a CSV text table")
    encoding = "utf-8-sig"
    try:
        head.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the sniff boundary is fine
            encoding = "latin-1"  # spreadsheets often export Windows-1252/Latin-1
    first_line = head.decode(encoding, errors="replace").splitlines()[0]
    separator = max([",", ";", "\t"], key=first_line.count)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, sep=separator, encoding=encoding)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV table ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise DatasetError(
            f"{csv_path}: CSV has a header but no rows; columns found: {listed_names(list(table.columns))}"
        )
    return table


def listed_names(names: list[str], limit: int = 20) -> str:
    """Column names for an error message: the first ``limit``, each cut to 40 characters."""
    shown = [str(n)[:40] for n in names[:limit]]
    return repr(shown) + (f" and {len(names) - limit} more" if len(names) > limit else "")
