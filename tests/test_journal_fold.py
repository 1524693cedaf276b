"""What a restart restores does not depend on whether the journal's log was folded into a
snapshot as the admin served (Journal.compact) or not; and the workers of the last admin
process, kept in the journal, are waited for as the README says. Driven without sockets
(tests/kit.py): two real journals of one simulated admin side by side, one folded at every
round, one never. (From a review: it found the floor of a reused id lost in a fold.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from kit import Sim, SimWorker, frames, noop

from ceylon_net import wire
from ceylon_net.core.tasks import TaskResult
from ceylon_net.edge.journal import Journal, record_round, resume
from ceylon_net.errors import ConfigError
from ceylon_net.wire import Kind

CLIENT = b"client-1"


class Dual(Sim):
    """A Sim whose every round goes into two real journals: ``a`` folds its log at every
    round (compaction forced), ``b`` never does (the unfolded log)."""

    def __init__(self, folder: Path, a: Path | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.folder, self.settings = folder, settings
        self.a = Journal(a or folder / "a.db", "default")
        resume(self.a, self.st, self.now)
        _copy(self.a.path, folder / "b.db")
        self.b = Journal(folder / "b.db", "default")
        self.b.registered = self.a.registered
        self.a.due = lambda: True  # type: ignore[method-assign]
        self.b.due = lambda: False  # type: ignore[method-assign]

    def carry(self, cmds: list[Any]) -> list[Any]:
        dirty = set(self.st.board.dirty or ())
        record_round(self.a, self.st, cmds)
        self.st.board.dirty = dirty
        record_round(self.b, self.st, cmds)
        return super().carry(cmds)

    def restart(self) -> Dual:
        """A kill (nothing more written), then a new admin state from ``a``'s file."""
        self.a.db.close()
        self.b.db.close()
        (self.folder / "b.db").unlink()
        for p in self.folder.glob("b.db-*"):
            p.unlink()
        return Dual(self.folder, **self.settings)


def _copy(src: Path, dst: Path) -> None:
    for p in dst.parent.glob(dst.name + "*"):
        p.unlink()
    s, d = sqlite3.connect(src), sqlite3.connect(dst)
    s.backup(d)
    s.close()
    d.close()


def restored(path: Path, now: float, **settings: Any) -> Sim:
    """A new admin state from a copy of the journal (the file itself left as it is)."""
    copy = path.with_name(path.stem + "-look.db")
    _copy(path, copy)
    sim = Sim(**settings)
    sim.now = now
    j = Journal(copy, "default")
    resume(j, sim.st, now)
    j.close()
    return sim


def view(sim: Sim) -> dict[str, Any]:
    st = sim.st
    b = st.board
    return {
        "records": [(tid, r.state, r.attempt, r.worker, r.result, r.reason, r.losses,
                     r.stopping, b.lost_with(tid), r.front, r.base)
                    for tid, r in b.records.items()],
        "order": sorted(b.records, key=lambda t: b.records[t].index),
        "waiting": sorted((t, sorted(map(repr, g))) for t, g in b._waiting.items()),
        "queue": b.scheduler.queued(),
        "groups": {gid: (g.name, [t.task_id for t in g.subtasks], g.status, g.completed)
                   for gid, g in st.task_manager.task_groups.items()},
        "unassigned": dict(st.unassigned),
        "forgotten": b.forgotten.row(),
        "batches": sorted((i, list(x.task_ids), x.remaining, x.succeeded, x.wait, x.after)
                         for i, x in st.batches.known.items()),
        "gone": sorted(st.members.gone),
        "slots_of_gone": dict(b.slots_of_gone),
        "owed_end": sorted(st.owed_end),
        "open": b.open,
    }


def _names(sim: Dual) -> dict[str, SimWorker]:
    return {w.name: w for w in sim.workers.values()}


OPS = st.one_of(
    st.tuples(st.just("submit"), st.lists(st.integers(0, 3), min_size=1, max_size=3),
              st.booleans()),
    st.tuples(st.just("batch"), st.lists(st.integers(0, 3), min_size=1, max_size=3)),
    st.tuples(st.just("group"), st.integers(0, 3), st.lists(st.integers(0, 3), min_size=1,
                                                            max_size=2)),
    st.tuples(st.just("join"), st.sampled_from(["w0", "w1", "gpu"])),
    st.tuples(st.just("finish"), st.sampled_from(["w0", "w1", "gpu"]), st.booleans()),
    st.tuples(st.just("start"), st.sampled_from(["w0", "w1", "gpu"])),
    st.tuples(st.just("cancel"), st.integers(0, 3)),
    st.tuples(st.just("time"), st.sampled_from([0.5, 2.0, 4.0, 30.0]),
              st.sets(st.sampled_from(["w0", "w1", "gpu"]))),
    st.tuples(st.just("restart")),
    st.tuples(st.just("finish"), st.sampled_from(["w0", "w1"]), st.just(True)),
    st.tuples(st.just("finish"), st.sampled_from(["w0", "w1"]), st.just(True)),
    st.tuples(st.just("join"), st.sampled_from(["w0", "w1"])),
    st.tuples(st.just("time"), st.sampled_from([2.0, 4.0]), st.sets(st.sampled_from(["w0"]))),
    st.tuples(st.just("batch"), st.lists(st.integers(0, 3), min_size=1, max_size=2)),
    st.tuples(st.just("close"), st.integers(0, 3)),
    st.tuples(st.just("drain"), st.booleans()),
    st.tuples(st.just("drain"), st.booleans()),
    st.tuples(st.just("bye"), st.sampled_from(["w0", "w1", "gpu"])),
)


def play(tmp: Path, ops: list[tuple[Any, ...]], **settings: Any) -> None:
    sim = Dual(tmp, **settings)
    for n, op in enumerate(ops):
        kind = op[0]
        names = _names(sim)
        try:
            if kind == "submit":
                sim.submit(*[noop(f"t{i}") for i in op[1]], forgettable=op[2])
            elif kind == "batch":
                doc = {"tasks": [{"id": f"t{i}", "description": "x", "difficulty": 1}
                                 for i in dict.fromkeys(op[1])]}
                sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))
            elif kind == "group":
                doc = {"tasks": [], "groups": [{"name": f"g{op[1]}", "tasks": [
                    {"id": f"t{i}", "description": "x", "difficulty": 1,
                     "required_role": "gpu" if op[1] == 3 else "default"}
                    for i in dict.fromkeys(op[2])]}]}
                sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))
            elif kind == "join":
                w = names.get(op[1])
                if w is None:
                    w = sim.worker(op[1], role="gpu" if op[1] == "gpu" else "default")
                w.hello()
                w.heard = sim.st.broadcasts.seq
                w.heartbeat()
            elif kind == "finish" and op[1] in names and names[op[1]].held:
                w = names[op[1]]
                w.finish(next(iter(w.held)), success=op[2], value={"v": [1, 2]})
            elif kind == "start" and op[1] in names and names[op[1]].held:
                w = names[op[1]]
                w.start(next(iter(w.held)))
            elif kind == "cancel":
                sim.cancel(f"t{op[1]}")
            elif kind == "time":
                sim.now += op[1]
                for name in op[2]:
                    if name in names:
                        names[name].heartbeat()
                sim.tick()
            elif kind == "close" and op[1] == 0 and not sim.st.closing:
                sim.carry(sim.st.close("stopped", durable=True))
            elif kind == "bye" and op[1] in names:
                names[op[1]].say(Kind.BYE)
            elif kind == "drain":
                for w in names.values():
                    if w.peer in sim.workers and w.held:
                        for t in list(w.held):
                            w.finish(t, success=op[1])
                sim.tick()
            elif kind == "restart":
                now, held = sim.now, [(w.name, w.role, dict(w.held), dict(w.unacked))
                                      for w in names.values()]
                sim = sim.restart()
                sim.now = now
                for name, role, h, u in held:  # they come back when they join again
                    w = sim.worker(name, role=role)
                    w.held, w.unacked = h, u
        except ConfigError:
            pass
        if sim.st.board.forgotten.tasks:  # (what the examples reach: --hypothesis-show-statistics)
            event("forgot")
        if sim.st.board.forgotten.attempts and any(r.base for r in sim.st.board.records.values()):
            event("reused id")
        if sim.st.task_manager.task_groups:
            event("groups")
        if any(r.losses for r in sim.st.board.records.values()):
            event("losses")
        if sim.st.members.gone:
            event("gone")
        if sim.st.unassigned:
            event("unassigned")
        if any(r.stopping for r in sim.st.board.records.values()):
            event("stopping")
        if sim.st.closing:
            event("closing")
        a = view(restored(sim.a.path, sim.now, **settings))
        b = view(restored(sim.b.path, sim.now, **settings))
        assert a == b, (n, op, {k: (a[k], b[k]) for k in a if a[k] != b[k]})


@pytest.mark.parametrize("keep", [0, 1])
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=40))
@example(ops=[("join", "w0"), ("batch", [0]), ("finish", "w0", False), ("batch", [1]),
              ("submit", [0], False)])  # (found by it: the floor of a reused id, see below)
def test_a_restart_restores_the_same_whether_the_log_was_folded_or_not(tmp_path_factory, keep,
                                                                        ops):
    play(tmp_path_factory.mktemp("dual"), ops, keep_finished=keep, unassignable_timeout=5,
         lost_wait=20)


def _client_batch(sim: Sim, *ids: Any) -> list[Any]:
    doc = {"tasks": [{"id": i, "description": "x", "difficulty": 1} for i in ids]}
    return sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))


def test_a_task_given_a_forgotten_tasks_id_keeps_its_floor_across_a_folded_log(tmp_path):
    """--keep-finished 0: batch 1's "t" ran (attempt 1) and was forgotten; "t" is given
    again (attempt numbers start above 1, base 1: a result the worker still holds of the
    old "t" is not the new one's). No worker is free: the new "t" waits. The log is folded
    as the admin serves; a kill; the restarted admin must still tell the old "t"'s
    attempts from the new one's, as it does when the log was not folded."""
    sim = Dual(tmp_path, keep_finished=0)
    w = sim.join("w")
    _client_batch(sim, "t")
    w.finish("t")
    sim.tick()  # batch 1 forgotten at the start of this round
    assert "t" not in sim.st.board.records and sim.st.board.forgotten.attempts == 1
    _client_batch(sim, "busy")  # w takes "busy", "t" waits for a slot
    _client_batch(sim, "t")
    rec = sim.st.board.records["t"]
    assert (rec.state.name, rec.attempt, rec.base) == ("QUEUED", 1, 1)
    folded = restored(sim.a.path, sim.now, keep_finished=0).st.board.records["t"]
    unfolded = restored(sim.b.path, sim.now, keep_finished=0).st.board.records["t"]
    assert (unfolded.attempt, unfolded.base) == (1, 1)
    assert (folded.attempt, folded.base) == (1, 1)


@pytest.mark.parametrize("log", ["unfolded", "folded"])
def test_an_old_result_of_a_reused_id_does_not_finish_the_new_task_after_a_folded_log(
        tmp_path, log):
    """--keep-finished 0: "t" ran on w (attempt 1) and was forgotten; w did not hear the
    ACK of its result (the admin was killed before it went out, ACK_DELAY after the round).
    A client gives "t" again; no slot is free, it waits (attempt numbers above 1). After the
    restart w comes back handing in its result of the old "t": it must not pass for the new
    "t"'s. With the log folded as the admin served, the new "t" lost its floor (base) and
    was finished with the old task's result, never run."""
    from kit import JSim

    sim = Dual(tmp_path, keep_finished=0)
    w = sim.join("w")
    _client_batch(sim, "t")
    old = TaskResult("t", "w", True, 0.001, attempt=1, value="the old t's")
    w.finish("t", value="the old t's")
    w.unacked[("t", 1)] = old  # (its ACK never went out: the admin was killed first)
    sim.tick()  # batch 1 forgotten at the start of this round
    _client_batch(sim, "busy")  # w's one slot
    _client_batch(sim, "t")
    assert sim.st.board.records["t"].state.name == "QUEUED"
    sim.a.db.close()
    sim.b.db.close()
    again = JSim(tmp_path / ("a.db" if log == "folded" else "b.db"), keep_finished=0)
    back = again.worker("w")
    back.held, back.unacked = dict(w.held), dict(w.unacked)
    back.hello()
    rec = again.st.board.records["t"]
    assert rec.result is None or rec.result.value != "the old t's", (rec.state, rec.result)


def test_an_old_result_of_a_reused_id_does_not_finish_a_released_dependent_after_a_restart(
        tmp_path):
    """Not the fold's (the unfolded log too): as above, but the new "t" waited on "d" and
    was queued when "d" completed; that move is journaled with the attempt the board gave it
    (the floor, 1), where restore_forgotten looks for 0 to give a restored task its floor
    back: base 0, and the old "t"'s result handed in after a restart finishes the new one."""
    from kit import JSim

    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w = sim.join("w")
    _client_batch(sim, "t")
    old = TaskResult("t", "w", True, 0.001, attempt=1, value="the old t's")
    w.finish("t", value="the old t's")
    w.unacked[("t", 1)] = old  # (its ACK never went out: the admin was killed first)
    sim.tick()  # batch 1 forgotten
    doc = {"tasks": [{"id": "d", "description": "x", "difficulty": 1},
                     {"id": "t", "description": "x", "difficulty": 1, "depends_on": ["d"]}]}
    sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))
    sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(  # (before "t", older: priority)
        {"tasks": [{"id": "busy", "description": "x", "difficulty": 1, "priority": 1}]}, False)))
    w.finish("d")  # "t" released, queued; w takes "busy" (one slot)
    assert "busy" in w.held and sim.st.board.records["t"].state.name == "QUEUED"
    again = sim.restart()
    back = again.worker("w")
    back.held, back.unacked = dict(w.held), dict(w.unacked)
    back.hello()
    rec = again.st.board.records["t"]
    assert rec.result is None or rec.result.value != "the old t's", (rec.state, rec.result)


def test_a_lost_worker_no_longer_waited_for_is_not_awaited_again_after_a_restart(tmp_path):
    """The journal keeps what the workers that may come back can do (meta
    'abilities'), and wrote it only when a worker registered or left. "gpu" was lost, and
    after --lost-wait the admin waits for it no more (Membership.forget_lost): a task only
    it could take is given up after --unassignable-timeout. That does not rewrite the
    journal's abilities: killed and restarted, the admin takes "gpu" for a worker of the
    last process and waits for it again, --lost-wait more, where the live admin had given
    such tasks up."""
    from kit import JSim, ticked

    from ceylon_net.core.tasks import Task

    sim = JSim(tmp_path / "j.db", unassignable_timeout=5, lost_wait=20)
    cpu = sim.join("cpu")
    sim.join("gpu", role="gpu", handlers=["render"])
    ticked(sim, [cpu], 29.0)  # gpu silent: lost at ~3.5 s, waited for until ~23.5 s
    assert "gpu" not in sim.st.members.lost
    assert "gpu" not in sim.st.members.abilities()
    sim.submit(Task("frame", "x", 1, required_role="gpu", handler="render"))
    ticked(sim, [cpu], 44.0)
    assert "frame" in sim.st.unassigned  # the live admin gave it up
    # The same with the kill before "frame" is submitted: it should be given up as well.
    sim2 = JSim(tmp_path / "k.db", unassignable_timeout=5, lost_wait=20)
    cpu = sim2.join("cpu")
    sim2.join("gpu", role="gpu", handlers=["render"])
    ticked(sim2, [cpu], 29.0)
    sim2.submit(Task("frame", "x", 1, required_role="gpu", handler="render"))
    sim2 = sim2.restart()
    said = ticked(sim2, [sim2.join("cpu")], 19.0)
    assert "frame" in sim2.st.unassigned, said


def test_a_restarted_serving_admin_that_forgot_every_task_waits_for_its_workers_too(tmp_path):
    """The workers of the last process not back in the come-back window are lost
    from then (Membership.gone_lost). That was done only when the
    journal held a task (AdminState.resumed): a serving admin that had forgotten every task
    (--keep-finished) and restarted with its workers (a host rebooted) keeps "gpu" in
    ``gone`` for ever: a job only "gpu" can take, submitted after the window, is given up
    after --unassignable-timeout instead of waiting --lost-wait for it; and "gone" is
    written into the journal's abilities again at every registration, and brought back by
    every later restart, however long ago "gpu" was last seen."""
    from kit import JSim, ticked

    sim = JSim(tmp_path / "j.db", keep_finished=0, unassignable_timeout=5, lost_wait=60)
    cpu = sim.join("cpu")
    gpu = sim.join("gpu", role="gpu", handlers=["render"])
    doc = {"tasks": [{"id": "f1", "description": "x", "difficulty": 1,
                      "required_role": "gpu", "handler": "render"}]}
    sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))
    gpu.finish("f1")
    sim.tick()
    assert sim.st.board.forgotten.tasks == 1 and not sim.st.board.records
    sim = sim.restart()  # (both workers' processes gone with the host)
    assert not sim.st.resumed
    cpu = sim.join("cpu")
    ticked(sim, [cpu], 9.0)  # the come-back window passes
    doc = {"tasks": [{"id": "f2", "description": "x", "difficulty": 1,
                      "required_role": "gpu", "handler": "render"}]}
    sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False)))
    said = ticked(sim, [cpu], 29.0)
    assert sim.st.board.forgotten.unassigned == 0 and "f2" in sim.st.board.records and any(
        "waiting for 'gpu' (lost) to come back" in m for m in said), said
    assert sim.st.members.gone == {}, sim.st.members.gone


@pytest.mark.parametrize("log", ["unfolded", "folded"])
def test_an_old_result_of_a_reused_id_does_not_finish_the_new_task_given_out_before_a_restart(
        tmp_path, log):
    """As above, but the new "t" had been given out (to w2) when the admin was killed: its
    floor was not journaled (only a task never given out got it back, at attempt 0), and
    w's result of the old "t", handed in after the restart, finished the new one. The rows
    keep the floor (schema 8)."""
    from kit import JSim

    sim = Dual(tmp_path, keep_finished=0)
    w = sim.join("w")
    _client_batch(sim, "t")
    w.finish("t", value="the old t's")
    w.unacked[("t", 1)] = TaskResult("t", "w", True, 0.001, attempt=1, value="the old t's")
    sim.tick()  # batch 1 forgotten at the start of this round
    _client_batch(sim, "busy")  # w's one slot
    w2 = sim.join("w2")
    _client_batch(sim, "t")
    assert sim.st.board.records["t"].attempt == 2 and "t" in w2.held
    sim.a.db.close()
    sim.b.db.close()
    again = JSim(tmp_path / ("a.db" if log == "folded" else "b.db"), keep_finished=0)
    assert again.st.board.records["t"].base == 1
    back = again.worker("w")
    back.held, back.unacked = dict(w.held), dict(w.unacked)
    back.hello()
    rec = again.st.board.records["t"]
    assert rec.result is None or rec.result.value != "the old t's", (rec.state, rec.result)
