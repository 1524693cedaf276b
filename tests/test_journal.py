"""The journal on its own: what goes in comes back after a crash (no sockets)."""

import contextlib
import signal
import sqlite3

import pytest
from loguru import logger

from ceylon_net import AtLeast, GoalStatus, Task, TaskGroupGoal, TaskManager, TaskMessage, wire
from ceylon_net.core.admin_state import AdminState
from ceylon_net.core.board import TaskBoard, TaskState
from ceylon_net.core.restore import restore
from ceylon_net.core.scheduler import WorkerSlot
from ceylon_net.core.tasks import TaskResult, TaskStatus
from ceylon_net.edge.journal import (
    CHUNK_BYTES,
    SCHEMA_VERSION,
    Journal,
    JournalError,
    record_added,
    record_changes,
    resume,
)
from ceylon_net.settings import AdminSettings


def _groups():
    first = TaskManager.create_task_group(
        "first", "", [TaskMessage(f"a{i}", f"a{i}", "", 0.0) for i in range(3)],
        goal=TaskGroupGoal("two of three", "", AtLeast(2), "ok", "no"), task_id="first")
    second = TaskManager.create_task_group(
        "second", "", [TaskMessage("b0", "b0", "", 0.0)], depends_on=["first"],
        task_id="second")
    return [first, second]


def _live(path):
    journal = Journal(path, "default")
    board, manager = TaskBoard(), TaskManager()
    board.add_worker(WorkerSlot("w", 10, capacity=10))
    groups = _groups()
    plain = [Task("p0", "plain"), Task("p1", "plain after p0", depends_on=["p0"])]
    group_tasks, gates = manager.register(groups)
    everything = [*plain, *group_tasks]
    board.add(everything, gates)
    record_added(journal, board, manager, everything, groups)
    return journal, board, manager


def test_a_crash_mid_run_comes_back_as_it_was(tmp_path):
    path = tmp_path / "state.db"
    journal, board, manager = _live(path)
    plan = board.plan()
    assert sorted(a.task.id for a in plan["w"]) == ["a0", "a1", "a2", "p0"]
    for tid in ("a0", "a1", "p0"):
        board.record(TaskResult(tid, "w", True, attempt=1))
    manager.settle(board)
    record_changes(journal, board)
    journal.db.close()  # the crash: no close(), nothing else written

    journal2 = Journal(path, "default")
    board2, manager2 = TaskBoard(), TaskManager()
    assert restore(board2, manager2, journal2.tasks(), journal2.groups())
    status = {t: r.status for t, r in board2.records.items()}
    assert status == {"p0": TaskStatus.COMPLETED, "p1": TaskStatus.PENDING,
                      "a0": TaskStatus.COMPLETED, "a1": TaskStatus.COMPLETED,
                      "a2": TaskStatus.RUNNING, "b0": TaskStatus.PENDING}
    assert board2.queued() == ["p1"]  # its dependency had completed
    assert board2.orphans() == {"w": {"a2"}}  # waits for its worker
    first = manager2.task_groups["first"]
    assert (first.completed, first.goal.status) == (2, GoalStatus.ACHIEVED)
    assert "b0" in board2.waiting  # 'second' still waits for 'first' to finish
    board2.add_worker(WorkerSlot("w", 10, capacity=10))
    board2.reclaim("w", {"a2": 1})
    board2.record(TaskResult("a2", "w", True, attempt=1))
    manager2.settle(board2)
    assert "b0" in board2.queued()  # 'first' completed: 'second' goes
    assert board2.report().success_rate == 1.0


def test_groups_are_in_the_journal_as_soon_as_their_tasks(tmp_path):
    path = tmp_path / "state.db"
    journal, _, _ = _live(path)
    journal.db.close()  # a crash before any task moved: nothing else committed

    journal2 = Journal(path, "default")
    board2, manager2 = TaskBoard(), TaskManager()
    assert restore(board2, manager2, journal2.tasks(), journal2.groups())
    assert sorted(g.name for g in manager2.task_groups.values()) == ["first", "second"]
    assert sorted(board2.queued()) == ["a0", "a1", "a2", "p0"]


def _entries(journal):
    return [(e.task.id, e.status, e.attempt, e.worker, e.result, e.reason)
            for e in journal.tasks()]


def test_the_log_replayed_is_rewritten_as_one_snapshot_that_reads_the_same(tmp_path):
    path = tmp_path / "state.db"
    journal, board, _ = _live(path)
    board.plan()
    board.record(TaskResult("p0", "w", True, attempt=1, value={"v": 1}))
    record_changes(journal, board)
    board.record(TaskResult("a0", "w", False, attempt=1, error="boom"))
    record_changes(journal, board)
    journal.close()
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM log").fetchone()[0]
    assert rows == 3  # added; assigned and p0 done; a0 failed: a row per round

    first = _entries(Journal(path, "default"))
    assert sqlite3.connect(path).execute("SELECT count(*) FROM log").fetchone()[0] == 1
    assert _entries(Journal(path, "default")) == first
    done = {tid: (st, res) for tid, st, _, _, res, _ in first}
    assert done["p0"] == (TaskStatus.COMPLETED, TaskResult("p0", "w", True, attempt=1,
                                                           value={"v": 1}))
    assert done["a0"][0] is TaskStatus.FAILED and done["a0"][1].error == "boom"
    assert done["a1"][0] is TaskStatus.ASSIGNED and done["p1"][0] is TaskStatus.PENDING


def test_a_round_larger_than_a_log_row_is_split_and_read_back_whole(tmp_path):
    path = tmp_path / "state.db"
    journal = Journal(path, "default")
    big = "x" * (CHUNK_BYTES // 3)
    journal.add_tasks((Task(i, "big", args=[big, i]), None) for i in range(5))
    journal.commit()
    journal.db.close()
    sizes = [n for (n,) in sqlite3.connect(path).execute("SELECT length(rows) FROM log")]
    assert len(sizes) > 1 and max(sizes) <= CHUNK_BYTES
    assert [(e.task.id, e.task.args[1]) for e in Journal(path, "default").tasks()] == [
        (i, i) for i in range(5)]


VERSION_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (id BLOB PRIMARY KEY, idx INTEGER NOT NULL, task BLOB NOT NULL, grp TEXT,
    status TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT, result BLOB, reason TEXT);
CREATE TABLE groups (id TEXT PRIMARY KEY, idx INTEGER NOT NULL, spec BLOB NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('workspace', 'default');
"""


def test_a_journal_of_schema_version_1_is_converted_once_and_keeps_every_task(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
        done = TaskResult("t1", "w", True, 0.5, attempt=2, value=[1, 2])
        db.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (wire.packb("t1"), 1, wire.pack(Task("t1", "done")), None, "completed", 2, "w",
             wire.pack(done), None),
            (wire.packb(0), 0, wire.pack(Task(0, "running", difficulty=7)), "g", "running", 1,
             "w", None, None),
            (wire.packb("t2"), 2, wire.pack(Task("t2", "gone")), None, "cancelled", 0, None,
             None, "cancelled by request")])
    db.close()

    assert _entries(Journal(path, "default")) == [
        (0, TaskStatus.RUNNING, 1, "w", None, None),
        ("t1", TaskStatus.COMPLETED, 2, "w", done, None),
        ("t2", TaskStatus.CANCELLED, 0, None, None, "cancelled by request")]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == \
            (str(SCHEMA_VERSION),)
        assert db.execute("SELECT name FROM sqlite_master WHERE name='tasks'").fetchall() == []
    db.close()
    journal = Journal(path, "default")  # version 2 now: opened as it is
    assert [e.task.difficulty for e in journal.tasks()] == [7, 1, 1]


def test_a_version_1_journal_missing_a_group_row_restores_its_tasks_as_plain_ones(tmp_path):
    """Version 1 wrote a submission's groups after its tasks: a crash between left tasks
    naming a group the journal lacks. They come back (as plain tasks), with a warning."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
        db.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (wire.packb(i), i, wire.pack(Task(i, f"in g {i}")), "g", "pending", 0, None,
             None, None) for i in range(3)])
    db.close()
    state = AdminState(AdminSettings(port=0), now=0.0)
    warned: list = []
    sink = logger.add(warned.append, level="WARNING")
    try:
        assert resume(Journal(path, "default"), state, now=1.0)
    finally:
        logger.remove(sink)
    assert sorted(state.board.records) == [0, 1, 2]
    assert len(state.board.scheduler) == 3  # queued again, nothing waits on a lost group
    assert state.task_manager.task_groups == {}
    assert any("3 task(s) name group(s) it does not hold (g)" in m for m in warned)


def test_a_change_of_a_task_the_journal_never_held_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "state.db"
    journal = Journal(path, "default")
    journal.add_tasks([(Task("kept", "x"), None)])
    journal.update([("never-added", TaskStatus.CANCELLED, 0, None, None, "gone", 0, None, None,
                     0),
                    ("kept", TaskStatus.ASSIGNED, 1, "w", None, None, 0, None, None, 0)])
    journal.close()
    assert _entries(Journal(path, "default")) == [
        ("kept", TaskStatus.ASSIGNED, 1, "w", None, None)]


def test_a_journal_entry_that_is_not_a_task_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    journal = Journal(path, "default")
    journal.add_tasks([(Task("t", "x"), None)])
    journal.db.execute("UPDATE log SET rows=?", (wire.packb([[{"id": "t"}, None, "pending", 0,
                                                               None, None, None]]),))
    journal.close()
    with pytest.raises(JournalError, match=r"holds a task it cannot read.*'description'"):
        Journal(path, "default").tasks()


def test_a_round_that_wakes_an_execute_caller_is_journaled_before_the_caller_goes_on(tmp_path):
    """One receive batch: x's result (someone awaits it in execute()) and a client's task y,
    which goes to the worker in that round. The execute() caller submits z at once, before
    the round is carried out. Killed then, the journal must hold y as running on its worker
    (it was sent), not pending: else the restarted admin cancels it there and runs it again."""
    import asyncio

    from kit import frames

    from ceylon_net.dev.testing import wait_until
    from ceylon_net.edge import admin as admin_module
    from ceylon_net.edge.admin import Admin
    from ceylon_net.settings import AdminSettings
    from ceylon_net.wire import Hello, Kind

    class Sockets:  # what the receive loop reads
        busy = False

        def __init__(self) -> None:
            self.batches: asyncio.Queue = asyncio.Queue()

        async def recv_batch(self, limit: int) -> list:
            return await self.batches.get()

        def caught_up(self) -> bool:  # (a due timer waits for what came to be read)
            return self.batches.empty()

    class Out:  # what the admin sends: only assignments matter here
        def __init__(self) -> None:
            self.assigned: list = []

        def send(self, *a, **k) -> bool:
            return True

        def assign(self, peer, assignments) -> tuple[list, list]:
            self.assigned += [a.task.id for a in assignments]
            return [], []

        def publish(self, *a, **k) -> None:
            pass

    path = tmp_path / "j.db"
    settings = AdminSettings(port=0, prefetch=0, journal=str(path))

    async def run() -> None:
        admin = Admin(settings=settings)
        admin_module._resume(admin, Journal(path, settings.workspace))
        admin._sockets, admin._out = Sockets(), Out()
        st, peer = admin.state, b"w/1"
        admin._apply(st.receive(peer, frames(Kind.HELLO, Hello("w", "default", 10, 2, [], []),
                                              sender="w")))
        admin._apply(st.receive(peer, frames(Kind.HEARTBEAT,
                                              wire.Heartbeat([], True, 0, 0, []), sender="w")))

        async def program() -> None:
            await admin.execute(Task("x", "x"))
            admin.submit([Task("z", "next")])  # the program goes on at once

        user = asyncio.create_task(program())
        await wait_until(lambda: "x" in admin._out.assigned, 5, "x to be sent")
        recv = asyncio.create_task(admin._recv_loop())
        sub = wire.Submission({"tasks": [{"id": "y", "description": "y", "difficulty": 1}]},
                              wait=False)
        await admin._sockets.batches.put([  # (identity, frames, address), as read
            (peer, frames(Kind.RESULT, [TaskResult("x", "w", True, 0.001, attempt=1)],
                          sender="w"), ""),
            (b"client/1", frames(Kind.SUBMIT, sub), "")])
        await asyncio.wait_for(user, 5)
        await wait_until(lambda: "y" in admin._out.assigned, 5, "y to be sent")
        recv.cancel()
        admin.journal.db.close()  # killed now: y runs on w
        if admin._acks._timer is not None:
            admin._acks._timer.cancel()

    asyncio.run(run())
    again = AdminState(AdminSettings(port=0), now=0.0)
    resume(Journal(path, "default"), again, 0.0)
    y = again.board.records["y"]
    assert (y.status, y.worker, y.attempt) == (TaskStatus.RUNNING, "w", 1)


def test_a_failure_whose_error_says_lost_is_not_taken_for_a_dead_task_after_a_restart(tmp_path):
    from kit import JSim, noop

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.submit(noop("t"))
    w.finish("t", success=False, error="lost the connection to the database")
    before = sim.st.report()
    assert before.dead == [] and [(t.id, t.success) for t in before.tasks] == [("t", False)]
    after = sim.restart().st.report()
    assert (after.dead, after.tasks) == (before.dead, before.tasks)


def test_tasks_given_up_as_unassignable_stay_so_after_a_restart(tmp_path):
    from kit import JSim, noop

    sim = JSim(tmp_path / "j.db", unassignable_timeout=1.0)
    w = sim.join("w", skill=5)
    sim.submit(noop("easy"), noop("hard", difficulty=9))
    w.finish("easy")
    w.heartbeat()
    sim.tick(0.5)
    sim.now = 2.0
    w.heartbeat()
    sim.tick()
    before = sim.st.report()
    assert before.unassigned == ["hard"]  # ceylon-admin --tasks: exit 3
    after = sim.restart().st.report()
    assert (after.unassigned, after.cancelled) == (before.unassigned, before.cancelled)
    assert after.unassigned_why == before.unassigned_why == \
        {"hard": "needs skill >= 9; best connected is 5"}  # (why, as before the restart)


def _damaged(path):
    """A journal whose log pages are overwritten half way in (its first page intact)."""
    j = Journal(path, "default")
    for k in range(20):
        j.add_tasks((Task(f"{k}-{i}", "x" * 200), None) for i in range(200))
        j.commit()
    j.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 4096)
    return path


def test_a_journal_damaged_past_its_first_page_is_refused_untouched(tmp_path):
    import subprocess

    from ceylon_net.dev.testing import cli

    path = _damaged(tmp_path / "j.db")
    before = path.read_bytes()
    with pytest.raises(JournalError, match="corrupt"):
        Journal(path, "default")
    p = subprocess.run([*cli("ceylon-admin"), "--journal", str(path), "--port", "0", "--bind",
                        "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "corrupt" in p.stderr and "Traceback" not in p.stderr
    assert path.read_bytes() == before


def test_a_second_admin_on_a_journal_in_use_is_refused_and_the_first_runs_on(tmp_path):
    from conftest import run

    from ceylon_net.dev.testing import Cluster, cli, wait_until

    path = tmp_path / "state.db"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            first = await c.admin("--journal", str(path))
            await wait_until(lambda: "serving workspace" in first.stderr(), 20, "admin 1")
            second = await c.spawn("admin-2", [*cli("ceylon-admin"), "--journal", str(path),
                                               "--port", "0", "--pub-port", "0", "--bind",
                                               "127.0.0.1"])
            code2 = await second.wait(30)
            await c.worker("w", "--time-scale", "0")  # (a write: the first one's journal
            await wait_until(lambda: "joined from" in first.stderr(), 20, "the worker")
            alive = first.process.returncode is None
            first.signal(signal.SIGTERM)
            code1 = await first.wait(20)
            third = await c.admin("--journal", str(path), name="admin-3")  # (free again)
            await wait_until(lambda: "serving workspace" in third.stderr(), 20, "admin 3")
            return code2, second.stderr(), alive, code1, first.stderr()

    code2, err2, alive, code1, err1 = run(body())
    assert code2 == 2, err2
    assert f"journal {path} is in use by another ceylon-admin" in err2, err2
    assert "Traceback" not in err2
    assert alive and code1 == 0 and "database is locked" not in err1, err1


def _cancel_then_kill(tmp_path):
    """t runs on w; the user cancels it (w is asked); the admin is killed before w answers."""
    from kit import JSim, noop, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.submit(noop("t"))
    w.start("t")
    outcome, cmds = sim.st.cancel(["t"], "not wanted", sim.now)
    sim.carry(cmds)
    assert outcome["stopping"] == ["t"] and sends(cmds, Kind.CANCEL)
    return sim.restart(), w


def test_a_cancel_under_way_is_asked_again_of_a_worker_back_after_a_restart(tmp_path):
    from kit import sends

    from ceylon_net.wire import Kind

    sim, w = _cancel_then_kill(tmp_path)
    back = sim.worker("w", held=dict(w.held))  # the CANCEL never reached it
    assert sends(back.hello(), Kind.CANCEL, back.peer) == [wire.Cancel([["t", 1]],
                                                                       "not wanted")]


def test_a_cancel_under_way_is_not_undone_by_a_restart_when_its_worker_is_gone(tmp_path):
    sim, _ = _cancel_then_kill(tmp_path)
    other = sim.join("other")
    sim.now = 7.0  # w never came back: its tasks are taken back as orphans
    other.heartbeat()
    sim.tick()
    assert "t" not in other.held
    assert sim.finished()["t"].status is TaskStatus.CANCELLED


def test_losses_before_a_restart_still_count_toward_max_attempts(tmp_path):
    from kit import JSim, noop

    sim = JSim(tmp_path / "j.db", max_attempts=2)
    w1 = sim.join("w1")
    sim.submit(noop("poison"))
    w1.start("poison")
    sim.tick(at=5.0)  # w1 silent: lost with the task (1 of 2)
    w2 = sim.join("w2")
    w2.start("poison")
    sim = sim.restart()  # and w2 dies with it meanwhile
    sim.tick(at=7.0)
    assert sim.finished()["poison"].status is TaskStatus.FAILED  # lost twice: dead


def test_a_version_2_journal_is_read_and_made_the_current_version_when_written(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path, "default")
    j.db.execute("BEGIN")
    j.db.execute("INSERT INTO log (kind, rows) VALUES ('put', ?)",
                 (wire.packb([[wire.to_wire(Task("t", "old")), None, "running", 1, "w", None,
                               None]]),))  # a row as version 2 wrote it
    j.db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    j.db.execute("DELETE FROM meta WHERE key='run'")  # versions before 4 had no batches
    j.db.execute("DROP TABLE batches")
    j.db.execute("COMMIT")
    j.close()
    def label() -> tuple[str, bool, bool]:
        with sqlite3.connect(path) as db:
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'")
            run = db.execute("SELECT value FROM meta WHERE key='run'").fetchone()
            batches = db.execute("SELECT 1 FROM sqlite_master WHERE name='batches'").fetchone()
            return version.fetchone()[0], run is not None, batches is not None

    again = Journal(path, "default")
    [t] = again.tasks()
    assert (t.task.id, t.status, t.worker, t.losses, t.stopping) == (
        "t", TaskStatus.RUNNING, "w", 0, None)
    assert again.batches() == []
    # Read, it is still the file its ceylon_net wrote (refused at start(), it stays so);
    # with our first row, it is ours.
    assert label() == ("2", False, False)
    again.add_tasks([(Task("u", "new"), None)])
    again.commit()
    assert label() == (str(SCHEMA_VERSION), True, True)
    run = again.run
    again.close()
    assert Journal(path, "default").run == run  # the run keeps its name


def test_tasks_submitted_before_start_against_a_journal_holding_a_run_are_refused(tmp_path):
    """The same program run again after a crash: it submits, then starts on its journal.
    Folding both in would submit its tasks twice (and undo what finished): refused, with
    what to do instead, and nothing started."""
    import asyncio

    from kit import JSim, noop

    from ceylon_net.edge.admin import Admin
    from ceylon_net.settings import AdminSettings

    path = tmp_path / "j.db"
    sim = JSim(path)
    w = sim.join("w")
    sim.submit(noop("a"), noop("b"))
    w.finish("a")
    sim.journal.close()

    admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0, journal=str(path)))
    admin.submit([noop("a"), noop("b")])
    with pytest.raises(JournalError, match=r"2 task\(s\) were submitted before start\(\)"):
        asyncio.run(admin.start())
    assert admin.journal is None and admin._sockets is None
    again = AdminState(AdminSettings(port=0), now=0.0)
    resume(Journal(path, "default"), again, 0.0)  # the journal as it was
    assert again.board.records["a"].status is TaskStatus.COMPLETED


# ---- client batches (ceylon-submit) across a restart

CLIENT = b"client-1"


def _batch(sim, *ids, sequential=False, wait=True):
    """A client's batch of no-op tasks; its Submitted answer."""
    from kit import frames, sends

    from ceylon_net.wire import Kind

    doc = {"tasks": [{"id": i, "description": "x", "difficulty": 1} for i in ids]}
    cmds = sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, wait, sequential)))
    (submitted,) = sends(cmds, Kind.SUBMIT, CLIENT)
    return submitted


def _watch_batches(sim, *pairs, client=CLIENT):
    from kit import frames

    from ceylon_net.wire import Kind

    return sim.receive(client, frames(Kind.WATCH, wire.Watch([], [], [list(p) for p in pairs])))


def test_a_waited_batch_is_kept_for_its_client_past_one_watch_lost_with_a_second_kill(
        tmp_path):
    """A client asks for its batch as the admin falls silent, then REWATCH s later. Its
    first WATCH reached an admin killed again before it answered (a chaos trial: two kills
    in a row), and the admin restarted after kept the finished batch for the client only 2 x
    heartbeat x liveness (6 s): with --keep-finished 0 it forgot it, and the client's next
    WATCH, 10 s on, heard "the admin forgot batch 1" (ceylon-submit --wait, exit 4)."""
    from kit import JSim, sends

    from ceylon_net.settings import REWATCH, WATCHDOG_TURN
    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w = sim.join("w")
    submitted = _batch(sim, "t")
    w.finish_all()
    sim = sim.restart()  # (the first kill; the second admin took the WATCH and was killed)
    sim = sim.restart()
    late = REWATCH + WATCHDOG_TURN  # (the client's next WATCH, at the latest)
    for step in range(int(late * 2)):
        sim.tick(at=step / 2)
    (report,) = sends(_watch_batches(sim, (submitted.batch, submitted.run)), Kind.REPORT,
                      CLIENT)
    assert report.error is None, report.error
    assert [t["success"] for t in report.report["tasks"]] == [True]
    for step in range(int(late * 2), int(late * 2) + 6):  # (claimed: forgotten at once)
        sim.tick(at=step / 2)
    assert sim.st.batches.forgot(submitted.batch)


def test_a_submission_sent_again_is_answered_as_the_first_also_after_a_restart(tmp_path):
    """A client's SUBMIT whose answer it did not hear (a slow admin, or a restart) goes again
    under its name (Submission.sid): answered with the batch it became, nothing taken twice
    (before: refused as a duplicate, which failed the futures of tasks that ran); and each
    DONE of its tasks names it, so that a client tells them from an older task's of a key."""
    from kit import JSim, frames, sends

    from ceylon_net.wire import Kind

    doc = {"tasks": [{"id": i, "description": "x", "difficulty": 1} for i in ("a", "b")]}

    def submit(sim):
        cmds = sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(
            doc, wait=False, follow=True, sid=77)))
        return (sends(cmds, Kind.SUBMIT, CLIENT), sends(cmds, Kind.REJECT, CLIENT),
                [(d.task_id, d.status, d.sid) for d in sends(cmds, Kind.DONE, CLIENT)])

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    (first,), _, _ = submit(sim)
    (again,), refused, _ = submit(sim)
    assert (again.batch, again.tasks, refused) == (first.batch, 2, [])
    cmds = []
    for _ in range(4):
        cmds += w.finish_all()
    assert sorted((d.task_id, d.sid) for d in sends(cmds, Kind.DONE, CLIENT)) == \
        [("a", 77), ("b", 77)]
    sim = sim.restart()
    (after,), refused, told = submit(sim)
    assert (after.batch, refused) == (first.batch, [])
    assert sorted(told) == [("a", "completed", 77), ("b", "completed", 77)]
    assert sorted(sim.st.board.records) == ["a", "b"]


@pytest.mark.parametrize("back", [False, True], ids=["worker never back", "worker back"])
def test_a_task_running_past_a_cancel_rest_goal_is_not_run_again_after_a_restart(
        tmp_path, back):
    """cancel_rest: a task that started as the goal was met runs on, and should it come back
    to the queue (its worker lost) it ends cancelled, not run again from the start. Across
    a restart too: the goal, met again as the journal's results are replayed, asks it back
    from its worker, which answers it started (it runs on there, to its result), or never
    comes back (it ends cancelled, not given to the worker that came)."""
    from kit import JSim, assigned, one_of_two_group, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    _, w1, w2 = one_of_two_group(sim)
    w1.start("t0")
    w2.start("t1")
    w2.finish("t1")  # the goal is met: t0 runs on
    sim = sim.restart()
    w3, given = sim.join("w3"), {}
    if back:
        w1.sim = sim
        assert sends(w1.hello(), Kind.RELEASE, w1.peer) == [wire.Release([["t0", 1]])]
        w1.finish("t0")
    for t in range(1, 8):  # (w1 lost after 3 s without a word, when it did not come back)
        sim.now = float(t)
        w3.heartbeat()
        given.update(assigned(sim.tick(at=t + 0.5)))
    rec = sim.st.board.records["t0"]
    assert given == {}
    assert (rec.status, rec.reason) == ((TaskStatus.COMPLETED, None) if back else
                                        (TaskStatus.CANCELLED, "goal 'one' achieved"))


def test_a_sequential_batch_still_waits_for_the_one_before_after_a_restart(tmp_path):
    from kit import JSim, assigned

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w", capacity=4)
    first = _batch(sim, 1, 2)
    second = _batch(sim, 3, 4, sequential=True)
    assert (first.batch, second.batch) == (1, 2)
    w.heartbeat()  # it has its first task: off probation
    assert sorted(w.held) == [1, 2]  # 3 and 4 wait for batch 1
    w.finish(1)
    sim = sim.restart()
    back = sim.worker("w", capacity=4, held=dict(w.held))
    assert assigned(back.hello()) == {}  # 2 still runs on it: 3 and 4 still wait
    cmds = back.finish(2)
    assert sorted(assigned(cmds)["w"]) == [3, 4]  # batch 1 done: batch 2 starts
    # Numbering goes on after the batches the journal kept.
    assert _batch(sim, 5).batch == 3


def test_a_batch_waited_for_is_picked_up_again_after_a_restart_and_reported(tmp_path):
    from kit import JSim, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w", capacity=2)
    submitted = _batch(sim, 1, 2)
    assert submitted.run == sim.journal.run != ""
    w.heartbeat()
    assert sorted(w.held) == [1, 2]
    w.finish(1)
    sim = sim.restart()
    back = sim.worker("w", capacity=2, held=dict(w.held))
    back.hello()
    assert sends(sim.tick(at=1.0), Kind.PROGRESS) == []  # nobody waits for it yet
    again = b"client-1-again"  # the same client, heard from anew
    assert _watch_batches(sim, (1, submitted.run), client=again) == []
    assert sends(sim.tick(at=2.0), Kind.PROGRESS, again) == [wire.BatchProgress(1, 1, 2, 1)]
    (report,) = sends(back.finish(2), Kind.REPORT, again)
    assert report.error is None and report.report["success_rate"] == 1.0
    assert sorted(t["id"] for t in report.report["tasks"]) == [1, 2]
    # Asked again once done (its report was lost on the way, say): at once.
    (report,) = sends(_watch_batches(sim, (1, submitted.run)), Kind.REPORT, CLIENT)
    assert report.report["success_rate"] == 1.0


def test_a_batch_of_another_run_is_said_to_be_unknown_not_taken_for_another(tmp_path):
    from kit import JSim, Sim, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    sim.join("w")
    submitted = _batch(sim, 1)
    fresh = Sim()  # restarted without the journal: its own batch 1 is another one
    fresh.join("w")
    _batch(fresh, 7)
    (report,) = sends(_watch_batches(fresh, (1, submitted.run)), Kind.REPORT, CLIENT)
    assert report.batch == 1 and report.report == {}
    assert "restarted without its journal" in report.error


def test_watches_queued_while_the_admin_was_down_get_one_report_a_heartbeat(tmp_path):
    from kit import JSim, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w", capacity=2)
    submitted = _batch(sim, 1, 2)
    w.heartbeat()
    w.finish(1)
    w.finish(2)
    sim = sim.restart()
    # The client asked once a second while the admin was down: they all arrive together.
    burst = [_watch_batches(sim, (1, submitted.run), (1, submitted.run)) for _ in range(8)]
    assert len([r for cmds in burst for r in sends(cmds, Kind.REPORT)]) == 1
    sim.now += 1.0  # a heartbeat later (its report was lost, say): again
    assert len(sends(_watch_batches(sim, (1, submitted.run)), Kind.REPORT)) == 1


def test_a_restored_batch_someone_waited_for_keeps_the_admin_busy_until_claimed(tmp_path):
    """An admin run with --tasks ends when it is idle: a batch that finished as its workers
    came back, before its client WATCHed it again, must not end it without that report."""
    from kit import JSim, sends

    from ceylon_net.settings import CLIENTS_COME_BACK_AT_LEAST
    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w", capacity=2)
    submitted = _batch(sim, 1, 2)
    w.heartbeat()
    w.finish(1)
    sim = sim.restart()
    back = sim.worker("w", capacity=2, held=dict(w.held))
    back.hello()
    back.finish(2)
    assert not sim.st.batches.open and not sim.st.idle
    (report,) = sends(_watch_batches(sim, (1, submitted.run)), Kind.REPORT, CLIENT)
    assert report.report["success_rate"] == 1.0 and sim.st.idle
    # Nobody comes back for it: the admin waits as long as a client may take to ask again
    # (one ask lost), no longer.
    sim = sim.restart()
    assert not sim.st.idle
    sim.tick(at=CLIENTS_COME_BACK_AT_LEAST - 1)
    assert not sim.st.idle
    sim.tick(at=CLIENTS_COME_BACK_AT_LEAST)
    assert sim.st.idle


def test_workers_not_told_the_run_was_over_keep_a_restarted_admin_busy_until_told(tmp_path):
    """An admin killed as its run ended (its last result journaled, its END not sent: a
    chaos trial's finding, 3 runs in 9) came back on its journal, found the run over and
    exited at once: its workers, registering again, found nobody and exited 1 after their
    --connect-timeout. Those it had are waited for, as long as for a lost worker, and told;
    after a stop that told them, or with a worker that had left, nobody is."""
    from kit import JSim, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.join("left").say(Kind.BYE, wire.End("worker stopping"))
    sim.submit(Task(1, "x"))
    w.finish(1)
    assert sim.st.idle
    sim = sim.restart()  # (a kill: nothing more written)
    assert sim.st.owed_end == {"w"} and not sim.st.idle
    sim.tick(at=5.0)
    assert not sim.st.idle
    back = sim.worker("w")
    back.hello()
    assert sim.st.idle  # (a --tasks admin ends now: the END goes to it)
    assert sends(sim.carry(sim.st.close("run over", durable=True)), Kind.END, back.peer)
    sim = sim.restart()
    assert sim.st.idle  # told: a restart reports at once
    # Killed again before telling: nobody comes back, the admin waits no longer than for a
    # lost worker (2 x heartbeat x liveness).
    sim.join("w")
    sim = sim.restart()
    assert not sim.st.idle
    sim.tick(at=6.0)
    assert sim.st.idle


def test_a_restarted_admin_stopped_before_its_owed_workers_came_back_still_owes_them(tmp_path):
    """The close's END goes to the workers registered then: one still awaited was not told,
    and the journal must not say it was (a review's finding: a third admin owed nobody, and
    that worker, back too late, exited 1 after its --connect-timeout)."""
    from kit import JSim

    sim = JSim(tmp_path / "j.db")
    w1, w2 = sim.join("w1"), sim.join("w2")
    sim.submit(Task(1, "x"))
    (holder,) = [w for w in (w1, w2) if w.held]
    holder.finish(1)
    sim = sim.restart()  # killed before its END
    assert sim.st.owed_end == {"w1", "w2"}
    sim.join("w1")
    sim.carry(sim.st.close("admin stopped", durable=True))  # 'w1' told; 'w2' not back yet
    sim = sim.restart()
    assert "w2" in sim.st.owed_end  # (w1 too: waited for no longer than the window)


def test_a_restarted_admin_whose_journal_forgot_every_task_still_owes_the_workers_the_end(
        tmp_path):
    """Every task forgotten (--keep-finished 0: client batches, Admin.execute()), the journal
    held a run all the same (a review's finding: the restarted admin owed nobody)."""
    from kit import JSim

    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w = sim.join("w")
    sim.submit(Task(1, "x"), forgettable=True)
    w.finish(1)
    w.heartbeat()  # (the next round forgets it)
    assert sim.st.board.forgotten.tasks == 1 and not sim.st.board.records
    sim = sim.restart()  # (a kill: nothing more written)
    assert sim.st.owed_end == {"w"}
    sim.tick(at=6.0)  # (2 x heartbeat x liveness)
    assert sim.st.owed_end == set()


def test_tasks_only_a_worker_of_the_last_admin_process_can_take_wait_for_it_after_a_restart(
        tmp_path):
    """The admin and its workers restarted (a host rebooted): the GPU worker, slower to come
    back than the admin's window for it, had its task given up as unassignable 10 s after
    the other worker was back (a review's suspicion), where a lost worker is waited for. The
    journal keeps what the workers that may come back can do: one not back in the window is
    lost from then on, and waited for up to --lost-wait."""
    from kit import JSim, ticked

    sim = JSim(tmp_path / "j.db", unassignable_timeout=5)
    sim.join("cpu")
    gpu = sim.join("gpu", role="gpu", handlers=["render"])
    sim.submit(Task("frame", "x", 1, required_role="gpu", handler="render"))
    assert "frame" in gpu.held
    sim = sim.restart()  # (a kill: both workers' processes gone with the host)
    said = ticked(sim, [sim.join("cpu")], 39.0)
    assert sim.st.unassigned == {} and any(
        "waiting for 'gpu' (lost) to come back" in m for m in said), said
    back = sim.worker("gpu", role="gpu", handlers=["render"])
    back.hello()
    back.finish_all()
    assert "frame" in sim.finished()


def test_a_worker_gone_across_a_restart_is_charged_no_more_starts_than_its_slots(tmp_path):
    """Which of its tasks had started is not journaled; its slots are: of the three it held
    (one slot, two sent ahead), one counts toward --max-attempts, two go back unharmed."""
    from kit import JSim, logs, noop

    sim = JSim(tmp_path / "j.db", prefetch=2, max_attempts=1)
    w = sim.join("w", capacity=1)
    sim.submit(*[noop(i) for i in range(5)])
    w.heartbeat()
    assert list(w.held) == [0, 1, 2]

    again = sim.restart()  # and the worker never comes back
    cmds = again.tick(7.0)  # 2 x heartbeat x liveness later
    assert "worker 'w' did not come back after the admin restarted; 2 task(s) back in the " \
           "queue, 1 ended with it (lost too often, or being cancelled)" in logs(cmds)
    assert again.st.report().dead == [0]
    assert sorted(again.st.board.scheduler._where) == [1, 2, 3, 4]


def test_a_worker_awaited_after_a_restart_keeps_its_slots_across_a_second_restart(tmp_path):
    """A newcomer registering while a worker from before the restart is still awaited
    rewrites the journaled slots: the awaited one's must stay in them, or a second crash
    charges it every task it held (three dead instead of one)."""
    from kit import JSim, logs, noop

    sim = JSim(tmp_path / "j.db", prefetch=2, max_attempts=1)
    w = sim.join("w", capacity=1)
    sim.submit(*[noop(i) for i in range(5)])
    w.heartbeat()
    assert list(w.held) == [0, 1, 2]

    again = sim.restart()
    again.join("v", capacity=1)  # registers: the journal's slots are written again
    third = again.restart()  # before 'w' was given up
    cmds = third.tick(7.0)
    assert "worker 'w' did not come back after the admin restarted; 2 task(s) back in the " \
           "queue, 1 ended with it (lost too often, or being cancelled)" in logs(cmds)
    assert third.st.report().dead == [0, 3]  # each worker's first: within its one slot


def test_the_journal_keeps_a_workers_concurrency_while_threads_hold_some_of_its_slots(
        tmp_path):
    """A worker with a slot held by a thread runs fewer at once for now: the journal must
    keep its --concurrency, what may have started there when a crash came (else a task
    that had started, and killed it, costs no attempt)."""
    from kit import JSim

    sim = JSim(tmp_path / "j.db", prefetch=2)
    w = sim.join("w", capacity=2)
    w.stuck = 1
    w.heartbeat()
    assert sim.st.board.scheduler.workers["w"].slots == 1
    sim.join("v", capacity=1)  # registers: the journal's slots are written again
    assert sim.journal.slots() == {"w": 2, "v": 1}


def test_results_the_journal_holds_and_the_results_file_lacks_are_appended_on_restart(
        tmp_path):
    """Killed after a round was committed to the journal and before its --results lines
    were written (one cut short): the restarted admin writes what is missing, once, and
    drops the broken line. A line of another run with the same task id does not count."""
    import asyncio
    import json

    from kit import JSim, noop

    from ceylon_net.edge.admin import Admin

    path, results = tmp_path / "j.db", tmp_path / "results.jsonl"
    sim = JSim(path, max_attempts=1)
    w = sim.join("w", capacity=4)
    sim.submit(*[noop(i) for i in range(4)])
    w.heartbeat()
    for i in (0, 1, 2):
        w.finish(i)
    run = sim.journal.run
    sim.journal.db.close()  # killed: of the three results, one line was written, one half
    results.write_text(json.dumps({"task_id": 1, "run": "an-earlier-run"}) + "\n"
                       + json.dumps({"task_id": 0, "run": run}) + "\n"
                       + '{"task_id": 2, "wor')

    async def restart() -> None:
        admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0, journal=str(path),
                                             results_file=str(results)))
        await admin.start()
        await admin.close()

    asyncio.run(restart())
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["task_id"], r["run"]) for r in rows] == [
        (1, "an-earlier-run"), (0, run), (1, run), (2, run)]
    assert all(r["worker"] == "w" and r["success"] for r in rows[2:])


def test_an_admin_that_failed_to_start_lets_its_journal_go(tmp_path):
    """A busy --metrics-port after the journal was taken: the lock stayed with the failed
    admin for the life of the process, and a new Admin on the file was refused."""
    import asyncio
    import socket

    from conftest import run

    from ceylon_net.edge.admin import Admin
    from ceylon_net.errors import ConfigError

    path = tmp_path / "state.db"

    async def body():
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            settings = AdminSettings(bind="127.0.0.1", port=0, journal=str(path),
                                     metrics_port=busy.getsockname()[1])
            failed = Admin(settings=settings)
            with pytest.raises(ConfigError, match="metrics"):
                await failed.start()
        with pytest.raises(ConfigError, match="make a new one"):
            await failed.start()  # (it holds the journal's state: it may not take it again)
        second = Admin(settings=AdminSettings(bind="127.0.0.1", port=0, journal=str(path)))
        await second.start()
        await asyncio.wait_for(second.close("test over"), 10)
        return True

    assert run(body())


def test_a_loss_taken_back_is_journaled(tmp_path):
    """A worker called lost came back still holding its task (which had gone to another):
    the loss was taken back in the board only, and an admin restarted later counted it
    again (with max_attempts 2 the task was dead once the other worker did not come back)."""
    from kit import JSim, taken_over

    sim = JSim(tmp_path / "j.db", max_attempts=2)
    w1, _ = taken_over(sim)
    sim.worker("w1", held=dict(w1.held)).hello()  # back: the loss taken back
    assert sim.st.board.records["t"].losses == 0
    assert sim.restart().st.board.records["t"].losses == 0


def test_an_admin_restarted_between_a_workers_loss_and_its_return_takes_the_loss_back(tmp_path):
    """What was lost with whom is journaled: w1, called lost while running "t" (which went
    nowhere else: no other worker), comes back after the admin restarted; the loss is taken
    back and "t" stays with w1, running, as without the restart. Before, the restarted admin
    did not know the loss was w1's: with max_attempts 2, a second pause made "t" dead."""
    from kit import JSim, noop

    sim = JSim(tmp_path / "j.db", max_attempts=2)
    sim.submit(noop("t"))
    w1 = sim.join("w1")
    w1.start("t")
    sim.tick(at=3.5)  # w1 lost
    assert sim.st.board.records["t"].losses == 1
    sim = sim.restart()
    assert sim.st.board.records["t"].losses == 1
    back = sim.worker("w1", held=dict(w1.held))
    back.hello()
    rec = sim.st.board.records["t"]
    assert (rec.losses, rec.state, rec.worker, rec.attempt) == (0, TaskState.RUNNING, "w1", 1)
    back.finish("t")
    assert sim.finished()["t"].result.worker == "w1"
    assert sim.restart().st.board.records["t"].status == TaskStatus.COMPLETED


def test_a_goal_in_python_code_is_said_to_be_lost_to_a_restart_when_taken_and_after_it(
        tmp_path):
    """A journal keeps a goal of kind at_least, fraction or all; one that is a callable (the
    seed's way) came back as no goal, without a word, and cancel_rest never fired."""
    from kit import JSim, logs

    def three(groups, completed):
        return len(completed) >= 3

    sim = JSim(tmp_path / "j.db")
    g = TaskManager.create_task_group(
        "G", "", [TaskMessage(f"g{i}", f"g{i}", "", 0.0) for i in range(4)],
        goal=TaskGroupGoal("three", "", three, "yes", "no"))
    cmds = sim.carry(sim.st.submit(groups=[g], now=sim.now))
    said = "group 'G': its goal 'three' is Python code, which the journal cannot keep"
    assert any(m.startswith(said + ": should the admin restart") for m in logs(cmds, "WARNING"))
    sim = sim.restart()
    assert sim.st.task_manager.task_groups[g.id].goal is None
    assert any(m.startswith(said + ": after this restart the group runs on without it")
               for m in logs(sim.every + sim.st.out.take(), "WARNING")), logs(sim.every)


def test_a_task_given_back_for_a_worker_back_is_journaled_as_running_there(tmp_path):
    """w, called lost while running "t", is back (a new connection) while "t" waits unstarted
    at the worker it went to meanwhile; that worker gives it back: "t" is w's again, at its
    attempt, and an admin restarted then knows it so (w's result is taken, not stopped as
    another attempt's)."""
    from kit import JSim, given_elsewhere

    sim = JSim(tmp_path / "j.db")
    w, other = given_elsewhere(sim, "w", "other")
    back = sim.worker("w", held=dict(w.held))
    back.hello()
    other.give_back("t")
    sim = sim.restart()
    rec = sim.st.board.records["t"]
    assert (rec.state, rec.worker, rec.attempt) == (TaskState.RUNNING, "w", 1)
    back = sim.worker("w", held={"t": 1})
    back.hello()
    back.finish("t")
    assert sim.finished()["t"].result.worker == "w"


def test_a_claim_outlives_a_restart(tmp_path):
    """w back claims "t" (other has not started it); the admin restarts; both come back,
    other having given "t" back before registering (as a worker does with what it had not
    started): "t" runs on at w, not stopped there and run again from the start."""
    from kit import JSim, given_elsewhere, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w, _other = given_elsewhere(sim, "w", "other")
    back = sim.worker("w", held=dict(w.held))
    back.hello()
    sim = sim.restart()
    back = sim.worker("w", held={"t": 1})
    cmds = back.hello()
    assert not sends(cmds, Kind.CANCEL, back.peer), sends(cmds, Kind.CANCEL, back.peer)


def test_a_claimant_s_result_after_a_restart_is_taken(tmp_path):
    """w back claims "t"; the admin restarts; w's copy ends with a success meanwhile, handed
    over in its HELLO: the task's result (as before the restart), not thrown away."""
    from kit import JSim, given_elsewhere

    sim = JSim(tmp_path / "j.db")
    w, _other = given_elsewhere(sim, "w", "other")
    back = sim.worker("w", held=dict(w.held))
    back.hello()
    sim = sim.restart()
    again = sim.worker("w", unacked={("t", 1): TaskResult("t", "w", True, 0.5, attempt=1)})
    again.hello()
    f = sim.finished().get("t")
    assert f is not None and f.result.worker == "w", sim.st.board.records["t"]


def test_a_claim_outlives_a_restart_after_a_hello_again(tmp_path):
    """As above, with a HELLO again on the same connection before the restart (it forgot the
    attempt lost with the worker: a third reviewer's finding)."""
    from kit import JSim, given_elsewhere, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w, _ = given_elsewhere(sim, "w", "other")
    back = sim.worker("w", held=dict(w.held))
    back.hello()
    back.hello()
    sim = sim.restart()
    cmds = sim.worker("w", held={"t": 1}).hello()
    assert not sends(cmds, Kind.CANCEL)


def test_a_claim_settled_by_the_other_s_start_is_journaled(tmp_path):
    """The other started "t": the copy at w is cancelled and the claim settled. After a
    restart, w back still holding "t" (the CANCEL did not reach it) is told to stop it
    again, and the other is not asked to give back a task it started (the settled claim
    stayed in the journal: a third reviewer's finding)."""
    from kit import JSim, given_elsewhere, sends

    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w, other = given_elsewhere(sim, "w", "other")
    sim.worker("w", held=dict(w.held)).hello()
    other.start("t")
    sim = sim.restart()
    sim.worker("other", held={"t": 2}).hello()
    back = sim.worker("w", held={"t": 1})
    cmds = back.hello()
    assert not sends(cmds, Kind.RELEASE)
    assert sends(cmds, Kind.CANCEL, back.peer)


def test_the_changes_of_a_round_are_written_as_update_writes_them(tmp_path, monkeypatch):
    """record_changes makes its rows in one pass (every task goes through it twice), not
    through Journal.update: the same rows, status values and results in their wire form (a
    result among them)."""
    from kit import JSim, noop

    from ceylon_net.core.board import STATUS_OF
    from ceylon_net.edge import journal as journal_module

    sim = JSim(tmp_path / "j.db")
    w1, w2 = sim.join("w1"), sim.join("w2")
    sim.submit(noop("a"), noop("b"), noop("c"))
    w1.finish(next(iter(w1.held)))
    board, expected, written = sim.st.board, [], []
    assert board.dirty is not None
    board.dirty.update(board.records)  # (every task, as a round that changed them all would)
    monkeypatch.setattr(sim.journal, "set_rows", expected.append)
    sim.journal.update([(tid, STATUS_OF[r.state], r.attempt, r.worker, r.result, r.reason,
                         r.losses, r.stopping, board.lost_with(tid), r.base)
                        for tid in board.dirty for r in (board.records[tid],)])
    monkeypatch.setattr(sim.journal, "set_rows", written.append)
    journal_module.record_changes(sim.journal, board)
    assert written == expected and len(written[0]) == 3, written
    assert any(row[4] is not None for row in written[0])  # (a result among them)
    del w2


def test_a_round_s_results_written_first_are_not_written_again(tmp_path):
    """An execute() caller goes on before its round is carried out, and what it does next
    may have the round's tasks forgotten (--keep-finished): the round's --results lines are
    written first, once."""
    import json

    from ceylon_net.core.commands import Finished
    from ceylon_net.core.tasks import TaskResult, TaskStatus
    from ceylon_net.edge.journal import ResultsFile

    out, board = ResultsFile(str(tmp_path / "results.jsonl")), TaskBoard()
    ended = [Finished(i, TaskStatus.COMPLETED, TaskResult(i, "w", True, 0.01)) for i in (1, 2)]
    out.first(ended[:1], board)
    assert [json.loads(x)["task_id"] for x in (tmp_path / "results.jsonl").read_text()
            .splitlines()] == [1]  # on disk before the round goes on
    for f in ended:  # the round carried out
        out.finished(f, board)
    out.flush()
    out.out.close()
    assert [json.loads(x)["task_id"] for x in (tmp_path / "results.jsonl").read_text()
            .splitlines()] == [1, 2]


def test_a_task_given_up_as_lost_too_often_has_its_results_line_as_after_a_restart(tmp_path):
    """--results says it appends every task result: a task lost with its workers
    --max-attempts times is a failure in the report (and got its line from a restart on the
    journal), but had no line as it ended. A cancelled one has none (it has no result)."""
    import json

    from kit import Sim, noop, of

    from ceylon_net.core.commands import Finished
    from ceylon_net.edge.journal import ResultsFile

    sim = Sim(max_attempts=2)
    sim.submit(noop("poison"), noop("cancelled"))
    sim.cancel("cancelled")
    for i, at in enumerate((0.0, 10.0)):
        sim.now = at
        sim.join(f"w{i}")
        sim.tick(at=at + 3.5)
    out = ResultsFile(str(tmp_path / "results.jsonl"))
    for f in of(sim.every, Finished):
        out.finished(f, sim.st.board)
    out.close()
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(x["task_id"], x["success"], x["worker"], x["attempt"]) for x in lines] == \
        [("poison", False, "w1", 2)]
    assert lines[0]["error"] == ("lost 2 times, last with worker 'w1' (lost: silent for 3.5 "
                                 "s); giving up")


def test_a_watch_of_another_runs_batch_says_which_run_the_admin_has():
    """A new user's trial: `ceylon-submit --watch 3@0000000000000000` at an admin that never
    restarted was told it had restarted without its journal; and a run named by a 63-bit
    epoch printed 15 hex digits, where the README shows 16."""
    from kit import Sim, sends

    from ceylon_net.wire import Kind

    sim = Sim()  # (its epoch: 7)
    submitted = _batch(sim, 1)
    assert submitted.run == "0000000000000007"
    (report,) = sends(_watch_batches(sim, (submitted.batch, "e47c12fd67fe3be")), Kind.REPORT,
                      CLIENT)
    assert report.error == ("the admin has no such batch: its run is 0000000000000007, not "
                            "e47c12fd67fe3be (a wrong run id, or the admin restarted without "
                            "its journal, or with another one, and the batch's tasks are gone "
                            "with it)")


def test_the_log_of_a_serving_admin_that_forgets_is_folded_as_it_serves(tmp_path, monkeypatch):
    """The log kept every task's rows until a restart folded it: 12.5 MB for 5,685 tasks of
    which the admin held 60 (a soak trial's finding). Once it has grown enough it is folded
    into a snapshot of what the admin holds, and a restart finds the same."""
    from kit import JSim

    from ceylon_net.edge import journal as journal_module

    monkeypatch.setattr(journal_module, "COMPACT_AT", 20_000)
    sim = JSim(tmp_path / "j.db", keep_finished=25)
    w = sim.join("w", capacity=4)
    sizes = []
    for b in range(60):
        _batch(sim, *range(b * 10, b * 10 + 10), wait=False)
        for _ in range(5):
            w.finish_all()
            w.heartbeat()
        sizes.append(sim.journal.db.execute("SELECT SUM(LENGTH(rows)) FROM log").fetchone()[0])
    assert max(sizes) < 30_000, sizes  # (unfolded: 70 KB by the end, and growing)
    held = {t: (r.state, r.attempt, r.result) for t, r in sim.st.board.records.items()}
    assert held and len(held) < 40  # (the latest batches; the others forgotten)
    again = sim.restart()
    assert {t: (r.state, r.attempt, r.result) for t, r in again.st.board.records.items()} == held


def test_the_journal_s_wal_file_shrinks_back_after_a_fold(tmp_path, monkeypatch):
    """SQLite's WAL file grows to hold what was written since its last checkpoint, a fold's
    snapshot of every task held among it, and kept that size for as long as the admin served
    (a fold of 100 MB left a 100 MB file beside the journal). Once checkpointed, it goes back
    to WAL_LIMIT."""
    from kit import JSim, frames

    from ceylon_net.edge import journal as journal_module
    from ceylon_net.wire import Kind

    monkeypatch.setattr(journal_module, "COMPACT_AT", 200_000)
    monkeypatch.setattr(journal_module, "WAL_LIMIT", 256 << 10, raising=False)
    sim = JSim(tmp_path / "j.db", keep_finished=100_000)  # (holds them all)
    w = sim.join("w", capacity=4)
    wal = tmp_path / "j.db-wal"
    folds, sizes = 0, []
    for b in range(80):
        before = sim.journal.snapshot_bytes
        doc = {"tasks": [{"id": i, "description": "x" * 2000, "difficulty": 1}
                         for i in range(b * 10, b * 10 + 10)]}
        sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False, False)))
        w.finish_all()
        w.heartbeat()
        folds += sim.journal.snapshot_bytes != before
        sizes.append(wal.stat().st_size)
    peak = sizes.index(max(sizes))
    assert folds >= 2 and max(sizes) > 2 << 20, (folds, max(sizes))
    assert min(sizes[peak:]) <= 256 << 10, sizes[peak:]  # (it never shrank: 2.7 MB on)


@pytest.mark.parametrize("table, row", [
    ("meta (key TEXT PRIMARY KEY, value TEXT)", ("schema_version", "2.1.0")),
    ("meta (name TEXT, value TEXT)", ("schema_version", "3"))])
def test_another_programs_database_with_a_meta_table_is_refused_untouched(tmp_path, table, row):
    """A common table name: its values are not ours (a version "2.1.0" made a ValueError's
    traceback), or its columns are not (it was said to be corrupt)."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE {table}")
        db.execute("INSERT INTO meta VALUES (?, ?)", row)
        db.commit()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="is not a ceylon_net journal"):
        Journal(path, "default")
    assert path.read_bytes() == before


def test_a_round_the_journal_cannot_write_stops_the_admin_saying_so_to_the_caller(tmp_path):
    """Python's side of tests/test_journal_full_disk.py: the call whose round could not be
    written raises saying what to do, the admin stops (later calls hear why), and close()
    works; the journal holds what came before, for the same admin to start on."""
    from conftest import run

    from ceylon_net import Admin
    from ceylon_net.edge.journal import JournalWriteError
    from ceylon_net.errors import Crashed

    path = tmp_path / "state.db"

    def admin() -> Admin:
        return Admin(settings=AdminSettings(bind="127.0.0.1", port=0, journal=str(path)))

    async def body():
        first = admin()
        await first.start()
        first.submit([Task("before", "small")])
        pages = first.journal.db.execute("PRAGMA page_count").fetchone()[0]
        first.journal.db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
        with pytest.raises(JournalWriteError) as raised:
            await first.execute(Task("big", "x" * 200_000))
        with pytest.raises(Crashed) as later:
            first.submit([Task("later", "small")])
        await first.close()
        second = admin()
        await second.start()
        held = sorted(second.state.board.records)
        await second.close()
        return str(raised.value), str(later.value), held

    raised, later, held = run(body())
    assert raised.startswith(f"journal {path} could not be written (database or disk is full): "
                             f"the admin stops, its journal holding every round before. Free "
                             f"space"), raised
    assert later == raised
    assert held == ["before"]


@pytest.mark.parametrize("restart", [False, True])
def test_a_dependent_keeps_its_submission_place_across_a_restart(tmp_path, restart):
    """Stamped when submitted (README: ties, older first), but restored unstamped: after a
    restart, released, it went behind the equal tasks submitted after it (a review)."""
    from kit import JSim, noop

    sim = JSim(tmp_path / "j.db")
    sim.submit(noop("a"), noop("b", depends_on=["a"]), *(noop(f"c{i}") for i in range(6)))
    if restart:
        sim = sim.restart()
    w = sim.join("w")
    assert list(w.held) == ["a"]
    w.finish("a")
    assert list(w.held) == ["b"], (list(w.held), sim.st.board.queued())


def test_a_worker_owed_the_end_and_told_it_as_the_admin_closes_is_owed_no_more(tmp_path):
    """A worker the journal said was owed the END came back as the admin closed, and was told
    at its HELLO; it stayed owed all the same, and the next admin process waited for it
    (a review of the END's acknowledgement)."""
    from kit import JSim, sends

    from ceylon_net.edge.worker import HEARD_THE_END
    from ceylon_net.wire import Kind

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.submit(Task(1, "x"))
    w.finish(1)
    sim = sim.restart()  # (killed before its END)
    assert sim.st.owed_end == {"w"}
    sim.carry(sim.st.close("admin stopped", durable=True))  # ('w' not back: not told)
    back = sim.worker("w")
    assert sends(back.hello(), Kind.END, back.peer) == [wire.End("admin stopped")]
    back.say(Kind.BYE, wire.End(HEARD_THE_END))
    assert sim.st.owed_end == set()
    sim = sim.restart()
    assert sim.st.owed_end == set() and sim.st.idle
