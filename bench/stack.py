"""The system as processes, for the bench and the fault matrix (tests/faults/system.py adds its levers).

A :class:`Stack` is a nats-server (or a 3-node cluster) with the generated NATS users (the services
connect as ``svc_<service>``, the stack's own checks as ``admin``: only admin may create or delete a
stream), and the four services as real processes (``xinfang run SERVICE``), each with its own SQLite
file or PostgreSQL schema, as production runs them.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
from sqlalchemy import URL, Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from services.runtime import NatsCluster, NatsServer, free_port, spawn, wait_healthy
from shared import natsauth, tokens
from shared.bus import declare_streams
from shared.db import make_engine, normalize_url, sqlite_path
from shared.settings import Settings

SERVICES = ("intake", "routing", "supervision", "scoring")
CONSUMERS = ("routing", "supervision", "scoring")  # each has a durable consumer named after it


@dataclass
class Replica:
    service: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def nats_users(data_dir: Path) -> Path:
    """The NATS users generated from the directory (bcrypt is slow on purpose: once per run); a
    :class:`Stack` copies them."""
    natsauth.ensure(Settings(data_dir=data_dir))
    return natsauth.creds_dir(Settings(data_dir=data_dir))


def with_schema(url: str, schema: str) -> str:
    """A PostgreSQL URL whose connections use ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


class Stack:
    schema_prefix = "xf_bench"

    def __init__(self, root: Path, database: str, postgres_url: str | None, nats_users: Path,
                 cluster: bool = False, keys: dict[str, str] | None = None, staff_id: str = "bench") -> None:
        """``cluster``: a 3-node NATS cluster (NatsCluster, fsync before each ack) instead of one server,
        the streams with 3 replicas, and the services given every node. ``keys``: the keyed hashes'
        keys as Settings names them (``id_hash_key``, ``query_code_key``); fresh ones when not given."""
        self.root, self.database = root, database
        self.data_dir = root / "var"
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The users' files where every process of this system finds its own (shared/natsauth.py).
        creds = natsauth.creds_dir(Settings(data_dir=self.data_dir))
        creds.mkdir(parents=True, exist_ok=True)
        for f in nats_users.iterdir():
            (creds / f.name).write_bytes(f.read_bytes())
            (creds / f.name).chmod(0o600)
        self.nats: NatsServer | NatsCluster = (
            NatsCluster(root / "nats", *([free_port() for _ in range(3)] for _ in range(3)),
                        auth_conf=creds / natsauth.AUTH_CONF) if cluster
            else NatsServer(root / "nats", free_port(), auth_conf=creds / natsauth.AUTH_CONF))
        self.replicas_of_streams = 3 if cluster else 1
        self.keys = keys or {"id_hash_key": f"b1:{uuid.uuid4().hex}{uuid.uuid4().hex}",
                             "query_code_key": f"b1:{uuid.uuid4().hex}{uuid.uuid4().hex}"}
        self._schemas: list[str] = []
        self.postgres_url: str | None = None
        self._admin_engine: Engine | None = None
        # What the services are given, and what the checks read directly (past any proxy).
        self.service_urls: dict[str, str] = {}
        self.check_urls: dict[str, str] = {}
        if database == "postgres":
            self._postgres(postgres_url)
        else:
            for s in SERVICES:
                self.service_urls[s] = self.check_urls[s] = f"sqlite:///{root / 'db' / s}.db"
            (root / "db").mkdir(exist_ok=True)
        self.settings = Settings(data_dir=self.data_dir, nats_url=self.nats.url, log_level="WARNING",
                                 stream_replicas=self.replicas_of_streams,
                                 **{f"{s}_db_url": u for s, u in self.check_urls.items()}, **self.keys)
        self.ports = {s: free_port() for s in SERVICES}
        self.replicas: dict[str, list[Replica]] = {s: [] for s in SERVICES}
        self._engines: dict[str, Engine] = {}
        _, secret = tokens.create(self.settings, ["clerk", "supervisor", "ops"], staff_id=staff_id,
                                  note="the stack's own clients")
        self.token = secret
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.http = httpx.Client(headers=self.headers, timeout=120)

    def _postgres(self, url: str | None) -> None:
        """A fresh schema per service."""
        assert url, "no PostgreSQL URL given"
        self._admin_engine = make_engine(url)
        target = make_url(normalize_url(url))
        served = self.service_target(target).render_as_string(hide_password=False)
        direct = target.render_as_string(hide_password=False)
        self.postgres_url = direct
        tag = uuid.uuid4().hex[:10]
        for s in SERVICES:
            schema = self.create_schema(f"{self.schema_prefix}_{tag}_{s}")
            self.service_urls[s] = with_schema(served, schema)
            self.check_urls[s] = with_schema(direct, schema)

    def create_schema(self, schema: str) -> str:
        """A fresh PostgreSQL schema, dropped with the others at ``stop``."""
        assert self._admin_engine is not None
        with self._admin_engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        self._schemas.append(schema)
        return schema

    def service_target(self, target: URL) -> URL:
        """Where the services reach PostgreSQL (the fault matrix puts a proxy there)."""
        return target

    # --- starting and stopping ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
        return {**env, **{f"XF_{k.upper()}": v for k, v in self.keys.items()},
                "XF_NATS_URL": self.nats.url, "XF_STREAM_REPLICAS": str(self.replicas_of_streams),
                "XF_DATA_DIR": str(self.data_dir), "XF_LOG_LEVEL": "WARNING",
                **{f"XF_{s.upper()}_DB_URL": u for s, u in self.service_urls.items()}}

    def start(self) -> None:
        self.nats.start()
        self.declare_streams()  # as admin, before the services look for them (what `xinfang up` does)
        self.start_replicas(list(SERVICES))

    def start_replicas(self, services: list[str], new_ports: bool = False) -> list[Replica]:
        """One more replica of each of ``services`` (on its usual port unless ``new_ports``); healthy when returned."""
        started = []
        for service in services:
            port = free_port() if new_ports else self.ports[service]
            with open(self.log_dir / f"{service}-{port}.log", "ab") as log:
                proc = spawn(service, {**self.env(), f"XF_{service.upper()}_PORT": str(port)},
                             stdout=log, stderr=subprocess.STDOUT)
            started.append(Replica(service, port, proc))
        for r in started:
            wait_healthy(r.url, r.proc, timeout=120)  # routing loads its models: long on a busy machine
            self.replicas[r.service].append(r)
        return started

    def stop_replica(self, replica: Replica, timeout: float = 30) -> None:
        """SIGTERM: it drains."""
        if replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGTERM)
        try:
            replica.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait()
        if replica in self.replicas[replica.service]:
            self.replicas[replica.service].remove(replica)

    def stop(self, keep_databases: bool = False) -> None:
        """Stop every process (SIGTERM: they drain), then drop the PostgreSQL schemas unless kept."""
        self.http.close()
        for service in reversed(SERVICES):
            for r in self.replicas[service]:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in list(self.replicas[service]):
                self.stop_replica(r)
        self.nats.stop()
        for engine in self._engines.values():
            engine.dispose()
        self.stopped()
        if self._admin_engine is not None and keep_databases:
            print(f"\nPostgreSQL schemas kept: {', '.join(self._schemas)}")
        elif self._admin_engine is not None:
            with self._admin_engine.begin() as conn:
                for schema in self._schemas:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            self._admin_engine.dispose()

    def stopped(self) -> None:
        """After the processes, before the schemas are dropped (the fault matrix stops its proxy)."""

    # --- looking --------------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return self.replicas[service][0].url

    def engine(self, service: str) -> Engine:
        """A reading engine on a service's database, past any proxy. On SQLite a plain one: the
        services' engines take the write lock at every BEGIN, a check must not."""
        if service not in self._engines:
            url = normalize_url(self.check_urls[service])
            self._engines[service] = (create_engine(url, poolclass=NullPool) if sqlite_path(url)
                                      else make_engine(url))
        return self._engines[service]

    def pids(self) -> dict[str, list[int]]:
        """Each service's replicas' process ids, and the NATS server's (nodes')."""
        out = {s: [r.proc.pid for r in self.replicas[s] if r.proc.poll() is None] for s in SERVICES}
        nodes = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats]
        out["nats-server"] = [n.proc.pid for n in nodes if n.proc is not None]
        return out

    # --- the bus, as admin ----------------------------------------------------------------------

    async def admin(self) -> nats.aio.client.Client:
        return await nats.connect(self.settings.nats_servers, name="xinfang-stack", connect_timeout=5,
                                  allow_reconnect=False,
                                  **natsauth.connect_options(self.settings, natsauth.ADMIN))

    def declare_streams(self) -> None:
        asyncio.run(declare_streams(self.settings))

    async def consumer_lag(self) -> dict[str, tuple[int, int]]:
        """durable → (num_pending, num_ack_pending); (-1, -1) when it cannot be read."""
        nc = await self.admin()
        try:
            js = nc.jetstream(timeout=5)
            out = {}
            for durable in CONSUMERS:
                try:
                    info = await js.consumer_info(self.settings.stream_name, durable)
                    out[durable] = (info.num_pending, info.num_ack_pending)
                except Exception:  # noqa: BLE001 - not there (yet), or NATS away: not caught up
                    out[durable] = (-1, -1)
            return out
        finally:
            await nc.close()
