"""``xinfang reconcile``: the services' sent outbox rows against the stream (DESIGN §8).

JetStream acknowledges a publish before it fsyncs unless the server runs with ``sync_interval:
always``; an OS crash can then lose acknowledged messages (Jepsen, NATS 2.12.1). Every event a
service published is a row of its outbox, kept ``XF_OUTBOX_RETENTION_DAYS`` after sending. This
module reads the sent rows of each service, scans the stream for their ids (the ``Nats-Msg-Id``
header, ``= event_id``), and re-publishes the missing ones with the same subject, payload and id.

The duplicate window. The stream remembers each ``Nats-Msg-Id`` for ``duplicate_window`` after the
message was stored, and nats-server (2.15, tested in tests/test_reconcile.py) keeps remembering it
when the message is deleted or purged: a re-publish inside that window is acknowledged with
``duplicate=True`` and the *deleted* message's sequence, and nothing is stored. Duplicate acks do
not extend the window. A server that restarted rebuilds its de-duplication map from the messages it
still has, so an id lost in a crash is free at once. A re-publish answered "duplicate" for a message
the stream does not hold is reported as blocked, with when to retry (at most the row's ``sent_at`` +
the window from now), never as restored.

Only events that went through an outbox can be checked: a department's own events (published by
the unit's client straight to the stream) have no row here.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, func, inspect, select
from sqlalchemy.pool import NullPool

from shared.db import normalize_url, sqlite_path
from shared.outbox import outbox_table
from shared.settings import SERVICES, Settings

MSG_ID = "Nats-Msg-Id"
# Scan the stream from this much before the earliest possible store time: clock skew between the
# services' hosts and the server, and the time between a publish and the relay's marking it sent.
SCAN_MARGIN = timedelta(minutes=2)
FETCH_BATCH = 1000
PUBLISH_CHUNK = 500  # acks gathered per chunk, like the outbox relay
PUBLISH_TIMEOUT_S = 5.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReconcileError(ValueError):
    """A bad argument or an unreachable part: the command says so and exits 2."""


@dataclass(frozen=True)
class Row:
    event_id: str
    subject: str
    created_at: datetime
    sent_at: datetime


@dataclass
class Blocked:
    event_id: str
    subject: str
    retry_after_s: int


@dataclass
class ServiceReport:
    service: str
    checked: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # event id → error
    doubled: int = 0  # ids of these rows stored more than once (a relay retry after the window)
    unsent: int = 0  # rows the relay has not sent yet: not checked, the relay will send them
    skipped: str | None = None

    @property
    def unresolved(self) -> int:
        return len(self.blocked) + len(self.failed)


@dataclass
class Report:
    stream: str
    since: datetime
    dry_run: bool
    duplicate_window_s: float = 0.0
    scanned_from: datetime | None = None
    scanned: int = 0
    services: list[ServiceReport] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(len(s.missing) for s in self.services)

    @property
    def exit_code(self) -> int:
        """0: nothing missing, or everything missing re-published; 1: something is (still) missing."""
        if self.dry_run:
            return 1 if self.missing else 0
        return 1 if any(s.unresolved for s in self.services) else 0

    def to_json(self) -> dict:
        out = asdict(self)
        out["since"] = self.since.isoformat()
        out["scanned_from"] = self.scanned_from.isoformat() if self.scanned_from else None
        out["missing"], out["exit_code"] = self.missing, self.exit_code
        return out


# --- arguments ----------------------------------------------------------------------------------

def parse_since(text: str | None, now: datetime, retention_days: int) -> datetime:
    """``2d``, ``12h``, ``30m``, ``90s``, ``1w`` back from now, or an ISO 8601 date-time (without a
    zone: UTC). None: the whole retention (``XF_OUTBOX_RETENTION_DAYS``)."""
    if text is None:
        return now - timedelta(days=retention_days)
    if m := _DURATION.match(text):
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReconcileError(f"--since {text!r}: an ISO date-time (2026-11-01T08:00+08:00) "
                             "or a duration (2d, 12h, 30m)") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


# --- the databases ------------------------------------------------------------------------------

OUTBOX = outbox_table(MetaData())


def open_outbox(settings: Settings, service: str) -> tuple[Engine | None, str | None]:
    """A read-only use of the service's database, or why there is none (never creates a file)."""
    url = normalize_url(settings.db_url(service))
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None, f"no database ({path})"
    engine = create_engine(url, poolclass=NullPool)
    try:
        if not inspect(engine).has_table("outbox"):
            engine.dispose()
            return None, "no outbox table"
    except Exception as exc:  # noqa: BLE001 - one unreachable database must not hide the others
        engine.dispose()
        return None, f"database unreachable: {exc.__class__.__name__}: {exc}".splitlines()[0]
    return engine, None


def sent_rows(engine: Engine, since: datetime) -> tuple[list[Row], int]:
    """The rows sent at or after ``since``, in outbox order, and how many are not sent yet."""
    t = OUTBOX
    with engine.connect() as conn:
        rows = [Row(*r) for r in conn.execute(
            select(t.c.event_id, t.c.subject, t.c.created_at, t.c.sent_at)
            .where(t.c.sent_at.is_not(None), t.c.sent_at >= since).order_by(t.c.id))]
        unsent = conn.execute(select(func.count()).where(t.c.sent_at.is_(None))).scalar_one()
    return rows, unsent


def payloads(engine: Engine, event_ids: list[str]) -> dict[str, bytes]:
    t, out = OUTBOX, {}
    with engine.connect() as conn:
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            out.update(conn.execute(select(t.c.event_id, t.c.payload).where(t.c.event_id.in_(chunk))).all())
    return out


def scan_start(rows: list[Row], duplicate_window: timedelta) -> datetime:
    """The earliest time a row's message can have been stored. ``created_at`` is the service's clock
    (a simulated one in demo mode); ``sent_at`` is the relay's wall clock, after the ack. A message
    stored by an earlier attempt whose ack was lost is at most the duplicate window older than the
    attempt the relay marked sent (a later retry would have been stored anew)."""
    return min(min(r.created_at for r in rows), min(r.sent_at for r in rows) - duplicate_window) - SCAN_MARGIN


# --- the stream ---------------------------------------------------------------------------------

async def stream_ids(js, stream: str, start: datetime, last_seq: int) -> tuple[Counter, int]:  # noqa: ANN001
    """``Nats-Msg-Id`` → how often it is stored, for the messages from ``start`` up to ``last_seq``,
    and how many messages were read. An ephemeral pull consumer that delivers headers only."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    ids: Counter = Counter()
    scanned = 0
    if last_seq == 0:
        return ids, 0
    name = f"xf_reconcile_{uuid.uuid4().hex}"
    await js.add_consumer(stream, ConsumerConfig(
        name=name, deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start, ack_policy=AckPolicy.NONE,
        headers_only=True, inactive_threshold=60.0, mem_storage=True, max_waiting=1))
    sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        if (await js.consumer_info(stream, name)).num_pending == 0:
            return ids, 0
        while True:
            try:
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=5)
            except (NatsTimeout, asyncio.TimeoutError):
                return ids, scanned  # nothing more stored
            for m in msgs:
                if m.metadata.sequence.stream > last_seq:
                    return ids, scanned
                scanned += 1
                if m.headers and m.headers.get(MSG_ID):
                    ids[m.headers[MSG_ID]] += 1
            last = msgs[-1].metadata
            if last.sequence.stream >= last_seq or last.num_pending == 0:
                return ids, scanned
    finally:
        await sub.unsubscribe()
        try:
            await js.delete_consumer(stream, name)
        except Exception:  # noqa: BLE001, S110 - it goes after inactive_threshold anyway
            pass


async def stored_with_id(js, stream: str, seq: int, event_id: str) -> bool:  # noqa: ANN001
    """Whether the stream holds message ``seq`` and it carries ``event_id``."""
    from nats.js.errors import NotFoundError

    try:
        msg = await js.get_msg(stream, seq=seq)
    except NotFoundError:
        return False
    return bool(msg.headers) and msg.headers.get(MSG_ID) == event_id


async def republish(js, stream: str, engine: Engine, rows: list[Row], window_s: float,  # noqa: ANN001
                    report: ServiceReport, now: datetime) -> None:
    """Publish ``rows`` again, acks gathered per chunk, and sort each into re-published, present
    after all (the duplicate ack names a stored message with this id), blocked or failed."""
    for i in range(0, len(rows), PUBLISH_CHUNK):
        data = payloads(engine, [r.event_id for r in rows[i:i + PUBLISH_CHUNK]])
        chunk = [r for r in rows[i:i + PUBLISH_CHUNK] if r.event_id in data]
        for gone in (r for r in rows[i:i + PUBLISH_CHUNK] if r.event_id not in data):
            report.failed[gone.event_id] = "its outbox row was deleted meanwhile (past the retention)"
        acks = await asyncio.gather(*(js.publish(r.subject, data[r.event_id], headers={MSG_ID: r.event_id},
                                                 timeout=PUBLISH_TIMEOUT_S) for r in chunk),
                                    return_exceptions=True)
        for row, ack in zip(chunk, acks):
            if isinstance(ack, BaseException):
                report.failed[row.event_id] = repr(ack)
            elif not ack.duplicate:
                report.republished.append(row.event_id)
            elif await stored_with_id(js, stream, ack.seq, row.event_id):
                report.missing.remove(row.event_id)  # the scan missed it: it is there
                report.present += 1
            else:  # deleted, but its id is still in the de-dup map: the server stored nothing
                left = (row.sent_at + timedelta(seconds=window_s) - now).total_seconds()
                report.blocked.append(Blocked(row.event_id, row.subject, max(1, math.ceil(left) + 1)))


# --- the whole run ------------------------------------------------------------------------------

async def reconcile(settings: Settings, services: list[str] | None = None, since: datetime | None = None,
                    dry_run: bool = False, creds: Path | None = None) -> Report:
    """Check (and unless ``dry_run`` repair) the sent outbox rows of ``services`` (default all)
    sent since ``since`` (default: the whole retention) against the stream, as NATS ``admin``."""
    now = datetime.now(timezone.utc)
    report = Report(settings.stream_name, since or now - timedelta(days=settings.outbox_retention_days), dry_run)
    engines: dict[str, Engine] = {}
    rows: dict[str, list[Row]] = {}
    try:
        # The rows first: each row read was sent, so its message is at or before the stream's last
        # sequence, which _compare reads next and scans up to (later publishes are not waited for).
        for service in services or SERVICES:
            sr = ServiceReport(service)
            report.services.append(sr)
            engine, sr.skipped = open_outbox(settings, service)
            if engine is not None:
                engines[service] = engine
                rows[service], sr.unsent = sent_rows(engine, report.since)
                sr.checked = len(rows[service])
        if any(rows.values()):  # else nothing was sent in the period: nothing to compare
            await _compare(settings, creds, report, rows, engines, now)
    finally:
        for engine in engines.values():
            engine.dispose()
    return report


async def _compare(settings: Settings, creds: Path | None, report: Report, rows: dict[str, list[Row]],
                   engines: dict[str, Engine], now: datetime) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NotFoundError

    from shared import natsauth

    options = natsauth.connect_options(settings, natsauth.ADMIN, creds)
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc))  # a permissions violation arrives here; the request itself times out
    try:
        nc = await nats.connect(settings.nats_servers, name="xinfang-reconcile", connect_timeout=5,
                                allow_reconnect=False, error_cb=on_error, **options)
    except Exception as exc:  # noqa: BLE001
        raise ReconcileError(f"cannot connect to NATS at {settings.effective_nats_url}: {exc!r}") from None
    try:
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        info = await js.stream_info(settings.stream_name)
        report.duplicate_window_s = info.config.duplicate_window or 0.0
        everything = [r for rs in rows.values() for r in rs]
        report.scanned_from = scan_start(everything, timedelta(seconds=report.duplicate_window_s))
        found, report.scanned = await stream_ids(js, settings.stream_name, report.scanned_from, info.state.last_seq)
        for sr in report.services:
            mine = rows.get(sr.service, [])
            absent = [r for r in mine if found[r.event_id] == 0]
            sr.missing, sr.present = [r.event_id for r in absent], len(mine) - len(absent)
            sr.doubled = sum(1 for r in mine if found[r.event_id] > 1)
            if absent and not report.dry_run:
                await republish(js, settings.stream_name, engines[sr.service], absent,
                                report.duplicate_window_s, sr, now)
    except NotFoundError:
        raise ReconcileError(f"stream {settings.stream_name} does not exist") from None
    except (NatsTimeout, asyncio.TimeoutError):
        why = refused[-1] if refused else "no answer"
        raise ReconcileError(f"NATS refused or did not answer user {options.get('user', '(anonymous)')}: {why}; "
                             "reconcile reads the stream through a consumer of its own and publishes: it needs "
                             "the admin user (--creds admin.json)") from None
    finally:
        await nc.close()


# --- the command's output -----------------------------------------------------------------------

def render(report: Report) -> str:
    head = (f"stream {report.stream}: outbox rows sent since {report.since.isoformat(timespec='seconds')}; "
            + (f"{report.scanned} messages read from {report.scanned_from.isoformat(timespec='seconds')}"
               if report.scanned_from else "nothing to compare"))
    cols = ("service", "checked", "present", "missing", "re-published", "blocked", "failed", "unsent")
    lines = [head, "", "  ".join(f"{c:>12}" if i else f"{c:<12}" for i, c in enumerate(cols))]
    for s in report.services:
        if s.skipped:
            lines.append(f"{s.service:<12}  skipped: {s.skipped}")
            continue
        cells = (s.checked, s.present, len(s.missing), "-" if report.dry_run else len(s.republished),
                 len(s.blocked), len(s.failed), s.unsent)
        lines.append(f"{s.service:<12}" + "".join(f"  {c:>12}" for c in cells))
    lines.append("")
    for s in report.services:
        if s.missing:
            shown = ", ".join(s.missing[:5]) + (f", … ({len(s.missing)} in all)" if len(s.missing) > 5 else "")
            lines.append(f"{s.service}: missing from the stream: {shown}")
        if s.blocked:
            lines.append(f"{s.service}: {len(s.blocked)} cannot be restored yet: the stream's duplicate window "
                         f"({report.duplicate_window_s:g} s) still holds their ids although the messages are "
                         f"gone, so the server stored nothing; retry after {max(b.retry_after_s for b in s.blocked)} s")
        if s.failed:
            lines.append(f"{s.service}: {len(s.failed)} re-publishes failed: {next(iter(s.failed.values()))}")
        if s.doubled:
            lines.append(f"{s.service}: {s.doubled} events are stored more than once (a relay retry after the "
                         "duplicate window; the consumers' inboxes apply each once)")
    if report.dry_run:
        lines.append(f"dry run: {report.missing} missing, nothing published" if report.missing
                     else "nothing missing")
    elif report.exit_code:
        lines.append("NOT everything missing is in the stream again: run reconcile again after the time above")
    else:
        lines.append(f"every missing event re-published ({report.missing})" if report.missing else "nothing missing")
    return "\n".join(lines)


def command(settings: Settings, since: str | None, services: list[str] | None, dry_run: bool, as_json: bool,
            creds: Path | None) -> int:
    """``xinfang reconcile``: 0 all there (or restored), 1 something is missing, 2 could not check."""
    try:
        when = parse_since(since, datetime.now(timezone.utc), settings.outbox_retention_days)
        report = asyncio.run(reconcile(settings, list(dict.fromkeys(services)) if services else None, when,
                                       dry_run, creds))
    except (ReconcileError, FileNotFoundError, ValueError) as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), ensure_ascii=False, indent=1) if as_json else render(report), flush=True)
    return report.exit_code
