"""The admin's task bookkeeping: every task's state, who runs it, its result. No I/O, no clock
of its own (``now`` is the time of the input being handled, set by the caller).

The board owns the scheduler's ready queue and worker slots, so "a result came in" and "a
worker left" update both in one place. A task is in exactly one :class:`TaskState`, and moves
only along :data:`TASK_TRANSITIONS`: waiting (on dependencies), queued, in flight on one worker
(assigned, then running once sent), or finished (completed, failed, cancelled).

Dependencies are *gates*: a task waits until every gate it names is open. A task's own gate
``("task", id)`` opens when it completes and fails when it fails or is cancelled; other gates
(a whole group, say) are opened or failed by whoever owns them. A failed gate cancels what
waits on it, and so on down the chain.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, defaultdict
from collections.abc import Container, Hashable, Iterable, KeysView, Mapping
from dataclasses import dataclass
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

from .checks import refuse_bad_dependencies, refuse_duplicates
from .scheduler import ALONE, ANYWHERE, SLOT, Blocked, Scheduler, WorkerSlot, can_do
from .tasks import RunReport, Task, TaskAssignment, TaskId, TaskOutcome, TaskResult, TaskStatus
from .workers import WorkerEvent, WorkerState, next_state

FINISHED = frozenset((TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED))
_ID = attrgetter("id")
_CLASS = attrgetter("difficulty", "required_role", "priority", "handler")  # push_run's order
Gate = Hashable


class TaskState(enum.IntEnum):  # an int: hashed on every move, and int's hash is C
    WAITING = 1  # on dependencies (gates)
    QUEUED = 2  # ready, in the scheduler's queue
    ASSIGNED = 3  # given to a worker, not yet sent
    RUNNING = 4  # sent to its worker
    COMPLETED = 5
    FAILED = 6  # a failed result, or lost with its workers max_attempts times (dead)
    CANCELLED = 7  # on request, by a goal, a failed dependency, or unassignable

    def __str__(self) -> str:
        return self.name.lower()


W, Q, A, R = TaskState.WAITING, TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING
C, F, X = TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED
# Every legal move of a task; anything else is a bug here and raises.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    W: frozenset((Q, X)),
    # A queued task that its lost worker finished after all takes that result (C, F, X).
    Q: frozenset((A, C, F, X)),
    A: frozenset((R, Q, C, F, X)),  # Q: not sent, lost, taken back, or never reached it
    R: frozenset((Q, C, F, X)),
    C: frozenset(), F: frozenset(), X: frozenset(),
}
STATUS_OF = {W: TaskStatus.PENDING, Q: TaskStatus.PENDING, A: TaskStatus.ASSIGNED,
             R: TaskStatus.RUNNING, C: TaskStatus.COMPLETED, F: TaskStatus.FAILED,
             X: TaskStatus.CANCELLED}
IN_FLIGHT = frozenset((A, R))
UNASSIGNABLE = "no connected worker can take it"  # the reason a given-up task ends with
TRUSTED = WorkerState.TRUSTED
ENDED = frozenset((C, F, X))
# A journal keeps public statuses: a task that was on a worker is taken to be running there;
# a pending one is placed again (waiting or queued) as the board is rebuilt.
_RESTORED = {TaskStatus.PENDING: W, TaskStatus.ASSIGNED: R, TaskStatus.RUNNING: R,
             TaskStatus.COMPLETED: C, TaskStatus.FAILED: F, TaskStatus.CANCELLED: X}


def unassignable_reason(why: str) -> str:
    """The reason a task given up ends with: none could take it, and why, where known."""
    return f"{UNASSIGNABLE} ({why})" if why else UNASSIGNABLE


def unassignable(reason: str | None) -> bool:
    """A task ended with this reason was given up: no connected worker could take it (the
    reason goes on to say why, where known: 'needs skill >= 8; best connected is 6')."""
    return reason is not None and reason.startswith(UNASSIGNABLE)


# What the reason of a task cancelled for a dependency ends with when a failure lies behind
# it, told down a chain (see blames, and ceylon_net.core.upstream).
AFTER_FAILURE = " (for a failure upstream)"
# How such a reason begins (fail_gate's, a group's, a restored task's: see _restore_pending)
GATE_REASONS = ("dependency ", "group ", "a dependency ")


def blames(reason: str | None) -> bool:
    """Does this reason, of a task cancelled for a dependency (TaskBoard.fail_gate), say a
    failure lies behind it: its dependency failed, could not be assigned, or was itself
    cancelled for a failure?"""
    return reason is not None and reason.startswith(GATE_REASONS) and (
        reason.endswith((" failed", AFTER_FAILURE)) or " was unassigned: " in reason)


def unassignable_why(reason: str) -> str:
    """What such a reason says of why (see unassignable_reason), or ''."""
    said = reason.removeprefix(UNASSIGNABLE).strip()
    return said[1:-1] if said.startswith("(") and said.endswith(")") else said


class Held(dict):
    """A worker's tasks in flight, in the order they were sent (its queue is first in, first
    out): an ordered set, each with the time its worker was heard to start it (None: not
    yet)."""

    def add(self, task_id: TaskId) -> None:
        self[task_id] = None

    def discard(self, task_id: TaskId) -> None:
        self.pop(task_id, None)


class IllegalTransition(AssertionError):
    """The board tried to move a task along a path TASK_TRANSITIONS does not have (our bug)."""


def task_gate(task_id: TaskId) -> Gate:
    return ("task", task_id)


@dataclass(slots=True)
class TaskRecord:
    task: Task
    state: TaskState = TaskState.WAITING
    worker: str | None = None
    attempt: int = 0
    seq: int | None = None  # age stamp in the queue, kept across requeues
    result: TaskResult | None = None
    reason: str | None = None  # why it ended without a result (cancelled, dead)
    assigned_at: float = 0.0  # monotonic time of the latest assignment
    ready_at: float = 0.0  # when it last became ready (queued)
    index: int = 0  # submission order: released dependents keep it
    losses: int = 0  # times its worker was lost while holding it
    confirmed: bool = False  # its worker said it holds the latest assignment
    asked: bool = False  # the latest assignment asked its worker (on probation) to confirm
    stolen: bool = False  # taken back from a worker on probation: trusted workers only since
    stopping: str | None = None  # asked its worker to cancel it: if it comes back, it ends
    started: bool = False  # its worker said it started the latest assignment
    ahead: bool = False  # the latest assignment was queued behind a full worker's slots
    # It was with a worker that died or did not answer: from then on it goes only to a free
    # slot, never into a worker's queue, so if it is what kills workers, each crash counts;
    # and on its last attempt it runs alone (see TaskBoard.place).
    front: bool = False
    batch: int = 0  # the client's batch (ceylon_net.core.batches) it came in, while open
    sid: int = 0  # that batch's name, as its client gave it (Batch.sid): its DONEs say it
    # Its attempts are numbered above this: those up to it were of a forgotten task of the
    # same id (--keep-finished), whose results and copies a worker may still hold.
    base: int = 0

    @property
    def status(self) -> TaskStatus:
        """The public status (TaskStatus): waiting and queued are both PENDING."""
        return STATUS_OF[self.state]

    @property
    def dead(self) -> bool:
        """Failed without a result of its own: lost with its workers too often."""
        return self.state is TaskState.FAILED and self.reason is not None


@dataclass(slots=True)
class Forgotten:
    """Finished tasks the board dropped (:meth:`TaskBoard.forget`: a serving admin's old
    batches, --keep-finished), by how they ended, so the counts it shows go on including
    them. ``ran``: those of them that ran to a result (``finished_order`` holds those kept)."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    dead: int = 0  # of the failed: lost with their workers too often
    ran: int = 0
    unassigned: int = 0  # of the cancelled: given up, no worker could take them (the admin's)
    # The highest attempt number they reached: a task given later starts above it, so that
    # a result a worker still holds of a forgotten task cannot pass for one of a new task
    # given the same id (results are known by task id and attempt).
    attempts: int = 0

    @property
    def tasks(self) -> int:
        return self.completed + self.failed + self.cancelled

    def row(self) -> list[int]:
        """As a journal keeps it."""
        return [self.completed, self.failed, self.cancelled, self.dead, self.ran,
                self.unassigned, self.attempts]


class TaskBoard:
    def __init__(self, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts
        self.now = 0.0  # the time of the input being handled (queue-wait figures)
        self.records: dict[TaskId, TaskRecord] = {}
        self.scheduler = Scheduler()
        self.finished: list[TaskRecord] = []  # every finish, in order; consumers drain it
        self._in_flight: dict[str, Held] = defaultdict(Held)
        self._asking_back()
        # Attempts of tasks lost with a worker found gone, while the task is open: task ->
        # {attempt: (that worker, whether the loss counted, its front flag before)}. Should
        # the worker come back still holding one, the loss is undone, and the task stays
        # with it if no one else has it (see keep). Journaled with the task (lost_with).
        self._lost_with: dict[TaskId, dict[int, tuple[str, bool, bool]]] = {}
        # Asked back for a worker back from being taken for lost that still runs it (see
        # _claim): task -> (that worker, its attempt); _late: copies told to stop as another
        # has the task (see reclaim); taken_late, taken_claimed: successes of each, taken.
        self._claims: dict[TaskId, tuple[str, int]] = {}
        self._late: dict[TaskId, tuple[str, int]] = {}
        self.to_cancel: dict[str, dict[str, list[tuple[TaskId, int]]]] = {}  # copies to stop
        self._steal_seen, self._steal_due = -1, 0.0  # steals(): idle till the scheduler or time
        # preempts(): the lowest priority queued so far; due when another was queued since
        # it last found nothing to ask back
        self._floor: int | None = None
        self._preempt_due = False
        self._stolen: dict[str, dict[TaskId, int]] = {}  # on probation: {task: attempt} taken
        self._stalled_at: dict[str, float] = {}  # ... back from it, and when
        self._unreachable: set[str] = set()  # stalled, as a send to them failed (see unsent)
        self._waiting: dict[TaskId, set[Gate]] = {}
        self._dependents: dict[Gate, set[TaskId]] = defaultdict(set)
        self._opened: set[Gate] = set()
        self._failed: dict[Gate, str] = {}  # gates (not a task's) that never open, and why
        self.slots_of_gone: dict[str, int] = {}  # restored: workers' slots, by name
        self._open = self.succeeded = self.taken_late = self.taken_claimed = 0
        self.forgotten = Forgotten()  # finished tasks dropped (forget): still counted
        self._ran: list[TaskId] = []  # tasks with a result, in the order results came
        self.dead: list[TaskId] = []  # failed because attempts ran out
        self.dirty: set[TaskId] | None = None  # a set when a journal wants the changes
        # Tasks that went back to the queue or out to a worker, when someone follows them
        # (task groups show their tasks' live status): a list, drained by the follower.
        self.moved: list[TaskId] | None = None

    def _asking_back(self) -> None:
        """What is asked back from workers (RELEASE), and why."""
        self._stealing: dict[TaskId, str] = {}  # asked back from its worker: for whom
        # On a worker, not started, and to end cancelled rather than run (a goal was met):
        # why. to_release: {worker: [(task, attempt)]} to ask back (for any of these), not
        # asked yet.
        self._unless_started: dict[TaskId, str] = {}
        self.to_release: dict[str, list[tuple[TaskId, int]]] = {}
        # ... and one that had started there (it runs on): to end cancelled, not run again
        # from the start, should it come back to the queue (its worker lost): why.
        self._not_again: dict[TaskId, str] = {}
        # In flight, not heard to have reached their worker in time (on probation, not
        # confirmed; or not listed by its heartbeats): asked back, not given elsewhere at
        # once, for the assignment may still be on its way (TCP keeps it; it ran twice when
        # it came). Given back (or never got: a worker that answers so says so, see
        # WorkerSlot.answers_unheld), it goes back to the queue; started there, it runs on;
        # unanswered too long, it goes back as before (see reclaim). Task -> (its worker,
        # attempt, first asked).
        self._unheard: dict[TaskId, tuple[str, int, float]] = {}
        self.unheard_asked: list[TaskId] = []  # asked back so, since the caller last looked
        # Workers such a task was given up on: what is sent to them does not arrive (their
        # heartbeats come, their answers do not). Stalled (given a task, it would be given
        # up on again, and again), the tasks still asked back each heartbeat, until an
        # answer about one shows that what is sent reaches them again. Worker -> {task:
        # attempt}; and those heard again, since the caller last looked.
        self._unanswering: dict[str, dict[TaskId, int]] = {}
        self.hears_again: list[str] = []

    # ---- tasks
    def add(self, tasks: list[Task], gates: Mapping[TaskId, Iterable[Gate]] | None = None) -> None:
        """Queue new tasks; those with gates wait until all are open. A duplicate id (in the
        batch or already known) refuses the whole batch."""
        self._validate(tasks)
        self._open += len(tasks)
        records = self.records
        if not gates and not any(t.depends_on for t in tasks):
            self._enqueue_new(tasks)  # nothing to wait for: straight to the queue
            return
        gates = {t.id: [*(gates or {}).get(t.id, ()), *map(task_gate, t.depends_on)]
                 for t in tasks}
        floor = self.forgotten.attempts
        # (index: a forgotten task's is never given again; seq: its age stamp, taken now, so
        # that one queued when its dependencies complete goes before equal tasks after it)
        for task, seq in zip(tasks, self.scheduler.stamps(len(tasks)), strict=True):
            records[task.id] = TaskRecord(task, attempt=floor, seq=seq, index=self.total,
                                          base=floor)
        for task in tasks:
            pending = {g for g in gates.get(task.id, ()) if not self._is_open(g)}
            if pending:
                self._waiting[task.id] = pending
                for g in pending:
                    self._dependents[g].add(task.id)
            else:
                self._enqueue(self.records[task.id])
        for task in tasks:  # a dependency that had already failed
            for g in list(self._waiting.get(task.id, ())):
                if self._is_failed(g):
                    self.fail_gate(g, self._failed.get(g) or self._ended_as(g[1]))

    def _validate(self, tasks: list[Task]) -> None:
        """Duplicate ids, unknown dependencies and cycles are refused, naming the culprit."""
        refuse_duplicates([t.id for t in tasks], self.records, "task id")
        refuse_bad_dependencies(tasks, self.records)

    def _is_open(self, gate: Gate) -> bool:
        if isinstance(gate, tuple) and gate[0] == "task" and gate[1] in self.records:
            return self.records[gate[1]].status == TaskStatus.COMPLETED
        return gate in self._opened

    def _ended_as(self, task_id: TaskId) -> str:
        """Why what waits on this task, which ended without completing, is cancelled."""
        rec = self.records[task_id]
        if rec.state is X:
            said = f"was unassigned: {rec.reason}" if unassignable(rec.reason) else \
                "was cancelled" + (AFTER_FAILURE if blames(rec.reason) else "")
            return f"dependency {task_id!r} {said}"
        return f"dependency {task_id!r} failed"

    def _is_failed(self, gate: Gate) -> bool:
        if isinstance(gate, tuple) and gate[0] == "task" and gate[1] in self.records:
            rec = self.records[gate[1]]
            return rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
        return gate in self._failed

    def _move(self, rec: TaskRecord, state: TaskState) -> None:
        """The one place a task changes state."""
        if state not in TASK_TRANSITIONS[rec.state]:
            raise IllegalTransition(f"task {rec.task.id!r}: {rec.state} -> {state}")
        rec.state = state
        if self.dirty is not None:
            self.dirty.add(rec.task.id)
        if self._unheard and state not in IN_FLIGHT:  # (off its worker: asked back no more)
            self._unheard.pop(rec.task.id, None)
        if self.moved is not None and (state is Q or state is R):
            self.moved.append(rec.task.id)

    def place(self, rec: TaskRecord) -> int:
        """Where a task may go (ceylon_net.core.scheduler): anywhere; only a free slot once
        it was with a worker that died or did not answer (TaskRecord.front); alone on a
        worker once, after that, its next loss would be its last. A task that kills its
        workers then takes no other task down with it: the others beside it in its earlier
        crashes were lost fewer than --max-attempts times, and run alone on their last."""
        if not rec.front:
            return ANYWHERE
        return ALONE if rec.losses + 1 >= self.max_attempts else SLOT

    def _enqueue(self, rec: TaskRecord, again: bool = False) -> None:
        """Into the ready queue (``again``: it was queued already, its place changed)."""
        t = rec.task
        if t.priority != self._floor:
            self._saw_priority(t.priority)
        if not again:
            rec.ready_at = self.now
            self._move(rec, Q)
            rec.worker = None
        rec.seq = self.scheduler.push(t.id, t.difficulty, t.required_role, t.priority, rec.seq,
                                      t.handler, rec.stolen, self.place(rec))

    def _enqueue_new(self, tasks: list[Task]) -> None:
        """New tasks, none waiting on anything: queued and recorded in one go (in passes at
        C speed where they share a class and a priority, as a large submission's do)."""
        if not tasks:  # (run_tasks() with nothing new: waits for what was submitted before)
            return
        ids = list(map(_ID, tasks))
        first = _CLASS(tasks[0])
        if all(map(first.__eq__, map(_CLASS, tasks))):
            seqs = self.scheduler.push_run(ids, *first)
            self._saw_priority(first[2])
        else:
            for priority in {t.priority for t in tasks}:
                self._saw_priority(priority)
            seqs = self.scheduler.push_new([(t.id, t.difficulty, t.required_role, t.priority,
                                             t.handler) for t in tasks])
        index, n = self.total, len(tasks)
        self.records.update(zip(ids, map(
            TaskRecord, tasks, repeat(Q), repeat(None), repeat(self.forgotten.attempts), seqs,
            repeat(None), repeat(None), repeat(0.0), repeat(self.now), range(index, index + n)),
            strict=True))
        if self.forgotten.attempts:
            for task_id in ids:
                self.records[task_id].base = self.forgotten.attempts
        if self.dirty is not None:
            self.dirty.update(ids)
        if self.moved is not None:
            self.moved.extend(ids)

    def _saw_priority(self, priority: int) -> None:
        """A task of ``priority`` is queued: one above the lowest so far may have to take
        the place of lower ones queued on workers (see preempts)."""
        if self._floor is not None and priority != self._floor:
            self._preempt_due = True  # (a lower one: those queued before are above it now)
        if self._floor is None or priority < self._floor:
            self._floor = priority

    def _opens(self, task_id: TaskId) -> None:
        """The task completed: what waits on it may go."""
        if self._dependents:
            gate = task_gate(task_id)
            if gate in self._dependents:
                self.open_gate(gate)

    def _fails(self, task_id: TaskId, reason: str) -> None:
        """The task failed or was cancelled: what waits on it is cancelled."""
        if self._dependents:
            gate = task_gate(task_id)
            if gate in self._dependents:
                self.fail_gate(gate, reason)

    @property
    def open(self) -> int:
        return self._open

    @property
    def on_workers(self) -> bool:
        """Some task is on a worker (running or queued there): its result is to come."""
        return self._open > 0 and any(self._in_flight.values())

    @property
    def running(self) -> int:
        """Tasks on workers: running there, or queued there (pipelining)."""
        return sum(len(v) for v in self._in_flight.values())

    @property
    def failed_runs(self) -> int:
        """Tasks that ran to a failed result (restored and forgotten ones included)."""
        return self.ran - self.succeeded

    @property
    def ran(self) -> int:
        """Tasks that ran to a result (restored and forgotten ones included)."""
        return len(self._ran) + self.forgotten.ran

    @property
    def total(self) -> int:
        """Every task it was given, forgotten ones included."""
        return len(self.records) + self.forgotten.tasks

    @property
    def queued_on_workers(self) -> int:
        """Of ``running``, those beyond their worker's slots: they wait in its queue."""
        return sum(w.queued for w in self.scheduler.workers.values())

    @property
    def waiting(self) -> dict[TaskId, set[Gate]]:
        return self._waiting

    def in_flight(self, worker: str) -> KeysView[TaskId]:
        """The worker's tasks in flight, in the order they were sent."""
        return self._in_flight.get(worker, Held()).keys()

    # ---- gates
    def open_gate(self, gate: Gate) -> None:
        """``gate`` is satisfied: tasks waiting only on it become ready."""
        if not (isinstance(gate, tuple) and gate[0] == "task"):
            self._opened.add(gate)
        for task_id in self._in_order(self._dependents.pop(gate, ())):
            left = self._waiting.get(task_id)
            if left is None:
                continue
            left.discard(gate)
            if not left:
                del self._waiting[task_id]
                self._enqueue(self.records[task_id])

    def fail_gate(self, gate: Gate, reason: str) -> None:
        """``gate`` can never open: cancel everything waiting on it (and what waits on them),
        and what comes to wait on it later."""
        if not (isinstance(gate, tuple) and gate[0] == "task"):
            self._failed[gate] = reason
        todo = [(gate, reason)]
        while todo:
            g, why = todo.pop()
            for task_id in self._in_order(self._dependents.pop(g, ())):
                if self._unwait(task_id):
                    self._finish_cancelled(self.records[task_id], why)
                    todo.append((task_gate(task_id), self._ended_as(task_id)))

    def _unwait(self, task_id: TaskId) -> bool:
        """It waits no more (to be cancelled): off the gates it still waited on too, so that
        none names it once it is forgotten, nor a new task given its id. False: it was not
        waiting."""
        left = self._waiting.pop(task_id, None)
        if left is None:
            return False
        for g in left:
            waiting = self._dependents.get(g)
            if waiting is not None:
                waiting.discard(task_id)
                if not waiting:
                    del self._dependents[g]
        return True

    def restore(self, entries: Iterable[Any], gates: Mapping[TaskId, Iterable[Gate]]) -> None:
        """Rebuild from a journal (entries in submission order, with task, status, attempt,
        worker, result, reason, losses, stopping, lost_with, base): finished tasks stay finished,
        tasks that were on a worker stay in flight there (awaiting it), the rest wait or
        queue again."""
        entries = list(entries)
        for e in entries:
            if self._floor is None or e.task.priority < self._floor:
                self._floor = e.task.priority
            self.records[e.task.id] = TaskRecord(e.task, _RESTORED[e.status], e.worker,
                                                 e.attempt, result=e.result, reason=e.reason,
                                                 losses=e.losses, stopping=e.stopping,
                                                 index=len(self.records), front=e.losses > 0,
                                                 base=e.base)
            if e.lost_with:
                self._lost_with[e.task.id] = {a: (w, bool(c), bool(f))
                                              for a, w, c, f in e.lost_with}
        pending = []
        for e in entries:
            rec = self.records[e.task.id]
            if rec.state in ENDED:
                self._restore_finished(rec)
            elif rec.worker is not None and rec.state is R:
                self._in_flight[rec.worker].add(rec.task.id)
                self._open += 1
            else:
                rec.state, rec.worker = W, None
                pending.append(rec)
                self._open += 1
        self._restore_pending(pending, gates)
        self.finished.clear()

    def _restore_pending(self, pending: list[TaskRecord],
                         gates: Mapping[TaskId, Iterable[Gate]]) -> None:
        """Restored tasks not on a worker: they wait on their gates again, or queue, each
        with an age stamp in submission order (one waiting keeps its place, see add)."""
        for rec, seq in zip(pending, self.scheduler.stamps(len(pending)), strict=True):
            rec.seq = seq
        for rec in pending:  # (a dependency forgotten since had completed: else its
            # dependents would have been cancelled with it)
            wanted = [*gates.get(rec.task.id, ()), *(task_gate(d) for d in rec.task.depends_on
                                                     if d in self.records)]
            if any(self._is_failed(g) for g in wanted):
                self._finish_cancelled(rec, "a dependency did not complete")
                continue
            waiting = {g for g in wanted if not self._is_open(g)}
            if waiting:
                self._waiting[rec.task.id] = waiting
                for g in waiting:
                    self._dependents[g].add(rec.task.id)
            else:
                self._enqueue(rec)

    def _restore_finished(self, rec: TaskRecord) -> None:
        if rec.result is not None and rec.state is not X:
            self._ran.append(rec.task.id)
            self.succeeded += rec.result.success
            if rec.dead:  # its reason says why it failed without a result of its own
                self.dead.append(rec.task.id)

    def orphans(self) -> dict[str, set[TaskId]]:
        """In-flight tasks of workers the scheduler does not know (after a restore)."""
        return {w: set(ids) for w, ids in self._in_flight.items()
                if ids and w not in self.scheduler.workers}

    def _in_order(self, task_ids: Iterable[TaskId]) -> list[TaskId]:
        return sorted(task_ids, key=lambda i: self.records[i].index)

    # ---- workers
    def add_worker(self, slot: WorkerSlot, probation: bool = False) -> None:
        """With ``probation`` (what the admin does for every new connection) the worker gets
        one task in flight until it shows it reads what it is sent (a result, or a heartbeat
        that lists the task), so a peer that registers a large capacity and never reads
        cannot swallow the queue."""
        slot.state = WorkerState.PROBATION if probation else WorkerState.TRUSTED
        self.scheduler.add_worker(slot)
        self._unreachable.discard(slot.name)  # (a new connection: reached)
        self._unanswering.pop(slot.name, None)

    def worker_event(self, worker: str, event: WorkerEvent) -> WorkerState | None:
        """Move a worker along its life (ceylon_net.core.workers.TRANSITIONS); returns its
        state, None for a worker the board does not know."""
        slot = self.scheduler.workers.get(worker)
        if slot is None:
            return None
        new = next_state(slot.state, event)
        if new is not slot.state:
            if new is WorkerState.TRUSTED:
                self._stolen.pop(worker, None)  # it was slow, not gone: no losses
                self._stalled_at.pop(worker, None)
                self._preempt_due = self._floor is not None  # (its queue counts now)
            if new is not WorkerState.STALLED:
                self._unreachable.discard(worker)
            slot.state = new
            self.scheduler.touch(worker)
        return new

    def unstall(self, worker: str, held: Mapping[TaskId, int], stalled_before: float) -> None:
        """A stalled worker's heartbeat lists none of the tasks taken back from it, though
        they were sent long enough ago (it stalled before ``stalled_before``): they never
        reached it (lost with its connection); it did not ignore them. On probation again,
        one task to show it reads; and what was taken back was never its to lose."""
        slot = self.scheduler.workers.get(worker)
        stolen = self._stolen.get(worker)
        if slot is not None and slot.state is WorkerState.STALLED and slot.answers_unheld \
                and worker not in self._unreachable and not stolen \
                and worker not in self._unanswering \
                and not any(self._unheard_since(t, worker) < math.inf
                            for t in self._in_flight.get(worker, ())):
            # (stalled as a task was asked back from it, which left it since some other
            # way, not by its answer: a worker back from being taken for lost had it)
            self.worker_event(worker, WorkerEvent.MISSED)
            return
        if slot is None or slot.state is not WorkerState.STALLED or not stolen \
                or self._stalled_at.get(worker, stalled_before) >= stalled_before \
                or any(t in held for t in stolen):
            return
        del self._stolen[worker]
        self.worker_event(worker, WorkerEvent.MISSED)

    def _started_anyway(self, task_id: TaskId) -> None:
        """A task asked back to end cancelled unless it started (a goal was met) started: it
        runs on, but is not run again from the start should it come back to the queue (see
        _not_again)."""
        reason = self._unless_started.pop(task_id, None) if self._unless_started else None
        if reason is not None:
            self._not_again[task_id] = reason

    def probation(self, worker: str) -> None:
        """One task at a time again until the worker shows it reads what it is sent."""
        self.worker_event(worker, WorkerEvent.MISSED)

    def trust(self, worker: str) -> None:
        """The worker reads what it is sent: up to its capacity from now on. (Not one that
        did not answer what it was sent, see _unanswering: a result of a task it had before says
        nothing of that; its answer does, see _hears_again.)"""
        slot = self.scheduler.workers.get(worker)
        if slot is not None and slot.state is not TRUSTED \
                and not (self._unanswering and worker in self._unanswering):  # (after every result)
            self.worker_event(worker, WorkerEvent.READS)

    def unanswering(self, worker: str) -> bool:
        """Was a task given up on ``worker`` that has not answered since (see _unanswering)?"""
        return worker in self._unanswering

    def _hears_again(self, worker: str, held: Mapping[TaskId, int]) -> None:
        """A worker given up on (see _unanswering) answers about a task given up on it (it gave it
        back, or it started late): what is sent reaches it again. On probation: one task at
        a time, until it shows it reads its queue."""
        asked = self._unanswering.get(worker)
        if asked is not None and any(asked.get(t, -1) == a for t, a in held.items()):
            del self._unanswering[worker]
            self.hears_again.append(worker)
            self.worker_event(worker, WorkerEvent.MISSED)

    def drain(self, worker: str) -> None:
        """The worker is leaving: it gets nothing new; what it runs finishes."""
        self.worker_event(worker, WorkerEvent.DRAIN)

    def confirm(self, worker: str, held: Mapping[TaskId, int]) -> None:
        """The worker says it holds these ({task: attempt}): they reached it."""
        flying = self._in_flight.get(worker)
        if not flying or not held:
            return
        got = False
        for task_id, attempt in held.items():
            rec = self.records.get(task_id)
            if rec is not None and task_id in flying and rec.attempt == attempt:
                rec.confirmed = got = True
                if self._unheard:  # (it came after all: a give-back is an ordinary one)
                    self._unheard.pop(task_id, None)
        if got:
            self.trust(worker)

    def started(self, worker: str, held: Mapping[TaskId, int]) -> None:
        """The worker started these ({task: attempt}): from now on they count as lost with
        it, and are not taken back (a RELEASE for them came too late: a copy a worker back
        from being taken for lost kept running is stopped, see :meth:`_claim`)."""
        if self._unanswering:
            self._hears_again(worker, held)
        flying = self._in_flight.get(worker)
        if not flying:
            return
        got = False
        for task_id, attempt in held.items():
            rec = self.records.get(task_id)
            if rec is not None and task_id in flying and rec.attempt == attempt:
                rec.started = rec.confirmed = got = True
                if flying[task_id] is None:
                    flying[task_id] = self.now
                self._stealing.pop(task_id, None)
                self._started_anyway(task_id)
                if self._unheard:
                    self._unheard.pop(task_id, None)
                if task_id in self._claims:  # (it runs here: not at the worker back too)
                    self._unclaim(task_id, "reassigned while away")
        if got:
            self.trust(worker)

    def released(self, worker: str, held: Mapping[TaskId, int]) -> list[TaskId]:
        """The worker gave back these tasks ({task: attempt}), which it had not started: they
        go back to the queue, in their old place, no attempt counted. Returns them."""
        if self._unanswering:
            self._hears_again(worker, held)
        flying = self._in_flight.get(worker)
        back, unheard = [], False
        for task_id, attempt in held.items():
            rec = self.records.get(task_id)
            self._stealing.pop(task_id, None)
            if rec is None or not flying or task_id not in flying or rec.attempt != attempt \
                    or rec.started:
                continue
            unheard |= self._unheard_since(task_id, worker) < math.inf
            flying.discard(task_id)
            self.scheduler.release(worker)
            back.append(task_id)
            self._requeue(rec)
        if unheard:  # (it answers, but what it is sent is late or lost: one at a time)
            self.probation(worker)
        return back

    def steals(self, now: float, patience: float, run: Mapping[str, float] | None = None
               ) -> dict[str, list[tuple[TaskId, int]]]:
        """Work stealing. A worker with a free slot that the queue cannot fill is idle: ask
        back for it tasks queued on other workers, not started, and waiting there longer than
        ``patience`` seconds (a few round trips: sooner, they start there as soon as a RELEASE
        would get back), the last sent first. Nor is a task asked back that its worker will
        start within ``patience``: one of its running tasks is due to end by then, by
        ``run``, each worker's measured run time (see :meth:`_freeing_soon`). Returns
        {worker: [(task, attempt)]} to ask back; they stay there until it gives them back."""
        version = self.scheduler.version
        if version == self._steal_seen and now < self._steal_due:
            return {}  # nothing changed, and nothing waited long enough yet
        self._steal_seen, self._steal_due = version, float("inf")
        workers, held = self.scheduler.workers, self.scheduler.held
        # (victims first: a plain look at each worker, where most rounds find none)
        victims = sorted([w for w in workers.values() if w.running > w.slots],
                         key=lambda w: w.slots - w.running)
        if not victims:
            return {}
        # (a worker held for a task waiting to run alone drains: it takes nothing back)
        idle = [w for w in workers.values()
                if w.running < min(w.room, w.slots) and w.name not in held]
        if not idle:
            return {}
        for task_id in [t for t, _ in self._stealing.items()
                        if self.records[t].state not in IN_FLIGHT]:
            del self._stealing[task_id]
        promised = defaultdict(int)
        for thief in self._stealing.values():
            promised[thief] += 1
        asks: dict[str, list[tuple[TaskId, int]]] = defaultdict(list)
        for thief in idle:
            want = min(thief.room, thief.slots) - thief.running - promised[thief.name]
            for victim in victims:
                if want <= 0:
                    break
                want -= self._steal_from(victim, thief, want, now, patience, asks,
                                         (run or {}).get(victim.name))
        return dict(asks)

    def preempts(self) -> dict[str, list[tuple[TaskId, int]]]:
        """Priority reaches into the workers' queues. A worker whose queue (beyond its
        slots) holds tasks it has not started, of lower priority than ready tasks it could
        take were it not full, is asked for those back, the lowest first: they come back to
        the queue in their old place, and the better ones go in their stead (a worker's
        queue keeps priority order). Else tasks sent ahead would start before an urgent one
        submitted after them, as long as they take. As many are asked back, over all the
        workers, as better tasks wait, less those asked back already and not answered yet.
        Looked at only once a task above the lowest priority so far was queued, until
        nothing is left to ask. Returns {worker: [(task, attempt)]} to ask back; they stay
        there until it gives them back."""
        if not self._preempt_due:
            return {}
        asked = len(self._preempting)
        asks: dict[str, list[tuple[TaskId, int]]] = {}
        scheduler = self.scheduler
        for worker in scheduler.workers.values() if len(scheduler) else ():
            if worker.running > worker.slots and worker.name not in scheduler.held \
                    and worker.state is WorkerState.TRUSTED:
                back = self._preempt_from(worker, asked)
                if back:
                    asks[worker.name] = back
                    asked += len(back)
        self._preempt_due = bool(asked)
        return asks

    @property
    def _preempting(self) -> list[TaskId]:
        """Tasks preempts() asked back, not answered yet: asked back for the worker that
        holds them (a steal names another, the thief), in flight there, not started."""
        records = self.records
        return [t for t, w in self._stealing.items() if (rec := records.get(t)) is not None
                and rec.worker == w and not rec.started and rec.state in IN_FLIGHT]

    def _preempt_from(self, worker: WorkerSlot, asked: int) -> list[tuple[TaskId, int]]:
        """Of ``worker``'s tasks not started, those to ask back for better ones waiting
        (``asked``: places being made for them already, elsewhere or before)."""
        flying = self._in_flight.get(worker.name)
        top = self.scheduler.best_waiting(worker)
        if not flying or top is None:
            return []
        records = self.records
        lower = sorted((rec.task.priority, -rec.index, task_id) for task_id in flying
                       if (rec := records[task_id]).task.priority < top and not rec.started
                       and task_id not in self._stealing)[:worker.running - worker.slots]
        back: list[tuple[TaskId, int]] = []
        for priority, _, task_id in lower:  # (the lowest first; of those, the youngest)
            want = asked + len(back) + 1
            if self.scheduler.waiting_better(worker, priority, want) < want:
                break
            self._stealing[task_id] = worker.name
            back.append((task_id, records[task_id].attempt))
        return back

    def _steal_from(self, victim: WorkerSlot, thief: WorkerSlot, want: int, now: float,
                    patience: float, asks: dict[str, list[tuple[TaskId, int]]],
                    run: float | None) -> int:
        """Up to ``want`` of the tasks queued on ``victim`` beyond its slots that ``thief``
        can take, sent ``patience`` seconds ago or more and not due to start there within
        ``patience``; returns how many were asked back."""
        flying = self._in_flight.get(victim.name)
        if not flying:
            return 0
        taken, looked = 0, 0
        surplus = len(flying) - victim.slots - self._freeing_soon(flying, victim.slots, run, now,
                                                                  patience)
        for task_id in reversed(flying):
            looked += 1
            if taken >= want or looked > surplus:
                break
            rec = self.records[task_id]
            t = rec.task
            if rec.started or task_id in self._stealing \
                    or not can_do(thief, t.difficulty, t.required_role, t.handler):
                continue
            if rec.assigned_at > now - patience:  # it may start there soon: look again then
                self._steal_due = min(self._steal_due, rec.assigned_at + patience)
                continue
            self._stealing[task_id] = thief.name
            asks[victim.name].append((task_id, rec.attempt))
            taken += 1
        return taken

    def _freeing_soon(self, flying: Held, slots: int, run: float | None, now: float,
                      patience: float) -> int:
        """How many of a worker's running tasks are due to end within ``patience``: the
        first tasks queued behind them start there no later than a steal could start them
        elsewhere (taking them would only cost a round trip). ``run`` is the worker's
        measured run time (None: not measured, none is due). A task is due ``run`` after it
        was heard to start, give or take ``patience`` (its start and its result are both
        heard a little late); one running later than that may run long, and its queue may
        be stolen. They run in the order they were sent: the running ones are among the
        first ``slots``."""
        if run is None:
            return 0
        soon = 0
        for started in islice(flying.values(), slots):
            if started is None:
                continue
            if run - patience <= now - started <= run + patience:
                soon += 1
                # Late from then on: look again.
                self._steal_due = min(self._steal_due, started + run + patience)
        return soon

    def steal(self, worker: str, sent: Iterable[tuple[TaskId, int]]) -> list[tuple[TaskId, int]]:
        """The worker, on probation, had its time to confirm these assignments ([(task,
        attempt)]): take back those it did not confirm. A worker that does not read its queue
        keeps them from everyone. They go back to the queue in their old place, and the worker
        gets nothing more until it shows it reads; they go only to trusted workers from now on
        (a task that kills whoever runs it must not take down every new worker before the
        first is found lost), and only to a free slot (see TaskRecord.front). If the worker
        turns out to be gone, each counts as lost with it. Returns the (task, attempt) taken
        back, for cancelling there."""
        slot = self.scheduler.workers.get(worker)
        flying = self._in_flight.get(worker)
        if slot is None or not flying or slot.state not in (WorkerState.PROBATION,
                                                            WorkerState.STALLED):
            return []
        taken = [t for t, attempt in sent if t in flying and self.records[t].attempt == attempt
                 and self.records[t].asked and not self.records[t].confirmed]
        if not taken:
            return []
        if slot.answers_unheld:  # asked back: it may still come (see _unheard)
            self._ask_unheard(worker, taken)
            self._stalled_at[worker] = self.now
            self.worker_event(worker, WorkerEvent.UNCONFIRMED)
            return []
        # (the attempts it holds, said before _lose: a task claimed for a worker back from
        # being taken for lost runs there from then on, at that worker's attempt)
        pairs = [(t, self.records[t].attempt) for t in taken]
        for t in taken:
            flying.discard(t)
            self.records[t].stolen = self.records[t].front = True
        self.scheduler.release(worker, len(taken))
        self._stolen.setdefault(worker, {}).update(pairs)
        self._stalled_at[worker] = self.now
        self._lose(taken, worker, "it did not take it", counts=False)
        self.worker_event(worker, WorkerEvent.UNCONFIRMED)
        return pairs

    def remove_worker(self, name: str, why: str = "lost") -> list[TaskId]:
        """The worker is gone: its in-flight tasks go back to the queue, oldest place kept; a
        task lost ``max_attempts`` times fails instead (see :meth:`dead`). Only tasks that may
        have started there count as lost with it: those it said started, and, first sent
        first, as many others as it had slots not taken by those (a task that crashed it as it
        started may never have been said to start). The rest waited in its queue: they go back
        without a loss. Either way they go only to a free slot from now on, where a start
        always counts, and run alone on their last attempt (see :meth:`place`)."""
        slot = self.scheduler.remove_worker(name)
        self._unmark(name)
        if self._claims:
            self._claimant_gone(name, why)
        self._stolen_lost(name, why)
        flying = self._in_flight.pop(name, Held())
        started = sum(self.records[t].started for t in flying)
        # A worker from before a restart that did not come back: which of its tasks had
        # started is not known, but no more than its slots could have (journaled).
        slots = slot.slots if slot is not None else self.slots_of_gone.pop(name, len(flying))
        budget = slots - started
        counted, waited = [], []
        for task_id in flying:  # in the order they were sent: the worker's queue order
            rec = self.records[task_id]
            front, rec.front = rec.front, True  # see TaskRecord.front
            # (one asked back as not heard to reach it, its heartbeats going on without it,
            # did not crash it: a flaky link's losses do not add up to a task's death)
            counts = rec.started or (budget > 0 and not (
                self._unheard and self._unheard_since(task_id, name) < math.inf))
            if counts:
                budget -= not rec.started
                counted.append(task_id)
            else:
                waited.append(task_id)
            if why != "left":
                self._lost_with.setdefault(task_id, {})[rec.attempt] = (name, counts, front)
        # Gone, its started tasks count as lost; said goodbye (left: drained), they were cut
        # off by whoever stopped it, not lost with it.
        lost = self._lose(counted, name, why, counts=why != "left")
        return sorted([*lost, *self._lose(waited, name, why, counts=False)],
                      key=lambda i: self.records[i].seq or 0)

    def _unmark(self, worker: str) -> None:
        """What the board noted of a worker gone (stalled, unreachable, unanswering)."""
        self._stalled_at.pop(worker, None)
        self._unreachable.discard(worker)
        self._unanswering.pop(worker, None)

    def keep(self, worker: str, held: Mapping[TaskId, int], running: Container[TaskId] = ()
             ) -> tuple[list[TaskId], list[TaskId]]:
        """A worker found gone is back (it was cut off or paused, not dead) and still holds
        these ({task: attempt}; it gave back what had not started before registering): the
        loss of each is undone (they did not crash it), and a task that went back to the
        queue and to no one since stays with it, running, rather than be stopped there and
        run again from the start. One given to another worker meanwhile that has not started
        there is asked back from it for this worker, if this worker still runs it (in
        ``running``: not ended with a result; see :meth:`_claim`); one that started there is
        stopped here (it is not this worker's: see :meth:`reclaim`). Returns (those it keeps,
        those asked back for it)."""
        kept: list[TaskId] = []
        claimed: list[TaskId] = []
        for task_id, attempt in held.items() if self._lost_with else ():
            lost = self._lost_with.get(task_id, {}).get(attempt)
            rec = self.records.get(task_id)
            if lost is None or lost[0] != worker or rec is None:
                continue
            self._forget_lost(task_id, attempt)
            rec.losses -= lost[1]
            if self.dirty is not None:  # (journaled: an admin restarted later knows it too)
                self.dirty.add(task_id)
            if rec.state in IN_FLIGHT:  # (its worker may run it alone no more)
                self._holds(rec.worker)
                mine = self._claims.get(task_id) == (worker, attempt)  # (a HELLO again)
                if task_id in running and (mine or self._claim(rec, worker, attempt)):
                    if not mine:
                        claimed.append(task_id)
                    # (its loss undone, and known until the claim is settled: should this
                    # worker be lost again meanwhile, see _claimant_gone; journaled)
                    self._lost_with.setdefault(task_id, {})[attempt] = (worker, False, lost[2])
            if rec.state is not Q or not self.scheduler.discard(task_id):
                continue
            if rec.attempt != attempt:  # (given out since, and back: where it may go now)
                self._enqueue(rec, again=True)
                continue
            rec.front, rec.assigned_at = lost[2], self.now
            self._runs_on(rec, worker, attempt)  # (running: its queue was given back)
            kept.append(task_id)
        return kept, claimed

    def _claim(self, rec: TaskRecord, worker: str, attempt: int) -> bool:
        """A task ``worker`` still runs at ``attempt`` (it is back from being taken for lost)
        was given to another worker meanwhile, which has not said it started it (nor is it
        being stopped there): it is asked back from that worker (RELEASE). Given back, or
        back any other way before it starts there, it runs on at ``worker`` (see
        :meth:`_requeue`) rather than from the start elsewhere; started there first, the copy
        at ``worker`` is stopped (:meth:`started`); should that copy end first with a result,
        it is the task's (:meth:`record`). Until then the copy at ``worker`` is not stopped
        as not its own (:meth:`reclaim`). Returns whether it was asked back."""
        task_id = rec.task.id
        if rec.started or rec.stopping is not None or rec.worker == worker \
                or task_id in self._unless_started or task_id in self._claims:
            return False  # (claimed already: one copy kept running is enough)
        self._claims[task_id] = (worker, attempt)
        self.scheduler.release(worker, -1)  # (its copy there takes a slot)
        if task_id not in self._stealing:  # (asked back already: that answer serves)
            self.to_release.setdefault(rec.worker, []).append((task_id, rec.attempt))
        self._stealing[task_id] = worker
        return True

    def _claimant_gone(self, name: str, why: str) -> None:
        """The worker a task was claimed for is gone: the task runs where it went. What
        was lost with it stays known (see keep): should it come back again with the copy
        still running, or with its result, it is taken as the first time; unless it left
        (drained: it ran what it held to the end, and said so)."""
        for task_id in [t for t, (w, _) in self._claims.items() if w == name]:
            _, attempt = self._claims.pop(task_id)
            if self._stealing.get(task_id) == name:
                del self._stealing[task_id]
            if why == "left":
                self._forget_lost(task_id, attempt)

    def _unclaim(self, task_id: TaskId, reason: str) -> None:
        """The copy a claim kept running is to stop: the task is not to run there after all."""
        worker, attempt = self._drop_claim(task_id)
        self._cancel_copy(worker, task_id, attempt, reason)
        rec = self.records[task_id]
        if rec.state in IN_FLIGHT and rec.stopping is None and rec.worker != worker:
            self._late[task_id] = (worker, attempt)  # (its success may come first: _late_result)

    def _cancel_copy(self, worker: str, task_id: TaskId, attempt: int, reason: str) -> None:
        """The copy of a task at ``worker`` is to be cancelled (``to_cancel``)."""
        self.to_cancel.setdefault(worker, {}).setdefault(reason, []).append((task_id, attempt))

    def _drop_claim(self, task_id: TaskId) -> tuple[str, int]:
        """The claim on a task is settled: the slot its copy took is free (the copy stops,
        or runs on as the task's own: see :meth:`_runs_on`), and the task is no longer asked
        back for that worker. Returns (that worker, its attempt)."""
        worker, attempt = self._claims.pop(task_id)
        self.scheduler.release(worker)
        if self._stealing.get(task_id) == worker:
            del self._stealing[task_id]
        self._forget_lost(task_id, attempt)
        return worker, attempt

    def _runs_on(self, rec: TaskRecord, worker: str, attempt: int) -> None:
        """A task a worker back from being taken for lost still holds (out of the ready
        queue already, or in flight on another worker no more) runs there, at ``attempt``:
        started, confirmed, no longer being stolen."""
        if rec.state is Q:
            self._move(rec, A)
        if rec.state is A:
            self._move(rec, R)
        rec.worker, rec.attempt, rec.confirmed, rec.started = worker, attempt, True, True
        self._in_flight[worker][rec.task.id] = self.now
        self.scheduler.release(worker, -1)
        self._stealing.pop(rec.task.id, None)
        if self.dirty is not None:  # (journaled: worker and attempt changed)
            self.dirty.add(rec.task.id)

    def hand_back(self, worker: str, done: Mapping[TaskId, int]) -> list[tuple[str, TaskId, int]]:
        """A worker found gone is back with successful results ({task: attempt}) for
        attempts it was lost with, which were given out again since: each task ran to its
        result, so it is made this worker's again, at that attempt, for :meth:`record` to
        take (it is not run a second time). (A failure, which the pause itself may have
        caused, a time limit say, is not worth stopping a new attempt for: not handed here.)
        Call before :meth:`keep`. Returns the copies given out since that are still on other
        workers ((worker, task, attempt)): each is to be cancelled there (``to_cancel``; one
        already started there is stopped: the task has its result)."""
        others: list[tuple[str, TaskId, int]] = []
        for task_id, attempt in done.items() if self._lost_with else ():
            lost = self._lost_with.get(task_id, {}).get(attempt)
            rec = self.records.get(task_id)
            if lost is None or lost[0] != worker or rec is None or rec.attempt == attempt \
                    or rec.state in ENDED or rec.state is W:
                continue
            if rec.state is Q and not self.scheduler.discard(task_id):
                continue
            if rec.state is not Q:
                others.append((rec.worker, task_id, rec.attempt))
            self._take_over(rec, worker, attempt)
        return others

    def _take_over(self, rec: TaskRecord, worker: str, attempt: int,
                   why: str = "back from being taken for lost") -> None:
        """``worker`` (``why`` it had a copy: back from being taken for lost, in the main) ran
        the task to its result at ``attempt``: the task is made its own again there, for
        :meth:`record` to take; a copy given to another worker since is cancelled there."""
        if self._claims.get(rec.task.id) == (worker, attempt):
            self._drop_claim(rec.task.id)  # (its result, handed over again: see _claim)
        if rec.state is not Q:  # (in flight on another worker)
            other = rec.worker
            self._in_flight[other].discard(rec.task.id)
            self._holds(other)
            self._cancel_copy(other, rec.task.id, rec.attempt,
                              f"done meanwhile by worker '{worker}', {why}")
        self._runs_on(rec, worker, attempt)

    def _stolen_lost(self, worker: str, why: str) -> None:
        """The tasks taken back from ``worker`` (on probation, it had not confirmed them)
        count as lost with it now that it is gone (unless it left, drained); should it come
        back holding one, the loss is undone (see keep)."""
        stolen = self._stolen.pop(worker, {})
        for task_id, attempt in stolen.items() if why != "left" else ():
            rec = self.records[task_id]
            if rec.state in ENDED:
                continue
            rec.losses += 1  # it was gone, not slow: the attempt counts
            self._lost_with.setdefault(task_id, {})[attempt] = (worker, True, rec.front)
            if self.dirty is not None:
                self.dirty.add(task_id)
            if rec.losses >= self.max_attempts and self.scheduler.discard(task_id):
                self._give_up_lost(rec, worker, why)
            elif self.scheduler.discard(task_id):  # queued: again, where it may go now
                self._enqueue(rec, again=True)

    def _lose(self, task_ids: Iterable[TaskId], worker: str, why: str,
              counts: bool = True) -> list[TaskId]:
        """Requeue tasks a worker no longer has. ``counts``: the worker was lost with them
        (toward max_attempts), rather than never having received them."""
        lost = sorted(task_ids, key=lambda i: self.records[i].seq or 0)
        for task_id in lost:
            rec = self.records[task_id]
            rec.losses += counts
            if rec.losses >= self.max_attempts:
                self._give_up_lost(rec, worker, why)
            else:
                self._requeue(rec)
        return lost

    def _requeue(self, rec: TaskRecord) -> None:
        """A task its worker no longer has goes back to the queue, unless it was being
        cancelled, or was to be unless it started: then it ends here (its worker cannot
        answer for it any more); or unless a worker back from being taken for lost still
        runs it (see :meth:`_claim`): it runs on there."""
        if self._claims and rec.task.id in self._claims and self._claimed_back(rec):
            return
        reason = rec.stopping
        if self._unless_started:
            reason = self._unless_started.pop(rec.task.id, None) or reason
        if self._not_again:
            reason = self._not_again.pop(rec.task.id, None) or reason
        if reason is not None:
            rec.worker = None
            self._finish_cancelled(rec, reason)
            self.fail_gate(task_gate(rec.task.id), f"dependency {rec.task.id!r} was cancelled")
        else:
            self._enqueue(rec)

    def _claimed_back(self, rec: TaskRecord) -> bool:
        """A task asked back for a worker back from being taken for lost (see :meth:`_claim`)
        left the worker it was given to before it started there: it runs on at the worker
        back (it started: a cancel unless started passes it by), and True. Unless that
        worker now runs a task alone (its last attempt, see :meth:`place`): the copy there
        is stopped then, and False (the task goes where any other would)."""
        worker, attempt = self._claims[rec.task.id]
        slot = self.scheduler.workers.get(worker)
        if slot is None or slot.alone:
            self._unclaim(rec.task.id, "reassigned while away")
            return False
        self._drop_claim(rec.task.id)
        self._started_anyway(rec.task.id)
        rec.assigned_at = self.now
        self._runs_on(rec, worker, attempt)
        return True

    def reclaim(self, worker: str, running: Mapping[TaskId, int],
                assigned_before: float | None = None, give_up_before: float = -math.inf
                ) -> tuple[list[TaskId], list[TaskId]]:
        """A worker said what it still holds ({task: attempt}). Tasks we had on it that it
        no longer has (and, with ``assigned_before``, were assigned before that time, so not
        still on their way) go back to the queue. One that answers a RELEASE of a task it
        never got has them asked back instead (they may still be on their way on a slow
        link: see _unheard), and back in the queue once it answers, or when unanswered since
        before ``give_up_before``. Returns (requeued, to_cancel): the second are ones it
        holds that are not its any more (done or given elsewhere)."""
        flying = self._in_flight.get(worker, Held())
        gone = [t for t in flying if running.get(t) != self.records[t].attempt
                and (assigned_before is None or self.records[t].assigned_at < assigned_before)]
        slot = self.scheduler.workers.get(worker)
        if gone and assigned_before is not None and slot is not None and slot.answers_unheld:
            gone = self._unlisted(worker, gone, give_up_before)
        for t in gone:
            flying.discard(t)
            self.scheduler.release(worker)
        requeued = self._lose(gone, worker, "it did not have it",
                              counts=assigned_before is None)
        if gone and assigned_before is not None:
            self.probation(worker)  # tasks sent a while ago never reached it
        if self._unanswering and worker in self._unanswering and assigned_before is not None:
            self._still_unanswering(worker)
        claims = self._claims
        stale = [t for t, attempt in running.items()
                 if (t not in flying or self.records[t].attempt != attempt)
                 and (not claims or claims.get(t) != (worker, attempt))]
        for t in stale:
            rec = self.records.get(t)
            if rec is not None and rec.state in IN_FLIGHT and rec.stopping is None:
                self._late[t] = (worker, running[t])  # (given to another: see _late_result)
        self._holds(worker)
        return requeued, stale

    def _unlisted(self, worker: str, gone: list[TaskId], give_up_before: float
                  ) -> list[TaskId]:
        """Tasks ``worker``'s heartbeat did not list, though sent a while ago: asked back, as
        they may still be on their way; returns those given up on, asked since before
        ``give_up_before`` and unanswered (they go back to the queue as before)."""
        given_up = [t for t in gone if self._unheard_since(t, worker) <= give_up_before]
        if self._ask_unheard(worker, [t for t in gone if t not in given_up]):
            self.probation(worker)
        asked = self._unanswering.setdefault(worker, {}) if given_up else {}
        for t in given_up:
            asked[t] = self._unheard.pop(t)[1]
        return given_up

    def _still_unanswering(self, worker: str) -> None:
        """A worker given up on (see _unanswering) beats: stalled, the tasks given up asked back."""
        if self.worker_event(worker, WorkerEvent.MISSED) is WorkerState.PROBATION:
            self.worker_event(worker, WorkerEvent.UNCONFIRMED)  # (stalled)
        self.to_release.setdefault(worker, []).extend(self._unanswering[worker].items())

    def _ask_unheard(self, worker: str, task_ids: Iterable[TaskId]) -> list[TaskId]:
        """Ask these tasks of ``worker`` back (again: the RELEASE may have been lost with a
        connection); returns those asked for the first time (noted in unheard_asked)."""
        new = []
        for task_id in task_ids:
            attempt = self.records[task_id].attempt
            if self._unheard_since(task_id, worker) == math.inf:
                self._unheard[task_id] = (worker, attempt, self.now)
                new.append(task_id)
            self.to_release.setdefault(worker, []).append((task_id, attempt))
        self.unheard_asked += new
        return new

    def _unheard_since(self, task_id: TaskId, worker: str) -> float:
        """Since when this attempt of the task is asked back from ``worker`` as unheard
        (infinity: it is not)."""
        known = self._unheard.get(task_id)
        if known is None or known[0] != worker or known[1] != self.records[task_id].attempt:
            return math.inf
        return known[2]

    def _holds(self, worker: str) -> None:
        """What ``worker`` holds, told the scheduler: its tasks in flight, and the copies
        it runs of tasks claimed for it (see :meth:`_claim`), which take a slot too."""
        flying = self._in_flight.get(worker, ())
        claimed = sum(w == worker for w, _ in self._claims.values()) if self._claims else 0
        self.scheduler.holds(worker, len(flying) + claimed, self._alone_in(flying))

    def _alone_in(self, flying: Held | tuple[()]) -> bool:
        """A worker holding these runs a task alone: its one task is on its last attempt.
        (One whose loss was counted while it ran beside others, taken back from a worker
        found gone later, runs on beside them.)"""
        return len(flying) == 1 and self.place(self.records[next(iter(flying))]) == ALONE

    def _give_up_lost(self, rec: TaskRecord, worker: str, why: str) -> None:
        times = "once" if rec.losses == 1 else f"{rec.losses} times"
        rec.reason = f"lost {times}, last with worker '{worker}' ({why}); giving up"
        rec.result = TaskResult(rec.task.id, worker, False, attempt=rec.attempt,
                                error=rec.reason)
        self._finish_dead(rec)

    def _forget_lost(self, task_id: TaskId, attempt: int | None = None) -> None:
        """One attempt's loss taken back, or (no ``attempt``) the task ended: its attempts
        lost with workers are of no more use, and a copy a claim kept running is stopped."""
        if attempt is None and task_id in self._claims:
            self._unclaim(task_id, "reassigned while away")
        if attempt is None and self._late:
            self._late.pop(task_id, None)
        if attempt is None and (self._unless_started or self._not_again):  # (ended: a
            self._unless_started.pop(task_id, None)  # cancel's or a loss's, not a result's)
            self._not_again.pop(task_id, None)
        lost = self._lost_with.get(task_id)
        if lost is not None and self.dirty is not None:
            self.dirty.add(task_id)  # (journaled with the task: see lost_with)
        if lost is not None and attempt is not None:
            lost.pop(attempt, None)
        if lost is not None and (attempt is None or not lost):
            del self._lost_with[task_id]

    def lost_with(self, task_id: TaskId) -> list[list[Any]] | None:
        """What a journal keeps of the task's attempts lost with workers (see keep):
        [[attempt, worker, counted, front], ...], or None."""
        lost = self._lost_with.get(task_id) if self._lost_with else None
        return [[a, *v] for a, v in lost.items()] if lost else None

    def _finish_dead(self, rec: TaskRecord) -> None:
        self._move(rec, F)
        self._forget_lost(rec.task.id)
        rec.worker = None
        self._open -= 1
        self._ran.append(rec.task.id)
        self.dead.append(rec.task.id)
        self.finished.append(rec)
        self.fail_gate(task_gate(rec.task.id), f"dependency {rec.task.id!r} failed")

    # ---- decisions and results
    def plan(self, now: float = 0.0, waits: list[float] | None = None, slots_only: bool = False
             ) -> dict[str, list[TaskAssignment]]:
        """Fill free slots, and queue ahead on workers as their credit allows (not when
        ``slots_only``); returns assignments grouped by worker name. ``waits``: each
        assigned task's time in the queue is appended to it."""
        decisions = self.scheduler.assign(slots_only)
        if not decisions:
            return {}
        out: dict[str, list[TaskAssignment]] = defaultdict(list)
        slots, records, in_flight = self.scheduler.workers, self.records, self._in_flight
        move = self._move
        for task_id, worker in decisions:
            rec = records[task_id]
            slot = slots[worker]
            rec.assigned_at = now
            rec.confirmed = rec.started = False
            asked = rec.asked = slot.state is not TRUSTED
            move(rec, A)
            rec.worker = worker
            attempt = rec.attempt = rec.attempt + 1
            flying = in_flight[worker]
            rec.ahead = len(flying) >= slot.slots
            flying[task_id] = None
            out[worker].append(TaskAssignment(rec.task, worker, attempt, asked))
            if waits is not None:
                waits.append(now - rec.ready_at)
        return out

    def filling(self, assignments: list[TaskAssignment]) -> int:
        """Of one worker's assignments in a round (as :meth:`plan` made them: those for its
        free slots first), how many fill its free slots when others are queued ahead of
        them too; 0 when they are all of one kind."""
        records = self.records
        if not records[assignments[-1].task.id].ahead \
                or records[assignments[0].task.id].ahead:
            return 0
        return next(i for i, a in enumerate(assignments) if records[a.task.id].ahead)

    def delivered(self, assignments: list[TaskAssignment]) -> None:
        """The worker has the tasks (they are sent): queued there or running."""
        records, move = self.records, self._move
        for a in assignments:
            rec = records[a.task.id]
            if rec.state is A:
                move(rec, R)

    def unsent(self, worker: str, assignments: list[TaskAssignment]) -> None:
        """Assignments that could not be delivered go back to the queue, and the worker
        gets nothing more until it is heard from (see :meth:`heard`): its connection is gone
        (it was killed, and is not found lost yet) or it does not read what it is sent (its
        queue is full), and free workers take the tasks meanwhile."""
        flying = self._in_flight[worker]
        for a in assignments:
            if a.task.id in flying:
                flying.discard(a.task.id)
                rec = self.records[a.task.id]
                rec.attempt -= 1
                self.scheduler.release(worker)
                self._requeue(rec)
        if self.worker_event(worker, WorkerEvent.UNREACHABLE) is WorkerState.STALLED:
            self._unreachable.add(worker)

    def unreachable(self, worker: str) -> bool:
        """A send to ``worker`` failed, and it was not heard from since (see unsent)."""
        return worker in self._unreachable

    def heard(self, worker: str) -> None:
        """A message came from ``worker``: one that could not be sent to (see :meth:`unsent`)
        is reached again, on probation (one task, until it shows it reads); unless it was
        stalled for not confirming tasks too (see :meth:`unstall` then)."""
        if worker not in self._unreachable:
            return
        self._unreachable.discard(worker)
        slot = self.scheduler.workers.get(worker)
        if slot is not None and slot.state is WorkerState.STALLED and worker not in self._stolen:
            self.worker_event(worker, WorkerEvent.MISSED)

    def record(self, result: TaskResult) -> TaskRecord | None:
        """Apply a worker's result. Returns the record, or None for a stale or unknown result
        (already finished, or the task is no longer on that worker): acknowledged and ignored."""
        task_id, worker = result.task_id, result.worker
        rec = self.records.get(task_id)
        if rec is None or (rec.base and result.attempt <= rec.base):
            return None  # (unknown, or of a forgotten task of the same id)
        flying = self._in_flight.get(worker)
        taken_back = self._stolen.get(worker, {}).get(task_id)  # (trust() forgets it)
        if (flying is not None and task_id in flying) or taken_back is not None:
            self.trust(worker)  # an answer about a task it was sent: it reads
        if self._claims or self._late:
            self._copy_ended(rec, result)
        state = rec.state
        if state in ENDED or result.attempt != rec.attempt:
            return None
        if state is Q and not self._queued_result(rec, result, taken_back):
            return None
        if rec.worker != worker:
            return None
        self._in_flight[worker].discard(task_id)
        self.scheduler.release(worker)
        if result.cancelled:
            rec.result = None
            # (the reason it was asked to stop for, as for a task cancelled in the queue:
            # the worker's answer says "cancelled: REASON")
            self._finish_cancelled(rec, rec.stopping or self._unless_started.get(task_id)
                                   or result.error or "cancelled")
            self._fails(task_id, f"dependency {task_id!r} was cancelled")
            return rec
        self._open -= 1
        self._ended(rec, result)
        return rec

    def _queued_result(self, rec: TaskRecord, result: TaskResult, taken_back: int | None
                       ) -> bool:
        """A result for a queued task: its worker was declared lost, yet finished it (taken,
        no rerun: True). Not the answer to our CANCEL of a task taken back from it (queued),
        nor a result for a task this worker was never given: any worker could have ended a
        queued task so, past the skill, role and handler it needs."""
        task_id, worker = rec.task.id, result.worker
        if result.cancelled or not (taken_back == result.attempt
                                    or self._held_once(task_id, worker, result.attempt)):
            return False
        if self.scheduler.discard(task_id):
            rec.worker = worker
            self._in_flight[worker].add(task_id)
            self.scheduler.release(worker, -1)
        return True

    def _held_once(self, task_id: TaskId, worker: str, attempt: int) -> bool:
        """Did ``worker`` hold this attempt of the (queued) task: lost with it (declared
        gone, or not back after a restart), or given up on it unheard (see _unanswering)?
        (Taken back from it on probation: record() looks, before trust() forgets it.)"""
        lost = self._lost_with.get(task_id) if self._lost_with else None
        if lost is not None and lost.get(attempt, ("",))[0] == worker:
            return True
        return bool(self._unanswering) and \
            self._unanswering.get(worker, {}).get(task_id) == attempt

    def _copy_ended(self, rec: TaskRecord, result: TaskResult) -> None:
        """The result of a copy kept running for a claim, or of one told to stop."""
        pair = (result.worker, result.attempt)
        if self._claims.get(rec.task.id) == pair:
            self._claim_ended(rec, result)
        if self._late.get(rec.task.id) == pair:
            self._late_result(rec, result)

    def _claim_ended(self, rec: TaskRecord, result: TaskResult) -> None:
        """The copy a worker back from being taken for lost kept running ended before the
        worker the task was given to meanwhile answered (see :meth:`_claim`): a success is the
        task's result (taken; the copy there is cancelled); anything else (a failure may come
        of the pause itself, a time limit say) is not, and the task runs there."""
        self._drop_claim(rec.task.id)
        if result.success and not result.cancelled and rec.state in IN_FLIGHT:
            self.taken_claimed += 1
            self._take_over(rec, result.worker, result.attempt)

    def _late_result(self, rec: TaskRecord, result: TaskResult) -> None:
        """The copy a worker was told to stop (another worker has the task: see reclaim and
        _unclaim) answered before the CANCEL reached it, as a worker back from a pause does
        whose task's time was up as it resumed: a success is the task's result, taken as one
        handed over in a HELLO is (see hand_back), whether the task is in flight elsewhere
        (that copy is cancelled) or back in the queue; anything else (a failure the pause may
        have caused, the answer to the CANCEL) leaves the task where it is."""
        task_id, worker = rec.task.id, result.worker
        del self._late[task_id]
        if not result.success or result.cancelled or rec.stopping is not None \
                or worker not in self.scheduler.workers:
            return
        if rec.state in IN_FLIGHT and rec.worker != worker:
            self.taken_late += 1
            self._take_over(rec, worker, result.attempt, "before the stop sent to it arrived")
        elif rec.state is Q and self.scheduler.discard(task_id):  # (back in the queue)
            self._take_over(rec, worker, result.attempt)

    def _ended(self, rec: TaskRecord, result: TaskResult) -> None:
        """A task ran to a result (the caller counts it out of ``open``)."""
        task_id = rec.task.id
        rec.result = result
        if self._lost_with or self._claims or self._late:
            self._forget_lost(task_id)
        if self._unless_started:
            self._unless_started.pop(task_id, None)
        if self._not_again:
            self._not_again.pop(task_id, None)
        if result.success:
            self._move(rec, C)
            self.succeeded += 1
            self._opens(task_id)
        else:
            self._move(rec, F)
            self._fails(task_id, f"dependency {task_id!r} failed")
        self._ran.append(task_id)
        self.finished.append(rec)

    def record_many(self, worker: str, results: list[TaskResult]) -> list[TaskRecord | None]:
        """:meth:`record` for a batch from one trusted worker: its results for tasks in flight
        on it, this attempt, in one tight loop (the hot path: every task comes back this way);
        anything else through :meth:`record`."""
        slot = self.scheduler.workers.get(worker)
        flying = self._in_flight.get(worker)
        if slot is None or slot.state is not TRUSTED or not flying:
            return [self.record(r) for r in results]
        records, ended = self.records, self._ended
        out: list[TaskRecord | None] = []
        done = 0
        for r in results:
            task_id = r.task_id
            rec = records.get(task_id)
            if rec is None or task_id not in flying or rec.attempt != r.attempt \
                    or r.cancelled or rec.worker != worker:
                out.append(self.record(r))
                continue
            del flying[task_id]
            done += 1
            ended(rec, r)
            out.append(rec)
        self._open -= done
        if done:
            self.scheduler.release(worker, done)
        return out

    def cancel(self, task_ids: Iterable[TaskId], reason: str) -> list[TaskId]:
        """Cancel tasks that have not started (queued or waiting); returns those cancelled.
        Tasks already on a worker (ask the worker) or finished are left alone."""
        done = []
        for task_id in task_ids:
            rec = self.records.get(task_id)
            if rec is None or (rec.state is not Q and rec.state is not W):
                continue
            if not self.scheduler.discard(task_id) and not self._unwait(task_id):
                continue
            self._finish_cancelled(rec, reason)
            said = f"was unassigned: {reason}" if unassignable(reason) else "was cancelled"
            self.fail_gate(task_gate(task_id), f"dependency {task_id!r} {said}")
            done.append(task_id)
        return done

    def cancel_unstarted(self, task_ids: Iterable[TaskId], reason: str) -> list[TaskId]:
        """Tasks on a worker that have not started (as far as we have heard) are to be
        cancelled rather than run: each is asked back from its worker (``to_release``); given
        back, or back in the queue any other way before it starts, it ends cancelled. One
        that started runs on (back in the queue, its worker lost, it ends cancelled: not run
        again from the start). Returns those asked back."""
        asked = []
        for task_id in task_ids:
            rec = self.records.get(task_id)
            if rec is None or rec.state not in IN_FLIGHT or rec.worker is None:
                continue
            if rec.started:
                self._not_again[task_id] = reason
                continue
            self._unless_started[task_id] = reason
            if task_id in self._claims:  # (asked back already; it runs on where it started
                continue                 # if the claim holds: see _claimed_back)
            self.to_release.setdefault(rec.worker, []).append((task_id, rec.attempt))
            asked.append(task_id)
        return asked

    def asked_back(self, worker: str) -> list[tuple[TaskId, int]]:
        """(task, attempt) on this worker that :meth:`cancel_unstarted` or :meth:`_claim`
        asked back and that have not started (as far as we have heard): the ask may not have
        reached it."""
        records = self.records
        return [(t, records[t].attempt) for t in self.in_flight(worker)
                if (t in self._unless_started or t in self._claims) and not records[t].started]

    def give_up(self, why: Mapping[TaskId, str] | Iterable[TaskId]) -> list[TaskId]:
        """Queued tasks no worker can take (or {task: why, or ""}): cancelled, to be
        reported as unassigned, their reason saying why where known."""
        why = why if isinstance(why, Mapping) else dict.fromkeys(why, "")
        return [t for task_id, said in why.items()
                for t in self.cancel((task_id,), unassignable_reason(said))]

    def stop(self, task_id: TaskId, reason: str) -> tuple[str, int] | None:
        """A task on a worker is to be cancelled: returns (worker, attempt) to ask, or None
        when it is not on a worker. If it comes back to the queue before the worker answers
        (its worker is lost, say), it ends as cancelled instead of running again."""
        rec = self.records.get(task_id)
        if rec is None or rec.state not in IN_FLIGHT or rec.worker is None:
            return None
        rec.stopping = reason
        if self.dirty is not None:
            self.dirty.add(task_id)  # journaled: a restarted admin asks it again
        if task_id in self._claims:
            self._unclaim(task_id, reason)
        return rec.worker, rec.attempt

    def _finish_cancelled(self, rec: TaskRecord, reason: str) -> None:
        self._move(rec, X)
        self._forget_lost(rec.task.id)
        rec.reason = reason
        self._open -= 1
        self.finished.append(rec)

    def forget(self, task_ids: Iterable[TaskId]) -> None:
        """Drop finished tasks' records (a serving admin's old batches, --keep-finished):
        ``forgotten`` counts them on; a task that depends on one is refused from now on, as
        on any unknown task, and its id may be given again. Costs one pass over the tasks
        that ran, so forget many at a time."""
        records, gone, dirty = self.records, self.forgotten, self.dirty
        task_ids = set(task_ids)
        for task_id in task_ids:
            rec = records.get(task_id)
            if rec is None or rec.state not in ENDED:
                raise IllegalTransition(f"task {task_id!r}: only a finished task is forgotten "
                                        f"({'unknown' if rec is None else rec.state})")
            del records[task_id]
            gone.attempts = max(gone.attempts, rec.attempt)
            if rec.state is C:
                gone.completed += 1
            elif rec.state is X:
                gone.cancelled += 1
            else:
                gone.failed += 1
                gone.dead += rec.dead
            if dirty:
                dirty.discard(task_id)
        ran = len(self._ran)
        self._ran = [t for t in self._ran if t in records]
        gone.ran += ran - len(self._ran)
        if self.dead:
            self.dead = [t for t in self.dead if t in records]
        self._drop_traces(task_ids)

    def forget_gates(self, gates: Iterable[Gate]) -> None:
        """Gates of batches and groups forgotten: no new task can wait on them (a batch is
        waited on only while open; a group named is refused once forgotten)."""
        for gate in gates:
            self._opened.discard(gate)
            self._failed.pop(gate, None)

    def _drop_traces(self, gone: set[TaskId]) -> None:
        """What other maps keep of ended tasks until they next look (lazily), dropped for
        the forgotten: none may name a task no longer recorded."""
        for kept in (self._stealing, self._unless_started, self._not_again, self._unheard,
                     self._late, self._lost_with,
                     self._claims, *self._stolen.values()):
            if kept:
                for task_id in gone & kept.keys():
                    del kept[task_id]

    def restore_forgotten(self, row: list[int]) -> None:
        """What a journal kept of the forgotten (``Forgotten.row``), after :meth:`restore`."""
        self.forgotten = Forgotten(*row)
        self.succeeded += self.forgotten.completed
        floor = self.forgotten.attempts  # (a task is journaled as given, at attempt 0)
        for rec in self.records.values():  # (one given out before has its own attempts)
            if (rec.state is W or rec.state is Q) and rec.attempt == 0:
                rec.attempt = rec.base = floor

    def current(self, pairs: dict[TaskId, int]) -> dict[TaskId, int]:
        """A worker's [task, attempt] pairs without those of forgotten tasks whose ids were
        given again (attempts up to the new task's ``base``): the worker's copies and
        results of those are not the new task's."""
        if not self.forgotten.attempts:
            return pairs
        records = self.records
        return {t: a for t, a in pairs.items()
                if (rec := records.get(t)) is None or a > rec.base}

    def blocked(self) -> list[Blocked]:
        return self.scheduler.blocked()

    def queued(self) -> list[TaskId]:
        return self.scheduler.queued()

    @property
    def finished_order(self) -> list[TaskId]:
        """Tasks that ran to a result, in the order the results came."""
        return self._ran

    def validate(self) -> None:
        """Check that every task is where its state says, and the counts agree; raises
        AssertionError naming what is off (tests call it after every step)."""
        self.scheduler.check_index()
        holder = {t: w for w, ids in self._in_flight.items() for t in ids}
        assert sum(map(len, self._in_flight.values())) == len(holder), "a task on two workers"
        unfinished = 0
        for task_id, rec in self.records.items():
            where = (task_id in self._waiting, task_id in self.scheduler, task_id in holder)
            expected = (rec.state is W, rec.state is Q, rec.state in IN_FLIGHT)
            assert where == expected, f"task {task_id!r} is {rec.state}, found at {where}"
            assert rec.state not in IN_FLIGHT or holder[task_id] == rec.worker, task_id
            unfinished += rec.state not in ENDED
        assert self._open == unfinished, f"open {self._open} != {unfinished} unfinished"
        for gate, waiting in self._dependents.items():  # (only tasks still waiting on it)
            assert all(gate in self._waiting.get(t, ()) for t in waiting), (gate, waiting)
        assert self._unreachable <= {n for n, w in self.scheduler.workers.items()
                                     if w.state is WorkerState.STALLED}, "unreachable, not stalled"
        assert set(self._unanswering) <= {n for n, w in self.scheduler.workers.items()
                                          if w.state in (WorkerState.STALLED, WorkerState.DRAINING)
                                          }, "unanswering, given tasks"
        claimed = Counter(w for w, _ in self._claims.values())
        for name, slot in self.scheduler.workers.items():
            flying = self._in_flight.get(name, ())
            assert slot.running == len(flying) + claimed[name], \
                f"{name}: {slot.running}/{len(flying)} + {claimed[name]} claimed"
            assert not slot.alone or self._alone_in(flying), \
                f"{name}: alone, holds {list(flying)}"

    def report(self, unassigned: Iterable[TaskId] = (), only: Iterable[TaskId] | None = None
               ) -> RunReport:
        """Outcomes in the order results came; ``only`` limits it to some tasks (a batch).
        ``unassigned``: the tasks given up as unassignable, or a map of them to why."""
        why = unassigned if isinstance(unassigned, Mapping) else {}
        keep = None if only is None else set(only)
        outcomes = []
        for task_id in self._ran:
            if keep is not None and task_id not in keep:
                continue
            rec = self.records[task_id]
            res = rec.result
            assert res is not None
            outcomes.append(TaskOutcome(task_id, rec.task.description, rec.task.difficulty,
                                        res.worker, res.success, res.seconds, res.error,
                                        res.value))
        unassigned = [t for t in unassigned if keep is None or t in keep]
        skip = set(unassigned)
        cancelled = {r.task.id: r.reason or "" for r in self.records.values()
                     if r.state is X and r.task.id not in skip
                     and (keep is None or r.task.id in keep)}
        dead = [t for t in self.dead if keep is None or t in keep]
        looked = () if not self._open else self.records if keep is None else \
            self._in_order(t for t in keep if t in self.records)
        unfinished = [t for t in looked if self.records[t].state not in ENDED and t not in skip]
        return RunReport(outcomes, unassigned, cancelled, dead=dead, unfinished=unfinished,
                         unassigned_why={t: why[t] for t in unassigned if why.get(t)})
