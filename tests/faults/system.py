"""The system the faults are injected into, and the levers they pull.

One :class:`System` per database run: a nats-server with the generated NATS users (the services
connect as ``svc_<service>``, the test as ``admin``: only admin may create or delete a stream), the
four services as real processes (``xinfang run SERVICE``) in test mode (``PUT /api/v1/clock``
exists), each with its own SQLite file or PostgreSQL schema. The levers: SIGKILL and restart of a
replica or of the nats-server (same port, same store), more replicas, a database outage (a TCP
proxy cut between the services and PostgreSQL; an exclusive lock on SQLite files), the clocks,
the sweep, readiness, and the bus as admin.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import nats
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from services.runtime import NatsCluster, NatsServer, free_port, spawn, wait_healthy
from shared import natsauth, tokens
from shared.bus import declare_streams
from shared.db import make_engine, normalize_url, sqlite_path
from shared.settings import Settings
from tests.helpers import STAFF_ID, TEST_KEYS, TEST_KEYS_ENV

SERVICES = ("intake", "routing", "supervision", "scoring")
CONSUMERS = ("routing", "supervision", "scoring")  # each has a durable consumer named after it
# Every clock stands still here until a test moves it (XF_MODE=test): a Monday, 09:00 county time.
CLOCK_START = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
# Short waits, so a fault shows in seconds: a killed consumer's messages go to another after
# ACK_WAIT_S, a killed relay's claimed outbox rows are claimed again after the lease.
ACK_WAIT_S = 5


@dataclass
class Replica:
    service: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class TcpProxy:
    """A TCP relay in front of PostgreSQL, in a thread of its own. ``cut()`` drops every connection
    and refuses new ones (accepted, then reset) until ``restore()``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", self.port))

    def _call(self, coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, to: asyncio.StreamWriter, back: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                to.write(data)
                await to.drain()
        except (ConnectionError, OSError):
            pass
        finally:  # one side gone: the connection is gone
            for w in (to, back):
                w.transport.abort()
                self._open.discard(w)

    async def _drop_all(self) -> None:
        for w in list(self._open):
            w.transport.abort()
        self._open.clear()

    def cut(self) -> None:
        self._cut = True
        self._call(self._drop_all())

    def restore(self) -> None:
        self._cut = False

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            await self._drop_all()
            pipes = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pipes:
                t.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class System:
    def __init__(self, root: Path, database: str, postgres_url: str | None, nats_users: Path,
                 cluster: bool = False) -> None:
        """``cluster``: a 3-node NATS cluster (NatsCluster, fsync before each ack) instead of one server,
        the streams with 3 replicas, and the services given every node."""
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
        self.proxy: TcpProxy | None = None
        self._schemas: list[str] = []
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
                                 **{f"{s}_db_url": u for s, u in self.check_urls.items()}, **TEST_KEYS)
        self.ports = {s: free_port() for s in SERVICES}
        self.replicas: dict[str, list[Replica]] = {s: [] for s in SERVICES}
        self._engines: dict[str, Engine] = {}
        _, secret = tokens.create(self.settings, ["clerk", "supervisor", "ops"], staff_id=STAFF_ID,
                                  note="the fault matrix's clients")
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.http = httpx.Client(headers=self.headers, timeout=120)

    def _postgres(self, url: str | None) -> None:
        """A fresh schema per service, reached by the services through a proxy a fault can cut."""
        assert url, "XF_TEST_POSTGRES_URL is not set"
        self._admin_engine = make_engine(url)
        target = make_url(normalize_url(url))
        self.proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        self.proxy.start()
        proxied = target.set(host="127.0.0.1", port=self.proxy.port).render_as_string(hide_password=False)
        direct = target.render_as_string(hide_password=False)
        tag = uuid.uuid4().hex[:10]
        for s in SERVICES:
            schema = f"xf_faults_{tag}_{s}"
            with self._admin_engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            self._schemas.append(schema)
            option = f"options=-csearch_path%3D{schema}"
            self.service_urls[s] = f"{proxied}{'&' if '?' in proxied else '?'}{option}"
            self.check_urls[s] = f"{direct}{'&' if '?' in direct else '?'}{option}"

    # --- starting and stopping ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
        return {**TEST_KEYS_ENV, **env,
                "XF_NATS_URL": self.nats.url, "XF_STREAM_REPLICAS": str(self.replicas_of_streams),
                "XF_DATA_DIR": str(self.data_dir), "XF_LOG_LEVEL": "WARNING",
                **{f"XF_{s.upper()}_DB_URL": u for s, u in self.service_urls.items()},
                "XF_MODE": "test", "XF_CLOCK_START": CLOCK_START.isoformat(),
                "XF_RELAY_POLL_S": "0.1", "XF_RELAY_LEASE_S": "3", "XF_CONSUMER_ACK_WAIT_S": str(ACK_WAIT_S),
                "XF_SWEEP_INTERVAL_S": "3600"}  # the tests sweep when they mean to

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
            wait_healthy(r.url, r.proc, timeout=60)
            self.replicas[r.service].append(r)
        return started

    def kill(self, replica: Replica) -> None:
        """SIGKILL: no draining, no acks, no last outbox run."""
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(10)
        self.replicas[replica.service].remove(replica)

    def kill_nats(self, node: int = 0) -> None:
        """SIGKILL the nats-server (of a cluster: its ``node``-th node)."""
        server = self.nats.nodes[node] if isinstance(self.nats, NatsCluster) else self.nats
        assert server.proc is not None
        server.kill()

    def start_nats(self, node: int = 0) -> None:
        """The same port, the same store (a cluster's node rejoins; it catches up from the others)."""
        (self.nats.nodes[node] if isinstance(self.nats, NatsCluster) else self.nats).start()

    def stop(self, keep_databases: bool = False) -> None:
        """Stop every process (SIGTERM: they drain), then drop the PostgreSQL schemas unless kept."""
        self.http.close()
        for service in reversed(SERVICES):
            for r in self.replicas[service]:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in self.replicas[service]:
                try:
                    r.proc.wait(30)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
        self.nats.stop()
        for engine in self._engines.values():
            engine.dispose()
        if self.proxy is not None:
            self.proxy.stop()
        if self._admin_engine is not None and keep_databases:
            print(f"\nfault matrix: PostgreSQL schemas kept: {', '.join(self._schemas)}")
        elif self._admin_engine is not None:
            with self._admin_engine.begin() as conn:
                for schema in self._schemas:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            self._admin_engine.dispose()

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

    def readiness(self, service: str) -> list[int]:
        """The /readyz status of each replica of ``service`` (0: no answer)."""
        out = []
        for r in self.replicas[service]:
            try:
                out.append(httpx.get(f"{r.url}/readyz", timeout=5).status_code)
            except httpx.HTTPError:
                out.append(0)
        return out

    # --- moving ---------------------------------------------------------------------------------

    def set_clocks(self, when: datetime) -> None:
        for service in SERVICES:
            for r in self.replicas[service]:
                answer = self.http.put(f"{r.url}/api/v1/clock", json={"now": when.isoformat()})
                assert answer.status_code == 200, f"{service}: PUT /api/v1/clock: {answer.status_code} {answer.text}"

    def sweep(self) -> dict:
        answer = self.http.post(f"{self.url('supervision')}/api/v1/sweep", timeout=300)
        assert answer.status_code == 200, f"POST /api/v1/sweep: {answer.status_code} {answer.text}"
        return answer.json()

    @contextlib.contextmanager
    def database_outage(self) -> Iterator[None]:
        """PostgreSQL: the proxy cut (every service loses its database). SQLite: an exclusive lock
        on intake's and routing's files, as a stuck writer or a backup tool would hold it."""
        if self.proxy is not None:
            self.proxy.cut()
            try:
                yield
            finally:
                self.proxy.restore()
            return
        holders = []
        try:
            for service in ("intake", "routing"):
                conn = sqlite3.connect(sqlite_path(self.check_urls[service]), timeout=60, isolation_level=None)
                conn.execute("BEGIN EXCLUSIVE")
                holders.append(conn)
            yield
        finally:
            for conn in holders:
                conn.execute("ROLLBACK")
                conn.close()

    # --- the bus, as admin ----------------------------------------------------------------------

    async def admin(self) -> nats.aio.client.Client:
        return await nats.connect(self.settings.nats_servers, name="xinfang-faults", connect_timeout=5,
                                  allow_reconnect=False,
                                  **natsauth.connect_options(self.settings, natsauth.ADMIN))

    def declare_streams(self) -> None:
        asyncio.run(declare_streams(self.settings))

    def publish(self, subject: str, data: bytes, msg_id: str) -> None:
        async def go() -> None:
            nc = await self.admin()
            try:
                await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=5)
            finally:
                await nc.close()
        asyncio.run(go())

    def delete_stream(self, name: str) -> None:
        async def go() -> None:
            nc = await self.admin()
            try:
                await nc.jetstream().delete_stream(name)
            finally:
                await nc.close()
        asyncio.run(go())
