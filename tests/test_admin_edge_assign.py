"""The admin's edge carrying out a round's assignments to a worker cut in two (free slots'
first, those queued ahead after every worker's first): when the first cannot be sent, the
worker "gets nothing more until it is heard from" (AdminState.undelivered), the second
neither: it is not tried, and goes back to the queue with the first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ceylon_net.edge.admin import Admin
from ceylon_net.settings import AdminSettings


@pytest.mark.timeout(30)
def test_a_worker_whose_first_assign_could_not_be_sent_is_not_sent_the_second():
    from kit import frames, noop

    from ceylon_net import wire
    from ceylon_net.core.tasks import TaskResult
    from ceylon_net.wire import Hello, Kind

    class Out:  # the first assignment cannot be sent (its queue full); later ones can
        def __init__(self) -> None:
            self.tries: list[list[Any]] = []
            self.failing = False

        def send(self, *a: Any, **k: Any) -> bool:
            return True

        def assign(self, peer: bytes, assignments: list) -> list:
            self.tries.append([a.task.id for a in assignments])
            return list(assignments) if self.failing and len(self.tries) == 2 else []

        def publish(self, *a: Any, **k: Any) -> None:
            pass

    async def body():
        admin = Admin(settings=AdminSettings(port=0, prefetch=100))
        st = admin.state
        st.started(0.0, 8000, 8001, 7)
        out = admin._out = Out()
        admin._apply(st.receive(b"w", frames(Kind.HELLO, Hello("w", "default", 10, 2, [], []),
                                             sender="w"), "10.0.0.1", 0.0))
        admin._apply(st.receive(b"w", frames(Kind.HEARTBEAT, wire.Heartbeat(
            [], True, st.broadcasts.seq, st.broadcasts.seq, []), sender="w"), "10.0.0.1", 0.0))
        admin._apply(st.submit([noop("warm")], now=0.05))  # (on probation: one task)
        admin._apply(st.receive(b"w", frames(Kind.RESULT, [TaskResult(
            "warm", "w", True, 0.001, attempt=1)], sender="w"), "10.0.0.1", 0.06))
        out.failing = True  # (trusted now: fed up to its slots and ahead)
        admin._apply(st.submit([noop(i) for i in range(5)], now=0.1))
        return out.tries, st

    tries, st = asyncio.run(body())
    # (found: [[0, 1], [2, 3, 4]]: the tasks queued ahead went to a worker found
    # unreachable, while those meant to start at once were requeued)
    assert tries == [["warm"], [0, 1]]
    assert [st.board.records[i].state.name for i in range(5)] == ["QUEUED"] * 5
