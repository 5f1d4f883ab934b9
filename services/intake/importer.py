"""Reading a screening drive's disputes from CSV or XLSX, row by row (never the whole file).

Columns may be headed in English or in Chinese; rows are numbered as the clerk sees them in a
spreadsheet (the header is row 1). A row becomes the same submission the HTTP API takes, so it
passes the same checks.
"""
from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import BinaryIO

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


def read_rows(stream: BinaryIO, filename: str) -> Iterator[tuple[int, dict]]:
    """(row number, {column: value}) for each non-empty row; raises InvalidInput for a bad header."""
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        raw = _xlsx_rows(stream)
    elif lower.endswith(".csv"):
        raw = csv.reader(codecs.getreader("utf-8-sig")(stream))
    else:
        raise InvalidInput([FieldError("file", "must be a .csv (UTF-8) or .xlsx file")])
    header = next(iter(raw), None)
    if header is None:
        raise InvalidInput([FieldError("file", "is empty")])
    columns = _columns(header)
    for row_no, cells in enumerate(raw, start=2):
        values = {col: _cell(cells[i]) for i, col in columns.items() if i < len(cells)}
        if any(v not in (None, "") for v in values.values()):
            yield row_no, values


def _xlsx_rows(stream: BinaryIO) -> Iterator[list]:
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(stream.read()) if not stream.seekable() else stream, read_only=True,
                             data_only=True)
    try:
        yield from (list(r) for r in workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


def _columns(header: list) -> dict[int, str]:
    columns, unknown = {}, []
    for i, h in enumerate(header):
        name = str(h or "").strip()
        if not name:
            continue
        col = _HEADER_TO_COLUMN.get(name.lower())
        if col is None:
            unknown.append(name)
        else:
            columns[i] = col
    errors = [FieldError("header", f"unknown column {u!r}", valid=sorted(COLUMNS)) for u in unknown]
    missing = [c for c in REQUIRED if c not in columns.values()]
    errors += [FieldError("header", f"missing column {m!r} (or {' / '.join(COLUMNS[m][1:])})") for m in missing]
    if errors:
        raise InvalidInput(errors)
    return columns


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
