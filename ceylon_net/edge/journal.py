"""Durable admin state: every task, its state and result, and the groups, in SQLite.

The tasks are a log: each admin loop round appends one row (or a few, for a large round) of
msgpack holding what it added or changed, in one transaction; results are acknowledged to
workers only after the round is committed, so a result is either in the journal or still held
by its worker. One row per round instead of one SQLite row per task and change: a task cost
the admin 48 µs of journal (an insert and two updates), now a few µs of packing. On start the
log is replayed, last change wins, and rewritten as a snapshot. WAL mode.

A journal is opened read-only first and checked (SQLite at all, schema version, workspace):
a file that does not fit is refused with a clear error and left exactly as it was. A journal
of schema version 1 (a row per task) is converted once, in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from loguru import logger

from .. import wire
from ..core.batches import FORGOT_SIDS, Batch
from ..core.board import ENDED, STATUS_OF, TaskBoard, TaskRecord, TaskState
from ..core.commands import Finished, Forgot, NewWork
from ..core.groups import TaskGroup, TaskManager
from ..core.restore import JournaledTask, missing_groups
from ..core.tasks import Task, TaskId, TaskResult, TaskStatus, json_text
from ..errors import ConfigError, OutsideFailure, RemoteProtocolError

if TYPE_CHECKING:
    from ..core.admin_state import AdminState

# 3: rows end with losses and stopping (version 2's rows lack them); 4: client batches, and
# the run's name in meta (version 3 lacks them); 5: rows end with lost_with (earlier ones lack
# it: an admin of version 4 would misread them); 6: 'forget' rows, and what was forgotten in
# meta (--keep-finished: an admin of version 5 would bring forgotten tasks back); 7: batch
# rows end with the submission's name (version 6's lack it: an admin of 6 refuses such rows),
# and the names of batches forgotten are kept (forgot_sids); 8: task rows end with the floor
# of a task given a forgotten task's id (TaskRecord.base: an admin of 7 would misread them)
SCHEMA_VERSION = 8
_MAGIC = b"SQLite format 3\x00"

_LOG_TABLE = ("CREATE TABLE log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
              "rows BLOB NOT NULL);")
# A client batch as msgpack [wait, after, task ids, sid]: see Batch.journal_row.
_BATCHES_TABLE = "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, spec BLOB NOT NULL);"
# The names of the latest client batches forgotten (see Batches.forgot_sids).
_FORGOT_SIDS_TABLE = ("CREATE TABLE IF NOT EXISTS forgot_sids (sid INTEGER PRIMARY KEY, "
                      "batch INTEGER NOT NULL);")
# execute()'s tasks (forgotten once finished, beyond --keep-finished), by id (msgpack): a
# restarted admin forgets them too, not kept for good (made by this version's first write).
_LOOSE_TABLE = "CREATE TABLE IF NOT EXISTS loose (task BLOB PRIMARY KEY);"
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- kind 'put': rows [task, group, status, attempt, worker, result, reason, losses, stopping,
--   lost_with], a task as a whole
-- kind 'set': rows [task id, status, attempt, worker, result, reason, losses, stopping,
--   lost_with], a task's new state
-- kind 'forget': rows [task id], tasks forgotten (finished, in a batch forgotten)
-- (task and result as their msgpack maps); each blob a msgpack array of rows.
{_LOG_TABLE}
CREATE TABLE groups (id TEXT PRIMARY KEY, idx INTEGER NOT NULL, spec BLOB NOT NULL);
{_BATCHES_TABLE}
{_FORGOT_SIDS_TABLE}
{_LOOSE_TABLE}
"""
# A status as written: an enum's .value is a descriptor call, and there are two per task.
_VALUE = {s: s.value for s in TaskStatus}
_SET_AS = {state: _VALUE[status] for state, status in STATUS_OF.items()}  # (one lookup a row)
_W, _Q = TaskState.WAITING, TaskState.QUEUED
CHUNK_BYTES = 4 << 20  # a log row holds at most this much (a huge round takes several)
# The log is folded into a snapshot of what the admin holds (see compact) once it has grown
# by this much, and by 4 times the last snapshot, since: a serving admin that forgets what
# finished (--keep-finished) kept every task's rows until a restart (12.5 MB for 5,685
# tasks, 60 of them held: a soak trial's finding).
COMPACT_AT = 64 << 20
# SQLite's WAL file grows to hold what was written between two checkpoints (a fold's
# snapshot is one transaction) and kept that size: once checkpointed it goes back to this
# (SQLite checkpoints at 1,000 pages, about as much).
WAL_LIMIT = 4 << 20
PUT, SET, FORGET = "put", "set", "forget"


class JournalError(ConfigError):
    """The journal file cannot be used (another workspace, newer schema, not a journal)."""


class JournalWriteError(JournalError, OutsideFailure):
    """A round could not be written (a full disk, a file gone read-only): the admin stops
    as if killed, its journal holding every round before that one."""


def _unwritable(path: Path, exc: Exception, when: str) -> JournalWriteError:
    return JournalWriteError(
        f"journal {path} could not be written{when} ({exc}): the admin stops, its journal "
        f"holding every round before. Free space (or fix what stopped it) and start the "
        f"admin again with the same command: its workers keep what they hold for it "
        f"meanwhile (their --connect-timeout)")


def _hold(path: Path) -> int:
    """An exclusive lock on the journal file for as long as the descriptor returned stays
    open (the kernel drops it when the process dies): a second admin on the same file would
    have the first one fail on 'database is locked' mid-run. (flock's lock is apart from
    SQLite's own record locks.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"journal {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(f"journal {path} is in use by another ceylon-admin: stop that one "
                           f"first, or name another file") from None
    return fd


# SQLite's words for a disk it cannot write (opening a WAL file makes its index file).
_DISK_TROUBLE = ("disk I/O error", "database or disk is full")


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 0


class Journal:
    def __init__(self, path: str | Path, workspace: str, hold: bool = False) -> None:
        """``hold``: keep the file to this process until :meth:`close` (a serving admin's
        journal); refused when another holds it."""
        self.path = Path(path)
        self.workspace = workspace
        self._named_since_pruned = 0  # names of forgotten batches written (see forget)
        if self.path.is_dir():
            raise JournalError(f"journal {self.path} is a directory: name a file in it")
        self._held = _hold(self.path) if hold else None
        try:
            self._open()
        except BaseException:
            self._let_go()
            raise

    def _open(self) -> None:
        import sqlite3  # (here: an admin without a journal does without it)

        existed = self.path.exists() and self.path.stat().st_size > 0
        version = self._check() if existed else SCHEMA_VERSION
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._in_tx = False
            # The run this journal holds: a client names it when it WATCHes a batch again.
            self.run = os.urandom(8).hex()
            # Registrations seen, and workers registered: each change writes their slots.
            self.registered = (0, 0, 0)
            self.appended = 0  # log bytes written since the last snapshot (see compact)
            self.snapshot_bytes = 0  # ... and that snapshot's
            self._next_group: int | None = None  # (see add_group)
            # A write failed: nothing more is written, each round refused with this.
            self.broken: JournalWriteError | None = None
            if not existed:  # (tables and meta in one transaction: a kill between them
                # would leave a file refused for ever as not a journal)
                self.db.executescript("BEGIN;" + _SCHEMA)
                self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                    [("schema_version", str(SCHEMA_VERSION)),
                                     ("workspace", self.workspace), ("run", self.run)])
                self.db.execute("COMMIT")
            else:
                row = self.db.execute("SELECT value FROM meta WHERE key='run'").fetchone()
                self.run = row[0] if row else self.run
            # An older journal is read as it is and made ours with the first row we write:
            # refused before that, it stays as its ceylon_net left it.
            self._upgrade = version < SCHEMA_VERSION
            self._loose_made = not existed  # (an older file gets it with its first write)
            if version == 1:
                self._from_version_1()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None

    def _check(self) -> int:
        """Refuse a file that is not our journal, without writing to it; its schema version."""
        import sqlite3

        with self.path.open("rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise JournalError(f"journal {self.path} is not a ceylon_net journal (not an "
                                   f"SQLite file); refusing to touch it")
        try:
            ro = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                meta = dict(ro.execute("SELECT key, value FROM meta").fetchall())
                # Damage further in (the meta page intact) shows only when the log is read.
                problems = [row[0] for row in ro.execute("PRAGMA quick_check")]
            finally:
                ro.close()
        except sqlite3.Error as exc:
            raise self._unopened(exc) from None
        if problems != ["ok"]:
            raise JournalError(f"journal {self.path} is corrupt ({'; '.join(problems[:3])}); "
                               f"refusing to touch it")
        said = meta.get("schema_version", "0") or "0"
        if not (isinstance(said, str) and said.isascii() and said.isdigit()):  # (another
            raise JournalError(f"journal {self.path} is not a ceylon_net journal (its schema "
                               f"version reads {said!r}); refusing to touch it")  # program's)
        version = int(said)
        if version > SCHEMA_VERSION:
            raise JournalError(f"journal {self.path} has schema version {version}, newer than "
                               f"this ceylon_net ({SCHEMA_VERSION}); upgrade ceylon_net")
        if version < 1:
            raise JournalError(f"journal {self.path} has no schema version; not a journal")
        if meta.get("workspace") != self.workspace:
            raise JournalError(f"journal {self.path} belongs to workspace "
                               f"'{meta.get('workspace')}', not '{self.workspace}'")
        return version

    def _unopened(self, exc: Exception) -> JournalError:
        """Why the file could not be read as a journal (``exc``, SQLite's error)."""
        if str(exc).startswith(("no such table: meta", "no such column")):  # (readable
            # SQLite: another program's, with no meta table or one of its own)
            return JournalError(f"journal {self.path} is not a ceylon_net journal (an SQLite "
                                f"database without its tables); refusing to touch it")
        if str(exc) in _DISK_TROUBLE:
            return JournalError(f"journal {self.path} could not be opened ({exc}; "
                                f"{_free(self.path):,} bytes free on its disk): free space, "
                                f"or see to the disk, and start the admin again")
        return JournalError(f"journal {self.path} is unreadable or corrupt ({exc}); "
                            f"refusing to touch it")

    def _from_version_1(self) -> None:
        """A row per task (version 1) into the log, in one transaction."""
        db = self.db
        self._begin()  # (made version 4 in it)
        rows = db.execute("SELECT task, grp, status, attempt, worker, result, reason "
                          "FROM tasks ORDER BY idx").fetchall()
        db.execute(_LOG_TABLE)
        path = self.path
        self._append(PUT, [[_load(task, path), grp, status, attempt, worker,
                            None if res is None else _load(res, path), reason]
                           for task, grp, status, attempt, worker, res, reason in rows])
        db.execute("DROP TABLE tasks")
        self.commit()

    # ---- writing
    def add_tasks(self, tasks: Iterable[tuple[Task, str | None]]) -> None:
        """New tasks (pending), in submission order, with their group's id."""
        to_wire = wire.to_wire
        self._append(PUT, [[to_wire(t), grp, "pending", 0, None, None, None, 0, None]
                           for t, grp in tasks])

    def add_batch(self, batch_id: int, row: list[Any]) -> None:
        """A client's batch (its tasks are added with it)."""
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?)",
                        (batch_id, wire.packb(row)))

    def forget(self, gone: Forgot) -> None:
        """Finished batches forgotten: their tasks, groups and rows go; the next batch's
        number and the forgotten counts stay (see :meth:`forgotten`)."""
        self._append(FORGET, gone.tasks)
        db = self.db
        if gone.loose:  # (only execute()'s are there: a batch's 100,000 need no look)
            db.executemany("DELETE FROM loose WHERE task=?",
                           [(wire.packb(t),) for t in gone.loose])
        db.executemany("DELETE FROM groups WHERE id=?", [(g,) for g in gone.groups])
        db.executemany("DELETE FROM batches WHERE id=?", [(b,) for b in gone.batches])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('forgotten', ?)",
                   (json.dumps([gone.next_batch, gone.counts]),))
        if gone.sids:
            db.executemany("INSERT OR REPLACE INTO forgot_sids VALUES (?, ?)", gone.sids)
            self._named_since_pruned += len(gone.sids)
        if self._named_since_pruned > FORGOT_SIDS // 10:  # (a sort of the table: not each
            # time, at --keep-finished 0 each batch; a resumed admin keeps the latest anyway)
            db.execute("DELETE FROM forgot_sids WHERE batch <= (SELECT batch FROM forgot_sids "
                       "ORDER BY batch DESC LIMIT 1 OFFSET ?)", (FORGOT_SIDS,))
            self._named_since_pruned = 0

    def _has(self, table: str) -> bool:
        """Does the file have this table (an older schema's may not)?"""
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)
                               ).fetchone() is not None

    def add_loose(self, task_ids: Iterable[TaskId]) -> None:
        """execute()'s tasks, taken: forgotten once finished (see :meth:`loose`)."""
        self._begin()
        self.db.executemany("INSERT OR IGNORE INTO loose VALUES (?)",
                            [(wire.packb(t),) for t in task_ids])

    def loose(self) -> list[TaskId]:
        """The ids :meth:`add_loose` wrote, not forgotten since (none in a journal written
        before it)."""
        if not self._has("loose"):
            return []
        return [_load(blob, self.path) for (blob,) in self.db.execute("SELECT task FROM loose")]

    def forgot_sids(self) -> list[tuple[int, int]]:
        """The names of the latest client batches forgotten, as [(name, batch)], oldest
        first (none in a journal older than version 7)."""
        if not self._has("forgot_sids"):
            return []
        return [(s, b) for s, b in self.db.execute(
            "SELECT sid, batch FROM forgot_sids ORDER BY batch") if type(s) is type(b) is int]

    def set_slots(self, slots: dict[str, int], abilities: dict[str, list[Any]] | None = None
                  ) -> None:
        """How many tasks each registered worker runs at once (its --concurrency): after a
        restart, a worker that does not come back is charged no more starts than that (the
        journal does not keep which of its tasks had started). ``abilities``: what the
        workers that may come back can do (Membership.abilities)."""
        self._begin()
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [("slots", json.dumps(slots)),
                             ("abilities", json.dumps(abilities or {}))])
        self.db.execute("DELETE FROM meta WHERE key='told'")  # (not told yet: see told)

    def told_all(self) -> None:
        """The admin stops, telling every registered worker the run is over: a restart
        need not wait for them (see AdminState.owed_end) until one registers again."""
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('told', '1')")

    def told(self) -> bool:
        """Were the workers of :meth:`slots` told the run was over (see told_all)?"""
        return self.db.execute("SELECT 1 FROM meta WHERE key='told'").fetchone() is not None

    def add_group(self, group_id: str, spec: dict[str, Any]) -> None:
        """A group, after those it holds (forgotten or not) in the order groups are
        restored in (the next place read once: the table has no index on it)."""
        if self._next_group is None:
            self._next_group = self.db.execute(
                "SELECT COALESCE(MAX(idx), -1) + 1 FROM groups").fetchone()[0]
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?)",
                        (group_id, self._next_group, wire.packb(spec)))
        self._next_group += 1

    def update(self, rows: Iterable[tuple[TaskId, TaskStatus, int, str | None,
                                          TaskResult | None, str | None, int, str | None,
                                          list[list[Any]] | None, int]]) -> None:
        """Tasks' new states (the last field: the task's floor, TaskRecord.base)."""
        to_wire, value = wire.to_wire, _VALUE
        self.set_rows([[tid, value[st], att, worker, None if res is None else to_wire(res),
                        reason, losses, stopping, lost, base]
                       for tid, st, att, worker, res, reason, losses, stopping, lost, base
                       in rows])

    def set_rows(self, rows: list[list[Any]]) -> None:
        """Tasks' new states, as :meth:`update` writes them (the status as its value, the
        result in its wire form)."""
        self._append(SET, rows)

    def _append(self, kind: str, rows: list[list[Any]]) -> None:
        self._begin()
        for _, blob in wire.packed_batches(rows, CHUNK_BYTES, wire.packb):
            self.db.execute("INSERT INTO log (kind, rows) VALUES (?, ?)", (kind, blob))
            self.appended += len(blob)

    def compact(self, rows: list[list[Any]]) -> None:
        """The log becomes one snapshot: ``rows``, every task the admin holds as a PUT row
        (:func:`snapshot_rows`), in submission order, in one transaction (committed by the
        caller: a kill before leaves the log as it was)."""
        self._begin()
        self.db.execute("DELETE FROM log")
        self.appended = 0
        self._append(PUT, rows)
        self.snapshot_bytes, self.appended = self.appended, 0

    def due(self) -> bool:
        """Has the log grown enough since its last snapshot to be folded (see COMPACT_AT)?"""
        return self.appended > max(COMPACT_AT, 4 * self.snapshot_bytes)

    def commit(self) -> None:
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
            if not self._loose_made:
                self.db.execute(_LOOSE_TABLE)
                self._loose_made = True
            if self._upgrade:
                self.db.execute(_BATCHES_TABLE)
                self.db.execute(_FORGOT_SIDS_TABLE)
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                    [("schema_version", str(SCHEMA_VERSION)),
                                     ("run", self.run)])
                self._upgrade = False

    def abandon(self, why: JournalWriteError) -> None:
        """A write failed (``why``): the round's transaction is undone (SQLite may have
        rolled it back already) and nothing more is written."""
        import sqlite3

        self.broken = self.broken or why
        if self._in_tx:
            self._in_tx = False
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        import sqlite3

        try:
            self.commit()
        except sqlite3.Error as exc:
            why = _unwritable(self.path, exc, " as the admin stopped")
            self.abandon(why)
            logger.error("{}", why)
        finally:
            try:
                self.db.close()
            finally:
                self._let_go()

    def _let_go(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None

    # ---- reading
    def tasks(self) -> list[JournaledTask]:
        """Every task as the log leaves it, in submission order. Then the log is rewritten
        as one snapshot of them (its changes folded in)."""
        state: dict[Any, list[Any]] = {}
        rows = strays = 0
        with self._reading():
            for kind, blob in self.db.execute("SELECT kind, rows FROM log ORDER BY seq"):
                rows += 1
                items = _load(blob, self.path)
                if kind == PUT:
                    for item in items:
                        state[item[0]["id"]] = item
                elif kind == SET:
                    for tid, *fields in items:
                        row = state.get(tid)
                        if row is None:
                            strays += 1  # a task the journal never had (see below)
                        else:
                            row[2:] = fields
                elif kind == FORGET:
                    for tid in items:
                        state.pop(tid, None)
                else:
                    raise JournalError(f"journal {self.path}: unknown log entry {kind!r}")
            entries = [_entry(row) for row in state.values()]
        if strays:
            # Changes of tasks that were never written (one that could not be encoded, say):
            # the journal cannot bring them back, and must not keep the admin from starting.
            logger.warning("journal {}: skipped {} change(s) of task(s) it never held",
                           self.path, strays)
        if rows > 1:
            self.compact(list(state.values()))
            self.commit()
        return entries

    def task_specs(self) -> dict[Any, dict[str, Any]]:
        """The tasks it holds, by id, as given (their msgpack maps), read without folding
        the log (as :meth:`tasks` does): a look that leaves the file as it was."""
        specs: dict[Any, dict[str, Any]] = {}
        with self._reading():
            for (blob,) in self.db.execute("SELECT rows FROM log WHERE kind=?", (PUT,)):
                specs.update((item[0]["id"], item[0]) for item in _load(blob, self.path))
        return specs

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Reading the log: a row it cannot make sense of, or damage SQLite finds only
        now, is a JournalError saying so."""
        import sqlite3

        try:
            yield
        except (ValueError, TypeError, KeyError, IndexError, RemoteProtocolError) as exc:
            raise JournalError(f"journal {self.path} holds a task it cannot read "
                               f"({type(exc).__name__}: {exc})") from None
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path} is unreadable or corrupt ({exc}); "
                               f"refusing to go on") from None

    def _meta_map(self, key: str) -> dict[str, Any]:
        """A JSON object kept in meta ({} when there is none, or it does not read as one)."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        try:
            value = json.loads(row[0]) if row else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def slots(self) -> dict[str, int]:
        """What :meth:`set_slots` wrote last ({} in a journal without it)."""
        return {k: v for k, v in self._meta_map("slots").items() if type(v) is int and v > 0}

    def abilities(self) -> dict[str, tuple[int, str, list[str]]]:
        """What :meth:`set_slots` wrote last of the workers' abilities ({} in a journal
        without them; a row that does not read as one is left out)."""
        return {n: (a[0], a[1], a[2]) for n, a in self._meta_map("abilities").items()
                if isinstance(a, list) and len(a) == 3 and type(a[0]) is int
                and isinstance(a[1], str) and isinstance(a[2], list)
                and all(isinstance(h, str) for h in a[2])}

    def forgotten(self) -> tuple[int, list[int]] | None:
        """What :meth:`forget` wrote last: the next batch's number and the forgotten counts
        (``Forgotten.row``); None when nothing was forgotten."""
        row = self.db.execute("SELECT value FROM meta WHERE key='forgotten'").fetchone()
        try:
            next_batch, counts = json.loads(row[0]) if row else (None, None)
        except (ValueError, TypeError):
            next_batch = counts = None
        if isinstance(counts, list) and len(counts) == 5:  # (written before two were added)
            counts = [*counts, 0, 0]
        if type(next_batch) is not int or not (isinstance(counts, list) and len(counts) == 7
                                                and all(type(n) is int for n in counts)):
            if row:
                raise JournalError(f"journal {self.path} holds counts it cannot read "
                                   f"({row[0]!r:.80})")
            return None
        return next_batch, counts

    def holds_tasks(self) -> bool:
        return self.db.execute("SELECT 1 FROM log LIMIT 1").fetchone() is not None

    def groups(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.execute("SELECT id, spec FROM groups ORDER BY idx").fetchall()
        return [(gid, wire.unpackb(spec)) for gid, spec in rows]

    def batches(self) -> list[tuple[int, list[Any]]]:
        """Client batches by number, as :meth:`add_batch` wrote them (none in a journal older
        than version 4)."""
        if not self._has("batches"):
            return []
        out = []
        for batch_id, spec in self.db.execute("SELECT id, spec FROM batches ORDER BY id"):
            row = _load(spec, self.path)
            if not (type(row) is list and len(row) in (3, 4) and type(row[2]) is list
                    and (len(row) == 3 or type(row[3]) is int)):
                raise JournalError(f"journal {self.path} holds a batch it cannot read "
                                   f"({batch_id}: {row!r:.80})")
            out.append((batch_id, row))
        return out


def _entry(row: list[Any]) -> JournaledTask:
    task, grp, status, attempt, worker, res, reason, *later = row  # version 2 ends at reason
    return JournaledTask(wire.from_wire(Task, task), grp, TaskStatus(status), attempt, worker,
                         None if res is None else wire.from_wire(TaskResult, res), reason,
                         *later)


def _load(blob: bytes, path: Path) -> Any:
    """Our own bytes back (the journal is not network input: no size limits)."""
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:
        raise JournalError(f"journal {path} holds an unreadable entry ({type(exc).__name__}: "
                           f"{exc}); refusing to guess") from None


# --------------------------------------------------------------------------- admin state


def record_added(journal: Journal, board: TaskBoard, manager: TaskManager,
                 tasks: list[Task], groups: Sequence[TaskGroup], batch: Batch | None = None
                 ) -> None:
    """New tasks and groups (and the client batch they came in) into the journal; the board
    starts tracking their changes."""
    if board.dirty is None:
        board.dirty = set()
    group_of = {t.task_id: g.id for g in groups for t in g.subtasks}
    journal.add_tasks((t, group_of.get(t.id)) for t in tasks)
    # Just added as pending (or cancelled by a failed dependency: that change stays).
    records, status, pending = board.records, STATUS_OF, TaskStatus.PENDING
    board.dirty.difference_update(t.id for t in tasks if status[records[t.id].state] is pending)
    for g in groups:
        journal.add_group(g.id, manager.spec(g))
    if batch is not None:
        journal.add_batch(batch.id, batch.journal_row())
    journal.commit()  # the groups with their tasks (a round with no change commits nothing)


def record_round(journal: Journal, state: AdminState, cmds: Iterable[Any]) -> None:
    """What a round of the admin added (its NewWork commands) and changed, in one
    transaction each. JournalWriteError when it could not be written: then nothing more
    is (the admin stops)."""
    import sqlite3

    if journal.broken:  # (a round not journaled is not carried out either)
        raise journal.broken
    try:
        _record_round(journal, state, cmds)
    except sqlite3.Error as exc:
        why = _unwritable(journal.path, exc, "")
        journal.abandon(why)
        raise why from exc


def _record_round(journal: Journal, state: AdminState, cmds: Iterable[Any]) -> None:
    for cmd in cmds:
        if isinstance(cmd, NewWork):
            record_added(journal, state.board, state.task_manager, cmd.tasks, cmd.groups,
                         cmd.batch)
            if cmd.loose:
                journal.add_loose(t.id for t in cmd.tasks)
        elif isinstance(cmd, Forgot):
            journal.forget(cmd)
    registered = (state.members.joined, len(state.members.registry), state.members.lost_seq)
    if registered != journal.registered:  # a worker registered, left or was lost: rare
        journal.registered = registered
        # with those from before a restart still awaited: a second crash must find them too
        # (each worker's --concurrency: its slots now may be fewer, some held by threads)
        full = {r.name: r.detail.capacity for r in state.members.registry.by_peer.values()}
        journal.set_slots({**state.board.slots_of_gone,
                           **{w.name: full.get(w.name, w.slots)
                              for w in state.board.scheduler.workers.values()}},
                          state.members.abilities())
    record_changes(journal, state.board)
    if state.closing and not state.owed_end:  # (its END to every worker is in this round;
        journal.told_all()  # a worker it still waited for was not told: owed still)
    if journal.due():
        journal.compact(snapshot_rows(state.board, state.task_manager))
    journal.commit()  # (a round's forgetting and changes in one transaction: see Forgot)


def resume(journal: Journal, state: AdminState, now: float) -> bool:
    """The admin's state back from the journal (True when it held anything). Tasks submitted
    before the journal was open (``Admin.submit`` before ``start``) go into it as they stand:
    else their later changes would change tasks the journal never held. JournalWriteError
    (the file closed) when what it writes meanwhile (the log folded) could not be."""
    import sqlite3

    try:
        return _resume(journal, state, now)
    except sqlite3.Error as exc:
        why = _unwritable(journal.path, exc, " as the admin started")
        journal.abandon(why)
        journal.close()
        raise why from exc


def _resume(journal: Journal, state: AdminState, now: float) -> bool:
    board, manager = state.board, state.task_manager
    early = [r.task for r in board.records.values()]
    if early and journal.holds_tasks():
        journal.close()
        raise JournalError(
            f"journal {journal.path} holds a run to resume, and {len(early)} task(s) were "
            f"submitted before start(): they would be submitted twice. Submit after "
            f"start(), and only when admin.resumed is False (ceylon-admin --tasks does so)")
    groups = list(manager.task_groups.values())
    entries, held = journal.tasks(), journal.groups()
    if lacking := missing_groups(entries, held):
        logger.warning("journal {}: {} task(s) name group(s) it does not hold ({}), written "
                       "by an older ceylon_net: they run on as plain tasks, without their "
                       "group's goal", journal.path, sum(lacking.values()),
                       ", ".join(sorted(lacking)))
    state.run = journal.run
    slots = journal.slots()
    resumed = state.resume(entries, held, now, journal.batches(), slots, journal.forgotten(),
                           () if journal.told() else slots, journal.loose())
    state.batches.forgot_named(journal.forgot_sids())
    state.members.restore_abilities(journal.abilities())
    if resumed:
        logger.info("resumed from journal {}: {} task(s), {} finished, {} were with workers "
                    "(running or queued there: waiting for them), {} queued, {} waiting",
                    journal.path,
                    len(board.records), len(board.records) - board.open, board.running,
                    len(board.scheduler), len(board.waiting))
    if early:
        record_added(journal, board, manager, early, groups)
        assert board.dirty is not None
        board.dirty.update(t.id for t in early)
        record_changes(journal, board)
    return resumed


def snapshot_rows(board: TaskBoard, manager: TaskManager) -> list[list[Any]]:
    """Every task the board holds as a full log row (what a PUT and the SETs after it fold
    into), in submission order."""
    set_as, lost_with, to_wire = _SET_AS, board.lost_with, wire.to_wire
    group_of = manager.group_of
    return [[to_wire(r.task), None if (g := group_of(tid)) is None else g.id, set_as[r.state],
             _attempt(r), r.worker, None if r.result is None else to_wire(r.result), r.reason,
             r.losses, r.stopping, lost_with(tid), r.base] for tid, r in board.records.items()]


def _attempt(r: TaskRecord) -> int:
    """A task's attempt as journaled: 0 while it was never given out (a restart raises it
    to the floor above the forgotten attempts: TaskBoard.restore_forgotten); written as
    its floor, the restored task had none, and an old result of a forgotten task of its id
    finished it (a review's finding)."""
    return 0 if r.attempt == r.base and (r.state is _W or r.state is _Q) else r.attempt


def record_changes(journal: Journal, board: TaskBoard) -> None:
    """What changed on the board since last time, in one transaction: the rows
    :meth:`Journal.update` writes, made in one pass (every task goes through here twice)."""
    if not board.dirty:
        return
    records, set_as, lost_with = board.records, _SET_AS, board.lost_with
    encode, to_wire = wire.encoder(TaskResult), wire.to_wire
    journal.set_rows([
        [tid, set_as[r.state], r.attempt if r.attempt != r.base else _attempt(r), r.worker,
         None if (res := r.result) is None else encode(res) if type(res) is TaskResult
         else to_wire(res), r.reason, r.losses, r.stopping, lost_with(tid), r.base]
        for tid in board.dirty for r in (records[tid],)])
    board.dirty.clear()
    journal.commit()


# --results: lines written at most this many a write (one that fails is undone whole), and
# kept at most this many while the file cannot be written (the oldest dropped first).
RESULTS_CHUNK = 512
RESULTS_WAITING = 100_000


class ResultsFile:
    """``--results FILE``: every task result appended as one JSON line, written once a round.
    Each line names its run (the journal's, or this process's), so a file appended to across
    runs tells them apart, and a restart on a journal can see which of its results are
    missing (see :meth:`complete`)."""

    def __init__(self, path: str, journaled: bool = False) -> None:
        self.path, self.journaled = path, journaled
        try:  # (unbuffered: a write that fails is undone whole, see flush)
            self.out = open(path, "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"--results {path}: {exc.strerror}") from None
        self.lines: list[str] = []
        self.failing: str | None = None  # why the last write failed, while lines wait
        self.dropped = 0  # lines that waited past RESULTS_WAITING
        self._retry_at = 0.0
        self.run = ""
        # Finished commands whose lines went out first, by id (held: an id is not reused)
        self._written: dict[int, Finished] = {}

    def first(self, cmds: Iterable[Any], board: TaskBoard) -> None:
        """A round's results written now, before the round is carried out (an execute()
        caller goes on first: what it does next may have the tasks forgotten)."""
        for cmd in cmds:
            if type(cmd) is Finished and (result := self.result(cmd, board)) is not None:
                self.add(result)
                self._written[id(cmd)] = cmd
        self.flush()

    def finished(self, f: Finished, board: TaskBoard) -> None:
        """A task's end, as the round is carried out: its line (unless written first)."""
        if self._written and self._written.get(id(f)) is f:
            del self._written[id(f)]
        elif (result := self.result(f, board)) is not None:
            self.add(result)

    @staticmethod
    def result(f: Finished, board: TaskBoard) -> TaskResult | None:
        """A finished task's line: its worker's result; for one given up as lost with its
        workers too often, the failure the report shows, as after a restart (the board's:
        its record is there until the next round). None: no line (cancelled, unassigned)."""
        if f.result is not None:
            return f.result
        if f.status is TaskStatus.FAILED:
            rec = board.records.get(f.task_id)
            return rec.result if rec is not None else None
        return None

    def add(self, r: TaskResult) -> None:
        self.lines.append(json_text(
            {"task_id": r.task_id, "worker": r.worker, "success": r.success,
             "seconds": round(r.seconds, 6), "attempt": r.attempt, "error": r.error,
             "value": r.value, "at": time.time(), "run": self.run}))

    def complete(self, board: TaskBoard) -> int:
        """After a restart on a journal: append the results the journal holds and this file
        lacks (the admin was killed after its journal committed a round, before the round's
        lines were written), dropping a line the kill cut short. How many were appended."""
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("--results {}: dropped a line cut short (the admin was killed "
                           "while writing it): {!r}", self.path, data[keep:keep + 80])
            os.truncate(self.path, keep)
            data = data[:keep]
        written = set()  # this run's (a line without "run" is from before lines named it)
        for line in data.splitlines():
            with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
                row = json.loads(line)
                if row.get("run", self.run) == self.run:
                    written.add((row["task_id"], row.get("attempt")))
        for rec in board.records.values():  # (by attempt too: an id may be given again once
            # its task is forgotten, --keep-finished, and the new one's attempts go higher)
            if rec.result is not None and rec.state in ENDED and \
                    (rec.task.id, rec.result.attempt) not in written and \
                    (rec.task.id, None) not in written:  # (a line that does not say)
                self.add(rec.result)
        missing = len(self.lines)
        self.flush()
        if missing:
            logger.info("--results {}: {} result(s) the journal holds were missing (the admin "
                        "was killed, or its disk full, before writing them): {}", self.path,
                        missing, "appended" if not self.lines else
                        f"{len(self.lines):,} wait for room")
        return missing

    def flush(self) -> None:
        """The lines out, RESULTS_CHUNK at a time. A chunk that cannot be written (a full
        disk) is undone whole and smaller ones tried, down to a line: what has room goes, the
        rest waits, said once (the admin stopped on it, "a bug", its workers told the run was
        over with results it did not have: run again by the next admin, a review). While it
        lasts, a try a second (rounds come often); past RESULTS_WAITING lines waiting the
        oldest are dropped, counted. Said again once written."""
        if len(self.lines) > RESULTS_WAITING:
            self.dropped += len(self.lines) - RESULTS_WAITING
            del self.lines[:len(self.lines) - RESULTS_WAITING]
        if not self.lines or (self.failing is not None and time.monotonic() < self._retry_at):
            return
        written, size = 0, RESULTS_CHUNK
        while written < len(self.lines):
            chunk = self.lines[written:written + size]
            if self._write(("\n".join(chunk) + "\n").encode()):
                written += len(chunk)
            elif size > 1:
                size = max(1, size // 8)
            else:
                break
        del self.lines[:written]
        if self.lines:
            self._retry_at = time.monotonic() + 1.0
        elif self.failing is not None:
            logger.info("--results {}: written again{}", self.path, self._dropped())
            self.failing = None

    def _write(self, data: bytes) -> bool:
        """All of ``data``, or none of it (False: why is in ``failing``, said the first
        time)."""
        at = self.out.seek(0, os.SEEK_END)
        try:
            while data:  # (a raw write may take part of it)
                data = data[self.out.write(data):]
            return True
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.truncate(self.path, at)  # (no line cut short: the next write adds to it)
            if self.failing is None:
                logger.error("--results {}: could not be written ({}): result lines wait, "
                             "written once it can be", self.path, exc.strerror or exc)
            self.failing = exc.strerror or str(exc)
            return False

    def _dropped(self) -> str:
        if not self.dropped:
            return ""
        lost, self.dropped = self.dropped, 0
        return (f"; {lost:,} line(s) that waited longest were dropped (past "
                f"{RESULTS_WAITING:,} waiting){self._restart_appends}")

    @property
    def _restart_appends(self) -> str:
        return ": a restart on the journal appends them" if self.journaled else ""

    def close(self) -> None:
        self.flush()
        self.out.close()
        if self.lines or self.dropped:
            self.dropped += len(self.lines)
            logger.error("--results {}: {:,} result line(s) could not be written ({}){}",
                         self.path, self.dropped, self.failing, self._restart_appends)
