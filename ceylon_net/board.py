"""The admin's task bookkeeping: every task's state, who runs it, its result. No I/O.

The board owns the scheduler's ready queue and worker slots, so "a result came in" and "a
worker left" update both in one place, and a task is either queued, in flight on exactly one
worker, or finished: never two of these, never none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .errors import ConfigError
from .scheduler import Blocked, Scheduler, WorkerSlot
from .tasks import RunReport, Task, TaskAssignment, TaskId, TaskOutcome, TaskResult, TaskStatus

FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(slots=True)
class TaskRecord:
    task: Task
    status: TaskStatus = TaskStatus.PENDING
    worker: str | None = None
    attempt: int = 0
    seq: int = 0
    result: TaskResult | None = None


class TaskBoard:
    def __init__(self) -> None:
        self.records: dict[TaskId, TaskRecord] = {}
        self.scheduler = Scheduler()
        self._in_flight: dict[str, set[TaskId]] = defaultdict(set)
        self._open = 0  # tasks not finished yet
        self.finished_order: list[TaskId] = []

    # ---- tasks
    def add(self, tasks: list[Task]) -> None:
        """Queue new tasks. A duplicate id (in the batch or already known) is refused whole."""
        ids = [t.id for t in tasks]
        dup = next((i for i in ids if i in self.records), None)
        if dup is None and len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
        if dup is not None:
            raise ConfigError(f"duplicate task id {dup!r}")
        for task in tasks:
            rec = TaskRecord(task)
            self.records[task.id] = rec
            self._enqueue(rec)
        self._open += len(tasks)

    def _enqueue(self, rec: TaskRecord) -> None:
        t = rec.task
        rec.status = TaskStatus.PENDING
        rec.worker = None
        rec.seq = self.scheduler.push(t.id, t.difficulty, t.required_role, t.priority,
                                      rec.seq if rec.attempt else None)

    @property
    def open(self) -> int:
        return self._open

    @property
    def running(self) -> int:
        return sum(len(v) for v in self._in_flight.values())

    def in_flight(self, worker: str) -> set[TaskId]:
        return self._in_flight.get(worker, set())

    # ---- workers
    def add_worker(self, slot: WorkerSlot) -> None:
        self.scheduler.add_worker(slot)

    def remove_worker(self, name: str) -> list[TaskId]:
        """The worker is gone: its in-flight tasks go back to the queue, oldest place kept."""
        self.scheduler.remove_worker(name)
        lost = sorted(self._in_flight.pop(name, set()), key=lambda i: self.records[i].seq)
        for task_id in lost:
            self._enqueue(self.records[task_id])
        return lost

    # ---- decisions and results
    def plan(self) -> dict[str, list[TaskAssignment]]:
        """Fill free slots; returns assignments grouped by worker name."""
        out: dict[str, list[TaskAssignment]] = defaultdict(list)
        for task_id, worker in self.scheduler.assign():
            rec = self.records[task_id]
            rec.status = TaskStatus.ASSIGNED
            rec.worker = worker
            rec.attempt += 1
            self._in_flight[worker].add(task_id)
            out[worker].append(TaskAssignment(rec.task, worker, rec.attempt))
        return out

    def unsent(self, worker: str, assignments: list[TaskAssignment]) -> None:
        """Assignments that could not be delivered go back to the queue."""
        flying = self._in_flight[worker]
        for a in assignments:
            if a.task.id in flying:
                flying.discard(a.task.id)
                rec = self.records[a.task.id]
                rec.attempt -= 1
                self.scheduler.release(worker)
                self._enqueue(rec)

    def record(self, result: TaskResult) -> TaskRecord | None:
        """Apply a worker's result. Returns the record, or None for a stale or unknown result
        (already finished, or the task is no longer on that worker): acknowledged and ignored."""
        rec = self.records.get(result.task_id)
        if rec is None or rec.status in FINISHED or rec.worker != result.worker:
            return None
        if result.attempt != rec.attempt:
            return None
        self._in_flight[result.worker].discard(rec.task.id)
        self.scheduler.release(result.worker)
        rec.status = TaskStatus.COMPLETED if result.success else TaskStatus.FAILED
        rec.result = result
        self._open -= 1
        self.finished_order.append(rec.task.id)
        return rec

    def give_up(self, task_ids: list[TaskId]) -> None:
        """Queued tasks that will not run (nobody can take them): out of the queue, unassigned."""
        for task_id in task_ids:
            if self.scheduler.discard(task_id):
                self.records[task_id].status = TaskStatus.CANCELLED
                self._open -= 1

    def blocked(self) -> list[Blocked]:
        return self.scheduler.blocked()

    def queued(self) -> list[TaskId]:
        return self.scheduler.queued()

    def report(self, unassigned: list[TaskId] | None = None) -> RunReport:
        outcomes = []
        for task_id in self.finished_order:
            rec = self.records[task_id]
            res = rec.result
            assert res is not None
            outcomes.append(TaskOutcome(task_id, rec.task.description, rec.task.difficulty,
                                        res.worker, res.success, res.seconds, res.error))
        return RunReport(outcomes, list(unassigned or []))
