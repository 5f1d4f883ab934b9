"""Real parts for every integration test: a nats-server of the test's own (free port, temp store),
and SQLite — plus PostgreSQL when XF_TEST_POSTGRES_URL is set (a fresh schema per test)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.intake.app import create_app
from services.runtime import NatsServer
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
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/intake.db"
        return
    schema = f"xf_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, nats_server: NatsServer, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", nats_url=nats_server.url, intake_db_url=db_url,
                    relay_poll_s=0.1, clerk_token=None, log_level="WARNING")


@pytest.fixture
def intake(settings: Settings) -> Iterator[TestClient]:
    """A fresh intake app, started (migrations, NATS connection, relay) and stopped around the test."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def intake_db(settings: Settings, intake: TestClient) -> Iterator:
    """An engine on intake's database (after the app has migrated it), for looking behind the API."""
    engine = make_engine(settings.db_url("intake"))
    yield engine
    engine.dispose()
