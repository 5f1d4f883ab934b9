"""Screening drives (矛盾纠纷排查): open, close, and bulk-import their disputes.

An import is idempotent by row: each row's key is (drive, file hash, row number), so a file sent
again, or an interrupted import run again, creates no case twice. Each chunk of rows is one
transaction: a row is a case with its event, or nothing.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pydantic import ValidationError
from sqlalchemy import func, select, update

from services.intake import domain, importer, tables
from services.intake.schemas import CaseSubmission, DriveIn, DriveView, ImportReport, RowError
from services.intake.service import Draft, Intake, Replayed, allocate, register
from shared import events as ev
from shared.db import DB_UNAVAILABLE
from shared.errors import Conflict, FieldError, InvalidInput, NotFound, Unavailable, pydantic_field_errors
from shared.outbox import enqueue


def open_drive(intake: Intake, body: DriveIn, actor: ev.Actor) -> DriveView:
    if body.ends_on < body.starts_on:
        raise InvalidInput([FieldError("ends_on", "must not be before starts_on")])
    now = intake.clock.now()
    with intake.uow.begin() as conn:
        year = body.starts_on.year
        drive_id = f"D{year}-{allocate(conn, f'drive:{year}', 1):03d}"
        conn.execute(tables.drives.insert(), {"drive_id": drive_id, "kind": body.kind, "name": body.name,
                                              "starts_on": body.starts_on, "ends_on": body.ends_on,
                                              "status": "open", "opened_at": now})
        enqueue(conn, tables.outbox, [ev.DriveOpened(drive_id=drive_id, occurred_at=now, actor=actor, kind=body.kind,
                                                     name=body.name, starts_on=body.starts_on, ends_on=body.ends_on)], now)
    return DriveView(drive_id=drive_id, status="open", cases=0, **body.model_dump())


def close_drive(intake: Intake, drive_id: str, actor: ev.Actor) -> DriveView:
    now = intake.clock.now()
    t = tables.drives
    with intake.uow.begin() as conn:
        status = conn.execute(select(t.c.status).where(t.c.drive_id == drive_id)).scalar()
        if status is None:
            raise NotFound(f"no drive {drive_id}")
        if status == "closed":
            raise Conflict(f"drive {drive_id} is already closed")
        conn.execute(update(t).where(t.c.drive_id == drive_id).values(status="closed", closed_at=now))
        enqueue(conn, tables.outbox, [ev.DriveClosed(drive_id=drive_id, occurred_at=now, actor=actor)], now)
    return get_drive(intake, drive_id)


def list_drives(intake: Intake, drive_id: str | None = None) -> list[DriveView]:
    t, c = tables.drives, tables.cases
    counts = (select(c.c.drive_id, func.count().label("n")).where(c.c.drive_id.is_not(None))
              .group_by(c.c.drive_id).subquery())
    q = select(t, func.coalesce(counts.c.n, 0).label("n")).outerjoin(counts, counts.c.drive_id == t.c.drive_id)
    if drive_id is not None:
        q = q.where(t.c.drive_id == drive_id)
    with intake.uow.engine.connect() as conn:
        return [DriveView(drive_id=r.drive_id, kind=r.kind, name=r.name, starts_on=r.starts_on, ends_on=r.ends_on,
                          status=r.status, cases=r.n) for r in conn.execute(q.order_by(t.c.opened_at))]


def get_drive(intake: Intake, drive_id: str) -> DriveView:
    found = list_drives(intake, drive_id)
    if not found:
        raise NotFound(f"no drive {drive_id}")
    return found[0]


def import_rows(intake: Intake, drive_id: str, source: str, rows: Iterable[tuple[int, dict]],
                actor: ev.Actor) -> ImportReport:
    """Import one chunk of a drive's rows in one transaction; bad rows are reported, not stored."""
    report = ImportReport()
    drafts: list[tuple[int, Draft]] = []
    for row_no, values in rows:
        report.rows += 1
        checked = _checked(intake, importer.to_submission(values, drive_id))
        if isinstance(checked, CaseSubmission):
            drafts.append((row_no, Draft(checked, actor, f"import:{drive_id}:{source}:{row_no}")))
        else:
            report.errors += _row_errors(row_no, checked)
    if drafts:
        with intake.uow.begin() as conn:
            results = register(conn, intake, [d for _, d in drafts])
        for (row_no, _), result in zip(drafts, results):
            if isinstance(result, list):
                report.errors += _row_errors(row_no, result)
            elif isinstance(result, Conflict):
                report.errors.append(RowError(row=row_no, field="row", message=result.message))
            elif isinstance(result, Replayed):
                report.case_numbers[row_no] = result.accepted.case_number
                report.already_imported += 1
            else:
                report.case_numbers[row_no] = result.case_number
                report.created += 1
    report.errors.sort(key=lambda e: e.row)
    report.refused_rows, report.errors_total = len({e.row for e in report.errors}), len(report.errors)
    intake.metrics.import_rows.labels("created").inc(report.created)
    intake.metrics.import_rows.labels("invalid").inc(report.refused_rows)
    return capped(intake, report)


def capped(intake: Intake, report: ImportReport) -> ImportReport:
    """The report with at most ``import_max_errors`` errors listed (``errors_total`` counts them all)."""
    report.errors = report.errors[:intake.settings.import_max_errors]
    return report


def _row_errors(row_no: int, errors: list[FieldError]) -> list[RowError]:
    return [RowError(row=row_no, field=importer.column_of(e.field), message=e.message) for e in errors]


def _checked(intake: Intake, data: dict) -> CaseSubmission | list[FieldError]:
    """The row as a submission that passes every check, or everything wrong with it."""
    try:
        sub = CaseSubmission.model_validate(data)
    except ValidationError as exc:
        return domain.merge_errors(pydantic_field_errors(exc.errors()), domain.check_submission(data, intake.directory))
    return domain.check_submission(sub.model_dump(), intake.directory) or sub


@contextmanager
def counted(intake: Intake) -> Iterator[None]:
    """Count an import request (a file upload, or one chunk of rows from ``xinfang import``) by how it
    ended: completed, refused (the file or a row set could not be read: 422) or failed (stopped part
    way: 503). A drive import failing is what ops are alerted to (deploy/prometheus)."""
    try:
        yield
    except InvalidInput:
        intake.metrics.imports.labels("refused").inc()
        raise
    except (Unavailable, *DB_UNAVAILABLE):
        intake.metrics.imports.labels("failed").inc()
        raise
    intake.metrics.imports.labels("completed").inc()


def import_file(intake: Intake, drive_id: str, stream: BinaryIO, filename: str, actor: ev.Actor) -> ImportReport:
    """The HTTP upload: the whole file is read and checked first (a file that cannot be read is refused
    before anything is stored), then imported chunk by chunk. A chunk that cannot be stored (the
    database gone) stops the import: 503 with the report of the rows that are in; the same file sent
    again imports the rest (each row is keyed by the file's hash and its number)."""
    get_drive(intake, drive_id)
    data = stream.read()
    source = hashlib.sha256(data).hexdigest()[:32]
    s = intake.settings
    sheet = importer.read_file(data, filename, importer.Limits(s.import_max_rows, s.import_max_unzipped_bytes))
    total = ImportReport(warnings=sheet.warnings, encoding=sheet.encoding)
    for chunk in importer.chunks(sheet.rows, s.import_chunk_rows):
        try:
            part = import_rows(intake, drive_id, source, chunk, actor)
        except DB_UNAVAILABLE:
            last = max(total.case_numbers, default=None)
            raise Unavailable(
                f"the import stopped at row {chunk[0][0]}: the database cannot be reached. "
                + (f"The rows up to {last} that the report lists are in. " if last else "No row is in. ")
                + "Send the same file again to import the rest: rows already in are not imported twice.",
                details={"report": capped(intake, total).model_dump(mode="json")}) from None
        total.rows += part.rows
        total.created += part.created
        total.already_imported += part.already_imported
        total.refused_rows += part.refused_rows
        total.errors_total += part.errors_total
        total.case_numbers.update(part.case_numbers)
        total.errors += part.errors
    return capped(intake, total)
