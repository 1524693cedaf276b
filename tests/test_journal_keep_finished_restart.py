"""--keep-finished across an admin restarted on its journal: what the last process had yet
to forget is forgotten by the new one, execute()'s tasks too.

Found by a review: an admin killed in the round a client's batch finished, before the next
round forgot it, came back keeping more than --keep-finished tasks until another batch
finished; and execute()'s tasks (forgotten once finished) came back as ordinary tasks, kept
for good (up to --keep-finished of them a restart)."""

from __future__ import annotations

from collections import deque

import pytest
from kit import JSim, frames, noop

from ceylon_net import wire
from ceylon_net.settings import CLIENTS_COME_BACK_AT_LEAST
from ceylon_net.wire import Kind


@pytest.mark.timeout(30)
def test_a_restart_forgets_what_is_past_keep_finished(tmp_path):
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    doc = {"tasks": [{"id": i, "description": "t", "difficulty": 1} for i in range(2)]}
    sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc)))
    sim.cancel(0)
    sim.cancel(1)  # the batch is done: forgotten at the start of the next round
    assert sim.st.batches.kept == 2 and sim.st.followup.forget_due
    sim = sim.restart()  # killed before that round
    for t in (1.0, 2.0, 10.0, CLIENTS_COME_BACK_AT_LEAST):  # (the client did not come back)
        sim.tick(at=t)
    assert sim.st.batches.kept <= 1, (sim.st.batches.kept, list(sim.st.batches.done))
    assert sim.st.board.total - sim.st.board.forgotten.tasks <= 1


@pytest.mark.timeout(30)
def test_forgettable_tasks_stay_forgettable_after_a_restart(tmp_path):
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w")
    sim.submit(noop(0), forgettable=True)
    sim.submit(noop(1), forgettable=True)
    sim = sim.restart()  # killed with both open
    w = sim.join("w", capacity=4)
    sim.submit(*[noop(i) for i in range(2, 6)], forgettable=True)
    for t in range(1, 10):
        sim.now = float(t)
        w.finish_all()
        w.heartbeat()
        sim.tick()
    board = sim.st.board
    assert all(r.state.name == "COMPLETED" for r in board.records.values())
    assert len(board.records) <= 1, sorted(board.records)  # --keep-finished 1


@pytest.mark.timeout(30)
def test_execute_s_finished_tasks_not_yet_forgotten_at_a_kill_are_forgotten_after_it(tmp_path):
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w", capacity=4)
    sim.submit(*[noop(i) for i in range(3)], forgettable=True)
    for _ in range(3):  # (its first on probation)
        w.finish_all()
    # all three finished, one forgotten: the next is to go at the start of the next round
    assert list(sim.st.board.records) == [1, 2] and sim.st.followup.forget_due
    sim = sim.restart()  # killed before it
    sim.tick(at=1.0)
    assert list(sim.st.board.records) == [2]
    sim = sim.restart()  # ... and what it forgot stays forgotten
    assert list(sim.st.board.records) == [2] and sim.st.followup.loose_done == deque([2])
