"""Numbered broadcasts, without sockets: the admin's ring and an agent's inbox deliver every
broadcast once, in order, whatever PUB drops and however repairs cross the originals."""

from __future__ import annotations

import os
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from ceylon_net import wire
from ceylon_net.core.broadcasts import ENTRY, REPAIR_BATCH, BroadcastInbox, BroadcastLog


def test_the_log_numbers_from_one_and_keeps_a_bounded_ring():
    log = BroadcastLog(capacity=3)
    assert [log.append(f"m{i}", 10) for i in range(5)] == [1, 2, 3, 4, 5]
    kept, gone = log.get(1, 5)
    assert [s.seq for s in kept] == [3, 4, 5] and gone == 2
    assert log.get(6, 9) == ([], 0)  # not sent yet: nothing, nothing gone


def test_the_log_also_bounds_the_bytes_it_keeps_counting_what_each_costs_beside_its_payload():
    log = BroadcastLog(capacity=100, max_bytes=2 * (ENTRY + 10))
    for i in range(5):
        log.append(i, 10)
    assert log.oldest == 4


def test_a_kept_broadcast_costs_at_most_entry_beside_its_payload():
    """What the byte bound counts for each broadcast is what one costs, kept as the admin
    keeps them (a header decoded from the frame, the payload's own bytes): RING_BYTES holds
    for small broadcasts too. (Counted payload bytes only, a ring full of small ones was
    20 MiB, its bound saying 64 MiB of payload: a review of a long-serving admin.)"""
    log, n = BroadcastLog(), 5_000
    raw = wire.encode_header(wire.make_header("default", "agent-17", "notes.Note"))
    payload = os.urandom(130)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(n):
            header, payload = wire.decode_header(raw), bytes(bytearray(payload))  # (new ones)
            header.seq = log.append((header, payload), len(payload))
        grew = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    beside = grew / n - len(payload)
    assert 0.7 * ENTRY < beside <= ENTRY, beside


def test_an_inbox_delivers_in_order_holds_what_comes_early_and_drops_duplicates():
    inbox = BroadcastInbox()
    assert inbox.hear(10) is True  # from now on: 11 and later
    assert list(inbox.accept(12, "b")) == []
    assert inbox.missing() == [[11, 11]]
    assert list(inbox.accept(11, "a")) == ["a", "b"]
    assert list(inbox.accept(11, "a")) == []  # the repair crossed the original
    assert inbox.missing() == [] and inbox.delivered == 12


def test_a_heartbeat_beyond_what_arrived_shows_a_lost_tail():
    inbox = BroadcastInbox()
    inbox.hear(0)
    list(inbox.accept(1, "x"))
    inbox.hear(3)  # broadcasts 2 and 3 were sent before this beat, and never came
    assert inbox.missing() == [[2, 3]]


def test_what_the_admin_no_longer_has_is_counted_and_skipped():
    inbox = BroadcastInbox()
    inbox.hear(0)
    list(inbox.accept(3, "c"))
    assert list(inbox.skip(1, 2)) == ["c"]
    assert inbox.skipped == 2 and inbox.delivered == 3


def test_the_first_broadcast_heard_starts_the_inbox_there():
    inbox = BroadcastInbox()
    assert list(inbox.accept(7, "g")) == ["g"]
    assert inbox.heard == 6


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 60), data=st.data())
def test_whatever_pub_drops_repairs_bring_every_broadcast_once_in_order(n, data):
    """PUB delivers in order but may drop any; the inbox asks for what it misses and the
    admin's ring answers (in any order, possibly twice): in the end all arrive once."""
    log = BroadcastLog(capacity=1000)
    for i in range(1, n + 1):
        log.append(i, 1)
    inbox = BroadcastInbox()
    inbox.hear(0)
    dropped = data.draw(st.sets(st.integers(1, n)))
    got = []
    for seq in range(1, n + 1):
        if seq not in dropped:
            got += inbox.accept(seq, seq)
    inbox.hear(log.seq)  # the admin's heartbeat
    for _ in range(10):
        wanted = inbox.missing()
        if not wanted:
            break
        repairs = [s for first, last in wanted for s in log.get(first, last)[0]]
        repairs = data.draw(st.permutations(repairs + repairs[:1]))
        for sent in repairs:
            got += inbox.accept(sent.seq, sent.item)
    assert got == list(range(1, n + 1))


def test_word_beside_pub_is_taken_only_once_pub_stays_still_for_the_wait():
    """The admin's heartbeat over the ROUTER overtakes PUB: taken at once, it made a worker
    whose loop was held up ask for what PUB was still bringing, and skip (lost) what the
    admin no longer kept. Taken when PUB has brought nothing for ``wait``."""
    inbox = BroadcastInbox()
    assert not inbox.told(9, now=0.0, wait=2.0)  # (never heard PUB: not set hearing by it)
    inbox.hear(0)
    for seq in (1, 2, 3):
        list(inbox.accept(seq, seq))
    assert not inbox.told(9, now=1.0, wait=2.0)  # PUB still, since 1.0 ...
    assert not inbox.told(9, now=2.5, wait=2.0)
    list(inbox.accept(4, 4))  # ... no: it moved
    assert not inbox.told(9, now=3.5, wait=2.0)  # still since 3.5
    assert not inbox.told(9, now=5.0, wait=2.0)
    assert inbox.told(9, now=5.5, wait=2.0)  # 2 s without PUB: taken
    assert inbox.missing() == [[5, 9]]
    assert not inbox.told(9, now=9.0, wait=2.0)  # (nothing new said)


def test_an_inbox_says_when_to_ask_for_what_it_misses_and_again_as_half_a_repair_came():
    """Fed events, no sockets: a new gap is asked for at once; catching up, again once half
    of a repair batch came (BroadcastInbox.ask_due / asked, the worker's _heard)."""
    inbox = BroadcastInbox()
    list(inbox.accept(1, "b1"))
    assert inbox.ask_due(first=True)  # (it starts hearing)
    inbox.asked()
    list(inbox.accept(3_002, "b3002"))  # (2 .. 3,001 missed)
    assert inbox.ask_due(first=False)
    inbox.asked()
    due = []
    for seq in range(2, 2 + REPAIR_BATCH):
        list(inbox.accept(seq, seq))
        if inbox.ask_due(first=False):
            due.append(seq)
            inbox.asked()
    assert due == [1 + REPAIR_BATCH // 2, 1 + REPAIR_BATCH]
    list(inbox.accept(3_003, "b3003"))  # (no new gap: next in line after what it has)
    assert not inbox.ask_due(first=False)
