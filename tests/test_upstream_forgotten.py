"""Found by a review: after_failure (core/upstream.py) looks for the failure upstream on the
board as it is now; with --keep-finished the failed dependency, of an older batch, is
forgotten first (oldest first), and a report of the later batch asked again (a client's WATCH
after the admin restarted on its journal, which now forgets at once, or after hearing nothing
for a while) no longer names its tasks: ceylon-submit --wait exits 0 for a batch none of
whose tasks ran, for a failure upstream."""

from __future__ import annotations

import pytest
from kit import JSim, frames, sends

from ceylon_net import wire
from ceylon_net.wire import Kind


def _submit(sim, doc):
    return sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc)))


@pytest.mark.timeout(30)
def test_a_batch_cancelled_for_a_failure_upstream_says_so_again_after_a_restart(tmp_path):
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w", capacity=2)
    _submit(sim, {"tasks": [{"id": "a", "description": "t", "difficulty": 1}]})
    w.finish("a", success=False)
    _submit(sim, {"tasks": [{"id": "b", "description": "t", "difficulty": 1,
                             "depends_on": ["a"]}]})
    (first,) = [r for r in sends(sim.every, Kind.REPORT) if r.batch == 2]
    assert first.report["after_failure"] == ["b"]  # (as it ended)
    run = sim.st.run
    sim = sim.restart()  # killed before the clients had their reports
    sim.receive(b"client1", frames(Kind.WATCH, wire.Watch(batches=[[1, run]])))  # claimed
    for t in (1.0, 2.0):
        sim.tick(at=t)
    assert "a" not in sim.st.board.records  # batch 1 forgotten (--keep-finished 1)
    cmds = sim.receive(b"client2", frames(Kind.WATCH, wire.Watch(batches=[[2, run]])))
    (again,) = sends(cmds, Kind.REPORT)
    assert again.error is None, again.error
    assert again.report["cancelled"] == [{"id": "b", "reason": "dependency 'a' failed"}]
    assert again.report.get("after_failure") == ["b"], again.report
