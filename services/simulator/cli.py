"""``xinfang simulate``: a county-year in minutes, on a fresh system of its own, then the report and
the self-check. Exits 1 when the system's answers differ from what the simulator did."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path

from services import runtime
from services.simulator.check import self_check
from services.simulator.model import plan_year
from services.simulator.runner import SERVICES, STEPS, Endpoints, Simulation
from shared import keys, natsauth, tokens
from shared.bus import declare_streams
from shared.directory import Directory, load_directory
from shared.policy import CHINA_TZ, load_policy
from shared.settings import Settings

PLAN_YEAR = 2026  # the simulated year


def make_tokens(settings: Settings, directory: Directory, agents: set[str]) -> dict[str, str]:
    """The simulated system's API tokens, made as an operator makes them (shared/tokens.py): the first
    start's clerk and supervisor tokens (in ``<data>/secrets/first-tokens.txt``, for a look around
    after ``xinfang up --demo``), an ops token for the clocks, one token for each delegated agent of
    the plan, who files its own cases, and one ``unit_head`` token for each unit's head (本机关负责人),
    who decides the unit's extensions through supervision's API."""
    tokens.ensure(settings)
    first = dict(line.split(": ", 1) for line in
                 (settings.data_dir / "secrets" / tokens.FIRST_TOKENS).read_text(encoding="utf-8").splitlines())
    made = {"clerk": first["clerk"], "supervisor": first["supervisor"],
            "ops": tokens.create(settings, "ops", note="the simulator's clocks", directory=directory)[1]}
    for agent in sorted(agents):
        made[f"agent:{agent}"] = tokens.create(settings, "agent", agent_id=agent, note="the simulator's agent",
                                               directory=directory)[1]
    for unit in sorted(directory.units):
        made[f"unit_head:{unit}"] = tokens.create(settings, "unit_head", unit=unit, note="the simulator's unit head",
                                                  directory=directory)[1]
    return made


def summary(sim: Simulation) -> str:
    """How often each step of the procedure was taken in the run (``STEPS``)."""
    width = max(map(len, STEPS))
    lines = ["procedure steps taken:"] + [f"  {step:<{width}} {sim.steps[step]:6d}  {what}" for step, what in STEPS.items()]
    if sim.late:
        lines.append(f"({sim.late} assignments were seen only after their unit's day: it acted a day later)")
    return "\n".join(lines)


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
    # NATS users as `xinfang up` has them (shared/natsauth.py): each service and unit with its own.
    own = settings.model_copy(update={"data_dir": data, "nats_creds": None, "nats_url": None})
    natsauth.ensure(own)
    keys.ensure(own)  # the keys of the keyed hashes, of its own (there is no default key)
    own_tokens = own.model_copy(update={"tokens_file": data / "secrets" / "tokens.json"})
    directory = load_directory(settings.config_dir)
    plan = plan_year(directory, seed, scale, year=PLAN_YEAR, days=days)
    agents = {b["delegation"]["agent_id"] for bodies in plan.filings.values() for b in bodies if b.get("delegation")}
    api_tokens = make_tokens(own_tokens, directory, agents)  # its API tokens, of its own
    nats_server = runtime.NatsServer(data / "nats", runtime.free_port(), auth_conf=natsauth.auth_conf_path(own))
    own = own.model_copy(update={"nats_url": nats_server.url})
    # Demo mode: time travel, every clock from the first simulated morning, moved forward day by day.
    start = datetime.combine(date(PLAN_YEAR, 1, 1), day_time(9), CHINA_TZ)
    env = {**os.environ, "XF_DATA_DIR": str(data), "XF_NATS_URL": nats_server.url, "XF_MODE": "demo",
           "XF_CLOCK_START": start.isoformat(), "XF_SWEEP_INTERVAL_S": "86400", "XF_LOG_LEVEL": "WARNING",
           **{f"XF_{s.upper()}_PORT": str(p) for s, p in ports.items()}}
    env = {k: v for k, v in env.items() if not k.endswith("_DB_URL")}  # a fresh SQLite system of its own
    env["XF_TOKENS_FILE"] = str(own_tokens.tokens_file)
    children = {}
    started = time.monotonic()
    try:
        nats_server.start()
        asyncio.run(declare_streams(own))  # as admin: only admin may create streams
        log = open(data / "services.log", "ab")  # noqa: SIM115
        for s in SERVICES:
            children[s] = runtime.spawn(s, runtime.service_env(env, own, s), stdout=log, stderr=log)
        urls = {s: f"http://{settings.http_host}:{p}" for s, p in ports.items()}
        for s in SERVICES:
            runtime.wait_healthy(urls[s], children[s], timeout=60)
        print(f"simulating {days} days of {directory.county.name} (seed {seed}, scale {scale}) "
              f"on a fresh system in {data}", flush=True)
        sim = Simulation(Endpoints(urls, nats_server.url, creds_dir=natsauth.creds_dir(own), tokens=api_tokens),
                         directory, plan, seed,
                         progress=lambda line: print(line, flush=True),
                         policy=load_policy(settings.config_dir))
        asyncio.run(sim.run(days, extra_days))
        end = date(plan.year, 1, 1) + timedelta(days=days + extra_days - 1)
        problems = asyncio.run(self_check(sim, end))
        import httpx
        report = httpx.get(f"{urls['scoring']}/api/v1/reports/{plan.year}/report.md", timeout=120,
                           headers=sim.ep.auth("clerk")).text
        print()
        print(report)
        elapsed = time.monotonic() - started
        print(f"{len(sim.cases)} cases, {sim.events_sent} unit and resident commands, "
              f"{sim.refused} refused, in {elapsed:.0f} s")
        print(summary(sim))
        if problems:
            print(f"SELF-CHECK FAILED: {len(problems)} differences", file=sys.stderr)
            for p in problems[:50]:
                print("  " + p, file=sys.stderr)
            return 1
        print("self-check passed: every case is where the simulator left it, each step of the procedure it "
              "took is visible in supervision (case view, timeline, notices) and on the bus, no event lost or "
              "doubled, every petition on a re-reviewed matter refused, and the report's figures equal the "
              "simulator's own counts")
        if stay_up:
            print("\nthe simulated county stays up (Ctrl-C stops it):")
            for s, url in urls.items():
                print(f"  {s:<12} {url}  (API docs {url}/docs)")
            print(f"  NATS         {nats_server.url}", flush=True)
            print(f"  API tokens   {data / 'secrets' / 'first-tokens.txt'} (a clerk's and a supervisor's)", flush=True)
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
