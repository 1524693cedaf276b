"""Tasks as plain data: the seeds' Task / TaskAssignment / TaskResult, tasks files, run reports."""

from __future__ import annotations

import enum
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TaskFileError
from .protocol import message

TaskId = int | str
DEFAULT_ROLE = "default"


class TaskStatus(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@message
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


# --------------------------------------------------------------------------- tasks files

_TASK_FIELDS = {
    "id": "int or string",
    "description": "string",
    "difficulty": "int 1-10",
    "required_role": "string",
    "priority": "int",
    "duration": "number >= 0",
    "depends_on": "list of task ids",
    "timeout": "number > 0",
    "handler": "string (a handler name)",
    "args": "list",
    "kwargs": "object with string keys",
}


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSON or TOML tasks file: a list, ``{"tasks": [...]}`` or TOML ``[[tasks]]``.

    Raises TaskFileError naming the file, the task and the field when anything is off.
    """
    path = Path(path)
    doc = parse_file(path)
    items = doc.get("tasks") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise TaskFileError(f'{path}: expected a list of tasks or {{"tasks": [...]}}')
    if not items:
        raise TaskFileError(f"{path}: no tasks in the file")
    tasks = [task_from_dict(item, where=f"{path}: task #{i + 1}") for i, item in enumerate(items)]
    check_unique_ids(tasks, str(path))
    return tasks


def parse_file(path: Path) -> Any:
    """The document in a JSON or TOML file; TaskFileError when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TaskFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TaskFileError(f"{path}: invalid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def task_from_dict(item: Any, where: str = "task") -> Task:
    """Validate one task mapping; errors name ``where``, the task id and the field."""
    if not isinstance(item, dict):
        raise TaskFileError(f"{where}: expected an object, got {type(item).__name__}")
    if "id" in item:
        where = f"{where} (id {item['id']!r})"
    unknown = sorted(set(item) - set(_TASK_FIELDS))
    if unknown:
        raise TaskFileError(
            f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(_TASK_FIELDS)}"
        )
    for name in ("id", "description", "difficulty"):
        if name not in item:
            raise TaskFileError(f"{where}: missing field {name!r} ({_TASK_FIELDS[name]})")
    _check(where, "id", item["id"], _is_int(item["id"]) or isinstance(item["id"], str))
    _check(where, "description", item["description"], isinstance(item["description"], str))
    diff = item["difficulty"]
    _check(where, "difficulty", diff, _is_int(diff) and 1 <= diff <= 10)
    role = item.get("required_role")
    _check(where, "required_role", role, role is None or isinstance(role, str))
    prio = item.get("priority", 0)
    _check(where, "priority", prio, _is_int(prio))
    dur = item.get("duration")
    _check(where, "duration", dur, dur is None or (_is_number(dur) and dur >= 0))
    deps = item.get("depends_on", [])
    _check(where, "depends_on", deps, isinstance(deps, list)
           and all(_is_int(d) or isinstance(d, str) for d in deps))
    limit = item.get("timeout")
    _check(where, "timeout", limit, limit is None or (_is_number(limit) and limit > 0))
    handler = item.get("handler")
    _check(where, "handler", handler, handler is None or (isinstance(handler, str) and handler))
    args, kwargs = item.get("args", []), item.get("kwargs", {})
    _check(where, "args", args, isinstance(args, list))
    _check(where, "kwargs", kwargs, isinstance(kwargs, dict)
           and all(isinstance(k, str) for k in kwargs))
    return Task(
        id=item["id"],
        description=item["description"],
        difficulty=diff,
        required_role=role,
        priority=prio,
        duration=None if dur is None else float(dur),
        depends_on=list(deps),
        timeout=None if limit is None else float(limit),
        handler=handler,
        args=list(args),
        kwargs=dict(kwargs),
    )


def check_unique_ids(tasks: list[Task], where: str) -> None:
    seen: set[TaskId] = set()
    for task in tasks:
        if task.id in seen:
            raise TaskFileError(f"{where}: duplicate task id {task.id!r}")
        seen.add(task.id)


def _is_int(v: Any) -> bool:
    # msgpack carries integers from -2**63 to 2**64-1; anything else could not be sent.
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check(where: str, name: str, value: Any, ok: bool) -> None:
    if not ok:
        raise TaskFileError(f"{where}: field {name!r} must be {_TASK_FIELDS[name]}, got {value!r}")


# --------------------------------------------------------------------------- run reports


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

    @property
    def success_rate(self) -> float:
        if not self.tasks:
            return 0.0
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
            list(data.get("groups", [])), list(data.get("dead", [])))

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
            "cancelled": [{"id": k, "reason": v} for k, v in self.cancelled.items()],
            "dead": list(self.dead),
            **({"groups": self.groups} if self.groups else {}),
        }
