"""Found by a review: after_failure (core/upstream.py:87, 19493c7) now trusts any cancellation
whose reason starts like a gate's ("dependency ", "group ") and ends in " failed", with no
dependency behind it: a task a user cancels with their own reason, "dependency download
failed", counts as cancelled for a failure upstream (ceylon-submit --wait exits 1). Before
19493c7 such a reason was looked up (its task depends on nothing: not blamed), as the module
says: a task cancelled by a user is not."""

from __future__ import annotations

import pytest
from kit import Sim, frames, sends

from ceylon_net import wire
from ceylon_net.wire import Kind


@pytest.mark.timeout(30)
def test_a_user_cancel_whose_reason_reads_like_a_gate_is_not_after_a_failure():
    sim = Sim()
    doc = {"tasks": [{"id": "t", "description": "t", "difficulty": 1}]}
    sim.receive(b"c", frames(Kind.SUBMIT, wire.Submission(doc)))  # (no worker: t waits)
    sim.cancel("t", reason="dependency download failed")
    (report,) = [r.report for r in sends(sim.every, Kind.REPORT)]
    assert report["cancelled"] == [{"id": "t", "reason": "dependency download failed"}]
    assert report.get("after_failure", []) == [], report
