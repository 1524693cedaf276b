"""Direct messages to an agent the admin cannot reach now, held for it. Pure.

An agent paused for a few seconds (SIGSTOP, a suspended laptop, a blocked event loop) is
taken for lost and comes back: the messages other agents sent it meanwhile were dropped,
each said in two logs, though broadcasts of that time reach it (a review of messaging found
2,299 of 10,000 gone across a 5 s pause). They are kept for it instead, as long as the admin
waits for a lost worker (--lost-wait), and delivered in order when it is back; those it does
not come back for are said undelivered to their senders then. What is held is bounded in
count and bytes, all agents together, and for each agent below the admin's send queue to
one peer (10,000 messages: what did not fit was dropped as they were delivered, a review
found): past that, a message is not held, and its sender is told at once.

The same goes for an agent still registered that a message could not be sent to: its
connection died and the admin has not noticed yet (a crash, a host cut off: up to
--heartbeat x --liveness), or its queue at the admin is full (paused before it is taken for
lost, or slow to read). Its senders were told at once, where the same message a moment
later, the agent taken for lost, was held; now it is held, tried again one at a time ever
more slowly until it goes (then the rest follow, a part at a time), or until the agent is
taken for lost and the wait for it runs out, or it leaves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..wire import Header

MAX_HELD_MESSAGES = 100_000  # held at once, for all the agents taken for lost
MAX_HELD_BYTES = 64 << 20
MAX_HELD_EACH = 5_000  # for one agent: half the ROUTER's queue to a peer (SNDHWM 10,000),
# the rest for what it is sent beside them (broadcasts it missed, its tasks)
# Delivered back: this many at a time, the next part in the admin's next round; one its
# queue had no room for (a paused agent keeps its connection, and what was queued to it
# before it was taken for lost: a review found 3,259 of 5,000 dropped) is held again, in its
# place. While its queue stays full (an agent that does not read), one is tried at a time,
# DELIVER_AGAIN s later, the pause doubling up to DELIVER_SLOWEST (a part of 500 tried
# every 0.1 s for ever cost the admin CPU).
DELIVER_CHUNK = 500
DELIVER_AGAIN = 0.1
DELIVER_SLOWEST = 2.0


@dataclass(slots=True)
class Mailbox:
    most: int = MAX_HELD_MESSAGES
    most_bytes: int = MAX_HELD_BYTES
    most_each: int = MAX_HELD_EACH
    held: dict[str, list[tuple[Header, bytes]]] = field(default_factory=dict)  # by agent
    count: int = 0
    size: int = 0  # payload bytes
    # How many taken for an agent were held again since (see again, stalled): none, no key.
    _back: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def keep(self, to: str, header: Header, payload: bytes) -> str | None:
        """Hold a message for ``to``; why not, when there is no room left for it."""
        if (why := self.full(to, len(payload))) is not None:
            return why
        self.held.setdefault(to, []).append((header, payload))
        self.count += 1
        self.size += len(payload)
        return None

    def full(self, to: str, size: int) -> str | None:
        """Why a message of ``size`` bytes for ``to`` finds no room, or None."""
        held = self.held.get(to, ())
        if len(held) >= self.most_each:
            return f"{len(held):,} messages wait to go to it already (held for it)"
        if self.count >= self.most or self.size + size > self.most_bytes:
            return (f"the admin holds as many messages for agents it cannot reach now as it "
                    f"keeps ({self.most:,}, {self.most_bytes >> 20} MiB)")
        return None

    def take(self, to: str, most: int | None = None) -> list[tuple[Header, bytes]]:
        """What was held for ``to`` (the first ``most``), in the order it came; held no
        longer."""
        held = self.held.get(to, [])
        got = held[:most]  # (a copy: what is taken leaves the list)
        del held[:len(got)]
        if not held:
            self.held.pop(to, None)
        self._back.pop(to, None)
        self.count -= len(got)
        self.size -= sum(len(payload) for _, payload in got)
        return got

    def stalled(self, to: str) -> bool:
        """One taken for ``to`` was held again since the last take: what is sent to it now
        waits behind (sent, it could overtake those)."""
        return self._back.get(to, 0) > 0

    def again(self, to: str, header: Header, payload: bytes) -> None:
        """One taken could not be delivered (its queue had no room): held again, before
        those not taken yet and after those held again before it (their order kept)."""
        at = self._back.get(to, 0)
        self.held.setdefault(to, []).insert(at, (header, payload))
        self._back[to] = at + 1
        self.count += 1
        self.size += len(payload)


def by_sender(messages: list[tuple[Header, bytes]]) -> dict[str, tuple[int, int]]:
    """{sender: (how many of these it sent, the msg_id of its last)}."""
    counts = Counter(h.sender for h, _ in messages)
    last = {h.sender: h.msg_id for h, _ in messages}
    return {sender: (n, last[sender]) for sender, n in counts.items()}
