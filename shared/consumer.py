"""A service's durable consumer: a FastStream batch pull subscriber over our own apply policy
(DESIGN §8; ../shared/FASTSTREAM-NOTES.md, "Batch subscribers").

Each service maps event type → handler in one :class:`HandlerTable`; the consumer's filter subjects
are derived from it. FastStream fetches batches from the durable pull consumer that the service's
replicas share, with manual acks and a decoder that hands over the raw messages; this module does the
rest: it decodes each message, dead-letters what cannot be applied — undecodable, *forged* (its
subject is not the one its type and unit imply), or naming codes the county does not have — and
applies the rest in one transaction with the inbox (so a redelivered event changes nothing) and the
outbox rows it produces; acks follow the commit. A batch that fails is applied message by message,
so one poison message holds back nothing: it is retried with a growing delay and, after
``max_deliver`` attempts, moved to ``deadletter.<service>`` with the error.

Measured (``bench/consumer_cpu.py``): this shape costs about what a hand-written nats-py loop
costs; FastStream's per-message subscribers and default ack policies do not (FASTSTREAM-NOTES).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from faststream import AckPolicy as DeliveryAck
from faststream.nats import JStream, PullSub
from nats.errors import NotJSMessageError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from sqlalchemy import Connection, Table

from shared import events as ev
from shared import subjects, verdict
from shared.bus import Bus
from shared.db import UnitOfWork
from shared.inbox import new_event_ids
from shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)
PullSubscription = JetStreamContext.PullSubscription


FETCH_ERROR_PAUSE_S = 0.5
# The services' own durables, (stream, durable) → linger seconds. nats-py's fetch, and FastStream's
# batch loop around it, wait until the batch is full or the fetch timeout passes, so at a steady
# 200 events/s each hop held an event ≈ the timeout (0.1 s). These fetch the first message as soon
# as it comes, then what else is there or arrives within the linger (a few ms): under load a batch
# fills from what waited while the last one was applied; alone, an event goes through at once.
EAGER: dict[tuple[str, str], float] = {}


def _fetch_timeouts_as_nats_timeouts() -> None:
    """nats-py 2.16's ``fetch`` raises a bare ``asyncio.TimeoutError`` when a pull finds nothing
    more, but FastStream 0.7's batch loop catches only ``nats.errors.TimeoutError``: its task died
    and the messages it had already fetched for the batch waited out ``ack_wait`` (30 s) before being
    redelivered. Raise nats-py's own timeout instead, as its type promises.

    The shim also notes when the subscription last fetched (``xf_fetched_at``: the consumer's
    liveness, :meth:`DurableConsumer.health`), pauses before passing on any other error (NATS
    away): FastStream's loop retries at once, and would spin; and makes the services' own durables
    fetch eagerly (:data:`EAGER`)."""
    fetch = PullSubscription.fetch
    if getattr(fetch, "xf_shim", False):
        return

    async def eager(sub, batch: int, timeout: float, linger: float) -> list:  # noqa: ANN001
        """A batch of what waits, as soon as one message comes (see EAGER). FastStream asks again for
        the rest of a batch that is not full, until its fetch timeout: told "no more" at once, it
        hands over what it has."""
        if getattr(sub, "xf_cut", False):
            sub.xf_cut = False
            raise NatsTimeout
        msgs = await fetch(sub, 1, timeout)
        with contextlib.suppress(asyncio.TimeoutError, NatsTimeout):
            msgs += await fetch(sub, batch - 1, linger)
        sub.xf_cut = len(msgs) < batch
        return msgs

    async def shimmed(self, batch: int = 1, timeout: float | None = 5, heartbeat: float | None = None):  # noqa: ANN001, ANN202
        try:
            linger = EAGER.get((self._stream, self._consumer))
            if linger is not None and batch > 1 and timeout:
                return await eager(self, batch, timeout, linger)
            return await fetch(self, batch, timeout, heartbeat)
        except NatsTimeout:
            raise
        except asyncio.TimeoutError as exc:
            raise NatsTimeout from exc
        except Exception:
            await asyncio.sleep(FETCH_ERROR_PAUSE_S)
            raise
        finally:
            self.xf_fetched_at = time.monotonic()
    shimmed.xf_shim = True  # type: ignore[attr-defined]
    PullSubscription.fetch = shimmed


_fetch_timeouts_as_nats_timeouts()
DEPARTMENT_SUBJECTS = [c.subject_template for c in ev.DEPARTMENT_EVENTS]


@dataclass(frozen=True)
class Delivery:
    """An event as the bus delivered it."""

    event: ev.Event
    subject: str
    received_at: datetime  # when the stream stored it: the bus's receipt time, not the publisher's clock


Handler = Callable[[Any, Connection, Delivery], None]  # (the service's context, the batch's transaction, the event)


@dataclass(frozen=True)
class HandlerTable:
    """One service's bus side: event type → handler. The consumer's filter subjects come from it.

    By default each event of a batch goes to its handler ``(ctx, conn, delivery)``. A service that
    works on whole batches (supervision re-folds each touched case once; scoring loads and stores the
    batch's facts together) passes ``apply_batch(ctx, conn, batch)``, which uses the table's values
    itself. ``reject`` names a reason to dead-letter an event at once (e.g. an unknown unit code).
    """

    handlers: Mapping[type[ev.Event], Callable]
    reject: Callable[[Any, ev.Event], str | None] | None = None
    apply_batch: Callable[[Any, Connection, list[Delivery]], None] | None = None

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({subjects.wildcard(t.subject_template) for t in self.handlers}))

    def bind(self, ctx: Any) -> BoundTable:
        return BoundTable(self, ctx)


@dataclass(frozen=True)
class BoundTable:
    table: HandlerTable
    ctx: Any

    def apply(self, conn: Connection, batch: list[Delivery]) -> None:
        """In a thread, inside the batch's transaction."""
        if self.table.apply_batch is not None:
            self.table.apply_batch(self.ctx, conn, batch)
            return
        for d in batch:
            ev.entry_for(self.table.handlers, d.event)(self.ctx, conn, d)

    def refusal(self, subject: str, event: ev.Event) -> tuple[str, str] | None:
        """(kind, reason) when the event is refused before it is applied: forged or naming unknown
        codes (the same checks in every consumer, ``shared/verdict.py``), then the service's own
        ``reject``, if any."""
        refused = verdict.before_apply(subject, event, getattr(self.ctx, "directory", None))
        if refused is None and self.table.reject:
            reason = self.table.reject(self.ctx, event)
            refused = ("rejected", reason) if reason is not None else None
        return refused


# Why a message is dead-lettered (the ``kind`` of xf_dead_letters_total and of the Xf-Error-Kind header).
DEAD_LETTER_KINDS = ("undecodable", "forged", "rejected", "conflict", "failed")


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    filter_subjects: tuple[str, ...]
    batch: int = 100
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (0.5, 2.0, 8.0, 30.0)
    max_ack_pending: int = 1000
    fetch_timeout_s: float = 0.1  # an idle consumer's pull waits this long before it asks again
    fetch_linger_s: float = 0.003  # once a message came, how long its batch waits for more (EAGER)
    # Not ready when the consumer has not fetched for this long (stopped, stuck, or a batch that
    # cannot finish); restarted when it is idle and stalled.
    stall_s: float = 60.0
    # Between attempts to publish a dead letter that failed (NATS away, the stream missing).
    dead_letter_retry_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            filter_subjects=list(self.filter_subjects), ack_wait=self.ack_wait_s,
            # Unlimited on the server: our own count decides when a message is dead-lettered, and a
            # message whose dead letter cannot be published yet must come back until it can.
            max_deliver=-1, max_ack_pending=self.max_ack_pending,
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


def _receipt_time(msg) -> datetime:  # noqa: ANN001
    """When the stream stored the message (now, for FastStream's in-memory test broker, which has no stream)."""
    try:
        return msg.metadata.timestamp
    except NotJSMessageError:
        return datetime.now(timezone.utc)


async def _raw_messages(msg):  # noqa: ANN001, ANN202 - FastStream decoder: hand over nats-py's messages
    return msg.raw_message


class DurableConsumer:
    """One service's durable consumer (see the module's docstring). Watched: :meth:`health` says
    whether it is fetching and can dead-letter (``/readyz`` and ``xf_consumer_healthy``), and
    :meth:`run` restarts a subscriber that stalled."""

    def __init__(self, service: str, bus: Bus, uow: UnitOfWork, inbox: Table, spec: ConsumerSpec,
                 table: BoundTable, metrics: ServiceMetrics) -> None:
        self.service, self.bus, self.uow, self.inbox, self.spec = service, bus, uow, inbox, spec
        self.table, self.metrics = table, metrics
        self.subscriber = bus.broker.subscriber(
            config=spec.config(), durable=spec.durable, stream=JStream(bus.settings.stream_name, declare=False),
            pull_sub=PullSub(batch_size=spec.batch, batch=True, timeout=spec.fetch_timeout_s),
            ack_policy=DeliveryAck.MANUAL, decoder=_raw_messages, max_workers=1,
            inbox_prefix=bus.inbox_prefix,  # the pull deliveries come to this user's own inboxes
            title=f"{service}'s durable consumer", description=f"Filter subjects: {', '.join(spec.filter_subjects)}")

        EAGER[(bus.settings.stream_name, spec.durable)] = spec.fetch_linger_s

        async def on_batch(msgs: list) -> None:
            await self.handle(msgs)
        self.subscriber(on_batch)

        async def ensure() -> None:  # before FastStream binds to it
            await ensure_consumer(bus, bus.settings.stream_name, spec)
        bus.before_subscribing.append(ensure)
        self.cannot_dead_letter: str | None = None  # why the last dead letter failed, until one succeeds
        self.busy_since: float | None = None  # a batch in hand since (monotonic)
        self._stopping = asyncio.Event()
        for kind in DEAD_LETTER_KINDS:  # every series from 0, so the first dead letter is an increase
            metrics.dead_letters.labels(spec.durable, kind)
        metrics.consumer_healthy.labels(spec.durable).set_function(lambda: 0 if self.health() else 1)
        metrics.consumer_fetch_age.labels(spec.durable).set_function(lambda: self.fetch_age() or 0.0)

    # --- liveness ---------------------------------------------------------------------------------

    def fetch_age(self) -> float | None:
        """Seconds since the subscription last fetched; None before it first did."""
        fetched = getattr(self.subscriber.subscription, "xf_fetched_at", None)
        return None if fetched is None else time.monotonic() - fetched

    def health(self) -> str | None:
        """None when the consumer works; else what is wrong, in words (for /readyz)."""
        if self.cannot_dead_letter is not None:
            return f"cannot dead-letter: {self.cannot_dead_letter}"
        if not self.subscriber.running or not any(not t.done() for t in self.subscriber.tasks):
            return "not running"
        if self.busy_since is not None and time.monotonic() - self.busy_since > self.spec.stall_s:
            return f"a batch has been in hand for {time.monotonic() - self.busy_since:.0f} s"
        age = self.fetch_age()
        if age is not None and age > self.spec.stall_s and self.busy_since is None:
            return f"has not fetched for {age:.0f} s"
        return None

    async def run(self) -> None:
        """The watch: a subscriber that stopped fetching while idle (its task gone, or stalled) is
        stopped and started again, after a short pause, with its error logged."""
        await self.bus.wait_connected()
        check = min(5.0, self.spec.stall_s / 4)
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=check)
            if self._stopping.is_set() or not self.bus.connected or not self.subscriber.running:
                continue  # not started yet (the bus starts it), or stopping
            problem = self.health()
            if problem is None or self.busy_since is not None or problem.startswith("cannot dead-letter"):
                continue
            log.error("consumer stalled; restarting it", extra={"fields": {"consumer": self.spec.durable,
                                                                             "problem": problem}})
            self.metrics.consumer_restarts.labels(self.spec.durable).inc()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.subscriber.stop(), timeout=self.spec.ack_wait_s)
            try:
                await self.subscriber.start()
            except Exception:  # noqa: BLE001 - the next check tries again
                log.exception("consumer restart failed", extra={"fields": {"consumer": self.spec.durable}})

    async def stop(self) -> None:
        """Fetch no more; let the batch in hand finish and be acked (FastStream's graceful stop)."""
        self._stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.subscriber.stop(), timeout=self.spec.ack_wait_s)

    # --- a batch ----------------------------------------------------------------------------------

    async def handle(self, msgs: list) -> None:
        """A fetched batch. Nothing escapes: an unexpected error is logged with its traceback and the
        batch's unsettled messages come back after a short delay (FastStream would only log it, and
        they would wait out ``ack_wait``)."""
        self.busy_since = time.monotonic()
        try:
            await self._handle(msgs)
        except Exception:  # noqa: BLE001
            log.exception("batch failed unexpectedly; its messages will be redelivered",
                          extra={"fields": {"consumer": self.spec.durable}})
            for msg in msgs:
                if not msg._ackd:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self.spec.backoff_s[0])
        finally:
            self.busy_since = None

    async def _handle(self, msgs: list) -> None:
        good: list[tuple[Any, Delivery]] = []
        for msg in msgs:
            try:
                event = ev.decode(msg.data)
            except ev.UndecodableEvent as exc:
                await self.dead_letter(msg, str(exc), "undecodable")
                continue
            refused = self.table.refusal(msg.subject, event)
            if refused is not None:
                kind, reason = refused
                await self.dead_letter(msg, reason, kind, event)
                continue
            good.append((msg, Delivery(event, msg.subject, _receipt_time(msg))))
        if not good:
            return
        try:
            await asyncio.to_thread(self._apply, [d for _, d in good])
        except Exception:  # noqa: BLE001 - find the culprit one by one
            log.warning("batch failed; applying one by one", extra={"fields": {"consumer": self.spec.durable}})
            for msg, delivery in good:
                try:
                    await asyncio.to_thread(self._apply, [delivery])
                except verdict.Refusal as refusal:  # the same verdict every consumer gives: no retry
                    await self.dead_letter(msg, refusal.reason, refusal.kind, delivery.event)
                except Exception as exc:  # noqa: BLE001
                    await self._retry_or_dead_letter(msg, delivery.event, exc)
                else:
                    await msg.ack()
            return
        for msg, _ in good:
            await msg.ack()

    def _apply(self, batch: list[Delivery]) -> None:
        with self.uow.begin() as conn:
            fresh = new_event_ids(conn, self.inbox, [d.event.event_id for d in batch], datetime.now(timezone.utc))
            todo = list({d.event.event_id: d for d in batch if d.event.event_id in fresh}.values())
            if todo:
                self.table.apply(conn, todo)
        committed = datetime.now(timezone.utc)
        m, durable = self.metrics, self.spec.durable
        m.consumed.labels(durable, "applied").inc(len(todo))
        m.consumed.labels(durable, "duplicate").inc(len(batch) - len(todo))
        for d in todo:
            kind = type(d.event).__name__
            m.events_handled.labels(durable, kind).inc()
            m.event_latency.labels(durable, kind).observe(max(0.0, (committed - d.received_at).total_seconds()))

    async def _retry_or_dead_letter(self, msg, event: ev.Event, exc: Exception) -> None:  # noqa: ANN001
        attempt = msg.metadata.num_delivered
        if attempt >= self.spec.max_deliver:
            await self.dead_letter(msg, f"failed {attempt} times: {exc!r}", "failed", event)
            return
        log.warning("event failed; will retry", extra={"fields": {
            "consumer": self.spec.durable, "attempt": attempt, "error": type(exc).__name__}})
        self.metrics.consumed.labels(self.spec.durable, "retried").inc()
        await msg.nak(delay=self.spec.backoff_s[min(attempt, len(self.spec.backoff_s)) - 1])

    async def dead_letter(self, msg, reason: str, kind: str, event: ev.Event | None = None) -> None:  # noqa: ANN001
        """Move the message, with the error, to ``deadletter.<service>``; tell the unit that published
        it (when a unit did) on ``cases.refused.<unit>``; then stop its redelivery.

        When that cannot be published (NATS away, the dead-letter stream missing) the message is not
        settled: it comes back after a short delay and is tried again, the consumer is reported not
        ready meanwhile, and nothing is lost. Both publishes have fixed message ids, so a retry after a
        partial success stores nothing twice."""
        seq = msg.metadata.sequence.stream
        try:
            await self.bus.js.publish(subjects.DEAD_LETTER.format(service=self.service), msg.data, headers={
                "Nats-Msg-Id": f"{self.spec.durable}:{seq}", "Xf-Error": reason[:2000], "Xf-Error-Kind": kind,
                "Xf-Original-Subject": msg.subject, "Xf-Stream-Seq": str(seq), "Xf-Consumer": self.spec.durable})
            unit = subjects.unit_of(msg.subject, DEPARTMENT_SUBJECTS)
            if unit is not None:
                refusal = ev.EventRefused.of(event, unit=unit, subject=msg.subject, kind=kind, reason=reason,
                                             by=self.service, stream_seq=seq)
                await self.bus.js.publish(refusal.subject, ev.encode(refusal),
                                          headers={"Nats-Msg-Id": refusal.event_id})
        except Exception as exc:  # noqa: BLE001
            await self._dead_letter_failed(msg, exc)
            return
        await msg.term()
        if self.cannot_dead_letter is not None:
            log.warning("dead letters are published again", extra={"fields": {"consumer": self.spec.durable}})
        self.cannot_dead_letter = None
        self.metrics.dead_letters.labels(self.spec.durable, kind).inc()
        # The reason stays in the dead-letter header: it may quote the payload, which logs must not.
        log.warning("dead-lettered", extra={"fields": {"consumer": self.spec.durable, "seq": seq, "kind": kind}})

    async def _dead_letter_failed(self, msg, exc: Exception) -> None:  # noqa: ANN001
        self.cannot_dead_letter = f"{type(exc).__name__}: {exc}"[:300]
        self.metrics.dead_letter_failures.labels(self.spec.durable).inc()
        log.error("cannot publish a dead letter; the message will come back", exc_info=exc,
                  extra={"fields": {"consumer": self.spec.durable, "seq": msg.metadata.sequence.stream}})
        retry = self.spec.dead_letter_retry_s
        with contextlib.suppress(Exception):  # NATS away: unsettled, it comes back after ack_wait anyway
            await msg.nak(delay=retry[min(msg.metadata.num_delivered, len(retry)) - 1])
