"""The inbox's said-gone ranges: the same deliveries and counts as the per-number inbox they
replaced (a property test against tests/inbox_reference.py), and neither a SKIP over many
held broadcasts nor many ranges makes a call quadratic (each failed on 40f6348, a review of
that commit: 4.7 s in one SKIP, the event loop blocked)."""

from __future__ import annotations

import sys
import time

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceylon_net.core.broadcasts import BroadcastInbox

sys.path.insert(0, str(REPO / "tests"))
from inbox_reference import ReferenceInbox

OldInbox = ReferenceInbox

ops = st.lists(st.one_of(
    st.tuples(st.just("hear"), st.integers(0, 30)),
    st.tuples(st.just("accept"), st.integers(1, 30)),
    st.tuples(st.just("honest_skip"), st.integers(0, 40), st.integers(0, 40),
              st.integers(0, 40)),
    st.tuples(st.just("skip"), st.integers(0, 32), st.integers(0, 32)),
), max_size=40)


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(ops, st.booleans())
def test_s24c9_property_new_inbox_matches_the_old_one(script, honest_only):
    new, old = BroadcastInbox(), OldInbox()
    above_top = False  # a SKIP went above what the inbox knew (the commit raises top)
    for op in script:
        if op[0] == "hear":
            assert new.hear(op[1]) == old.hear(op[1])
        elif op[0] == "accept":
            got_new, got_old = list(new.accept(op[1], op[1])), list(old.accept(op[1], op[1]))
            assert got_new == got_old, (op, got_new, got_old)
        else:
            if old.heard is None:
                continue  # (no SKIP before the inbox heard: it asks for nothing)
            if op[0] == "honest_skip":
                ranges = old.missing()
                if not ranges:
                    continue
                a, b = ranges[op[1] % len(ranges)]
                first = a + op[2] % (b - a + 1)
                last = first + op[3] % (b - first + 1)
            else:
                if honest_only:
                    continue
                first, last = sorted(op[1:])
            if last > max(old.top, new.top):
                above_top = True
            got_new, got_old = list(new.skip(first, last)), list(old.skip(first, last))
            assert got_new == got_old, (op, first, last, got_new, got_old)
        assert new.skipped == old.skipped, op
        assert new.delivered == old.delivered, op
        if not above_top:
            assert new.missing() == old.missing(), op
            assert new.last_missing() == old.last_missing(), op
        # What a worker asks on (newest_gap, known without walking what is held) covers
        # every number missing: no gap goes unasked until a heartbeat.
        missing = new.missing()
        assert not missing or new.newest_gap >= missing[-1][1], (op, missing, new.newest_gap)
    if old.heard is None:
        return  # (the commit's intended fix: drain() of one that never heard loses none)
    d_new, d_old = list(new.drain()), list(old.drain())
    assert d_new == d_old
    if not above_top:
        assert new.skipped == old.skipped
        assert new.delivered == old.delivered


# ---------------------------------------------------------------------------------------
# Finding 1: _ready() scans every held broadcast at each gap inside a said-gone range
# (``here = [seq for seq in self._held if ...]``): a SKIP over N held broadcasts with N gaps
# between them is O(N**2). A worker that asked for [1, 20000] (nothing held yet) and then
# read 10,000 of them from PUB, every other one (the rest dropped), before the admin's SKIP
# [1, 20000] arrived, blocks its event loop ~1.4 s in that one skip() (the old inbox: ~0 s).

class _CountingDict(dict):
    iterated = 0

    def __iter__(self):
        for key in super().__iter__():
            type(self).iterated += 1
            yield key


@pytest.mark.timeout(60)
def test_s24c9_a_skip_over_many_held_broadcasts_is_not_quadratic():
    inbox = BroadcastInbox()
    inbox.hear(0)
    for seq in range(2, 20_001, 2):  # 10,000 held (the capacity), a gap before each
        assert list(inbox.accept(seq, seq)) == []
    inbox._held = _CountingDict(inbox._held)
    _CountingDict.iterated = 0
    start = time.perf_counter()
    out = list(inbox.skip(1, 20_000))
    took = time.perf_counter() - start
    assert out == list(range(2, 20_001, 2)) and inbox.skipped == 10_000
    assert _CountingDict.iterated <= 4 * 10_000, (
        f"skip(1, 20000) over 10,000 held broadcasts walked the held dict "
        f"{_CountingDict.iterated:,} times ({took:.2f} s): quadratic")


# ---------------------------------------------------------------------------------------
# Finding 2: skip() re-sorts and re-merges the whole list of said-gone ranges on every SKIP,
# and accept() (_said_gone) and missing() walk it linearly: with thousands of ranges ahead
# of a gap (SKIPs for later gaps while the first is not yet skipped, e.g. its SKIP dropped
# by the admin's ROUTER queue, which _repair's docstring allows for), each SKIP costs O(R
# log R) and each broadcast O(R). 5,000 one-number SKIPs ahead of a gap took ~3 s here, the
# old inbox ~5 ms.

@pytest.mark.timeout(60)
def test_s24c9_many_said_gone_ranges_do_not_make_each_skip_and_accept_linear():
    inbox = BroadcastInbox()
    inbox.hear(0)
    n = 5_000
    for seq in range(2, 2 * n + 1, 2):
        assert list(inbox.accept(seq, seq)) == []
    start = time.perf_counter()
    for seq in range(3, 2 * n + 1, 2):  # the gaps after the first, said gone one by one
        assert list(inbox.skip(seq, seq)) == []
    skips = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(1_000):  # duplicates and repairs crossing: each walks every range
        assert list(inbox.accept(2 * n - 1, None)) == []  # (said gone)
    accepts = time.perf_counter() - start
    assert list(inbox.skip(1, 1)) == list(range(2, 2 * n + 1, 2))
    assert inbox.skipped == n
    assert skips < 1.0 and accepts < 0.5, (
        f"{n - 1:,} one-number SKIPs ahead of a gap took {skips:.2f} s, 1,000 accepts of a "
        f"said-gone number {accepts:.2f} s (the list of ranges is re-sorted / walked each time)")
