"""Routing on the bus: its durable consumer, and the answer to a unit asking about a case."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial

from services.routing import service, tables
from services.routing.service import Routing
from shared import subjects
from shared.bus import Bus
from shared.consumer import DurableConsumer
from shared.wiring import ServicePlumbing

log = logging.getLogger(__name__)

# One durable consumer, shared by every routing replica.
SUBJECTS = (subjects.RECEIVED, subjects.RETURNED.format(unit="*"), subjects.CLOSED)


def build_consumer(routing: Routing, plumbing: ServicePlumbing) -> DurableConsumer:
    return plumbing.consumer(SUBJECTS, tables.inbox, partial(service.apply_events, routing),
                             partial(service.reject, routing))


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
            case_id = str(json.loads(msg.data)["case_id"])
            answer = await asyncio.to_thread(service.assignment_of, self.routing, case_id, unit)
        except (ValueError, KeyError, TypeError):
            answer = {"assigned": False, "reason": 'send {"case_id": "..."}'}
        await msg.respond(json.dumps(answer, ensure_ascii=False).encode())

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
