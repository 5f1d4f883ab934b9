"""Wiring of the intake service: ``create_app()`` builds a fresh app (tests build many)."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from services.intake import api, domain, tables
from services.intake.service import Intake, IntakeMetrics
from shared import subjects
from shared.clock import Clock
from shared.directory import Directory, load_directory
from shared.settings import Settings
from shared.wiring import ServicePlumbing

log = logging.getLogger(__name__)
SERVICE = "intake"


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               directory: Directory | None = None) -> FastAPI:
    settings = settings or Settings()
    directory = directory or load_directory(settings.config_dir)
    metrics = IntakeMetrics()
    plumbing = ServicePlumbing(SERVICE, settings, tables.outbox, metrics, clock)
    intake = Intake(uow=plumbing.uow, directory=directory, settings=settings, clock=plumbing.clock,
                    metrics=metrics)

    def ask(query: bytes) -> bytes | None:
        return plumbing.bus.ask(subjects.RESIDENT_STEP_QUERY, query, timeout=settings.resident_step_timeout_s)
    intake.ask = ask

    async def load_keys() -> None:
        intake.keys_of()  # without both keys the service does not start (shared/keys.py says how to set them)
    plumbing.on_start.insert(0, load_keys)
    plumbing.on_stop.append(lambda: intake.cases_writer and intake.cases_writer.stop())

    def body_rules(route: str, body: object) -> list:
        return domain.check_submission(body, directory) if route == "/api/v1/cases" else []

    return plumbing.app(
        "Every channel in: cases are validated, numbered, stored and published on `cases.received`. "
        "Errors name each failing field.", api.build_router(intake), {"intake": intake}, body_rules=body_rules,
        large_bodies={"/import": (settings.max_upload_bytes, "multipart/form-data"),
                      "/rows": (settings.max_upload_bytes, "application/json")})
