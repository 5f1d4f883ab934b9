"""A minimal HTTP/1.1 client for the open-loop load: keep-alive connections, JSON bodies, nothing else.

httpx costs ≈ 2.5 ms of CPU per request here: at 400 requests/s the client alone would need a core and
fall behind its schedule. This one costs a fraction of that; the closed-loop runs keep httpx.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class Answer:
    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> dict:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class Client:
    """POSTs over at most ``connections`` keep-alive connections; a request beyond them waits for one."""

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.free: asyncio.Queue = asyncio.Queue()
        for _ in range(connections):
            self.free.put_nowait(None)  # a slot: None until its connection is opened

    async def post(self, path: str, body: dict, headers: dict[str, str]) -> Answer:
        """One request; OSError (refused, reset) or asyncio.IncompleteReadError when the connection failed."""
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.fixed}"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        conn = await self.free.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(head + data)
            status = await reader.readline()
            fields: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            content = await reader.readexactly(int(fields.get("content-length", "0")))
            if fields.get("connection", "").lower() == "close":
                writer.close()
                conn = None
            return Answer(int(status.split(b" ", 2)[1]), fields, content)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            if conn is not None:
                conn[1].close()
            conn = None
            raise OSError("the connection failed") from None
        finally:
            self.free.put_nowait(conn)

    async def aclose(self) -> None:
        while not self.free.empty():
            conn = self.free.get_nowait()
            if conn is not None:
                conn[1].close()
