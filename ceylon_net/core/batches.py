"""Batches submitted by clients (ceylon-submit) to a serving admin: which tasks each holds,
who is waiting for it, and when it is done. No I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from .board import TaskRecord
from .tasks import TaskId, TaskStatus


def batch_gate(batch_id: int) -> tuple[str, int]:
    return ("batch", batch_id)


@dataclass(slots=True)
class Batch:
    id: int
    client: bytes  # the submitting client's ROUTER identity
    task_ids: list[TaskId]
    wait: bool
    remaining: int
    succeeded: int = 0
    finished_ids: set[TaskId] = field(default_factory=set)

    @property
    def done(self) -> int:
        return len(self.task_ids) - self.remaining


class Batches:
    def __init__(self) -> None:
        self.open: dict[int, Batch] = {}
        self._ids = itertools.count(1)
        self._last: int | None = None

    def start(self, client: bytes, task_ids: list[TaskId], wait: bool, sequential: bool
              ) -> tuple[Batch, tuple[str, int] | None]:
        """A new batch; with ``sequential``, also the gate its tasks must wait on (the
        previous batch's), or None when nothing is still running before it. Once its tasks
        are recorded, :meth:`mark` them."""
        batch = Batch(next(self._ids), client, task_ids, wait, len(task_ids))
        after = self._last if sequential and self._last in self.open else None
        self.open[batch.id] = batch
        self._last = batch.id
        return batch, None if after is None else batch_gate(after)

    @staticmethod
    def mark(batch: Batch, records: dict[TaskId, TaskRecord]) -> None:
        """Its tasks' records say which batch they are in (a field of the record rather
        than a map of our own: a queued task costs the admin less)."""
        for task_id in batch.task_ids:
            records[task_id].batch = batch.id

    def follow(self, records: Iterable[TaskRecord]) -> list[Batch]:
        """Count finished tasks; returns the batches that just finished."""
        done = []
        for rec in records:
            batch = self.open.get(rec.batch) if rec.batch else None
            if batch is None:
                continue
            rec.batch = 0
            batch.remaining -= 1
            batch.succeeded += rec.status == TaskStatus.COMPLETED
            if batch.remaining == 0:
                del self.open[batch.id]
                done.append(batch)
        return done
