"""The raw baseline: the least a chain of the pipeline's shape can cost here, with plain nats-py.

A producer inserts each batch of N small JSON messages in its own database (a state row and an outbox
row each, one transaction per batch) and publishes them with gathered acks and ``Nats-Msg-Id``; then
three hops, as many as consume after intake (routing → supervision → scoring), each its own process
with its own SQLite file or PostgreSQL schema: pull ``fetch(batch)``, ONE transaction per batch
(inbox rows + a state row + an outbox row per message), the next hop's messages published with
gathered acks, the batch acked. No validation, no HTTP. Timed from the producer's first insert until
the last hop has committed all N (each hop reports its committed count on a core subject).

    python -m bench.raw hop ...      one hop (started by :func:`run`)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert

from bench.stack import Stack, with_schema
from shared import natsauth
from shared.db import make_engine

STREAM = "XFBENCHRAW"
HOPS = 3  # routing, supervision, scoring
BATCH = 100

metadata = MetaData()
inbox = Table("raw_inbox", metadata, Column("event_id", String(64), primary_key=True))
state = Table("raw_state", metadata, Column("id", String(64), primary_key=True), Column("hop", Integer))
outbox = Table("raw_outbox", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
               Column("subject", String(64)), Column("data", Text))


def _subject(hop: int) -> str:
    return f"xfbench.raw.{hop}"


def _apply(engine, hop: int, msgs: list[tuple[str, bytes]], out: str | None) -> None:  # noqa: ANN001
    """One transaction for the batch: inbox, state and outbox rows."""
    with engine.begin() as conn:
        conn.execute(insert(inbox), [{"event_id": f"{hop}:{mid}"} for mid, _ in msgs])
        conn.execute(insert(state), [{"id": f"{hop}:{mid}", "hop": hop} for mid, _ in msgs])
        conn.execute(insert(outbox), [{"subject": out or "", "data": data.decode()} for _, data in msgs])


async def _publish(js, subject: str, msgs: list[tuple[str, bytes]]) -> None:  # noqa: ANN001
    await asyncio.gather(*(js.publish(subject, data, headers={"Nats-Msg-Id": f"{subject}:{mid}"}, timeout=30)
                           for mid, data in msgs))


async def hop_main(url: str, creds: str, db: str, hop: int, last: bool) -> None:
    engine = make_engine(db)
    metadata.create_all(engine)
    nc = await nats.connect(url.split(","), name=f"raw-hop{hop}", **natsauth.file_options(Path(creds)))
    js = nc.jetstream(timeout=30)
    durable = f"rawhop{hop}"
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=durable, filter_subject=_subject(hop - 1),
                                                 ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000))
    sub = await js.pull_subscribe_bind(durable=durable, stream=STREAM)
    print("ready", flush=True)
    committed = 0
    out = None if last else _subject(hop)
    while True:
        try:
            got = await sub.fetch(BATCH, timeout=1.0)
        except (NatsTimeout, asyncio.TimeoutError):
            continue
        msgs = [(m.headers["Nats-Msg-Id"].rsplit(":", 1)[1], m.data) for m in got]
        _apply(engine, hop, msgs, out)
        if out is not None:
            await _publish(js, out, msgs)
        await asyncio.gather(*(m.ack() for m in got))
        committed += len(got)
        await nc.publish(f"xfbench.done.{hop}", str(committed).encode())


async def produce(stack: Stack, db: str, n: int) -> float:
    """The producer and the wait for the last hop; the seconds taken."""
    engine = make_engine(db)
    metadata.create_all(engine)
    nc = await stack.admin()
    js = nc.jetstream(timeout=30)
    done = asyncio.Event()

    async def counted(msg) -> None:  # noqa: ANN001
        if int(msg.data) >= n:
            done.set()
    await nc.subscribe(f"xfbench.done.{HOPS}", cb=counted)
    await nc.flush()
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    for first in range(0, n, BATCH):
        msgs = [(f"{tag}-{i}", json.dumps({"case_id": f"R-{i:07d}", "type": "CaseReceived", "n": i}).encode())
                for i in range(first, min(n, first + BATCH))]
        await asyncio.to_thread(_apply, engine, 0, msgs, _subject(0))
        await _publish(js, _subject(0), msgs)
    await asyncio.wait_for(done.wait(), timeout=max(120, n / 50))
    took = time.monotonic() - started
    await nc.close()
    engine.dispose()
    return took


def db_url(stack: Stack, hop: int, run: int) -> str:
    """The hop's own database: a SQLite file, or a fresh PostgreSQL schema (dropped with the stack's)."""
    if stack.database != "postgres":
        return f"sqlite:///{stack.root / 'db' / f'raw{run}-h{hop}.db'}"
    schema = f"{stack.schema_prefix}_raw{uuid.uuid4().hex[:8]}_h{hop}"
    stack.create_schema(schema)
    return with_schema(stack.postgres_url, schema)


def run(stack: Stack, n: int, run: int) -> float:
    """One baseline run on ``stack``'s NATS (a stream of its own); messages per second."""
    async def fresh_stream() -> None:
        nc = await stack.admin()
        js = nc.jetstream()
        try:
            await js.delete_stream(STREAM)
        except Exception:  # noqa: BLE001 - not there yet
            pass
        await js.add_stream(StreamConfig(name=STREAM, subjects=["xfbench.raw.*"],
                                         num_replicas=stack.replicas_of_streams))
        await nc.close()
    asyncio.run(fresh_stream())
    creds = natsauth.creds_path(stack.settings, natsauth.ADMIN)
    hops = []
    try:
        for hop in range(1, HOPS + 1):
            hops.append(subprocess.Popen(
                [sys.executable, "-m", "bench.raw", "hop", "--url", stack.nats.url, "--creds", str(creds),
                 "--db", db_url(stack, hop, run), "--hop", str(hop)] + (["--last"] if hop == HOPS else []),
                stdout=subprocess.PIPE, text=True))
        for p in hops:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a raw hop did not start (exit {p.poll()})")
        took = asyncio.run(produce(stack, db_url(stack, 0, run), n))
    finally:
        for p in hops:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return n / took


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("role", choices=["hop"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--creds", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--hop", type=int, required=True)
    parser.add_argument("--last", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(hop_main(args.url, args.creds, args.db, args.hop, args.last))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
