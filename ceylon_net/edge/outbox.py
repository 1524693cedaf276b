"""A worker's broadcasts and messages to other agents, until they are known to have reached an
admin that knows the worker.

A worker sends them to the admin, which relays them. An admin that does not know the sender
(it restarted, or declared the worker lost) refuses each with a REJECT naming its message id,
and the worker registers again: the refused ones are sent again once it is welcomed, in the
order they were first sent, and what it sends meanwhile waits for the welcome too.

A broadcast comes back to its sender too, on PUB with everyone's (it is not delivered to it):
then it is known relayed, and forgotten here. One a killed admin had taken and not relayed
(or relayed, the echo still on its way) never comes back: when the worker registers with a
new admin process, each broadcast it sent while it heard the old one's that has not come back
is sent again, in order (some receivers may have it: they drop a second copy, see
:class:`Seen`). One sent before the worker heard the admin's broadcasts, or among those it
fell too far behind to get, can never be seen again: it is not sent again; nor is one sent
again after a restart before the worker hears the new admin's (a second admin killed before
relaying it loses it). The new admin process's own handlers get a broadcast sent again as a
first copy: the old process's handlers had the other.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..errors import LocalProtocolError
from ..wire import Kind

MAX_KEPT = 10_000  # sent messages kept in case they are refused, at most
MAX_KEPT_BYTES = 32 * 1024 * 1024  # ... and their bytes
MAX_WAITING = 10_000  # messages waiting for a welcome, at most


SEEN = 10_000  # broadcasts an agent remembers having delivered (to drop a second copy)


class Outbox:
    def __init__(self, max_kept: int = MAX_KEPT, max_kept_bytes: int = MAX_KEPT_BYTES,
                 max_waiting: int = MAX_WAITING) -> None:
        self.max_kept, self.max_kept_bytes, self.max_waiting = \
            max_kept, max_kept_bytes, max_waiting
        self._kept: OrderedDict[int, list[bytes]] = OrderedDict()  # sent: msg id -> frames
        self._kept_bytes = 0
        # Of those, broadcasts that will come back on PUB, each with the highest broadcast
        # number we knew of when it went (relayed, it is numbered after that).
        self._echoing: dict[int, int] = {}
        # Not kept any more (over max_kept), not known relayed: broadcasts that were to come
        # back (a new admin process would have been sent them), and the others. One the
        # admin then refuses, or one of the first when it restarts, is lost: ``lost``.
        self._unkept_coming: OrderedDict[int, int] = OrderedDict()  # (as _echoing)
        self._unkept_other: OrderedDict[int, None] = OrderedDict()
        self.lost = 0
        self._waiting: dict[int, list[bytes]] = {}  # to send once welcomed
        self.seen = Seen()  # the other side: broadcasts of others, sent again to us

    def sent(self, msg_id: int, frames: list[bytes], hearing: bool = False,
             heard_upto: int = 0) -> None:
        """Sent to an admin that knows us (as far as we know): kept a while, the oldest
        forgotten first. ``hearing``: we hear the admin's broadcasts (so one of ours will
        come back to us)."""
        self._kept[msg_id] = frames
        self._kept_bytes += sum(map(len, frames))
        if hearing and frames[0] == Kind.BCAST:
            self._echoing[msg_id] = heard_upto
        while len(self._kept) > self.max_kept or self._kept_bytes > self.max_kept_bytes:
            oldest = next(iter(self._kept))
            self._unkept_as(oldest, self._echoing.get(oldest))
            self._forget(oldest)

    def _unkept_as(self, msg_id: int, coming: int | None) -> None:
        """Not kept any more: one to come back (``coming``: the number known when it was
        sent, as in _echoing), or another (None)."""
        unkept: OrderedDict[int, Any] = \
            self._unkept_other if coming is None else self._unkept_coming
        unkept[msg_id] = coming
        if len(unkept) > self.max_kept:
            unkept.popitem(last=False)

    def _forget(self, msg_id: int) -> list[bytes] | None:
        """No longer kept: its frames (None when it was not)."""
        frames = self._kept.pop(msg_id, None)
        if frames is not None:
            self._kept_bytes -= sum(map(len, frames))
            self._echoing.pop(msg_id, None)
        return frames

    def echoed(self, msg_id: int) -> None:
        """One of our broadcasts came back on PUB: relayed, forgotten."""
        if msg_id in self._echoing:
            self._forget(msg_id)
        self._unkept_coming.pop(msg_id, None)

    def unsure(self) -> None:
        """What we sent may have been relayed without coming back to us (we fell behind and
        skipped broadcasts, ours perhaps among them): none is sent again to a new admin
        process."""
        self._echoing.clear()
        for msg_id in self._unkept_coming:
            self._unkept_as(msg_id, None)
        self._unkept_coming.clear()

    def gapped(self, upto: int) -> None:
        """The old admin process left broadcasts we never got, the last numbered ``upto``:
        ours not kept any more sent before it may have been relayed among them (not said
        lost at its restart: only if refused)."""
        for msg_id in [m for m, known in self._unkept_coming.items() if known < upto]:
            del self._unkept_coming[msg_id]
            self._unkept_as(msg_id, None)

    def admin_restarted(self) -> int:
        """A new admin process: our broadcasts that did not come back from the old one wait
        to be sent to it (with the refused ones, in the order first sent). How many."""
        again = list(self._echoing)
        for msg_id in again:
            self._waiting[msg_id] = self._forget(msg_id)  # type: ignore[assignment]
        self.lost += len(self._unkept_coming)  # (those it should have been sent too)
        self._unkept_coming.clear()
        return len(again)

    def hold(self, msg_id: int, frames: list[bytes]) -> None:
        """Not registered now: to send once welcomed. LocalProtocolError when too many wait."""
        if len(self._waiting) >= self.max_waiting:
            raise LocalProtocolError(f"not registered with the admin: {len(self._waiting):,} "
                                     f"messages wait to be sent already; try again later")
        self._waiting[msg_id] = frames

    def refused(self, msg_id: int | None) -> bool:
        """The admin refused message ``msg_id`` (it did not know us): to send again once
        welcomed. False when it is not one of ours (or forgotten)."""
        frames = self._forget(msg_id) if msg_id is not None else None
        if frames is None:
            if msg_id is not None and (msg_id in self._unkept_coming
                                       or msg_id in self._unkept_other):
                self._unkept_coming.pop(msg_id, None)
                self._unkept_other.pop(msg_id, None)
                self.lost += 1  # (ours, not kept: lost)
            return False
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


class Seen:
    """The broadcasts an agent delivered lately, by sender, message id and time sent: one
    that comes again (sent again to a new admin process, the old one having relayed it
    before it died) is not delivered twice."""

    def __init__(self, size: int = SEEN) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, int, float], None] = OrderedDict()

    def first(self, sender: str, msg_id: int, ts: float) -> bool:
        """True the first time this broadcast is seen."""
        key = (sender, msg_id, ts)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
