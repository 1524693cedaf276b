"""A worker's broadcasts and messages to other agents, until they are known to have reached an
admin that knows the worker.

A worker sends them to the admin, which relays them. An admin that does not know the sender
(it restarted, or declared the worker lost) refuses each with a REJECT naming its message id,
and the worker registers again: the refused ones are sent again once it is welcomed, in the
order they were first sent, and what it sends meanwhile waits for the welcome too. (What a
killed admin had received and not relayed is gone with it: no one can tell.)
"""

from __future__ import annotations

from collections import OrderedDict

from ..errors import LocalProtocolError

MAX_KEPT = 10_000  # sent messages kept in case they are refused, at most
MAX_KEPT_BYTES = 32 * 1024 * 1024  # ... and their bytes
MAX_WAITING = 10_000  # messages waiting for a welcome, at most


class Outbox:
    def __init__(self, max_kept: int = MAX_KEPT, max_kept_bytes: int = MAX_KEPT_BYTES,
                 max_waiting: int = MAX_WAITING) -> None:
        self.max_kept, self.max_kept_bytes, self.max_waiting = \
            max_kept, max_kept_bytes, max_waiting
        self._kept: OrderedDict[int, list[bytes]] = OrderedDict()  # sent: msg id -> frames
        self._kept_bytes = 0
        self._waiting: dict[int, list[bytes]] = {}  # to send once welcomed

    def sent(self, msg_id: int, frames: list[bytes]) -> None:
        """Sent to an admin that knows us (as far as we know): kept a while, the oldest
        forgotten first."""
        self._kept[msg_id] = frames
        self._kept_bytes += sum(map(len, frames))
        while len(self._kept) > self.max_kept or self._kept_bytes > self.max_kept_bytes:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= sum(map(len, old))

    def hold(self, msg_id: int, frames: list[bytes]) -> None:
        """Not registered now: to send once welcomed. LocalProtocolError when too many wait."""
        if len(self._waiting) >= self.max_waiting:
            raise LocalProtocolError(f"not registered with the admin: {len(self._waiting):,} "
                                     f"messages wait to be sent already; try again later")
        self._waiting[msg_id] = frames

    def refused(self, msg_id: int | None) -> bool:
        """The admin refused message ``msg_id`` (it did not know us): to send again once
        welcomed. False when it is not one of ours (or forgotten)."""
        frames = self._kept.pop(msg_id, None) if msg_id is not None else None
        if frames is None:
            return False
        self._kept_bytes -= sum(map(len, frames))
        self._waiting[msg_id] = frames  # type: ignore[index]
        return True

    def take(self) -> list[tuple[int, list[bytes]]]:
        """What waits, in the order it was first sent; nothing waits after."""
        out = sorted(self._waiting.items())
        self._waiting.clear()
        return out

    def __len__(self) -> int:
        """Messages waiting for a welcome."""
        return len(self._waiting)
