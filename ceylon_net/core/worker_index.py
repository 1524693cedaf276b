"""The workers filed for the scheduler's choice of one, so that a choice does not look at each
worker. Pure: no I/O, no clock.

:func:`ceylon_net.core.scheduler.best_fit` picks, among the workers that can take a task now,
the one with the least key (no free slot, skill, in flight / slots, name): it looked at every
worker, and among 1,000 connected workers that look was most of what a task cost the admin.
Here the workers are filed by *profile* (skill, role and handlers: what a worker can do,
fixed while it is registered), and within a profile by what it can take now, each in a heap
in best_fit's own order (in flight / slots, name):

- ``FREE``: a free slot (in flight below its room and its slots): a task starts at once;
- ``QUEUE``: room only in its queue (its slots busy, in flight below its room);

each apart for workers off probation (a task that only such a worker may take looks at
those only). A worker with no room is in neither. A choice looks at the profiles that can do
the task (a cluster's workers come in a few kinds) and at the head of their heaps: O(profiles
+ log workers), not O(workers).

A cluster whose workers are each of a kind of their own is better served by a look at each
(the scheduler does so while there are more than half as many kinds as workers).

Filing is lazy: a worker whose load, state, capacity or slots changed is filed again under a
new stamp, and the entries under its older stamps are dropped when they come to a heap's
head, or when the heap is rebuilt (once most of it is such entries, so it stays within a
few times the workers filed in it). The scheduler files a worker each time it changes one,
and is told of each change made from outside (:meth:`Scheduler.touch`).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from .workers import WorkerState

ANYWHERE, SLOT, ALONE = 0, 1, 2  # places: a worker's queue too; only a free slot; alone
FREE, QUEUE = 0, 1  # a heap's number is 2 x that + 1 for workers off probation


class WorkerSlot(Protocol):
    """What is filed of a worker (ceylon_net.core.scheduler.WorkerSlot)."""

    name: str
    skill: int
    role: str
    handlers: frozenset[str]
    running: int
    slots: int
    state: WorkerState

    @property
    def room(self) -> int: ...


# The heaps a choice looks at, by (a free slot only, off probation only)
_LOOK = {(False, False): (0, 1, 2, 3), (False, True): (1, 3), (True, False): (0, 1),
         (True, True): (1,)}
Filed = tuple[float, str, int]  # (in flight / slots, name, stamp): heap order is best first
Profile = tuple[int, str, frozenset[str]]  # skill, role, handlers


def heap_of(slot: WorkerSlot) -> int | None:
    """The heap a worker belongs in now (see the module's note), or None: no room."""
    if slot.slots <= 0 or slot.running >= slot.room:
        return None
    return 2 * (QUEUE if slot.running >= slot.slots else FREE) + \
        (slot.state is WorkerState.TRUSTED)


class Kind:
    """The workers of one profile, in their four heaps."""

    __slots__ = ("handlers", "heaps", "live", "members", "profile", "role", "skill")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.skill, self.role, self.handlers = profile
        self.heaps: tuple[list[Filed], ...] = ([], [], [], [])
        self.live = [0, 0, 0, 0]  # workers filed in each heap (the rest of it is stale)
        self.members = 0  # workers of this profile, filed in a heap or not

    def takers(self, trusted: bool) -> int:
        """Workers of this kind with room (off probation only, with ``trusted``)."""
        live = self.live
        return live[1] + live[3] if trusted else sum(live)


class WorkerIndex:
    """Workers filed by profile and by what they can take (see the module's note)."""

    def __init__(self) -> None:
        self.kinds: dict[Profile, Kind] = {}
        self._filed: dict[str, tuple[int, Kind, int | None]] = {}  # name -> stamp, kind, heap
        self._stamp = 0

    def file(self, slot: WorkerSlot) -> None:
        """File ``slot`` as it is now (a new worker, or one changed)."""
        name = slot.name
        was = self._filed.get(name)
        if was is not None and was[1].profile == (slot.skill, slot.role, slot.handlers):
            kind = was[1]  # (the usual case: its load changed)
            if was[2] is not None:
                kind.live[was[2]] -= 1
        else:
            self._unfile(name)
            profile = (slot.skill, slot.role, slot.handlers)
            kind = self.kinds.get(profile)
            if kind is None:
                kind = self.kinds[profile] = Kind(profile)
            kind.members += 1
        self._stamp += 1
        n = heap_of(slot)
        self._filed[name] = (self._stamp, kind, n)
        if n is not None:
            heap = kind.heaps[n]
            heapq.heappush(heap, (slot.running / slot.slots, name, self._stamp))
            kind.live[n] += 1
            if len(heap) > 2 * kind.live[n] + 16:
                self._rebuild(heap)

    def drop(self, name: str) -> None:
        """The worker left."""
        self._unfile(name)

    def _unfile(self, name: str) -> None:
        was = self._filed.pop(name, None)
        if was is None:
            return
        _, kind, n = was
        if n is not None:
            kind.live[n] -= 1
        kind.members -= 1
        if not kind.members:
            del self.kinds[kind.profile]

    def _rebuild(self, heap: list[Filed]) -> None:
        filed = self._filed
        heap[:] = [e for e in heap if (f := filed.get(e[1])) is not None and f[0] == e[2]]
        heapq.heapify(heap)

    def best(self, kinds: Iterable[Kind], trusted: bool, place: int
             ) -> tuple[bool, int, float, str] | None:
        """best_fit's key of the best worker of ``kinds`` (those that can do the task) for a
        task that only workers off probation may take (``trusted``), going to ``place``
        (ANYWHERE 0, a free SLOT, or ALONE), or None: none can take it now."""
        best = None
        heaps = _LOOK[bool(place), trusted]
        filed = self._filed
        for kind in kinds:
            for n in heaps:
                heap = kind.heaps[n]
                while heap:  # (its head: entries filed under an older stamp dropped)
                    entry = heap[0]
                    f = filed.get(entry[1])
                    if f is not None and f[0] == entry[2]:
                        break
                    heapq.heappop(heap)
                else:
                    continue
                if place == ALONE and entry[0]:
                    continue  # (ALONE: nothing in flight, a load of 0)
                key = (n >= 2, kind.skill, entry[0], entry[1])  # (2, 3: QUEUE)
                if best is None or key < best:
                    best = key
        return best

    def check(self, slots: Iterable[WorkerSlot]) -> None:
        """Every worker filed as it is (AssertionError otherwise): for the state's checks."""
        slots = list(slots)
        assert set(self._filed) == {s.name for s in slots}, "the workers filed differ"
        entries = {(id(kind), n, e) for kind in self.kinds.values()
                   for n, heap in enumerate(kind.heaps) for e in heap}
        assert {id(k) for k in self.kinds.values()} == \
            {id(k) for _, k, _ in self._filed.values()}, "a kind with no worker, or unlisted"
        for slot in slots:
            stamp, kind, n = self._filed[slot.name]
            assert kind.profile == (slot.skill, slot.role, slot.handlers), \
                f"{slot.name}: filed as another kind"
            assert n == heap_of(slot), f"{slot.name}: filed in heap {n}, belongs in " \
                                       f"{heap_of(slot)} (changed without touch()?)"
            assert n is None or (id(kind), n, (slot.running / slot.slots, slot.name, stamp)) \
                in entries, f"{slot.name}: its entry is not in its heap"
        members = Counter(id(k) for _, k, _ in self._filed.values())
        live = Counter((id(k), n) for _, k, n in self._filed.values())
        for kind in self.kinds.values():
            assert kind.members == members[id(kind)], f"{kind.profile}: members"
            assert kind.live == [live[id(kind), n] for n in range(4)], f"{kind.profile}: live"
