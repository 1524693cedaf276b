"""A worker's side of its session with the admin, without sockets: what it says once a
WELCOME comes (again: the admin restarted, or forgot it), and when its results leave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import run

from ceylon_net import wire
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge import worker as worker_module
from ceylon_net.edge.worker import Worker
from ceylon_net.wire import Kind


class _Sent:
    """Stands in for the worker's sockets: keeps the kind of each message sent."""

    sub = object()  # subscribed already
    busy = False

    def __init__(self) -> None:
        self.kinds: list[bytes] = []
        self.frames: list[list[bytes]] = []

    def send_soon(self, frames: list[bytes]) -> None:
        self.kinds.append(frames[0])
        self.frames.append(frames)

    def results(self) -> list[list[Any]]:
        """The task ids of each RESULT frame sent, in order."""
        return [[r.task_id for r in wire.unpack_batch(TaskResult, f[2])]
                for f in self.frames if f[0] == Kind.RESULT]

    def said(self, field: str) -> list[list[Any]]:
        """[task id, attempt] of every task the STARTED frames sent say ``field`` of
        ("started", "released")."""
        return [k for f in self.frames if f[0] == Kind.STARTED
                for k in getattr(wire.unpack(wire.Started, f[2]), field)]

    async def send(self, frames: list[bytes], timeout: Any = None) -> bool:
        self.send_soon(frames)
        return True

    def subscribe(self, host: str, pub_port: int, topics: Any) -> bool:
        return False  # where it was already

    def close(self) -> None:
        pass


def _welcomed(draining: bool) -> list[bytes]:
    w = Worker("w", "default", "127.0.0.1", 9999)
    sent = _Sent()
    w._sockets = sent  # type: ignore[assignment]
    w._draining = draining
    w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99))
    return sent.kinds


def test_a_draining_worker_welcomed_again_says_it_drains():
    """Its DRAIN went to the admin it registered with before: a new admin process would
    feed it work it cannot finish before its drain ends."""
    assert Kind.DRAIN in _welcomed(draining=True)
    assert Kind.DRAIN not in _welcomed(draining=False)


async def _turns(n: int = 5) -> None:
    """Let the event loop go round ``n`` times (not a wait for time to pass)."""
    for _ in range(n):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def _serving(gates: dict[Any, asyncio.Event]) -> AsyncIterator[tuple[Worker, _Sent]]:
    """A welcomed worker of 4 slots, its runner started, given a task of handler "test.gate"
    per gate (each ends when its gate is set); on the way out every gate is set and the
    runner stopped."""
    w = Worker("w", "default", "127.0.0.1", 9999, max_concurrent_tasks=4)
    sent = _Sent()
    w._sockets = sent  # type: ignore[assignment]
    w._welcome = wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99)
    w.runner.start(lambda crash: None)
    try:
        for tid in gates:
            w.runner.accept(TaskAssignment(Task(tid, "gated", 1, handler="test.gate",
                                                args=[tid])))
        await wait_until(lambda: len(w.runner.active) == min(4, len(gates)), 10,
                         "tasks to start")
        yield w, sent
    finally:
        for g in gates.values():
            g.set()
        await w.runner.stop()


def _gates(monkeypatch: pytest.MonkeyPatch, tids: tuple[Any, ...],
           hold: float) -> dict[Any, asyncio.Event]:
    """A gate per task id, and handler "test.gate" returning its id once its gate is set;
    results held ``hold`` s (far longer than a few loop turns: a held one does not show)."""
    gates = {tid: asyncio.Event() for tid in tids}

    async def gate(tid: Any) -> Any:
        await gates[tid].wait()
        return tid

    monkeypatch.setitem(handlers._HANDLERS, "test.gate", gate)
    monkeypatch.setattr(worker_module, "RESULT_HOLD", hold)
    return gates


@pytest.mark.timeout(30)
def test_results_of_a_queue_of_short_tasks_leave_together_and_one_beside_long_ones_at_once(
        monkeypatch):
    """While tasks wait in its queue, a result waits RESULT_HOLD for others to join it (a
    sync handler's results come back one at a time: a frame for each, and the admin spent
    its time on frames). With nothing queued, what it would wait for may be a long task: it
    leaves at the end of the loop turn."""
    gates = _gates(monkeypatch, ("a", "b", "long1", "long2", "q1", "q2"), hold=1.0)

    async def body() -> tuple[list[Any], ...]:
        async with _serving(gates) as (_, sent):  # a, b, long1, long2 run; q1, q2 wait
            gates["a"].set()
            await _turns()
            gates["b"].set()  # in another loop turn than a's: its own frame, before
            await _turns()
            held = sent.results()
            await wait_until(lambda: sent.results(), 10, "the held results to leave")
            together = sent.results()
            gates["q1"].set()  # (q1 and q2 took a's and b's slots: nothing is queued)
            await _turns()  # (no timer can fire in these turns: a held result would not show)
            return held, together, sent.results()[len(together):]

    held, together, beside = run(body())
    assert held == [] and together == [["a", "b"]] and beside == [["q1"]]


@pytest.mark.timeout(30)
def test_the_answers_to_a_release_are_said_without_waiting_for_results(monkeypatch):
    """A task given back, or one that had started (the RELEASE came too late): the admin's
    idle worker waits on either. Neither is held while tasks wait in the queue."""
    gates = _gates(monkeypatch, (1, 2, 3, 4, 5, 6), hold=5.0)

    async def body() -> tuple[Any, ...]:
        async with _serving(gates) as (w, sent):  # 1-4 run, 5 and 6 wait in the queue
            late = w.runner.release(1, 1)
            await _turns()
            said_started = [1, 1] in sent.said("started")  # (with the others' pending ones)
            given = w.runner.release(5, 1)
            await _turns()
            return late, said_started, given, sent.said("released")

    assert run(body()) == (False, True, True, [[5, 1]])


@pytest.mark.timeout(30)
def test_the_last_heartbeat_names_the_tasks_the_stop_cut_off_until_the_goodbye(monkeypatch):
    """A drain that timed out stops the tasks still running; the heartbeat sent before BYE
    left them out, and the admin said the worker 'never got' them (and '0 task(s) back in
    the queue' when it left). They are the worker's until its goodbye gives them back."""
    gates = _gates(monkeypatch, ("cut", "short"), hold=0.0)

    async def body() -> tuple[list[Any], list[bytes]]:
        async with _serving(gates) as (w, sent):
            gates["short"].set()
            await wait_until(lambda: ["short"] in sent.results(), 10, "short's result")
            w._end_reason = "stopped"
            await w._shutdown()  # (cut runs on: the stop cancels it)
            beats = [f for f in sent.frames if f[0] == Kind.HEARTBEAT]
            return wire.unpack(wire.Heartbeat, beats[-1][2]).holding, sent.kinds[-2:]

    holding, last = run(body())
    assert ["cut", 1] in holding and ["short", 1] in holding  # (short: not acknowledged yet)
    assert last == [Kind.HEARTBEAT, Kind.BYE]


def test_the_admins_message_limit_holds_while_the_worker_registers_again():
    """A worker taking 8 MB beside an admin taking 1 MiB: registering again (the admin went
    silent), it built a HELLO of its unacknowledged results to half of its own limit, 2.7 MB
    of three 900 kB results, which the admin's socket drops: it could never register again."""
    w = Worker("w", "default", "127.0.0.1", 9999, max_message_bytes=8_000_000)
    w._sockets = _Sent()  # type: ignore[assignment]
    w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99, max_message_bytes=1 << 20))
    for i in range(3):
        w.runner.unacked[(i, 1)] = TaskResult(i, "w", True, attempt=1, value="x" * 900_000)
    w._welcome = None  # (registering again)

    hello = w._hello()
    assert w.send_limit == 1 << 20
    assert len(wire.pack(hello)) < (1 << 20) // 2
    assert len(hello.results) == 0 and len(hello.running) == 3  # (they follow the WELCOME)


def test_a_worker_may_start_queued_tasks_only_while_the_admin_cannot_have_called_it_lost():
    """Its runner asks before each queued start: no when its last heartbeat went out, or the
    admin was last heard, long enough ago for the admin to have called it lost (liveness
    beats, less half a beat); a beat still coming at the old, slower pace is not late."""
    import time

    w = Worker("w")
    assert not w._in_touch()  # not registered
    w._welcome = wire.Welcome("w", "admin", 1, heartbeat=1.0, liveness=3)
    now = time.monotonic()

    def asked(beat_ago: float, heard_ago: float, every: float = 1.0) -> bool:
        w._beat_sent, w._admin_seen, w._beat_every = now - beat_ago, now - heard_ago, every
        return w._in_touch()

    assert asked(2.0, 2.0)
    assert not asked(2.7, 0.1) and "paused" in w._why_held
    assert not asked(0.1, 2.7) and w._why_held.startswith("admin silent for 2.7")
    assert asked(4.0, 0.1, every=5.0)  # (the pace went from 5 s to 1 s: this beat is on time)
    assert not asked(8.0, 0.1, every=5.0)
    w._welcome.liveness = 2  # (the least the admin takes: lost at 2 beats, we hold at 1.5)
    assert asked(1.4, 1.4) and not asked(1.6, 0.1) and not asked(0.1, 1.6)


class _Answering(_Sent):
    """... and what the admin sends reaches it in this order: ``coming``, each in turn."""

    def __init__(self, coming: list[list[bytes]]) -> None:
        super().__init__()
        self.coming = coming

    async def recv(self, timeout: float) -> list[bytes] | None:
        return self.coming.pop(0) if self.coming else None


def _from_admin(kind: bytes, payload: bytes, type_: str | None = None) -> list[bytes]:
    return wire.encode_frames(kind, wire.make_header("default", "admin", type_), payload)


def test_an_assignment_that_reaches_a_worker_registering_again_is_not_taken():
    """It heard nothing (a slow link): it registers again on the same connection, and the
    admin may meanwhile have called it lost and given its tasks to others who started them.
    An assignment still on its way reaches it before the WELCOME (TCP keeps the order) and
    is dropped: taken, it would run beside the other worker's copy (hypothesis found this
    sequence in the pipelined state machine). What reached it after the WELCOME is taken.
    The admin sends a dropped one again once the worker's next heartbeat does not hold it
    (Membership._reconcile); the state machine's teardown shows each such task ends once."""
    task = TaskAssignment(Task(0, "late", 1, handler="test.none"), attempt=1)
    fresh = TaskAssignment(Task(1, "after", 1, handler="test.none"), attempt=1)
    welcome = wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99)
    sockets = _Answering([
        _from_admin(Kind.ASSIGN, wire.pack_batch([task]), "TaskAssignment"),
        _from_admin(Kind.WELCOME, wire.pack(welcome), "Welcome")])
    w = Worker("w", "default", "127.0.0.1", 9999)
    w._sockets = sockets  # type: ignore[assignment]
    run(w._handshake())
    assert w._welcome is not None and w.runner.holding() == []
    assert sockets.kinds == [Kind.HELLO]
    w._dispatch(wire.decode_frames(_from_admin(Kind.ASSIGN, wire.pack_batch([fresh]),
                                               "TaskAssignment")))
    assert w.runner.holding() == [[1, 1]]


def test_a_worker_registering_again_says_in_its_hello_what_it_gave_back():
    """Registering again (its process paused, say), a worker gives back what was queued
    there, not started: its HELLO says so (Hello.released), as the admin reads that before
    the STARTED that says it too, and would otherwise take those tasks for assignments lost
    on the way (a WARNING of a link at fault, found by a review with a paused worker)."""
    async def body() -> wire.Hello:
        w = Worker("w", "default", "127.0.0.1", 9999, max_concurrent_tasks=1)
        w._sockets = _Sent()  # type: ignore[assignment]
        w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99))
        for i in range(3):  # (its runner is not started: all three wait in its queue)
            w.runner.accept(TaskAssignment(Task(i, "queued", 1), attempt=2))
        w._welcome = None  # (registering again: see _connected_session)
        w.runner.hold()
        assert w.runner.release_queued() == 3
        return w._hello()

    hello = run(body())
    assert (hello.running, hello.released) == ([], [[0, 2], [1, 2], [2, 2]])


def test_a_flood_of_messages_the_admin_could_not_deliver_is_a_line_a_minute(monkeypatch):
    """Each undelivered message was a WARNING line of the sender's (2,299 of them for an
    agent paused 5 s, in a review): the first is said, then, a minute on, how many came
    meanwhile; an admin's notice for several (Mailbox: held for one that did not come back)
    says how many."""
    from kit import Said

    clock = [100.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    w = Worker("w", "default", "127.0.0.1", 9999)
    nobody = {"to": "nobody", "reason": "no connected agent of that name"}
    with Said() as said:
        for _ in range(30):
            w._not_delivered(nobody)
        w._not_delivered({"to": "r", "reason": "it did not come back", "count": 7})
        clock[0] += 61.0
        w._not_delivered(nobody)
    assert said.lines == [
        "w: a message to 'nobody' was not delivered: no connected agent of that name",
        "w: 7 messages to 'r' were not delivered: it did not come back",
        "w: 30 messages to 'nobody' were not delivered: no connected agent of that name"]


def test_a_worker_catching_up_on_broadcasts_asks_for_more_as_half_of_the_last_came():
    """Paused 5 s in a burst, a worker asked for what it missed at once, then only on its
    heartbeats: the admin sends REPAIR_BATCH for one request, so it caught up at 1,000 a
    second (some 30 s, new broadcasts waiting behind). It asks again as soon as half of what
    was sent came (a pipeline clocked by what it takes in): once per half batch, not once per
    broadcast."""
    from ceylon_net.core.broadcasts import REPAIR_BATCH

    sent = _Sent()
    w = Worker("w", "default", "127.0.0.1", 9999)
    w._sockets = sent  # type: ignore[assignment]
    w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99))
    w._deliver = lambda *a: None  # type: ignore[method-assign]  # (what it delivers: no matter)

    def arrives(seq: int) -> None:
        header = wire.make_header("default", "other")
        header.seq, header.epoch = seq, 99
        w._numbered(wire.Envelope(Kind.BCAST, header, b"x"))

    arrives(1)  # (the first: it hears from here on, and says so)
    arrives(3 * REPAIR_BATCH + 2)  # (PUB again after the pause: 2 .. 3,001 missed)
    assert sent.kinds.count(Kind.HEARTBEAT) == 2  # (asked at once)
    asked = []
    for seq in range(2, 2 + 2 * REPAIR_BATCH):  # (what the admin sends again)
        before = sent.kinds.count(Kind.HEARTBEAT)
        arrives(seq)
        if sent.kinds.count(Kind.HEARTBEAT) > before:
            asked.append(seq)
    half = REPAIR_BATCH // 2
    assert asked == [1 + half, 1 + 2 * half, 1 + 3 * half, 1 + 4 * half]


def test_a_repair_that_fills_a_gap_does_not_walk_what_is_held_ahead_of_it():
    """With 5,000 broadcasts held ahead of a gap (PUB went on after a pause), each repair
    that filled it walked them all to decide whether to ask for more (sorted, 1.8 ms a
    repair with 10,000 held: a second and more of CPU for each 1,000 sent again). Now what
    is held is walked only for a heartbeat that lists what is missing."""

    class Counting(dict):  # (each key a lookup or a walk touches)
        touched = 0

        def __iter__(self):
            for key in super().__iter__():
                Counting.touched += 1
                yield key

        def __contains__(self, key: object) -> bool:
            Counting.touched += 1
            return super().__contains__(key)

    sent = _Sent()
    w = Worker("w", "default", "127.0.0.1", 9999)
    w._sockets = sent  # type: ignore[assignment]
    w._on_welcome(wire.Welcome("w", "admin", 1, 1.0, 3, epoch=99))
    w._deliver = lambda *a: None  # type: ignore[method-assign]

    def arrives(seq: int) -> None:
        header = wire.make_header("default", "other")
        header.seq, header.epoch = seq, 99
        w._numbered(wire.Envelope(Kind.BCAST, header, b"x"))

    arrives(1)
    for seq in range(3_002, 8_002):  # (held: 2 .. 3,001 missed)
        arrives(seq)
    w._inbox._held = Counting(w._inbox._held)
    beats = sent.kinds.count(Kind.HEARTBEAT)
    for seq in range(2, 1_002):  # (1,000 sent again)
        arrives(seq)
    beats = sent.kinds.count(Kind.HEARTBEAT) - beats
    assert 1 <= beats <= 3  # (asked for more as half of each 1,000 came)
    assert Counting.touched <= 20 * 1_000 + 5_001 * beats, Counting.touched


def test_the_first_reason_a_worker_found_itself_out_of_touch_is_the_one_it_says():
    """Its loop blocked (a sync handler holding the GIL, on a loaded machine), the heartbeat
    loop ran first: our beats had stopped (the cause, and which handler ran), so it held the
    queue and sent a beat; the next look found only the admin's messages not yet read, and
    "admin silent for 5.7 s" replaced the cause in what the worker said (the suite failed on
    it once)."""
    import time

    async def body() -> str:
        w = Worker("w")
        w._welcome = wire.Welcome("w", "admin", 1, heartbeat=0.25, liveness=3)
        now = time.monotonic()
        w._beat_sent, w._admin_seen, w._beat_every = now - 5.0, now - 5.7, 0.25
        assert not w._in_touch()
        w.runner.hold()  # (as the heartbeat loop does) ...
        w._beat_sent = time.monotonic()  # ... then its beat goes
        assert not w._in_touch()
        return w._why_held

    assert run(body()).startswith("no heartbeat of ours went out for 5.0 s")


def test_a_sigcont_explains_a_gap_only_when_the_process_ran_little_meanwhile(monkeypatch):
    """Stopped and continued, a process runs nothing: the gap in its heartbeats is the
    pause. A SIGCONT a supervisor sends a process that was not stopped must not hide a
    handler that held the loop busy meanwhile (a review). The loop thread's own CPU time
    counts: the process's, handler threads busy on other cores, hid a real pause (the
    review of that)."""
    import time

    from ceylon_net.edge import worker as worker_module

    w = Worker("w", "default", "127.0.0.1", 9999)
    since = time.monotonic() - 4.0
    monkeypatch.setattr(worker_module, "CONTINUED", [time.monotonic()])
    w._beat_cpu = time.thread_time()  # (no CPU since the beat: stopped)
    assert w._on_the_loop(since).startswith("; paused: this process was stopped")
    w._beat_cpu = time.thread_time() - 3.9  # (the loop busy all along: not a pause)
    assert "paused" not in w._on_the_loop(since)
    import hashlib
    import threading

    # Handler threads busy on both cores, the loop's thread waiting: more than half the gap
    # in the process's CPU time, none in the loop's; with a SIGCONT, a pause still.
    began, w._beat_cpu, cpu = time.monotonic(), time.thread_time(), time.process_time()
    busy = [threading.Thread(target=lambda: [hashlib.sha256(bytes(1 << 23)).digest()
                                             for _ in range(12)]) for _ in range(2)]
    for t in busy:
        t.start()
    for t in busy:
        t.join()
    gap, used = time.monotonic() - began, time.process_time() - cpu
    monkeypatch.setattr(worker_module, "CONTINUED", [time.monotonic()])
    assert w._on_the_loop(began).startswith("; paused"), (gap, used)


@pytest.mark.timeout(30)
def test_a_worker_told_the_run_is_over_names_the_results_the_admin_never_acknowledged(
        monkeypatch):
    """An admin that stopped on an error of its own tells its workers the run is over
    without acknowledging what it had not recorded: they left, dropping those results
    without a word (a review: a --results file on a full disk stopped the admin)."""
    from kit import Said, frames

    gates = _gates(monkeypatch, ("done", "acked"), hold=0.0)

    async def body() -> tuple[bool, list[str]]:
        async with _serving(gates) as (w, sent):
            gates["done"].set()
            gates["acked"].set()
            await wait_until(lambda: sum(map(len, sent.results())) == 2, 10, "both results")
            w._handle(frames(Kind.ACK, wire.Ack([["acked", 1]])))
            with Said() as said:
                over = w._handle(frames(Kind.END, wire.End("the admin failed: a bug")))
            return over, said.lines

    over, said = run(body())
    assert over
    assert said == ["w: the admin ended the run without acknowledging 1 result(s) of ours (the "
                    "admin failed: a bug); it runs their task(s) again if it restarts holding "
                    "them: 'done'"]


@pytest.mark.timeout(30)
def test_an_assignment_a_worker_cannot_read_is_answered_as_failed_and_the_others_run():
    """A frame of assignments, one of them with a field of a type the worker does not take
    (a difficulty of 1.0): the worker dropped the whole frame, and the admin, not hearing of
    the tasks, sent them again and again, for ever (a review: run_tasks() hung; the task
    beside it was held up 3 s). Now the others run, and the one it cannot read is answered
    as failed, saying why; one whose id it cannot tell either is dropped, said. A copy of a
    task it can read, in the same frame, runs, and only it answers (a review: both did)."""
    good = wire.to_wire(TaskAssignment(Task("good", "x", 1), attempt=1))
    bad = wire.to_wire(TaskAssignment(Task("bad", "x", 1), attempt=2))
    bad["task"]["difficulty"] = 1.0
    nameless = wire.to_wire(TaskAssignment(Task("nameless", "x", 1)))
    nameless["task"]["id"] = 1.5
    unreadable_good = wire.to_wire(TaskAssignment(Task("good", "x", 1), attempt=1))
    unreadable_good["task"]["difficulty"] = 1.0  # (a copy it cannot read, before one it can)
    frame = _from_admin(Kind.ASSIGN, wire.packb([unreadable_good, good, bad, nameless]),
                        "TaskAssignment")

    async def body() -> list[TaskResult]:
        async with _serving({}) as (w, sent):
            w._dispatch(wire.decode_frames(frame))
            w._dispatch(wire.decode_frames(frame))  # (sent again: answered once)
            await wait_until(lambda: sum(map(len, sent.results())) >= 2, 10, "two results")
            await _turns()
        return [r for f in sent.frames if f[0] == Kind.RESULT
                for r in wire.unpack_batch(TaskResult, f[2])]

    answered = run(body())
    assert sorted(r.task_id for r in answered) == ["bad", "good"]  # (each once)
    results = {r.task_id: r for r in answered}
    assert results["good"].success
    assert not results["bad"].success and results["bad"].attempt == 2
    assert "difficulty" in (results["bad"].error or "")
    assert results["bad"].error.startswith("the worker could not read its assignment")
