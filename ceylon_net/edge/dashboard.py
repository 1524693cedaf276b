"""The admin's web dashboard (``ceylon-admin --dashboard-port``): one page, served from the
package (no CDN: it works offline), kept live by server-sent events. Read-only: it answers GET
and HEAD only, and with ``--token`` it wants ``?token=...`` on every request.

- ``/``            the page (workers, groups and goals, counts, throughput and latency charts,
                   recent failures)
- ``/api/state``   the same data once, as JSON, with the charts' last five minutes
- ``/api/stream``  the data as server-sent events, within a tenth of a second of a change
                   (a task assigned or finished, a worker in or out) and at least once a
                   second; the first with the charts' last five minutes, then each with the
                   points that are new

The admin samples its totals once a second while the dashboard is on, so a page opened late
still shows the minutes before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from loguru import logger

from ..core import snapshot
from ..core.guard import token_ok
from ..core.places import Places
from ..core.stats import Trend
from ..errors import ConfigError
from ..settings import every_interface, local_url

PAGE = Path(__file__).with_name("dashboard.html")
WATCH_EVERY = 0.1  # seconds between two looks at the admin's pulse for an open page
QUIET_EVERY = 1.0  # seconds between two updates of an open page when nothing changed
MAX_STREAMS = 32  # pages open at once
MAX_REQUEST = 16 << 10  # bytes of request line and headers
READ_TIMEOUT = 10.0  # seconds a browser may take to send its request
WRITE_TIMEOUT = 10.0  # seconds a browser may take to read what we send
MAX_CONNECTIONS = 64  # connections served at once, streams included
MAX_WAITING = 64  # connections beyond those, waiting for a place (more: 503)
MAX_WAIT = 10.0  # seconds a connection waits for a place before a 503
# What a browser that breaks off, stalls or sends garbage raises as it is read.
UNREADABLE = (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ValueError)
# Seconds a connection with a place may take to send its request before a newcomer waiting
# for a place may evict it: a browser sends its request at once (a burst's requests are read
# within milliseconds), and idle connections must not keep real ones out.
GRACE = 0.1
SAMPLE_EVERY = 1.0  # seconds between two points of the charts


class Dashboard:
    def __init__(self, view: Callable[[float], dict[str, Any]],
                 totals: Callable[[], tuple[int, float]], pulse: Callable[[], Any],
                 token: str | None) -> None:
        self.view = view  # the data, at the given monotonic time
        self.totals = totals  # (results so far, seconds of task time so far), cheap
        self.pulse = pulse  # a cheap value that changes when the view does
        self.token = token
        self.server: asyncio.Server | None = None
        self.port = 0
        self.streams = 0
        self._connections: set[asyncio.Task[Any]] = set()  # every one (close() ends them)
        # Who is served, waits, or is evicted (idle or hostile connections must not hold
        # every place; a burst of requests waits for places): ceylon_net.core.places decides.
        self._places = Places(MAX_CONNECTIONS, MAX_WAITING, GRACE, MAX_WAIT)
        self._freed = asyncio.Event()  # set when a place frees (or a waiter must give way)
        self._evicted: set[asyncio.Task[Any]] = set()  # cancelled to make room: told 503
        self.trend = Trend(SAMPLE_EVERY)
        self._sampler: asyncio.Task[None] | None = None
        self._page = PAGE.read_bytes()
        # Served on a loopback address: it answers requests for a loopback name only
        self.local_only = False

    @classmethod
    async def serve(cls, state: snapshot.AdminState, host: str, port: int,
                    token: str | None) -> Dashboard:
        """The dashboard of an admin's state, serving on host:port (0: any free port)."""
        board = cls(lambda now: snapshot.dashboard(state, now), lambda: snapshot.totals(state),
                    lambda: snapshot.pulse(state), token)
        board.port = await board.start(host, port)
        logger.info("dashboard on {}{}", local_url(host, board.port,
                                                   "/?token=..." if token else "/"),
                    " (listening on every interface)" if every_interface(host) else "")
        return board

    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (0: any free port); returns the port."""
        try:
            self.server = await asyncio.start_server(self._serve, host, port,
                                                     limit=MAX_REQUEST)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"--dashboard-port {port}: {reason}") from None
        self._sampler = asyncio.create_task(self._sample(), name="dashboard-sampler")
        self.local_only = all(_loopback(str(sock.getsockname()[0]))
                              for sock in self.server.sockets)
        return self.server.sockets[0].getsockname()[1]

    async def _sample(self) -> None:
        while True:
            self.trend.sample(time.monotonic(), *self.totals())
            await asyncio.sleep(SAMPLE_EVERY)

    async def close(self) -> None:
        """Stop serving: open pages (their streams) are closed too."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self.server is not None:
            self.server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if not await self._place(task):
                # Every place holds a page, an answer or a request under way, and as many
                # wait already. Its request is read first: closing a socket with unread data
                # resets it, and the browser would not see the 503.
                with contextlib.suppress(_Refused, asyncio.LimitOverrunError, *UNREADABLE):
                    async with asyncio.timeout(GRACE):
                        await _request(reader)
                return await _send(writer, 503, "text/plain", BUSY)
            try:
                method, target, host = await self._read(task, reader)
            except _Refused as refused:
                return await _send(writer, refused.status, "text/plain", refused.body)
            except asyncio.LimitOverrunError:
                return await _send(writer, 431, "text/plain", b"request too large\n")
            if self.local_only and host and not _loopback(host):  # (no Host: no browser)
                # (a page elsewhere whose host name was made to point at 127.0.0.1, DNS
                # rebinding, would read it through the user's browser)
                return await _send(writer, 421, "text/plain", LOCAL_ONLY)
            await self._answer(method, target, writer)
        except UNREADABLE:
            pass  # a broken, slow or stalled browser: nothing more to say to it
        except asyncio.CancelledError:  # close(): the dashboard stops (asyncio's server
            # wants no cancelled task); or evicted, having sent no request in time: told so
            if task in self._evicted:
                self._evicted.discard(task)
                writer.write(_head(503, "text/plain", len(BUSY)) + BUSY)
        finally:
            self._connections.discard(task)
            if self._places.leave(task):
                self._freed.set()
            writer.close()

    async def _read(self, task: asyncio.Task[Any], reader: asyncio.StreamReader
                    ) -> tuple[str, str, str]:
        """The request's method, target and host; until it is read, the task may be
        evicted."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                return await _request(reader)
        finally:
            self._places.read(task)

    async def _place(self, task: asyncio.Task[Any]) -> bool:
        """A place for ``task``, as :class:`~ceylon_net.core.places.Places` decides: True
        once it has one, False for a 503."""
        while True:
            verdict = self._places.ask(task, time.monotonic())
            for key in verdict.evict:  # (its keys are the connections' tasks)
                evicted = cast(asyncio.Task[Any], key)
                self._evicted.add(evicted)
                evicted.cancel()
            if verdict.bumped is not None or (verdict.evict and not verdict.served):
                self._freed.set()  # (it wakes and is refused; they wake for the place)
            if verdict.served or verdict.refused:
                return verdict.served
            self._freed.clear()
            with contextlib.suppress(TimeoutError):  # a place frees, or its time is up
                async with asyncio.timeout(max(0.0, verdict.until - time.monotonic())):
                    await self._freed.wait()

    async def _answer(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(target)
        if not token_ok(self.token, parse_qs(url.query).get("token", [""])[0]):
            return await _send(writer, 401, "text/plain",
                               b"this admin wants its token: add ?token=... to the address "
                               b"(URL-encoded: %2B for +, %26 for &, %23 for #)\n")
        if method not in ("GET", "HEAD"):
            return await _send(writer, 405, "text/plain", b"read-only: GET or HEAD only\n")
        head = method == "HEAD"  # what GET would answer, without the body
        if url.path == "/":
            return await _send(writer, 200, "text/html; charset=utf-8", self._page, head)
        if url.path == "/api/state":
            return await _send(writer, 200, "application/json", self._json(), head)
        if url.path == "/api/stream":
            # (a page whose stream failed asks HEAD why: EventSource does not tell it)
            if self.streams >= MAX_STREAMS:
                return await _send(writer, 503, "text/plain", TOO_MANY_STREAMS, head)
            if head:
                writer.write(STREAM_HEAD + b"Connection: close\r\n\r\n")
                async with asyncio.timeout(WRITE_TIMEOUT):
                    return await writer.drain()
            return await self._stream(writer)
        await _send(writer, 404, "text/plain", b"not found\n", head)

    def _json(self, since: float = 0.0) -> bytes:
        return json.dumps({"at": time.time(), **self.view(time.monotonic()),
                           "trend": self.trend.since(since)}, default=str).encode()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        self.streams += 1
        try:
            writer.write(STREAM_HEAD + b"Connection: keep-alive\r\n\r\n")
            since, shown, sent = 0.0, None, 0.0
            while True:
                pulse, now = self.pulse(), time.monotonic()
                if pulse != shown or now - sent >= QUIET_EVERY:
                    writer.write(b"data: " + self._json(since) + b"\n\n")
                    since = self.trend.points[-1][0] if self.trend.points else since
                    shown, sent = pulse, now
                    async with asyncio.timeout(WRITE_TIMEOUT):
                        await writer.drain()
                await asyncio.sleep(WATCH_EVERY)
        finally:
            self.streams -= 1


class _Refused(Exception):
    """A request we answer with an error status (not a dropped connection)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body


async def _request(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """The request's method, target and Host header (lower case, without its port; "" when
    there is none); its headers are read (lines ending in CRLF or a bare LF, MAX_REQUEST
    bytes in all), the others ignored."""
    first, size, host = b"", 0, ""
    while True:
        line = await reader.readuntil(b"\n")
        size += len(line)
        if size > MAX_REQUEST:
            raise _Refused(431, b"request too large\n")
        if line in (b"\r\n", b"\n"):
            break
        if first and line[:5].lower() == b"host:":
            host = _hostname(line[5:].decode("latin-1").strip())
        first = first or line
    parts = first.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _Refused(400, b"bad request\n")
    return parts[0], parts[1], host


def _hostname(host: str) -> str:
    """A Host header's name, without its port: ``[::1]:8080`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _loopback(name: str) -> bool:
    name = name.removesuffix(".")  # (the root's dot: "localhost." is "localhost")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


BUSY = b"too many connections\n"
TOO_MANY_STREAMS = b"too many open dashboards\n"
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
LOCAL_ONLY = (b"this dashboard listens on a loopback address: it answers requests for "
              b"localhost, 127.0.0.1 or [::1] only (a page elsewhere could read it through "
              b"your browser)\n")


def _head(status: int, kind: str, length: int) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              405: "Method Not Allowed", 421: "Misdirected Request",
              431: "Request Header Fields Too Large",
              503: "Service Unavailable"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: "
            f"{length}\r\nConnection: close\r\n\r\n").encode()


async def _send(writer: asyncio.StreamWriter, status: int, kind: str, body: bytes,
                head: bool = False) -> None:
    writer.write(_head(status, kind, len(body)) + (b"" if head else body))
    async with asyncio.timeout(WRITE_TIMEOUT):
        await writer.drain()
