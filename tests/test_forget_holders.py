"""Found by a review: Followup.holders (19493c7) keeps the open tasks that held back the last
thing forget_old found held, not all of them: each held() call overwrites it. A done batch
held by one task and execute()'s oldest finished task held by another: holders names only the
latter, so the batch's holder ending no longer has the batch tried again at once (as before
19493c7, and as the comment promises) but only a heartbeat later."""

from __future__ import annotations

import pytest
from kit import Sim, frames, noop

from ceylon_net import wire
from ceylon_net.wire import Kind


def _doc(*tasks):
    return {"tasks": [{"id": t, "description": "t", "difficulty": 1, **kw} for t, kw in tasks]}


@pytest.mark.timeout(30)
def test_a_batch_holder_ending_retries_forgetting_at_once_when_loose_tasks_are_held_too():
    sim = Sim(keep_finished=1)
    w = sim.join("w", capacity=4)
    sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(_doc(("a", {})))))  # batch 1
    w.finish("a")
    for x in ("x1", "x2"):  # execute()'s tasks: two finished, past --keep-finished 1
        sim.submit(noop(x), forgettable=True)
        w.finish(x)
    sim.submit(noop("h2", depends_on=["x1"]))  # holds x1 (execute()'s oldest) back
    sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(_doc(("h1", {"depends_on":
                                                                          ["a"]})))))
    sim.tick(at=0.1)  # a try: batch 1 held by h1, x1 by h2
    assert "a" in sim.st.board.records and "x1" in sim.st.board.records
    assert sim.st.settings.heartbeat > 0.3
    w.finish("h1")  # batch 2 ends: h1 held batch 1 back
    sim.tick(at=0.2)  # the next round, well within the heartbeat
    assert "a" not in sim.st.board.records, (
        f"batch 1 kept after its holder ended (holders: {sim.st.followup.holders})")
