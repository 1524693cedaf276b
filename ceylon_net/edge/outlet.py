"""The admin's messages on their way out: encoded once, sent to one peer over the ROUTER or
published on PUB. Nothing here decides; a send that fails says so (False)."""

from __future__ import annotations

from typing import Any

from .. import wire
from ..core.tasks import TaskAssignment
from ..errors import LocalProtocolError
from ..wire import Header, Kind
from .transport import AdminSockets


def _encodable(assignments: list[TaskAssignment]
               ) -> tuple[list[TaskAssignment], list[tuple[TaskAssignment, str]]]:
    """Those that encode, and those that do not with why: a task changed, through the Python
    API, after it was submitted (check_sendable saw it as it was then)."""
    good, bad = [], []
    for a in assignments:
        try:
            wire.pack_batch([a])
            good.append(a)
        except LocalProtocolError as exc:
            bad.append((a, str(exc)))
    return good, bad


def encode(msg: Any) -> tuple[str, bytes]:
    """(type name, payload) of a message, or of a list of them sent as one batch."""
    if isinstance(msg, list):
        return wire.type_name(msg[0]), wire.pack_batch(msg)
    return wire.type_name(msg), wire.pack(msg)


class Outlet:
    def __init__(self, sockets: AdminSockets, workspace: str, sender: str) -> None:
        self.sockets = sockets
        self.workspace = workspace
        self.sender = sender

    def header(self, type_: str | None = None, to: str | None = None) -> wire.Header:
        return wire.make_header(self.workspace, self.sender, type_, to)

    def _frames(self, kind: bytes, type_: str | None, payload: bytes,
                to: str | None = None, seq: int | None = None) -> list[bytes]:
        header = self.header(type_, to)
        header.seq = seq
        return wire.encode_frames(kind, header, payload)

    def send(self, peer: bytes, kind: bytes, msg: Any, answers: int | None = None) -> bool:
        """``answers``: the msg_id of the client request this answers (in the header's seq)."""
        return self.sockets.send(peer, self._frames(kind, *encode(msg), seq=answers))

    def assign(self, peer: bytes, assignments: list[TaskAssignment]
               ) -> tuple[list[TaskAssignment], list[tuple[TaskAssignment, str]]]:
        """Send the assignments in as few frames as the message limit allows and, once each
        left, publish it. Returns those that could not be sent, and those that could not be
        encoded, each with why (all encoded before any is sent)."""
        limit, sent, bad = self.sockets.max_message_bytes - wire.FRAME_SLACK, 0, []
        try:
            parts = list(wire.packed_batches(assignments, limit))
        except LocalProtocolError:
            assignments, bad = _encodable(assignments)
            parts = list(wire.packed_batches(assignments, limit)) if assignments else []
        for part, payload in parts:
            frames = self._frames(Kind.ASSIGN, "TaskAssignment", payload)
            if not self.sockets.send(peer, frames):
                return assignments[sent:], bad
            self.sockets.publish(Kind.ASSIGN, frames)
            sent += len(part)
        return [], bad

    def forward(self, peer: bytes | None, kind: bytes, header: Header, payload: bytes) -> bool:
        """A peer's message passed on as it came: to ``peer``, or on PUB (None)."""
        frames = wire.encode_frames(kind, header, payload)
        if peer is None:
            self.sockets.publish(kind, frames)
            return True
        return self.sockets.send(peer, frames)

    def publish(self, kind: bytes, msg: Any, type_: str | None = None,
                seq: int | None = None) -> None:
        """On PUB, if anyone listens for ``kind``; ``msg`` may be a payload already encoded."""
        if self.sockets.wanted(kind):
            if not isinstance(msg, bytes):
                type_, msg = encode(msg)
            self.sockets.publish(kind, self._frames(kind, type_, msg, seq=seq))

    def direct(self, peer: bytes, to: str, type_: str | None, payload: bytes) -> bool:
        """The admin's own direct message to one agent (``type_`` None: raw bytes)."""
        return self.sockets.send(peer, self._frames(Kind.DIRECT, type_, payload, to))
