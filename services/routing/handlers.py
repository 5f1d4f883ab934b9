"""Routing on the bus: its durable consumer, and the answer to a unit asking about a case."""
from __future__ import annotations

import logging
from functools import partial

from sqlalchemy import Connection

from services.routing import learning, procedure, service
from services.routing.service import Routing
from shared import events as ev
from shared import subjects
from shared.bus import Bus, Responder
from shared.consumer import Delivery, HandlerTable
from shared.events import AssignmentAnswer, AssignmentQuery

log = logging.getLogger(__name__)


def on_received(routing: Routing, conn: Connection, d: Delivery) -> None:
    service.receive(routing, conn, d.event)


def on_objection(routing: Routing, conn: Connection, d: Delivery) -> None:
    procedure.objected(routing, conn, d.event)


def on_acceptance(routing: Routing, conn: Connection, d: Delivery) -> None:
    if d.event.decision == "forwarded":  # 不属于本单位职责: an objection, as CaseReturned
        procedure.objected(routing, conn, d.event)
    elif d.event.decision == "accepted":  # the unit that finally took a case after an approved objection
        learning.accepted(conn, d.event)


def on_assigned(routing: Routing, conn: Connection, d: Delivery) -> None:
    learning.triage_decided(conn, d.event)  # a clerk's triage decision (routing's own event) teaches


def on_objection_decided(routing: Routing, conn: Connection, d: Delivery) -> None:
    procedure.objection_decided(routing, conn, d.event)


def on_review_requested(routing: Routing, conn: Connection, d: Delivery) -> None:
    procedure.review_requested(routing, conn, d.event)


def on_closed(routing: Routing, conn: Connection, d: Delivery) -> None:
    service.closed(routing, conn, d.event)


# What routing reads from the stream; its durable consumer, shared by every replica, filters on these.
HANDLERS = HandlerTable({
    ev.CaseReceived: on_received,
    ev.CaseReturned: on_objection,
    ev.AcceptanceDecided: on_acceptance,
    ev.ObjectionDecided: on_objection_decided,
    ev.ReviewRequested: on_review_requested,
    ev.CaseClosed: on_closed,
    ev.CaseAssigned: on_assigned,
})  # unknown codes: refused by the shared consumer (shared/verdict.py), as in every service


def answer_assignment(routing: Routing, unit: str, request: bytes) -> AssignmentAnswer:
    """``routing.assignment.<unit>``: is this case the unit's own now?"""
    try:
        query = AssignmentQuery.model_validate_json(request)
    except ValueError:
        return AssignmentAnswer(unit=unit, assigned=False, error="malformed",
                                reason='send a JSON object {"case_id": "<case number>"}')
    return AssignmentAnswer.model_validate(service.assignment_of(routing, query.case_id, unit))


def assignment_responder(routing: Routing, bus: Bus) -> Responder:
    return Responder(bus, subjects.ASSIGNMENT_QUERY, "routing", partial(answer_assignment, routing))
