"""Rebuilding the admin's state from what a journal kept, after a restart. Pure: the journal's
rows come in as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .board import TaskBoard
from .groups import TaskManager
from .tasks import Task, TaskResult, TaskStatus
from .workfile import goal_from_spec


@dataclass(slots=True)
class JournaledTask:
    """One task as a journal keeps it."""

    task: Task
    group: str | None
    status: TaskStatus
    attempt: int
    worker: str | None
    result: TaskResult | None
    reason: str | None


def restore(board: TaskBoard, manager: TaskManager, entries: list[JournaledTask],
            groups: list[tuple[str, dict[str, Any]]]) -> bool:
    """Rebuild the board and the groups (in submission order); False when there was
    nothing. Finished tasks stay finished, tasks that were on a worker wait for it, the rest
    wait or queue again."""
    if not entries:
        return False
    by_group: dict[str, list[Task]] = {}
    for e in entries:
        if e.group is not None:
            by_group.setdefault(e.group, []).append(e.task)
    specs = dict(groups)
    names = {s["name"]: gid for gid, s in specs.items()}
    gates = {t.id: [("group", d if d in specs else names[d]) for d in specs[gid]["depends_on"]]
             for gid, tasks in by_group.items() for t in tasks}
    board.restore(entries, gates)
    manager.restore([(gid, spec, by_group.get(gid, [])) for gid, spec in groups], board,
                    goal_from_spec)
    board.dirty = set()
    return True
