"""A round-robin TCP balancer in front of intake's replicas, as a county's load balancer (nginx
``stream``, HAProxy in TCP mode, a Kubernetes Service) puts one address before them.

Each new client connection goes to the next replica in turn and stays there (an HTTP keep-alive
connection is pinned, as with any L4 balancer). A replica that refuses the connection (killed, not
started yet) is skipped for the next one, as nginx's ``proxy_next_upstream`` does; a connection that
was open on a replica when it died is simply cut, and the client retries (its Idempotency-Key makes
that safe). It runs in a thread of its own, so the test's blocking code can drive the faults.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter

from services.runtime import free_port


class RoundRobin:
    def __init__(self, backends: list[int]) -> None:
        self.port = free_port()
        self.backends = list(backends)  # the replicas' ports, in turn; replaced whole by set_backends
        self.connections: Counter[int] = Counter()  # backend port → client connections it was given
        self.skipped = 0  # connections a refusing backend passed on to the next
        # Open connections: id → [backend port, the path of the last request line seen on it, whether
        # its answer is still awaited], so a test can find the replica serving a request (and kill it).
        self.live: dict[int, list] = {}
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="round-robin", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=512), self._loop).result(10)

    def set_backends(self, backends: list[int]) -> None:
        self.backends = list(backends)

    def serving(self, path_part: str) -> set[int]:
        """The backends working on a request whose path contains ``path_part`` (sent, not yet answered)."""
        return {port for port, path, waiting in list(self.live.values()) if waiting and path_part in path}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backends = self.backends
        first = next(self._turn)
        for i in range(len(backends)):
            port = backends[(first + i) % len(backends)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            except (OSError, asyncio.TimeoutError):
                self.skipped += 1
                continue
            self.connections[port] += 1
            self.live[id(writer)] = entry = [port, "", False]
            try:
                await asyncio.gather(_pipe(reader, up_writer, writer, entry, asking=True),
                                     _pipe(up_reader, writer, up_writer, entry))
            except asyncio.CancelledError:  # stop(): asyncio's stream callback would log a cancelled handler
                for w in (writer, up_writer):
                    w.transport.abort()
            finally:
                self.live.pop(id(writer), None)
            return
        writer.transport.abort()  # no replica answers: the client sees a reset and retries

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ")


async def _pipe(reader: asyncio.StreamReader, to: asyncio.StreamWriter, back: asyncio.StreamWriter,
                entry: list | None = None, asking: bool = False) -> None:
    """Bytes one way. ``entry``: the connection's [port, path, waiting]; ``asking``: the client's side."""
    try:
        while data := await reader.read(65536):
            if entry is not None and asking and data.startswith(_METHODS):  # a request line: note its path
                entry[1], entry[2] = data.split(b" ", 2)[1].decode("latin-1"), True
            elif entry is not None and not asking:  # the answer is coming
                entry[2] = False
            to.write(data)
            await to.drain()
    except (ConnectionError, OSError):
        pass
    finally:  # one side gone: the whole connection is gone, as a balancer does
        for w in (to, back):
            w.transport.abort()
