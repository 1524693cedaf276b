"""Keeping hostile or broken peers from hurting the rest. Pure: the clock is a parameter.

- A peer (ROUTER identity) that sends more than ``limit`` bad frames within ``window``
  seconds is cut off: everything it sends is dropped unread for ``ban`` seconds (a ROUTER
  cannot close one peer's connection; dropping its frames before decoding costs next to
  nothing), and a registered worker behind it is dropped.
- Registrations (HELLO) are rate limited per source address (a token bucket), so a flood
  of HELLOs from one place cannot crowd out the rest.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time token check; no token configured lets everyone in."""
    if expected is None:
        return True
    return hmac.compare_digest((given or "").encode(), expected.encode())


@dataclass
class PeerGuard:
    limit: int = 100
    window: float = 10.0
    ban: float = 60.0
    hello_rate: float = 100.0
    banned: dict[bytes, float] = field(default_factory=dict)  # identity -> until
    _bad: dict[bytes, deque[float]] = field(default_factory=dict)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def is_banned(self, identity: bytes, now: float) -> bool:
        until = self.banned.get(identity)
        if until is None:
            return False
        if now >= until:
            del self.banned[identity]
            return False
        return True

    def bad_frame(self, identity: bytes, now: float) -> bool:
        """Count a bad frame; True when this one gets the peer banned."""
        times = self._bad.setdefault(identity, deque())
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        if len(times) > self.limit:
            del self._bad[identity]
            self.banned[identity] = now + self.ban
            return True
        return False

    def allow_hello(self, address: str, now: float) -> bool:
        """Take a token from the address's bucket (burst: one second's worth)."""
        tokens, at = self._buckets.get(address, (self.hello_rate, now))
        tokens = min(self.hello_rate, tokens + (now - at) * self.hello_rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def counting(self, identity: bytes) -> bool:
        """Are bad frames of this peer still counted (recent ones, or it is banned)?"""
        return identity in self._bad or identity in self.banned

    def forget_idle(self, now: float) -> None:
        """Drop bookkeeping nobody needs any more (called now and then)."""
        for ident in [i for i, t in self._bad.items() if not t or t[-1] < now - self.window]:
            del self._bad[ident]
        for ident in [i for i, until in self.banned.items() if until <= now]:
            del self.banned[ident]
        full = [a for a, (tok, at) in self._buckets.items()
                if tok + (now - at) * self.hello_rate >= self.hello_rate]
        for address in full:
            del self._buckets[address]


class Hush:
    """Which refusals to log: a sender's first in a minute, of ``most`` senders a minute at
    most (a flood of refused requests was a log line each, for ever). Pure: ``now`` is an
    argument."""

    def __init__(self, most: int = 20, every: float = 60.0) -> None:
        self.most, self.every = most, every
        self.said: set[bytes] = set()
        self.since = float("-inf")

    def say(self, peer: bytes, now: float) -> bool:
        """Log this one of ``peer``'s?"""
        if now - self.since >= self.every:
            self.said.clear()
            self.since = now
        if peer in self.said or len(self.said) >= self.most:
            return False
        self.said.add(peer)
        return True


class Tally:
    """Which of a flood of like events to log, and as how many: the first of each key, then
    the first once ``every`` seconds have passed, counting those not logged meanwhile (a
    message sent again and again to a name nobody has was a line each, in two logs). At
    most ``most`` keys are followed (the oldest said is forgotten first). Pure."""

    def __init__(self, every: float = 60.0, most: int = 1_000) -> None:
        self.every, self.most = every, most
        self._seen: dict[Any, tuple[float, int]] = {}  # key -> (when last said, since)

    def say(self, key: Any, now: float, count: int = 1) -> int:
        """``count`` more of ``key``: 0 when not to log them; else how many the line stands
        for (``count``: these alone)."""
        said, since = self._seen.get(key, (-math.inf, 0))
        if now - said < self.every:
            self._seen[key] = (said, since + count)
            return 0
        self._seen.pop(key, None)
        while len(self._seen) >= self.most:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = (now, 0)
        return since + count

    def due(self, now: float) -> list[tuple[Any, int]]:
        """What was not logged, of keys whose minute is up: (key, how many), said now (else
        the count of a flood that stopped was never said: a review)."""
        out = [(key, since) for key, (said, since) in self._seen.items()
               if since and now - said >= self.every]
        for key, _ in out:
            self._seen[key] = (now, 0)
        return out
