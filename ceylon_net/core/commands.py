"""What :class:`~ceylon_net.core.admin_state.AdminState` asks the network edge to do: plain,
comparable values, so a test says ``assert Send(peer, Kind.WELCOME, welcome) in cmds``.

The edge carries them out in order, after it has written the journal: a task is on disk
before its assignment leaves, and a result before its acknowledgement does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..wire import Event, Header, Kind
from .tasks import Task, TaskAssignment, TaskId, TaskResult, TaskStatus
from .workers import AgentDetail


@dataclass(frozen=True, slots=True)
class Send:
    """A message to one peer over the ROUTER (best effort: a peer that is gone or full is
    found by the heartbeats). ``msg`` is a registered message, or a list sent as one batch."""

    peer: bytes
    kind: bytes
    msg: Any
    answers: int | None = None  # the msg_id of the client request this answers


@dataclass(frozen=True, slots=True)
class Assign:
    """Tasks for one worker: send them in one frame and publish them on PUB. If they cannot be
    sent, tell the state (:meth:`AdminState.undelivered`) so they go back to the queue."""

    peer: bytes
    worker: str
    assignments: list[TaskAssignment]


@dataclass(frozen=True, slots=True)
class Forward:
    """A peer's frame passed on as it came (its header names the sender): to one peer, or on
    PUB when ``peer`` is None."""

    peer: bytes | None
    kind: bytes
    header: Header
    payload: bytes
    held: bool = False  # a message held for its receiver while it was lost (see Mailbox)


@dataclass(frozen=True, slots=True)
class Publish:
    """On the PUB bus, for observers; nothing correct depends on it. ``msg`` as for
    :class:`Send`, or bytes already encoded (then ``type`` names their message type). ``seq``
    goes in the header (the admin's heartbeat: how many broadcasts there were)."""

    kind: bytes
    msg: Any
    type: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """These results ([task id, attempt]) are recorded: tell their worker, once the journal
    holds them (the edge sends acknowledgements a moment later, several in one frame)."""

    peer: bytes
    results: list[list[Any]]


@dataclass(frozen=True, slots=True)
class Timer:
    """Call :meth:`AdminState.timer` with ``key`` once ``after`` seconds have passed since this
    command was carried out (a deadline that starts when what it is about has left: a worker on
    probation has ``after`` seconds from the moment its task was sent to confirm it), and what
    had reached the admin by then is read (a deadline judges what came in time); not waiting
    for that unless ``deadline`` (a round asked for, the ahead round: see AdminState._plan)."""

    key: tuple[Any, ...]
    after: float
    deadline: bool = True


@dataclass(slots=True)
class Finished:
    """A task ended, whatever the reason: every waiter, report line, metric and event follows
    from this one command. ``result`` is its worker's answer (success or failure); a task that
    ended without one (cancelled, a dependency cancelled, lost too often, unassignable) has
    ``result`` None and ``reason`` saying why. (Not frozen as the other commands are: there
    is one per task, and a frozen dataclass takes 0.56 µs to build here against 0.15.)"""

    task_id: TaskId
    status: TaskStatus
    result: TaskResult | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class NewWork:
    """Tasks and groups were queued: the journal (when there is one) records them, before
    anything else of the round goes out."""

    tasks: list[Task]
    groups: list[Any]  # TaskGroup
    batch: Any = None  # the client's Batch they came in (ceylon_net.core.batches)
    loose: bool = False  # execute()'s: forgotten once finished, beyond --keep-finished


@dataclass(frozen=True, slots=True)
class Forgot:
    """Finished client batches forgotten (--keep-finished): the journal (when there is one)
    drops their tasks, groups and batches, keeping the counts and the next batch's number."""

    tasks: list[TaskId]
    groups: list[str]
    batches: list[int]
    next_batch: int
    counts: list[int]  # the board's Forgotten.row(), as it stands
    sids: list[tuple[int, int]] = field(default_factory=list)  # [(name, batch)], the named
    loose: list[TaskId] = field(default_factory=list)  # of ``tasks``, execute()'s


@dataclass(frozen=True, slots=True)
class Deliver:
    """A broadcast or direct message for the admin's own handlers (``@on_message``)."""

    header: Header
    payload: bytes


@dataclass(frozen=True, slots=True)
class Connected:
    """A worker joined and hears broadcasts: run the admin's ``on_agent_connected``."""

    agent: AgentDetail


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the admin's log (the core has no logger of its own)."""

    level: str  # TRACE, DEBUG, INFO, WARNING, ERROR
    message: str


Command = Send | Assign | Forward | Publish | Acknowledge | Timer | Finished | NewWork | \
    Forgot | Deliver | Connected | Log


class Outbox:
    """The commands of the input being handled, in the order they arose. ``listening``: the
    kinds someone subscribes to on PUB (None: not known, so all); what nobody would hear is
    not even made."""

    __slots__ = ("commands", "listening")

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.listening: frozenset[bytes] | None = None

    def send(self, peer: bytes, kind: bytes, msg: Any, answers: int | None = None) -> None:
        self.commands.append(Send(peer, kind, msg, answers))

    def publish(self, kind: bytes, msg: Any, type: str | None = None,
                seq: int | None = None) -> None:
        if self.listening is None or kind in self.listening:
            self.commands.append(Publish(kind, msg, type, seq))

    def event(self, name: str, /, **data: Any) -> None:
        """A status event on PUB (``worker_joined``, ``run_finished``...)."""
        if self.listening is None or Kind.EVENT in self.listening:
            self.commands.append(Publish(Kind.EVENT, Event(name, data)))

    def log(self, level: str, message: str) -> None:
        """A line for the log. What peers and submitters name (a task's description, a role,
        a group) goes into messages: a terminal escape in it is written escaped, and a line
        after a newline is indented, or it would forge lines (or colours) in the admin's log
        (a traceback the admin logs stays readable, indented)."""
        if not message.isprintable():
            message = "\n    ".join(
                "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
                for line in message.split("\n"))
        self.commands.append(Log(level, message))

    def add(self, command: Command) -> None:
        self.commands.append(command)

    def take(self) -> list[Command]:
        out, self.commands = self.commands, []
        return out
