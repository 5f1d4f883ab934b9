"""What every service's ``create_app`` wires the same way: its database, its NATS connection, its
outbox relay, its consumers, and a lifespan that starts and drains them in order."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlalchemy import Table, text

from shared.bus import Bus
from shared.clock import Clock, ClockError, ManualClock, SystemClock
from shared.consumer import ConsumerSpec, DurableConsumer, HandlerTable
from shared.db import UnitOfWork, make_engine, migrate
from shared.errors import Conflict
from shared.http import Guard, check_guarded, install_common
from shared.metrics import ServiceMetrics
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.subjects import DEAD_LETTER_STREAM
from shared.tokens import TokenStore, store_path

log = logging.getLogger(__name__)


class SetClock(BaseModel):
    now: Annotated[AwareDatetime, Field(description="The new time, forward only, before 2100")]

    @field_validator("now")
    @classmethod
    def _this_century(cls, value: datetime) -> datetime:
        if not 1949 < value.year < 2100:  # the bureau's calendar and every date arithmetic stay in range
            raise ValueError("must be between 1950 and 2099")
        return value


class ServicePlumbing:
    """Engine, bus, relay and unit of work of one service process."""

    def __init__(self, service: str, settings: Settings, outbox: Table, metrics: ServiceMetrics,
                 clock: Clock | None = None) -> None:
        self.service, self.settings, self.metrics = service, settings, metrics
        # Time-travel mode (XF_MODE demo or test: the simulator, demos): a clock that moves only when
        # told, and only forward, from XF_CLOCK_START (else the real time).
        self.clock = clock or (ManualClock(settings.clock_start or SystemClock().now()) if settings.time_travel
                               else SystemClock())
        self.db_url = settings.db_url(service)
        self.engine = make_engine(self.db_url, lock_timeout_s=settings.db_lock_timeout_s)
        self.bus = Bus(settings, name=service)
        self.relay = OutboxRelay(self.engine, outbox, self.bus, batch=settings.relay_batch,
                                 poll_s=settings.relay_poll_s, lease_s=settings.relay_lease_s,
                                 retention_days=settings.outbox_retention_days, metrics=metrics)
        self.bus.on_connected = self.relay.wake
        # Read at each scrape, never stale: a scrape of a healthy service reads 1 with no /readyz call.
        metrics.outbox_pending.set_function(self.relay.pending)
        metrics.outbox_oldest_age.set_function(self.relay.oldest_age)
        metrics.nats_connected.set_function(lambda: 1 if self.bus.connected else 0)
        metrics.before_scrape.append(self._read_jetstream)
        self.uow = UnitOfWork(self.engine, relay=self.relay)
        # Started after the bus (responders, sweepers); each has run() and stop().
        self.workers: list = []
        self.consumers: list[DurableConsumer] = []  # run by the bus's broker; stopped first
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_stop: list[Callable[[], None]] = []  # after the consumers and workers, before the relay's last run
        # The API tokens (shared/tokens.py), re-read when the file changes; every route is guarded.
        self.tokens = TokenStore(store_path(settings))
        self.guard = Guard(service)
        self.on_start.append(self._warn_if_no_tokens)

    async def _warn_if_no_tokens(self) -> None:
        if self.tokens.active_count() == 0:
            log.warning("no API token in %s: every route but the open and resident ones answers 401; "
                        "make one with `xinfang token create --role …`", self.tokens.path)

    def consume(self, table: HandlerTable, ctx: object, inbox: Table) -> DurableConsumer:
        """The service's durable consumer (named after the service, shared by its replicas), applying
        ``table`` with ``ctx``; its filter subjects are the table's."""
        s = self.settings
        spec = ConsumerSpec(durable=self.service, filter_subjects=table.subjects, ack_wait_s=s.consumer_ack_wait_s,
                            max_deliver=s.consumer_max_deliver, batch=s.consumer_batch, stall_s=s.consumer_stall_s)
        consumer = DurableConsumer(self.service, self.bus, self.uow, inbox, spec, table.bind(ctx), self.metrics)
        self.consumers.append(consumer)
        return consumer

    def lifespan(self):  # noqa: ANN201
        @asynccontextmanager
        async def lifespan(_app: FastAPI):  # noqa: ANN202
            await asyncio.to_thread(migrate, self.service, self.db_url, self.settings)
            for hook in self.on_start:
                await hook()
            self.bus.start()
            tasks = [asyncio.create_task(self.relay.run())]
            tasks += [asyncio.create_task(w.run()) for w in [*self.workers, *self.consumers]]
            yield
            for worker in [*self.consumers, *self.workers]:  # stop taking work, finish the batch in hand
                await worker.stop()
            for hook in self.on_stop:
                await asyncio.to_thread(hook)
            await self.relay.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.bus.close()
            self.engine.dispose()
        return lifespan

    def app(self, description: str, router: APIRouter, state: dict, **http) -> FastAPI:
        """The service's FastAPI app: lifespan, the common HTTP parts, time travel, its routes.
        ``state`` goes on ``app.state`` (the use-case context); ``http`` to ``install_common``."""
        # FastAPIOffline: /docs and /redoc from assets the service serves itself (a county network is
        # often offline; FastAPI's own pages load Swagger UI from a CDN and stay blank there).
        app = FastAPIOffline(title=f"xinfang {self.service}", version="1", lifespan=self.lifespan(),
                             description=description)
        for key, value in {**state, "relay": self.relay, "bus": self.bus, "tokens": self.tokens,
                           "consumers": self.consumers}.items():
            setattr(app.state, key, value)
        install_common(app, self.metrics, self.readiness, max_body=self.settings.max_body_bytes, **http)
        self.install_time_travel(app)
        app.include_router(router)
        check_guarded(app, self.service)  # no route open by accident
        return app

    def install_time_travel(self, app: FastAPI) -> None:
        """``PUT /api/v1/clock`` {"now": …} sets the service's clock forward, in time-travel mode only
        (XF_MODE demo or test); otherwise the route does not exist."""
        if not (self.settings.time_travel and isinstance(self.clock, ManualClock)):
            return
        clock = self.clock

        @app.put("/api/v1/clock", tags=["time travel"], summary="Time-travel mode only: set this service's clock",
                 dependencies=[self.guard("PUT /api/v1/clock")])
        def set_clock(body: SetClock) -> dict:
            try:
                clock.set(body.now)  # never backwards: 409 with the reason, the clock unchanged
            except ClockError as exc:
                raise Conflict(str(exc), {"now": clock.now().isoformat()}) from None
            return {"now": clock.now()}

    async def readiness(self) -> dict:
        """/readyz: the database, NATS and each consumer (fetching, able to dead-letter). A service
        with consumers is not ready without NATS; intake is (its outbox keeps every case until NATS
        is back), and says so in its checks."""
        checks = {"nats": self.bus.connected, "database": await asyncio.to_thread(self._db_ok)}
        problems = {name: "unreachable" for name, ok in checks.items() if not ok}
        for consumer in self.consumers:
            problem = consumer.health()
            checks[f"consumer:{consumer.spec.durable}"] = problem is None
            if problem is not None:
                problems[f"consumer:{consumer.spec.durable}"] = problem
        if problems:
            log.warning("not ready", extra={"fields": problems})
        optional = {"nats"} if not self.consumers else set()
        ready = all(ok for name, ok in checks.items() if name not in optional)
        return {"ready": ready, "checks": checks, **({"problems": problems} if problems else {})}

    async def _read_jetstream(self) -> None:
        """Before a scrape: each consumer's lag and the streams' size, as JetStream counts them. A
        service without a consumer reports neither; with NATS away, or not answering, the series are
        absent (the alert on ``xf_nats_connected`` says why), never stale."""
        m, js = self.metrics, self.bus.js
        consumers, streams = {}, {}
        try:
            if self.consumers and js is not None and self.bus.connected:
                for consumer in self.consumers:
                    durable = consumer.spec.durable
                    consumers[durable] = await js.consumer_info(self.settings.stream_name, durable)
                for name in (self.settings.stream_name, DEAD_LETTER_STREAM):
                    streams[name] = (await js.stream_info(name)).state
        except Exception:  # noqa: BLE001 - absent rather than stale; NATS's own error is in its log
            consumers, streams = {}, {}
        for gauge in (m.consumer_pending, m.consumer_ack_pending, m.consumer_redelivered, m.stream_messages,
                      m.stream_bytes):
            gauge.clear()
        for durable, info in consumers.items():
            m.consumer_pending.labels(durable).set(info.num_pending or 0)
            m.consumer_ack_pending.labels(durable).set(info.num_ack_pending or 0)
            m.consumer_redelivered.labels(durable).set(info.num_redelivered or 0)
        for name, state in streams.items():
            m.stream_messages.labels(name).set(state.messages)
            m.stream_bytes.labels(name).set(state.bytes)

    def _db_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False
