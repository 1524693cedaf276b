"""Who the workers are and where each is in its life. Pure: no I/O, the clock is a parameter.

A worker's life, in one table (:data:`TRANSITIONS`):

- ``PROBATION``: just registered (or found to miss what it was sent): one task at a time, sent
  asking for confirmation, until it shows it reads its queue;
- ``TRUSTED``: it reads what it is sent: up to its capacity;
- ``STALLED``: it did not confirm a task in time; the task was taken back, and it gets nothing
  until it answers about a task it was sent;
- ``DRAINING``: it is leaving (SIGTERM): no new tasks, its running ones finish;
- ``GONE``: it left, was lost, or was replaced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..wire import message
from .tasks import DEFAULT_ROLE


@message(name="ceylon_net.AgentDetail")
@dataclass(slots=True)
class AgentDetail:
    """Who an agent is. ``id`` is unique in the workspace; ``host`` is the address the admin
    saw the agent connect from."""

    id: str
    name: str
    role: str = DEFAULT_ROLE
    skill: int = 0
    capacity: int = 1
    host: str = ""


class WorkerState(enum.Enum):
    PROBATION = "probation"
    TRUSTED = "trusted"
    STALLED = "stalled"
    DRAINING = "draining"
    GONE = "gone"


class WorkerEvent(enum.Enum):
    READS = "reads"  # it answered about a task it was sent: it reads its queue
    UNCONFIRMED = "unconfirmed"  # it did not confirm a task in time: taken back
    MISSED = "missed"  # its heartbeat did not list tasks sent to it a while ago
    UNREACHABLE = "unreachable"  # a message to it could not be sent: gone, or not reading
    DRAIN = "drain"  # it is leaving: finish what you run, take nothing new
    GONE = "gone"  # it left, was lost, or was replaced


P, T, S, D, G = (WorkerState.PROBATION, WorkerState.TRUSTED, WorkerState.STALLED,
                 WorkerState.DRAINING, WorkerState.GONE)
E = WorkerEvent

# (state, event) -> next state. An event not listed for a state leaves it as it is: a draining
# worker that returns a result is still draining; a trusted one that confirms stays trusted.
TRANSITIONS: dict[tuple[WorkerState, WorkerEvent], WorkerState] = {
    (P, E.READS): T, (S, E.READS): T,
    (P, E.UNCONFIRMED): S, (P, E.UNREACHABLE): S, (T, E.UNREACHABLE): S,
    (T, E.MISSED): P, (S, E.MISSED): P,
    (P, E.DRAIN): D, (T, E.DRAIN): D, (S, E.DRAIN): D,
    (P, E.GONE): G, (T, E.GONE): G, (S, E.GONE): G, (D, E.GONE): G,
}


def next_state(state: WorkerState, event: WorkerEvent) -> WorkerState:
    return TRANSITIONS.get((state, event), state)


def room(state: WorkerState, capacity: int) -> int:
    """Tasks a worker in ``state`` may have in flight."""
    if state is WorkerState.TRUSTED:
        return capacity
    if state is WorkerState.PROBATION:
        return min(1, capacity)
    return 0


@dataclass(slots=True)
class WorkerRecord:
    """A registered worker as the admin knows it: its ROUTER identity, who it is, when it was
    last heard from, whether it hears the admin's heartbeats on PUB, and from which broadcast
    on it hears broadcasts (None: not yet; until then it is not "connected" to the user)."""

    peer: bytes
    detail: AgentDetail
    last_seen: float
    hears_pub: bool = False
    heard: int | None = None  # it receives every broadcast numbered after this
    delivered: int = 0  # the last broadcast it confirmed, in order
    registered_at: float = 0.0
    # Repairs: it lists what it misses in every heartbeat until it has it, and a slow worker
    # may list a range again before what was sent reaches it. Up to where it was told to skip
    # (counted once), up to where broadcasts were sent again to it, and when.
    skipped_to: int = 0
    resent_to: int = 0
    resent_at: float = 0.0
    # Broadcasts it lost, as its heartbeats say (None: it does not say, or has not yet), and
    # how many of them the admin has not said in its log yet (said once a heartbeat at most).
    lost: int | None = None
    lost_unsaid: int = 0
    lost_said_at: float = float("-inf")
    # It left before without confirming broadcasts: (the last it had confirmed, how many),
    # no longer counted unconfirmed if it comes back with the inbox it had.
    unconfirmed: tuple[int, int] | None = None
    # Of its slots, those held by a handler thread that outlived its task (as it says).
    stuck: int = 0
    # It said something since its (latest) HELLO: it has its WELCOME (see Membership.
    # purge_lost: one that has not may not have it yet); when not, since when it has said
    # only HELLOs (the first of them: a HELLO again does not make it younger).
    answered: bool = False
    hello_at: float = 0.0

    @property
    def name(self) -> str:
        return self.detail.name


class Registry:
    """Registered workers by ROUTER identity and by name (names are unique); also in the order
    they were last heard from, and which do not hear the admin's PUB heartbeat, so the
    periodic checks cost what changed, not the number of workers."""

    def __init__(self) -> None:
        self.by_peer: dict[bytes, WorkerRecord] = {}
        self.by_name: dict[str, bytes] = {}
        self._by_seen: dict[bytes, None] = {}  # least recently heard from first
        self.unheard: set[bytes] = set()  # not hearing the PUB heartbeat
        self.unanswered: set[bytes] = set()  # said nothing but HELLO since they registered
        self.stuck = 0  # slots held by a handler past its task, all workers' (see set_stuck)

    def __len__(self) -> int:
        return len(self.by_peer)

    def __contains__(self, peer: bytes) -> bool:
        return peer in self.by_peer

    def get(self, peer: bytes) -> WorkerRecord | None:
        return self.by_peer.get(peer)

    def named(self, name: str) -> WorkerRecord | None:
        peer = self.by_name.get(name)
        return None if peer is None else self.by_peer[peer]

    def add(self, rec: WorkerRecord) -> None:
        self.by_peer[rec.peer] = rec
        self.by_name[rec.name] = rec.peer
        self._by_seen[rec.peer] = None
        self.stuck += rec.stuck
        if not rec.hears_pub:
            self.unheard.add(rec.peer)
        if not rec.answered:
            self.unanswered.add(rec.peer)

    def remove(self, peer: bytes) -> WorkerRecord | None:
        rec = self.by_peer.pop(peer, None)
        if rec is not None:
            self.by_name.pop(rec.name, None)
            self._by_seen.pop(peer, None)
            self.unheard.discard(peer)
            self.unanswered.discard(peer)
            self.stuck -= rec.stuck
        return rec

    def set_stuck(self, rec: WorkerRecord, stuck: int) -> int:
        """The worker says ``stuck`` of its slots are held; returns what it said before."""
        was, rec.stuck = rec.stuck, stuck
        if rec.peer in self.by_peer:
            self.stuck += stuck - was
        return was

    def heard_from(self, rec: WorkerRecord, now: float) -> None:
        rec.last_seen = now
        seen = self._by_seen
        del seen[rec.peer]
        seen[rec.peer] = None  # to the end: the order stays by last_seen

    def hears(self, rec: WorkerRecord, pub: bool) -> None:
        """Whether the worker says it hears the admin's heartbeat on PUB."""
        rec.hears_pub = pub
        (self.unheard.discard if pub else self.unheard.add)(rec.peer)

    def answers(self, rec: WorkerRecord, answered: bool, now: float) -> None:
        """It said something other than HELLO (``answered``), or a HELLO after it had: its
        first unanswered HELLO's time is kept (see unanswered_since)."""
        if answered:
            rec.answered = True
            self.unanswered.discard(rec.peer)
        elif rec.answered:
            rec.answered, rec.hello_at = False, now
            self.unanswered.add(rec.peer)

    def excuse(self, gap: float, now: float) -> None:
        """The admin could not hear anyone for ``gap`` s up to ``now``: every worker's
        silence is counted without it (once a pause: sorted again by last_seen). Its
        receive loop may have read some just before and after: never later than now."""
        for rec in self.by_peer.values():
            rec.last_seen = min(rec.last_seen + gap, now)
            if not rec.answered:
                rec.hello_at = min(rec.hello_at + gap, now)
        self._by_seen = dict.fromkeys(sorted(self._by_seen,
                                             key=lambda p: self.by_peer[p].last_seen))

    def unanswered_since(self, before: float) -> list[WorkerRecord]:
        """Workers that said nothing but HELLO since one before ``before`` (few: those just
        registering)."""
        return sorted((rec for peer in self.unanswered
                       if (rec := self.by_peer[peer]).hello_at < before),
                      key=lambda rec: rec.hello_at)

    def silent_since(self, before: float) -> list[WorkerRecord]:
        """Workers not heard from since ``before`` (looking no further than the first that
        was)."""
        out = []
        for peer in self._by_seen:
            rec = self.by_peer[peer]
            if rec.last_seen >= before:
                break
            out.append(rec)
        return out

    def details(self) -> list[AgentDetail]:
        return [r.detail for r in self.by_peer.values()]

    def hearing(self) -> list[WorkerRecord]:
        """Workers that hear broadcasts (for the user: the connected agents)."""
        return [r for r in self.by_peer.values() if r.heard is not None]
