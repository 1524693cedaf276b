"""A worker's broadcasts and messages an admin may refuse (it restarted, or took the worker
for lost): kept a while after sending, sent again once welcomed, in the order first sent."""

from __future__ import annotations

import pytest

from ceylon_net.edge.outbox import Outbox, Seen
from ceylon_net.errors import LocalProtocolError
from ceylon_net.wire import Kind

B, D = Kind.BCAST, Kind.DIRECT  # a broadcast's frames, a direct message's


def test_refused_and_held_ones_go_once_welcomed_in_the_order_first_sent():
    box = Outbox()
    for msg_id in (1, 2, 3):
        box.sent(msg_id, [b"B", str(msg_id).encode()])
    assert box.refused(3) and box.refused(2)  # refusals may come in any order
    box.hold(5, [b"B", b"5"])  # sent while registering
    assert not box.refused(2)  # refused twice: it is sent once
    assert not box.refused(99) and not box.refused(None)  # not ours (a HELLO, a heartbeat)
    assert len(box) == 3
    assert box.take() == [(2, [b"B", b"2"]), (3, [b"B", b"3"]), (5, [b"B", b"5"])]
    assert box.take() == [] and len(box) == 0


def test_what_is_kept_after_sending_is_bounded_in_count_and_bytes_oldest_forgotten():
    box = Outbox(max_kept=3, max_kept_bytes=10)
    for msg_id in range(5):
        box.sent(msg_id, [b"xx"])
    assert [m for m in range(5) if box.refused(m)] == [2, 3, 4]
    box = Outbox(max_kept=100, max_kept_bytes=10)
    for msg_id in range(5):
        box.sent(msg_id, [b"xxxx"])
    assert [m for m in range(5) if box.refused(m)] == [3, 4]


def test_too_many_waiting_for_a_welcome_is_refused_at_send():
    box = Outbox(max_waiting=2)
    box.hold(1, [b"1"])
    box.hold(2, [b"2"])
    with pytest.raises(LocalProtocolError, match="not registered with the admin: 2 messages "
                                                 "wait to be sent already"):
        box.hold(3, [b"3"])


def test_broadcasts_that_did_not_come_back_go_to_a_new_admin_process_in_order():
    box = Outbox()
    box.sent(1, [B, b"1"], hearing=True)
    box.sent(2, [D, b"2"], hearing=True)  # a direct message: never comes back
    box.sent(3, [B, b"3"], hearing=True)
    box.sent(4, [B, b"4"], hearing=True)
    box.echoed(3)  # relayed: forgotten
    assert not box.refused(3)
    assert box.refused(4)  # refused by the admin (it is waiting already) ...
    box.echoed(4)  # ... a late echo of it changes nothing
    box.hold(6, [B, b"6"])
    assert box.admin_restarted() == 1  # 1 had not come back
    assert box.take() == [(1, [B, b"1"]), (4, [B, b"4"]), (6, [B, b"6"])]
    assert box.admin_restarted() == 0  # (once)
    assert box.refused(2)  # the direct message is still kept, should the admin refuse it


def test_broadcasts_we_may_not_see_again_are_not_sent_again():
    box = Outbox()
    box.sent(1, [B, b"1"], hearing=True)
    box.unsure()  # we skipped broadcasts: ours among them would never come back
    box.sent(2, [B, b"2"], hearing=True)
    assert box.admin_restarted() == 1 and box.take() == [(2, [B, b"2"])]
    box = Outbox(max_kept=2)
    for msg_id in range(4):
        box.sent(msg_id, [B], hearing=True)
    assert box.admin_restarted() == 2  # the oldest were forgotten altogether


def test_a_broadcast_seen_before_is_not_delivered_twice_and_memory_is_bounded():
    seen = Seen(size=3)
    assert seen.first("w", 1, 10.0) and not seen.first("w", 1, 10.0)
    assert seen.first("w", 1, 11.0)  # a restarted worker's msg id 1: another broadcast
    assert seen.first("v", 1, 10.0)
    assert seen.first("w", 2, 12.0)  # the oldest ("w", 1, 10.0) is forgotten
    assert seen.first("w", 1, 10.0)
