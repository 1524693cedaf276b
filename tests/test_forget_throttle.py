"""Found by a review: forgetting held back (an open task depends on the oldest done batch) is
retried once a heartbeat, not every round: each try looks at every task (Followup._needed).
Since 46d6ff0 every batch that ends sets forget_at back to 0: with many small batches ending
while the long task runs, every such round scans every record again (O(tasks) per batch)."""

from __future__ import annotations

import pytest
from kit import Sim, frames

from ceylon_net import wire
from ceylon_net.core.followup import Followup
from ceylon_net.wire import Kind


def _doc(*tasks):
    return {"tasks": [{"id": t, "description": "t", "difficulty": 1, **kw} for t, kw in tasks]}


@pytest.mark.timeout(30)
def test_forgetting_held_back_is_not_retried_every_round_a_batch_ends(monkeypatch):
    sim = Sim(keep_finished=1)
    w = sim.join("w", capacity=4)
    sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(_doc(("a", {})))))
    w.finish("a")
    # a long task depends on a: batch 1 is held back while it runs
    sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(_doc(("long", {"depends_on":
                                                                            ["a"]})))))
    sim.tick(at=0.5)
    tries = []
    real = Followup._needed
    monkeypatch.setattr(Followup, "_needed", lambda self: tries.append(1) or real(self))
    for i in range(50):  # small batches ending, within one heartbeat
        sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(_doc((f"s{i}", {})))))
        w.finish(f"s{i}")
        sim.tick()
    assert "a" in sim.st.board.records  # (held back, as it should be)
    assert len(tries) <= 3, f"{len(tries)} scans of every task within one heartbeat"
