"""Scoring on the bus: one durable consumer of every event the case lifecycle folds (and of night
visits and drives), and the replay that rebuilds the projection to exactly the live figures."""
from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import Connection

from services.scoring import service, tables
from services.scoring.service import Scoring
from shared import lifecycle, natsauth
from shared.consumer import Delivery, HandlerTable
from shared.events import Event, UndecodableEvent, decode
from shared.inbox import new_event_ids
from shared.settings import Settings
from shared.verdict import Refusal, before_apply


def project(scoring: Scoring, conn: Connection, batch: list[Delivery]) -> None:
    """A batch: its events join their cases' events, each touched case is re-folded once and its facts
    counted from what the fold applied; night visits and drives are recorded. service.apply_events
    does it, for the rebuild's batches too."""
    service.apply_events(scoring, conn, batch)


# Every event the lifecycle folds — all of TRANSITIONS' keys, supervision's own events included — so
# a case's fold here sees what supervision's sees; and the night visits and drives the reports name.
# Unknown codes are refused by the shared consumer (shared/verdict.py), as in every service.
HANDLERS = HandlerTable({**lifecycle.TRANSITIONS, **service.RECORDS}, apply_batch=project)


def verdict_of(scoring: Scoring, subject: str, event: Event | None) -> str | None:
    """Why the live consumer (shared/consumer.py) would dead-letter this message before applying it
    (undecodable, forged, naming an unknown code), by the same checks; None when it would apply it."""
    if event is None:
        return "undecodable"
    refused = before_apply(subject, event, scoring.directory)
    return refused[0] if refused is not None else None


def _apply(scoring: Scoring, batch: list[Delivery]) -> int:
    """One transaction with the inbox, as the live consumer's; how many events were new."""
    with scoring.uow.begin() as conn:
        fresh = new_event_ids(conn, tables.inbox, [d.event.event_id for d in batch], datetime.now(timezone.utc))
        todo = list({d.event.event_id: d for d in batch if d.event.event_id in fresh}.values())
        service.apply_events(scoring, conn, todo)
    return len(todo)


def replay(scoring: Scoring, batch: list[Delivery]) -> tuple[int, int]:
    """(applied, refused): a batch at once; when it raises a Refusal (a second receipt of a case), one
    by one in stream order, skipping what is refused — as the live consumer dead-letters it."""
    try:
        return _apply(scoring, batch), 0
    except Refusal:
        applied = refused = 0
        for d in batch:
            try:
                applied += _apply(scoring, [d])
            except Refusal:
                refused += 1
        return applied, refused


async def rebuild(scoring: Scoring, settings: Settings, batch: int = 500, progress: bool = True) -> dict:
    """Drop the projection and replay the stream from its start, to its end, with a progress bar.

    Each event is placed with the stream's receipt time of its message, as the live consumer places
    it; what the live consumer dead-letters is skipped, by the same checks."""
    from tqdm import tqdm

    # The scoring service's NATS user (XF_NATS_CREDS, else svc_scoring.json of the embedded run): it
    # may read the stream through a consumer of this one name only (shared/natsauth.py).
    nc = await nats.connect(settings.nats_servers, name="scoring-rebuild",
                            **natsauth.connect_options(settings, natsauth.service_user("scoring")))
    js = nc.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    name = natsauth.REBUILD_CONSUMER  # one rebuild at a time; the server drops it when idle
    with contextlib.suppress(NotFoundError):  # an interrupted rebuild's
        await js.delete_consumer(settings.stream_name, name)
    service.drop_projection(scoring)
    await js.add_consumer(settings.stream_name, ConsumerConfig(
        name=name, filter_subjects=list(HANDLERS.subjects), deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.ALL,
        inactive_threshold=60.0))  # AckPolicy.ALL: a batch's last ack settles the batch (one ack, not 500)
    sub = await js.pull_subscribe_bind(durable=name, stream=settings.stream_name)
    bar = tqdm(total=last, unit="event", desc="rebuild scoring", disable=not progress)
    applied = skipped = refused = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                break
            deliveries = []
            for m in msgs:
                try:
                    event = decode(m.data)
                except UndecodableEvent:
                    event = None
                if verdict_of(scoring, m.subject, event) is None:
                    deliveries.append(Delivery(event, m.subject, m.metadata.timestamp))
                else:
                    skipped += 1  # the live consumer dead-lettered it
            done, no = await asyncio.to_thread(replay, scoring, deliveries)
            await msgs[-1].ack()
            applied, refused = applied + done, refused + no
            bar.update(len(msgs))
            if msgs[-1].metadata.num_pending == 0:
                break
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(settings.stream_name, name)
        await nc.close()
    return {"applied": applied, "skipped": skipped, "refused": refused, "stream_last_seq": last}
