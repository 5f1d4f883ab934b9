"""Supervision on the bus: its durable consumer of every case event, and the sweeper."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from services.supervision import service, tables
from services.supervision.service import Supervision
from shared import subjects
from shared.consumer import DurableConsumer
from shared.wiring import ServicePlumbing

log = logging.getLogger(__name__)

# Every case event but supervision's own (those are on the timeline the moment they are decided).
SUBJECTS = tuple(s.format(unit="*") for s in (
    subjects.RECEIVED, subjects.ASSIGNED, subjects.TRIAGE, subjects.LEADER_ASSIGNED, subjects.SIGNED,
    subjects.RETURNED, subjects.PROGRESS, subjects.EXTENSION_REQUESTED, subjects.REPLIED, subjects.FEEDBACK,
    subjects.REVIEW_REQUESTED))


def build_consumer(sup: Supervision, plumbing: ServicePlumbing) -> DurableConsumer:
    return plumbing.consumer(SUBJECTS, tables.inbox, partial(service.apply_events, sup), partial(reject, sup))


def reject(sup: Supervision, event) -> str | None:  # noqa: ANN001
    unit = getattr(event, "unit", None)
    if unit is not None and unit not in sup.directory.units:
        return f"unknown unit {unit!r}"
    return None


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
