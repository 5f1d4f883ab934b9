"""Reading a screening drive's disputes from the files county offices have: CSV saved by Chinese
Excel (GB18030/GBK, its default), as "Unicode text" (UTF-16, tab-separated), or in UTF-8 with or
without a BOM; and XLSX. The whole file is read and checked before anything is stored, so a file is
either refused with the row and a hint, or imported (in chunks, each row reported).

Columns may be headed in English or in Chinese; columns the bureau does not use (序号, 备注…) are
ignored and listed as warnings; a column given twice is refused. Rows are numbered as the clerk sees
them in a spreadsheet (the header is row 1). A row becomes the same submission the HTTP API takes,
so it passes the same checks. An XLSX's declared size, rows and columns are checked before it is
parsed: a small file that unpacks to millions of blank rows is refused at once.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from shared.errors import FieldError, InvalidInput

# canonical column → accepted headers
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "姓名", "当事人"),
    "id_number": ("id_number", "身份证号", "身份证号码"),
    "phone": ("phone", "联系电话", "电话"),
    "address": ("address", "住址", "地址"),
    "township": ("township", "乡镇", "乡镇代码"),
    "village": ("village", "村", "村(社区)", "村代码"),
    "category": ("category", "类别", "纠纷类别"),
    "title": ("title", "事由", "纠纷事由"),
    "content": ("content", "内容", "基本情况"),
    "people_count": ("people_count", "人数", "涉及人数"),
    "escalated": ("escalated", "越级"),
    "backlog": ("backlog", "积案"),
    "accused_units": ("accused_units", "被反映单位"),
}
REQUIRED = ("name", "township", "title", "content")
_HEADER_TO_COLUMN = {h.lower(): col for col, heads in COLUMNS.items() for h in heads}
_RESIDENT = {"name", "id_number", "phone", "address"}
_TRUE, _FALSE = {"1", "true", "yes", "y", "是"}, {"0", "false", "no", "n", "否", ""}
HINT = "save it as CSV UTF-8 (CSV UTF-8 逗号分隔) or as an Excel workbook (.xlsx)"
MAX_CELL = 32 * 1024  # characters in one CSV cell; the longest field (content) takes 5,000
MAX_COLUMNS = 200


@dataclass(frozen=True)
class Limits:
    """What a file may hold (settings: XF_IMPORT_MAX_ROWS, XF_IMPORT_MAX_UNZIPPED_BYTES)."""

    max_rows: int = 100_000
    max_unzipped_bytes: int = 200 * 1024 * 1024


@dataclass
class Sheet:
    """A file's rows, read and checked: (row number, {column: value}) for each non-empty row."""

    rows: list[tuple[int, dict]]
    warnings: list[str] = field(default_factory=list)
    encoding: str = "xlsx"


def read_file(data: bytes, filename: str, limits: Limits = Limits()) -> Sheet:
    """The whole file, or InvalidInput naming the row and what to do; nothing is stored either way."""
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        _check_xlsx(data, limits)
        raw, encoding = _xlsx_rows(data), "xlsx"
    elif lower.endswith((".csv", ".txt")):
        text, encoding = decode_csv(data)
        raw = _csv_rows(text)
    else:
        raise InvalidInput([FieldError("file", f"must be a .csv or .xlsx file; {HINT}")])
    header = next(raw, None)
    if header is None:
        raise InvalidInput([FieldError("file", "is empty")])
    columns, warnings = _columns(header)
    rows = []
    for row_no, cells in enumerate(raw, start=2):
        values = {col: _cell(cells[i]) for i, col in columns.items() if i < len(cells)}
        if any(v not in (None, "") for v in values.values()):
            if len(rows) >= limits.max_rows:
                raise InvalidInput([FieldError("file", f"has more than {limits.max_rows} rows; split it into several "
                                                       "files")])
            rows.append((row_no, values))
    return Sheet(rows, warnings, encoding)


def decode_csv(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (with or without BOM), UTF-16 with its BOM, else GB18030 (which reads
    GBK and GB2312). A file that mixes them, or that is none of them, is refused naming the row."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(data, "utf-16"), "utf-16"
    if data.startswith(codecs.BOM_UTF8):
        return _decode(data[len(codecs.BOM_UTF8):], "utf-8"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if any(b >= 0x80 for b in data[:exc.start]):  # UTF-8 text before the bad bytes: one bad row
            raise InvalidInput([FieldError("file", f"row {_row_at(data, exc.start)} is not in UTF-8 though the rows "
                                                   f"before it are: a file holds one encoding; {HINT}")]) from None
    return _decode(data, "gb18030"), "gb18030"


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput([FieldError("file", f"row {_row_at(data, exc.start)} cannot be read as {encoding}; "
                                               f"{HINT}")]) from None


def _row_at(data: bytes, position: int) -> int:
    """The spreadsheet row of a byte position (a line; cells with line breaks are rare in these files)."""
    return data[:position].count(b"\n") + 1


def _csv_rows(text: str) -> Iterator[list]:
    first = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=first.count)  # Excel's "Unicode text" is tab-separated
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # NUL, a cell over the limit, an unclosed quote at the end
            raise InvalidInput([FieldError("file", f"row {reader.line_num}: {exc}; {HINT}")]) from None
        if any(len(c) > MAX_CELL for c in cells):
            raise InvalidInput([FieldError("file", f"row {reader.line_num}: a cell is longer than {MAX_CELL} "
                                                   "characters")])
        yield cells


_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\s+ref=\"[A-Z]*\d*:?([A-Z]+)(\d+)\"")
_ROW = re.compile(rb"<(?:\w+:)?row[\s>/]")


def _check_xlsx(data: bytes, limits: Limits) -> None:
    """Before openpyxl parses anything: a ZIP of sheets, its declared unpacked size, and each sheet's
    declared and actual rows (the row tags are counted in one pass) within the limits."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InvalidInput([FieldError("file", f"is not an Excel workbook (.xlsx); {HINT}")])
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > limits.max_unzipped_bytes:
                raise InvalidInput([FieldError("file", f"unpacks to more than {limits.max_unzipped_bytes} bytes")])
            sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")]
            if not sheets:
                raise InvalidInput([FieldError("file", f"is a ZIP file but not an Excel workbook; {HINT}")])
            for name in sheets:
                _check_sheet(z, name, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise InvalidInput([FieldError("file", f"is a damaged workbook ({exc}); {HINT}")]) from None


def _check_sheet(z: zipfile.ZipFile, name: str, limits: Limits) -> None:
    rows, tail = 0, b""
    with z.open(name) as sheet:
        while block := sheet.read(1 << 20):
            chunk = tail + block
            if rows == 0 and (m := _DIMENSION.search(chunk)):
                last_col, last_row = m[1].decode(), int(m[2])
                if last_row > limits.max_rows + 1 or _column_number(last_col) > MAX_COLUMNS:
                    raise InvalidInput([FieldError("file", f"declares {last_row} rows and {_column_number(last_col)} "
                                                           f"columns; at most {limits.max_rows} rows and {MAX_COLUMNS} "
                                                           "columns")])
            rows += len(_ROW.findall(chunk)) - len(_ROW.findall(tail))
            if rows > limits.max_rows + 1:
                raise InvalidInput([FieldError("file", f"has more than {limits.max_rows} rows; split it into "
                                                       "several files")])
            tail = chunk[-32:]


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def _xlsx_rows(data: bytes) -> Iterator[list]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a damaged workbook
        raise InvalidInput([FieldError("file", f"cannot be read as an Excel workbook ({type(exc).__name__}); "
                                               f"{HINT}")]) from None
    try:
        yield from (list(r) for r in workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


def _columns(header: list) -> tuple[dict[int, str], list[str]]:
    """The columns the bureau uses, by position, and a warning for each other column (ignored)."""
    columns: dict[int, str] = {}
    warnings, errors = [], []
    for i, h in enumerate(header):
        name = str(h or "").strip()
        if not name:
            continue
        col = _HEADER_TO_COLUMN.get(name.lower())
        if col is None:
            warnings.append(f"column {name!r} is not used and was ignored")
        elif col in columns.values():
            errors.append(FieldError("header", f"column {col!r} appears twice ({name!r}); keep one"))
        else:
            columns[i] = col
    missing = [c for c in REQUIRED if c not in columns.values()]
    errors += [FieldError("header", f"missing column {m!r} (or {' / '.join(COLUMNS[m][1:])})") for m in missing]
    if errors:
        raise InvalidInput(errors)
    return columns, warnings


def _cell(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.strip() if isinstance(value, str) else (None if value is None else str(value))


def to_submission(values: dict, drive_id: str) -> dict:
    """A row as the body of a screening-channel submission; conversions left to the model's checks."""
    data: dict = {"channel": "screening", "drive_id": drive_id, "resident": {}}
    for col, value in values.items():
        if value in (None, ""):
            continue
        if col in _RESIDENT:
            data["resident"][col] = value
        elif col in ("escalated", "backlog"):
            text = str(value).strip().lower()
            data[col] = True if text in _TRUE else False if text in _FALSE else value
        elif col == "accused_units":
            data[col] = [u.strip() for u in str(value).replace("，", ",").split(",") if u.strip()]
        else:
            data[col] = value
    return data


def column_of(field: str) -> str:
    """The column a submission field came from, for the row report (``resident.phone`` → ``phone``)."""
    head = field.removeprefix("resident.")
    return head.split("[")[0] if head.split("[")[0] in COLUMNS else head


def chunks(rows: Iterable[tuple[int, dict]], size: int) -> Iterator[list[tuple[int, dict]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk
