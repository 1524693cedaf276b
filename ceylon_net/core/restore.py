"""Rebuilding the admin's state from what a journal kept, after a restart. Pure: the journal's
rows come in as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .board import Gate, TaskBoard
from .groups import TaskManager
from .tasks import Task, TaskId, TaskResult, TaskStatus
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
    losses: int = 0  # lost with a worker so often (it fails at max_attempts)
    stopping: str | None = None  # on a worker, asked to cancel it: why
    # attempts lost with workers found gone, while it is open (TaskBoard.lost_with)
    lost_with: list[list[Any]] | None = None
    base: int = 0  # its attempts count above this (TaskRecord.base; rows of version 8)


def restore(board: TaskBoard, manager: TaskManager, entries: list[JournaledTask],
            groups: list[tuple[str, dict[str, Any]]],
            more_gates: Mapping[TaskId, list[Gate]] | None = None) -> bool:
    """Rebuild the board and the groups (in submission order); False when there was
    nothing. Finished tasks stay finished, tasks that were on a worker wait for it, the rest
    wait or queue again (on their groups' dependencies, and on ``more_gates``)."""
    if not entries:
        return False
    specs = dict(groups)
    by_group: dict[str, list[Task]] = {}
    for e in entries:
        if e.group in specs:  # a group the journal lacks: see missing_groups
            by_group.setdefault(e.group, []).append(e.task)
    names = {s["name"]: gid for gid, s in specs.items()}
    # (a group it lacks was forgotten, finished with its batch: --keep-finished)
    gates: dict[TaskId, list[Gate]] = {
        t.id: [("group", d if d in specs else names[d]) for d in specs[gid]["depends_on"]
               if d in specs or d in names]
        for gid, tasks in by_group.items() for t in tasks}
    for task_id, more in (more_gates or {}).items():
        gates[task_id] = [*gates.get(task_id, ()), *more]
    board.restore(entries, gates)
    manager.restore([(gid, spec, by_group.get(gid, [])) for gid, spec in groups], board,
                    goal_from_spec)
    board.dirty = set()
    return True


def missing_groups(entries: list[JournaledTask], groups: list[tuple[str, dict[str, Any]]]
                   ) -> dict[str, int]:
    """Groups the journal's tasks name but it does not hold, with their task counts. A
    version-1 journal can have them (its writer committed a submission's groups after its
    tasks): :func:`restore` brings those tasks back as plain tasks."""
    held = {gid for gid, _ in groups}
    missing: dict[str, int] = {}
    for e in entries:
        if e.group is not None and e.group not in held:
            missing[e.group] = missing.get(e.group, 0) + 1
    return missing
