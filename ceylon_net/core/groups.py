"""Task groups with goals (seed 000): the data, the goal checkers, and the TaskManager that
keeps groups, progress and goals up to date as results come in. No I/O.

The manager turns groups into plain tasks plus dependency gates for the board
(``("group", id)`` for a group dependency, ``("task", id)`` for a task dependency), and after
every finished task it updates the group, checks its goal once per result, and tells the board
what to cancel or release.
"""

from __future__ import annotations

import enum
import math
import traceback
import uuid
import weakref
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, UnknownDependency
from .board import AFTER_FAILURE, TaskBoard, TaskRecord, blames, unassignable
from .checks import refuse_cycles, refuse_duplicates
from .tasks import DEFAULT_ROLE, Task, TaskId, TaskResult, TaskStatus


class GoalStatus(enum.Enum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    ACHIEVED = "achieved"
    FAILED = "failed"


@dataclass(eq=False)
class TaskMessage:
    """One task of a group, as in the seed. ``difficulty``, ``depends_on`` (task ids) and a
    user handler to run (``handler``, ``args``, ``kwargs``, ``timeout``) are optional extras;
    ``group_id`` is set when the task joins a group."""

    task_id: str
    name: str
    description: str
    duration: float | None  # seconds to simulate; None: difficulty x the worker's time scale
    required_role: str = DEFAULT_ROLE
    status: TaskStatus = TaskStatus.PENDING
    difficulty: int = 1
    depends_on: list[TaskId] = field(default_factory=list)
    group_id: str | None = None
    result: TaskResult | None = None
    handler: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None

    def as_task(self, priority: int) -> Task:
        """The plain task the board runs for it."""
        return Task(self.task_id, self.name or self.description, self.difficulty,
                    self.required_role, priority, self.duration, list(self.depends_on),
                    self.timeout, self.handler, list(self.args), dict(self.kwargs))

    @classmethod
    def of(cls, task: Task, group_id: str | None = None) -> TaskMessage:
        """A group's task from a plain task (a tasks file's, a journal's)."""
        return cls(task.id, task.description, task.description,  # type: ignore[arg-type]
                   task.duration, task.required_role or DEFAULT_ROLE, difficulty=task.difficulty,
                   depends_on=list(task.depends_on), group_id=group_id,
                   handler=task.handler, args=list(task.args), kwargs=dict(task.kwargs),
                   timeout=task.timeout)


@dataclass(eq=False)
class TaskGroupGoal:
    """``check_condition(task_groups, completed_tasks) -> bool`` is called after every result
    of the group with ``{group.id: group}`` and the group's completed tasks by id."""

    name: str
    description: str
    check_condition: Callable[[dict[str, TaskGroup], dict[str, TaskMessage]], bool]
    success_message: str
    failure_message: str
    status: GoalStatus = GoalStatus.NOT_STARTED


UNFINISHED = frozenset((TaskStatus.PENDING, TaskStatus.ASSIGNED, TaskStatus.RUNNING))
RAN = frozenset((TaskStatus.COMPLETED, TaskStatus.FAILED))  # (ended on a worker, or lost)


class OnGoal(enum.Enum):
    CONTINUE = "continue"  # the seed's default: the remaining tasks still run
    CANCEL_REST = "cancel_rest"  # tasks not started yet are cancelled


@dataclass(eq=False)
class TaskGroup:
    task_id: str
    name: str
    description: str
    subtasks: list[TaskMessage]
    goal: TaskGroupGoal | None = None
    priority: int = 1
    status: TaskStatus = TaskStatus.PENDING
    depends_on: list[str] = field(default_factory=list)  # ids or names of other groups
    on_goal: OnGoal = OnGoal.CONTINUE
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    unassigned: int = 0  # given up: no connected worker could take it (not a cancel by anyone)
    # the TaskManager it runs in (a weak reference), once submitted: see TaskManager.register
    owner: Any = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.task_id

    @property
    def total(self) -> int:
        return len(self.subtasks)

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled + self.unassigned

    def start_over(self) -> None:
        """As made, to run: a group object run before (seed 000 keeps its groups in module
        globals; a second session submits them again) counts from nothing again."""
        self.status, self.completed, self.failed, self.cancelled, self.unassigned = \
            TaskStatus.PENDING, 0, 0, 0, 0
        if self.goal is not None:
            self.goal.status = GoalStatus.NOT_STARTED
        for t in self.subtasks:
            t.status, t.result = TaskStatus.PENDING, None

    def summary(self) -> dict[str, Any]:
        goal = self.goal
        return {"id": self.id, "name": self.name, "status": self.status.value,
                "priority": self.priority, "total": self.total, "completed": self.completed,
                "failed": self.failed, "cancelled": self.cancelled,
                "unassigned": self.unassigned,
                "goal": goal.name if goal else None,
                "goal_status": goal.status.value if goal else None}


# --------------------------------------------------------------------------- goal checkers


class _Counted:
    """Base of the declarative goals: callable as the seed's check_condition, and able to say
    when the goal can no longer be met."""

    def count(self, task_groups: dict[str, TaskGroup], completed: dict[str, TaskMessage]) -> int:
        return sum(1 for t in completed.values() if t.group_id in task_groups)

    def needed(self, group: TaskGroup) -> int:
        raise NotImplementedError

    def __call__(self, task_groups: dict[str, TaskGroup], completed: dict[str, TaskMessage]
                 ) -> bool:
        group = next(iter(task_groups.values()))
        return self.count(task_groups, completed) >= self.needed(group)

    def still_possible(self, group: TaskGroup) -> bool:
        return group.total - group.failed - group.cancelled - group.unassigned \
            >= self.needed(group)


@dataclass(frozen=True)
class AtLeast(_Counted):
    n: int

    def needed(self, group: TaskGroup) -> int:
        return self.n


@dataclass(frozen=True)
class AllTasks(_Counted):
    def needed(self, group: TaskGroup) -> int:
        return group.total


@dataclass(frozen=True)
class Fraction(_Counted):
    value: float

    def needed(self, group: TaskGroup) -> int:
        return max(1, math.ceil(self.value * group.total - 1e-9))  # (some, however small)


def journal_keeps(goal: TaskGroupGoal) -> bool:
    """A journal keeps a goal of a built-in kind (at_least, fraction, all), not Python code."""
    return isinstance(goal.check_condition, _Counted)


def unkept_goal(group: str, goal: str, restarted: bool) -> str:
    """What is said of a group's goal in Python code, which a journal cannot keep: as a
    journaled admin takes the group, or after a restart."""
    return (f"group '{group}': its goal '{goal}' is Python code, which the journal cannot "
            f"keep: " + ("after this restart the group runs on without it" if restarted else
                         "should the admin restart, the group runs on without it")
            + " (a goal of kind at_least, fraction or all is kept)")


def goal_problem(goal: TaskGroupGoal, size: int | None = None) -> str | None:
    """What is wrong with a goal a journal would keep, as a tasks file's goal is checked
    (workfile.goal_from_spec): a journal could not be resumed with it; or, given its
    group's ``size``, one it could never meet. None when fine."""
    texts = [v for v in (goal.name, goal.success_message, goal.failure_message)
             if not isinstance(v, str)]
    if texts:
        return f"goal {goal.name!r}: its name and messages must be strings, got {texts[0]!r}"
    check = goal.check_condition
    if isinstance(check, AtLeast) and (not _number(check.n, int) or check.n < 1):
        return f"goal {goal.name!r} needs at least 1 completed task, got {check.n!r}"
    if isinstance(check, AtLeast) and size is not None and check.n > size:
        return f"goal {goal.name!r} needs {check.n} completed tasks, and the group has {size}"
    if isinstance(check, Fraction) and (not _number(check.value, (int, float))
                                        or not 0 < check.value <= 1):  # (also refuses NaN)
        return f"goal {goal.name!r} needs a fraction of tasks 0 < value <= 1, got " \
               f"{check.value!r}"
    return None


def _number(value: Any, kinds: type | tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def create_goal_checker(required_tasks: int) -> AtLeast:
    """The seed's helper: achieved once ``required_tasks`` tasks of the group completed."""
    return AtLeast(required_tasks)


def _refuse_ambiguous_names(old: Sequence[TaskGroup], new: Sequence[TaskGroup]) -> None:
    """A group's ``depends_on`` names another by id or by name: one group named as another's
    id would make the reference mean either (ConfigError)."""
    every = [*old, *new]
    ids, fresh = {g.id: g for g in every}, {g.id for g in new}
    for g in every:
        other = ids.get(g.name)
        if other is not None and other is not g and (g.id in fresh or other.id in fresh):
            raise ConfigError(f"group '{g.name}' is named as group '{other.name}''s id: a "
                              f"depends_on naming {g.name!r} would mean either; rename one")


class _Either:
    """Membership in either of two containers, neither copied."""

    def __init__(self, first: Container[Any], second: Container[Any]) -> None:
        self.first, self.second = first, second

    def __contains__(self, x: object) -> bool:
        return x in self.first or x in self.second


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """Something a user wants to see: ``goal_achieved``, ``goal_failed``, ``group_finished``,
    ``group_progress``, ``tasks_cancelled``."""

    kind: str
    group: TaskGroup
    message: str
    data: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- manager


class TaskManager:
    """Tracks task groups and their completed tasks; checks goals after every result."""

    def __init__(self) -> None:
        self.task_groups: dict[str, TaskGroup] = {}
        self.completed_tasks: dict[str, TaskMessage] = {}
        self._by_task: dict[TaskId, TaskMessage] = {}
        self._group_completed: dict[str, dict[str, TaskMessage]] = {}
        self._ended: dict[str, None] = {}  # finished groups' ids, in the order they finished
        # (group, goal) whose goal was Python code a journal could not keep (see restore)
        self.unkept_goals: list[tuple[str, str]] = []

    @staticmethod
    def create_task_group(
        name: str,
        description: str,
        subtasks: Sequence[TaskMessage],
        goal: TaskGroupGoal | None = None,
        priority: int = 1,
        depends_on: Iterable[str] = (),
        on_goal: OnGoal | str = OnGoal.CONTINUE,
        task_id: str | None = None,
    ) -> TaskGroup:
        """A new group (id generated unless given); its subtasks learn their group id."""
        group = TaskGroup(task_id or str(uuid.uuid4()), name, description, list(subtasks),
                          goal, priority, depends_on=list(depends_on), on_goal=OnGoal(on_goal))
        for t in group.subtasks:
            t.group_id = group.id
        return group

    # ---- registering groups
    def register(self, groups: Sequence[TaskGroup], known_tasks: Container[TaskId] = (),
                 plain: Sequence[Task] = ()) -> tuple[list[Task], dict[TaskId, list[Any]]]:
        """Check the groups (ids, dependencies, cycles) and turn them into tasks and gates
        for the board. ``known_tasks``: the tasks there are already; ``plain``: the tasks
        outside groups submitted with them (a group's task may wait on one). Raises
        ConfigError, registering nothing, when anything is off."""
        if not groups:
            return [], {}
        self._validate(groups, known_tasks, plain)
        for group in groups:
            other = group.owner() if group.owner is not None else None
            if other is not None and other is not self and group.status in UNFINISHED \
                    and other.task_groups.get(group.id) is group:
                raise ConfigError(f"group '{group.name}' runs in another admin: a group object "
                                  f"runs in one at a time (make another with "
                                  f"TaskManager.create_task_group)")
        tasks: list[Task] = []
        gates: dict[TaskId, list[Any]] = {}
        for group in groups:  # all first: a group may name one that comes after it
            group.start_over()
            group.owner = weakref.ref(self)
            self.task_groups[group.id] = group
            self._group_completed[group.id] = {}
        for group in groups:
            deps = [("group", self._resolve(d)) for d in group.depends_on]
            for t in group.subtasks:
                t.group_id = group.id
                self._by_task[t.task_id] = t
                tasks.append(t.as_task(group.priority))
                gates[t.task_id] = deps
        return tasks, gates

    def _resolve(self, ref: str) -> str:
        gid = self.resolved(ref)
        if gid is None:
            raise ConfigError(f"unknown group {ref!r}")
        return gid

    def resolved(self, ref: str) -> str | None:
        """The id of the group a ``depends_on`` names (by id, else by name), or None."""
        if ref in self.task_groups:
            return ref
        return next((g.id for g in self.task_groups.values() if g.name == ref), None)

    def _validate(self, groups: Sequence[TaskGroup], known_tasks: Container[TaskId],
                  plain: Sequence[Task]) -> None:
        old = list(self.task_groups.values())
        refuse_duplicates([g.id for g in groups], {g.id for g in old}, "group id")
        refuse_duplicates([g.name for g in groups], {g.name for g in old}, "group name")
        task_ids = [t.task_id for g in groups for t in g.subtasks]
        refuse_duplicates(task_ids, known_tasks, "task id")
        plain_ids = {t.id for t in plain}
        if clash := next((t for t in task_ids if t in plain_ids), None):
            raise ConfigError(f"duplicate task id {clash!r}")
        for g in groups:
            if not g.subtasks:  # it would never finish, nor what depends on it
                raise ConfigError(f"group '{g.name}' has no tasks")
            why = goal_problem(g.goal, len(g.subtasks)) if g.goal is not None else None
            if why is not None:
                raise ConfigError(f"group '{g.name}': {why}")
        _refuse_ambiguous_names(old, groups)
        refs = {ref: g for g in [*old, *groups] for ref in (g.id, g.name)}
        self._check_dependencies(groups, refs, _Either(plain_ids, known_tasks), plain)

    @staticmethod
    def _check_dependencies(groups: Sequence[TaskGroup], refs: dict[str, TaskGroup],
                            known_tasks: Container[TaskId], plain: Sequence[Task]) -> None:
        """Every group and task a group's task waits on is known, and nothing waits on
        itself: a cycle may run through the submission's plain tasks (one a group's task
        waits on, waiting on a task of a group after it), which only the whole graph shows."""
        new_tasks = {t.task_id for g in groups for t in g.subtasks}
        group_graph: dict[str, list[str]] = {}
        full_graph = {f"task {t.id!r}": [f"task {d!r}" for d in t.depends_on]
                      for t in plain if t.depends_on}
        for g in groups:
            unknown = next((d for d in g.depends_on if d not in refs), None)
            if unknown is not None:
                raise UnknownDependency(f"group '{g.name}' depends on unknown group "
                                        f"{unknown!r}")
            after = [f"group '{refs[d].name}'" for d in g.depends_on]
            group_graph[f"group '{g.name}'"] = after
            full_graph[f"group '{g.name}'"] = [f"task {t.task_id!r}" for t in g.subtasks]
            for t in g.subtasks:
                unknown = next((d for d in t.depends_on
                                if d not in new_tasks and d not in known_tasks), None)
                if unknown is not None:
                    raise UnknownDependency(f"task {t.task_id!r} depends on unknown task "
                                            f"{unknown!r}")
                full_graph[f"task {t.task_id!r}"] = after + [f"task {d!r}" for d in t.depends_on]
        refuse_cycles(group_graph)  # first, so a group-level cycle is named in group terms
        refuse_cycles(full_graph)

    # ---- following the run
    def mark(self, task_ids: Iterable[TaskId], status: TaskStatus) -> None:
        """Live status of group tasks (RUNNING when delivered, PENDING when requeued)."""
        for task_id in task_ids:
            t = self._by_task.get(task_id)
            if t is not None:
                t.status = status
                group = self.task_groups[t.group_id] if t.group_id else None
                if group is not None and group.status == TaskStatus.PENDING \
                        and status != TaskStatus.PENDING:  # (queued again: not under way)
                    group.status = TaskStatus.RUNNING
                    if group.goal and group.goal.status == GoalStatus.NOT_STARTED:
                        group.goal.status = GoalStatus.IN_PROGRESS

    def settle(self, board: TaskBoard) -> list[GroupEvent]:
        """Take every task the board finished since last time and :meth:`follow` it, until
        nothing more finishes (cancellations cascade). Returns what happened."""
        events: list[GroupEvent] = []
        while board.finished:
            batch, board.finished = board.finished, []
            events += self.follow(batch, board)
        return events

    def follow(self, records: Iterable[TaskRecord], board: TaskBoard) -> list[GroupEvent]:
        """One by one, in order: update each finished task's group, check its goal, cancel or
        release what follows (which may finish more tasks on the board)."""
        events: list[GroupEvent] = []
        for rec in records:
            t = self._by_task.get(rec.task.id)
            if t is not None and t.group_id is not None:
                self._finished(self.task_groups[t.group_id], t, rec, board, events)
        return events

    def forget(self, groups: Iterable[TaskGroup]) -> None:
        """Undo :meth:`register` (the board refused the tasks)."""
        for g in groups:
            self.task_groups.pop(g.id, None)
            self._group_completed.pop(g.id, None)
            self._ended.pop(g.id, None)
            for t in g.subtasks:
                self._by_task.pop(t.task_id, None)

    def group_of(self, task_id: TaskId) -> TaskGroup | None:
        t = self._by_task.get(task_id)
        return None if t is None else self.task_groups.get(t.group_id or "")

    def forget_done(self, task_ids: Iterable[TaskId]) -> list[str]:
        """Drop what is kept of these finished tasks and of the groups they were in (a
        serving admin's old batches, --keep-finished: a group's tasks come in one batch and
        are all finished with it); the groups' ids."""
        gone = []
        for task_id in task_ids:
            t = self._by_task.pop(task_id, None)
            if t is None:
                continue
            self.completed_tasks.pop(task_id, None)
            group = self.task_groups.pop(t.group_id or "", None)
            if group is not None:
                self._group_completed.pop(group.id, None)
                self._ended.pop(group.id, None)
                gone.append(group.id)
        return gone

    def _finished(self, group: TaskGroup, t: TaskMessage, rec: TaskRecord, board: TaskBoard,
                  events: list[GroupEvent]) -> None:
        t.status, t.result = rec.status, rec.result
        if rec.status == TaskStatus.COMPLETED:
            group.completed += 1
            self.completed_tasks[t.task_id] = t
            self._group_completed[group.id][t.task_id] = t
        elif rec.status == TaskStatus.FAILED:
            group.failed += 1
        elif unassignable(rec.reason):
            group.unassigned += 1
        else:
            group.cancelled += 1
        if group.status == TaskStatus.PENDING and rec.status in RAN:
            group.status = TaskStatus.RUNNING  # (cancelled before it ran: still pending)
        events.append(GroupEvent("group_progress", group,
                                 f"group '{group.name}': {group.finished}/{group.total} done",
                                 group.summary()))
        self._check_goal(group, board, events)
        if group.finished == group.total:
            self._close(group, board, events)

    def _check_goal(self, group: TaskGroup, board: TaskBoard, events: list[GroupEvent]) -> None:
        goal = group.goal
        if goal is None or goal.status in (GoalStatus.ACHIEVED, GoalStatus.FAILED):
            return
        if group.status != TaskStatus.PENDING:  # (none of its tasks went to a worker)
            goal.status = GoalStatus.IN_PROGRESS
        try:
            met = self._met(group, goal.check_condition)
        # The user's code: its goal fails, the run goes on; SystemExit and any other
        # BaseException too, as a handler's (raised by a check, it is no stop of the admin's).
        # Not KeyboardInterrupt: in an embedded admin it may be the user's Ctrl-C, come while
        # the check ran.
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            goal.status = GoalStatus.FAILED
            events.append(GroupEvent(
                "goal_failed", group,
                f"Goal '{goal.name}' failed: its check raised {type(exc).__name__}: {exc}\n"
                + "".join(traceback.format_exception(exc)).rstrip(), group.summary()))
            return
        if met:
            goal.status = GoalStatus.ACHIEVED
            events.append(GroupEvent(
                "goal_achieved", group,
                f"Goal '{goal.name}' achieved: {group.completed}/{group.total}. "
                f"{goal.success_message}", group.summary()))
            if group.on_goal == OnGoal.CANCEL_REST:
                self._cancel_rest(group, goal, board, events)
            return
        possible = getattr(goal.check_condition, "still_possible", None)
        if group.finished == group.total or (possible is not None and not possible(group)):
            goal.status = GoalStatus.FAILED
            events.append(GroupEvent(
                "goal_failed", group,
                f"Goal '{goal.name}' failed: {group.completed}/{group.total} completed, "
                f"{group.failed} failed, {group.cancelled} cancelled"
                + (f", {group.unassigned} unassigned" if group.unassigned else "")
                + f". {goal.failure_message}",
                group.summary()))

    def _met(self, group: TaskGroup, check: Callable[..., bool]) -> bool:
        """The goal's check. A built-in goal reads the group's completed counter rather than
        counting its completed tasks after every result (a group of 40,000 tasks spent 30 s
        on that)."""
        if isinstance(check, _Counted):
            return group.completed >= check.needed(group)
        return check({group.id: group}, self._group_completed[group.id])

    @staticmethod
    def _cancel_rest(group: TaskGroup, goal: TaskGroupGoal, board: TaskBoard,
                     events: list[GroupEvent]) -> None:
        """By the board's state of each (a subtask's status follows at the round's end):
        those waiting or queued here are cancelled; those sent to a worker but not started
        there (queued behind its running tasks) are asked back, to end cancelled too."""
        reason = f"goal '{goal.name}' achieved"
        # (by the board's status: one ended earlier in this round, not followed yet, was not
        # the goal's to cancel)
        rest = [t.task_id for t in group.subtasks if t.status in UNFINISHED
                and board.records[t.task_id].status in UNFINISHED]
        board.cancel(rest, reason)
        asked = board.cancel_unstarted(rest, reason)
        # (those waiting on one of them ended with it: counted too)
        cancelled = [t for t in rest if board.records[t].status == TaskStatus.CANCELLED]
        if cancelled or asked:
            events.append(GroupEvent(
                "tasks_cancelled", group,
                f"group '{group.name}': cancelled {len(cancelled)} task(s) not started yet"
                + (f"; asked {len(asked)} more back from workers, to cancel those not "
                   f"started there" if asked else ""),
                {"tasks": cancelled, "asked_back": asked}))

    def _close(self, group: TaskGroup, board: TaskBoard, events: list[GroupEvent]) -> None:
        ok = group.goal.status == GoalStatus.ACHIEVED if group.goal else \
            group.completed == group.total
        # Not completed: CANCELLED when none of its tasks failed or went unassigned but some
        # were cancelled (a dependency did not complete, someone cancelled it), else FAILED.
        cancelled = group.failed == group.unassigned == 0 and group.cancelled > 0
        group.status = TaskStatus.COMPLETED if ok else \
            TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
        self._ended[group.id] = None
        events.append(GroupEvent("group_finished", group,
                                 f"group '{group.name}' {group.status.value}: "
                                 f"{group.completed}/{group.total} completed",
                                 group.summary()))
        if ok:
            board.open_gate(("group", group.id))
        else:
            failed = group.status is TaskStatus.FAILED or any(
                blames(board.records[t.task_id].reason) for t in group.subtasks
                if t.task_id in board.records)
            board.fail_gate(("group", group.id), f"group '{group.name}' did not complete"
                            + (AFTER_FAILURE if failed else ""))

    # ---- journal
    @staticmethod
    def spec(group: TaskGroup) -> dict[str, Any]:
        """What a journal keeps of a group. A goal that is a plain callable cannot be kept:
        only its name is, and it comes back as None (the group still runs, its goal is not
        checked; see unkept_goals)."""
        goal = group.goal
        check = goal.check_condition if goal else None
        kind: dict[str, Any] | None = None
        if isinstance(check, AtLeast):
            kind = {"kind": "at_least", "count": check.n}
        elif isinstance(check, Fraction):
            kind = {"kind": "fraction", "value": check.value}
        elif isinstance(check, AllTasks):
            kind = {"kind": "all"}
        if kind is not None and goal is not None:
            kind |= {"name": goal.name, "success_message": goal.success_message,
                     "failure_message": goal.failure_message}
        elif goal is not None:
            kind = {"kind": "callable", "name": goal.name}
        return {"name": group.name, "description": group.description,
                "priority": group.priority, "depends_on": list(group.depends_on),
                "on_goal": group.on_goal.value, "goal": kind}

    def restore(self, groups: list[tuple[str, dict[str, Any], list[Task]]], board: TaskBoard,
                goal_from_spec: Callable[[str, dict[str, Any]], TaskGroupGoal]) -> None:
        """Rebuild groups from a journal after ``board.restore``: progress and goals are
        replayed from the finished tasks, quietly (they were announced before the restart)."""
        for gid, spec, tasks in groups:
            subtasks = [TaskMessage.of(t, gid) for t in tasks]
            kept = spec.get("goal")
            if kept and kept.get("kind") == "callable":
                self.unkept_goals.append((spec["name"], str(kept.get("name"))))
                kept = None
            goal = goal_from_spec(spec["name"], kept) if kept else None
            group = TaskGroup(gid, spec["name"], spec.get("description", ""), subtasks, goal,
                              spec.get("priority", 1), depends_on=list(spec["depends_on"]),
                              on_goal=OnGoal(spec.get("on_goal", "continue")))
            group.owner = weakref.ref(self)
            self.task_groups[gid] = group
            self._group_completed[gid] = {}
            for t in subtasks:
                self._by_task[t.task_id] = t
        finished = []
        for _, _, tasks in groups:
            for t in tasks:
                rec = board.records[t.id]
                if rec.status in (TaskStatus.COMPLETED, TaskStatus.FAILED,
                                  TaskStatus.CANCELLED):
                    finished.append(rec)
                elif rec.status == TaskStatus.RUNNING:
                    self.mark([t.id], TaskStatus.RUNNING)
        self.follow(sorted(finished, key=lambda r: r.index), board)
        self.settle(board)

    def summaries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Each group's figures; with ``limit``, at most that many: those under way first,
        then the latest finished (an admin that serves for long keeps every group)."""
        groups = list(self.task_groups.values())
        if limit is not None and len(groups) > limit:
            going = [g for g in groups if g.status in UNFINISHED]
            done = [g for g in map(self.task_groups.get, self._ended)
                    if g is not None and g.status not in UNFINISHED]
            groups = (going + done[max(0, len(done) - (limit - len(going))):])[:limit]
        return [g.summary() for g in groups]
