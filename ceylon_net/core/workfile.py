"""Tasks files: ``[...]``, ``{"tasks": [...], "groups": [...]}`` (JSON or TOML), checked field
by field; errors name the file, the task or group, and the field.

Callables cannot cross a file, so goals here are declarative:
``{"kind": "at_least", "count": 5}``, ``{"kind": "all"}`` or ``{"kind": "fraction", "value": 0.8}``.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TaskFileError
from ..wire import MAX_DEPTH, MSGPACK_INTS, unfit
from .checks import refuse_bad_dependencies, refuse_cycles, refuse_duplicates
from .groups import (
    AllTasks,
    AtLeast,
    Fraction,
    OnGoal,
    TaskGroup,
    TaskGroupGoal,
    TaskManager,
    TaskMessage,
)
from .tasks import Task, TaskId

_NONE: list[Any] = []  # a parsed task without depends_on / args
_NO_KW: dict[str, Any] = {}  # ... without kwargs

TASK_FIELDS = {
    "id": "int (64 bits) or string",
    "description": "string",
    "difficulty": "int 1-10",
    "required_role": "a role: 1-200 printable characters",
    "priority": "int (64 bits)",
    "duration": "a number of seconds from 0 to 1e9",
    "depends_on": "list of task ids",
    "timeout": "a number of seconds over 0, at most 1e9",
    "handler": "string (a handler name)",
    "args": "list",
    "kwargs": "object with string keys",
}


def _is_int(v: Any) -> bool:
    # (int(v): a subclass's `in range` would walk the range)
    return isinstance(v, int) and not isinstance(v, bool) and int(v) in MSGPACK_INTS


# A duration or time limit past this (about 31 years; 1e400 reads as infinity) is a task
# that never ends, or an int the wire cannot carry.
MAX_SECONDS = 10**9


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_VALID: dict[str, Callable[[Any], bool]] = {
    "id": lambda v: _is_int(v) or isinstance(v, str),
    "description": lambda v: isinstance(v, str),
    "difficulty": lambda v: _is_int(v) and 1 <= v <= 10,
    # (one a worker can have: --role takes the same)
    "required_role": lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 200
                                             and v.isprintable()),
    "priority": _is_int,
    "duration": lambda v: v is None or (_is_number(v) and 0 <= v <= MAX_SECONDS),
    "depends_on": lambda v: isinstance(v, list) and all(_is_int(d) or isinstance(d, str)
                                                         for d in v),
    "timeout": lambda v: v is None or (_is_number(v) and 0 < v <= MAX_SECONDS),
    "handler": lambda v: v is None or (isinstance(v, str) and bool(v)),
    "args": lambda v: isinstance(v, list),
    "kwargs": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
}
_FIELD_ORDER = {name: i for i, name in enumerate(TASK_FIELDS)}


def valid_field(name: str, value: Any) -> bool:
    """``value`` is what a task's field ``name`` may hold (TASK_FIELDS says it in words)."""
    return _VALID[name](value)


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSON or TOML tasks file: a list, ``{"tasks": [...]}`` or TOML ``[[tasks]]``.

    Raises TaskFileError naming the file, the task and the field when anything is off.
    """
    path = Path(path)
    doc = parse_file(path)
    items = doc.get("tasks") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise TaskFileError(f'{path}: expected a list of tasks or {{"tasks": [...]}}')
    if isinstance(doc, dict):
        refuse_unknown_keys(doc, ("tasks",), str(path))
    if not items:
        raise TaskFileError(f"{path}: no tasks in the file")
    tasks = [task_from_dict(item, where=f"{path}: task #{i + 1}") for i, item in enumerate(items)]
    check_unique_ids(tasks, str(path))
    return tasks


def parse_file(path: Path) -> Any:
    """The document in a JSON or TOML file (a UTF-8 byte order mark before it is skipped);
    TaskFileError when it cannot be read or parsed."""
    try:
        # Windows editors save a BOM, which json.loads refuses in Python's words; it is cut
        # after decoding (not by utf-8-sig), so a bad byte's offset still counts from 0
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TaskFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{path}: invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TaskFileError(_invalid_json(path, exc)) from None
    except ValueError:  # (Python reads no int of more digits: sys.get_int_max_str_digits)
        raise TaskFileError(f"{path}: a number of more than 4,300 digits") from None
    except RecursionError:
        raise TaskFileError(f"{path}: lists or tables nested too deeply to read (tasks' "
                            f"arguments may nest {MAX_DEPTH} deep)") from None


def _invalid_json(path: Path, exc: json.JSONDecodeError) -> str:
    """Where the JSON went wrong; and, for a file that may be in another format (named
    .yaml, or wrong on its first line or from its first character: TOML in a file not named
    .toml, a YAML file of another name), which formats are read."""
    where = f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    yaml = path.suffix.lower() in (".yaml", ".yml")
    if not yaml and exc.lineno != 1 and exc.doc[:exc.pos].strip():
        return where
    # (a .toml file never gets here, so every suffix but .toml was read as JSON)
    formats = "a tasks file is read as JSON, or as TOML when its name ends in .toml"
    return f"{where} ({'YAML is not read; ' if yaml else ''}{formats})"


def task_from_dict(item: Any, where: str = "task") -> Task:
    """Validate one task mapping; errors name ``where``, the task id and the field."""
    if not isinstance(item, dict):
        raise TaskFileError(f"{where}: expected an object, got {type(item).__name__}")
    if "id" in item:
        where = f"{where} (id {item['id']!r})"
    unknown = sorted(set(item) - set(TASK_FIELDS))
    if unknown:
        raise TaskFileError(
            f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(TASK_FIELDS)}"
        )
    for name in ("id", "description", "difficulty"):
        if name not in item:
            raise TaskFileError(f"{where}: missing field {name!r} ({TASK_FIELDS[name]})")
    for name, value in sorted(item.items(), key=lambda kv: _FIELD_ORDER[kv[0]]):
        if not _VALID[name](value):
            raise TaskFileError(f"{where}: field {name!r} must be {TASK_FIELDS[name]}, "
                                f"got {value!r}")
    deps, args, kwargs = item.get("depends_on"), item.get("args"), item.get("kwargs")
    for name, value in (("args", args), ("kwargs", kwargs)):
        # (too deep: it would run the admin out of stack; a TOML date: no worker gets it)
        if (why := unfit(value, plain=True)) is not None:
            raise TaskFileError(f"{where}: field {name!r} {why}")
    dur, limit = item.get("duration"), item.get("timeout")
    # Most tasks have none of these: they share one empty container each (nothing changes a
    # task's lists once parsed), which saves a queued task 176 bytes in the admin.
    # A role or handler names one of a few: many tasks share one string (decoded from the
    # wire, each would be its own copy).
    role, handler = item.get("required_role"), item.get("handler")
    return Task(id=item["id"], description=item["description"], difficulty=item["difficulty"],
                required_role=None if role is None else sys.intern(role),
                priority=item.get("priority", 0),
                duration=None if dur is None else float(dur),
                depends_on=list(deps) if deps else _NONE,
                timeout=None if limit is None else float(limit),
                handler=None if handler is None else sys.intern(handler),
                args=list(args) if args else _NONE, kwargs=dict(kwargs) if kwargs else _NO_KW)


def check_unique_ids(tasks: list[Task], where: str) -> None:
    seen: set[TaskId] = set()
    for task in tasks:
        if task.id in seen:
            raise TaskFileError(f"{where}: duplicate task id {task.id!r}")
        seen.add(task.id)



_GROUP_FIELDS = ("name", "description", "priority", "depends_on", "goal", "on_goal", "tasks")
_TOP_FIELDS = ("tasks", "groups")


def refuse_unknown_keys(doc: dict[Any, Any], allowed: tuple[str, ...], source: str) -> None:
    """A top-level key the file format does not have (``group`` for ``groups``) would drop
    its work without a word: TaskFileError naming it."""
    unknown = sorted((k for k in doc if k not in allowed), key=repr)
    if unknown:
        raise TaskFileError(f"{source}: unknown top-level key {unknown[0]!r}; allowed: "
                            f"{', '.join(allowed)}")


def load_work(path: str | Path) -> tuple[list[Task], list[TaskGroup]]:
    """Plain tasks and task groups from one file. Raises TaskFileError naming the file, the
    group or task, and the field."""
    path = Path(path)
    return parse_work(parse_file(path), str(path))


def work_ids(tasks: list[Task], groups: list[TaskGroup]) -> list[TaskId]:
    """The ids of a piece of work's tasks: its own, then its groups' subtasks."""
    return [t.id for t in tasks] + [t.task_id for g in groups for t in g.subtasks]


def parse_work(doc: Any, source: str, standalone: bool = True
               ) -> tuple[list[Task], list[TaskGroup]]:
    """Tasks and groups from a parsed document (a file's, or one sent to ceylon-submit);
    errors start with ``source``. ``standalone``: its dependencies are checked within it (a
    file run by ``ceylon-admin --tasks``); a batch sent to a serving admin may name groups
    and tasks it has already, and the admin checks them against what it has."""
    items, group_items = _top_level(doc, source)
    tasks = [task_from_dict(item, where=f"{source}: task #{i + 1}")
             for i, item in enumerate(items)]
    groups = [_group(source, i, g) for i, g in enumerate(group_items)]
    try:  # (before task ids: each group has NAME#1 for its first task's default id)
        refuse_duplicates([g.name for g in groups], (), "group name")
    except ConfigError as exc:
        raise TaskFileError(f"{source}: {exc}") from None
    if not tasks and not any(g.subtasks for g in groups):
        raise TaskFileError(f"{source}: no tasks in the file")
    check_unique_ids(tasks + [_as_task(t) for g in groups for t in g.subtasks], source)
    try:
        if standalone:
            TaskManager().register(groups, (), tasks)
            refuse_bad_dependencies(tasks, {t.task_id for g in groups for t in g.subtasks})
        else:  # (what it depends on may be held by the admin; a cycle can only be in here)
            deps = [*((t.id, t.depends_on) for t in tasks),
                    *((s.task_id, s.depends_on) for g in groups for s in g.subtasks)]
            refuse_cycles({f"task {i!r}": [f"task {d!r}" for d in on] for i, on in deps if on})
    except ConfigError as exc:
        raise TaskFileError(f"{source}: {exc}") from None
    return tasks, groups


def _top_level(doc: Any, source: str) -> tuple[list[Any], list[Any]]:
    """The task and group items of a document: a list of tasks or a map of those lists."""
    if isinstance(doc, list):
        doc = {"tasks": doc}
    if isinstance(doc, dict):
        refuse_unknown_keys(doc, _TOP_FIELDS, source)
    if not isinstance(doc, dict) or not (set(_TOP_FIELDS) & set(doc)):
        raise TaskFileError(f'{source}: expected a list of tasks, {{"tasks": [...]}} or '
                            f'{{"groups": [...]}}')
    items, group_items = doc.get("tasks", []), doc.get("groups", [])
    if not isinstance(items, list) or not isinstance(group_items, list):
        raise TaskFileError(f"{source}: 'tasks' and 'groups' must be lists")
    return items, group_items


def _group(source: str, index: int, item: Any) -> TaskGroup:
    where = f"{source}: group #{index + 1}"
    if not isinstance(item, dict):
        raise TaskFileError(f"{where}: expected an object")
    if "name" not in item:
        raise TaskFileError(f"{where}: missing field 'name' (string)")
    if not isinstance(item["name"], str) or not item["name"]:
        raise TaskFileError(f"{where}: field 'name' must be a non-empty string, got "
                            f"{item['name']!r}")
    name = item["name"]
    where = f"{source}: group '{name}'"
    unknown = sorted(set(item) - set(_GROUP_FIELDS))
    if unknown:
        raise TaskFileError(f"{where}: unknown field {unknown[0]!r}; allowed: "
                            f"{', '.join(_GROUP_FIELDS)}")
    priority = item.get("priority", 1)
    deps = item.get("depends_on", [])
    on_goal = item.get("on_goal", "continue")
    raw_tasks = item.get("tasks")
    if not _is_int(priority):
        raise TaskFileError(f"{where}: field 'priority' must be {TASK_FIELDS['priority']}, "
                            f"got {priority!r}")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise TaskFileError(f"{where}: field 'depends_on' must be a list of group names")
    if on_goal not in ("continue", "cancel_rest"):
        raise TaskFileError(f"{where}: field 'on_goal' must be 'continue' or 'cancel_rest', "
                            f"got {on_goal!r}")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise TaskFileError(f"{where}: field 'tasks' must be a non-empty list")
    subtasks = [_subtask(where, name, i, t) for i, t in enumerate(raw_tasks)]
    goal = goal_from_spec(name, item["goal"], where) if item.get("goal") is not None else None
    if goal is not None and isinstance(goal.check_condition, AtLeast) \
            and goal.check_condition.n > len(subtasks):
        raise TaskFileError(f"{where}: goal 'at_least' needs 'count' <= the group's "
                            f"{len(subtasks)} task(s), got {goal.check_condition.n}")
    return TaskManager.create_task_group(name, item.get("description", name), subtasks, goal,
                                         priority, deps, OnGoal(on_goal), task_id=name)


def _subtask(where: str, group: str, i: int, item: Any) -> TaskMessage:
    if isinstance(item, dict):
        if "priority" in item:  # it would be dropped: a group's tasks go at its priority
            raise TaskFileError(f"{where}: task #{i + 1}: field 'priority' is the group's: "
                                f"set it on the group")
        item = {"id": f"{group}#{i + 1}", "difficulty": 1, **item}
    return TaskMessage.of(task_from_dict(item, where=f"{where}: task #{i + 1}"))


def _as_task(t: TaskMessage) -> Task:
    return Task(t.task_id, t.description)


_GOAL_FIELDS = {"at_least": ("count",), "fraction": ("value",), "all": ()}


def goal_from_spec(group: str, spec: Any, where: str = "journal") -> TaskGroupGoal:
    """A declarative goal from its file form; TaskFileError naming ``where`` otherwise."""
    if not isinstance(spec, dict) or spec.get("kind") not in ("at_least", "all", "fraction"):
        raise TaskFileError(f"{where}: field 'goal' must be {{\"kind\": \"at_least\", "
                            f"\"count\": N}}, {{\"kind\": \"all\"}} or "
                            f"{{\"kind\": \"fraction\", \"value\": 0.8}}")
    kind = spec["kind"]
    allowed = {"kind", "name", "success_message", "failure_message",
               *_GOAL_FIELDS.get(kind, ())}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise TaskFileError(f"{where}: goal '{kind}': unknown field {unknown[0]!r}; allowed: "
                            f"{', '.join(sorted(allowed))}")
    texts = [k for k in ("name", "success_message", "failure_message")
             if k in spec and not isinstance(spec[k], str)]
    if texts:
        raise TaskFileError(f"{where}: goal field {texts[0]!r} must be a string, got "
                            f"{spec[texts[0]]!r}")
    if kind == "at_least":
        count = _goal_number(spec, "at_least", "count", where)
        if count < 1:
            raise TaskFileError(f"{where}: goal 'at_least' needs 'count' >= 1, got {count!r}")
        check, text = AtLeast(count), f"at least {count} task{'s' * (count != 1)} completed"
    elif kind == "fraction":
        value = _goal_number(spec, "fraction", "value", where)
        if not 0 < value <= 1:  # (also refuses NaN)
            raise TaskFileError(f"{where}: goal 'fraction' needs 0 < 'value' <= 1, "
                                f"got {value!r}")
        check, text = Fraction(float(value)), f"{value:.0%} of the tasks completed"
    else:
        check, text = AllTasks(), "every task completed"
    return TaskGroupGoal(
        name=spec.get("name", f"{group}: {text}"), description=text, check_condition=check,
        success_message=spec.get("success_message", f"{group}: {text}."),
        failure_message=spec.get("failure_message", f"{group}: could not get {text}."))


def _goal_number(spec: dict[str, Any], kind: str, field: str, where: str) -> Any:
    """A goal's ``count`` (an integer) or ``value`` (a number), said as such when it is
    missing or of another type: 1.0 or true read as out of range ("needs 'count' >= 1, got
    1.0")."""
    must = "an integer" if field == "count" else "a number"
    if field not in spec:
        raise TaskFileError(f"{where}: goal {kind!r} needs {field!r} ({must})")
    value = spec[field]
    if isinstance(value, bool):
        raise TaskFileError(f"{where}: goal {kind!r}: {field!r} must be {must}, not a "
                            f"boolean, got {value!r}")
    if not isinstance(value, int if field == "count" else int | float):
        raise TaskFileError(f"{where}: goal {kind!r}: {field!r} must be {must}, got {value!r}")
    return value
