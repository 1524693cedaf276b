"""Which cancelled tasks could not run because something they depend on failed.

A task whose dependency fails is cancelled ("dependency 'a' failed"), and so is what depends on
it in turn ("dependency 'b' was cancelled"): a report lists them with the cancelled, apart from
the tasks that ran. For ``ceylon-submit --wait`` a batch whose tasks all wait on a task of an
earlier batch that failed then read as a success (exit 0): its tasks were only cancelled. This
module tells, from the board and the groups as they are (so an admin restarted on its journal
tells the same), the cancelled tasks whose cancellation goes back to a failure: a task that
failed (or was lost with its workers too often), or was given up as unassignable, or a group
that failed, directly or through tasks and groups cancelled for it. A task cancelled by a user,
or by a goal's ``cancel_rest``, and what was cancelled only for it, are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .board import GATE_REASONS, TaskRecord, TaskState, blames, unassignable
from .groups import TaskGroup, TaskManager
from .tasks import TaskId, TaskStatus

# A cancellation for a dependency (its reason begins with board.GATE_REASONS) that names a
# dependency of the task and says it failed, was unassigned or was cancelled for a failure
# (board.blames) tells by itself (that dependency may be forgotten since: --keep-finished);
# another is looked up upstream. A user's own reason that merely reads so names no
# dependency of the task: no failure.

Node = tuple[str, TaskId]  # ("task", id) or ("group", id)


def after_failure(records: Mapping[TaskId, TaskRecord], manager: TaskManager,
                  cancelled: Iterable[TaskId]) -> list[TaskId]:
    """Of the ``cancelled`` tasks, those cancelled because of a failure upstream, in order."""
    memo: dict[Node, bool] = {}
    return [t for t in cancelled if _blamed(("task", t), records, manager, memo)]


def _blamed(start: Node, records: Mapping[TaskId, TaskRecord], manager: TaskManager,
            memo: dict[Node, bool]) -> bool:
    """Does a failure lie behind ``start``? Depth first, without recursion (chains of
    dependencies may be long): once one is found, everything on the path to it is blamed."""
    if start in memo:
        return memo[start]
    verdict, below = _own(start, records, manager)
    memo[start] = verdict
    if verdict or not below:
        return verdict
    path = [(start, iter(below))]
    while path:
        child = next(path[-1][1], None)
        if child is None:
            path.pop()  # (nothing behind it: stays not blamed)
            continue
        if child not in memo:
            verdict, below = _own(child, records, manager)
            memo[child] = verdict
            if not verdict and below:
                path.append((child, iter(below)))
        if memo[child]:
            for node, _ in path:
                memo[node] = True
            return True
    return False


def _own(node: Node, records: Mapping[TaskId, TaskRecord], manager: TaskManager
         ) -> tuple[bool, list[Node]]:
    """(a failure of the node itself, what to look at upstream of it)."""
    kind, key = node
    if kind == "group":
        group = manager.task_groups.get(key)
        if group is None:
            return False, []
        if group.status is TaskStatus.FAILED:
            return True, []
        return False, [("task", t.task_id) for t in group.subtasks
                       if t.status is TaskStatus.CANCELLED]
    rec = records.get(key)
    if rec is None:  # (forgotten: --keep-finished)
        return False, []
    if rec.state is TaskState.FAILED or unassignable(rec.reason):
        return True, []
    reason = rec.reason or ""
    if rec.state is not TaskState.CANCELLED or not reason.startswith(GATE_REASONS):
        return False, []
    groups = _group_deps(manager, key)
    if blames(reason) and reason.startswith((
            *(f"dependency {d!r} " for d in rec.task.depends_on),
            *(f"group '{g.name}' " for _, gid in groups
              if (g := manager.task_groups.get(gid)) is not None))):
        return True, []  # (said as its dependency ended: that may be forgotten since)
    return False, [*(("task", d) for d in rec.task.depends_on), *groups]


def _group_deps(manager: TaskManager, task_id: TaskId) -> list[Node]:
    group: TaskGroup | None = manager.group_of(task_id)
    if group is None:
        return []
    return [("group", gid) for ref in group.depends_on
            if (gid := manager.resolved(ref)) is not None]
