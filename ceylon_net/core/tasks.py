"""Tasks as plain data: the seeds' Task / TaskAssignment / TaskResult, statuses, run reports."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..wire import message

TaskId = int | str
DEFAULT_ROLE = "default"


class TaskStatus(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@message(name="ceylon_net.Task")
@dataclass(slots=True)
class Task:
    """A unit of work. ``difficulty`` 1-10 is matched against a worker's skill; a task with a
    ``required_role`` only goes to workers of that role (or of the default role)."""

    id: TaskId
    description: str
    difficulty: int = 1
    required_role: str | None = None
    priority: int = 0
    duration: float | None = None
    depends_on: list[TaskId] = field(default_factory=list)
    timeout: float | None = None  # seconds; the worker stops the task after that
    handler: str | None = None  # a registered handler's name; None: the simulated task
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@message
@dataclass(slots=True)
class TaskAssignment:
    """The admin gives ``task`` to ``worker`` (its name); ``attempt`` counts from 1.
    ``confirm``: the worker is on probation, and answers at once with a heartbeat."""

    task: Task
    worker: str = ""
    attempt: int = 1
    confirm: bool = False


@message
@dataclass(slots=True)
class TaskResult:
    """What a worker reports back for one attempt at a task."""

    task_id: TaskId
    worker: str
    success: bool
    seconds: float = 0.0
    error: str | None = None
    attempt: int = 1
    cancelled: bool = False  # stopped on request, not failed
    value: Any = None  # what the handler returned


# --------------------------------------------------------------------------- run reports


def listed(items: Sequence[Any], limit: int, show: Callable[[Any], str] = str) -> str:
    """The first ``limit`` items and a count of the rest: '1, 2, 3 and 4,997 more' (a report
    or a log line of 30,000 task ids is one short line)."""
    more = len(items) - limit
    return ", ".join(map(show, items[:limit])) + (f" and {more:,} more" if more > 0 else "")


def json_text(doc: Any, indent: int | None = None) -> str:
    """JSON of a report or a result. A handler's return value may hold what msgpack carries
    and JSON does not (bytes, as a value or a map key; a float NaN or infinity, which strict
    parsers such as jq refuse): that is written as its Python repr, ``"b'\\x00'"``,
    ``"nan"``, in every file and output alike (a report is never lost over one value)."""
    try:
        return json.dumps(doc, indent=indent, default=repr, allow_nan=False)
    except (TypeError, ValueError):  # (a key JSON cannot have, or a NaN: rare, so looked for
        return json.dumps(_as_json(doc), indent=indent, default=repr, allow_nan=False)


def _as_json(value: Any) -> Any:
    """``value`` with what JSON cannot hold as its repr (its depth is bounded: the worker
    could not have sent it otherwise)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str | int) and not isinstance(k, bool) else repr(k):
                _as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


@dataclass(slots=True)
class TaskOutcome:
    id: TaskId
    description: str
    difficulty: int
    worker: str
    success: bool
    seconds: float
    error: str | None = None
    value: Any = None


@dataclass(slots=True)
class RunReport:
    """The end of a run: one outcome per finished task, and the tasks nobody could take."""

    tasks: list[TaskOutcome] = field(default_factory=list)
    unassigned: list[TaskId] = field(default_factory=list)
    cancelled: dict[TaskId, str] = field(default_factory=dict)  # task id -> why
    groups: list[dict[str, Any]] = field(default_factory=list)
    dead: list[TaskId] = field(default_factory=list)  # failed: lost with workers too often
    # Not ended when the report was made (the run was stopped first): queued, waiting for a
    # dependency, or on a worker.
    unfinished: list[TaskId] = field(default_factory=list)
    # Of ``unassigned``, why no worker could take each, where known: 'needs skill >= 8; best
    # connected is 6'.
    unassigned_why: dict[TaskId, str] = field(default_factory=dict)
    # Of ``cancelled``, those cancelled because a task or group they depend on failed (or
    # could not be assigned), directly or through others cancelled for it: they did not run
    # because of a failure (ceylon_net.core.upstream).
    after_failure: list[TaskId] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        """Of the tasks that ran to a result, the share that succeeded; None when none did
        (not 0.0: nothing failed)."""
        if not self.tasks:
            return None
        return sum(t.success for t in self.tasks) / len(self.tasks)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        """Inverse of :meth:`to_json` (ceylon-submit rebuilds the admin's report)."""
        return cls(
            [TaskOutcome(t["id"], t["description"], t["difficulty"], t["worker"], t["success"],
                         t["seconds"], t.get("error"), t.get("value"))
             for t in data.get("tasks", [])],
            list(data.get("unassigned", [])),
            {c["id"]: c["reason"] for c in data.get("cancelled", [])},
            list(data.get("groups", [])), list(data.get("dead", [])),
            list(data.get("unfinished", [])),
            {u["id"]: u["reason"] for u in data.get("unassigned_why", [])},
            list(data.get("after_failure", [])))

    def to_json(self) -> dict[str, Any]:
        return {
            "success_rate": self.success_rate,
            "tasks": [
                {
                    "id": t.id,
                    "description": t.description,
                    "difficulty": t.difficulty,
                    "worker": t.worker,
                    "success": t.success,
                    "seconds": round(t.seconds, 6),
                    **({"error": t.error} if t.error else {}),
                    **({"value": t.value} if t.value is not None else {}),
                }
                for t in self.tasks
            ],
            "unassigned": list(self.unassigned),
            **({"unassigned_why": [{"id": k, "reason": v} for k, v in
                                   self.unassigned_why.items()]} if self.unassigned_why else {}),
            "cancelled": [{"id": k, "reason": v} for k, v in self.cancelled.items()],
            **({"after_failure": list(self.after_failure)} if self.after_failure else {}),
            "dead": list(self.dead),
            **({"unfinished": list(self.unfinished)} if self.unfinished else {}),
            **({"groups": self.groups} if self.groups else {}),
        }
