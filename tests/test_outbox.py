"""A worker's broadcasts and messages an admin may refuse (it restarted, or took the worker
for lost): kept a while after sending, sent again once welcomed, in the order first sent."""

from __future__ import annotations

import pytest

from ceylon_net.edge.outbox import Outbox
from ceylon_net.errors import LocalProtocolError


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
