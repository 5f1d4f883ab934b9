"""Supervision on the bus: its durable consumer of every case event, and the sweeper."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from services.supervision import domain, queries, service
from services.supervision.service import Supervision
from shared import events as ev
from shared import subjects
from shared.bus import Bus, Responder
from shared.consumer import HandlerTable

log = logging.getLogger(__name__)


# Every event the lifecycle has a transition for, but supervision's own (those are on the timeline
# the moment they are decided). A batch is recorded, then each touched case re-folded once. Unknown
# codes are refused by the shared consumer (shared/verdict.py), as in every service.
HANDLERS = HandlerTable({t: f for t, f in domain.TRANSITIONS.items() if t.published_by != "supervision"},
                        apply_batch=service.apply_events)


def answer_timeline(sup: Supervision, unit: str, request: bytes) -> ev.TimelineAnswer:
    """``timeline.<unit>``: the timeline of a case the unit holds or held."""
    try:
        query = ev.TimelineQuery.model_validate_json(request)
    except ValueError:
        return ev.TimelineAnswer(unit=unit, found=False, error="malformed",
                                 reason='send a JSON object {"case_id": "<case number>"}')
    return ev.TimelineAnswer.model_validate(queries.unit_timeline(sup, query.case_id, unit))


def timeline_responder(sup: Supervision, bus: Bus) -> Responder:
    return Responder(bus, subjects.TIMELINE_QUERY, "supervision", partial(answer_timeline, sup))


def answer_resident_step(sup: Supervision, _asker: str, request: bytes) -> ev.ResidentStepAnswer:
    """``resident_step.intake``: may the resident take this step on the case now?"""
    try:
        query = ev.ResidentStepQuery.model_validate_json(request)
    except ValueError:
        return ev.ResidentStepAnswer(known=False, allowed=False,
                                     reason='send a JSON object {"case_id": "…", "step": "feedback|review|re_review"}')
    return ev.ResidentStepAnswer.model_validate(service.resident_step(sup, query.case_id, query.step))


def resident_step_responder(sup: Supervision, bus: Bus) -> Responder:
    return Responder(bus, subjects.RESIDENT_STEP_QUERY, "supervision", partial(answer_resident_step, sup))


class Sweeper:
    """Runs a sweep every ``interval_s`` on the service's clock; safe with any number of replicas."""

    def __init__(self, sup: Supervision, interval_s: float) -> None:
        self.sup, self.interval_s = sup, interval_s
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(service.sweep, self.sup)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("sweep failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)

    async def stop(self) -> None:
        self._stop.set()
