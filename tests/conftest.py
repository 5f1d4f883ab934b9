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
from tests.helpers import free_port

POSTGRES_URL = os.environ.get("XF_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


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
                    relay_poll_s=0.1, clerk_token=None, log_level="WARNING")


def running(service: str, settings: Settings, **kw) -> Iterator[TestClient]:  # noqa: ANN003
    """A fresh app of ``service``, started (migrations, NATS, relay, consumers) and stopped around a test."""
    with TestClient(app_factory(service)(settings, **kw)) as client:
        yield client


def engine_of(service: str, settings: Settings) -> Iterator:
    """An engine on a service's database (after its app has migrated it), to look behind the API."""
    engine = make_engine(settings.db_url(service))
    yield engine
    engine.dispose()


@pytest.fixture
def intake(settings: Settings) -> Iterator[TestClient]:
    yield from running("intake", settings)


@pytest.fixture
def intake_db(settings: Settings, intake: TestClient) -> Iterator:
    yield from engine_of("intake", settings)


@pytest.fixture
def routing(settings: Settings) -> Iterator[TestClient]:
    yield from running("routing", settings)


@pytest.fixture
def routing_db(settings: Settings, routing: TestClient) -> Iterator:
    yield from engine_of("routing", settings)


@pytest.fixture
def clock() -> ManualClock:
    """Supervision's clock in tests: it starts now and moves only when a test moves it."""
    return ManualClock(SystemClock().now())


@pytest.fixture
def supervision(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    yield from running("supervision", settings, clock=clock)


@pytest.fixture
def supervision_db(settings: Settings, supervision: TestClient) -> Iterator:
    yield from engine_of("supervision", settings)


@pytest.fixture
def scoring(settings: Settings) -> Iterator[TestClient]:
    yield from running("scoring", settings)
