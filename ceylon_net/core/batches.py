"""Batches submitted by clients (ceylon-submit) to a serving admin: which tasks each holds,
who is waiting for it, and when it is done; after a restart on a journal, the same again from
what the journal kept (a waiting client picks its batch up with a WATCH). No I/O."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .board import FINISHED, TaskRecord
from .tasks import TaskId, TaskStatus

FORGOT_SIDS = 10_000  # names of forgotten batches kept (see Batches.forgot_sids)


def batch_gate(batch_id: int) -> tuple[str, int]:
    return ("batch", batch_id)


def past_step(kept: int, keep: int) -> bool:
    """More than ``keep`` finished tasks kept by a quarter of it: time to forget down to
    ``keep`` (in steps, so that the forgetting, one pass over what the board keeps, comes
    once for that many tasks, not for each batch)."""
    return kept > keep + keep // 4


@dataclass(slots=True)
class Batch:
    id: int
    task_ids: list[TaskId]
    wait: bool  # submitted with --wait (journaled: after a restart, see Batches.unclaimed)
    remaining: int
    succeeded: int = 0
    after: int | None = None  # the batch it started after (--sequential)
    # The client's name for this submission (0: none, an older client's): a SUBMIT sent
    # again under it (its answer lost) is answered as the first, not taken twice, and what
    # a client hears of its tasks names it, so that it can tell them from older tasks of
    # their keys (see TaskRecord.sid).
    sid: int = 0
    # The ROUTER identities of the clients waiting for it: its submitter (with --wait) and
    # any that WATCHes it (after a restart, only those).
    waiters: set[bytes] = field(default_factory=set)
    # Done: its report sent to (a client), when; the latest last, none older than a pace.
    answered: OrderedDict[bytes, float] = field(default_factory=OrderedDict)

    def report_due(self, peer: bytes, now: float, every: float) -> bool:
        """A client asks for this done batch's report: due unless sent to it less than
        ``every`` s ago (the WATCHes a client sent while the admin was down come together);
        noted when due. What is noted lasts that long: each new client's watch (a
        ``--watch`` in a loop, a connection each) was kept as long as the batch."""
        answered = self.answered
        if now - answered.get(peer, -math.inf) < every:
            return False
        answered[peer] = now
        answered.move_to_end(peer)
        while now - next(iter(answered.values())) >= every:
            answered.popitem(last=False)
        return True

    def journal_row(self) -> list[Any]:
        """What a journal keeps of it: [wait, after, task ids, sid] (not its clients: they
        WATCH it again, over a new connection)."""
        return [self.wait, self.after, self.task_ids, self.sid]

    @property
    def done(self) -> int:
        return len(self.task_ids) - self.remaining


class Batches:
    def __init__(self) -> None:
        self.open: dict[int, Batch] = {}
        self.known: dict[int, Batch] = {}  # every batch, open or done (a client may ask)
        # Restored batches someone waited for (--wait, or a client's futures), until a
        # client WATCHes them or their tasks (or the admin stops waiting for that): they are
        # not forgotten meanwhile, and the admin is not idle, or an admin run with --tasks
        # could end before such a client had its report.
        self.unclaimed: set[int] = set()
        # Batches are numbered in order: below this, one not known was forgotten; the one
        # just below is the last taken (a --sequential batch goes after it, if still open).
        self.next_id = 1
        # Done batches, oldest first, and how many tasks they hold: a serving admin forgets
        # the oldest beyond --keep-finished (see forgettable).
        self.done: deque[int] = deque()
        self.kept = 0
        self.by_sid: dict[int, int] = {}  # submission name -> the known batch it became
        # ... and of the latest batches forgotten (a copy sent again after its batch ran and
        # was forgotten is not taken as new: it would run again). Journaled too.
        self.forgot_sids: dict[int, int] = {}

    def forgot_named(self, sids: Iterable[tuple[int, int]]) -> None:
        """Names of batches forgotten, [(name, batch)] (just now, or before a restart: a
        journal's); the latest FORGOT_SIDS are kept (see forgot_sids)."""
        for sid, batch_id in sids:
            self.forgot_sids[sid] = batch_id
        while len(self.forgot_sids) > FORGOT_SIDS:
            del self.forgot_sids[next(iter(self.forgot_sids))]

    def again(self, sid: int) -> Batch | None:
        """The known batch a submission of this name became: one sent again (see Batch.sid)."""
        batch_id = self.by_sid.get(sid) if sid else None
        return None if batch_id is None else self.known[batch_id]

    def start(self, client: bytes, task_ids: list[TaskId], wait: bool, sequential: bool,
              sid: int = 0) -> tuple[Batch, tuple[str, int] | None]:
        """A new batch; with ``sequential``, also the gate its tasks must wait on (the
        previous batch's), or None when nothing is still running before it. Once its tasks
        are recorded, :meth:`mark` them (or :meth:`drop` it, refused)."""
        last = self.next_id - 1
        after = last if sequential and last in self.open else None
        batch = Batch(self.next_id, task_ids, wait, len(task_ids), after=after, sid=sid,
                      waiters={client} if wait else set())
        self.next_id += 1
        self._know(batch)
        self.open[batch.id] = batch
        return batch, None if after is None else batch_gate(after)

    def drop(self, batch: Batch) -> None:
        """A batch the admin refused after all (a --sequential one goes after the last
        batch it took)."""
        del self.open[batch.id], self.known[batch.id]
        self.by_sid.pop(batch.sid, None)
        if batch.id == self.next_id - 1:  # (its number was never told: the next takes it,
            self.next_id -= 1  # and one not known below next_id is one forgotten)

    def renumber(self, next_id: int) -> None:
        """Numbers go on from ``next_id`` (or after the last known: a --sequential batch
        goes after the last one taken, forgotten or not; then it waits for none)."""
        self.next_id = max(next_id, max(self.known, default=0) + 1)

    def claim(self, client: bytes, batch_id: int) -> Batch | None:
        """``client`` WATCHes a batch: if open, it waits for it from now on."""
        batch = self.known.get(batch_id)
        if batch is not None:
            self.unclaimed.discard(batch_id)
            if batch_id in self.open:
                batch.waiters.add(client)
        return batch

    def _know(self, batch: Batch) -> None:
        self.known[batch.id] = batch
        if batch.sid:
            self.by_sid[batch.sid] = batch.id

    def claim_tasks(self, task_ids: Iterable[TaskId], records: Mapping[TaskId, TaskRecord]
                    ) -> None:
        """A client watches these tasks (its futures, after a restart): their batches are
        claimed (kept till then, or a small --keep-finished forgot them before the client was
        back: its futures failed 'unknown' though their tasks had run)."""
        for task_id in task_ids if self.unclaimed else ():
            rec = records.get(task_id)
            batch_id = self.by_sid.get(rec.sid) if rec is not None and rec.sid else None
            if batch_id is not None:
                self.unclaimed.discard(batch_id)

    @staticmethod
    def gates(rows: Iterable[tuple[int, list[Any]]]) -> dict[TaskId, list[tuple[str, int]]]:
        """The gates the tasks of journaled --sequential batches wait on (see :meth:`restore`
        for which are open)."""
        return {t: [batch_gate(row[1])] for _, row in rows if row[1] is not None
                for t in row[2]}

    def restore(self, rows: Iterable[tuple[int, list[Any]]],
                records: Mapping[TaskId, TaskRecord]) -> list[tuple[str, int]]:
        """The batches a journal kept (by id, as :meth:`Batch.journal_row`), counted again
        from their tasks' records once the board is restored; numbering goes on after the
        last. Returns the gates to open: those of batches that are done (or were never
        kept, or forgotten), that a later --sequential batch waits on."""
        afters = set()
        for batch_id, (wait, after, task_ids, *rest) in rows:  # (no sid: a journal of v6)
            held = [records[t] for t in task_ids if t in records]
            batch = Batch(batch_id, [r.task.id for r in held], bool(wait), 0, after=after,
                          sid=rest[0] if rest else 0)
            for rec in held:
                rec.sid = batch.sid
                if rec.status in FINISHED:
                    batch.succeeded += rec.status == TaskStatus.COMPLETED
                else:
                    batch.remaining += 1
                    rec.batch = batch_id
            self._know(batch)
            if batch.wait or batch.sid:  # (a client's futures watch its tasks: see claim_tasks)
                self.unclaimed.add(batch_id)
            if batch.remaining:
                self.open[batch_id] = batch
            else:
                self.done.append(batch_id)
                self.kept += len(batch.task_ids)
            if after is not None:
                afters.add(after)
        self.renumber(self.next_id)
        return [batch_gate(a) for a in sorted(afters) if a not in self.open]

    @staticmethod
    def mark(batch: Batch, records: dict[TaskId, TaskRecord]) -> None:
        """Its tasks' records say which batch they are in, and its name (fields of the
        record rather than maps of our own: a queued task costs the admin less)."""
        for task_id in batch.task_ids:
            rec = records[task_id]
            rec.batch, rec.sid = batch.id, batch.sid

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
                self.done.append(batch.id)
                self.kept += len(batch.task_ids)
        return done

    def forgettable(self, keep: int, held: Callable[[Batch], bool] = lambda b: False
                    ) -> list[Batch]:
        """Done batches to forget, oldest first, so that those kept hold at most ``keep``
        tasks; none until they are :func:`past_step`. A batch restored for a client that
        waited for it stays until claimed (or the admin stops waiting for that), and so does
        one ``held`` says a task still open depends on; and the newer ones with them:
        oldest first, always. The batches returned are no longer known (see
        :meth:`forgot`)."""
        if not past_step(self.kept, keep):
            return []
        out: list[Batch] = []
        while self.kept > keep and self.done and self.done[0] not in self.unclaimed \
                and not held(self.known[self.done[0]]):
            batch = self.known.pop(self.done.popleft())
            if self.by_sid.pop(batch.sid, None) is not None:
                self.forgot_named([(batch.sid, batch.id)])
            self.kept -= len(batch.task_ids)
            out.append(batch)
        return out

    def forgot(self, batch_id: int) -> bool:
        """Whether this run had the batch and forgot it (numbers are given in order, and
        one refused is given to the next)."""
        return 0 < batch_id < self.next_id and batch_id not in self.known
