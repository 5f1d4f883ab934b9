"""Drive files as county offices have them, uploaded over HTTP: CSV from Chinese Excel (GBK), as
"Unicode text" (UTF-16, tab-separated) and as CSV UTF-8 with its BOM; an XLSX with columns the bureau
does not use. A file that cannot be read is refused before anything is stored, naming the row; an
XLSX that unpacks to 300,000 blank rows is refused unparsed; an import stopped part way reports the
rows that are in, and the same file again imports the rest. Real nats-server, SQLite and PostgreSQL."""
from __future__ import annotations

import codecs
import io
import os
import zipfile

import pytest
from fastapi.testclient import TestClient
from openpyxl import Workbook
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from tests.helpers import resident_id, table_counts

HEADER = ["序号", "姓名", "身份证号", "联系电话", "乡镇", "村", "纠纷类别", "事由", "基本情况", "备注"]


def rows(n: int, start: int = 1) -> list[list[str]]:
    return [[str(i), f"村民{i}", resident_id(i), "138 1234 5678", "nanhe", "nanhe-hekou", "neighbor_dispute",
             f"宅基地界址纠纷{i}号", "两户因宅基地界址发生争执", "排查发现"] for i in range(start, start + n)]


def csv_text(body: list[list[str]], sep: str = ",") -> str:
    return "\r\n".join(sep.join(r) for r in [HEADER, *body]) + "\r\n"


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def opened(intake: TestClient) -> str:
    answer = intake.post("/api/v1/drives", json={"kind": "quarterly", "name": "第四季度矛盾纠纷排查",
                                                 "starts_on": "2026-10-01", "ends_on": "2026-12-31"})
    assert answer.status_code == 201, answer.text
    return answer.json()["drive_id"]


def upload(intake: TestClient, drive: str, name: str, data: bytes):  # noqa: ANN201
    return intake.post(f"/api/v1/drives/{drive}/import", files={"file": (name, data)})


@pytest.mark.one_database
@pytest.mark.parametrize(("saved_as", "encode", "encoding"), [
    ("GBK, Chinese Excel's CSV", lambda t: t.encode("gbk"), "gb18030"),
    ("Unicode text", lambda t: codecs.BOM_UTF16_LE + t.replace(",", "\t").encode("utf-16-le"), "utf-16"),
    ("CSV UTF-8", lambda t: codecs.BOM_UTF8 + t.encode("utf-8"), "utf-8-sig"),
    ("UTF-8 without BOM", lambda t: t.encode("utf-8"), "utf-8"),
])
def test_a_csv_saved_by_chinese_excel_is_read_in_its_encoding(
        intake: TestClient, saved_as: str, encode, encoding: str) -> None:  # noqa: ANN001
    drive = opened(intake)
    answer = upload(intake, drive, "排查.csv", encode(csv_text(rows(3))))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["created"], report["refused_rows"], report["encoding"]) == (3, 0, encoding), (saved_as, report)
    assert report["warnings"] == ["column '序号' is not used and was ignored", "column '备注' is not used and was ignored"]
    case = intake.get(f"/api/v1/cases/{report['case_numbers']['2']}").json()
    assert case["resident_name"] == "村民1" and case["title"] == "宅基地界址纠纷1号"
    assert case["resident_phone"] == "13812345678"  # 138 1234 5678, normalised


@pytest.mark.one_database
def test_an_xlsx_with_columns_the_bureau_does_not_use_imports_with_a_warning(intake: TestClient) -> None:
    wb = Workbook()
    wb.active.append(HEADER)
    for r in rows(2):
        wb.active.append(r)
    data = io.BytesIO()
    wb.save(data)
    report = upload(intake, opened(intake), "排查.xlsx", data.getvalue()).json()
    assert (report["created"], report["encoding"], len(report["warnings"])) == (2, "xlsx", 2)


def test_a_utf8_file_with_one_gbk_row_at_602_is_refused_naming_it_and_nothing_is_stored(
        intake: TestClient, intake_db: Engine) -> None:
    drive = opened(intake)
    good = csv_text(rows(600)).encode("utf-8")
    bad = ",".join(rows(1, 601)[0]).encode("gbk") + b"\r\n"
    data = good + bad + csv_text(rows(5, 602)).split("\r\n", 1)[1].encode("utf-8")
    before = table_counts(intake_db)
    answer = upload(intake, drive, "排查.csv", data)
    assert answer.status_code == 422, answer.text
    message = answer.json()["fields"][0]["message"]
    assert "row 602" in message and "CSV UTF-8" in message and ".xlsx" in message
    assert table_counts(intake_db) == before


@pytest.mark.one_database
def test_an_xlsx_that_unpacks_to_300000_blank_rows_is_refused_before_it_is_parsed(intake: TestClient) -> None:
    wb = Workbook()
    wb.active.append(HEADER)
    plain = io.BytesIO()
    wb.save(plain)
    bomb = io.BytesIO()
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                blank = "".join(f'<row r="{i}"/>' for i in range(2, 300_002)).encode()
                data = data.replace(b"</sheetData>", blank + b"</sheetData>")
            out.writestr(item, data)
    assert len(bomb.getvalue()) < 1_000_000
    answer = upload(intake, opened(intake), "排查.xlsx", bomb.getvalue())
    assert answer.status_code == 422 and "more than 100000 rows" in answer.json()["fields"][0]["message"], answer.text


@pytest.mark.one_database
@pytest.mark.parametrize(("name", "data", "says"), [
    ("排查.xlsx", os.urandom(4096), "not an Excel workbook"),
    ("排查.xlsx", zipped({"readme.txt": b"not a workbook"}), "not an Excel workbook"),
    ("排查.csv", csv_text(rows(1)).replace("备注", "姓名").encode(), "appears twice"),
    ("排查.csv", (csv_text(rows(1)) + "2,张三," + "长" * 140_000 + "\r\n").encode(), "row 3"),
    ("排查.doc", b"whatever", "must be a .csv or .xlsx file"),
    ("排查.csv", b"", "is empty"),
])
def test_a_file_that_cannot_be_read_is_refused_with_the_reason_and_changes_nothing(
        intake: TestClient, intake_db: Engine, name: str, data: bytes, says: str) -> None:
    drive = opened(intake)
    before = table_counts(intake_db)
    answer = upload(intake, drive, name, data)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_input" and says in answer.json()["fields"][0]["message"]
    assert table_counts(intake_db) == before


@pytest.mark.one_database
def test_a_chunk_of_rows_that_repeats_a_row_or_names_another_drive_is_refused(intake: TestClient) -> None:
    drive = opened(intake)
    values = dict(zip(["name", "township", "title", "content"], ["张三", "nanhe", "宅基地纠纷", "界址争执"]))
    twice = intake.post(f"/api/v1/drives/{drive}/rows", json={"source": "abcdef1234", "rows": [
        {"row": 2, "values": values}, {"row": 2, "values": values}]})
    assert twice.status_code == 422 and "appear more than once" in twice.text
    other = intake.post(f"/api/v1/drives/{drive}/rows", json={"source": "abcdef1234", "rows": [
        {"row": 2, "values": {**values, "drive_id": "D2026-999"}}]})
    assert other.status_code == 422 and "drive_id" in other.text


def test_an_import_stopped_part_way_reports_the_rows_in_and_the_same_file_imports_the_rest(
        intake: TestClient, settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from services.intake import drives

    drive = opened(intake)
    intake.app.state.intake.settings = settings.model_copy(update={"import_chunk_rows": 100})
    data = csv_text(rows(350)).encode("utf-8")
    real, calls = drives.import_rows, []

    def database_gone_at_the_third_chunk(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real(*args, **kw)
    monkeypatch.setattr(drives, "import_rows", database_gone_at_the_third_chunk)
    stopped = upload(intake, drive, "排查.csv", data)
    assert stopped.status_code == 503 and stopped.json()["error"] == "unavailable", stopped.text
    report = stopped.json()["report"]
    assert sorted(map(int, report["case_numbers"])) == list(range(2, 202))  # rows 2-201: the first two chunks
    assert "row 202" in stopped.json()["message"] and "Send the same file again" in stopped.json()["message"]

    monkeypatch.setattr(drives, "import_rows", real)
    again = upload(intake, drive, "排查.csv", data).json()
    assert (again["already_imported"], again["created"], len(again["case_numbers"])) == (200, 150, 350)
