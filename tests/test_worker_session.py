"""A worker's side of its session with the admin, without sockets: what it says once a
WELCOME comes (again: the admin restarted, or forgot it)."""

from __future__ import annotations

from typing import Any

from ceylon_net import wire
from ceylon_net.edge.worker import Worker
from ceylon_net.wire import Kind


class _Sent:
    """Stands in for the worker's sockets: keeps the kind of each message sent."""

    sub = object()  # subscribed already
    busy = False

    def __init__(self) -> None:
        self.kinds: list[bytes] = []

    def send_soon(self, frames: list[bytes]) -> None:
        self.kinds.append(frames[0])

    async def send(self, frames: list[bytes], timeout: Any = None) -> bool:
        self.send_soon(frames)
        return True

    def subscribe(self, host: str, pub_port: int, topics: Any) -> bool:
        return False  # where it was already


def _welcomed(draining: bool) -> list[bytes]:
    w = Worker("w", "default", "127.0.0.1", 9999)
    sent = _Sent()
    w._sockets = sent  # type: ignore[assignment]
    w._draining = draining
    w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99))
    return sent.kinds


def test_a_draining_worker_welcomed_again_says_it_drains():
    """Its DRAIN went to the admin it registered with before: a new admin process would
    feed it work it cannot finish before its drain ends."""
    assert Kind.DRAIN in _welcomed(draining=True)
    assert Kind.DRAIN not in _welcomed(draining=False)
