"""Screening drives: open and close, and bulk import from CSV or XLSX with a report by row and field."""
from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from openpyxl import Workbook
from sqlalchemy import Engine

from shared.events import DriveClosed, DriveOpened
from shared.settings import Settings
from tests.helpers import outbox_pending, read_subject, resident_id, table_counts, wait_until

HEADER = ["姓名", "身份证号", "联系电话", "乡镇", "村", "类别", "事由", "内容", "人数"]


def dispute(i: int, **change) -> list:
    row = {"姓名": f"村民{i}", "身份证号": resident_id(i), "联系电话": "13900001111", "乡镇": "xishan",
           "村": "xishan-zhuyuan", "类别": "land_contract", "事由": f"承包地边界纠纷第{i}组", "内容": "两户承包地边界不清",
           "人数": 2}
    row.update(change)
    return [row[h] for h in HEADER]


def as_csv(rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def as_xlsx(rows: list[list]) -> bytes:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("排查")
    ws.append(HEADER)
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def open_drive(intake: TestClient) -> str:
    return intake.post("/api/v1/drives", json={"kind": "special", "name": "2026年国庆节前矛盾纠纷专项排查",
                                               "starts_on": "2026-09-01", "ends_on": "2026-09-30"}).json()["drive_id"]


def upload(intake: TestClient, drive: str, name: str, data: bytes):  # noqa: ANN201
    return intake.post(f"/api/v1/drives/{drive}/import", files={"file": (name, data)})


def test_opening_and_closing_a_drive_publishes_both(intake: TestClient, settings: Settings, intake_db: Engine) -> None:
    drive = open_drive(intake)
    assert drive.startswith("D2026-")
    closed = intake.post(f"/api/v1/drives/{drive}/close")
    assert closed.json()["status"] == "closed"
    assert intake.post(f"/api/v1/drives/{drive}/close").status_code == 409
    wait_until(lambda: outbox_pending(intake_db) == 0, what="the outbox to drain")
    events = [e for _, e in read_subject(settings.nats_url, "drives.>")]
    assert [type(e) for e in events] == [DriveOpened, DriveClosed]
    assert events[0].kind == "special" and events[0].drive_id == drive


def test_an_upload_creates_the_valid_rows_and_reports_the_bad_ones_by_row_and_field(
        intake: TestClient, settings: Settings, intake_db: Engine) -> None:
    drive = open_drive(intake)
    rows = [dispute(i) for i in range(1, 9)]
    rows[2] = dispute(3, 身份证号="331082198001010019")  # bad checksum: spreadsheet row 4
    rows[5] = dispute(6, 乡镇="atlantis", 事由="")  # two bad fields: row 7
    report = upload(intake, drive, "排查.csv", as_csv(rows)).json()
    assert report["rows"] == 8 and report["created"] == 6
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(4, "id_number"), (7, "title"), (7, "township")]
    assert set(report["case_numbers"]) == {"2", "3", "5", "6", "8", "9"}
    wait_until(lambda: outbox_pending(intake_db) == 0, what="the outbox to drain")
    received = [e for _, e in read_subject(settings.nats_url, "cases.received")]
    assert len(received) == 6
    assert all(e.channel == "screening" and e.drive_id == drive and e.special_period for e in received)
    assert intake.get(f"/api/v1/drives/{drive}").json()["cases"] == 6


def test_uploading_the_same_file_again_creates_nothing_new(intake: TestClient, intake_db: Engine) -> None:
    drive = open_drive(intake)
    data = as_xlsx([dispute(i) for i in range(1, 21)])
    first = upload(intake, drive, "排查.xlsx", data).json()
    before = table_counts(intake_db)
    again = upload(intake, drive, "排查.xlsx", data).json()
    assert first["created"] == 20 and again["created"] == 0 and again["already_imported"] == 20
    assert again["case_numbers"] == first["case_numbers"]
    assert table_counts(intake_db) == before


def test_a_file_without_a_required_column_is_refused_whole_and_unknown_ones_are_named(
        intake: TestClient, intake_db: Engine) -> None:
    drive = open_drive(intake)
    before = table_counts(intake_db)
    answer = intake.post(f"/api/v1/drives/{drive}/import",
                         files={"file": ("x.csv", "姓名,星座,事由\n张三,白羊,测试\n".encode())})
    assert answer.status_code == 422
    messages = [f["message"] for f in answer.json()["fields"]]
    assert any("missing column 'township'" in m for m in messages)
    assert table_counts(intake_db) == before
    fine = intake.post(f"/api/v1/drives/{drive}/import", files={"file": ("x.csv", (
        "姓名,星座,乡镇,事由,内容\n张三,白羊,nanhe,宅基地纠纷,两户争执\n").encode())}).json()
    assert fine["created"] == 1 and fine["warnings"] == ["column '星座' is not used and was ignored"]


def test_an_upload_of_another_format_is_refused(intake: TestClient) -> None:
    drive = open_drive(intake)
    answer = intake.post(f"/api/v1/drives/{drive}/import", files={"file": ("x.pdf", b"%PDF-1.4")})
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "file"


def test_rows_sent_in_chunks_are_imported_once(intake: TestClient) -> None:
    drive = open_drive(intake)
    chunk = {"source": "a" * 32, "rows": [{"row": i + 2, "values": dict(zip(
        ["name", "id_number", "phone", "township", "village", "category", "title", "content", "people_count"],
        dispute(i)))} for i in range(10)]}
    first = intake.post(f"/api/v1/drives/{drive}/rows", json=chunk).json()
    again = intake.post(f"/api/v1/drives/{drive}/rows", json=chunk).json()
    assert first["created"] == 10 and again["already_imported"] == 10 and again["created"] == 0
