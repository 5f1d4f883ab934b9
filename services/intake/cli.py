"""``xinfang import``: streams a file to intake in chunks, with a progress bar and a row report."""
from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from services.intake import importer
from shared.errors import InvalidInput


def import_file(path: Path, drive: str, base_url: str, token: str | None, chunk: int, errors_path: Path) -> int:
    """0 when every row is in, 1 when some rows were refused (see the report), 2 when nothing could start."""
    if not path.exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    source = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    created = replayed = 0
    errors: list[dict] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client, path.open("rb") as stream:
        drive_answer = client.get(f"/api/v1/drives/{drive}")
        if drive_answer.status_code in (401, 403):
            print(f"intake answered {drive_answer.status_code}: {drive_answer.json().get('message', '')}; "
                  "give a clerk's token with --token or XF_TOKEN", file=sys.stderr)
            return 2
        if drive_answer.status_code != 200:
            print(f"drive {drive}: {drive_answer.json().get('message', drive_answer.text)}", file=sys.stderr)
            return 2
        try:
            rows = importer.read_rows(stream, path.name)
            bar = tqdm(total=count_rows(path), unit="row", desc=f"import {path.name}")
            for part in importer.chunks(rows, chunk):
                answer = client.post(f"/api/v1/drives/{drive}/rows", json={
                    "source": source, "rows": [{"row": n, "values": v} for n, v in part]})
                if answer.status_code != 200:
                    bar.close()
                    print(f"intake refused a chunk ({answer.status_code}): {answer.text}", file=sys.stderr)
                    return 2
                report = answer.json()
                created += report["created"]
                replayed += report["already_imported"]
                errors += report["errors"]
                bar.update(len(part))
            bar.close()
        except InvalidInput as exc:
            for e in exc.errors:
                print(f"{path.name}: {e.field}: {e.message}", file=sys.stderr)
            return 2
    print(f"{created} cases created, {replayed} rows already imported, {len({e['row'] for e in errors})} rows refused")
    if errors:
        with errors_path.open("w", newline="", encoding="utf-8-sig") as f:
            writer = csv.DictWriter(f, fieldnames=["row", "field", "message"])
            writer.writeheader()
            writer.writerows(errors)
        print(f"the refused rows, by row and field: {errors_path}")
        return 1
    return 0


def count_rows(path: Path) -> int | None:
    """Data rows in the file, for the progress bar's total (None when it cannot tell cheaply)."""
    if path.suffix.lower() == ".csv":
        with path.open("rb") as f:
            return max(sum(1 for _ in f) - 1, 0)
    if path.suffix.lower() == ".xlsx":
        from openpyxl import load_workbook
        wb = load_workbook(path, read_only=True)
        try:  # counted, not read from the sheet's dimension tag, which writers often omit
            return max(sum(1 for _ in wb.worksheets[0].iter_rows(values_only=True)) - 1, 0)
        finally:
            wb.close()
    return None
