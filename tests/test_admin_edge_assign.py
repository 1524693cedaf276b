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


class _Out:
    """What the admin sends: only assignments matter here. ``failing``: its next try (the
    first it makes once set) cannot be sent (its queue full); later ones can."""

    def __init__(self) -> None:
        self.tries: list[list[Any]] = []
        self.failing = False

    def send(self, *a: Any, **k: Any) -> bool:
        return True

    def assign(self, peer: bytes, assignments: list) -> tuple[list, list]:
        self.tries.append([a.task.id for a in assignments])
        return (list(assignments) if self.failing and len(self.tries) == 2 else []), []

    def publish(self, *a: Any, **k: Any) -> None:
        pass


def _with_a_trusted_worker(out: _Out) -> Admin:
    """An admin (no sockets, sending into ``out``) with worker "w" of 2 slots, trusted: it
    ran a task (on probation first), so it is fed up to its slots and ahead."""
    from kit import frames, noop

    from ceylon_net import wire
    from ceylon_net.core.tasks import TaskResult
    from ceylon_net.wire import Hello, Kind

    admin = Admin(settings=AdminSettings(port=0, prefetch=100))
    st = admin.state
    st.started(0.0, 8000, 8001, 7)
    admin._out = out  # type: ignore[assignment]
    admin._apply(st.receive(b"w", frames(Kind.HELLO, Hello("w", "default", 10, 2, [], []),
                                         sender="w"), "10.0.0.1", 0.0))
    admin._apply(st.receive(b"w", frames(Kind.HEARTBEAT, wire.Heartbeat(
        [], True, st.broadcasts.seq, st.broadcasts.seq, []), sender="w"), "10.0.0.1", 0.0))
    admin._apply(st.submit([noop("warm")], now=0.05))  # (on probation: one task)
    admin._apply(st.receive(b"w", frames(Kind.RESULT, [TaskResult(
        "warm", "w", True, 0.001, attempt=1)], sender="w"), "10.0.0.1", 0.06))
    return admin


@pytest.mark.timeout(30)
def test_a_worker_whose_first_assign_could_not_be_sent_is_not_sent_the_second():
    from kit import noop

    async def body():
        out = _Out()
        admin = _with_a_trusted_worker(out)
        out.failing = True
        admin._apply(admin.state.submit([noop(i) for i in range(5)], now=0.1))
        return out.tries, admin.state

    tries, st = asyncio.run(body())
    # (found: [[0, 1], [2, 3, 4]]: the tasks queued ahead went to a worker found
    # unreachable, while those meant to start at once were requeued)
    assert tries == [["warm"], [0, 1]]
    assert [st.board.records[i].state.name for i in range(5)] == ["QUEUED"] * 5


@pytest.mark.timeout(30)
def test_the_edge_sends_no_direct_message_past_held_ones_its_queue_had_no_room_for():
    """Held messages go back a part at a time; one finds no room in the receiver's queue
    (held again): those after it in the same round were sent as room came back, and
    overtook it (its place is kept only if they are not tried: AdminState.forward_now)."""
    from kit import frames

    from ceylon_net import wire
    from ceylon_net.wire import Hello, Kind

    class Out:  # m1 finds no room, once; everything else goes
        def __init__(self) -> None:
            self.went: list[bytes] = []
            self.full_once = {b"m1"}

        def send(self, *a: Any, **k: Any) -> bool:
            return True

        def forward(self, peer: Any, kind: bytes, header: Any, payload: bytes) -> bool:
            if payload in self.full_once:
                self.full_once.discard(payload)
                return False
            self.went.append(payload)
            return True

        def publish(self, *a: Any, **k: Any) -> None:
            pass

    async def body():
        admin = Admin(settings=AdminSettings(port=0))
        st = admin.state
        st.started(0.0, 8000, 8001, 7)
        out = admin._out = Out()

        def hello(peer: bytes, name: str, at: float) -> None:
            admin._apply(st.receive(peer, frames(Kind.HELLO, Hello(name, "default", 10, 1, [],
                                                                   []), sender=name),
                                    "10.0.0.1", at))

        hello(b"s", "s", 0.0)
        hello(b"r", "r", 0.0)
        admin._apply(st.receive(b"r", frames(Kind.HEARTBEAT, wire.Heartbeat(  # (welcomed)
            [], False, -1, 0, []), sender="r"), "10.0.0.1", 0.0))
        for at in (1.0, 2.0, 3.0, 4.0):  # (r silent: taken for lost)
            admin._apply(st.receive(b"s", frames(Kind.HEARTBEAT, wire.Heartbeat(
                [], False, -1, 0, []), sender="s"), "10.0.0.1", at))
            admin._apply(st.tick(at))
        assert "r" in st.members.lost
        for i in range(4):
            header = wire.make_header("default", "s", None, "r")
            admin._apply(st.receive(b"s", wire.encode_frames(Kind.DIRECT, header,
                                                             f"m{i}".encode()),
                                    "10.0.0.1", 4.1))
        hello(b"r2", "r", 4.2)  # (back: m0 goes, m1 finds no room, m2 and m3 wait)
        first = list(out.went)
        admin._apply(st.timer(("deliver", "r"), 4.3))  # (m1 alone: it found no room)
        admin._apply(st.timer(("deliver", "r"), 4.5))  # (it went: the rest)
        return first, out.went

    first, went = asyncio.run(body())
    assert first == [b"m0"]  # (found: [m0, m2, m3], then m1)
    assert went == [b"m0", b"m1", b"m2", b"m3"]


@pytest.mark.timeout(30)
def test_the_round_that_queues_new_work_ahead_does_not_wait_for_the_receive_loop():
    """New work fills free slots in one round; the round that queues the rest ahead on the
    workers follows in the next turn of the loop. It decides nothing about what came in
    time, so it does not wait, as a deadline does, for the receive loop to read what reached
    the ROUTER (under a flood, up to CATCH_UP s: the workers ran dry meanwhile)."""
    from kit import noop

    class Sockets:  # frames always waiting to be read
        def caught_up(self) -> bool:
            return False

    async def body() -> list[list[Any]]:
        out = _Out()
        admin = _with_a_trusted_worker(out)
        admin._sockets = Sockets()  # type: ignore[assignment]
        admin._apply(admin.state.submit([noop(i) for i in range(5)], now=0.1))
        assert out.tries == [["warm"], [0, 1]]  # (its free slots, at once)
        for _ in range(5):  # (a few turns of the loop, far less than RECHECK)
            await asyncio.sleep(0)
        sent = list(out.tries)
        for t in admin._timers:
            t.cancel()
        return sent

    assert asyncio.run(body()) == [["warm"], [0, 1], [2, 3, 4]]
