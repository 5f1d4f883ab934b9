"""Clerks' clients: cases posted over HTTP (closed loop: C clients as fast as intake answers; open
loop: one case every 1/rate seconds whatever the answers), drive rows in chunks, and the wait until
the system has settled.

Each case has its own ``Idempotency-Key``; after a 503 (with ``Retry-After``) or a connection error
the same body goes again with the same key, as a clerk's client does, until intake answers 201. The
clients are ``bench.http11`` (≈ 1/50 of httpx's CPU per request: the load generator shares the cores).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import text

from bench import http11
from bench.stack import SERVICES, Stack
from shared import subjects


@dataclass
class Posted:
    """What the clients saw: key → case number, each 201's time, its latency from the first attempt."""

    accepted: dict[str, str] = field(default_factory=dict)
    late_s: float = 0.0  # open loop: how far behind its schedule the latest send went
    answered_at: dict[str, float] = field(default_factory=dict)  # case number → time.monotonic() of its 201
    latencies: list[float] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)


async def post_case(client: http11.Client, key: str, body: dict, posted: Posted) -> None:
    """One case, retried with the same key until 201."""
    first = time.monotonic()
    while True:
        try:
            answer = await client.post("/api/v1/cases", body, {"Idempotency-Key": key})
        except OSError:
            posted.answers["connection failed"] += 1
            await asyncio.sleep(0.2)
            continue
        posted.answers[str(answer.status_code)] += 1
        if answer.status_code == 201:
            number = answer.json()["case_number"]
            posted.accepted[key] = number
            posted.answered_at[number] = time.monotonic()
            posted.latencies.append(posted.answered_at[number] - first)
            return
        if answer.status_code != 503:
            raise RuntimeError(f"{key}: {answer.status_code} {answer.text[:300]}")
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))


async def post_all(url: str, headers: dict, keys: list[str], body_of: Callable[[int], dict], clients: int,
                   posted: Posted | None = None) -> Posted:
    """Closed loop: ``clients`` clients post ``keys[i]`` with ``body_of(i)`` as fast as intake answers."""
    posted = posted or Posted()
    todo = list(enumerate(keys))
    http = http11.Client(url, headers, clients)

    async def worker() -> None:
        while todo:
            n, key = todo.pop()
            await post_case(http, key, body_of(n), posted)
    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        await http.aclose()
    return posted


async def post_at_rate(url: str, headers: dict, keys: list[str], body_of: Callable[[int], dict], rate: float,
                       posted: Posted) -> None:
    """Open loop: case ``i`` is sent at ``start + i / rate`` whether or not the earlier ones were answered
    (over at most 256 connections: beyond them a request waits for one)."""
    http = http11.Client(url, headers, 256)
    try:
        start = time.monotonic()
        tasks = []
        for n, key in enumerate(keys):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            posted.late_s = max(posted.late_s, time.monotonic() - (start + n / rate))
            tasks.append(asyncio.create_task(post_case(http, key, body_of(n), posted)))
        await asyncio.gather(*tasks)
    finally:
        await http.aclose()


class Assignments:
    """The first ``CaseAssigned`` of each case as delivered on ``cases.assigned.>`` (a core
    subscription as admin): case number → time.monotonic() of its delivery."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: dict[str, float] = {}

    async def __aenter__(self) -> Assignments:
        self.nc = await self.stack.admin()

        async def delivered(msg) -> None:  # noqa: ANN001
            at = time.monotonic()
            case_id = json.loads(msg.data).get("case_id")
            if case_id is not None:
                self.seen.setdefault(case_id, at)
        await self.nc.subscribe(subjects.wildcard(subjects.ASSIGNED), cb=delivered)
        await self.nc.flush()
        return self

    async def wait_for(self, numbers: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not numbers <= self.seen.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(numbers - self.seen.keys())} of {len(numbers)} cases not assigned "
                                   f"within {timeout:.0f}s")
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()


def scored(stack: Stack) -> int:
    """The cases scoring has counted (a row of facts once their CaseReceived arrived)."""
    with stack.engine("scoring").connect() as conn:
        return conn.execute(text("SELECT count(*) FROM case_facts WHERE received_at IS NOT NULL")).scalar_one()


def routed(stack: Stack) -> int:
    """The cases routing has decided (a lead unit, or triage)."""
    with stack.engine("routing").connect() as conn:
        return conn.execute(text("SELECT count(*) FROM cases")).scalar_one()


def unsent(stack: Stack) -> int:
    out = 0
    for s in SERVICES:
        with stack.engine(s).connect() as conn:
            out += conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one()
    return out


def wait_settled(stack: Stack, count: Callable[[Stack], int], want: int, timeout: float = 1800,
                 counted_only: bool = False) -> float:
    """Until ``count`` reaches ``want``, every durable consumer has nothing pending or unacked
    (JetStream consumer info) and every outbox is drained; the time.monotonic() when all that first
    held (``counted_only``: when ``count`` first reached ``want``)."""
    deadline = time.monotonic() + timeout
    reached = None
    while True:
        now = time.monotonic()
        if reached is None and count(stack) >= want:
            reached = now
        if reached is not None and not unsent(stack) and all(
                lag == (0, 0) for lag in asyncio.run(stack.consumer_lag()).values()):
            return reached if counted_only else now
        if now > deadline:
            raise RuntimeError(f"not settled within {timeout:.0f}s: {count.__name__} {count(stack)} of {want}, "
                               f"lag {asyncio.run(stack.consumer_lag())}, {unsent(stack)} outbox rows unsent")
        time.sleep(0.05)


def open_drive(http: httpx.Client, name: str) -> str:
    """A special drive open today (the services run on the real clock)."""
    today = time.strftime("%Y-%m-%d")
    answer = http.post("/api/v1/drives", json={"kind": "special", "name": name, "starts_on": today,
                                                "ends_on": today})
    if answer.status_code != 201:
        raise RuntimeError(f"POST /api/v1/drives: {answer.status_code} {answer.text[:300]}")
    return answer.json()["drive_id"]


def import_rows(http: httpx.Client, drive_id: str, rows: list[dict], chunk: int, source: str) -> int:
    """Rows sent as ``xinfang import`` sends them (POST /api/v1/drives/{id}/rows, ``chunk`` a request);
    the cases created."""
    created = 0
    for first in range(0, len(rows), chunk):
        part = [{"row": first + i + 1, "values": v} for i, v in enumerate(rows[first:first + chunk])]
        while True:
            answer = http.post(f"/api/v1/drives/{drive_id}/rows", json={"source": source, "rows": part})
            if answer.status_code != 503:
                break
            time.sleep(min(float(answer.headers.get("Retry-After", "1")), 2.0))
        if answer.status_code != 200:
            raise RuntimeError(f"import: {answer.status_code} {answer.text[:300]}")
        report = answer.json()
        if report["errors"]:
            raise RuntimeError(f"import refused rows: {report['errors'][:3]}")
        created += report["created"] + report["already_imported"]
    return created
