"""Routing on the bus: its durable consumer, and the answer to a unit asking about a case."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Connection

from services.routing import service
from services.routing.service import Routing
from shared import events as ev
from shared import subjects
from shared.bus import Bus
from shared.consumer import Delivery, HandlerTable
from shared.events import AssignmentAnswer, AssignmentQuery

log = logging.getLogger(__name__)


def on_received(routing: Routing, conn: Connection, d: Delivery) -> None:
    service.receive(routing, conn, d.event)


def on_returned(routing: Routing, conn: Connection, d: Delivery) -> None:
    service.returned(routing, conn, d.event)


def on_closed(routing: Routing, conn: Connection, d: Delivery) -> None:
    service.closed(routing, conn, d.event)


# What routing reads from the stream; its durable consumer, shared by every replica, filters on these.
HANDLERS = HandlerTable({
    ev.CaseReceived: on_received,
    ev.CaseReturned: on_returned,
    ev.CaseClosed: on_closed,
}, reject=service.reject)


class AssignmentResponder:
    """Answers ``routing.assignment.<unit>`` requests: is this case the unit's own now?

    Core NATS request-reply in a queue group, so one replica answers each request.
    """

    def __init__(self, routing: Routing, bus: Bus) -> None:
        self.routing, self.bus, self.sub = routing, bus, None

    async def run(self) -> None:
        await self.bus.wait_connected()
        self.sub = await self.bus.nc.subscribe(subjects.ASSIGNMENT_QUERY.format(unit="*"), queue="routing",
                                               cb=self._answer)

    async def _answer(self, msg) -> None:  # noqa: ANN001
        unit = msg.subject.rsplit(".", 1)[1]
        try:
            query = AssignmentQuery.model_validate_json(msg.data)
        except ValueError:
            answer = AssignmentAnswer(unit=unit, assigned=False, error="malformed",
                                      reason='send a JSON object {"case_id": "<case number>"}')
        else:
            answer = AssignmentAnswer.model_validate(
                await asyncio.to_thread(service.assignment_of, self.routing, query.case_id, unit))
        await msg.respond(answer.model_dump_json(exclude_none=True).encode())

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
