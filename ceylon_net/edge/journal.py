"""Durable admin state: every task, its state and result, and the groups, in SQLite.

WAL mode, one transaction per admin loop round (results are acknowledged to workers only after
the round is committed, so a result is either in the journal or still held by its worker).
A journal is opened read-only first and checked (SQLite at all, schema version, workspace):
a file that does not fit is refused with a clear error and left exactly as it was.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import wire
from ..core.board import TaskBoard
from ..core.groups import TaskGroup, TaskManager
from ..core.restore import JournaledTask
from ..core.tasks import Task, TaskId, TaskResult, TaskStatus
from ..errors import ConfigError

SCHEMA_VERSION = 1
_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id BLOB PRIMARY KEY,      -- msgpack of the task id (int or str)
    idx INTEGER NOT NULL,     -- submission order
    task BLOB NOT NULL,       -- msgpack of the Task
    grp TEXT,                 -- group id, if any
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    result BLOB,              -- msgpack of the TaskResult
    reason TEXT
);
CREATE TABLE groups (id TEXT PRIMARY KEY, idx INTEGER NOT NULL, spec BLOB NOT NULL);
"""


class JournalError(ConfigError):
    """The journal file cannot be used (another workspace, newer schema, not a journal)."""


class Journal:
    def __init__(self, path: str | Path, workspace: str) -> None:
        self.path = Path(path)
        self.workspace = workspace
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            self._check()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if not existed:
                self.db.executescript(_SCHEMA)
                self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                    [("schema_version", str(SCHEMA_VERSION)),
                                     ("workspace", workspace)])
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None
        self._in_tx = False

    def _check(self) -> None:
        """Refuse a file that is not our journal, without writing to it."""
        with self.path.open("rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise JournalError(f"journal {self.path} is not a ceylon_net journal (not an "
                                   f"SQLite file); refusing to touch it")
        try:
            ro = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                meta = dict(ro.execute("SELECT key, value FROM meta").fetchall())
            finally:
                ro.close()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path} is unreadable or corrupt ({exc}); "
                               f"refusing to touch it") from None
        version = int(meta.get("schema_version", "0") or 0)
        if version > SCHEMA_VERSION:
            raise JournalError(f"journal {self.path} has schema version {version}, newer than "
                               f"this ceylon_net ({SCHEMA_VERSION}); upgrade ceylon_net")
        if version < 1:
            raise JournalError(f"journal {self.path} has no schema version; not a journal")
        if meta.get("workspace") != self.workspace:
            raise JournalError(f"journal {self.path} belongs to workspace "
                               f"'{meta.get('workspace')}', not '{self.workspace}'")

    # ---- writing
    def add_tasks(self, tasks: Iterable[tuple[int, Task, str | None]]) -> None:
        self._begin()
        self.db.executemany(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, 'pending', 0, NULL, NULL, NULL)",
            [(wire.packb(t.id), idx, wire.pack(t), grp) for idx, t, grp in tasks])

    def add_group(self, idx: int, group_id: str, spec: dict[str, Any]) -> None:
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?)",
                        (group_id, idx, wire.packb(spec)))

    def update(self, rows: Iterable[tuple[TaskId, TaskStatus, int, str | None,
                                          TaskResult | None, str | None]]) -> None:
        self._begin()
        self.db.executemany(
            "UPDATE tasks SET status=?, attempt=?, worker=?, result=?, reason=? WHERE id=?",
            [(st.value, att, worker, None if res is None else wire.pack(res), reason,
              wire.packb(tid)) for tid, st, att, worker, res, reason in rows])

    def commit(self) -> None:
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def close(self) -> None:
        self.commit()
        self.db.close()

    # ---- reading
    def tasks(self) -> list[JournaledTask]:
        rows = self.db.execute("SELECT task, grp, status, attempt, worker, result, reason "
                               "FROM tasks ORDER BY idx").fetchall()
        return [JournaledTask(wire.unpack(Task, task), grp, TaskStatus(status), attempt,
                              worker, None if res is None else wire.unpack(TaskResult, res),
                              reason)
                for task, grp, status, attempt, worker, res, reason in rows]

    def groups(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.execute("SELECT id, spec FROM groups ORDER BY idx").fetchall()
        return [(gid, wire.unpackb(spec)) for gid, spec in rows]


# --------------------------------------------------------------------------- admin state


def record_added(journal: Journal, board: TaskBoard, manager: TaskManager,
                 tasks: list[Task], groups: Sequence[TaskGroup]) -> None:
    """New tasks and groups into the journal; the board starts tracking their changes."""
    if board.dirty is None:
        board.dirty = set()
    group_of = {t.task_id: g.id for g in groups for t in g.subtasks}
    journal.add_tasks((board.records[t.id].index, t, group_of.get(t.id)) for t in tasks)
    # Just inserted as pending (or cancelled by a failed dependency: that change stays).
    for t in tasks:
        if board.records[t.id].status == TaskStatus.PENDING:
            board.dirty.discard(t.id)
    journal.commit()
    order = list(manager.task_groups)
    for g in groups:
        journal.add_group(order.index(g.id), g.id, manager.spec(g))


def record_changes(journal: Journal, board: TaskBoard) -> None:
    """What changed on the board since last time, in one transaction."""
    if not board.dirty:
        return
    records = board.records
    journal.update((tid, r.status, r.attempt, r.worker, r.result, r.reason)
                   for tid in board.dirty for r in (records[tid],))
    board.dirty.clear()
    journal.commit()


class ResultsFile:
    """``--results FILE``: every task result appended as one JSON line, written once a round."""

    def __init__(self, path: str) -> None:
        try:
            self.out = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"--results {path}: {exc.strerror}") from None
        self.lines: list[str] = []

    def add(self, r: TaskResult) -> None:
        self.lines.append(json.dumps(
            {"task_id": r.task_id, "worker": r.worker, "success": r.success,
             "seconds": round(r.seconds, 6), "attempt": r.attempt, "error": r.error,
             "value": r.value, "at": time.time()}, default=repr))

    def flush(self) -> None:
        if self.lines:
            self.out.write("\n".join(self.lines) + "\n")
            self.out.flush()
            self.lines.clear()

    def close(self) -> None:
        self.flush()
        self.out.close()
