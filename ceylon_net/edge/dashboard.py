"""The admin's web dashboard (``ceylon-admin --dashboard-port``): one page, served from the
package (no CDN: it works offline), kept live by server-sent events. Read-only: it answers GET
only, and with ``--token`` it wants ``?token=...`` on every request.

- ``/``            the page (workers, groups and goals, counts, throughput and latency charts,
                   recent failures)
- ``/api/state``   the same data once, as JSON
- ``/api/stream``  the data every half second, as server-sent events
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger

from ..core.guard import token_ok
from ..errors import ConfigError

PAGE = Path(__file__).with_name("dashboard.html")
STREAM_EVERY = 0.5  # seconds between two updates of an open page
MAX_STREAMS = 32  # pages open at once
MAX_REQUEST = 16 << 10  # bytes of request line and headers
READ_TIMEOUT = 10.0


class Dashboard:
    def __init__(self, view: Callable[[float], dict[str, Any]], token: str | None) -> None:
        self.view = view  # the data, at the given monotonic time
        self.token = token
        self.server: asyncio.Server | None = None
        self.streams = 0
        self._page = PAGE.read_bytes()

    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (0: any free port); returns the port."""
        try:
            self.server = await asyncio.start_server(self._serve, host, port,
                                                     limit=MAX_REQUEST)
        except OSError as exc:
            raise ConfigError(f"--dashboard-port {port}: {exc.strerror}") from None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target = await asyncio.wait_for(_request(reader), READ_TIMEOUT)
            await self._answer(method, target, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ValueError):
            pass  # a broken or slow request: nothing to answer
        finally:
            writer.close()

    async def _answer(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(target)
        if method != "GET":
            return await _send(writer, 405, "text/plain", b"read-only: GET only\n")
        if not token_ok(self.token, parse_qs(url.query).get("token", [""])[0]):
            return await _send(writer, 401, "text/plain",
                               b"this admin wants its token: add ?token=... to the address\n")
        if url.path == "/":
            return await _send(writer, 200, "text/html; charset=utf-8", self._page)
        if url.path == "/api/state":
            return await _send(writer, 200, "application/json", self._json())
        if url.path == "/api/stream":
            return await self._stream(writer)
        await _send(writer, 404, "text/plain", b"not found\n")

    def _json(self) -> bytes:
        return json.dumps({"at": time.time(), **self.view(time.monotonic())},
                          default=str).encode()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if self.streams >= MAX_STREAMS:
            return await _send(writer, 503, "text/plain", b"too many open dashboards\n")
        self.streams += 1
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n")
            while True:
                writer.write(b"data: " + self._json() + b"\n\n")
                await writer.drain()
                await asyncio.sleep(STREAM_EVERY)
        finally:
            self.streams -= 1


async def _request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The request's method and target; its headers are read and ignored."""
    head = await reader.readuntil(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, _ = line.split(" ", 2)
    return method, target


async def _send(writer: asyncio.StreamWriter, status: int, kind: str, body: bytes) -> None:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
              503: "Service Unavailable"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: "
                 f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()


def log_address(host: str, port: int, token: str | None) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "*", "") else host
    logger.info("dashboard on http://{}:{}/{}", shown, port, "?token=..." if token else "")
