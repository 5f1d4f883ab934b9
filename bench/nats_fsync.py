"""What fsync-before-ack (``sync_interval: always``) costs JetStream publishing, measured in one run.

    .venv/bin/python -m bench.nats_fsync [--messages N] [--size BYTES] [--batch B] [--rounds R] [--dir DIR]

Starts two nats-servers of its own (``services.runtime.NatsServer``, free ports, temp stores under ``--dir``):
one with nats-server's default (fsync every 2 minutes), one with ``sync_interval: always`` (what
deploy/nats/nats.conf and DESIGN §8 require in production). On each it declares a file-stored stream like the
case stream (``Nats-Msg-Id`` de-duplication on) and measures, with every ack awaited:

* ``sequential``: N publishes one after another, each ack awaited before the next (a request handler that
  publishes and waits): rate, and the latency of each publish (p50, p99);
* ``pipelined``: N publishes in batches of B whose acks are gathered (``asyncio.gather``), as the outbox relay
  publishes (``shared/outbox.py``): rate, and the time of each batch (p50, p99).

Each message is ``--size`` bytes of JSON-like text with its own ``Nats-Msg-Id``. Rounds alternate the order of
the two servers; an unreported warm-up runs first; the figures are medians over the rounds. The store must be on
a real disk for fsync to cost anything: ``--dir`` defaults to the system's temp folder (say where it is if that
is tmpfs). The machine is shared and noisy: compare the two columns of one run, not figures across runs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.js.api import StorageType, StreamConfig  # noqa: E402

from services.runtime import NatsServer, free_port, nats_server_binary  # noqa: E402

STREAM, SUBJECT = "BENCH", "bench.case"


@dataclass
class Result:
    server: str
    mode: str
    messages: int
    rate: float  # messages per second
    p50_ms: float
    p99_ms: float
    unit: str  # what p50/p99 measure: one publish, or one batch
    low: float = 0.0  # the slowest and fastest round's rate
    high: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def payload(size: int) -> bytes:
    body = ('{"case_id":"QS-2026-000001","title":"邻居违规搭建占用公共通道","content":"' + "x" * size)[:size - 2]
    return (body + '"}').encode()[:size]


async def sequential(js, data: bytes, n: int) -> tuple[float, list[float]]:  # noqa: ANN001
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        await js.publish(SUBJECT, data, headers={"Nats-Msg-Id": uuid.uuid4().hex}, timeout=10)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - started, latencies


async def pipelined(js, data: bytes, n: int, batch: int) -> tuple[float, list[float]]:  # noqa: ANN001
    times = []
    started = time.perf_counter()
    for i in range(0, n, batch):
        t = time.perf_counter()
        acks = await asyncio.gather(*(js.publish(SUBJECT, data, headers={"Nats-Msg-Id": uuid.uuid4().hex}, timeout=10)
                                      for _ in range(min(batch, n - i))))
        assert all(not a.duplicate for a in acks)
        times.append(time.perf_counter() - t)
    return time.perf_counter() - started, times


async def measure(url: str, name: str, n: int, size: int, batch: int) -> list[Result]:
    nc = await nats.connect(url, name="bench-fsync")
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["bench.>"], storage=StorageType.FILE,
                                         duplicate_window=120.0))
        data = payload(size)
        elapsed, lat = await sequential(js, data, n)
        seq = Result(name, "sequential", n, n / elapsed, percentile(lat, .5) * 1e3, percentile(lat, .99) * 1e3,
                     "publish")
        elapsed, times = await pipelined(js, data, n, batch)
        pipe = Result(name, f"pipelined ×{batch}", n, n / elapsed, percentile(times, .5) * 1e3,
                      percentile(times, .99) * 1e3, "batch")
        await js.delete_stream(STREAM)  # each round starts from an empty store
        return [seq, pipe]
    finally:
        await nc.close()


def median_results(rounds: list[list[Result]]) -> list[Result]:
    out = []
    for group in zip(*rounds):
        first = group[0]
        out.append(Result(first.server, first.mode, first.messages, statistics.median(r.rate for r in group),
                          statistics.median(r.p50_ms for r in group), statistics.median(r.p99_ms for r in group),
                          first.unit, min(r.rate for r in group), max(r.rate for r in group)))
    return out


def filesystem(path: Path) -> str:
    try:
        line = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=True).stdout.splitlines()[1]
        return line.split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per mode and round (default 3000)")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes (default 1024)")
    parser.add_argument("--batch", type=int, default=500, help="pipelined: acks gathered per batch (default 500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the stores go")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="xf-fsync-", dir=args.dir))
    servers = {"default (lazy fsync)": NatsServer(root / "lazy", free_port()),
               "sync_interval: always": NatsServer(root / "always", free_port(), sync_always=True)}
    version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{version}; stores in {root} ({filesystem(root)}); {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; {args.messages} messages of {args.size} bytes per mode, "
          f"{args.rounds} rounds (medians)", flush=True)
    try:
        for server in servers.values():
            server.start()
        for name, server in servers.items():  # warm-up, not reported
            asyncio.run(measure(server.url, name, min(500, args.messages), args.size, args.batch))
        per_server: dict[str, list[list[Result]]] = {name: [] for name in servers}
        for r in range(args.rounds):
            order = list(servers.items()) if r % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                per_server[name].append(asyncio.run(measure(server.url, name, args.messages, args.size, args.batch)))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    results = {name: median_results(rounds) for name, rounds in per_server.items()}
    print(f"\n| {'server':<22} | {'mode':<14} | {'msg/s':>8} | {'rounds min–max':>15} | {'p50 ms':>8} | "
          f"{'p99 ms':>8} | per     |")
    print(f"|{'-' * 24}|{'-' * 16}|{'-' * 10}|{'-' * 17}|{'-' * 10}|{'-' * 10}|---------|")
    for rows in results.values():
        for x in rows:
            spread = f"{x.low:.0f}–{x.high:.0f}"
            print(f"| {x.server:<22} | {x.mode:<14} | {x.rate:>8.0f} | {spread:>15} | {x.p50_ms:>8.2f} | "
                  f"{x.p99_ms:>8.2f} | {x.unit:<7} |")
    lazy, always = results.values()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    for a, b in zip(lazy, always):
        print(f"{a.mode}: sync_interval: always is {a.rate / b.rate:.1f}× slower "
              f"({a.rate:.0f} → {b.rate:.0f} msg/s; p50 {a.p50_ms:.2f} → {b.p50_ms:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
