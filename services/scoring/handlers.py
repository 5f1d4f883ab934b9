"""Scoring on the bus: one durable consumer of the whole stream, and the replay that rebuilds."""
from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import Connection

from services.scoring import domain, service, tables
from services.scoring.service import Scoring
from shared import natsauth
from shared.consumer import Delivery, HandlerTable
from shared.events import UndecodableEvent, decode
from shared.inbox import new_event_ids
from shared.settings import Settings


def project(scoring: Scoring, conn: Connection, batch: list[Delivery]) -> None:
    """A batch through HANDLERS' values: the facts of its cases are loaded once, each event moves them
    by its rule (domain.FACT_RULES) or is recorded (service.RECORDS), and the facts are stored once.
    service.apply_events does it, for the rebuild's batches too."""
    service.apply_events(scoring, conn, [d.event for d in batch])


# What scoring projects: the case facts (domain.FACT_RULES), night visits and drives. Its consumer
# subscribes to these types' subjects; project applies each batch.
HANDLERS = HandlerTable({**domain.FACT_RULES, **service.RECORDS}, apply_batch=project)


async def rebuild(scoring: Scoring, settings: Settings, batch: int = 500, progress: bool = True) -> dict:
    """Drop the projection and replay the stream from its start, to its end, with a progress bar."""
    from tqdm import tqdm

    # The scoring service's NATS user (XF_NATS_CREDS, else svc_scoring.json of the embedded run): it
    # may read the stream through a consumer of this one name only (shared/natsauth.py).
    nc = await nats.connect(settings.effective_nats_url, name="scoring-rebuild",
                            **natsauth.connect_options(settings, natsauth.service_user("scoring")))
    js = nc.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    name = natsauth.REBUILD_CONSUMER  # one rebuild at a time; the server drops it when idle
    with contextlib.suppress(NotFoundError):  # an interrupted rebuild's
        await js.delete_consumer(settings.stream_name, name)
    service.drop_projection(scoring)
    await js.add_consumer(settings.stream_name, ConsumerConfig(
        name=name, filter_subjects=list(HANDLERS.subjects), deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
        inactive_threshold=60.0))
    sub = await js.pull_subscribe_bind(durable=name, stream=settings.stream_name)
    bar = tqdm(total=last, unit="event", desc="rebuild scoring", disable=not progress)
    applied = skipped = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                break
            events = []
            for m in msgs:
                try:
                    event = decode(m.data)
                except UndecodableEvent:
                    event = None
                if event is None or event.subject != m.subject:
                    skipped += 1  # the live consumer dead-lettered it (undecodable or forged)
                else:
                    events.append(event)
                await m.ack()
            with scoring.uow.begin() as conn:
                fresh = new_event_ids(conn, tables.inbox, [e.event_id for e in events], scoring.clock.now())
                todo = [e for e in events if e.event_id in fresh]
                service.apply_events(scoring, conn, todo)
            applied += len(todo)
            bar.update(len(msgs))
            if msgs[-1].metadata.num_pending == 0:
                break
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(settings.stream_name, name)
        await nc.close()
    return {"applied": applied, "skipped": skipped, "stream_last_seq": last}
