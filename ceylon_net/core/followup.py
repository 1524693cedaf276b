"""What follows from tasks finishing or moving: group progress and goals, client batches, one
:class:`~ceylon_net.core.commands.Finished` per task, the run's end, and the progress the
admin reports. Pure: effects are commands."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .. import wire
from ..wire import Kind
from .batches import Batch, Batches, batch_gate, past_step
from .board import ENDED, FINISHED, TaskBoard, TaskRecord, TaskState
from .commands import Finished, Forgot, Outbox
from .groups import GroupEvent, TaskManager
from .tasks import RunReport, TaskId, TaskStatus
from .upstream import after_failure
from .watchers import Watchers

LOG_LEVEL_OF_GROUP_EVENT = {"group_progress": "DEBUG", "goal_failed": "WARNING"}


def finished(rec: TaskRecord) -> Finished:
    """The one command for a task's end."""
    state = rec.state
    if state is TaskState.COMPLETED:  # the common case first
        return Finished(rec.task.id, TaskStatus.COMPLETED, rec.result)
    if state is TaskState.CANCELLED or rec.dead:
        return Finished(rec.task.id, rec.status, None, rec.reason)
    return Finished(rec.task.id, rec.status, rec.result)


class Followup:
    def __init__(self, board: TaskBoard, task_manager: TaskManager, batches: Batches,
                 out: Outbox, unassigned: dict[TaskId, str], watchers: Watchers,
                 keep_finished: int | None = None) -> None:
        self.board = board
        self.keep_finished = keep_finished  # tasks of done batches kept (None: all)
        # Tasks outside batches to forget the same way once finished (execute()'s), and
        # those finished, oldest first.
        self.loose: set[TaskId] = set()
        self.loose_done: deque[TaskId] = deque()
        self.forget_due = False  # forget_old at the start of the next round ...
        self.forget_at = 0.0  # ... from then
        # The open tasks that held the oldest back at the last try: one of them ending is
        # tried again at once, not a heartbeat later (anything else ending is not).
        self.holders: set[TaskId] = set()
        self.batch_held = False  # ... and a batch was among what they held back
        self.task_manager = task_manager
        self.batches = batches
        self.watchers = watchers
        self.out = out
        self.unassigned = unassigned
        self.run_announced = False  # run_finished was published for what is submitted now
        self._last_progress: tuple[int, int, int, int] | None = None

    def settle(self) -> None:
        """Follow up on finished tasks, in order: groups and goals, batches, then one
        Finished each (cancellations may cascade: until nothing more finishes). A client
        hears of each task before the group or batch it ends: a future on the whole never
        resolves while one on a part is still waiting."""
        board = self.board
        while board.finished:
            records, board.finished = board.finished, []
            events = self.task_manager.follow(records, board)
            for event in events:
                self._group_event(event)
            ended = self.batches.follow(records)
            for rec in records:
                self.out.add(finished(rec))
            if self.watchers.tasks:
                for rec in records:
                    self.watchers.ended(rec)
            if self.watchers.groups:
                for event in events:
                    self._group_news(event)
            for batch in ended:
                self._batch_done(batch)
            if self.loose:
                self._loose_ended(records)
            keep = self.keep_finished
            if keep is not None and (ended or past_step(len(self.loose_done), keep)):
                # Next round: this one's changes and results are journaled and written as
                # they stand (a batch done as it came in is journaled before it goes). A
                # batch that ended may be what held the oldest back: tried at once again.
                self.forget_due = True
                if (ended and not self.batch_held) \
                        or (self.holders and any(r.task.id in self.holders for r in records)):
                    self.forget_at = 0.0

    def _needed(self) -> tuple[set[TaskId], set[str]]:
        """The tasks, and groups (by id or name), that a task or group still open depends
        on: they are not forgotten before it ends (a restart would have it wait on a new
        task or group given the same id or name)."""
        tasks = {d for rec in self.board.records.values() if rec.task.depends_on
                 and rec.state not in ENDED for d in rec.task.depends_on}
        groups = {d for g in self.task_manager.task_groups.values()
                  if g.depends_on and g.status not in FINISHED for d in g.depends_on}
        return tasks, groups

    def _holding(self, task_ids: Iterable[TaskId]) -> set[TaskId]:
        """The open tasks that depend on these (a group's dependents are not looked for: a
        group held back is tried again a heartbeat later)."""
        ids = set(task_ids)
        return {rec.task.id for rec in self.board.records.values() if rec.task.depends_on
                and rec.state not in ENDED and not ids.isdisjoint(rec.task.depends_on)}

    def _holds(self, task_ids: Iterable[TaskId], needed: tuple[set[TaskId], set[str]]
               ) -> bool:
        tasks, groups = needed
        if not tasks and not groups:
            return False
        group_of = self.task_manager.group_of
        for task_id in task_ids:
            if task_id in tasks:
                return True
            group = group_of(task_id) if groups else None
            if group is not None and (group.id in groups or group.name in groups):
                return True
        return False

    def restore_loose(self, loose: Iterable[TaskId], records: dict[TaskId, TaskRecord]
                      ) -> None:
        """execute()'s tasks back from a journal: those open forgotten once they finish,
        those finished in the order they were submitted."""
        ended = []
        for task_id in loose:
            rec = records.get(task_id)
            if rec is None:
                continue
            if rec.state in ENDED:
                ended.append(rec)
            else:
                self.loose.add(task_id)
        self.loose_done.extend(r.task.id for r in sorted(ended, key=lambda r: r.index))

    def _loose_ended(self, records: list[TaskRecord]) -> None:
        loose, done = self.loose, self.loose_done
        for rec in records:
            if rec.task.id in loose:
                loose.discard(rec.task.id)
                done.append(rec.task.id)

    def forget_when_due(self, now: float, every: float) -> None:
        """At a round's start: what :meth:`settle` found due for forgetting, in an earlier
        round. Held back (an open task depends on the oldest), it is tried again ``every``
        seconds on, not every round (each try looks at every task)."""
        if self.forget_due and now >= self.forget_at:
            self.forget_due = self.forget_old(self.keep_finished or 0)
            self.forget_at = now + every if self.forget_due else 0.0

    def forget_old(self, keep: int) -> bool:
        """Forget done batches, oldest first, beyond ``keep`` of their tasks (their reports
        went out as they finished): their tasks, groups and what was said of them; and of
        the tasks outside batches that may go (execute()'s), those beyond ``keep``, in steps
        as batches go (see Batches.forgettable). True when some were held back (an open task
        depends on them, or a client is still to claim one): to try again later."""
        needed: list[tuple[set[TaskId], set[str]]] = []  # (looked up once, if asked)
        self.holders, self.batch_held = set(), False

        def held(task_ids: Iterable[TaskId]) -> bool:
            if not needed:
                needed.append(self._needed())
            if not self._holds(task_ids, needed[0]):
                return False
            self.holders |= self._holding(task_ids)
            return True

        def batch_held(b: Batch) -> bool:
            found = held(b.task_ids)
            self.batch_held |= found
            return found

        gone = self.batches.forgettable(keep, batch_held)
        loose = self.loose_done
        tasks = [t for b in gone for t in b.task_ids]
        if past_step(len(loose), keep):
            while len(loose) > keep and not held((loose[0],)):
                tasks.append(loose.popleft())
        more = past_step(self.batches.kept, keep) or past_step(len(loose), keep)
        if tasks:
            self._forget(tasks, gone, keep)
        return more

    def _forget(self, tasks: list[TaskId], gone: list[Batch], keep: int) -> None:
        """These finished tasks and done batches go (see forget_old): the batches' tasks,
        then execute()'s."""
        board, batched = self.board, sum(len(b.task_ids) for b in gone)
        board.forget(tasks)
        groups = self.task_manager.forget_done(tasks)
        ids = [b.id for b in gone]
        board.forget_gates([*map(batch_gate, ids), *(("group", g) for g in groups)])
        if self.unassigned:
            board.forgotten.unassigned += sum(self.unassigned.pop(t, None) is not None
                                              for t in tasks)
        self.out.add(Forgot(tasks, groups, ids, self.batches.next_id,
                            self.board.forgotten.row(), [(b.sid, b.id) for b in gone if b.sid],
                            tasks[batched:]))
        self.out.log("DEBUG", f"forgot {len(ids)} done batch(es) and "
                              f"{len(tasks) - batched} task(s) of "
                              f"execute(): keeping the latest {keep:,} finished "
                              f"(--keep-finished)")

    def follow_moves(self) -> None:
        """Group tasks show their live status (running, or back to pending)."""
        moved = self.board.moved
        if moved:
            records = self.board.records
            for task_id in moved:
                rec = records.get(task_id)
                if rec is None or rec.state in ENDED:
                    # (it moved, then ended in the same round: its end is its status, told
                    # by settle; or ended and was forgotten, --keep-finished)
                    continue
                self.task_manager.mark((task_id,), TaskStatus.RUNNING
                                       if rec.state is TaskState.RUNNING else TaskStatus.PENDING)
            moved.clear()

    def announce_run_end(self) -> None:
        """Everything submitted has finished: say so once on PUB."""
        b = self.board
        if self.run_announced or not b.total or b.open:
            return
        self.run_announced = True
        ran = b.ran
        # Counters, not a report: this runs after every execute() and must stay O(1).
        self.out.event("run_finished", tasks=ran, succeeded=b.succeeded,
                       success_rate=b.succeeded / ran if ran else None,
                       unassigned=len(self.unassigned) + b.forgotten.unassigned)

    def _group_event(self, e: GroupEvent) -> None:
        self.out.log(LOG_LEVEL_OF_GROUP_EVENT.get(e.kind, "INFO"), e.message)
        self.out.event(e.kind, group=e.group.name, message=e.message, **e.data)

    def _group_news(self, e: GroupEvent) -> None:
        self.watchers.group_news(e.group.id, wire.GroupNews(
            e.group.name, e.kind, e.message, e.data, self.watchers.sid_of(e.group)),
            finished=e.kind == "group_finished")

    def _batch_done(self, batch: Batch) -> None:
        self.board.open_gate(batch_gate(batch.id))
        self.out.log("INFO", f"batch {batch.id} done: {batch.succeeded}/{len(batch.task_ids)} "
                             f"succeeded")
        if batch.waiters:
            report = self.batch_report(batch)
            for client in batch.waiters:
                self.out.send(client, Kind.REPORT, report)

    def report(self, only: Iterable[TaskId] | None = None) -> RunReport:
        """The board's report (of ``only`` these tasks), with which of its cancelled tasks
        did not run for a failure upstream."""
        report = self.board.report(self.unassigned, only)
        report.after_failure = after_failure(self.board.records, self.task_manager,
                                             report.cancelled)
        return report

    def batch_report(self, batch: Batch) -> wire.BatchReport:
        report = self.report(batch.task_ids)
        ids = set(batch.task_ids)  # (a group is never empty, and its tasks came together)
        report.groups = [g.summary() for g in self.task_manager.task_groups.values()
                         if g.subtasks and g.subtasks[0].task_id in ids]
        return wire.BatchReport(batch.id, report.to_json())

    def batch_progress(self) -> None:
        """Clients waiting for a batch hear how far it got (one restored from a journal,
        once its client WATCHes it again)."""
        for b in self.batches.open.values():
            if b.waiters:
                progress = wire.BatchProgress(b.id, b.done, len(b.task_ids), b.succeeded)
                for client in b.waiters:
                    self.out.send(client, Kind.PROGRESS, progress)

    def log_progress(self, workers: int, stuck: int = 0, awaited: int = 0) -> None:
        """A progress line when something moved since the last one. ``stuck``: workers'
        slots held by a handler past its task (they run nothing else meanwhile);
        ``awaited``: workers still to connect before anything is assigned."""
        board = self.board
        if board.finished:  # (a timer ended some: their groups count them in this line too)
            self.settle()
        total = board.total
        state = (total - board.open, board.running, len(board.scheduler), stuck, awaited)
        if state == self._last_progress or not total:
            return
        self._last_progress = state
        waiting = f", {len(board.waiting)} waiting on dependencies" if board.waiting else ""
        held = board.queued_on_workers  # sent ahead (pipelining): queued there, not running
        past = f" ({stuck} slot(s) held by a handler past its task)" if stuck else ""
        past += f" (assigning once {awaited} more connect: --expect-workers)" if awaited else ""
        self.out.log("INFO", f"progress: {state[0]}/{total} done, "
                             f"{state[1] - held} running, {state[2] + held} queued{waiting}, "
                             f"{workers} worker(s){past}")
        for g in self.task_manager.task_groups.values():
            if g.status == TaskStatus.RUNNING:
                goal = f", goal '{g.goal.name}' {g.goal.status.value}" if g.goal else ""
                self.out.log("INFO", f"group '{g.name}': {g.finished}/{g.total} done{goal}")
