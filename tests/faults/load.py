"""The load: clerks' clients posting cases to intake while a fault happens.

Each case has its own ``Idempotency-Key``; on a connection error, a timeout or a 5xx the client
sends the same body with the same key again (after ``Retry-After`` when intake gives one), as a
clerk's client would, until intake answers 201. Every 201 is recorded: the invariants compare them
with what the services stored.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from tests.helpers import case_body

CHANNELS = ["walk_in", "letter", "phone", "online"]
CATEGORIES = ["neighbor_dispute", "wage_arrears", "pollution", "education", "logging_permit", "taxation"]
GIVE_UP_S = 180.0  # a case not accepted after this long is a failure of its own


@dataclass
class Run:
    """One fault's share of the load."""

    fault: str
    minimum: int
    maximum: int | None = None
    accepted: dict[str, str] = field(default_factory=dict)  # Idempotency-Key → case number
    answers: Counter = field(default_factory=Counter)  # "201", "503", "ConnectError", … (every attempt)
    replayed: int = 0  # 201s with Idempotent-Replayed: the first attempt had been stored
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() of each 201
    unexpected: list[str] = field(default_factory=list)  # answers no retry can fix, cases given up
    missing_retry_after: int = 0  # 503s without Retry-After
    posted: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def wait_accepted(self, n: int, timeout: float = 60.0) -> None:
        """Until ``n`` cases of this run were accepted: the fault lands while the load runs."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.fault}: only {len(self.accepted)} of {n} cases accepted "
                                     f"in {timeout:.0f}s; answers {dict(self.answers)}")
            time.sleep(0.05)

    def accepted_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.accepted_at)

    @property
    def retried(self) -> int:
        return sum(self.answers.values()) - len(self.accepted) - len(self.unexpected)


class Load:
    def __init__(self, intake_url: str, headers: dict[str, str], tag: str) -> None:
        self.intake_url, self.headers, self.tag = intake_url, headers, tag
        self.accepted: dict[str, str] = {}  # over every run
        self.runs: list[Run] = []
        self._n = 0

    @contextlib.contextmanager
    def running(self, fault: str, minimum: int = 150, maximum: int | None = None, rate: float = 15.0,
                workers: int = 8) -> Iterator[Run]:
        """Post about ``rate`` cases a second from ``workers`` clients while the block runs, at least
        ``minimum`` and at most ``maximum`` in all; on leaving, wait until every case posted is accepted."""
        run = Run(fault, minimum, maximum)
        self.runs.append(run)
        failure: list[BaseException] = []

        def drive() -> None:
            try:
                asyncio.run(self._drive(run, rate, workers))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failure.append(exc)
        thread = threading.Thread(target=drive, name=f"load {fault}", daemon=True)
        thread.start()
        try:
            yield run
        finally:
            run.stopping.set()
            thread.join(GIVE_UP_S + 60)
            self.accepted.update(run.accepted)
        assert not thread.is_alive(), f"{fault}: the load did not finish"
        if failure:
            raise failure[0]

    async def _drive(self, run: Run, rate: float, workers: int) -> None:
        limits = httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers)
        async with httpx.AsyncClient(base_url=self.intake_url, headers=self.headers, limits=limits,
                                     timeout=httpx.Timeout(60, connect=5)) as client:
            await asyncio.gather(*(self._worker(client, run, workers / rate) for _ in range(workers)))

    async def _worker(self, client: httpx.AsyncClient, run: Run, every_s: float) -> None:
        next_at = time.monotonic()
        while not (run.stopping.is_set() and run.posted >= run.minimum) and run.posted < (run.maximum or 1 << 62):
            self._n += 1  # one event loop: no race
            n = self._n
            run.posted += 1
            key = f"faults-{self.tag}-{n:05d}"
            body = case_body(CHANNELS[n % len(CHANNELS)], n=n, title=f"故障演练第{n}号：{run.fault}"[:60],
                             category=CATEGORIES[n % len(CATEGORIES)], people_count=6 if n % 10 == 0 else 1)
            await self._submit(client, run, key, body)
            next_at += every_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _submit(self, client: httpx.AsyncClient, run: Run, key: str, body: dict) -> None:
        deadline = time.monotonic() + GIVE_UP_S
        backoff = 0.2
        while True:
            try:
                answer = await client.post("/api/v1/cases", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:  # refused, reset, timed out: the same key again
                run.answers[type(exc).__name__] += 1
                delay = backoff
            else:
                run.answers[str(answer.status_code)] += 1
                if answer.status_code == 201:
                    run.accepted[key] = answer.json()["case_number"]
                    run.accepted_at.append(time.monotonic())
                    run.replayed += answer.headers.get("Idempotent-Replayed") == "true"
                    return
                if answer.status_code < 500:
                    run.unexpected.append(f"{key}: {answer.status_code} {answer.text[:300]}")
                    return
                retry_after = answer.headers.get("Retry-After")
                if answer.status_code == 503 and retry_after is None:
                    run.missing_retry_after += 1
                delay = float(retry_after) if retry_after and retry_after.isdigit() else backoff
            if time.monotonic() > deadline:
                run.unexpected.append(f"{key}: not accepted after {GIVE_UP_S:.0f}s; answers {dict(run.answers)}")
                return
            await asyncio.sleep(min(delay, 2.0))
            backoff = min(backoff * 2, 1.0)
