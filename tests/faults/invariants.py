"""What must hold once the system is quiet after a fault, read from the services' own databases and
from the streams (as admin), never from the services' answers alone.

- every 201 intake answered is stored once, with gap-free case numbers per year;
- the case stream holds exactly one ``CaseReceived`` per case, no event id twice, and no two
  reminders, overdues or escalations for the same case, due kind and due date;
- routing holds exactly one lead assignment (or one triage) per case, supervision one timeline per
  case (known, not ``new``), scoring counts every case once (its facts and its report);
- every outbox is drained, every durable consumer caught up (nothing pending, nothing unacked);
- the dead-letter stream holds exactly what the faults put there on purpose (the :class:`Ledger`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import text

from shared import events as ev
from shared import subjects
from tests.faults.load import Load
from tests.faults.system import CLOCK_START, SERVICES, System

ALERTS = ("CaseReminded", "CaseOverdue", "CaseEscalated")


@dataclass
class Ledger:
    """What the faults put on the bus on purpose, and what an earlier failed fault left behind."""

    dead_letters: Counter = field(default_factory=Counter)  # (service, kind) → how many DEADLETTER holds
    forged: set[str] = field(default_factory=set)  # event ids of forged second CaseReceived of a case
    poison: int = 0  # undecodable messages in the case stream
    # Cases a fault that failed left broken: the later faults' per-case checks leave them out, so
    # each fault is judged on what it did itself (the failed fault's report lists them).
    quarantined: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    headers: dict
    data: bytes


async def read_stream(system: System, stream: str) -> list[Stored] | None:
    """Every message of ``stream`` (None: the stream does not exist)."""
    nc = await system.admin()
    try:
        js = nc.jetstream(timeout=10)
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return None
        if info.state.messages == 0:
            return []
        last = info.state.last_seq
        sub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0))
        out: list[Stored] = []
        try:
            while not out or out[-1].seq < last:
                try:
                    msgs = await sub.fetch(1000, timeout=2)
                except (NatsTimeout, asyncio.TimeoutError):
                    break
                out += [Stored(m.metadata.sequence.stream, m.subject, dict(m.headers or {}), m.data) for m in msgs]
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def _scalar(system: System, service: str, sql: str) -> int:
    with system.engine(service).connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def _rows(system: System, service: str, sql: str) -> list:
    with system.engine(service).connect() as conn:
        return list(conn.execute(text(sql)))


def _examples(items, n: int = 5) -> str:  # noqa: ANN001
    items = sorted(items)
    return ", ".join(map(str, items[:n])) + (f" … ({len(items)} in all)" if len(items) > n else "")


def quiet(system: System, load: Load, ledger: Ledger) -> list[str]:
    """Cheap signs that the system has settled: outboxes drained, consumers caught up, every
    accepted case known to every service."""
    out = []
    for s in SERVICES:
        pending = _scalar(system, s, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        if pending:
            out.append(f"{s}: {pending} outbox rows unsent")
    for durable, (pending, unacked) in asyncio.run(system.consumer_lag()).items():
        if (pending, unacked) != (0, 0):
            out.append(f"consumer {durable}: num_pending {pending}, num_ack_pending {unacked}")
    want = set(load.accepted.values()) - ledger.quarantined
    known = {"intake": "SELECT number FROM cases", "routing": "SELECT case_id FROM cases",
             "supervision": "SELECT case_id FROM cases WHERE state <> 'new'",
             "scoring": "SELECT case_id FROM case_facts WHERE received_at IS NOT NULL"}
    for s, sql in known.items():
        if missing := want - {r[0] for r in _rows(system, s, sql)}:
            out.append(f"{s}: {len(missing)} of {len(want)} accepted cases not there (yet): {_examples(missing)}")
    return out


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # the cases some per-case invariant fails for

    def add(self, message: str, cases: set[str] | None = None) -> None:
        self.problems.append(message)
        self.broken |= cases or set()


def check(system: System, load: Load, ledger: Ledger) -> Findings:
    """Every invariant of the module's docstring (cases an earlier failed fault left broken, the
    ledger's quarantine, are left out of the per-case ones)."""
    found = Findings(quiet(system, load, ledger))
    numbers = _intake(system, load, ledger, found)
    _stream(system, numbers, ledger, found)
    _routing(system, numbers, found)
    _supervision(system, numbers, found)
    _scoring(system, numbers, ledger, found)
    _dead_letters(system, ledger, found)
    return found


def _intake(system: System, load: Load, ledger: Ledger, found: Findings) -> set[str]:
    """intake's side; the case numbers the other services are checked against."""
    accepted = load.accepted
    numbers = set(accepted.values())
    if len(numbers) != len(accepted):
        shared = {n for n, c in Counter(accepted.values()).items() if c > 1}
        found.add(f"intake: one case number answered for two keys: {_examples(shared)}", shared)
    stored = _rows(system, "intake", "SELECT number, year, seq FROM cases")
    have = {r.number for r in stored}
    if lost := numbers - have:
        found.add(f"intake: answered 201 but not stored: {_examples(lost)}", lost)
    if unknown := have - numbers - ledger.quarantined:
        found.add(f"intake: stored but never answered 201: {_examples(unknown)}", unknown)
    by_year = defaultdict(list)
    for r in stored:
        by_year[r.year].append(r.seq)
    for year, seqs in by_year.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            missing = set(range(1, max(seqs) + 1)) - set(seqs)
            found.add(f"intake: {year}'s numbers are not gap-free (missing {_examples(missing)}, "
                      f"{len(seqs) - len(set(seqs))} doubled)")
    keys = {r.key.removeprefix("case:") for r in _rows(system, "intake", "SELECT key FROM idempotency_keys")}
    if keys != set(accepted):
        found.add(f"intake: idempotency keys stored {len(keys)}, accepted {len(accepted)} (not stored: "
                  f"{_examples(set(accepted) - keys)}; never answered: {_examples(keys - set(accepted))})")
    return (numbers & have) - ledger.quarantined


def _stream(system: System, numbers: set[str], ledger: Ledger, found: Findings) -> None:
    stored = asyncio.run(read_stream(system, system.settings.stream_name)) or []
    ids: Counter[str] = Counter()
    received: Counter[str] = Counter()
    leads: Counter[str] = Counter()
    alerts: Counter[tuple] = Counter()
    poison = 0
    for m in stored:
        try:
            e = ev.decode(m.data)
        except ev.UndecodableEvent:
            poison += 1
            continue
        ids[e.event_id] += 1
        if isinstance(e, ev.CaseReceived) and e.event_id not in ledger.forged:
            received[e.case_id] += 1
        elif (isinstance(e, ev.CaseAssigned) and e.role == "lead") or isinstance(e, ev.CaseNeedsTriage):
            leads[e.case_id] += 1
        elif e.type in ALERTS:
            alerts[(e.type, e.case_id, e.due_kind, e.due_at)] += 1
    if twice := [i for i, n in ids.items() if n > 1]:
        found.add(f"stream: event ids stored more than once: {_examples(twice)}")
    if bad := {c for c in numbers if received[c] != 1} | (set(received) - numbers - ledger.quarantined):
        found.add(f"stream: not exactly one CaseReceived for {_examples(f'{c}×{received[c]}' for c in bad)}", bad)
    if bad := {c for c in numbers if leads[c] != 1}:
        found.add(f"stream: not exactly one lead CaseAssigned or CaseNeedsTriage for "
                  f"{_examples(f'{c}×{leads[c]}' for c in bad)}", bad)
    if missing := ledger.forged - set(ids):
        found.add(f"stream: forged events missing: {_examples(missing)}")
    if poison != ledger.poison:
        found.add(f"stream: {poison} undecodable messages, {ledger.poison} published")
    if doubled := [k for k, n in alerts.items() if n > 1]:
        found.add(f"stream: alerts fired twice for the same due date: "
                  f"{_examples(f'{t} {c} {k} {d:%Y-%m-%d}×{alerts[(t, c, k, d)]}' for t, c, k, d in doubled)}",
                  {c for _, c, _, _ in doubled})


def _routing(system: System, numbers: set[str], found: Findings) -> None:
    leads = Counter(r.case_id for r in _rows(system, "routing", "SELECT case_id FROM assignments WHERE role = 'lead'"))
    triage = Counter(r.case_id for r in _rows(system, "routing", "SELECT case_id FROM triage"))
    if bad := {c for c in numbers if leads[c] + triage[c] != 1}:
        found.add(f"routing: not exactly one lead or triage for "
                  f"{_examples(f'{c} (lead×{leads[c]}, triage×{triage[c]})' for c in bad)}", bad)


def _supervision(system: System, numbers: set[str], found: Findings) -> None:
    states = {r.case_id: r.state for r in _rows(system, "supervision", "SELECT case_id, state FROM cases")}
    if unknown := numbers - set(states):
        found.add(f"supervision: cases unknown: {_examples(unknown)}", unknown)
    if new := {c for c in numbers if states.get(c) == "new"}:
        found.add(f"supervision: cases still new: {_examples(new)}", new)
    received = Counter(r.case_id for r in _rows(
        system, "supervision", "SELECT case_id FROM timeline WHERE type = 'CaseReceived' AND status = 'applied'"))
    if bad := {c for c in numbers if received[c] != 1}:
        found.add(f"supervision: not one CaseReceived applied on the timeline of "
                  f"{_examples(f'{c}×{received[c]}' for c in bad)}", bad)


def _scoring(system: System, numbers: set[str], ledger: Ledger, found: Findings) -> None:
    facts = {r.case_id for r in _rows(system, "scoring", "SELECT case_id FROM case_facts WHERE received_at IS NOT NULL")}
    if bad := (numbers - facts) | (facts - numbers - ledger.quarantined):
        found.add(f"scoring: case facts differ from intake's cases (missing {_examples(numbers - facts)}, "
                  f"unknown {_examples(facts - numbers - ledger.quarantined)})", bad)
    year = str(CLOCK_START.year)
    in_year = sum(n.split("-")[1] == year for n in numbers)
    left_out = sum(n.split("-")[1] == year for n in ledger.quarantined)
    answer = system.http.get(f"{system.url('scoring')}/api/v1/reports/{year}")
    if answer.status_code != 200:
        found.add(f"scoring: GET /api/v1/reports/{year}: {answer.status_code}")
    elif not in_year <= (got := answer.json()["figures"]["received"]) <= in_year + left_out:
        found.add(f"scoring: the {year} report counts {got} cases received, intake has {in_year}"
                  + (f" (and {left_out} left out)" if left_out else ""))


def dead_letters(system: System) -> Counter | None:
    """(service, kind) → messages in the dead-letter stream (None: the stream does not exist)."""
    stored = asyncio.run(read_stream(system, subjects.DEAD_LETTER_STREAM))
    if stored is None:
        return None
    return Counter((m.subject.split(".", 1)[1], m.headers.get("Xf-Error-Kind", "?")) for m in stored)


def _dead_letters(system: System, ledger: Ledger, found: Findings) -> None:
    have = dead_letters(system)
    if have is None:
        found.add("the dead-letter stream does not exist")
    elif have != ledger.dead_letters:
        found.add(f"dead letters {dict(sorted(have.items()))}, expected {dict(sorted(ledger.dead_letters.items()))}")


def wait_for_invariants(system: System, load: Load, ledger: Ledger, since: float, timeout: float = 120.0) -> float:
    """Poll until every invariant holds (the cheap signs first); the seconds from ``since`` (the
    fault's end) until they did. Fails with what still does not hold after ``timeout``."""
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        try:
            found = quiet(system, load, ledger)
            if not found:
                found = check(system, load, ledger).problems
                if not found:
                    return time.monotonic() - since
        except Exception as exc:  # noqa: BLE001 - a database or NATS still coming back
            found = [f"the check itself failed: {exc!r}"]
        time.sleep(0.5)
    raise AssertionError(f"invariants still broken {timeout:.0f}s after the fault "
                         f"(service logs: {system.log_dir}):\n  " + "\n  ".join(found))


def alert_problems(system: System, now: datetime) -> tuple[Counter, list[str]]:
    """After the last sweep at ``now``: every open due date of every case whose reminder, overdue
    and escalation times have passed has each of them in the stream exactly once, and the stream
    holds exactly the alerts supervision recorded as sent. (alerts by type, problems)"""
    from shared.policy import load_policy

    policy = load_policy(system.settings.config_dir)
    stream = asyncio.run(read_stream(system, system.settings.stream_name)) or []
    fired: Counter[tuple] = Counter()
    for m in stream:
        with contextlib.suppress(ev.UndecodableEvent):
            e = ev.decode(m.data)
            if e.type in ALERTS:
                fired[(STAGES[e.type], e.case_id, e.due_kind, e.due_at)] += 1
    out = []
    if doubled := [k for k, n in fired.items() if n > 1]:
        out.append(f"alerts in the stream twice: {_examples(doubled)}")
    recorded = {(r.stage, r.case_id, r.kind, _aware(r.due_at)) for r in _rows(
        system, "supervision", "SELECT stage, case_id, kind, due_at FROM alerts WHERE stage IN ('reminded', 'overdue', 'escalated')")}
    if recorded != set(fired):
        out.append(f"alerts recorded by supervision but not in the stream: {_examples(recorded - set(fired))}; "
                   f"in the stream but not recorded: {_examples(set(fired) - recorded)}")
    missed = []
    for r in _rows(system, "supervision", "SELECT case_id, dues FROM cases"):
        dues = json.loads(r.dues) if isinstance(r.dues, str) else r.dues
        for d in dues:
            due_at = _aware(d["due_at"])
            if d.get("met_at") is None and policy.escalate_at(due_at) <= now:
                missed += [(stage, r.case_id, d["kind"], due_at) for stage in STAGES.values()
                           if fired[(stage, r.case_id, d["kind"], due_at)] != 1]
    if missed:
        out.append(f"alerts not fired exactly once: {_examples(missed)}")
    return Counter(stage for stage, *_ in fired.elements()), out


STAGES = {"CaseReminded": "reminded", "CaseOverdue": "overdue", "CaseEscalated": "escalated"}


def _aware(at: datetime | str) -> datetime:
    """A UTC datetime from a column (SQLite gives text, naive) or an ISO string."""
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
