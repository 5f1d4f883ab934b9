"""``xinfang bench``: what the system does at drive scale, each figure beside the issue's target and,
for throughput, beside the raw baseline measured in the same run (docs/benchmarks.md).

One stack (``Stack``: nats-server, the four services as processes, SQLite files or PostgreSQL
schemas) serves the raw baseline, HTTP, import, latency, replica and bulk figures in that order (its
databases grow from one to the next, as a county's do); scoring's rebuild and the year's report run
on a second nats-server with a scoring database of their own. Every figure is the median of
``runs`` runs, with their min and max.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import cases, driver, history, raw
from bench.balancer import RoundRobin
from bench.machine import RssPeaks, machine, versions
from bench.stack import SERVICES, Stack, nats_users

SECTIONS = ("raw", "http", "import", "latency", "replicas", "bulk", "rebuild", "report", "rss")
RATES = (50, 200, 400)


@dataclass
class Sizes:
    cases: int = 2000  # the raw baseline's messages, HTTP cases, import rows
    clients: int = 16
    chunk: int = 500  # rows per import request (`xinfang import`'s default)
    latency_s: float = 10.0  # seconds of open-loop load at each rate
    replica_cases: int = 1000
    bulk: tuple[int, ...] = (10_000, 100_000)
    rebuild_events: int = 1_000_000
    report_cases: int = 1_000_000


QUICK = Sizes(cases=60, clients=8, chunk=30, latency_s=0.3, replica_cases=30, bulk=(150, 300), rebuild_events=2100,
              report_cases=2000)


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: str = ""
    higher_is_better: bool = True
    ratio_to_raw: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def json(self) -> dict:
        """Its values and their median, min and max (None each when a failure left it without a run)."""
        out = asdict(self)
        out.update(median=self.median, min=min(self.values), max=max(self.values)) if self.values else out.update(
            median=None, min=None, max=None)
        return out


class Bench:
    def __init__(self, root: Path, database: str, postgres_url: str | None, sizes: Sizes, runs: int,
                 only: set[str]) -> None:
        self.root, self.database, self.postgres_url = root, database, postgres_url
        self.sizes, self.runs, self.only = sizes, runs, only
        self.figures: list[Figure] = []
        self.users = nats_users(root / "users")

    def figure(self, section: str, name: str, unit: str, target: str = "", **kw) -> Figure:  # noqa: ANN003
        f = Figure(section, name, unit, target=target, **kw)
        self.figures.append(f)
        return f

    def wanted(self, *sections: str) -> bool:
        return bool(self.only & set(sections))

    def log(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # --- the pipeline -------------------------------------------------------------------------------

    def pipeline(self) -> None:
        if not self.wanted("raw", "http", "import", "latency", "replicas", "bulk", "rss"):
            return
        stack = Stack(self.root / "pipeline", self.database, self.postgres_url, self.users)
        try:
            self.log("starting the stack")
            stack.start()
            self.warm(stack)
            if self.wanted("rss"):
                peaks = RssPeaks(stack.pids())
                idle = peaks.sample()
            if self.wanted("raw"):
                f = self.figure("raw", "raw baseline: producer + 3 hops", "msgs/s")
                for r in range(self.runs):
                    f.values.append(raw.run(stack, self.sizes.cases, r))
                    self.log(f"raw run {r + 1}: {f.values[-1]:.0f} msgs/s")
            if self.wanted("http", "rss"):
                self.http(stack, peaks if self.wanted("rss") else None)
            if self.wanted("rss"):
                for s in [*SERVICES, "nats-server"]:
                    self.figure("rss", f"{s} idle", "MB", "≤ 150 MB" if s != "nats-server" else "",
                                higher_is_better=False).values.append(idle[s])
                    self.figure("rss", f"{s} under HTTP load (max)", "MB", "≤ 300 MB" if s != "nats-server" else "",
                                higher_is_better=False).values.append(peaks.peaks[s])
            if self.wanted("import"):
                self.imports(stack)
            if self.wanted("latency"):
                self.latency(stack)
            if self.wanted("replicas"):
                self.replicas(stack)
            if self.wanted("bulk"):
                self.bulk(stack)
        finally:
            stack.stop()

    def warm(self, stack: Stack) -> None:
        """A few cases through everything first: models loaded, consumers bound, tables cached."""
        n = 20
        asyncio.run(driver.post_all(stack.url("intake"), stack.headers, [f"warm-{uuid.uuid4().hex}-{i}" for i in range(n)],
                                    lambda i: cases.case_body("warm", i), 4))
        driver.wait_settled(stack, driver.scored, n)

    def http_target(self) -> str:
        return "≥ 300 cases/s" if self.database == "postgres" else "≥ 500 cases/s"

    def through_http(self, stack: Stack, url: str, n: int, tag: str) -> tuple[float, float]:
        """``n`` cases posted by the clients to ``url`` until scoring counted them all: (cases/s end to
        end, cases/s accepted)."""
        before = driver.scored(stack)
        keys = [f"bench-{tag}-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
        started = time.monotonic()
        asyncio.run(driver.post_all(url, stack.headers, keys, lambda i: cases.case_body(tag, i), self.sizes.clients))
        accepted_s = time.monotonic() - started
        reached = driver.wait_settled(stack, driver.scored, before + n)
        return n / (reached - started), n / accepted_s

    def http(self, stack: Stack, peaks: RssPeaks | None) -> None:
        n = self.sizes.cases
        f = self.figure("http", f"HTTP: {n:,} cases, {self.sizes.clients} clients, until settled", "cases/s",
                        self.http_target() + ", ≥ 0.6× raw")
        g = self.figure("http", "HTTP: accepted (first POST to last 201)", "cases/s")
        for r in range(self.runs):
            if peaks is not None and r == 0:
                with peaks:
                    end_to_end, accepted = self.through_http(stack, stack.url("intake"), n, f"http{r}")
            else:
                end_to_end, accepted = self.through_http(stack, stack.url("intake"), n, f"http{r}")
            f.values.append(end_to_end)
            g.values.append(accepted)
            self.log(f"http run {r + 1}: {end_to_end:.1f} cases/s end to end, {accepted:.1f} accepted")

    def imports(self, stack: Stack) -> None:
        n = self.sizes.cases
        f = self.figure("import", f"import: {n:,} rows, {self.sizes.chunk} a request, until settled", "cases/s",
                        "≥ 1000 cases/s, ≥ 0.6× raw")
        for r in range(self.runs):
            f.values.append(self.imported(stack, n, f"imp{r}", driver.scored))
            self.log(f"import run {r + 1}: {f.values[-1]:.1f} cases/s")

    def imported(self, stack: Stack, n: int, tag: str, count, counted_only: bool = False) -> float:  # noqa: ANN001
        before = count(stack)
        rows = [cases.drive_row(tag, i) for i in range(n)]
        with httpx.Client(base_url=stack.url("intake"), headers=stack.headers, timeout=600) as http:
            drive_id = driver.open_drive(http, f"压测排查{tag}")
            started = time.monotonic()
            driver.import_rows(http, drive_id, rows, self.sizes.chunk, uuid.uuid4().hex)
        reached = driver.wait_settled(stack, count, before + n, timeout=max(1800, n / 20), counted_only=counted_only)
        return n / (reached - started)

    def latency(self, stack: Stack) -> None:
        for rate in RATES:
            n = max(10, int(rate * self.sizes.latency_s))
            figs = {q: self.figure("latency", f"{q} at {rate}/s ({n:,} cases, open loop): 201 → CaseAssigned", "ms",
                                   "≤ 25 ms" if (q, rate) == ("p99", 200) else "", higher_is_better=False)
                    for q in ("p50", "p99", "max")}
            for r in range(self.runs):
                lat, posted = asyncio.run(self.assigned_after(stack, n, rate, f"lat{rate}-{r}"))
                answered = statistics.quantiles(posted.latencies, n=100, method="inclusive")[98] * 1000
                figs["p99"].note = (f"POST → 201 p99 {answered:.0f} ms; the client sent up to "
                                    f"{posted.late_s * 1000:.0f} ms behind its schedule")
                q = statistics.quantiles(lat, n=100, method="inclusive")
                figs["p50"].values.append(statistics.median(lat))
                figs["p99"].values.append(q[98])
                figs["max"].values.append(max(lat))
                self.log(f"latency {rate}/s run {r + 1}: p50 {figs['p50'].values[-1]:.1f} ms, "
                         f"p99 {figs['p99'].values[-1]:.1f} ms")
                driver.wait_settled(stack, driver.scored, 0)

    async def assigned_after(self, stack: Stack, n: int, rate: float, tag: str) -> tuple[list[float], driver.Posted]:
        """Each case's ms from its 201 to the delivery of its CaseAssigned; what the clients saw."""
        posted = driver.Posted()
        keys = [f"bench-{tag}-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
        async with driver.Assignments(stack) as seen:
            await driver.post_at_rate(stack.url("intake"), stack.headers, keys, lambda i: cases.case_body(tag, i),
                                      rate, posted)
            numbers = set(posted.accepted.values())
            await seen.wait_for(numbers, timeout=max(120, n / 10))
        # A CaseAssigned may be handled before its 201 is (one event loop for both): that is 0 ms.
        return [max(0.0, seen.seen[c] - posted.answered_at[c]) * 1000 for c in numbers], posted

    def replicas(self, stack: Stack) -> None:
        n = self.sizes.replica_cases
        extra = stack.start_replicas(["intake", "intake"], new_ports=True)
        balancer = RoundRobin([r.port for r in stack.replicas["intake"]])
        balancer.start()
        try:
            for k in (1, 2, 3):
                balancer.set_backends([r.port for r in stack.replicas["intake"][:k]])
                f = self.figure("replicas", f"HTTP via round-robin, {k} intake replica{'s' if k > 1 else ''}: "
                                f"{n:,} cases until settled", "cases/s", self.http_target())
                for r in range(self.runs):
                    f.values.append(self.through_http(stack, balancer.url, n, f"rep{k}-{r}")[0])
                    self.log(f"{k} intake replica(s) run {r + 1}: {f.values[-1]:.1f} cases/s")
        finally:
            balancer.stop()
            for r in extra:
                stack.stop_replica(r)

    def bulk(self, stack: Stack) -> None:
        for n in self.sizes.bulk:
            f = self.figure("bulk", f"bulk import of {n:,} rows until routed", "cases/s", "≥ 1000 cases/s")
            for r in range(self.runs):
                f.values.append(self.imported(stack, n, f"bulk{n}-{r}", driver.routed, counted_only=True))
                self.log(f"bulk {n} run {r + 1}: {f.values[-1]:.1f} cases/s")

    # --- scoring's rebuild and the year's report ---------------------------------------------------

    def scoring(self) -> None:
        if not self.wanted("rebuild", "report"):
            return
        stack = Stack(self.root / "history", self.database, self.postgres_url, self.users)
        try:
            stack.nats.start()
            stack.declare_streams()
            events = self.sizes.rebuild_events
            self.log(f"publishing {events:,} events")
            started = time.monotonic()
            stored = asyncio.run(self.publish_history(stack, events))
            self.log(f"published {stored:,} events, {stored / (time.monotonic() - started):.0f}/s")
            f = self.figure("rebuild", f"scoring rebuild from {stored:,} events", "events/s", "≥ 20000 events/s")
            for r in range(self.runs if self.wanted("rebuild") else 1):
                took, result = self.rebuild(stack)
                f.values.append(result["stream_last_seq"] / took)
                f.note = f"{result['applied']:,} applied, {result['skipped']} skipped, {result['refused']} refused"
                self.log(f"rebuild run {r + 1}: {f.values[-1]:.0f} events/s ({f.note})")
            if not self.wanted("rebuild"):
                self.figures.remove(f)
            if self.wanted("report"):
                self.report(stack)
        finally:
            stack.stop()

    async def publish_history(self, stack: Stack, events: int) -> int:
        nc = await stack.admin()
        try:
            return await history.publish(nc, history.events(events))
        finally:
            await nc.close()

    def rebuild(self, stack: Stack) -> tuple[float, dict]:
        """What ``xinfang scoring rebuild`` does, in this process (the same functions), timed without
        the process's start."""
        from services.scoring.app import build_scoring
        from services.scoring.handlers import rebuild as replay
        from services.scoring.service import ScoringMetrics
        from shared.db import UnitOfWork, make_engine, migrate

        url = stack.settings.db_url("scoring")
        migrate("scoring", url)
        engine = make_engine(url)
        try:
            scoring = build_scoring(stack.settings, UnitOfWork(engine), ScoringMetrics())
            started = time.monotonic()
            result = asyncio.run(replay(scoring, stack.settings, progress=False))
            return time.monotonic() - started, result
        finally:
            engine.dispose()

    def report(self, stack: Stack) -> None:
        from shared.db import make_engine

        n = self.sizes.report_cases
        engine = make_engine(stack.settings.db_url("scoring"))
        try:
            have = history.multiply_facts(engine, n)
        finally:
            engine.dispose()

        async def purge() -> None:  # the live consumer must find nothing to do while the report is timed
            nc = await stack.admin()
            await nc.jetstream().purge_stream(stack.settings.stream_name)
            await nc.close()
        asyncio.run(purge())
        stack.start_replicas(["scoring"])
        f = self.figure("report", f"year report over {have:,} cases (GET /api/v1/reports/{history.YEAR})", "s",
                        "≤ 2 s", higher_is_better=False)
        for r in range(self.runs):
            started = time.monotonic()
            answer = stack.http.get(f"{stack.url('scoring')}/api/v1/reports/{history.YEAR}", timeout=1800)
            f.values.append(time.monotonic() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"the report: {answer.status_code} {answer.text[:300]}")
            f.note = f"it counted {answer.json()['figures']['received']:,} cases received"
            self.log(f"report run {r + 1}: {f.values[-1]:.2f} s")

    # --- the whole run --------------------------------------------------------------------------

    def run(self) -> None:
        self.pipeline()
        self.scoring()
        base = next((f for f in self.figures if f.section == "raw"), None)
        for f in self.figures:
            if base is not None and f.unit == "cases/s":
                f.ratio_to_raw = f.median / base.median


def table(figures: list[Figure]) -> str:
    rows = [("section", "figure", "median", "min–max", "unit", "× raw", "target")]
    for f in figures:
        fmt = "{:,.2f}" if f.unit == "s" else "{:,.1f}" if f.median < 100 else "{:,.0f}"
        rows.append((f.section, f.name, fmt.format(f.median), f"{fmt.format(min(f.values))}–{fmt.format(max(f.values))}",
                     f.unit, f"{f.ratio_to_raw:.2f}" if f.ratio_to_raw is not None else "", f.target))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(args: argparse.Namespace, argv: list[str]) -> int:
    """``xinfang bench`` (services/cli.py has its options); 0 when every section ran, whatever the
    figures; 2 on a bad option."""
    quick, postgres_url, runs, out = args.quick, args.postgres_url, args.runs, args.out
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    if unknown := wanted - set(SECTIONS):
        print(f"unknown section(s) {', '.join(sorted(unknown))}; the sections are {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    sizes = QUICK if quick else Sizes()
    overrides = {"cases": args.cases, "clients": args.clients, "rebuild_events": args.rebuild_events,
                 "report_cases": args.report_cases, "bulk": tuple(int(x) for x in args.bulk.split(",")) if args.bulk else None,
                 "replica_cases": max(10, args.cases // 2) if args.cases else None}
    sizes = Sizes(**{**asdict(sizes), **{k: v for k, v in overrides.items() if v is not None}})
    runs = runs or (1 if quick else 3)
    database = "postgres" if postgres_url else "sqlite"
    pg_engine = None
    if postgres_url:
        from shared.db import make_engine
        pg_engine = make_engine(postgres_url)
    started = datetime.now(timezone.utc)
    out = out or Path("var/bench") / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    host, ver = machine(), versions(pg_engine)
    if pg_engine is not None:
        pg_engine.dispose()
    print(f"machine: {host['cores']} cores, {host['cpu']}, {host['ram_gb']} GB RAM, load average "
          f"{' '.join(map(str, host['load_average']))}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()))
    print(f"command: xinfang {' '.join(argv)}")
    print(f"database: {database}; runs: {runs}; sizes: {asdict(sizes)}", flush=True)
    # A SIGTERM (a CI's timeout) unwinds like Ctrl-C: the services and NATS stopped, the schemas dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="xf-bench-") as tmp:
        bench = Bench(Path(tmp), database, postgres_url, sizes, runs, wanted)
        try:
            bench.run()
        finally:  # what was measured before a failure is still written and shown
            report = {"command": ["xinfang", *argv], "started": started.isoformat(timespec="seconds"),
                      "took_s": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
                      "machine": host, "versions": ver, "database": database, "runs": runs, "sizes": asdict(sizes),
                      "sections": {s: [f.json() for f in bench.figures if f.section == s]
                                   for s in SECTIONS if s in wanted}}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
            shown = [f for f in bench.figures if f.section in wanted and f.values]  # --only rss runs the HTTP load too
            print("\n" + table(shown))
            for f in shown:
                if f.note:
                    print(f"  {f.section} / {f.name}: {f.note}")
            print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; written to {out}")
    return 0
