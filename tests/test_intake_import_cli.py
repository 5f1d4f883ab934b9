"""`xinfang import`: a 10,000-row XLSX drive import, sent in chunks, with a row-level error report."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openpyxl import Workbook

from services.runtime import NatsServer
from shared.db import make_engine
from tests.helpers import free_port, outbox_pending, resident_id, start_service, stop_process, table_counts, wait_until

HEADER = ["name", "id_number", "phone", "township", "village", "category", "title", "content", "people_count"]
BAD_ROWS = {  # spreadsheet row → (column, value): each breaks one rule
    101: ("id_number", "331082198001010019"),
    2002: ("township", "atlantis"),
    5003: ("phone", "12345"),
    7004: ("title", ""),
    9999: ("category", "ufo"),
}


def write_drive_file(path: Path, rows: int) -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("disputes")
    ws.append(HEADER)
    for row_no in range(2, rows + 2):
        values = dict(zip(HEADER, [f"村民{row_no}", resident_id(row_no, born=f"19{50 + row_no % 40}0101"),
                                   "13700000000", "nanhe", "nanhe-hekou", "neighbor_dispute",
                                   f"宅基地界址纠纷{row_no}号", "两户因宅基地界址发生争执", 1 + row_no % 7]))
        if row_no in BAD_ROWS:
            column, value = BAD_ROWS[row_no]
            values[column] = value
        ws.append([values[h] for h in HEADER])
    wb.save(path)


def without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "XF_TOKEN"}


@pytest.mark.one_database
def test_a_10000_row_xlsx_imports_in_chunks_and_reports_the_bad_rows(
        tmp_path: Path, nats_server: NatsServer, db_url: str) -> None:
    file = tmp_path / "国庆排查.xlsx"
    write_drive_file(file, 10_000)
    port = free_port()
    env = {"XF_NATS_URL": nats_server.url, "XF_INTAKE_DB_URL": db_url, "XF_DATA_DIR": str(tmp_path / "var"),
           "XF_LOG_LEVEL": "WARNING", "XF_INTAKE_PORT": str(port)}
    # The operator makes a clerk's token, as README says; the import sends it (--token, or XF_TOKEN).
    made = subprocess.run([sys.executable, "-m", "services.cli", "token", "create", "--role", "clerk", "--staff",
                           "desk3"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    intake = start_service("intake", port, env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        drive = httpx.post(f"{base}/api/v1/drives", headers=auth, json={
            "kind": "special", "name": "国庆节前专项排查", "starts_on": "2026-09-15", "ends_on": "2026-09-30"}).json()
        no_token = subprocess.run([sys.executable, "-m", "services.cli", "import", str(file), "--drive",
                                   drive["drive_id"], "--url", base], env=without_token(),
                                  capture_output=True, text=True, timeout=600)
        assert no_token.returncode == 2 and "401" in no_token.stderr and "--token" in no_token.stderr
        run = subprocess.run([sys.executable, "-m", "services.cli", "import", str(file), "--drive", drive["drive_id"],
                              "--url", base, "--token", token], capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stderr  # 1: done, with refused rows
        assert "9995 cases created" in run.stdout and "5 rows refused" in run.stdout
        assert "import 国庆排查.xlsx" in run.stderr and "10000/10000" in run.stderr  # the progress bar

        report = list(csv.DictReader((tmp_path / "国庆排查.xlsx.errors.csv").open(encoding="utf-8-sig")))
        assert {(int(r["row"]), r["field"]) for r in report} == {(row, col) for row, (col, _) in BAD_ROWS.items()}

        assert httpx.get(f"{base}/api/v1/drives/{drive['drive_id']}", headers=auth).json()["cases"] == 9995
        engine = make_engine(db_url)
        wait_until(lambda: outbox_pending(engine) == 0, timeout=120, what="10,000 events to be published")
        before = table_counts(engine)
        again = subprocess.run([sys.executable, "-m", "services.cli", "import", str(file), "--drive",
                                drive["drive_id"], "--url", base], env={**without_token(), "XF_TOKEN": token},
                               capture_output=True, text=True, timeout=600)
        assert "0 cases created, 9995 rows already imported" in again.stdout
        assert table_counts(engine) == before
        engine.dispose()
    finally:
        assert stop_process(intake) == 0


@pytest.mark.one_database
def test_a_file_intake_cannot_read_or_an_import_stopped_part_way_ends_in_one_line_and_resumes(
        tmp_path: Path, nats_server: NatsServer, db_url: str) -> None:
    """A GBK row in a UTF-8 file: exit 2, one line naming row 602, nothing stored. Intake gone after two
    chunks (a proxy that stops forwarding): exit 3 with the rows in; the same command imports the rest."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.test_import_files import csv_text, rows

    port = free_port()
    env = {"XF_NATS_URL": nats_server.url, "XF_INTAKE_DB_URL": db_url, "XF_DATA_DIR": str(tmp_path / "var"),
           "XF_LOG_LEVEL": "WARNING", "XF_INTAKE_PORT": str(port)}
    made = subprocess.run([sys.executable, "-m", "services.cli", "token", "create", "--role", "clerk", "--staff",
                           "desk3"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    token = made.stdout.strip()
    intake = start_service("intake", port, env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    posts: list[int] = []

    class GoneAfterTwoChunks(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "POST":
                posts.append(1)
            if len(posts) > 2:
                self.send_response(502)
                self.end_headers()
                return
            answer = httpx.request(self.command, base + self.path, content=body or None,
                                   headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)
        do_GET = do_POST = _forward

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", free_port()), GoneAfterTwoChunks)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        drive = httpx.post(f"{base}/api/v1/drives", headers=auth, json={
            "kind": "quarterly", "name": "第四季度排查", "starts_on": "2026-10-01", "ends_on": "2026-12-31"}).json()
        engine = make_engine(db_url)
        before = table_counts(engine)

        mixed = tmp_path / "混合.csv"
        mixed.write_bytes(csv_text(rows(600)).encode() + ",".join(rows(1, 601)[0]).encode("gbk") + b"\r\n")
        refused = subprocess.run([sys.executable, "-m", "services.cli", "import", str(mixed), "--drive",
                                  drive["drive_id"], "--url", base, "--token", token],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "row 602" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and table_counts(engine) == before

        file = tmp_path / "排查.csv"
        file.write_bytes(csv_text(rows(350)).encode())
        args = [sys.executable, "-m", "services.cli", "import", str(file), "--drive", drive["drive_id"],
                "--token", token, "--chunk", "100"]
        stopped = subprocess.run([*args, "--url", f"http://127.0.0.1:{proxy.server_port}"],
                                 capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 3, stopped.stderr
        assert "stopped at row 202" in stopped.stderr and "Rows up to 201 are in" in stopped.stderr
        assert "Run the same command again" in stopped.stderr and "Traceback" not in stopped.stderr
        resumed = subprocess.run([*args, "--url", base], capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert "150 cases created, 200 rows already imported, 0 rows refused" in resumed.stdout
        engine.dispose()
    finally:
        proxy.shutdown()
        assert stop_process(intake) == 0
