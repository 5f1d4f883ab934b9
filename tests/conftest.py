"""Real parts for every integration test: a nats-server of the test's own (free port, temp store),
and SQLite — plus PostgreSQL when XF_TEST_POSTGRES_URL is set (a fresh schema per test)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.runtime import NatsServer, app_factory
from shared.clock import ManualClock, SystemClock
from shared.db import make_engine
from shared.settings import Settings
from tests.helpers import STAFF_ID, TEST_KEYS, free_port, wait_until

POSTGRES_URL = os.environ.get("XF_TEST_POSTGRES_URL")

# Property tests and the schema fuzzing draw the same examples on every run (a red CI names a real
# input, never a lucky draw); XF_HYPOTHESIS_RANDOM=1 explores new ones.
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("xinfang", derandomize=not os.environ.get("XF_HYPOTHESIS_RANDOM"), database=None)
hypothesis_settings.load_profile("xinfang")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``one_database`` checks what happens before any database is touched (a file's
    encoding, a keyboard's digits, a body that is not UTF-8), or a path another test already runs on
    PostgreSQL: it runs on SQLite only, which keeps `make test` within its time."""
    items[:] = [item for item in items if not (item.get_closest_marker("one_database") and getattr(
        item, "callspec", None) is not None and item.callspec.params.get("database") == "postgres")]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """service → database URL: a SQLite file each, or a fresh PostgreSQL schema each."""
    urls: dict[str, str] = {}
    admin = make_engine(POSTGRES_URL) if request.param == "postgres" else None

    def url_for(service: str) -> str:
        if service not in urls:
            if admin is None:
                urls[service] = f"sqlite:///{tmp_path}/{service}.db"
            else:
                schema = f"xf_test_{uuid.uuid4().hex[:12]}_{service}"
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                sep = "&" if "?" in POSTGRES_URL else "?"
                urls[service] = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
        return urls[service]

    yield url_for
    if admin is not None:
        with admin.begin() as conn:
            for url in urls.values():
                conn.execute(text(f'DROP SCHEMA "{url.rsplit("%3D", 1)[1]}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db_url(database: Callable[[str], str]) -> str:
    """intake's database."""
    return database("intake")


@pytest.fixture
def settings(tmp_path: Path, nats_server: NatsServer, database: Callable[[str], str]) -> Settings:
    return Settings(data_dir=tmp_path / "var", nats_url=nats_server.url, intake_db_url=database("intake"),
                    routing_db_url=database("routing"), supervision_db_url=database("supervision"),
                    scoring_db_url=database("scoring"),
                    relay_poll_s=0.1, log_level="WARNING", **TEST_KEYS)


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    """The fixture clients' ``Authorization`` header: a token in the test's own token store
    (``<data_dir>/secrets/tokens.json``) with the clerk, supervisor and ops roles and staff id
    ``STAFF_ID``, so a test reaches every route it needs through one client. Only tests combine these
    roles in one token; ``xinfang token create`` makes single-role ones (``shared/tokens.py``)."""
    from shared import tokens

    _, secret = tokens.create(settings, ["clerk", "supervisor", "ops"], staff_id=STAFF_ID, note="the tests' clients")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def token(settings: Settings) -> Callable[..., dict[str, str]]:
    """More tokens in the test's store, as headers: ``token("unit", unit="forestry")``."""
    from shared import tokens

    def make(role: str, **bound: str) -> dict[str, str]:
        _, secret = tokens.create(settings, role, **bound)
        return {"Authorization": f"Bearer {secret}"}
    return make


def running(service: str, settings: Settings, headers: dict[str, str] | None = None,
            **kw) -> Iterator[TestClient]:  # noqa: ANN003
    """A fresh app of ``service``, started (migrations, NATS, relay, consumers) and stopped around a
    test; its client sends ``headers`` (the fixtures: ``auth``) with every request."""
    with TestClient(app_factory(service)(settings, **kw), headers=headers) as client:
        if _nats_answers(settings):  # the bus connects in the background: a test's first request needs it
            wait_until(lambda: client.app.state.bus.connected, timeout=30, what=f"{service} to connect to NATS")
        yield client


def _nats_answers(settings: Settings) -> bool:
    from urllib.parse import urlparse

    from services.runtime import port_open
    url = urlparse(settings.nats_servers[0])
    return port_open(url.port or 4222, url.hostname or "127.0.0.1")


def engine_of(service: str, settings: Settings) -> Iterator:
    """An engine on a service's database (after its app has migrated it), to look behind the API."""
    engine = make_engine(settings.db_url(service))
    yield engine
    engine.dispose()


@pytest.fixture
def intake(settings: Settings, auth: dict[str, str]) -> Iterator[TestClient]:
    yield from running("intake", settings, auth)


@pytest.fixture
def intake_db(settings: Settings, intake: TestClient) -> Iterator:
    yield from engine_of("intake", settings)


@pytest.fixture
def routing(settings: Settings, auth: dict[str, str]) -> Iterator[TestClient]:
    yield from running("routing", settings, auth)


@pytest.fixture
def routing_db(settings: Settings, routing: TestClient) -> Iterator:
    yield from engine_of("routing", settings)


@pytest.fixture
def clock() -> ManualClock:
    """Supervision's clock in tests: it starts now and moves only when a test moves it."""
    return ManualClock(SystemClock().now())


@pytest.fixture
def supervision(settings: Settings, clock: ManualClock, auth: dict[str, str]) -> Iterator[TestClient]:
    yield from running("supervision", settings, auth, clock=clock)


@pytest.fixture
def supervision_db(settings: Settings, supervision: TestClient) -> Iterator:
    yield from engine_of("supervision", settings)


@pytest.fixture
def scoring(settings: Settings, auth: dict[str, str]) -> Iterator[TestClient]:
    yield from running("scoring", settings, auth)


@pytest.fixture
def resident_steps_allowed(nats_server: NatsServer) -> Iterator[list[dict]]:
    """Supervision's answer to intake's ``resident_step.intake`` stood in for, for tests of intake's
    own rules on a resident's feedback or review request: every step fits the case. Yields the
    questions intake asked. (Supervision's real answers: tests/test_resident_steps.py.)"""
    import asyncio
    import json
    import threading

    import nats

    from shared import events as ev
    from shared import subjects

    asked: list[dict] = []
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()

    async def answer() -> None:
        nc = await nats.connect(nats_server.url)

        async def reply(msg) -> None:  # noqa: ANN001
            query = json.loads(msg.data)
            asked.append(query)
            await msg.respond(ev.ResidentStepAnswer(case_id=query["case_id"], known=True, allowed=True,
                                                    state="replied").model_dump_json().encode())
        await nc.subscribe(subjects.RESIDENT_STEP_QUERY, cb=reply)
        await nc.flush()
        ready.set()
        await stop.wait()
        await nc.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(answer(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the stand-in for supervision did not connect"
    yield asked
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
