"""The NATS side: one connection per process, the stream declarations, and JetStream publishing.

The connection is the service's FastStream ``NatsBroker``'s: its subscribers (the durable
consumers, ``shared/consumer.py``) run on it, and the outbox relay publishes on the same nats-py
connection directly (FastStream's publish path measured 1.8–2.4× the CPU, FASTSTREAM-NOTES).
Streams are declared here and nowhere else (FASTSTREAM-NOTES: two declarations with different
settings silently update each other; subscribers use ``JStream(name, declare=False)``). A service
starts and serves HTTP without NATS: the broker connects and starts in the background, and the
outbox holds the service's events until the connection is up.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from faststream.nats import NatsBroker
from faststream.nats.security import NatsSecurity, NatsUserPassword
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError
from pydantic import BaseModel

from shared import natsauth, subjects
from shared.settings import Settings

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 5.0


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """The case stream (kept forever: scoring rebuilds from its start) and the dead-letter stream."""
    return [
        StreamConfig(
            name=settings.stream_name, subjects=list(subjects.STREAM_SUBJECTS),
            storage=StorageType.FILE, retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
            max_age=0, max_bytes=-1, max_msgs=-1, duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=subjects.DEAD_LETTER_STREAM, subjects=list(subjects.DEAD_LETTER_SUBJECTS),
            storage=StorageType.FILE, retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
            max_age=90 * 86400.0, max_bytes=-1, max_msgs=-1, duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams, or bring the settings we own back to ours. Idempotent; races tolerated.

    With NATS users (shared/natsauth.py) only ``admin`` may create or update a stream: a service
    finds them declared (``xinfang up`` declares them as admin first). Its attempt is refused by the
    server, which answers nothing, so the request times out: a stream that exists is used as it is,
    with a warning when its settings differ; one that is missing is an error (the bus retries).

    Replicas (XF_STREAM_REPLICAS) are brought to the setting like the rest: raising them (1 → 3 after
    moving to a cluster) makes the new peers copy the whole stream while it keeps serving; lowering
    them (3 → 1) keeps the stream and its messages on one peer and drops the copies on the others
    (nothing is lost, but one server's disk then holds the only copy). A server that is not
    clustered refuses more than 1 replica: an error that says so."""
    for cfg in stream_configs(settings):
        try:
            info = await js.stream_info(cfg.name)
        except NotFoundError:
            try:
                await js.add_stream(cfg)
                log.info("stream created", extra={"fields": {"stream": cfg.name, "replicas": cfg.num_replicas}})
                continue
            except BadRequestError:  # another process created it first
                info = await js.stream_info(cfg.name)
            except (NatsTimeout, asyncio.TimeoutError):
                raise RuntimeError(f"stream {cfg.name} does not exist and this NATS user may not create it "
                                   "(only admin may: `xinfang up` declares the streams as admin)") from None
            except APIError as exc:
                raise _replicas_refused(cfg, exc) from None
        have = info.config
        if (sorted(have.subjects or []) != sorted(cfg.subjects or []) or have.max_age != cfg.max_age
                or have.duplicate_window != cfg.duplicate_window or (have.num_replicas or 1) != cfg.num_replicas):
            log.warning("stream settings differ from the declaration; updating",
                        extra={"fields": {"stream": cfg.name, "replicas": f"{have.num_replicas} -> {cfg.num_replicas}"}})
            try:
                await js.update_stream(cfg)
            except (NatsTimeout, asyncio.TimeoutError):
                log.warning("this NATS user may not update the stream (only admin may); using it as it is",
                            extra={"fields": {"stream": cfg.name}})
            except APIError as exc:
                raise _replicas_refused(cfg, exc) from None


def _replicas_refused(cfg: StreamConfig, exc: APIError) -> Exception:
    """The server's refusal, said in our terms when it is about replicas (error 10074)."""
    if exc.err_code == 10074:
        return RuntimeError(f"stream {cfg.name}: XF_STREAM_REPLICAS={cfg.num_replicas}, but this NATS server is "
                            "not part of a cluster (replicas > 1 need one: deploy/nats/cluster.conf)")
    return exc


async def declare_streams(settings: Settings, creds: Path | None = None) -> None:
    """Connect as admin (``creds``, else XF_NATS_CREDS, else the embedded run's ``admin.json``; none:
    anonymous) and declare the streams: what ``xinfang up`` does before it starts the services."""
    async def quiet(_exc: Exception) -> None:  # nats-py would print a traceback at every attempt
        pass
    # nats-py keeps trying an unreachable server even without reconnects: bounded, one error at the end.
    try:
        nc = await asyncio.wait_for(nats.connect(
            settings.nats_servers, name="xinfang-declare", connect_timeout=5, allow_reconnect=False,
            error_cb=quiet, **natsauth.connect_options(settings, natsauth.ADMIN, creds)), 20)
    except asyncio.TimeoutError:
        raise ConnectionError(f"no NATS server answered at {settings.effective_nats_url} within 20 s") from None
    try:
        await ensure_streams(nc.jetstream(timeout=PUBLISH_TIMEOUT_S), settings)
    finally:
        await nc.close()


def broker_options(options: dict) -> dict:
    """nats.connect keyword arguments (natsauth.connect_options) as NatsBroker takes them."""
    out = {"inbox_prefix": options["inbox_prefix"]} if "inbox_prefix" in options else {}
    if "user" in options:
        out["security"] = NatsUserPassword(options["user"], options["password"], ssl_context=options.get("tls"))
    elif options.get("tls") is not None:
        out["security"] = NatsSecurity(ssl_context=options["tls"])
    return out


class Responder:
    """Answers core NATS requests on ``template`` (``….{unit}``) for every unit, in a queue group so
    one replica answers each. ``answer(unit, raw request)`` runs in a thread and returns the reply
    model; a request it cannot read gets ``malformed(unit)``."""

    def __init__(self, bus: Bus, template: str, queue: str, answer: Callable[[str, bytes], BaseModel]) -> None:
        self.bus, self.template, self.queue, self.answer = bus, template, queue, answer
        self.sub = None

    async def run(self) -> None:
        await self.bus.wait_connected()
        self.sub = await self.bus.nc.subscribe(self.template.format(unit="*"), queue=self.queue, cb=self._respond)

    async def _respond(self, msg) -> None:  # noqa: ANN001
        unit = msg.subject.rsplit(".", 1)[1]
        reply = await asyncio.to_thread(self.answer, unit, msg.data)
        await msg.respond(reply.model_dump_json(exclude_none=True).encode())

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


class Bus:
    """A NATS connection that keeps trying; ``connected`` says whether publishing can work now.

    Once connected it declares the streams, runs ``before_subscribing`` (the durable consumers are
    created or updated there) and starts the broker's subscribers.
    """

    def __init__(self, settings: Settings, name: str, on_connected: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.name = name
        self.on_connected = on_connected
        # Its NATS user: XF_NATS_CREDS, else svc_<name>.json of the embedded run (shared/natsauth.py).
        options = natsauth.connect_options(settings, natsauth.service_user(name))
        self.user = options.get("user")
        # Where this connection's replies and pull deliveries arrive: its user may read only these.
        self.inbox_prefix = (options.get("inbox_prefix", "_INBOX") + ".").encode()
        self.broker = NatsBroker(
            settings.nats_servers, name=name, connect_timeout=2, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, reconnected_cb=self._reconnected,
            disconnected_cb=self._disconnected, error_cb=self._error,
            graceful_timeout=settings.consumer_ack_wait_s, logger=log, log_level=logging.DEBUG,
            **broker_options(options))
        self.before_subscribing: list[Callable[[], Awaitable[None]]] = []
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected and self._ready.is_set()

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._connect_forever())

    def ask(self, subject: str, payload: bytes, timeout: float = 2.0) -> bytes | None:
        """A core NATS request from a worker thread (a synchronous route): the reply's data, or None
        when NATS is down or nobody answered in time."""
        if not self.connected or self.loop is None:
            return None
        future = asyncio.run_coroutine_threadsafe(self.nc.request(subject, payload, timeout=timeout), self.loop)
        try:
            return future.result(timeout + 1).data
        except Exception:  # noqa: BLE001 - no responders, a timeout, a closed connection: no answer
            future.cancel()
            return None

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                nc = await self.broker.connect()
                js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
                await ensure_streams(js, self.settings)
                self.nc, self.js = nc, js
                self._ready.set()
                log.info("connected to NATS", extra={"fields": {"url": self.settings.effective_nats_url}})
                self._notify()
                for hook in self.before_subscribing:
                    await hook()
                await self.broker.start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; HTTP keeps serving meanwhile
                log.warning("NATS not reachable yet", extra={"fields": {"error": repr(exc), "retry_s": delay}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _reconnected(self) -> None:
        log.info("reconnected to NATS")
        self._notify()

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("disconnected from NATS")

    async def _error(self, exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():  # the server refused this user something
            log.warning("NATS refused an operation of this user",
                        extra={"fields": {"user": self.user, "error": str(exc)}})
            return
        log.debug("NATS client error", extra={"fields": {"error": repr(exc)}})

    def _notify(self) -> None:
        if self.on_connected is not None:
            self.on_connected()

    async def publish(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        if self.js is None:
            raise ConnectionError("not connected to NATS")
        await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=PUBLISH_TIMEOUT_S)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()  # still connecting or starting the broker: wait until it has given up
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)
        for sub in self.broker.subscribers:  # any that started after the consumers were told to stop
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.stop(), 5)
        if self.nc is not None and not self.nc.is_closed:
            # The consumers have stopped and acked and the relay has stopped: flush what is buffered
            # and close (not the broker's drain(), which can wait out an open fetch).
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            await self.nc.close()
