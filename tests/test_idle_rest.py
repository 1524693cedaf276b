"""An idle admin among many workers reads their heartbeats a few at a time (AdminState.rest):
1,000 idle workers beat 200 times a second, and a wake-up of the admin for each was half its
idle CPU. The rest is for an admin with nothing to do: a task on a worker, the admin closing, or
anything submitted in its process ends it, and what comes is read at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from conftest import run
from kit import Sim, SimWorker, assigned, noop

from ceylon_net import Admin, AdminSettings, Task, Worker, wire
from ceylon_net.core import admin_state
from ceylon_net.core.admin_state import QUIET, REST, RESTFUL_BEATS
from ceylon_net.dev.testing import wait_until


def _joined(n: int) -> tuple[Sim, dict[str, SimWorker]]:
    """An admin state with ``n`` workers registered and heard (each beating once a second,
    --heartbeat 1, up to 200 of them), and the workers by name."""
    sim = Sim(hello_rate=1e6)
    return sim, {w.name: w for w in (sim.join(f"w{i}") for i in range(n))}


@contextlib.asynccontextmanager
async def _resting(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Admin]:
    """An in-process admin that rests a minute after each heartbeat (one worker makes it
    rest), with worker "w" joined, resting; stopped on the way out."""
    monkeypatch.setattr(admin_state, "REST", 60.0)
    monkeypatch.setattr(admin_state, "RESTFUL_BEATS", 0.5)
    admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0))
    serving = asyncio.create_task(admin.arun_admin(b"", [Worker("w", skill=5)]))
    try:
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "w to join")
        await wait_until(lambda: admin._rest.resting, 10, "the admin to rest")
        yield admin
    finally:
        await admin.stop()
        await asyncio.wait_for(serving, 10)


def test_an_idle_admin_among_many_workers_rests_after_their_heartbeats_not_with_a_task_out():
    many = int(RESTFUL_BEATS) + 20
    sim, workers = _joined(many)
    sim.tick(at=1.0)
    assert len(sim.st.members.registry) == many
    sim.now = 1.5
    assert workers["w0"].heartbeat() == []  # a heartbeat alone: nothing to do
    assert sim.st.rest(sim.now) == REST
    (name,) = assigned(sim.submit(noop(1)))
    sim.now = 2.0
    assert sim.st.rest(sim.now) == 0.0  # a task on a worker: its result is read as it comes
    workers[name].finish(1)
    sim.now += QUIET
    assert sim.st.rest(sim.now) == REST
    assert assigned(sim.submit(noop(2, difficulty=11))) == {}  # (above every worker's skill)
    sim.now += QUIET
    assert sim.st.rest(sim.now) == REST  # queued, none on a worker: no result is to come
    sim.st.close("over")
    assert sim.st.rest(sim.now) == 0.0  # closing: the workers' answers to its END are awaited


def test_an_admin_talked_to_or_talking_lately_reads_what_comes_at_once():
    """Not only heartbeats came or went in the last QUIET s (a result, a broadcast of the
    admin's, a submission): agents and clients talking through it, each answer would wait
    out a rest (a review: a worker-to-worker ping-pong 2 -> 15 ms)."""
    sim, workers = _joined(int(RESTFUL_BEATS) + 20)
    sim.now = 10.0
    ((name, (task,)),) = assigned(sim.submit(noop(1))).items()
    sim.now += 1.0
    assert sim.st.rest(sim.now) == 0.0  # (its task on a worker)
    header = wire.make_header(sim.st.workspace, sim.st.name, "str")
    for said in (lambda: workers[name].finish(task),
                 lambda: sim.st.broadcast(header, wire.packb("hello"), sim.now),
                 lambda: sim.submit(noop(2, difficulty=11))):
        sim.now += 1.0
        said()
        assert sim.st.rest(sim.now) == 0.0
        sim.now += QUIET / 2
        workers["w0"].heartbeat()
        assert sim.st.rest(sim.now) == 0.0  # (heartbeats since, and no more)
        sim.now += QUIET
        assert sim.st.rest(sim.now) == REST


def test_an_admin_among_fewer_workers_reads_each_heartbeat_as_it_comes():
    sim, _ = _joined(int(RESTFUL_BEATS) - 20)
    sim.tick(at=1.0)
    assert sim.st.rest(sim.now) == 0.0


def test_one_thousand_workers_beating_slower_still_make_the_admin_rest():
    sim, _ = _joined(1000)  # told to beat every 5 s: 200 beats a second
    sim.tick(at=1.0)
    assert sim.st.members.pulse.every == 5.0
    assert sim.st.rest(sim.now) == REST


@pytest.mark.timeout(60)
def test_a_resting_admin_reads_the_result_of_a_task_submitted_in_its_process_at_once(
        monkeypatch):
    """An admin that rests a minute after each heartbeat: execute() still returns as the
    result comes, twice over, and it stops at once."""
    async def body() -> list[bool]:
        results = []
        async with _resting(monkeypatch) as admin:
            for i in range(2):
                await wait_until(lambda: admin._rest.resting, 10, "the admin to rest")
                result = await asyncio.wait_for(admin.execute(Task(i, "t", 1, duration=0.01)),
                                                10)
                results.append(result.success)
            await wait_until(lambda: admin._rest.resting, 10, "the admin to rest")
        return results

    assert run(body()) == [True, True]


@pytest.mark.timeout(60)
def test_an_admin_does_not_rest_while_more_waits_to_be_read_than_it_reads_at_once(monkeypatch):
    """A burst of heartbeats larger than a read takes (RECV_BATCH) is read to its end before
    the admin rests (a review: it read a batch each rest, what came piled up unread, and
    workers were lost). Here it reads two messages at a time and rests 0.2 s: a burst of
    120 heartbeats read two a rest would take 12 s; read to its end first, a few ms."""
    import zmq
    import zmq.asyncio

    from ceylon_net import wire
    from ceylon_net.edge import admin as admin_module
    from ceylon_net.wire import Hello, Kind

    monkeypatch.setattr(admin_state, "REST", 0.2)
    monkeypatch.setattr(admin_state, "RESTFUL_BEATS", 0.5)
    monkeypatch.setattr(admin_module, "RECV_BATCH", 2)

    async def body() -> None:
        admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0))
        await admin.start()
        ctx = zmq.asyncio.Context()
        b = ctx.socket(zmq.DEALER)
        b.setsockopt(zmq.LINGER, 0)
        b.connect(f"tcp://127.0.0.1:{admin.port}")
        read: list[int] = []
        recv_batch = admin._sockets.recv_batch

        async def counted(*args, **kw):
            batch = await recv_batch(*args, **kw)
            read.extend(len(frames) for _, frames, _ in batch)
            return batch

        admin._sockets.recv_batch = counted

        def said(kind: bytes, msg) -> list[bytes]:
            header = wire.make_header(admin.workspace_id, "b", wire.type_name(msg))
            return wire.encode_frames(kind, header, wire.pack(msg))

        try:
            await b.send_multipart(said(Kind.HELLO, Hello("b", "default", 5, 1)))
            welcome = wire.decode_frames(await asyncio.wait_for(b.recv_multipart(), 10))
            assert welcome.kind == Kind.WELCOME

            heard = admin.state.broadcasts.seq  # (it hears PUB: not heartbeaten 50 times a second)
            beat = said(Kind.HEARTBEAT, wire.Heartbeat(pub=True, heard=heard, delivered=heard))

            async def rested() -> bool:  # (after a round in which nothing happened)
                await b.send_multipart(beat)
                return admin._rest.resting

            await wait_until(rested, 10, "the admin to rest")
            before = len(read)
            for _ in range(120):
                await b.send_multipart(beat)
            await wait_until(lambda: len(read) - before >= 120, 4, "the burst to be read")
            assert admin.state.peer_of("b") is not None  # (not lost: its beats were read)
        finally:
            await admin.close()
            b.close(0)
            ctx.term()

    run(body())


@pytest.mark.timeout(60)
def test_a_message_of_the_admins_own_to_an_agent_ends_its_rest_and_keeps_it_awake(monkeypatch):
    """The admin sends an agent a direct message: its answer is read as it comes, not after
    a rest (a review: 2 -> 9-20 ms, as a direct message counted as nothing said)."""
    async def body() -> tuple[bool, float]:
        async with _resting(monkeypatch) as admin:
            await admin.send("w", b"ping")
            return admin._rest.resting, admin.state.rest(time.monotonic())

    assert run(body()) == (False, 0.0)
