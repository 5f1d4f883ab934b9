"""A durable pull consumer that a service's replicas share (DESIGN §8; ../shared/FASTSTREAM-NOTES.md).

Messages are fetched in batches and a batch is applied in one transaction together with the inbox
(so a redelivered event changes nothing) and the outbox rows it produces; acks follow the commit.
A batch that fails is applied message by message, so one poison message holds back nothing: it is
retried with a growing delay and, after ``max_deliver`` attempts, moved to ``deadletter.<service>``
with the error. A message that cannot be decoded, or that the service rejects outright (an unknown
unit, say), goes there at once: retrying cannot fix it.

Built on nats-py rather than faststream: batches per transaction are what the throughput target
needs (PERF-NOTES: faststream 2–3× the CPU per message), and the ack, retry and dead-letter policy
is explicit here instead of in defaults that lose messages (FASTSTREAM-NOTES).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError
from sqlalchemy import Connection, Table

from shared import subjects
from shared.bus import Bus
from shared.db import UnitOfWork
from shared.events import Event, UndecodableEvent, decode
from shared.inbox import new_event_ids
from shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)

ApplyBatch = Callable[[Connection, list[Event]], None]  # in a thread, inside the batch's transaction
Reject = Callable[[Event], str | None]  # a reason to dead-letter at once, or None


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    filter_subjects: tuple[str, ...]
    batch: int = 100
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (0.5, 2.0, 8.0, 30.0)
    max_ack_pending: int = 1000

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            filter_subjects=list(self.filter_subjects), ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver + 1,  # our own count decides; the server's is a backstop
            max_ack_pending=self.max_ack_pending,
        )


async def ensure_consumer(bus: Bus, stream: str, spec: ConsumerSpec) -> None:
    """Create the durable consumer, or update it when our settings changed.

    A plain re-create leaves an existing consumer as it was (FASTSTREAM-NOTES), so changes are sent
    as an explicit update, which keeps the consumer's position.
    """
    js, want = bus.js, spec.config()
    try:
        have = (await js.consumer_info(stream, spec.durable)).config
    except NotFoundError:
        with contextlib.suppress(BadRequestError):  # a replica created it first
            await js.add_consumer(stream, want)
        return
    if (sorted(have.filter_subjects or [have.filter_subject]) != sorted(spec.filter_subjects)
            or have.max_deliver != want.max_deliver or have.ack_wait != want.ack_wait
            or have.max_ack_pending != want.max_ack_pending):
        log.warning("consumer settings changed; updating", extra={"fields": {"consumer": spec.durable}})
        reply = await bus.nc.request(f"$JS.API.CONSUMER.CREATE.{stream}.{spec.durable}", json.dumps(
            {"stream_name": stream, "config": want.as_dict(), "action": "update"}).encode(), timeout=5)
        error = json.loads(reply.data).get("error")
        if error:
            raise RuntimeError(f"cannot update consumer {spec.durable}: {error}")


class DurableConsumer:
    def __init__(self, service: str, bus: Bus, uow: UnitOfWork, inbox: Table, spec: ConsumerSpec,
                 apply: ApplyBatch, metrics: ServiceMetrics, reject: Reject | None = None) -> None:
        self.service, self.bus, self.uow, self.inbox, self.spec = service, bus, uow, inbox, spec
        self.apply, self.reject, self.metrics = apply, reject, metrics
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        await self.bus.wait_connected()
        stream = self.bus.settings.stream_name
        await ensure_consumer(self.bus, stream, self.spec)
        sub = await self.bus.js.pull_subscribe_bind(durable=self.spec.durable, stream=stream)
        while not self._stopping:
            try:
                msgs = await sub.fetch(self.spec.batch, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                continue
            except Exception as exc:  # noqa: BLE001 - NATS away: wait and fetch again
                log.warning("fetch failed", extra={"fields": {"consumer": self.spec.durable, "error": repr(exc)}})
                await asyncio.sleep(0.5)
                continue
            self._idle.clear()
            try:
                await self.handle(msgs)
            finally:
                self._idle.set()

    async def stop(self) -> None:
        """Fetch no more; let the batch in hand finish and be acked."""
        self._stopping = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=self.spec.ack_wait_s)

    async def handle(self, msgs: list) -> None:
        good = []
        for msg in msgs:
            try:
                event = decode(msg.data)
                reason = self.reject(event) if self.reject else None
                kind = "rejected"
            except UndecodableEvent as exc:
                reason, kind = str(exc), "undecodable"
            if reason is not None:
                await self.dead_letter(msg, reason, kind)
            else:
                good.append((msg, event))
        if not good:
            return
        try:
            await asyncio.to_thread(self._apply, [e for _, e in good])
        except Exception:  # noqa: BLE001 - find the culprit one by one
            log.warning("batch failed; applying one by one", extra={"fields": {"consumer": self.spec.durable}})
            for msg, event in good:
                try:
                    await asyncio.to_thread(self._apply, [event])
                except Exception as exc:  # noqa: BLE001
                    await self._retry_or_dead_letter(msg, exc)
                else:
                    await msg.ack()
            return
        for msg, _ in good:
            await msg.ack()

    def _apply(self, events: list[Event]) -> None:
        with self.uow.begin() as conn:
            fresh = new_event_ids(conn, self.inbox, [e.event_id for e in events], datetime.now(timezone.utc))
            todo = list({e.event_id: e for e in events if e.event_id in fresh}.values())
            if todo:
                self.apply(conn, todo)
        self.metrics.consumed.labels(self.spec.durable, "applied").inc(len(todo))
        self.metrics.consumed.labels(self.spec.durable, "duplicate").inc(len(events) - len(todo))

    async def _retry_or_dead_letter(self, msg, exc: Exception) -> None:  # noqa: ANN001
        attempt = msg.metadata.num_delivered
        if attempt >= self.spec.max_deliver:
            await self.dead_letter(msg, f"failed {attempt} times: {exc!r}", "failed")
            return
        log.warning("event failed; will retry", extra={"fields": {
            "consumer": self.spec.durable, "attempt": attempt, "error": type(exc).__name__}})
        self.metrics.consumed.labels(self.spec.durable, "retried").inc()
        await msg.nak(delay=self.spec.backoff_s[min(attempt, len(self.spec.backoff_s)) - 1])

    async def dead_letter(self, msg, reason: str, kind: str) -> None:  # noqa: ANN001
        """Move the message, with the error, to ``deadletter.<service>``; then stop its redelivery."""
        seq = msg.metadata.sequence.stream
        await self.bus.js.publish(subjects.DEAD_LETTER.format(service=self.service), msg.data, headers={
            "Nats-Msg-Id": f"{self.spec.durable}:{seq}", "Xf-Error": reason[:2000], "Xf-Error-Kind": kind,
            "Xf-Original-Subject": msg.subject, "Xf-Stream-Seq": str(seq), "Xf-Consumer": self.spec.durable})
        await msg.term()
        self.metrics.dead_letters.labels(self.spec.durable, kind).inc()
        # The reason stays in the dead-letter header: it may quote the payload, which logs must not.
        log.warning("dead-lettered", extra={"fields": {"consumer": self.spec.durable, "seq": seq, "kind": kind}})
