"""The simulator knows what it did: it checks the system's answers against its own record."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

import httpx

from services.simulator.runner import Simulation

FINAL = {"closed", "archived"}


def expected_state(sim: Simulation, case_id: str, end: date) -> set[str]:
    """The states the simulator's own actions leave a case in at ``end``."""
    c = sim.cases[case_id]
    if not c.replies:
        return {"signed", "in_progress"} if c.signed else {"assigned"}
    if c.review_pending:
        return {"reopened"}
    if c.answer is True:
        return FINAL
    # No feedback: supervision closes it the day after the window's last day.
    if c.answer is None and c.last_reply + timedelta(days=sim.feedback_days + 1) <= end:
        return FINAL
    return {"replied"}


async def self_check(sim: Simulation, end: date) -> list[str]:
    problems: list[str] = []
    http = sim.http = httpx.AsyncClient(timeout=120, headers=sim.ep.auth("clerk"))
    sup = sim.ep.urls["supervision"]
    try:
        for case_id in sim.cases:
            answer = await http.get(f"{sup}/api/v1/cases/{case_id}")
            state = answer.json()["state"] if answer.status_code == 200 else "unknown to supervision"
            if state not in expected_state(sim, case_id, end):
                problems.append(f"{case_id}: {state}, expected {' or '.join(sorted(expected_state(sim, case_id, end)))}")
        year = sim.plan.year
        report = (await http.get(f"{sim.ep.urls['scoring']}/api/v1/reports/{year}")).json()
        mine = [c for c in sim.cases.values() if c.received.year == year]
        closed = [c for c in mine if expected_state(sim, c.case_id, end) == FINAL]
        own = {"received": len(mine), "closed": len(closed),
               "reviews": sum(c.reviews for c in mine),
               "with_feedback": sum(bool(c.feedback) for c in mine),
               "satisfied": sum(bool(c.feedback) and c.feedback[-1] for c in mine)}
        for key, value in own.items():
            if report["figures"][key] != value:
                problems.append(f"report {key} = {report['figures'][key]}, the simulator counted {value}")
        by_channel = Counter(c.channel for c in mine)
        for channel, n in by_channel.items():
            if report["channels"][channel]["received"] != n:
                problems.append(f"report {channel} received = {report['channels'][channel]['received']}, counted {n}")
    finally:
        await http.aclose()
    problems += await _stream_check(sim)
    return problems


async def _stream_check(sim: Simulation) -> list[str]:
    """Every filed case has exactly one CaseReceived in the stream; no event id twice."""
    import nats

    nc = await nats.connect(sim.ep.nats_url, **sim.ep.nats_options("admin"))
    js = nc.jetstream()
    sub = await js.pull_subscribe("cases.received", stream=sim.ep.stream)
    seen: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    from nats.errors import TimeoutError as NatsTimeout

    from shared.events import decode
    while True:
        try:
            msgs = await sub.fetch(1000, timeout=1)
        except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
            break
        for m in msgs:
            e = decode(m.data)
            seen[e.case_id] += 1
            ids[e.event_id] += 1
            await m.ack()
        if msgs[-1].metadata.num_pending == 0:
            break
    await nc.close()
    problems = [f"{c}: {n} CaseReceived" for c, n in seen.items() if n != 1]
    problems += [f"{c}: never received" for c in sim.cases if c not in seen]
    problems += [f"event {i} stored {n} times" for i, n in ids.items() if n != 1]
    return problems
