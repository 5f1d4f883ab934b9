"""Wiring of the intake service: ``create_app()`` builds a fresh app (tests build many)."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.intake import api, domain, tables
from services.intake.service import Intake, IntakeMetrics
from shared.bus import Bus
from shared.clock import Clock, SystemClock
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import Directory, load_directory
from shared.http import install_common
from shared.outbox import OutboxRelay
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE = "intake"


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               directory: Directory | None = None) -> FastAPI:
    settings = settings or Settings()
    directory = directory or load_directory(settings.config_dir)
    db_url = settings.db_url(SERVICE)
    engine = make_engine(db_url)
    metrics = IntakeMetrics()
    bus = Bus(settings, name=SERVICE)
    relay = OutboxRelay(engine, tables.outbox, bus, batch=settings.relay_batch, poll_s=settings.relay_poll_s,
                        lease_s=settings.relay_lease_s, retention_days=settings.outbox_retention_days,
                        metrics=metrics)
    bus.on_connected = relay.wake
    intake = Intake(uow=UnitOfWork(engine, on_commit=relay.wake), directory=directory, settings=settings,
                    clock=clock or SystemClock(), metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await asyncio.to_thread(migrate, SERVICE, db_url)
        if settings.clerk_token is None:
            log.warning("XF_CLERK_TOKEN is unset: intake's clerk routes are open (fine for a local run only)")
        bus.start()
        relay_task = asyncio.create_task(relay.run())
        yield
        await relay.stop()
        relay_task.cancel()
        await bus.close()
        engine.dispose()

    app = FastAPI(title="xinfang intake", version="1", lifespan=lifespan,
                  description="Every channel in: cases are validated, numbered, stored and published on "
                              "`cases.received`. Errors name each failing field.")
    app.state.intake = intake
    app.state.relay = relay
    app.state.bus = bus

    async def readiness() -> dict[str, bool]:
        metrics.nats_connected.set(1 if bus.connected else 0)
        return {"nats": bus.connected, "database": await asyncio.to_thread(_db_ok, engine)}

    def body_rules(route: str, body: object) -> list:
        return domain.check_submission(body, directory) if route == "/api/v1/cases" else []

    install_common(app, metrics, readiness, max_body=settings.max_body_bytes, body_rules=body_rules,
                   large_bodies={"/import": (settings.max_upload_bytes, "multipart/form-data"),
                                 "/rows": (settings.max_upload_bytes, "application/json")})
    app.include_router(api.build_router(intake))
    return app


def _db_ok(engine) -> bool:  # noqa: ANN001
    from sqlalchemy import text
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        return False
