"""Intake's throughput with 1, 2 and 3 replicas on production's shape, for the README's table.

    .venv/bin/python -m tests.faults.drive_replicas                 # PostgreSQL if XF_TEST_POSTGRES_URL is set
    .venv/bin/python -m tests.faults.drive_replicas --database sqlite --cases 1000 --clients 24

One system (``drive.start``: a 3-node NATS cluster with R3 streams and fsync before each ack, three
intake replicas behind the round-robin balancer, two routing replicas, supervision, scoring). For 1,
2 and 3 replicas in turn the balancer sends to that many of them, ``--clients`` clerks' clients post
``--cases`` cases as fast as intake answers (an Idempotency-Key each, retried on 503 or a connection
error), and the system is left to settle. Figures per run: cases accepted per second over HTTP
(first POST to last 201), the 201s' latency (p50, p95, from the first attempt), and cases per second
end to end (first POST until every case is routed, on its timeline at supervision and counted by
scoring, every outbox drained and every consumer caught up). ``--intake-alone`` adds the same three
runs with routing, supervision and scoring paused (SIGSTOP) while the cases are posted, then resumed
to settle: what intake itself can take when it has the cores. ``--import-rows`` adds a drive file
imported with ``xinfang import`` after the runs (one client: its rate does not depend on the
replicas). It prints the machine's load average before and after: other work on the machine shows there.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import driver
from shared import natsauth
from shared.settings import Settings
from tests.faults import drive
from tests.faults.invariants import Ledger, quiet
from tests.faults.load import CATEGORIES, CHANNELS, Load
from tests.helpers import case_body


@dataclass
class Result:
    replicas: int
    cases: int
    accepted_s: float = 0.0  # first POST to last 201
    settled_s: float = 0.0  # first POST until the system is quiet
    latencies: list[float] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)

    def row(self, clients: int) -> str:
        q = statistics.quantiles(self.latencies, n=20)
        others = ", ".join(f"{k}×{v}" for k, v in sorted(self.answers.items()) if k != "201") or "-"
        return (f"| {self.replicas} | {clients} | {self.cases:,} | {self.cases / self.accepted_s:.1f} | "
                f"{statistics.median(self.latencies) * 1000:.0f} | {q[18] * 1000:.0f} | "
                f"{self.cases / self.settled_s:.1f} | {others} |")


async def post_all(url: str, headers: dict, keys: list[str], clients: int, tag: str, result: Result) -> dict[str, str]:
    """Every key's case posted (retried until 201); key → case number."""
    def body_of(n: int) -> dict:
        return case_body(CHANNELS[n % len(CHANNELS)], n=n, title=f"排查压测{tag}第{n}号"[:60],
                         category=CATEGORIES[n % len(CATEGORIES)])
    posted = await driver.post_all(url, headers, keys, body_of, clients)
    result.latencies += posted.latencies
    result.answers += posted.answers
    return posted.accepted


def settle(system, load: Load, timeout: float = 900) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while problems := quiet(system, load, Ledger()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not quiet after {timeout:.0f}s: {problems}")
        time.sleep(0.5)


def measure(system, balancer, load: Load, ports: list[int], k: int, cases: int, clients: int,  # noqa: ANN001
            alone: bool) -> Result:
    """``cases`` posted through the balancer to the first ``k`` intake replicas, then settled."""
    balancer.set_backends(ports[:k])
    result = Result(k, cases)
    downstream = [r.proc for s in ("routing", "supervision", "scoring") for r in system.replicas[s]] if alone else []
    for proc in downstream:
        proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        keys = [f"bench-{'alone-' if alone else ''}r{k}-{i}" for i in range(cases)]
        load.accepted.update(asyncio.run(post_all(balancer.url, system.headers, keys, clients, f"r{k}", result)))
        result.accepted_s = time.monotonic() - started
    finally:
        for proc in downstream:
            proc.send_signal(signal.SIGCONT)
    settle(system, load)
    result.settled_s = time.monotonic() - started
    what = "intake alone" if alone else "everything running"
    print(f"{k} intake replica(s), {what}: {cases / result.accepted_s:.1f} cases/s accepted, "
          f"{cases / result.settled_s:.1f} cases/s end to end", flush=True)
    return result


def table(title: str, results: list[Result], clients: int) -> None:
    print(f"\n{title}\n")
    print("| intake replicas | clients | cases | accepted/s (HTTP 201) | p50 ms | p95 ms | settled/s "
          "(end to end) | other answers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row(clients))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    postgres = os.environ.get("XF_TEST_POSTGRES_URL")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres" if postgres else "sqlite")
    parser.add_argument("--cases", type=int, default=1500, help="cases posted per replica count (default 1500)")
    parser.add_argument("--clients", type=int, default=24, help="concurrent clients (default 24)")
    parser.add_argument("--intake-alone", action="store_true",
                        help="also measure with routing, supervision and scoring paused while posting")
    parser.add_argument("--import-rows", type=int, default=0, help="then a drive file of this many rows (default none)")
    args = parser.parse_args()
    if args.database == "postgres" and not postgres:
        parser.error("--database postgres needs XF_TEST_POSTGRES_URL")
    print(f"machine: {os.cpu_count()} cores, load average before {os.getloadavg()[0]:.1f} "
          f"{os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="xf-drive-replicas-") as tmp:
        root = Path(tmp)
        natsauth.ensure(Settings(data_dir=root / "users"))
        system, balancer = drive.start(root / "system", args.database, postgres,
                                       natsauth.creds_dir(Settings(data_dir=root / "users")))
        try:
            ports = [r.port for r in system.replicas["intake"]]
            load = Load(balancer.url, system.headers, "bench")
            load.accepted.update(asyncio.run(post_all(balancer.url, system.headers, [f"warm-{i}" for i in range(100)],
                                                      args.clients, "warm", Result(3, 100))))
            settle(system, load)
            results = [measure(system, balancer, load, ports, k, args.cases, args.clients, False) for k in (1, 2, 3)]
            alone = ([measure(system, balancer, load, ports, k, args.cases, args.clients, True) for k in (1, 2, 3)]
                     if args.intake_alone else [])
            shape = f"{args.database}, cluster R3 with fsync before each ack, routing ×2, supervision, scoring"
            table(f"Everything running ({shape}, all on this machine):", results, args.clients)
            if alone:
                table("Intake alone (routing, supervision and scoring paused while the cases were posted; "
                      "settled/s includes their catch-up):", alone, args.clients)
            if args.import_rows:
                balancer.set_backends(ports)
                with httpx.Client(base_url=balancer.url, headers=system.headers, timeout=120) as client:
                    imp = drive.Import(drive.drive_file(root / "drive.csv", args.import_rows, system.settings),
                                       drive.open_drive(client))
                    drive.run_import(imp, balancer.url, system.headers["Authorization"].removeprefix("Bearer "))
                    drive.read_back(imp, client)
                print(f"\nxinfang import of {args.import_rows} rows ({drive.IMPORT_CHUNK} a request): "
                      f"{imp.took_s:.1f} s, {args.import_rows / imp.took_s:.0f} rows/s")
        finally:
            balancer.stop()
            system.stop()
    print(f"\nload average after {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
