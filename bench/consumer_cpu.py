"""CPU per event of the project's FastStream-driven consumer vs a hand-written nats-py loop, in one run.

    .venv/bin/python -m bench.consumer_cpu [--events N] [--rounds R] [--warmup W] [--profile]

What it does (see ../shared/FASTSTREAM-NOTES.md, "Batch subscribers"):

* starts a nats-server of its own (free port, temp store), declares the streams as ``shared.bus`` does, and
  publishes N ``UnitSigned``/``CaseReplied`` events once (≈ 300–900-byte JSON, ``Nats-Msg-Id`` set);
* (a) ``faststream``: the real ``Bus`` + ``DurableConsumer`` + ``HandlerTable`` with ``ConsumerSpec`` defaults
  (batch 100, fetch timeout 0.1 s); the handler inserts one row per event with SQLAlchemy Core inside the
  batch's transaction, after the inbox insert (``UnitOfWork`` + ``inbox_table``, SQLite WAL as the services
  open it);
* (b) ``raw``: ``pull_subscribe_bind`` on a durable of its own, ``fetch(100, timeout=0.1)``, ``events.decode``,
  the same subject check and ``Delivery``, the same transaction (inbox + the same handler, in a worker thread
  as the project does), the same two metric increments, then ``ack`` each message;
* each run gets a fresh durable (created *paused*, with the project's consumer config) and a fresh SQLite file;
  once the consumer is bound and idle, the clock starts, the durable is resumed, and the clock stops in the
  consumer right after the batch that brings the count to N is acked. So connecting, binding and tearing down
  are not counted, nor the batch subscriber's wait for a batch that never fills;
* CPU = ``time.process_time()`` of this process (every thread: the event loop and the SQLite worker threads);
  ``loop`` is the event-loop thread alone (``time.thread_time()``); ``server`` is nats-server's CPU over the same
  interval (from /proc, 10 ms ticks) for context;
* rounds alternate the order (a b, b a, a b, …); a warm-up pair over the last W events runs first and is not
  reported. The ratio a/b is paired per round; the median of the ratios is the result.

Exits non-zero only on errors (a consumer that does not finish, rows missing, dead letters), never on the ratio.
``--profile`` adds one cProfile'd run of each (event-loop thread only) and prints where the time goes.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.errors import TimeoutError as NatsTimeout  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402
from nats.js.client import JetStreamContext  # noqa: E402

# nats-py's own fetch, taken before shared.consumer wraps it (its timeout shim, needed by FastStream only).
RAW_FETCH = JetStreamContext.PullSubscription.fetch

from sqlalchemy import Column, Connection, MetaData, String, Table, Text, func, select  # noqa: E402

from services.runtime import NatsServer, free_port  # noqa: E402
from shared import events as ev  # noqa: E402
from shared.bus import Bus, ensure_streams  # noqa: E402
from shared.consumer import ConsumerSpec, Delivery, DurableConsumer, HandlerTable  # noqa: E402
from shared.db import UnitOfWork, UtcDateTime, make_engine  # noqa: E402
from shared.inbox import inbox_table, new_event_ids  # noqa: E402
from shared.logging import setup_logging  # noqa: E402
from shared.metrics import ServiceMetrics  # noqa: E402
from shared.settings import Settings  # noqa: E402

RUN_TIMEOUT_S = 120.0
IDLE_BEFORE_S = 0.3  # let the bound consumer settle (its idle fetch loop) before the clock starts
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the work: inbox + one row per event, in the batch's transaction --------------------------------------------

def schema() -> tuple[MetaData, Table, Table]:
    md = MetaData()
    inbox = inbox_table(md)
    activity = Table(
        "unit_activity", md,
        Column("event_id", String(64), primary_key=True),
        Column("case_id", String(32), nullable=False),
        Column("unit", String(64), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("result", String(32)),
        Column("text", Text),
        Column("occurred_at", UtcDateTime(), nullable=False),
        Column("received_at", UtcDateTime(), nullable=False),
    )
    return md, inbox, activity


@dataclass
class Ctx:
    activity: Table

    def __post_init__(self) -> None:
        self.insert = self.activity.insert()


def record(ctx: Ctx, conn: Connection, d: Delivery) -> None:
    """The handler, for both consumers: one row per event."""
    e = d.event
    conn.execute(ctx.insert, {
        "event_id": e.event_id, "case_id": e.case_id, "unit": e.unit, "kind": e.type,
        "result": getattr(e, "result", None), "text": getattr(e, "text", None),
        "occurred_at": e.occurred_at, "received_at": d.received_at,
    })


TABLE = HandlerTable({ev.UnitSigned: record, ev.CaseReplied: record})


def make_events(n: int, seed: int = 7) -> list[ev.Event]:
    rnd = random.Random(seed)
    units = [f"U{i:02d}-{name}" for i, name in enumerate(
        ["TRANS", "EDU", "HEALTH", "HOUSING", "LAND", "WATER", "POLICE", "CIVIL", "LABOR", "ENV"] * 3)]
    words = "关于反映小区物业管理不规范问题经调查核实已责成相关单位限期整改并将处理结果书面告知信访人".replace("", " ").split()
    out: list[ev.Event] = []
    for i in range(n):
        unit = rnd.choice(units)
        case_id = f"QS-2026-{rnd.randrange(1, 999999):06d}"
        actor = ev.Actor(kind="unit", id=f"{unit}-staff{rnd.randrange(1, 40)}")
        if i % 2:
            text = "".join(rnd.choice(words) for _ in range(rnd.randrange(60, 240)))
            out.append(ev.CaseReplied(case_id=case_id, unit=unit, actor=actor,
                                      result=rnd.choice(["resolved", "partly_resolved", "not_supported", "explained"]),
                                      text=text))
        else:
            out.append(ev.UnitSigned(case_id=case_id, unit=unit, actor=actor))
    return out


# --- environment ------------------------------------------------------------------------------------------------

@dataclass
class Env:
    tmp: Path
    server: NatsServer
    settings: Settings
    nc: nats.aio.client.Client  # control connection: publishing, consumer creation, resume
    js: JetStreamContext

    @property
    def stream(self) -> str:
        return self.settings.stream_name

    def server_cpu_s(self) -> float:
        with open(f"/proc/{self.server.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def publish_all(env: Env, events: list[ev.Event], gather: int = 500) -> tuple[float, int]:
    t0, size = time.perf_counter(), 0
    for i in range(0, len(events), gather):
        chunk = events[i:i + gather]
        payloads = [ev.encode(e) for e in chunk]
        size += sum(map(len, payloads))
        await asyncio.gather(*(env.js.publish(e.subject, p, headers={"Nats-Msg-Id": e.event_id})
                               for e, p in zip(chunk, payloads)))
    return time.perf_counter() - t0, size


async def create_paused(env: Env, spec: ConsumerSpec, start_seq: int) -> None:
    """The durable with the project's consumer config, paused: it delivers nothing until resumed."""
    cfg: ConsumerConfig = spec.config()
    if start_seq > 1:
        cfg.deliver_policy, cfg.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
    cfg.pause_until = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await env.js.add_consumer(env.stream, cfg)


@dataclass
class Result:
    kind: str
    events: int
    cpu_s: float
    loop_s: float
    server_s: float
    wall_s: float
    batches: int

    def us(self, seconds: float) -> float:
        return seconds / self.events * 1e6


class Finish:
    """Counts handled messages; stamps the clocks the moment the target is reached (in the consumer's code path)."""

    def __init__(self, target: int) -> None:
        self.target, self.count, self.batches = target, 0, 0
        self.stamp: tuple[float, float, float] | None = None
        self.done = asyncio.Event()

    def start(self) -> tuple[float, float, float]:
        return time.process_time(), time.thread_time(), time.perf_counter()

    def add(self, n: int) -> None:
        self.count += n
        self.batches += 1
        if self.stamp is None and self.count >= self.target:
            self.stamp = self.start()
            self.done.set()


async def measured(env: Env, durable: str, finish: Finish, waiter, profiler: cProfile.Profile | None):  # noqa: ANN001, ANN201
    await asyncio.sleep(IDLE_BEFORE_S)
    gc.collect()
    server0 = env.server_cpu_s()
    if profiler is not None:
        profiler.enable()
    cpu0, loop0, wall0 = finish.start()
    await env.js.resume_consumer(env.stream, durable)
    await asyncio.wait_for(waiter, RUN_TIMEOUT_S)
    if profiler is not None:
        profiler.disable()
    server1 = env.server_cpu_s()
    cpu1, loop1, wall1 = finish.stamp
    return cpu1 - cpu0, loop1 - loop0, server1 - server0, wall1 - wall0


def check_applied(engine, inbox: Table, activity: Table, want: int, metrics: ServiceMetrics, durable: str) -> None:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(activity)).scalar_one()
        seen = conn.execute(select(func.count()).select_from(inbox)).scalar_one()
    dead = sum(s.value for m in metrics.dead_letters.collect() for s in m.samples if s.name.endswith("_total"))
    if rows != want or seen != want or dead:
        raise RuntimeError(f"{durable}: {rows} rows, {seen} inbox ids, {dead} dead letters; expected {want}, {want}, 0")


# --- (a) the project's consumer ---------------------------------------------------------------------------------

async def run_faststream(env: Env, durable: str, db: Path, start_seq: int, count: int,
                         profiler: cProfile.Profile | None = None) -> Result:
    engine = make_engine(f"sqlite:///{db}")
    md, inbox, activity = schema()
    md.create_all(engine)
    spec = ConsumerSpec(durable=durable, filter_subjects=TABLE.subjects)  # project defaults: batch 100, 0.1 s
    await create_paused(env, spec, start_seq)
    bus = Bus(env.settings, f"bench-{durable}")
    metrics = ServiceMetrics("bench")
    consumer = DurableConsumer("bench", bus, UnitOfWork(engine), inbox, spec, TABLE.bind(Ctx(activity)), metrics)
    finish = Finish(count)
    handle = consumer.handle

    async def counted(msgs: list) -> None:  # on_batch calls self.handle: count after the batch is acked
        await handle(msgs)
        finish.add(len(msgs))
    consumer.handle = counted
    try:
        bus.start()  # connects, declares, runs ensure_consumer (finds ours), starts the broker's subscriber
        await asyncio.wait_for(asyncio.shield(bus._task), 15)
        cpu, loop, server, wall = await measured(env, durable, finish, finish.done.wait(), profiler)
    finally:
        await consumer.stop()
        await bus.close()
    check_applied(engine, inbox, activity, count, metrics, durable)
    engine.dispose()
    with contextlib.suppress(Exception):
        await env.js.delete_consumer(env.stream, durable)
    return Result("faststream", count, cpu, loop, server, wall, finish.batches)


# --- (b) a hand-written nats-py loop doing the same work ----------------------------------------------------------

async def run_raw(env: Env, durable: str, db: Path, start_seq: int, count: int,
                  profiler: cProfile.Profile | None = None, batch: int = 100, timeout: float = 0.1) -> Result:
    engine = make_engine(f"sqlite:///{db}")
    md, inbox, activity = schema()
    md.create_all(engine)
    uow, ctx, metrics = UnitOfWork(engine), Ctx(activity), ServiceMetrics("bench")
    spec = ConsumerSpec(durable=durable, filter_subjects=TABLE.subjects)
    await create_paused(env, spec, start_seq)
    applied = metrics.consumed.labels(durable, "applied")
    duplicate = metrics.consumed.labels(durable, "duplicate")

    def apply(deliveries: list[Delivery]) -> None:
        with uow.begin() as conn:
            fresh = new_event_ids(conn, inbox, [d.event.event_id for d in deliveries], datetime.now(timezone.utc))
            todo = list({d.event.event_id: d for d in deliveries if d.event.event_id in fresh}.values())
            for d in todo:
                record(ctx, conn, d)
        applied.inc(len(todo))
        duplicate.inc(len(deliveries) - len(todo))

    nc = await nats.connect(env.server.url, name=f"bench-{durable}")
    finish = Finish(count)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=env.stream)

        async def consume() -> None:
            while finish.stamp is None:
                try:
                    msgs = await RAW_FETCH(psub, batch, timeout=timeout)
                except (NatsTimeout, asyncio.TimeoutError):
                    continue
                deliveries = []
                for msg in msgs:
                    event = ev.decode(msg.data)
                    if msg.subject != event.subject:
                        raise RuntimeError(f"forged: {event.subject} on {msg.subject}")
                    deliveries.append(Delivery(event, msg.subject,
                                               msg.metadata.timestamp or datetime.now(timezone.utc)))
                await asyncio.to_thread(apply, deliveries)
                for msg in msgs:
                    await msg.ack()
                finish.add(len(msgs))

        task = asyncio.create_task(consume())
        try:
            cpu, loop, server, wall = await measured(env, durable, finish, asyncio.shield(task), profiler)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    check_applied(engine, inbox, activity, count, metrics, durable)
    engine.dispose()
    with contextlib.suppress(Exception):
        await env.js.delete_consumer(env.stream, durable)
    return Result("raw", count, cpu, loop, server, wall, finish.batches)


# --- driver -----------------------------------------------------------------------------------------------------

RUNNERS = {"faststream": run_faststream, "raw": run_raw}


def profile_report(kind: str, profiler: cProfile.Profile, events: int, top: int) -> str:
    stats = pstats.Stats(profiler)
    groups: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        total += tt
        path = filename.replace("\\", "/")
        if "site-packages/" in path:
            group = path.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/shared/" in path or "/bench/" in path:
            group = "xinfang (shared/, benchmark)"
        elif path.startswith("~") or path.startswith("<"):
            group = "C functions (socket, epoll, pydantic-core, json scanner, …)"
        elif re.search(r"/lib/python3\.\d+/", path):
            group = "stdlib " + re.split(r"/lib/python3\.\d+/", path, maxsplit=1)[1].split("/", 1)[0].removesuffix(".py")
        else:
            group = path
        groups[group] = groups.get(group, 0.0) + tt
    out = io.StringIO()
    out.write(f"\n--- cProfile of {kind}: event-loop thread CPU (thread_time; profiling inflates it), "
              f"{total / events * 1e6:.0f} µs/event, by package (self time):\n")
    for group, tt in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
        out.write(f"  {tt / events * 1e6:8.1f} µs/event  {tt / total:5.1%}  {group}\n")
    s = io.StringIO()
    pstats.Stats(profiler, stream=s).sort_stats("tottime").print_stats(top)
    lines = s.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    out.write("\n".join(lines[start:]) + "\n")
    return out.getvalue()


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="xf-consumer-cpu-"))
    server = NatsServer(tmp / "nats", free_port())
    server.start()
    nc = None
    try:
        settings = Settings(nats_url=server.url, data_dir=tmp)
        nc = await nats.connect(server.url, name="bench-control")
        env = Env(tmp, server, settings, nc, nc.jetstream(timeout=10))
        await ensure_streams(env.js, settings)
        events = make_events(args.events)
        seconds, size = await publish_all(env, events)
        print(f"published {len(events):,} events ({size / len(events):.0f} B mean JSON) in {seconds:.1f} s; "
              f"nats-server 127.0.0.1:{server.port}, store {tmp}")
        print(f"(a) faststream: DurableConsumer, ConsumerSpec defaults (batch {ConsumerSpec.batch}, fetch timeout "
              f"{ConsumerSpec.fetch_timeout_s} s); (b) raw: nats-py fetch({args.raw_batch}, timeout="
              f"{ConsumerSpec.fetch_timeout_s}); both: inbox + 1 row per event, one SQLite transaction per batch")
        run_no = 0

        async def one(kind: str, start_seq: int, count: int, profiler: cProfile.Profile | None = None) -> Result:
            nonlocal run_no
            run_no += 1
            durable = f"bench_{kind}_{run_no}_{uuid.uuid4().hex[:6]}"
            db = tmp / f"{durable}.db"
            kw = {"batch": args.raw_batch} if kind == "raw" else {}
            result = await RUNNERS[kind](env, durable, db, start_seq, count, profiler, **kw)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{db}{suffix}")
            return result

        if args.warmup:
            w = min(args.warmup, args.events)
            for kind in ("faststream", "raw"):
                await one(kind, args.events - w + 1, w)
            print(f"warm-up: {w:,} events each, not reported")

        header = (f"{'round':>5}  {'order':<6} {'fs µs/ev':>9} {'raw µs/ev':>9} {'ratio':>6}  "
                  f"{'loop fs/raw µs/ev':>17}  {'server fs/raw':>13}  {'wall fs/raw s':>13}  {'batches fs/raw':>14}")
        print()
        print(header)
        print("-" * len(header))
        ratios: list[float] = []
        for r in range(1, args.rounds + 1):
            order = ("faststream", "raw") if r % 2 else ("raw", "faststream")
            res = {kind: await one(kind, 1, args.events) for kind in order}
            a, b = res["faststream"], res["raw"]
            ratio = a.cpu_s / b.cpu_s
            ratios.append(ratio)
            print(f"{r:>5}  {'ab' if order[0] == 'faststream' else 'ba':<6} {a.us(a.cpu_s):9.1f} {b.us(b.cpu_s):9.1f} "
                  f"{ratio:6.2f}  {a.us(a.loop_s):8.1f}/{b.us(b.loop_s):<8.1f}  "
                  f"{a.us(a.server_s):6.1f}/{b.us(b.server_s):<6.1f}  {a.wall_s:6.2f}/{b.wall_s:<6.2f}  "
                  f"{a.batches:>6}/{b.batches:<7}", flush=True)
        med = statistics.median(ratios)
        print()
        print(f"median CPU ratio faststream/raw: {med:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")

        if args.profile:
            for kind in ("faststream", "raw"):
                profiler = cProfile.Profile(time.thread_time)  # CPU of the loop thread, not wall
                await one(kind, 1, args.events, profiler)
                print(profile_report(kind, profiler, args.events, args.profile_top), flush=True)
        return 0
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000, help="events published once, read by every run")
    p.add_argument("--rounds", type=int, default=3, help="paired runs (a, b), order alternating")
    p.add_argument("--warmup", type=int, default=2_000, help="events in the unreported warm-up pair (0: none)")
    p.add_argument("--raw-batch", type=int, default=100, help="fetch size of the raw loop")
    p.add_argument("--profile", action="store_true", help="then cProfile one run of each (event-loop thread)")
    p.add_argument("--profile-top", type=int, default=25, help="functions listed per profile")
    p.add_argument("--keep", action="store_true", help="keep the temp store")
    args = p.parse_args()
    if args.events < 1 or args.rounds < 1:
        p.error("--events and --rounds must be positive")
    setup_logging("consumer-cpu", "WARNING")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
