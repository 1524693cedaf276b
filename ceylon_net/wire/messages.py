"""The control messages of the protocol (HELLO, WELCOME, heartbeats, acks, client requests).
The seeds' Task, TaskAssignment and TaskResult live with the task model (ceylon_net.core.tasks)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .kinds import MAX_HANDLERS, MAX_HELD, MAX_RANGES, MAX_WATCH
from .schema import message


@message(name="ceylon_net.Hello")
@dataclass(slots=True)
class Hello:
    """Worker -> admin: who I am. Protocol version and workspace travel in the header."""

    name: str
    role: str
    skill: int
    capacity: int
    # On registering again (after the admin went silent or restarted): what this worker is
    # still running, as [task id, attempt], and the results the admin never acknowledged.
    # A worker holds at most its capacity of tasks, so these are bounded before conversion.
    running: list[list[Any]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": MAX_HELD})
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list,
                                                      metadata={"max_items": MAX_HELD})
    handlers: list[str] = dataclasses.field(default_factory=list,  # task handlers it has
                                            metadata={"max_items": MAX_HANDLERS})
    # Its --max-message-bytes (0: not said, an older worker): its socket drops a larger frame
    # with the connection, so an admin that would send larger ones refuses it instead.
    max_message_bytes: int = 0
    # It answers a RELEASE of a task it never got (it gives it back): an assignment the admin
    # did not hear reached it in time may still be on its way, and is asked back, not given
    # to another worker at once, which ran it twice when it came (False: an older worker).
    answers_unheld: bool = False
    # Queued tasks it gave back as it registers again, not started (as [task id, attempt]):
    # said with its next results too, but the admin reads this first (else it took them
    # for assignments lost on the way, and warned of a link at fault).
    released: list[list[Any]] = dataclasses.field(default_factory=list,
                                                  metadata={"max_items": MAX_HELD})


@message(name="ceylon_net.Heartbeat")
@dataclass(slots=True)
class Heartbeat:
    """Worker -> admin, every heartbeat: the tasks it holds and the results it has not had
    acknowledged, as [task id, attempt]. An assignment the admin believes delivered but the
    worker never got (a connection replaced mid-flight) is found this way and requeued."""

    holding: list[list[Any]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": 2 * MAX_HELD})
    # The worker hears the admin's heartbeats on PUB: the admin need not send it its own.
    pub: bool = False
    # Broadcasts: the number it started hearing after (-1: it hears none yet), the last one
    # it delivered in order, and [first, last] ranges it knows it missed (sent again to it).
    heard: int = -1
    delivered: int = 0
    missing: list[list[int]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": MAX_RANGES})
    # How many broadcasts of this admin process it has skipped, lost (the admin's ring no
    # longer held them): the true count, where the admin's SKIPs are an upper bound (some of
    # what it skips may be on its way). -1: not said (an older worker).
    lost: int = -1
    # Its slots held by a handler's thread that runs on after its task ended (past its time
    # limit, or cancelled: a thread cannot be stopped): they run nothing else until it ends.
    # -1: not said (an older worker).
    stuck: int = -1


@message(name="ceylon_net.Ack")
@dataclass(slots=True)
class Ack:
    """Admin -> worker: these results ([task id, attempt]) are recorded (or were stale);
    the worker may forget them."""

    results: list[list[Any]]


@message(name="ceylon_net.Cancel")
@dataclass(slots=True)
class Cancel:
    """Stop these tasks ([task id, attempt]); a worker reports each as a cancelled result."""

    tasks: list[list[Any]]
    reason: str = ""


@message(name="ceylon_net.Release")
@dataclass(slots=True)
class Release:
    """Admin -> worker: give back these tasks ([task id, attempt]) if they have not started
    (another worker is idle); one that started runs on here."""

    tasks: list[list[Any]] = dataclasses.field(default_factory=list,
                                               metadata={"max_items": MAX_HELD})


@message(name="ceylon_net.Started")
@dataclass(slots=True)
class Started:
    """Worker -> admin: tasks ([task id, attempt]) that started since the last report (not
    those whose result goes with it), and tasks given back on a RELEASE."""

    started: list[list[Any]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": MAX_HELD})
    released: list[list[Any]] = dataclasses.field(default_factory=list,
                                                  metadata={"max_items": MAX_HELD})
    stuck: int = -1  # as in Heartbeat: said when it changed (-1: not said)


@message(name="ceylon_net.Welcome")
@dataclass(slots=True)
class Welcome:
    """Admin -> worker: you are in; where the PUB bus is; how often we both heartbeat."""

    agent_id: str
    admin: str
    pub_port: int
    heartbeat: float
    liveness: int
    epoch: int = 0  # this admin process's broadcast sequence: a new one restarts the numbers
    # The admin's --max-message-bytes (0: not said, an older admin): a worker's broadcast or
    # message over it would be dropped with the connection, so the worker refuses to send it.
    max_message_bytes: int = 0


@message(name="ceylon_net.Reject")
@dataclass(slots=True)
class Reject:
    reason: str
    # True: "I do not know you (I restarted, or declared you lost): say HELLO again", not a
    # refusal. A worker that gets it while registering ignores it.
    retry: bool = False


@message(name="ceylon_net.Skip")
@dataclass(slots=True)
class Skip:
    """Admin -> agent: broadcasts ``first``..``last`` it asked for are no longer kept (it fell
    behind by more than the admin's ring): go on without them."""

    first: int
    last: int


@message(name="ceylon_net.End")
@dataclass(slots=True)
class End:
    """Admin -> workers: the run is over (or the admin is shutting down); exit cleanly."""

    reason: str


@message(name="ceylon_net.Event")
@dataclass(slots=True)
class Event:
    """A status event on the PUB bus: ``worker_joined``, ``worker_lost``, ``run_finished``..."""

    event: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@message(name="ceylon_net.Status")
@dataclass(slots=True)
class Status:
    """The admin's answer to STATUS: see ceylon_net.status.snapshot for the fields."""

    snapshot: dict[str, Any]


@message(name="ceylon_net.Submission")
@dataclass(slots=True)
class Submission:
    """A client's batch: ``doc`` is a tasks/groups document as in a tasks file. ``wait``:
    progress now and then and a REPORT at the end; ``follow``: a DONE as each task ends, and
    GROUP news of its groups (what futures need)."""

    doc: dict[str, Any]
    wait: bool = True
    sequential: bool = False
    follow: bool = False
    # Its name, the client's choice, unique (0: none): sent again under it, its answer lost,
    # it is answered as the first was, not taken twice; each DONE of its tasks names it.
    sid: int = 0


@message(name="ceylon_net.Watch")
@dataclass(slots=True)
class Watch:
    """Client -> admin: send a DONE for each of these tasks when it ends (at once for those
    that have), and GROUP news of these groups (by name; at once the summary of those that
    finished): how a client picks its work up again after the admin restarted."""

    tasks: list[Any] = dataclasses.field(default_factory=list,
                                         metadata={"max_items": MAX_WATCH})
    groups: list[str] = dataclasses.field(default_factory=list,
                                          metadata={"max_items": MAX_WATCH})
    # [batch, run] of batches waited for (as Submitted named them): their PROGRESS from now
    # on and their REPORT (at once for one that is done, with ``error`` for one unknown).
    batches: list[Any] = dataclasses.field(default_factory=list,
                                           metadata={"max_items": MAX_WATCH})


@message(name="ceylon_net.TaskDone")
@dataclass(slots=True)
class TaskDone:
    """Admin -> client: a task ended. ``status`` is completed, failed or cancelled (or
    unknown: the admin has no such task); ``result`` the worker's TaskResult in its wire form
    when one came; ``reason`` why it ended without one."""

    task_id: Any
    status: str
    result: dict[str, Any] | None = None
    reason: str | None = None
    sid: int = 0  # the Submission it came in (0: none; a task of a tasks file, say)


@message(name="ceylon_net.GroupNews")
@dataclass(slots=True)
class GroupNews:
    """Admin -> client: something happened to a group it submitted (goal_achieved,
    goal_failed, group_progress, tasks_cancelled, group_finished)."""

    group: str
    event: str
    message: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    sid: int = 0  # the Submission the group came in (0: none; a group of a tasks file, say)


@message(name="ceylon_net.Submitted")
@dataclass(slots=True)
class Submitted:
    batch: int
    tasks: int
    run: str = ""  # the admin's run (kept in its journal): a WATCH of the batch names it


@message(name="ceylon_net.BatchProgress")
@dataclass(slots=True)
class BatchProgress:
    batch: int
    done: int
    total: int
    succeeded: int


@message(name="ceylon_net.BatchReport")
@dataclass(slots=True)
class BatchReport:
    """The batch's run report, in the --report-json form."""

    batch: int
    report: dict[str, Any]
    error: str | None = None  # no report: why (the admin does not know the batch)
