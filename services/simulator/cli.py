"""``xinfang simulate``: a county-year in minutes, on a fresh system of its own, then the report and
the self-check. Exits 1 when the system's answers differ from what the simulator did."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from services import runtime
from services.simulator.check import self_check
from services.simulator.model import plan_year
from services.simulator.runner import SERVICES, Endpoints, Simulation
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import Settings


def simulate(settings: Settings, seed: int, scale: float, days: int, extra_days: int, keep: Path | None,
             stay_up: bool = False) -> int:
    """``stay_up`` (``xinfang up --demo``): after the report, keep the system running for a look around."""
    if keep is not None and Path(keep).exists() and any(Path(keep).iterdir()):
        if not (Path(keep) / "services.log").exists():
            print(f"{keep} is not empty and not a simulation's folder; choose another", file=sys.stderr)
            return 2
        shutil.rmtree(keep)  # a fresh system, so a seed always gives the same year
    data = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="xinfang-sim-"))
    ports = {s: runtime.free_port() for s in SERVICES}
    nats_server = runtime.NatsServer(data / "nats", runtime.free_port())
    env = {**os.environ, "XF_DATA_DIR": str(data), "XF_NATS_URL": nats_server.url, "XF_TIME_TRAVEL": "true",
           "XF_SWEEP_INTERVAL_S": "86400", "XF_LOG_LEVEL": "WARNING",
           **{f"XF_{s.upper()}_PORT": str(p) for s, p in ports.items()}}
    env = {k: v for k, v in env.items() if not k.endswith("_DB_URL")}  # a fresh SQLite system of its own
    children = {}
    started = time.monotonic()
    try:
        nats_server.start()
        log = open(data / "services.log", "ab")  # noqa: SIM115
        for s in SERVICES:
            children[s] = runtime.spawn(s, env, stdout=log, stderr=log)
        urls = {s: f"http://{settings.http_host}:{p}" for s, p in ports.items()}
        for s in SERVICES:
            runtime.wait_healthy(urls[s], children[s], timeout=60)
        directory = load_directory(settings.config_dir)
        plan = plan_year(directory, seed, scale, days=days)
        print(f"simulating {days} days of {directory.county.name} (seed {seed}, scale {scale}) "
              f"on a fresh system in {data}", flush=True)
        sim = Simulation(Endpoints(urls, nats_server.url), directory, plan, seed,
                         progress=lambda line: print(line, flush=True),
                         feedback_days=load_policy(settings.config_dir).feedback_days)
        asyncio.run(sim.run(days, extra_days))
        end = date(plan.year, 1, 1) + timedelta(days=days + extra_days - 1)
        problems = asyncio.run(self_check(sim, end))
        import httpx
        report = httpx.get(f"{urls['scoring']}/api/v1/reports/{plan.year}/report.md", timeout=120).text
        print()
        print(report)
        elapsed = time.monotonic() - started
        print(f"{len(sim.cases)} cases, {sim.events_sent} unit and resident commands, "
              f"{sim.refused} refused, in {elapsed:.0f} s")
        if problems:
            print(f"SELF-CHECK FAILED: {len(problems)} differences", file=sys.stderr)
            for p in problems[:50]:
                print("  " + p, file=sys.stderr)
            return 1
        print("self-check passed: every case is where the simulator left it, no event lost or doubled, "
              "and the report's figures equal the simulator's own counts")
        if stay_up:
            print("\nthe simulated county stays up (Ctrl-C stops it):")
            for s, url in urls.items():
                print(f"  {s:<12} {url}  (API docs {url}/docs)")
            print(f"  NATS         {nats_server.url}", flush=True)
            try:
                while all(p.poll() is None for p in children.values()):
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        runtime.stop_all(children)
        nats_server.stop()
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)
