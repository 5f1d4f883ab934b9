"""``xinfang import``: reads and checks a drive's file, then sends it to intake in chunks, with a
progress bar and a row report. Exit codes (README, "Commands"): 0 every row is in; 1 some rows were
refused (listed in the errors file); 2 nothing was imported (the file, the drive, the token or intake
could not be used); 3 the import stopped part way (the rows in so far are reported; the same command
again imports the rest, never a row twice). Failures are one line on stderr, never a traceback."""
from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from services.intake import importer
from shared.errors import InvalidInput

ALL_IN, SOME_REFUSED, NOTHING_IMPORTED, STOPPED = 0, 1, 2, 3


def import_file(path: Path, drive: str, base_url: str, token: str | None, chunk: int, errors_path: Path,
                limits: importer.Limits = importer.Limits()) -> int:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _fail(f"{path}: {exc.strerror or exc}", NOTHING_IMPORTED)
    try:
        sheet = importer.read_file(data, path.name, limits)
    except InvalidInput as exc:
        return _fail("; ".join(f"{path.name}: {e.message}" for e in exc.errors), NOTHING_IMPORTED)
    for warning in sheet.warnings:
        print(f"{path.name}: {warning}", file=sys.stderr)
    source = hashlib.sha256(data).hexdigest()[:32]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    created = replayed = 0
    errors: list[dict] = []
    last_in = None
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
            refused = _drive_problem(client, drive)
            if refused:
                return _fail(refused, NOTHING_IMPORTED)
            with tqdm(total=len(sheet.rows), unit="row", desc=f"import {path.name}") as bar:
                for part in importer.chunks(sheet.rows, chunk):
                    answer = client.post(f"/api/v1/drives/{drive}/rows", json={
                        "source": source, "rows": [{"row": n, "values": v} for n, v in part]})
                    if answer.status_code != 200:
                        raise _Stopped(part[0][0], f"intake answered {answer.status_code}: {_message(answer)}")
                    report = answer.json()
                    created += report["created"]
                    replayed += report["already_imported"]
                    errors += report["errors"]
                    last_in = max(map(int, report["case_numbers"]), default=last_in)
                    bar.update(len(part))
    except (_Stopped, httpx.HTTPError) as exc:
        row = exc.row if isinstance(exc, _Stopped) else None
        print(_summary(created, replayed, errors), file=sys.stderr)
        _write_errors(errors, errors_path)
        return _fail(f"the import stopped{f' at row {row}' if row else ''}: {exc}. "
                     + (f"Rows up to {last_in} are in. " if last_in else "No row is in. ")
                     + "Run the same command again to import the rest (no row is imported twice).", STOPPED
                     if created or replayed else NOTHING_IMPORTED)
    print(_summary(created, replayed, errors))
    if errors:
        _write_errors(errors, errors_path)
        print(f"the refused rows, by row and field: {errors_path}")
        return SOME_REFUSED
    return ALL_IN


class _Stopped(Exception):
    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


def _drive_problem(client: httpx.Client, drive: str) -> str | None:
    answer = client.get(f"/api/v1/drives/{drive}")
    if answer.status_code in (401, 403):
        return f"intake answered {answer.status_code}: {_message(answer)}; give a clerk's token with --token or XF_TOKEN"
    if answer.status_code != 200:
        return f"drive {drive}: {_message(answer)}"
    if answer.json().get("status") != "open":
        return f"drive {drive} is closed: open a drive for these disputes"
    return None


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("message", answer.text[:200]))
    except ValueError:
        return answer.text[:200]


def _summary(created: int, replayed: int, errors: list[dict]) -> str:
    return f"{created} cases created, {replayed} rows already imported, {len({e['row'] for e in errors})} rows refused"


def _write_errors(errors: list[dict], errors_path: Path) -> None:
    if errors:
        with errors_path.open("w", newline="", encoding="utf-8-sig") as f:  # Excel reads the BOM as UTF-8
            writer = csv.DictWriter(f, fieldnames=["row", "field", "message"])
            writer.writeheader()
            writer.writerows(errors)


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code
