"""Clients waiting on tasks and groups (a ``Client``'s futures): who to tell when one ends, and
what to tell them. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from .. import wire
from ..wire import Kind
from .board import FINISHED, TaskBoard, TaskRecord
from .commands import Outbox
from .groups import GoalStatus, TaskGroup, TaskManager
from .tasks import TaskId, TaskStatus


def task_done(rec: TaskRecord) -> wire.TaskDone:
    """What a client hears of an ended task: the worker's result when one came, or why not;
    and the submission it came in (see Batch.sid)."""
    if rec.dead or rec.result is None or rec.status is TaskStatus.CANCELLED:
        return wire.TaskDone(rec.task.id, rec.status.value, None, rec.reason, rec.sid)
    return wire.TaskDone(rec.task.id, rec.status.value, wire.to_wire(rec.result), sid=rec.sid)


class Watchers:
    def __init__(self, board: TaskBoard, out: Outbox) -> None:
        self.board = board
        self.out = out
        self.tasks: dict[TaskId, set[bytes]] = {}  # task -> clients waiting for it
        self.groups: dict[str, set[bytes]] = {}  # group id -> clients that submitted it
        self._load: dict[bytes, int] = {}  # client -> how many tasks it waits for

    def __bool__(self) -> bool:
        return bool(self.tasks) or bool(self.groups)

    def watch(self, peer: bytes, task_ids: Iterable[TaskId]) -> None:
        """``peer`` waits for these tasks: a DONE now for those that ended (or are unknown),
        later for the rest."""
        records = self.board.records
        for task_id in task_ids:
            rec = records.get(task_id)
            if rec is None:
                self.out.send(peer, Kind.DONE, wire.TaskDone(
                    task_id, "unknown", None, "the admin has no such task (it restarted "
                    "without its journal, or the id is wrong" + self._or_forgotten() + ")"))
            elif rec.status in FINISHED:
                self.out.send(peer, Kind.DONE, task_done(rec))
            elif peer not in self.tasks.setdefault(task_id, set()):
                self.tasks[task_id].add(peer)
                self._load[peer] = self._load.get(peer, 0) + 1

    def _or_forgotten(self) -> str:
        """Said of an unknown task or group once the admin forgot some (--keep-finished)."""
        return ", or it finished in a batch the admin forgot: --keep-finished" \
            if self.board.forgotten.tasks else ""

    def watch_group(self, peer: bytes, group_id: str) -> None:
        self.groups.setdefault(group_id, set()).add(peer)
        self._load.setdefault(peer, 0)

    def watch_groups(self, peer: bytes, names: Iterable[str], groups: TaskManager) -> None:
        """``peer`` waits for these groups again (by name): their news from now on, and at
        once the summary of those that finished, or that the admin has no such group."""
        by_name = {g.name: g for g in groups.task_groups.values()}
        for name in names:
            group = by_name.get(name)
            if group is None:
                self.out.send(peer, Kind.GROUP, wire.GroupNews(
                    name, "group_unknown", f"the admin has no group {name!r} (it restarted "
                    "without its journal, or the name is wrong" + self._or_forgotten() + ")"))
            else:
                self._catch_up(peer, group)
                if group.status in FINISHED:  # (completed, failed or cancelled)
                    self.out.send(peer, Kind.GROUP, wire.GroupNews(
                        name, "group_finished", f"group '{name}' {group.status.value}: "
                        f"{group.completed}/{group.total} completed", group.summary(),
                        self.sid_of(group)))
                else:
                    self.watch_group(peer, group.id)

    def _catch_up(self, peer: bytes, group: TaskGroup) -> None:
        """What a client watching a group again may have missed (who watches is not
        journaled: results that came in after a restart, before its WATCH, told no one):
        where the group stands, and how its goal went. The client drops what it heard."""
        summary = group.summary()
        if group.finished:
            self.out.send(peer, Kind.GROUP, wire.GroupNews(
                group.name, "group_progress",
                f"group '{group.name}': {group.finished}/{group.total} done", summary,
                self.sid_of(group)))
        goal = group.goal
        if goal is not None and goal.status in (GoalStatus.ACHIEVED, GoalStatus.FAILED):
            self.out.send(peer, Kind.GROUP, wire.GroupNews(
                group.name, f"goal_{goal.status.value}",
                f"Goal '{goal.name}' {goal.status.value} ({group.completed}/{group.total} "
                f"completed by now)", summary, self.sid_of(group)))

    def sid_of(self, group: TaskGroup) -> int:
        """The submission a group came in (see Batch.sid: a group goes whole in one), as
        its tasks' records say; 0 for none."""
        rec = self.board.records.get(group.subtasks[0].task_id) if group.subtasks else None
        return 0 if rec is None else rec.sid

    def ended(self, rec: TaskRecord) -> None:
        """A task ended: tell who waits for it."""
        peers = self.tasks.pop(rec.task.id, None)
        if peers:
            done = task_done(rec)
            for peer in peers:
                self.out.send(peer, Kind.DONE, done)
                self._load[peer] -= 1

    def group_news(self, group_id: str, news: wire.GroupNews, finished: bool) -> None:
        peers = self.groups.pop(group_id, None) if finished else self.groups.get(group_id)
        for peer in peers or ():
            self.out.send(peer, Kind.GROUP, news)

    def clients(self) -> list[bytes]:
        """Clients still waiting for something (they get the admin's heartbeat)."""
        waiting = {p for peers in self.groups.values() for p in peers}
        for peer, load in list(self._load.items()):
            if load > 0:
                waiting.add(peer)
            elif peer not in waiting:
                del self._load[peer]
        return sorted(waiting)
