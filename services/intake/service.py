"""Intake's use cases: small functions over a unit of work.

Every accepted case is stored and its ``CaseReceived`` queued in the outbox in one transaction;
numbers come from a counter row updated in that same transaction, so they are gap-free per year
across replicas (a rollback returns the number).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram
from pydantic import BaseModel
from sqlalchemy import Connection, select

from services.intake import domain, tables
from services.intake.schemas import (
    Acknowledged,
    CaseAccepted,
    CaseSubmission,
    CaseView,
    FeedbackIn,
    Flags,
    ReviewIn,
)
from shared import events as ev
from shared import keys as keyring
from shared import sequences
from shared.clock import Clock
from shared.db import UnitOfWork, lock_keys
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput, NotFound, Unavailable
from shared.groupcommit import GroupCommit
from shared.keys import Keys
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.ratelimit import ResidentLimits
from shared.settings import Settings
from shared.tokens import Principal


class IntakeMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("intake")
        self.cases_received = Counter("xf_intake_cases_received_total", "Cases accepted, by channel",
                                      ["channel"], registry=self.registry)
        self.import_rows = Counter("xf_intake_import_rows_total", "Bulk-import rows, by outcome (created, invalid)",
                                   ["outcome"], registry=self.registry)
        self.imports = Counter("xf_intake_imports_total", "Import requests (a file upload, or a chunk of rows from "
                               "`xinfang import`), by outcome: completed, refused (422), failed (503)",
                               ["outcome"], registry=self.registry)
        self.cases_per_commit = Histogram(
            "xf_intake_cases_per_commit", "Cases submitted over HTTP stored per transaction (group commit: the "
            "requests of the same few milliseconds share one)", buckets=(1, 2, 5, 10, 20, 50, 100, 200),
            registry=self.registry)
        for outcome in ("completed", "refused", "failed"):  # from 0: the first failure is an increase
            self.imports.labels(outcome)


@dataclass
class Intake:
    """What every use case needs; built once by ``app.create_app``."""

    uow: UnitOfWork
    directory: Directory
    settings: Settings
    clock: Clock
    metrics: IntakeMetrics
    keys: Keys | None = None  # shared/keys.py; loaded at start (``keys_of``), never defaulted
    # Asks supervision whether a resident's step fits the case now (``resident_step.intake``): the raw
    # answer, or None when nobody answered (app.py wires it to the bus).
    ask: Callable[[bytes], bytes | None] | None = None

    # Stores the cases that requests bring, many per transaction (shared/groupcommit.py): built at first use.
    cases_writer: GroupCommit | None = None

    def keys_of(self) -> Keys:
        if self.keys is None:
            self.keys = keyring.load(self.settings)
        return self.keys

    def writer(self) -> GroupCommit:
        if self.cases_writer is None:
            self.cases_writer = GroupCommit(self.uow, lambda conn, drafts: register(conn, self, drafts),
                                            key=lambda draft: draft.key, name="intake-cases",
                                            committed=self.metrics.cases_per_commit.observe)
        return self.cases_writer

    @property
    def resident_limits(self) -> ResidentLimits:
        return ResidentLimits(tables.resident_failures, self.settings.resident_case_failures,
                              self.settings.resident_client_failures)


@dataclass(frozen=True)
class Draft:
    submission: CaseSubmission
    actor: ev.Actor
    key: str | None = None  # scoped idempotency key


def request_hash(model: BaseModel) -> str:
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


def actor_for(sub: CaseSubmission, who: Principal) -> ev.Actor:
    """Who filed it, from the token: an agent token is that agent (its own delegated cases only, checked
    by the route); an online petition is the resident's, relayed by the portal's clerk token; anything
    else is the clerk of the token's staff id."""
    if who.agent_id is not None:
        return ev.Actor(kind="agent", id=who.agent_id)
    if sub.channel == "online":
        return ev.Actor(kind="resident")
    return ev.Actor(kind="clerk", id=who.staff_id)


# --- cases --------------------------------------------------------------------------------------

async def submit_case(intake: Intake, sub: CaseSubmission, actor: ev.Actor,
                      idempotency_key: str | None) -> tuple[CaseAccepted, bool]:
    """Register one case. Returns the answer and whether it is a replay of an earlier submission.

    Checked here, then stored by the writer with the other requests of the moment, in one transaction
    (shared/groupcommit.py); the request waits for that commit on the event loop, not in a thread."""
    errors = domain.check_submission(sub.model_dump(), intake.directory)
    if errors:
        raise InvalidInput(errors)
    draft = Draft(sub, actor, f"case:{idempotency_key}" if idempotency_key else None)
    result = await intake.writer().stored(draft)
    if isinstance(result, Conflict):
        raise result
    if isinstance(result, list):
        raise InvalidInput(result)
    if isinstance(result, Replayed):
        return result.accepted, True
    return result, False


@dataclass(frozen=True)
class Replayed:
    """The draft's key was seen before with the same body: here is the first answer."""

    accepted: CaseAccepted


Result = CaseAccepted | Replayed | Conflict | list[FieldError]


def register(conn: Connection, intake: Intake, drafts: Sequence[Draft]) -> list[Result]:
    """Store a batch of checked drafts in the caller's transaction; one result per draft.

    A draft whose key was seen with the same body gets the first answer again (``replayed``);
    with another body, a Conflict. Drafts naming a closed drive or an unknown visit get field errors.
    A draft of a resident on a matter whose re-review (复核) was asked is refused (不再受理, Art. 36):
    a Conflict naming the final case, with no number, row or event.
    """
    now = intake.clock.now()
    results: list[Result | None] = [None] * len(drafts)
    # Requests with one key at once (a client retrying on a timeout): the second waits for the first's
    # commit, then replays its answer (PostgreSQL; SQLite's writers are serialised already).
    lock_keys(conn, "intake:idempotency", [d.key for d in drafts if d.key])
    seen = stored_answers(conn, intake, [d.key for d in drafts if d.key])
    for i, d in enumerate(drafts):
        if d.key in seen:
            hash_, response = seen[d.key]
            results[i] = (Replayed(CaseAccepted.model_validate(response)) if hash_ == request_hash(d.submission)
                          else Conflict("this Idempotency-Key was used with another body"))
    pending = [i for i, r in enumerate(results) if r is None]
    drive_kinds = _drive_kinds(conn, {drafts[i].submission.drive_id for i in pending} - {None})
    known_visits = _known_visits(conn, {drafts[i].submission.visit_id for i in pending} - {None})
    finals = _earlier_cases(conn, intake, [drafts[i].submission for i in pending], final=True)
    ring = intake.keys_of().id_hash
    for i in list(pending):
        sub = drafts[i].submission
        errors = []
        if sub.drive_id is not None and drive_kinds.get(sub.drive_id, (None, None))[1] != "open":
            errors.append(FieldError("drive_id", f"no open drive {sub.drive_id!r}", see="/api/v1/drives"))
        if sub.visit_id is not None and sub.visit_id not in known_visits:
            errors.append(FieldError("visit_id", f"no logged visit {sub.visit_id!r}; log it with POST /api/v1/visits"))
        idn = sub.resident.id_number
        final = domain.find_repeat(sub.title, finals.get(ring.hash(idn), []), intake.settings.repeat_similarity) if idn else None
        if errors or final:
            results[i] = errors or domain.not_accepted_again(final)
            pending.remove(i)
    if not pending:
        return results  # type: ignore[return-value]

    year = domain.local_year(now)
    last = allocate(conn, f"case:{year}", len(pending))
    since = now - timedelta(days=intake.settings.repeat_window_days)
    earlier = _earlier_cases(conn, intake, [drafts[i].submission for i in pending], since)
    rows, events, keys = [], [], []
    for n, i in enumerate(pending):
        d, sub = drafts[i], drafts[i].submission
        seq = last - len(pending) + 1 + n
        code = domain.new_query_code()
        row = _case_row(intake, sub, d.actor, year, seq, now, drive_kinds, code)
        id_hash = row["resident_id_hash"]
        row["repeat_of"] = domain.find_repeat(sub.title, earlier.get(id_hash, []), intake.settings.repeat_similarity) if id_hash else None
        if id_hash:  # a later draft of the same batch may repeat this one
            earlier.setdefault(id_hash, []).append(domain.EarlierCase(row["number"], sub.title, now))
        accepted = _accepted(row, code)
        rows.append(row)
        events.append(_received_event(row, d.actor))
        if d.key:
            keys.append(answer_row(intake, d.key, request_hash(sub), accepted, now))
        results[i] = accepted
    conn.execute(tables.cases.insert(), rows)
    if keys:
        conn.execute(tables.idempotency_keys.insert(), keys)
    enqueue(conn, tables.outbox, events, now)
    for row in rows:
        intake.metrics.cases_received.labels(row["channel"]).inc()
    return results  # type: ignore[return-value]


def allocate(conn: Connection, name: str, n: int) -> int:
    """Advance intake's gap-free counter ``name`` by ``n``; the new last number."""
    return sequences.allocate(conn, tables.counters, name, n)


def stored_answers(conn: Connection, intake: Intake, keys: list[str]) -> dict[str, tuple[str, dict]]:
    """Idempotency keys already used → (hash of the body they came with, the answer given, its query
    codes unsealed: the replay hands the resident the code the first answer gave)."""
    if not keys:
        return {}
    t = tables.idempotency_keys
    return {r.key: (r.request_hash, domain.open_answer(intake.keys_of(), r.key, r.response))
            for r in conn.execute(select(t.c.key, t.c.request_hash, t.c.response).where(t.c.key.in_(keys)))}


def answer_row(intake: Intake, key: str, body_hash: str, answer: BaseModel, now: datetime) -> dict:
    """An ``idempotency_keys`` row: the answer with its query codes sealed (never stored in clear)."""
    return {"key": key, "request_hash": body_hash, "created_at": now,
            "response": domain.seal_answer(intake.keys_of(), key, answer.model_dump(mode="json"))}


def _drive_kinds(conn: Connection, ids: set) -> dict[str, tuple[str, str]]:
    if not ids:
        return {}
    t = tables.drives
    return {r.drive_id: (r.kind, r.status) for r in conn.execute(select(t.c.drive_id, t.c.kind, t.c.status).where(t.c.drive_id.in_(ids)))}


def _known_visits(conn: Connection, ids: set) -> set[str]:
    if not ids:
        return set()
    t = tables.visits
    return set(conn.execute(select(t.c.visit_id).where(t.c.visit_id.in_(ids))).scalars())


def _earlier_cases(conn: Connection, intake: Intake, subs: list[CaseSubmission], since: datetime | None = None,
                   final: bool = False) -> dict[str, list[domain.EarlierCase]]:
    """Earlier cases of the same residents, by the ID's hash under the current key: those received
    ``since`` (repeats), or, with ``final``, those of any age whose re-review (复核) was asked (不再受理).

    An earlier case may have been hashed under an old key (rotation): the ID's hash under every kept
    key is looked up, and what is found is filed under the current one."""
    ring = intake.keys_of().id_hash
    current_of: dict[str, str] = {}
    for s in subs:
        if s.resident.id_number:
            hashes = ring.hashes(s.resident.id_number)
            current_of.update(dict.fromkeys(hashes, hashes[0]))
    if not current_of:
        return {}
    t, r = tables.cases, tables.review_requests
    q = select(t.c.resident_id_hash, t.c.number, t.c.title, t.c.received_at).where(
        t.c.resident_id_hash.in_(list(current_of)))
    if since is not None:
        q = q.where(t.c.received_at >= since)
    if final:
        q = q.where(t.c.number.in_(select(r.c.case_number).where(r.c.level == "re_review")))
    found: dict[str, list[domain.EarlierCase]] = {}
    for row in conn.execute(q):
        found.setdefault(current_of[row.resident_id_hash], []).append(
            domain.EarlierCase(row.number, row.title, row.received_at))
    return found


def _case_row(intake: Intake, sub: CaseSubmission, actor: ev.Actor, year: int, seq: int, now: datetime,
              drive_kinds: dict[str, tuple[str, str]], query_code: str) -> dict:
    keys = intake.keys_of()
    d, r = intake.directory, sub.resident
    idn = r.id_number
    agency = d.agency_of(sub.delegation.agent_id).code if sub.delegation else None
    return {
        "number": domain.case_number(d.county.code, year, seq), "year": year, "seq": seq,
        "channel": sub.channel, "received_at": now, "title": sub.title, "content": sub.content,
        "category": sub.category, "township": sub.township, "village": sub.village,
        "people_count": sub.people_count, "accused_units": list(sub.accused_units),
        "accuses_unit": sub.accuses_unit,
        "resident_name": r.name, "resident_id_number": idn,
        "resident_id_hash": keys.id_hash.hash(idn) if idn else None,
        "resident_masked_id": domain.mask_resident_id(idn) if idn else None,
        "resident_phone": r.phone, "resident_address": r.address,
        "collective": domain.is_collective(sub.people_count), "escalated": sub.escalated, "backlog": sub.backlog,
        "special_period": sub.drive_id is not None and drive_kinds[sub.drive_id][0] == "special",
        "drive_id": sub.drive_id, "visit_id": sub.visit_id,
        "agent_id": sub.delegation.agent_id if sub.delegation else None, "agency_id": agency,
        "service_type": sub.delegation.service_type if sub.delegation else None,
        "referral_doc_no": sub.referral.doc_no if sub.referral else None,
        "referral_from": sub.referral.from_office if sub.referral else None,
        "query_code_hash": keys.query_code.hash(query_code), "actor_kind": actor.kind, "actor_id": actor.id,
    }


def _flags(row) -> Flags:  # noqa: ANN001 - a dict or a Row
    g = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
    return Flags(collective=g("collective"), escalated=g("escalated"), backlog=g("backlog"),
                 repeat=g("repeat_of") is not None, special_period=g("special_period"))


def _accepted(row: dict, query_code: str) -> CaseAccepted:
    return CaseAccepted(case_number=row["number"], query_code=query_code, received_at=row["received_at"],
                        channel=row["channel"], repeat_of=row["repeat_of"], flags=_flags(row))


def _received_event(row: dict, actor: ev.Actor) -> ev.CaseReceived:
    return ev.CaseReceived(
        case_id=row["number"], occurred_at=row["received_at"], actor=actor, channel=row["channel"],
        title=row["title"], content=row["content"], category=row["category"], township=row["township"],
        village=row["village"], people_count=row["people_count"], accused_units=row["accused_units"],
        accuses_unit=row["accuses_unit"],
        resident=ev.ResidentRef(name=row["resident_name"], masked_id=row["resident_masked_id"],
                                id_hash=row["resident_id_hash"], phone=row["resident_phone"]),
        collective=row["collective"], escalated=row["escalated"], backlog=row["backlog"],
        repeat=row["repeat_of"] is not None, repeat_of=row["repeat_of"], special_period=row["special_period"],
        drive_id=row["drive_id"], visit_id=row["visit_id"],
        delegation=ev.Delegation(agent_id=row["agent_id"], agency_id=row["agency_id"],
                                 service_type=row["service_type"]) if row["agent_id"] else None,
        referral=ev.Referral(doc_no=row["referral_doc_no"], from_office=row["referral_from"])
        if row["referral_doc_no"] else None,
        query_code_hash=row["query_code_hash"],
    )


def get_case(intake: Intake, number: str, agent_id: str | None = None) -> CaseView:
    """The case; for an agent (``agent_id``) only a case it filed, any other answering as a missing one."""
    with intake.uow.engine.connect() as conn:
        r = conn.execute(select(tables.cases).where(tables.cases.c.number == number)).first()
    if r is None or (agent_id is not None and (r.agent_id != agent_id or r.actor_kind != "agent")):
        raise NotFound(f"no case {number}")
    return CaseView(
        case_number=r.number, channel=r.channel, received_at=r.received_at, title=r.title, content=r.content,
        township=r.township, village=r.village, category=r.category, people_count=r.people_count,
        accused_units=r.accused_units, accuses_unit=r.accuses_unit, resident_name=r.resident_name,
        resident_masked_id=r.resident_masked_id,
        resident_phone=r.resident_phone, repeat_of=r.repeat_of, flags=_flags(r), drive_id=r.drive_id,
        visit_id=r.visit_id,
        delegation={"agent_id": r.agent_id, "agency_id": r.agency_id, "service_type": r.service_type} if r.agent_id else None,
        referral={"doc_no": r.referral_doc_no, "from_office": r.referral_from} if r.referral_doc_no else None,
    )


# --- the resident's follow-ups, by case number + query code -------------------------------------

def _resident_case(conn: Connection, intake: Intake, number: str, query_code: str, client: str,
                   now: datetime) -> bool:
    """Does the code open the case? Past the limits, :class:`TooManyAttempts` (429) whatever the code.

    "No such case" and "wrong code" are one answer, counted alike against the case number and the
    client (shared/ratelimit.py); the caller commits that count and then answers 404."""
    keys, limits = intake.keys_of(), intake.resident_limits
    client_key = keys.query_code.hash(f"client:{client}")
    limits.check(conn, now, number, client_key)
    stored = conn.execute(select(tables.cases.c.query_code_hash).where(tables.cases.c.number == number)).scalar()
    if keys.query_code.matches(query_code.upper(), stored):
        return True
    limits.record(conn, now, number, client_key)
    return False


def _no_case(number: str) -> NotFound:
    return NotFound(f"no case {number} with this query code")


def record_feedback(intake: Intake, number: str, body: FeedbackIn, client: str = "unknown") -> Acknowledged:
    """信访人评价: satisfied or not with the latest opinion; supervision decides what it means for the
    case. Asked before there is an opinion, or after the case is closed: 409, nothing recorded."""
    _open_resident_case(intake, number, body.query_code, client)
    check_resident_step(intake, number, "feedback")
    now = intake.clock.now()
    with intake.uow.begin() as conn:
        conn.execute(tables.feedback.insert(), {"case_number": number, "satisfied": body.satisfied,
                                                "comment": body.comment, "recorded_at": now})
        enqueue(conn, tables.outbox, [ev.PetitionerFeedback(
            case_id=number, occurred_at=now, actor=ev.Actor(kind="resident"),
            satisfied=body.satisfied, comment=body.comment)], now)
    return Acknowledged(case_number=number, recorded_at=now)


def request_review(intake: Intake, number: str, body: ReviewIn, client: str = "unknown") -> Acknowledged:
    """复查 then 复核: a re-review needs a review first, and each level is asked for once, while the
    case allows it (an opinion given, within the window, the matter not final). Asked too early or too
    late: 409 with the reason, and the right is not used up."""
    _open_resident_case(intake, number, body.query_code, client)
    t = tables.review_requests

    def levels(conn: Connection) -> set[str]:
        asked = set(conn.execute(select(t.c.level).where(t.c.case_number == number)).scalars())
        if body.level in asked:
            raise Conflict(f"a {body.level} was already requested for {number}", {"reason": "already_requested"})
        if body.level == "re_review" and "review" not in asked:
            raise InvalidInput([FieldError("level", "a re_review (复核) needs a review (复查) first")])
        return asked
    with intake.uow.engine.connect() as conn:
        levels(conn)
    check_resident_step(intake, number, body.level)
    now = intake.clock.now()
    with intake.uow.begin() as conn:
        levels(conn)  # again, in the transaction: two requests at once record one
        conn.execute(t.insert(), {"case_number": number, "level": body.level, "reason": body.reason,
                                  "recorded_at": now})
        enqueue(conn, tables.outbox, [ev.ReviewRequested(
            case_id=number, occurred_at=now, actor=ev.Actor(kind="resident"), level=body.level,
            reason=body.reason)], now)
    return Acknowledged(case_number=number, recorded_at=now)


def _open_resident_case(intake: Intake, number: str, query_code: str, client: str) -> None:
    """The case number and query code match (a wrong pair is counted, then refused as 404)."""
    now = intake.clock.now()
    with intake.uow.begin() as conn:
        opened = _resident_case(conn, intake, number, query_code, client, now)
    if not opened:
        raise _no_case(number)  # after the commit: the failure is counted


def check_resident_step(intake: Intake, number: str, step: str) -> None:
    """Supervision, which keeps the case's lifecycle, says whether the step fits the case now: 409
    with its reason when not, 503 when it cannot be asked (nothing is recorded either way)."""
    answer = intake.ask(ev.ResidentStepQuery(case_id=number, step=step).model_dump_json().encode()) \
        if intake.ask is not None else None
    if answer is None:
        raise Unavailable("the case's progress cannot be checked now (supervision does not answer); nothing was "
                          "recorded, try again shortly")
    verdict = ev.ResidentStepAnswer.model_validate_json(answer)
    if not verdict.known:
        raise Conflict(f"case {number} is still being registered; try again shortly", {"reason": "not_yet_known"})
    if not verdict.allowed:
        raise Conflict(f"not now: {verdict.reason}", {"reason": "not_now", "state": verdict.state})
