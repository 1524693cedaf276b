"""Found by a review: after_failure (core/upstream.py, 19493c7) trusts a reason that says its
dependency "failed" even when that dependency is forgotten (--keep-finished), but one level
only: a task cancelled because its dependency "was cancelled" -- that dependency itself
cancelled for a failure ("dependency 'z' failed"), in an older batch since forgotten -- is
looked up, not found, and does not count. With --keep-finished 1 the older batch goes as the
new one ends, before its report: ceylon-submit --wait exits 0 for a batch none of whose tasks
ran, for a failure two steps upstream (with --keep-finished 5 the same batch says so)."""

from __future__ import annotations

import pytest
from kit import JSim, frames, sends

from ceylon_net import wire
from ceylon_net.wire import Kind


def _submit(sim, doc):
    return sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc)))


def _second_report(tmp_path, keep):
    sim = JSim(tmp_path / f"j{keep}.db", keep_finished=keep)
    w = sim.join("w", capacity=2)
    _submit(sim, {"tasks": [{"id": "z", "description": "t", "difficulty": 1},
                            {"id": "a", "description": "t", "difficulty": 1,
                             "depends_on": ["z"]}]})
    w.finish("z", success=False)
    _submit(sim, {"tasks": [{"id": "b", "description": "t", "difficulty": 1,
                             "depends_on": ["a"]}]})
    (report,) = [r.report for r in sends(sim.every, Kind.REPORT) if r.batch == 2]
    assert report["cancelled"] == [
        {"id": "b", "reason": "dependency 'a' was cancelled (for a failure upstream)"}]
    return report


@pytest.mark.timeout(30)
def test_a_chain_cancelled_for_a_failure_upstream_says_so_once_the_failure_is_forgotten(
        tmp_path):
    assert _second_report(tmp_path, 5).get("after_failure") == ["b"]  # (all still known)
    report = _second_report(tmp_path, 1)  # (batch 1, z and a, forgotten meanwhile)
    assert report.get("after_failure") == ["b"], report
