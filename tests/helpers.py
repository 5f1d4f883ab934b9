"""Test helpers: read what reached the stream, wait for a condition, count what a request changed."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats
from nats.errors import TimeoutError as NatsTimeout
from sqlalchemy import Engine, MetaData, func, select

from services.runtime import free_port  # noqa: F401 - tests import it from here
from shared.events import Event, decode

STAFF_ID = "dbk01"  # the staff id of the fixture clients' token (tests/conftest.py ``auth``)
NO_TOKEN = {"Authorization": ""}  # a request of a fixture client without its token
# The tests' keys of the keyed hashes (shared/keys.py): the code has none. A ring, as a rotated
# deployment has: the current key first, an old one kept.
TEST_KEYS = {"id_hash_key": "t2:" + "i" * 40 + ",t1:" + "j" * 40, "query_code_key": "t1:" + "q" * 40}
TEST_KEYS_ENV = {"XF_ID_HASH_KEY": TEST_KEYS["id_hash_key"], "XF_QUERY_CODE_KEY": TEST_KEYS["query_code_key"]}


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a condition (each check is a real query); fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def read_raw_async(url: str, subject: str, stream: str = "CASES") -> list[tuple[dict, bytes]]:
    """Every message stored on ``subject`` (wildcards allowed), as stored, with its headers."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream=stream)
        out: list[tuple[dict, bytes]] = []
        while True:
            try:
                msgs = await sub.fetch(batch=500, timeout=0.5)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                return out
            for m in msgs:
                out.append((dict(m.headers or {}), m.data))
                await m.ack()
            if msgs[-1].metadata.num_pending == 0:
                return out
    finally:
        await nc.close()


def read_raw(url: str, subject: str, stream: str = "CASES") -> list[tuple[dict, bytes]]:
    return asyncio.run(read_raw_async(url, subject, stream))


async def read_subject_async(url: str, subject: str, stream: str = "CASES") -> list[tuple[dict, Event]]:
    """Every message stored on ``subject`` (wildcards allowed), decoded, with its headers."""
    return [(headers, decode(data)) for headers, data in await read_raw_async(url, subject, stream)]


def read_subject(url: str, subject: str, stream: str = "CASES") -> list[tuple[dict, Event]]:
    return asyncio.run(read_subject_async(url, subject, stream))


def outbox_pending(engine: Engine) -> int:
    md = MetaData()
    md.reflect(engine, only=["outbox"])
    t = md.tables["outbox"]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(t.c.sent_at.is_(None))).scalar_one()


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table, and the counters' values: equal before and after means nothing changed."""
    md = MetaData()
    md.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, t in md.tables.items():
            out[name] = conn.execute(select(func.count()).select_from(t)).scalar_one()
        if "counters" in md.tables:
            c = md.tables["counters"]
            out.update({f"counter {r.name}": r.last for r in conn.execute(select(c.c.name, c.c.last))})
    return out


_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(n: int = 1, born: str = "19800101", region: str = "331082") -> str:
    """A valid 18-character resident ID (GB 11643 check character computed), distinct per ``n``."""
    body = f"{region}{born}{n % 1000:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _W)) % 11]


CHANNEL_EXTRAS: dict[str, dict] = {
    "walk_in": {},
    "letter": {},
    "phone": {},
    "online": {},
    "delegated": {"delegation": {"agent_id": "agent001", "service_type": "forestry_logging_permit"}},
    "screening": {},  # needs a drive: tests add drive_id
    "referral": {"referral": {"doc_no": "市信转〔2026〕17号", "from_office": "市信访局"}},
    "night_visit": {},  # needs a visit: tests add visit_id
}


def case_body(channel: str = "walk_in", n: int = 1, **overrides) -> dict:
    body = {
        "channel": channel,
        "resident": {"name": "王建国", "id_number": resident_id(n), "phone": "13812345678"},
        "title": "邻居违规搭建占用公共通道",
        "content": "邻居在村道旁违规搭建棚屋，占用公共通道，影响出行，多次协商未果。",
        "township": "chengguan",
        "village": "chengguan-xinhua",
        "category": "neighbor_dispute",
    }
    body.update(CHANNEL_EXTRAS.get(channel, {}))
    body.update(overrides)
    return body


def start_service(service: str, port: int, env: dict, log_dir) -> "subprocess.Popen":  # noqa: ANN001, F821
    """``xinfang run SERVICE`` as its own process, as a replica runs in production; waits until healthy."""
    import os
    import subprocess

    from services.runtime import spawn, wait_healthy

    log = open(log_dir / f"{service}-{port}.log", "wb")  # noqa: SIM115 - the child owns it
    proc = spawn(service, {**TEST_KEYS_ENV, **os.environ, **env, f"XF_{service.upper()}_PORT": str(port)},
                 stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


def stop_process(proc) -> int:  # noqa: ANN001
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
