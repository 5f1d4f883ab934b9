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
import signal
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
from sqlalchemy import URL

from bench.stack import CONSUMERS, SERVICES, Replica, Stack  # noqa: F401 - the fault matrix imports them from here
from services.runtime import NatsCluster, free_port
from shared.db import sqlite_path
from tests.helpers import STAFF_ID, TEST_KEYS

# Every clock stands still here until a test moves it (XF_MODE=test): a Monday, 09:00 county time.
CLOCK_START = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
# Short waits, so a fault shows in seconds: a killed consumer's messages go to another after
# ACK_WAIT_S, a killed relay's claimed outbox rows are claimed again after the lease.
ACK_WAIT_S = 5


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


class System(Stack):
    schema_prefix = "xf_faults"

    def __init__(self, root: Path, database: str, postgres_url: str | None, nats_users: Path,
                 cluster: bool = False) -> None:
        """``cluster``: a 3-node NATS cluster (NatsCluster, fsync before each ack) instead of one server,
        the streams with 3 replicas, and the services given every node."""
        self.proxy: TcpProxy | None = None
        super().__init__(root, database, postgres_url, nats_users, cluster, keys=TEST_KEYS, staff_id=STAFF_ID)

    def service_target(self, target: URL) -> URL:
        """The services reach PostgreSQL through a proxy a fault can cut."""
        self.proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        self.proxy.start()
        return target.set(host="127.0.0.1", port=self.proxy.port)

    def env(self) -> dict[str, str]:
        return {**super().env(),
                "XF_MODE": "test", "XF_CLOCK_START": CLOCK_START.isoformat(),
                "XF_RELAY_POLL_S": "0.1", "XF_RELAY_LEASE_S": "3", "XF_CONSUMER_ACK_WAIT_S": str(ACK_WAIT_S),
                "XF_SWEEP_INTERVAL_S": "3600"}  # the tests sweep when they mean to

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

    def stopped(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()

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
