"""Tasks no connected worker can take: said once, plainly, and given up after a while when
nothing else is left, so a run ends instead of hanging. Pure: ``now`` is an argument."""

from __future__ import annotations

from collections.abc import Mapping

from .board import TaskBoard
from .commands import Outbox
from .scheduler import Blocked, WorkerSlot, can_do
from .tasks import TaskId, listed


def describe(board: TaskBoard, b: Blocked) -> str:
    """'task 3 'ML training' needs skill >= 8; best connected is 6'."""
    task = board.records[b.tasks[0]].task
    more = f" (and {len(b.tasks) - 1} more like it)" if len(b.tasks) > 1 else ""
    return f"task {task.id!r} '{task.description}'{more} {why(b)}"


def why(b: Blocked) -> str:
    """Why no connected worker can take these tasks: 'needs skill >= 8; best connected is 6'
    (said in the log, and beside them in the report)."""
    if not b.has_handler:
        return f"needs handler '{b.handler}'; no connected worker has it"
    if b.best_skill is None:
        return f"needs role '{b.role}'; no connected worker has it"
    return f"needs skill >= {b.difficulty}; best connected is {b.best_skill}"


IDS_SAID = 20  # task ids in a log line, at most
NO_WORKER_SAID = 10.0  # seconds with tasks queued and no worker connected before it is said
NO_WORKER_AGAIN = 30.0  # and then every so often while it lasts


class Unassignable:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._no_worker: float | None = None  # since when no worker is there for queued tasks
        self._no_worker_said = 0.0
        self._since: float | None = None  # when only unassignable tasks were left
        self._warned: set[tuple[int, str | None, str | None]] = set()  # kinds said
        self._awaited_said: dict[tuple[int, str | None, str | None], float] = {}  # ... when
        self._joined = 0  # registrations seen: a new worker may change what is possible
        self._version: tuple[int, int, int] | None = None
        self._blocked: list[tuple[Blocked, list[str]]] = []

    def held_up(self, gap: float) -> None:
        """The admin heard nothing for ``gap`` s: a worker that joined meanwhile may be
        waiting unread, and the time is not counted (a review: a task given up as its worker
        joined)."""
        if self._since is not None:
            self._since += gap

    def check(self, board: TaskBoard, workers: int, joined: int, now: float, out: Outbox,
              lost: Mapping[str, tuple[WorkerSlot, float]], lost_seq: int
              ) -> dict[TaskId, str]:
        """Warn once per kind of blocked task; returns the tasks to give up on now (only
        unassignable ones are left, nothing runs, and that has lasted ``timeout``), each
        with why (:func:`why`). Tasks a ``lost`` worker could do (Membership.lost: changed
        when ``lost_seq`` did) are not given up: they wait for it to come back, or for
        another worker that can do them, as tasks wait with no worker at all."""
        if not workers or not len(board.scheduler):
            self._since = None
            self._none_there(len(board.scheduler) if not workers else 0, now, out)
            return {}
        self._no_worker = None
        blocked = self._current(board, joined, lost, lost_seq)
        self._say(board, blocked, now, out)
        hopeless = [b for b, back in blocked if not back]
        stuck = sum(len(b.tasks) for b, _ in blocked)
        if not hopeless or board.running or stuck != len(board.scheduler):
            self._since = None
            return {}
        if self._since is None:
            self._since = now
            out.log("WARNING", f"only unassignable tasks remain; giving up on them in "
                               f"{self.timeout:g} s unless a capable worker joins")
            return {}
        if now - self._since < self.timeout:
            return {}
        ids = {t: why(b) for b in hopeless for t in b.tasks}
        out.log("ERROR", f"giving up on {len(ids):,} unassignable task(s): "
                         f"{listed(list(ids), IDS_SAID, repr)}")
        # Those are gone: a task that comes after them (a program trying again) is said and
        # waited for afresh, not given up at once on their clock.
        self._since = None
        self._warned.clear()
        return ids

    def _say(self, board: TaskBoard, blocked: list[tuple[Blocked, list[str]]], now: float,
             out: Outbox) -> None:
        """Each kind of blocked task once (a handler missing is a kind of its own); those
        waiting for a lost worker, again every so often while they do."""
        for b, back in blocked:
            kind = (b.difficulty, b.role, b.handler)
            if not back:
                if kind not in self._warned:
                    self._warned.add(kind)
                    out.log("WARNING", describe(board, b))
            elif now - self._awaited_said.get(kind, float("-inf")) >= NO_WORKER_AGAIN:
                self._awaited_said[kind] = now
                out.log("WARNING", f"{describe(board, b)}: waiting for {listed(back, 3, repr)} "
                                   f"(lost) to come back, or another worker that can take them")

    def _none_there(self, queued: int, now: float, out: Outbox) -> None:
        """``queued`` tasks wait and no worker is connected: they wait for one to join or
        come back (not given up: nothing is known about what the next one can do), and it
        is said after a while, and again every so often, so a run does not just go quiet."""
        if not queued:
            self._no_worker = None
            return
        if self._no_worker is None:
            self._no_worker, self._no_worker_said = now, now - NO_WORKER_AGAIN + NO_WORKER_SAID
        if now - self._no_worker_said >= NO_WORKER_AGAIN:
            self._no_worker_said = now
            out.log("WARNING", f"no worker connected for {now - self._no_worker:.0f} s: "
                               f"{queued} task(s) wait for one to join")

    def _current(self, board: TaskBoard, joined: int,
                 lost: Mapping[str, tuple[WorkerSlot, float]], lost_seq: int
                 ) -> list[tuple[Blocked, list[str]]]:
        """The blocked tasks by kind, each with the lost workers that could take them:
        worked out again only when the queue, what runs, or the lost workers changed (not
        every tick: 100,000 queued tasks, 1,000 lost workers)."""
        if joined != self._joined:  # a worker joined: say again what it cannot do either
            self._joined = joined
            self._warned.clear()
            self._awaited_said.clear()
        version = (board.scheduler.version, board.running, lost_seq)
        if version != self._version:
            self._version = version
            self._blocked = [(b, _could_take(b, lost)) for b in board.blocked()]
        return self._blocked


def _could_take(b: Blocked, lost: Mapping[str, tuple[WorkerSlot, float]]) -> list[str]:
    return [n for n, (slot, _) in lost.items() if can_do(slot, b.difficulty, b.role, b.handler)]
