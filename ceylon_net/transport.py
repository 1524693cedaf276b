"""Sockets, and the only module that imports zmq.

Admin: a ROUTER (everything a worker says, and everything addressed to one worker) and a PUB
(the workspace's broadcast bus, topic = workspace + NUL + kind, so a subscriber takes only the
kinds it wants and the publisher filters for it). Worker: a DEALER to the ROUTER and a SUB to
the PUB. Sends on ROUTER and PUB never block: a full or vanished peer is reported to the caller,
which decides (requeue, drop), instead of stalling everyone else.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import uuid
from collections.abc import Sequence

import zmq
import zmq.asyncio

from .errors import ConfigError
from .protocol import topic as workspace_topic

LINGER_MS = 1000


def _new_context() -> zmq.asyncio.Context:
    return zmq.asyncio.Context()


class AdminSockets:
    """ROUTER + PUB, bound on ``host``."""

    def __init__(self, host: str, max_message_bytes: int, workspace: str) -> None:
        self.ctx = _new_context()
        self.host = host
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.LINGER, LINGER_MS)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, LINGER_MS)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.topic = workspace_topic(workspace)

    def bind(self, port: int, pub_port: int | None) -> tuple[int, int]:
        """Bind both sockets; port 0 picks a free port. Returns (port, pub_port)."""
        if pub_port is None:
            pub_port = 0 if port == 0 else port + 1
        port = self._bind(self.router, port, "--port")
        pub_port = self._bind(self.pub, pub_port, "--pub-port")
        return port, pub_port

    def _bind(self, sock: zmq.asyncio.Socket, port: int, option: str) -> int:
        url = f"tcp://{self.host}"
        try:
            if port == 0:
                return sock.bind_to_random_port(url, min_port=20000, max_port=60000)
            sock.bind(f"{url}:{port}")
            return port
        except zmq.ZMQError as exc:
            hint = " (is another admin running? choose another port)" \
                if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot bind {url}:{port} for {option}: {exc.strerror}{hint}") \
                from None

    async def recv_batch(self, limit: int = 512) -> list[list[zmq.Frame]]:
        """Wait for one message on the ROUTER, then take whatever else is already queued."""
        batch = [await self.router.recv_multipart(copy=False)]
        while len(batch) < limit:
            fut = self.router.recv_multipart(flags=zmq.DONTWAIT, copy=False)
            if fut.exception() is not None:
                break
            batch.append(fut.result())
        return batch

    def send(self, identity: bytes, frames: Sequence[bytes]) -> bool:
        """Send to one worker without blocking; False when it is gone or its queue is full."""
        fut = self.router.send_multipart([identity, *frames], flags=zmq.DONTWAIT)
        exc = fut.exception()
        if exc is None:
            return True
        if isinstance(exc, zmq.Again | zmq.ZMQError):
            return False
        raise exc

    def publish(self, kind: bytes, frames: Sequence[bytes]) -> None:
        fut = self.pub.send_multipart([self.topic + kind, *frames], flags=zmq.DONTWAIT)
        # PUB drops under pressure by design and nothing correct depends on it; reading the
        # outcome only marks it seen.
        fut.exception()

    def close(self, linger_ms: int = LINGER_MS) -> None:
        self.router.close(linger_ms)
        self.pub.close(linger_ms)
        self.ctx.term()


def peer_address(frame: zmq.Frame) -> str:
    """The remote address a frame came from, as libzmq saw it ('' when unknown)."""
    try:
        return frame.get("Peer-Address") or ""
    except (zmq.ZMQError, AttributeError):
        return ""


class WorkerSockets:
    """DEALER to the admin's ROUTER; SUB to its PUB once the welcome says where."""

    def __init__(self, name: str, endpoint: str, max_message_bytes: int) -> None:
        self.ctx = _new_context()
        self.endpoint = endpoint
        # A unique identity per process: a restarted worker is a new peer to the ROUTER.
        self.identity = f"{name}/{uuid.uuid4().hex[:8]}".encode()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.IDENTITY, self.identity)
        self.dealer.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.dealer.setsockopt(zmq.LINGER, LINGER_MS)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.dealer.connect(endpoint)
        self.sub: zmq.asyncio.Socket | None = None

    def subscribe(self, host: str, pub_port: int, topics: Sequence[bytes]) -> None:
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sub.setsockopt(zmq.SUBSCRIBE, t)
        self.sub.connect(f"tcp://{host}:{pub_port}")

    async def send(self, frames: Sequence[bytes]) -> None:
        await self.dealer.send_multipart(frames)

    async def recv(self, timeout: float | None) -> list[bytes] | None:
        """Next message from the admin, or None after ``timeout`` seconds."""
        if await self.dealer.poll(None if timeout is None else int(timeout * 1000)) == 0:
            return None
        return await self.dealer.recv_multipart()

    async def recv_batch(self, timeout: float, limit: int = 512) -> list[list[bytes]]:
        """Wait up to ``timeout`` s for a message from the admin, then take whatever else is
        already queued (one wake-up for a burst). Empty on timeout."""
        if await self.dealer.poll(int(timeout * 1000)) == 0:
            return []
        batch = []
        while len(batch) < limit:
            fut = self.dealer.recv_multipart(flags=zmq.DONTWAIT)
            if fut.exception() is not None:
                break
            batch.append(fut.result())
        return batch

    async def recv_broadcast(self) -> list[bytes]:
        assert self.sub is not None
        return await self.sub.recv_multipart()

    def close(self, linger_ms: int = LINGER_MS) -> None:
        self.dealer.close(linger_ms)
        if self.sub is not None:
            self.sub.close(0)
        self.ctx.term()


class Client:
    """A DEALER that asks the admin one question at a time (ceylon-status, ceylon-submit)."""

    def __init__(self, endpoint: str, max_message_bytes: int) -> None:
        self.ctx = _new_context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.sock.connect(endpoint)

    async def ask(self, frames: Sequence[bytes], timeout: float) -> list[bytes] | None:
        """Send ``frames``; the reply, or None when nothing came within ``timeout`` s."""
        await self.sock.send_multipart(frames)
        return await self.receive(timeout)

    async def receive(self, timeout: float) -> list[bytes] | None:
        """The next message from the admin, or None after ``timeout`` s."""
        if await self.sock.poll(int(timeout * 1000)) == 0:
            return None
        return await self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class Subscriber:
    """A read-only view of a workspace's PUB bus (observers, tests, status tools)."""

    def __init__(self, host: str, pub_port: int, workspace: str, kinds: Sequence[bytes] = (b"",)):
        self.ctx = _new_context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        base = workspace_topic(workspace)
        for kind in kinds:
            self.sock.setsockopt(zmq.SUBSCRIBE, base + kind)
        self.sock.connect(f"tcp://{host}:{pub_port}")

    async def recv(self, timeout: float) -> list[bytes] | None:
        if await self.sock.poll(int(timeout * 1000)) == 0:
            return None
        return await self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests and the demo)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]

