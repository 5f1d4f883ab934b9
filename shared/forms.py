"""The bureau's standard forms as files (信访事项登记表, 受理分流指派通知单, 大接访交办表): a form of
labelled fields as DOCX, a table as XLSX. Each service fills them from its own records; this module
only lays them out, the same way for all."""
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA = {"docx": DOCX, "xlsx": XLSX, "md": "text/markdown; charset=utf-8", "csv": "text/csv; charset=utf-8",
         "txt": "text/plain; charset=utf-8"}

CHANNEL_NAMES = {"walk_in": "来访(受理室)", "letter": "来信", "phone": "来电", "online": "网上信访",
                 "delegated": "代办", "night_visit": "夜访", "screening": "排查", "referral": "上级交办"}


def form_docx(title: str, fields: Iterable[tuple[str, str]], heading: str = "", footer: Sequence[str] = ()) -> bytes:
    """A printed form: its title, an optional line under it (number, date), a two-column table of
    label and value, and the lines at its foot (signatures, dates)."""
    from docx import Document

    doc = Document()
    doc.add_heading(title, level=1)
    if heading:
        doc.add_paragraph(heading)
    fields = list(fields)
    table = doc.add_table(rows=0, cols=2)
    table.style = "Table Grid"
    for label, value in fields:
        cells = table.add_row().cells
        cells[0].text, cells[1].text = label, value or "—"
    for line in footer:
        doc.add_paragraph(line)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def add_table(doc, header: Sequence[str], rows: Iterable[Sequence[str]], grid: bool = False):  # noqa: ANN001, ANN201
    """A table in a python-docx document: the header row, then the rows (every value a string)."""
    table = doc.add_table(rows=1, cols=len(header))
    if grid:
        table.style = "Table Grid"
    for cell, title in zip(table.rows[0].cells, header):
        cell.text = title
    for row in rows:
        for cell, value in zip(table.add_row().cells, row):
            cell.text = value
    return table


def table_xlsx(title: str, header: Sequence[str], rows: Iterable[Sequence[object]], sheet: str = "表") -> bytes:
    """A table as a workbook: the title in the first row, the header in the second, then the rows."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append([title])
    ws.append(list(header))
    for row in rows:
        ws.append(list(row))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def attachment(body: bytes | str, name: str, kind: str):  # noqa: ANN201 - a fastapi Response
    """A file to download (``name.kind``: docx, xlsx, md, csv or txt); a Chinese name as RFC 6266's
    ``filename*`` (UTF-8), with an ASCII ``filename`` for older clients."""
    from urllib.parse import quote

    from fastapi import Response

    ascii_name = name.encode("ascii", "ignore").decode().strip("-") or "document"
    disposition = f'attachment; filename="{ascii_name}.{kind}"'
    if ascii_name != name:
        disposition += f"; filename*=UTF-8''{quote(f'{name}.{kind}')}"
    return Response(body, media_type=MEDIA.get(kind, MEDIA["txt"]), headers={"Content-Disposition": disposition})
