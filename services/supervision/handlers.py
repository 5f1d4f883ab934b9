"""Supervision on the bus: its durable consumer of every case event, and the sweeper."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from services.supervision import domain, service
from services.supervision.service import Supervision
from shared import events as ev
from shared.consumer import HandlerTable

log = logging.getLogger(__name__)


def reject(sup: Supervision, event: ev.Event) -> str | None:
    unit = getattr(event, "unit", None)
    if unit is not None and unit not in sup.directory.units:
        return f"unknown unit {unit!r}"
    return None


# Every event the lifecycle has a transition for, but supervision's own (those are on the timeline
# the moment they are decided). A batch is recorded, then each touched case re-folded once.
HANDLERS = HandlerTable({t: f for t, f in domain.TRANSITIONS.items() if t.published_by != "supervision"},
                        reject=reject, apply_batch=service.apply_events)


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
