"""Wiring of the supervision service: ``create_app()`` builds a fresh app (tests build many)."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from services.supervision import api, handlers, tables
from services.supervision.queries import CASE_GAUGES, case_gauges
from services.supervision.service import Supervision, SupervisionMetrics
from shared.clock import Clock
from shared.directory import Directory, load_directory
from shared.metrics import GaugesFrom
from shared.policy import load_policy, schedule_known_through
from shared.settings import Settings
from shared.wiring import ServicePlumbing

SERVICE = "supervision"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               directory: Directory | None = None) -> FastAPI:
    settings = settings or Settings()
    directory = directory or load_directory(settings.config_dir)
    metrics = SupervisionMetrics()
    plumbing = ServicePlumbing(SERVICE, settings, tables.outbox, metrics, clock)
    clock = plumbing.clock
    sup = Supervision(uow=plumbing.uow, directory=directory, policy=load_policy(settings.config_dir), clock=clock,
                      metrics=metrics, settings=settings)
    plumbing.consume(handlers.HANDLERS, sup, tables.inbox)
    GaugesFrom(metrics.registry, CASE_GAUGES, lambda: case_gauges(sup))

    async def load_keys() -> None:
        sup.keys_of()  # without both keys the service does not start (shared/keys.py says how to set them)
    plumbing.on_start.insert(0, load_keys)
    plumbing.workers += [handlers.Sweeper(sup, settings.sweep_interval_s), handlers.timeline_responder(sup, plumbing.bus),
                         handlers.resident_step_responder(sup, plumbing.bus)]

    async def check_calendar() -> None:
        # A case received today may be due next year: warn when that year's schedule is unknown.
        known = schedule_known_through()
        if sup.policy.uses_holidays and clock.now().year + 1 > known:
            log.warning(f"due dates in {known + 1} and later are provisional: the holidays package knows China's "
                        f"official schedule only through {known}; update it when the State Council publishes "
                        f"{known + 1}'s", extra={"fields": {"known_through": known}})
    plumbing.on_start.append(check_calendar)

    return plumbing.app(
        "Each case's lifecycle and legal deadlines: reminders, overdue, escalation, closing, numbered supervision "
        "notices, and every case's timeline.", api.build_router(sup), {"supervision": sup})
