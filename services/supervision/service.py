"""Supervision's use cases: keep each case's fold current, sweep the deadlines, decide extensions.

Every event about a case lands on its timeline, with its verdict. Each case's row keeps the case's
fold (the lifecycle's ``CaseState``) and the mark of the latest event in it (``domain.happened``):
an event that comes in order, as almost all do, is applied to that fold directly; one that comes
before the mark (arrival order across subjects is not the order things happened), or any event of a
case still waiting for its receipt, sends the case back to a fold of its whole timeline
(``refresh``). Either way the stored state is the full fold's, so arrival order does not matter.
The row also says when a sweep next has anything to do for the case (``next_check_at``), so a sweep
visits only those cases. What supervision itself decides (closing, archiving, reminders, overdue,
escalation, extension decisions) goes on the timeline, into the fold and into the outbox in the same
transaction, guarded so that it happens once.
"""
from __future__ import annotations

import copy
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import Connection, bindparam, func, select, update

from services.supervision import documents, domain, queries, tables
from shared import events as ev
from shared import keys as keyring
from shared import lifecycle
from shared.clock import Clock
from shared.consumer import Delivery
from shared.db import UnitOfWork, insert_ignore, lock_keys
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput, NotFound
from shared.keys import Keys
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.policy import DeadlinePolicy
from shared.settings import Settings
from shared.verdict import check_receipt

SUPERVISION = ev.Actor(kind="service", id="supervision")
ALERT_EVENTS = {"reminded": ev.CaseReminded, "overdue": ev.CaseOverdue, "escalated": ev.CaseEscalated}


class SupervisionMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("supervision")
        self.refused = Counter("xf_supervision_refused_events_total",
                               "Events refused as illegal where they fall in a case's lifecycle", ["type"],
                               registry=self.registry)
        self.alerts = Counter("xf_supervision_alerts_total", "Reminders, overdue and escalations sent",
                              ["stage", "kind"], registry=self.registry)
        self.notices = Counter("xf_supervision_notices_issued_total", "Numbered notices issued (交办, 督办…), by type",
                               ["type"], registry=self.registry)


@dataclass
class Supervision:
    uow: UnitOfWork
    directory: Directory
    policy: DeadlinePolicy
    clock: Clock
    metrics: SupervisionMetrics
    settings: Settings
    keys: Keys | None = None  # shared/keys.py: the query-code key checks the progress lookup

    def keys_of(self) -> Keys:
        if self.keys is None:
            self.keys = keyring.load(self.settings)
        return self.keys

    @property
    def clock_tolerance(self) -> timedelta:
        return timedelta(seconds=self.settings.clock_tolerance_s)

    @property
    def agent_days(self) -> dict[str, int]:
        return {code: s.time_limit_days for code, s in self.directory.service_types.items()}


# --- each case's fold ---------------------------------------------------------------------------

@dataclass
class Fold:
    """A case's fold as its row keeps it: the state and the mark (``domain.happened``) of the latest
    event folded into it. ``current`` when every event on the case's timeline is in it, so an event
    that comes at or after the mark is applied to it directly; not current for a row from before folds
    were kept or a case still waiting for its receipt (the case is folded again from its timeline)."""

    case_id: str
    state: domain.CaseState = field(default_factory=domain.CaseState)
    mark: tuple | None = None
    current: bool = True  # a case not seen yet: nothing to miss
    stored: bool = False  # the case has a row
    query_code_hash: str | None = None  # the receipt's, once this fold has seen it


def _folds(conn: Connection, case_ids: list[str]) -> dict[str, Fold]:
    """The stored folds of these cases (a fresh one for a case not seen yet), in one read."""
    c = tables.cases
    rows = conn.execute(select(c.c.case_id, c.c.fold, c.c.folded_at, c.c.folded_rank)
                        .where(c.c.case_id.in_(case_ids))).all() if case_ids else []
    stored = {r.case_id: _fold_of(r) for r in rows}
    return {case_id: stored.get(case_id) or Fold(case_id) for case_id in case_ids}


def _fold_of(row) -> Fold:  # noqa: ANN001 - a cases row
    try:
        state = lifecycle.state_from_dict(row.fold) if row.fold is not None else None
    except ValueError:  # kept before CaseState had the fields it has now
        state = None
    if state is None or row.folded_at is None:
        return Fold(row.case_id, current=False, stored=True)
    return Fold(row.case_id, state, (domain.as_utc(row.folded_at), row.folded_rank), current=state.state != "new", stored=True)


def _current(sup: Supervision, conn: Connection, case_id: str) -> Fold:
    """The case's fold for a use case that decides on it: the stored one when it is current, else the
    case folded again from its timeline. Locks the case (the consumer's batches wait)."""
    lock_keys(conn, "supervision:case", [case_id])
    fold = _folds(conn, [case_id])[case_id]
    if not (fold.current and fold.stored):
        _replace(fold, _refold(sup, conn, case_id, sup.clock.now()))
    return fold


# --- from the stream ----------------------------------------------------------------------------

def apply_events(sup: Supervision, conn: Connection, batch: list[Delivery]) -> None:
    """The consumer's batch. The batch's cases are locked first (replicas fold one case one at a time,
    ``lock_keys``); an event already on the timeline (a redelivery) is folded already. Each case's new
    events, in the order they happened, are applied to its stored fold when none comes before its
    mark, each written on the timeline with its verdict; else they go on the timeline ``pending`` and
    the case is folded again from it (``refresh``)."""
    lock_keys(conn, "supervision:case", (d.event.case_id for d in batch))
    seen = _on_timeline(conn, [d.event.event_id for d in batch])
    receipts = _receipts(conn, [d.event.case_id for d in batch if isinstance(d.event, ev.CaseReceived)])
    todo: dict[str, list[tuple[ev.Event, datetime]]] = {}
    for d in batch:
        e = d.event
        if isinstance(e, ev.CaseReceived):  # a second receipt of a case, under another id, is refused
            held = receipts.setdefault(e.case_id, set())
            check_receipt(e.case_id, bool(held - {e.event_id}))
            held.add(e.event_id)
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        todo.setdefault(e.case_id, []).append((e, domain.placed_at(e, d.received_at, sup.clock_tolerance)))
    folds = _folds(conn, list(todo))
    now = sup.clock.now()
    taken = {case_id: _fold_in(sup, folds[case_id], items) for case_id, items in todo.items()}
    insert_ignore(conn, tables.timeline, [row for t in taken.values() for row in t.rows])
    for case_id, t in taken.items():
        _settle(sup, conn, folds[case_id], t, now)
    _store(conn, list(folds.values()), sup.policy)


def _on_timeline(conn: Connection, event_ids: list[str]) -> set[str]:
    t = tables.timeline
    return set(conn.execute(select(t.c.event_id).where(t.c.event_id.in_(set(event_ids)))).scalars())


def _receipts(conn: Connection, case_ids: list[str]) -> dict[str, set[str]]:
    """The receipts (event ids) these cases have on the timeline."""
    if not case_ids:
        return {}
    t = tables.timeline
    held: dict[str, set[str]] = {}
    for case_id, event_id in conn.execute(select(t.c.case_id, t.c.event_id).where(
            t.c.case_id.in_(set(case_ids)), t.c.type == "CaseReceived")):
        held.setdefault(case_id, set()).add(event_id)
    return held


def _row(event: ev.Event, placed_at: datetime, status: str, reason: str = "") -> dict:
    return {"event_id": event.event_id, "case_id": event.case_id, "occurred_at": event.occurred_at,
            "placed_at": placed_at, "type": event.type, "unit": getattr(event, "unit", None),
            "payload": event.model_dump(mode="json"), "status": status, "reason": reason}


def _in_order(fold: Fold, event: ev.Event, placed_at: datetime) -> bool:
    """Can ``event`` be applied to the stored fold as a full fold would apply it: the fold is current,
    the event comes no earlier than its latest event, and a case not received yet starts with its receipt."""
    if not fold.current or (fold.mark is not None and domain.happened(placed_at, event.type) < fold.mark):
        return False
    return fold.state.state != "new" or isinstance(event, ev.CaseReceived)


@dataclass
class _Taken:
    """A case's new events: their timeline rows, and each applied to the fold with its verdict (and
    the state right after it, for a written notice) — or none applied, the case to be folded again."""

    rows: list[dict]
    verdicts: list[tuple[ev.Event, domain.Verdict, domain.CaseState | None]]
    refold: bool = False


def _fold_in(sup: Supervision, fold: Fold, items: list[tuple[ev.Event, datetime]]) -> _Taken:
    """Apply a case's new events to its fold, in the order they happened, if they come after it."""
    items = sorted(items, key=lambda item: domain.happened(item[1], item[0].type))  # stable: arrival among equals
    if not _in_order(fold, *items[0]):
        return _Taken([_row(e, at, "pending") for e, at in items], [], refold=True)
    rows, verdicts = [], []
    for event, at in items:
        verdict = domain.apply(fold.state, event, at, sup.policy, sup.agent_days)
        fold.mark = domain.happened(at, event.type)
        rows.append(_row(event, at, "applied" if verdict.applied else "refused", verdict.reason))
        # a written notice states the case as it stood right after its event
        verdicts.append((event, verdict, _snapshot(fold.state) if verdict.applied and isinstance(
            event, documents.WRITTEN) else None))
        if verdict.applied and isinstance(event, ev.CaseReceived):
            fold.query_code_hash = event.query_code_hash
    return _Taken(rows, verdicts)


def _snapshot(s: domain.CaseState) -> domain.CaseState:
    """A copy that later events leave as it is (deepcopy costs 5× more: only the containers and the
    due dates in them change)."""
    copied = {f.name: copy.copy(getattr(s, f.name)) for f in fields(s)}
    copied["dues"] = [copy.copy(d) for d in s.dues]
    return domain.CaseState(**copied)


def _settle(sup: Supervision, conn: Connection, fold: Fold, taken: _Taken, now: datetime) -> None:
    """Once the rows are on the timeline: the consequences of each first verdict, and the close when
    the case closes at once — or the case folded again from its timeline."""
    if taken.refold:
        _replace(fold, _refold(sup, conn, fold.case_id, now))
        return
    for event, verdict, as_of in taken.verdicts:
        _first_verdict(sup, conn, fold.state, event, "applied" if verdict.applied else "refused", verdict.reason,
                       lambda as_of=as_of: as_of, now)
    _close_at_once(sup, conn, fold, now)


def _replace(fold: Fold, new: Fold) -> None:
    fold.state, fold.mark, fold.current, fold.query_code_hash = new.state, new.mark, new.current, new.query_code_hash


def _decide(sup: Supervision, conn: Connection, fold: Fold, event: ev.Event, now: datetime) -> None:
    """What supervision decides about a case: in the outbox, on the timeline and into its fold, in the
    caller's transaction."""
    enqueue(conn, tables.outbox, [event], now)
    taken = _fold_in(sup, fold, [(event, event.occurred_at)])
    insert_ignore(conn, tables.timeline, taken.rows)
    _settle(sup, conn, fold, taken, now)


# What the resident and the bureau do about a case, forwarded to the units holding it (UnitNotified).
NOTIFY_UNITS = (ev.PetitionerFeedback, ev.ReviewRequested, ev.CaseClosed, ev.CaseArchived)


def _first_verdict(sup: Supervision, conn: Connection, state: domain.CaseState, event: ev.Event, status: str,
                   reason: str, as_of: Callable[[], domain.CaseState | None], now: datetime) -> None:
    """The consequences of a new verdict on an event: a department's refused event is reported to that
    unit (``cases.refused.<unit>``); the resident's feedback, a review request, the close and the
    archiving are forwarded to the units holding the case (``cases.notified.<unit>``); a unit's
    decision is written (``documents``, once per event)."""
    if status == "refused":
        sup.metrics.refused.labels(event.type).inc()
        refusal = ev.EventRefused.of(event, unit=event.unit, subject=event.subject, kind="refused", reason=reason,
                                     by="supervision", occurred_at=now) if event.published_by == "department" else None
        # once per event (its id is the event's): a later fold may refuse it again, for another reason
        if refusal is not None and not _in_outbox(conn, [refusal.event_id]):
            enqueue(conn, tables.outbox, [refusal], now)
    elif status == "applied":
        if isinstance(event, NOTIFY_UNITS):
            _notify_units(conn, state, event, now)
        if isinstance(event, documents.WRITTEN):
            documents.issue(sup, conn, as_of(), event, now)


def _in_outbox(conn: Connection, event_ids: list[str]) -> set[str]:
    """Those of these events already queued (or sent and not purged yet)."""
    if not event_ids:
        return set()
    o = tables.outbox
    return set(conn.execute(select(o.c.event_id).where(o.c.event_id.in_(event_ids))).scalars())


def _close_at_once(sup: Supervision, conn: Connection, fold: Fold, now: datetime) -> None:
    reason = domain.should_close(fold.state, now, sup.policy)
    if reason in domain.CLOSE_AT_ONCE and _once(conn, fold.case_id, "close", _close_key(fold.state), "closed", now):
        _decide(sup, conn, fold, ev.CaseClosed(case_id=fold.case_id, occurred_at=_decided_at(conn, fold, now),
                                               actor=SUPERVISION, reason=reason), now)


def refresh(sup: Supervision, conn: Connection, case_id: str) -> domain.CaseState:
    """Fold a case again from its whole timeline and store it (what ``apply_events`` does for an event
    that comes before the case's fold)."""
    lock_keys(conn, "supervision:case", [case_id])
    fold = _folds(conn, [case_id])[case_id]
    _replace(fold, _refold(sup, conn, case_id, sup.clock.now()))
    _store(conn, [fold], sup.policy)
    return fold.state


def _refold(sup: Supervision, conn: Connection, case_id: str, now: datetime) -> Fold:
    """The case folded from its timeline: each event marked applied or refused (``pending`` while the
    case is not received), a changed verdict's consequences (``_first_verdict``), the close when due."""
    lock_keys(conn, "supervision:case", [case_id])  # a sweep's or a decision's; held already by a batch
    t = tables.timeline
    rows = conn.execute(select(t.c.event_id, t.c.payload, t.c.placed_at, t.c.status, t.c.reason)
                        .where(t.c.case_id == case_id)).all()
    events = [ev.decode_dict(r.payload) for r in rows]
    placed = [domain.as_utc(r.placed_at) for r in rows]
    state, verdicts = domain.fold(events, sup.policy, sup.agent_days, placed)
    received = state.state != "new"
    for row, event, verdict in zip(rows, events, verdicts):
        status = "pending" if not received else "applied" if verdict.applied else "refused"
        if (status, verdict.reason) == (row.status, row.reason):
            continue
        conn.execute(update(t).where(t.c.event_id == row.event_id).values(status=status, reason=verdict.reason))
        _first_verdict(sup, conn, state, event, status, verdict.reason,
                       lambda event=event: _as_of(sup, events, placed, event), now)
    receipt = next((e for e in events if isinstance(e, ev.CaseReceived)), None)
    fold = Fold(case_id, state, max((domain.happened(p, e.type) for e, p in zip(events, placed)), default=None),
                current=received, query_code_hash=receipt.query_code_hash if receipt else None)
    _close_at_once(sup, conn, fold, now)
    return fold


def _close_key(state: domain.CaseState) -> datetime:
    """What a close answers, so it happens once per opinion (or per acceptance decision)."""
    return state.replied_at or state.decided_at or state.received_at


def _as_of(sup: Supervision, events: list[ev.Event], placed: list[datetime], event: ev.Event) -> domain.CaseState:
    """The case as it stood when ``event`` happened (its events up to it, as they count): a written
    notice states that, e.g. the due date an extension set, not a later one."""
    mark = next(domain.happened(p, e.type) for e, p in zip(events, placed) if e.event_id == event.event_id)
    upto = [i for i, (e, p) in enumerate(zip(events, placed)) if domain.happened(p, e.type) <= mark]
    return domain.fold([events[i] for i in upto], sup.policy, sup.agent_days, [placed[i] for i in upto])[0]


def _notify_units(conn: Connection, state: domain.CaseState, event: ev.CaseEvent, now: datetime) -> None:
    holders = [(state.lead, "lead")] if state.lead else []
    holders += [(unit, "co") for unit in sorted(state.co)]
    holders += [(unit, "reviewer") for unit in sorted(set(state.reviewers.values()))]
    notices = [ev.UnitNotified(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"xinfang:notified:{event.event_id}:{unit}")), occurred_at=now,
        actor=SUPERVISION, case_id=event.case_id, unit=unit, role=role, event=event) for unit, role in holders]
    # once per event and unit: a later fold may apply the event again (refused in between)
    sent = _in_outbox(conn, [n.event_id for n in notices])
    enqueue(conn, tables.outbox, [n for n in notices if n.event_id not in sent], now)


def _store(conn: Connection, folds: list[Fold], policy: DeadlinePolicy, swept_at: datetime | None = None) -> None:
    """The cases' rows: what the views read, the fold itself, and when a sweep next has anything to do
    for the case (``swept_at``: what a sweep then did is done)."""
    c = tables.cases
    updates: defaultdict[tuple, list[dict]] = defaultdict(list)
    for fold in folds:
        row = _case_row(fold, policy, swept_at)
        if fold.stored:
            updates[tuple(row)].append({**row, "b_case_id": fold.case_id})
        else:
            conn.execute(c.insert(), {"case_id": fold.case_id, **row})
            fold.stored = True
    for rows in updates.values():  # one statement for the rows alike (with the receipt's hash or without)
        conn.execute(update(c).where(c.c.case_id == bindparam("b_case_id")), rows)


def _case_row(fold: Fold, policy: DeadlinePolicy, swept_at: datetime | None) -> dict:
    s = fold.state
    row = {"state": s.state, "lead": s.lead, "co": sorted(s.co), "leader": s.leader, "received_at": s.received_at,
           "replied_at": s.replied_at, "closed_at": s.closed_at,
           "satisfied": None if s.satisfied is None else ("yes" if s.satisfied else "no"),
           "dues": [_due_json(d, policy) for d in s.dues], "procedure": _procedure(s),
           "fold": lifecycle.state_to_dict(s), "folded_at": fold.mark[0] if fold.mark else None,
           "folded_rank": fold.mark[1] if fold.mark else None,
           "next_check_at": domain.next_check_at(s, policy, swept_at)}
    if fold.query_code_hash is not None:
        row["query_code_hash"] = fold.query_code_hash
    return row


def _procedure(s: domain.CaseState) -> dict:
    """Where the case stands in the procedure, as the case view shows it."""
    return {"acceptance": s.acceptance, "accepted_at": s.decided_at.isoformat() if s.decided_at else None,
            "objections": {u: at.isoformat() for u, at in sorted(s.objections.items())},
            "extension": s.extension, "review_level": s.review_level, "opinion_level": s.opinion_level,
            "reviewers": dict(sorted(s.reviewers.items())), "final": s.final}


def _due_json(d: domain.Due, policy: DeadlinePolicy) -> dict:
    """A due date as stored and shown; ``provisional`` when it counts over a year whose official
    holiday schedule is not known yet (it may move)."""
    return {"kind": d.kind, "due_at": d.due_at.isoformat(), "unit": d.unit, "source": d.source,
            "met_at": d.met_at.isoformat() if d.met_at else None, "provisional": policy.provisional(d.due_at)}


def _decided_at(conn: Connection, fold: Fold, now: datetime) -> datetime:
    """When a decision about a case happens: now, but never before the case's latest event (other
    services' clocks, or a test's clock, may run ahead of this one), so the fold sees it last."""
    if fold.current and fold.mark is not None:
        return max(now, fold.mark[0])
    t = tables.timeline
    latest = conn.execute(select(func.max(t.c.placed_at)).where(t.c.case_id == fold.case_id)).scalar()
    return max(now, domain.as_utc(latest)) if latest else now


def _once(conn: Connection, case_id: str, kind: str, due_at: datetime, stage: str, now: datetime) -> bool:
    """True for the first caller only, across sweeps and replicas (the alerts table's key)."""
    return insert_ignore(conn, tables.alerts, [{"case_id": case_id, "kind": kind, "due_at": due_at, "stage": stage,
                                                "sent_at": now}]) == 1


# --- sweeps -------------------------------------------------------------------------------------

def sweep(sup: Supervision, batch: int = 50) -> int:
    """Send every reminder, overdue and escalation whose time has come, close unanswered replies
    and archive old closed cases. Each fires once per due date; returns how many events it sent.

    It visits only the cases whose ``next_check_at`` has come (an index), and those with no stored
    fold yet (rows from before folds were kept; a partial index), working from each case's fold. A
    transaction holds its cases' locks until it commits, and the consumer waits for them: small
    batches keep that wait far below the lock timeout. Cases go in the order the consumer locks them
    (sorted), so the two never deadlock."""
    now = sup.clock.now()
    c = tables.cases
    open_ = c.c.state.notin_(["new", "archived"])
    with sup.uow.engine.connect() as conn:
        case_ids = sorted(set(conn.execute(select(c.c.case_id).where(c.c.next_check_at <= now, open_)).scalars())
                          | set(conn.execute(select(c.c.case_id).where(c.c.folded_at.is_(None), open_)).scalars()))
    sent = 0
    for start in range(0, len(case_ids), batch):
        with sup.uow.begin() as conn:
            for case_id in case_ids[start:start + batch]:
                sent += _sweep_case(sup, conn, case_id, now)
    return sent


def _sweep_case(sup: Supervision, conn: Connection, case_id: str, now: datetime) -> int:
    fold = _current(sup, conn, case_id)
    office = sup.directory.county.supervision_office
    sent = 0
    for stage, due in domain.alerts_due(fold.state, now, sup.policy):
        if not _once(conn, case_id, due.kind, due.due_at, stage, now):
            continue
        extra = {"leader_id": fold.state.leader} if stage == "escalated" else {}
        _decide(sup, conn, fold, ALERT_EVENTS[stage](case_id=case_id, occurred_at=_decided_at(conn, fold, now),
                                                     actor=SUPERVISION, unit=due.unit or office, due_kind=due.kind,
                                                     due_at=due.due_at, **extra), now)
        sup.metrics.alerts.labels(stage, due.kind).inc()
        sent += 1
    reason = domain.should_close(fold.state, now, sup.policy)
    if reason and _once(conn, case_id, "close", _close_key(fold.state), "closed", now):
        _decide(sup, conn, fold, ev.CaseClosed(case_id=case_id, occurred_at=_decided_at(conn, fold, now),
                                               actor=SUPERVISION, reason=reason), now)
        sent += 1
    if domain.should_archive(fold.state, now, sup.policy) and _once(conn, case_id, "archive", fold.state.closed_at,
                                                                    "archived", now):
        _decide(sup, conn, fold, ev.CaseArchived(case_id=case_id, occurred_at=_decided_at(conn, fold, now),
                                                 actor=SUPERVISION), now)
        sent += 1
    _store(conn, [fold], sup.policy, swept_at=now)
    return sent


# --- the resident's step -------------------------------------------------------------------------

def resident_step(sup: Supervision, case_id: str, step: str) -> dict:
    """Whether the resident's feedback (评价) or review request (复查/复核) would apply to the case now:
    the fold's own verdict on the step, taken at the service's clock, nothing stored. Intake asks
    before recording the step (``resident_step.intake``), so a step asked too early or after the
    matter is final is refused at once and the resident's right is not used up."""
    with sup.uow.engine.connect() as conn:
        fold = _folds(conn, [case_id])[case_id]
        if not fold.current:  # a row from before folds were kept, or events waiting for the receipt
            t = tables.timeline
            rows = conn.execute(select(t.c.payload, t.c.placed_at).where(t.c.case_id == case_id)).all()
            events = [ev.decode_dict(r.payload) for r in rows]
            fold.state, _ = domain.fold(events, sup.policy, sup.agent_days, [domain.as_utc(r.placed_at) for r in rows])
    state = fold.state
    if state.state == "new":
        return {"case_id": case_id, "known": False, "allowed": False,
                "reason": "supervision has not received the case yet"}
    now = sup.clock.now()
    resident = ev.Actor(kind="resident")
    step_event = (ev.PetitionerFeedback(case_id=case_id, occurred_at=now, actor=resident, satisfied=True)
                  if step == "feedback" else
                  ev.ReviewRequested(case_id=case_id, occurred_at=now, actor=resident, level=step, reason="-"))
    state_before = str(state.state)
    verdict = domain.apply(state, step_event, now, sup.policy, sup.agent_days)
    return {"case_id": case_id, "known": True, "allowed": verdict.applied, "reason": verdict.reason,
            "state": state_before}


# --- the supervision office ---------------------------------------------------------------------

def decide_extension(sup: Supervision, case_id: str, unit: str, approved: bool, days: int, reason: str,
                     head: str) -> dict:
    """延期审批 by the lead unit's own head (本机关负责人, Art. 34), through the API: publishes
    ExtensionDecided on the unit's subject, as the unit's own system would. Another unit's case
    answers as a missing one."""
    now = sup.clock.now()
    with sup.uow.begin() as conn:
        fold = _current(sup, conn, case_id)
        state = fold.state
        if state.state == "new" or state.lead != unit:
            raise NotFound(f"supervision has not seen case {case_id}")
        if state.extension != "requested":
            raise Conflict(f"case {case_id} has no extension request waiting")
        if approved and not 0 < days <= sup.policy.max_extension_days:
            raise InvalidInput([FieldError("days", f"between 1 and {sup.policy.max_extension_days}")])
        reply_due = state.open_due("reply")
        _decide(sup, conn, fold, ev.ExtensionDecided(
            case_id=case_id, occurred_at=_decided_at(conn, fold, now), actor=ev.Actor(kind="unit", id=head),
            unit=unit, approved=approved, days=days if approved else 0, reason=reason, approved_by=head,
            new_due_at=sup.policy.extended(reply_due.due_at, days) if approved and reply_due else None), now)
        _store(conn, [fold], sup.policy)
    return queries.case_view(sup, case_id)


def decide_objection(sup: Supervision, case_id: str, unit: str, approved: bool, reason: str, by: str) -> dict:
    """异议审核 by the bureau (Art. 23): approved, routing routes the case again without the unit;
    rejected, the case stays with it and its clock keeps running."""
    now = sup.clock.now()
    with sup.uow.begin() as conn:
        fold = _current(sup, conn, case_id)
        state = fold.state
        if state.state == "new":
            raise NotFound(f"supervision has not seen case {case_id}")
        if unit not in state.objections:
            waiting = sorted(state.objections)
            raise Conflict(f"no objection of {unit} is waiting on case {case_id}"
                           + (f" (waiting: {', '.join(waiting)})" if waiting else ""))
        t = tables.timeline
        objection = conn.execute(select(t.c.event_id).where(
            t.c.case_id == case_id, t.c.unit == unit, t.c.type.in_(["CaseReturned", "AcceptanceDecided"]),
            t.c.status == "applied").order_by(t.c.placed_at.desc()).limit(1)).scalar()
        _decide(sup, conn, fold, ev.ObjectionDecided(
            case_id=case_id, occurred_at=_decided_at(conn, fold, now), actor=ev.Actor(kind="supervisor", id=by),
            unit=unit, approved=approved, reason=reason, objection_event_id=objection), now)
        _store(conn, [fold], sup.policy)
    return queries.case_view(sup, case_id)
