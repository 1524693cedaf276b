"""A worker's TaskRunner against what the admin says, message by message: cancels asked twice,
attempts given again while a run goes on, and the admin cancelling the copy a worker held
while it gives it the task again (a worker back from a partition; a new admin process that
reuses the task ids). Driven with a real runner; the admin's side is the pure AdminState
(tests/kit.py), with no sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import weakref
from typing import Any

import pytest
from conftest import run
from kit import Said, Sim, noop
from loguru import logger

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.board import TaskState
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge import runner as runner_module
from ceylon_net.edge.loop import STOP_GRACE
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.wire import Kind


class Gated:
    """A run_task whose tasks wait until released (``open``), recording each start."""

    def __init__(self) -> None:
        self.gates: dict[Any, asyncio.Event] = {}
        self.started: list[Any] = []

    async def __call__(self, task: Task) -> TaskResult:
        self.started.append(task.id)
        await self.gates.setdefault(task.id, asyncio.Event()).wait()
        return TaskResult(task.id, "w", True)

    def open(self, task_id: Any) -> None:
        self.gates.setdefault(task_id, asyncio.Event()).set()


def _runner(capacity: int = 1) -> tuple[TaskRunner, Gated, list[Any]]:
    tasks, crashes = Gated(), []
    runner = TaskRunner("w", capacity, tasks, lambda: None)
    runner.start(crashes.append)
    return runner, tasks, crashes


async def _running(task: Task) -> tuple[TaskRunner, Gated, list[Any]]:
    """A runner of one slot, running ``task`` (attempt 1)."""
    runner, tasks, crashes = _runner(capacity=1)
    runner.accept(TaskAssignment(task, "w", 1))
    await wait_until(lambda: tasks.started == [task.id], 5, f"{task.id} to start")
    return runner, tasks, crashes


async def _all_answers(runner: TaskRunner, n: int) -> list[TaskResult]:
    """The runner's first ``n`` answers, once all are in; then it is stopped."""
    got: list[TaskResult] = []

    def all_in() -> bool:
        got.extend(runner.take_unsent())
        return len(got) == n

    await wait_until(all_in, 10, f"{n} answers")
    await runner.stop()
    return got


def _handled(tasks: list[Task]) -> dict[Any, TaskResult]:
    """``tasks`` run by a runner of 8 slots whose run_task calls their handlers (as a
    worker's does), each given once: their results, by task id."""
    async def run_task(task: Task) -> TaskResult:
        value = await handlers.call(task.handler, task.args, task.kwargs)
        return TaskResult(task.id, "w", True, value=value)

    async def body() -> list[TaskResult]:
        runner = TaskRunner("w", 8, run_task, lambda: None)
        runner.start(lambda crash: None)
        for task in tasks:
            runner.accept(TaskAssignment(task, "w", 1))
        return await _all_answers(runner, len(tasks))

    return {r.task_id: r for r in run(body())}


def _answers(runner: TaskRunner) -> list[tuple[Any, int, bool]]:
    return [(r.task_id, r.attempt, r.cancelled) for r in runner.take_unsent()]


def test_a_task_cancelled_twice_is_cancelled_once_and_its_slot_runs_the_next():
    async def body():
        runner, tasks, crashes = await _running(Task("T", "t", 1))
        # The user cancelled twice: two CANCELs, handled before the runner resumes.
        runner.cancel("T", 1, "cancelled by request")
        runner.cancel("T", 1, "cancelled by request")
        runner.accept(TaskAssignment(Task("U", "u", 1), "w", 1))
        await wait_until(lambda: tasks.started == ["T", "U"], 5, "U to start on the one slot")
        tasks.open("U")
        await wait_until(lambda: len(runner.unsent) == 2, 5, "both answers")
        assert _answers(runner) == [("T", 1, True), ("U", 1, False)]
        assert not crashes and all(not r.done() for r in runner._runners)
        await runner.stop()

    run(body())


def test_the_attempt_a_running_task_answers_for_can_be_cancelled_and_asked_back():
    async def body():
        t = Task("T", "t", 1)
        runner, tasks, _ = await _running(t)
        runner.accept(TaskAssignment(t, "w", 2))  # given again while it runs: merged
        assert runner.holding() == [["T", 2]]
        # Asked back as attempt 2: too late, it started (said as attempt 2).
        assert runner.release("T", 2) is False
        assert ("T", 2) in runner.starts
        runner.cancel("T", 2, "cancelled by request")
        await wait_until(lambda: runner.unsent, 5, "the cancelled answer")
        assert _answers(runner) == [("T", 2, True)]
        assert tasks.started == ["T"]
        await runner.stop()

    run(body())


def _carry_to(runner: TaskRunner, peer: bytes, cmds: list[Any]) -> None:
    """What the worker does with the admin's commands to it, in the order they were sent."""
    for cmd in cmds:
        if getattr(cmd, "peer", None) != peer:
            continue
        if isinstance(cmd, c.Send) and cmd.kind == Kind.CANCEL:
            for task_id, attempt in cmd.msg.tasks:
                runner.cancel(task_id, attempt, cmd.msg.reason)
        elif isinstance(cmd, c.Assign):
            for a in cmd.assignments:
                runner.accept(a)


def test_a_worker_back_from_a_partition_runs_its_task_again_not_cancelled():
    async def body():
        sim = Sim(max_attempts=3)
        sim.submit(noop("T"))
        w = sim.join("w", capacity=1)
        runner, tasks, _ = _runner(capacity=1)
        runner.accept(TaskAssignment(sim.st.board.records["T"].task, "w", 1))
        await wait_until(lambda: tasks.started == ["T"], 5, "T to start")
        w.start("T")
        sim.tick(at=10.0)  # silent too long: declared lost, T back in the queue
        x = sim.join("x")  # T goes to x (attempt 2), and x is lost too
        assert x.held == {"T": 2}
        sim.tick(at=20.0)
        assert sim.st.board.records["T"].state is TaskState.QUEUED
        # w comes back (a new connection) saying it still runs T, attempt 1. The admin
        # cancels that copy and gives T to it again (attempt 3), in the same round.
        w.held, w.peer = dict(runner.holding()), b"w/back"
        sim.workers[w.peer] = w
        cmds = w.hello()
        assert [m.msg.tasks for m in cmds if isinstance(m, c.Send) and m.kind == Kind.CANCEL] \
            == [[["T", 1]]]
        _carry_to(runner, w.peer, cmds)
        await wait_until(lambda: tasks.started == ["T", "T"], 5, "T to run again")
        tasks.open("T")
        await wait_until(lambda: runner.unsent, 5, "T's result")
        results = runner.take_unsent()
        assert [(r.task_id, r.attempt, r.cancelled) for r in results] == [("T", 3, False)]
        w.say(Kind.RESULT, results)
        assert sim.st.board.records["T"].state is TaskState.COMPLETED
        await runner.stop()

    run(body())


def test_a_new_admin_process_reusing_task_ids_gets_its_own_task_run():
    async def body():
        old = Sim()
        old.submit(noop(1), noop(2))
        runner, tasks, _ = _runner(capacity=1)
        old.join("w", capacity=1)
        runner.accept(TaskAssignment(old.st.board.records[1].task, "w", 1))
        await wait_until(lambda: tasks.started == [1], 5, "task 1 to start")
        # That admin is gone; a new one (no journal) runs the same tasks. The worker tells
        # it what it holds: task 1, attempt 1, which the new admin cancels as not its own
        # while it gives its own task 1, also attempt 1, to the same worker.
        new = Sim()
        new.submit(noop(1), noop(2))
        w = new.worker("w", capacity=1)
        w.held = dict(runner.holding())
        _carry_to(runner, w.peer, w.hello())
        await wait_until(lambda: tasks.started == [1, 1], 5, "the new task 1 to run")
        tasks.open(1)
        await wait_until(lambda: runner.unsent, 5, "task 1's result")
        results = runner.take_unsent()
        assert [(r.task_id, r.cancelled) for r in results] == [(1, False)]
        w.say(Kind.RESULT, results)
        assert new.st.board.records[1].state is TaskState.COMPLETED
        await runner.stop()

    run(body())


def test_given_back_or_cancelled_while_waiting_for_its_old_run_to_stop():
    async def body():
        t = Task("T", "t", 1)
        runner, tasks, _ = await _running(t)
        runner.cancel("T", 1, "not yours any more")
        runner.accept(TaskAssignment(t, "w", 2))  # waits for the old run to stop
        assert runner.holding() == [["T", 2]]
        assert runner.release("T", 2) is True  # not started: given back
        await wait_until(lambda: runner.idle, 5, "the runner to be idle")
        assert runner.released == [("T", 2)] and tasks.started == ["T"]
        assert _answers(runner) == [("T", 1, True)]  # the old run's answer, nothing else
        runner.accept(TaskAssignment(Task("U", "u", 1), "w", 1))
        runner.cancel("U", 1, "stop")
        runner.accept(TaskAssignment(Task("U", "u", 1), "w", 2))
        runner.cancel("U", 2, "stop again")  # the waiting one is cancelled at once
        await wait_until(lambda: runner.idle, 5, "the runner to be idle again")
        assert ("U", 2, True) in _answers(runner)
        await runner.stop()

    run(body())


class Threaded:
    """A sync handler registered as ``name`` while in a ``with`` block: its first run holds
    its thread until ``release`` (a thread cannot be stopped, so it outlives its task); it
    counts how many run at once, and keeps the runner's warnings."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock, self.release = threading.Lock(), threading.Event()
        self.entered: list[str] = []
        self.inside = self.most = 0
        self.warned: list[str] = []

    def work(self, key: str) -> str:
        with self.lock:
            first = not self.entered
            self.entered.append(key)
            self.inside += 1
            self.most = max(self.most, self.inside)
        if first:
            self.release.wait(10)
        with self.lock:
            self.inside -= 1
        return key

    async def run_task(self, task: Task) -> TaskResult:
        value = await handlers.call(task.handler, task.args, task.kwargs)
        return TaskResult(task.id, "w", True, value=value)

    def went_on(self) -> bool:
        """The runner took its next step: the next run entered, or the slot waits."""
        return len(self.entered) > 1 or any("one slot waits" in m for m in self.warned)

    def __enter__(self) -> Threaded:
        handlers.handler(self.name)(self.work)
        self._sink = logger.add(lambda m: self.warned.append(m.record["message"]),
                                level="WARNING")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        logger.remove(self._sink)
        handlers._HANDLERS.pop(self.name, None)


def test_a_sync_handler_that_outlives_its_time_limit_keeps_its_slot():
    async def body(th: Threaded):
        runner = TaskRunner("w", 1, th.run_task, lambda: None)
        runner.start(lambda crash: None)
        for name, timeout in (("slow", 0.05), ("next", None)):
            runner.accept(TaskAssignment(Task(name, name, 1, handler=th.name, args=[name],
                                              timeout=timeout), "w", 1))
        await wait_until(lambda: runner.unsent, 5, "slow to time out")
        # Said with its result: the slot is its thread's (the admin sends one task fewer).
        assert runner.take_news()[2] == 1
        assert [(r.task_id, r.success, r.error) for r in runner.take_unsent()] == [
            ("slow", False, "timed out after 0.05 s")]
        await wait_until(th.went_on, 5, "the runner to go on")
        assert (runner.news, runner.stuck) == (False, 1)
        th.release.set()
        await wait_until(lambda: runner.unsent, 5, "next's result")
        assert runner.take_news()[2] == 0 and runner.take_news()[2] == -1  # said once
        assert [(r.task_id, r.value) for r in runner.take_unsent()] == [("next", "next")]
        await runner.stop()

    with Threaded("test_runner.slow") as th:
        run(body(th))
    assert th.entered == ["slow", "next"]
    assert th.most == 1, f"{th.most} handlers ran at once on a worker of concurrency 1"


def test_a_drain_does_not_wait_for_a_thread_that_outlived_its_task():
    # The worker's stop waits for its tasks, not for a thread it cannot stop (it exits
    # without it): with only such a thread left, the runner is idle.
    async def body(th: Threaded):
        runner = TaskRunner("w", 1, th.run_task, lambda: None)
        runner.start(lambda crash: None)
        runner.accept(TaskAssignment(Task("slow", "s", 1, handler=th.name, args=["slow"],
                                          timeout=0.05), "w", 1))
        await wait_until(lambda: runner.unsent, 5, "slow to time out")
        assert await runner.drain(5.0), "the drain waited for the thread"
        assert runner.stuck == 1 and th.entered == ["slow"]
        th.release.set()
        await runner.stop()

    with Threaded("test_runner.drained") as th:
        run(body(th))


class Stubborn:
    """A run_task whose task "S" is an async handler that catches every CancelledError until
    ``let_go`` is set; other tasks end at once."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()
        self.started: list[Any] = []

    async def __call__(self, task: Task) -> TaskResult:
        self.started.append(task.id)
        while task.id == "S" and not self.let_go.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.let_go.wait()
        return TaskResult(task.id, "w", True)


def _stubborn_run(stop: str) -> None:
    """``stop``: "limit" (S has a time limit) or "cancel" (S is cancelled)."""
    async def body():
        stub, crashes = Stubborn(), []
        runner = TaskRunner("w", 1, stub, lambda: None)
        runner.start(crashes.append)
        runner.accept(TaskAssignment(Task("S", "s", 1, timeout=0.2 if stop == "limit" else None),
                                     "w", 1))
        runner.accept(TaskAssignment(Task("next", "n", 1), "w", 1))
        await wait_until(lambda: stub.started == ["S"], 5, "S to start")
        if stop == "cancel":
            runner.cancel("S", 1, "by request")
        await wait_until(lambda: runner.unsent, 10, "S to be answered")
        (r,) = runner.take_unsent()
        if stop == "limit":
            assert (r.task_id, r.success, r.cancelled) == ("S", False, False)
            assert r.error == ("timed out after 0.2 s (its handler did not stop when told: it "
                               "catches CancelledError)")
        else:
            assert (r.task_id, r.error, r.cancelled) == ("S", "cancelled: by request", True)
        # Answered, it is not held any more; its slot waits for the handler.
        assert runner.holding() == [["next", 1]] and runner.take_news()[2] == 1
        assert stub.started == ["S"] and runner.stuck == 1
        stub.let_go.set()
        await wait_until(lambda: runner.unsent, 5, "next's result")
        assert _answers(runner) == [("next", 1, False)]  # S is not answered twice
        assert stub.started == ["S", "next"] and runner.stuck == 0 and not crashes
        assert runner.idle
        await runner.stop()

    run(body())


def test_an_async_handler_that_will_not_stop_is_answered_when_its_time_is_up():
    _stubborn_run("limit")


def test_an_async_handler_that_will_not_stop_is_answered_when_cancelled():
    _stubborn_run("cancel")


def test_a_handler_left_behind_at_stop_after_its_task_was_answered_is_named_by_its_task():
    async def body():
        stub, said = Stubborn(), []
        sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")
        try:
            runner = TaskRunner("w", 1, stub, lambda: None)
            runner.start(lambda crash: None)
            runner.accept(TaskAssignment(Task("S", "s", 1, timeout=0.1), "w", 1))
            await wait_until(lambda: runner.unsent, 10, "S's answer")
            await runner.stop()
        finally:
            logger.remove(sink)
            stub.let_go.set()
        return said

    said = run(body())
    assert any(m.endswith("left behind: task 'S'") for m in said), said


def test_a_task_given_again_while_its_async_handler_will_not_stop_runs_in_a_free_slot():
    # The admin cancelled the copy we held and gave it to us again (we came back from a
    # partition): it waited for the old run to end, which this handler never does.
    async def body():
        stub, crashes = Stubborn(), []
        runner = TaskRunner("w", 2, stub, lambda: None)
        runner.start(crashes.append)
        runner.accept(TaskAssignment(Task("S", "s", 1), "w", 1))
        await wait_until(lambda: stub.started == ["S"], 5, "S to start")
        runner.cancel("S", 1, "reassigned while away")
        runner.accept(TaskAssignment(Task("S", "s", 1), "w", 2))
        await wait_until(lambda: stub.started == ["S", "S"], 10, "attempt 2 to start")
        # Attempt 1 is not answered (its answer would be taken for attempt 2's).
        assert (runner.take_unsent(), runner.stuck, runner.holding()) == ([], 1, [["S", 2]])
        stub.let_go.set()
        await wait_until(lambda: runner.unsent and not runner.stuck, 5, "both to end")
        assert _answers(runner) == [("S", 2, False)]
        assert not crashes and runner.idle
        await runner.stop()

    run(body())


async def _answer_of(run_task: Any, task: Task) -> tuple[TaskRunner, TaskResult]:
    """A runner of one slot given ``task`` (attempt 1), and its one answer."""
    runner = TaskRunner("w", 1, run_task, lambda: None)
    runner.start(lambda crash: None)
    runner.accept(TaskAssignment(task, "w", 1))
    await wait_until(lambda: runner.unsent, 10, f"{task.id}'s answer")
    (r,) = runner.take_unsent()
    return runner, r


def test_a_loop_held_up_past_the_limit_and_the_grace_does_not_make_a_handler_stubborn():
    # Both timers were due in one turn of the loop: the handler was called one that catches
    # the cancel before its cancel had even reached it.
    async def blocks(task: Task) -> TaskResult:
        time.sleep(1.5)  # an async handler that blocks the event loop
        await asyncio.sleep(0.01)
        return TaskResult(task.id, "w", True)

    async def body():
        runner, r = await _answer_of(blocks, Task("B", "b", 1, timeout=0.2))
        assert (r.success, r.error) == (False, "timed out after 0.2 s")
        await asyncio.sleep(STOP_GRACE + 0.2)  # (what would come late: nothing must)
        assert (runner.stuck, runner.take_unsent()) == (0, [])
        await runner.stop()

    run(body())


def test_an_async_handler_that_catches_its_limit_and_returns_is_said_to_have_done_so():
    # It was said to block the event loop (a wrong cause, and a wrong fix to look for).
    async def catches(task: Task) -> TaskResult:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its clean-up, then it returns
        return TaskResult(task.id, "w", True)

    async def body():
        runner, r = await _answer_of(catches, Task("C", "c", 1, timeout=0.2))
        assert (r.success, r.error, runner.stuck) == (
            False, "timed out after 0.2 s (its handler caught the cancel, then returned)", 0)
        await runner.stop()

    run(body())


def test_a_task_given_again_while_its_sync_handler_outlives_the_cancel_waits_for_the_thread():
    async def body(th: Threaded):
        runner = TaskRunner("w", 1, th.run_task, lambda: None)
        runner.start(lambda crash: None)
        t = Task("T", "t", 1, handler=th.name, args=["T"])
        runner.accept(TaskAssignment(t, "w", 1))
        await wait_until(lambda: th.entered == ["T"], 5, "T's thread to start")
        # The admin cancels the copy held here and gives the task again, in one round.
        runner.cancel("T", 1, "reassigned while away")
        runner.accept(TaskAssignment(t, "w", 2))
        assert runner.held == 1  # the same task: its run being stopped, its next one after
        await wait_until(th.went_on, 5, "the runner to go on")
        th.release.set()
        await wait_until(lambda: runner.unsent, 5, "T's answer")
        assert [(r.task_id, r.attempt, r.cancelled) for r in runner.take_unsent()] == [
            ("T", 2, False)]
        await runner.stop()

    with Threaded("test_runner.again") as th:
        run(body(th))
    assert th.most == 1, f"{th.most} handlers ran at once on a worker of concurrency 1"


def test_a_cancel_that_comes_as_a_timed_task_ends_does_not_leave_its_runner_to_die():
    async def body():
        runner, tasks, crashes = await _running(Task("A", "a", 1, timeout=30))
        tasks.open("A")  # A finishes ...
        runner.cancel("A", 1, "cancelled by request")  # ... as its cancel comes in
        await wait_until(lambda: runner.unsent, 5, "A's answer")
        runner.take_unsent()  # (wait_for returned A's result: it completed)
        runner.accept(TaskAssignment(Task("B", "b", 1), "w", 1))
        await wait_until(lambda: tasks.started == ["A", "B"], 5, "B to start")
        runner.cancel("B", 1, "cancelled by request")
        await wait_until(lambda: runner.unsent or runner._runners[0].done(), 5,
                         "B's answer, or the runner's end")
        assert _answers(runner) == [("B", 1, True)]
        assert not runner._runners[0].done() and not crashes
        runner.accept(TaskAssignment(Task("C", "c", 1), "w", 1))
        await wait_until(lambda: tasks.started == ["A", "B", "C"], 5, "C to start")
        await runner.stop()

    run(body())


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class Misbehaving:
    """A run_task doing, per task id, what user code does wrong."""

    async def __call__(self, task: Task) -> TaskResult:
        what = task.id.split("-")[0]
        if what == "cancelled":  # awaits a future someone cancelled
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        if what == "exit":
            raise SystemExit(3)
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "own":
            raise TimeoutError("upstream API timed out")
        if what == "surrogate":  # a file name from os.listdir that is not UTF-8
            raise ValueError("unexpected file name: caf\udce9.txt")
        if what == "badstr":
            raise BadStr
        if what == "longmsg":
            raise ValueError("y" * 100_000)
        if what == "blocks":
            threading.Event().wait(0.3)  # an async handler calling something blocking
        value = {"set": {1, 2}, "huge": "x" * 2_000_000, "long": list(range(150_000)),
                 "intkeys": {1: "a"}}.get(what, what)
        return TaskResult(task.id, "w", True, value=value)


def test_whatever_a_task_raises_or_returns_it_ends_in_a_result_and_the_runner_goes_on():
    """None of these may stop the runner (a slot lost for good), kill the worker (and then
    the next one the task goes to), or leave a result the admin cannot take (sent again for
    ever)."""
    from ceylon_net.edge.worker import Worker

    async def body():
        crashes: list[Any] = []
        runner = TaskRunner("w", 1, Misbehaving(), lambda: None,
                            Worker("w", "default", "127.0.0.1", 9999)._unsendable)
        runner.start(crashes.append)
        ids = ["cancelled-1", "exit-1", "interrupt-1", "own-1", "blocks-1", "set-1", "huge-1",
               "long-1", "intkeys-1", "surrogate-1", "badstr-1", "longmsg-1", "ok-1"]
        for tid in ids:
            timeout = 30.0 if tid == "own-1" else 0.1 if tid == "blocks-1" else None
            runner.accept(TaskAssignment(Task(tid, tid, 1, timeout=timeout), "w", 1))
        await wait_until(lambda: len(runner.unsent) == len(ids), 10, "every answer")
        answers = {r.task_id: r for r in runner.take_unsent()}
        alive = not crashes and not runner._runners[0].done()
        await runner.stop()
        return answers, alive

    answers, alive = run(body())
    assert alive
    assert answers.pop("ok-1").value == "ok"
    assert all(not r.success and not r.cancelled for r in answers.values())
    last = {t: r.error.strip().splitlines()[-1] for t, r in answers.items()}
    assert last["cancelled-1"] == "asyncio.exceptions.CancelledError"
    assert last["exit-1"] == "SystemExit: 3"
    assert last["interrupt-1"] == "KeyboardInterrupt"
    assert last["own-1"] == "TimeoutError: upstream API timed out"  # not "timed out after 30 s"
    assert answers["blocks-1"].error.startswith("timed out after 0.1 s: it ran 0.3")
    assert answers["set-1"].error == (  # what in the value is wrong, not the wire's list
        "its return value cannot be sent to the admin: LocalProtocolError: cannot encode set: "
        "can not serialize 'set' object")
    assert "over the 1,047,552 a message may carry" in answers["huge-1"].error
    assert answers["long-1"].error == ("its return value cannot be sent to the admin: it has a "
                                       "list of 150,000 items (at most 100,000)")
    assert answers["intkeys-1"].error == (
        "its return value cannot be sent to the admin: it has a map with a key of type int "
        "(1): a map's keys on the wire are strings")
    assert last["surrogate-1"] == "ValueError: unexpected file name: caf\\udce9.txt"
    assert last["badstr-1"].startswith("test_runner.BadStr: <exception str() failed>")
    assert last["longmsg-1"].startswith("ValueError: yyyy") and \
        last["longmsg-1"].endswith("... (cut: 100,012 characters)")
    assert len(answers["longmsg-1"].error) < 66_000
    assert answers["longmsg-1"].error.startswith("Traceback (most recent call last):")
    from ceylon_net import wire
    wire.unpack_batch(TaskResult, wire.pack_batch(list(answers.values())))  # all sendable


def test_a_task_that_catches_its_cancel_and_returns_is_reported_cancelled():
    async def swallows(task: Task) -> TaskResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return TaskResult(task.id, "w", True, value="swallowed")
        return TaskResult(task.id, "w", True)

    async def body():
        runner = TaskRunner("w", 1, swallows, lambda: None)
        runner.start(lambda crash: None)
        runner.accept(TaskAssignment(Task("T", "t", 1), "w", 1))
        await wait_until(lambda: runner.active, 5, "T to start")
        await asyncio.sleep(0)  # (into its sleep)
        runner.cancel("T", 1, "not needed")
        await wait_until(lambda: runner.unsent, 5, "T's answer")
        [r] = runner.take_unsent()
        await runner.stop()
        return r

    r = run(body())
    assert (r.success, r.cancelled, r.error) == (False, True, "cancelled: not needed")


def test_sync_handlers_many_at_once_answer_each_call_and_stop_iteration_is_a_failure():
    """Sync handlers' threads hand results back to the loop in batches: every call gets its
    own answer, in any order they end; a StopIteration (next() on an exhausted iterator),
    which an asyncio future refuses, fails its task instead of leaving it waiting for ever."""
    def double(x: int) -> int:
        if x == 7:
            return next(iter(()))
        if x == 9:
            raise ValueError("nine")
        return 2 * x

    handlers.handler("test_runner.double")(double)
    try:
        results = _handled([Task(i, "d", 1, handler="test_runner.double", args=[i % 10])
                            for i in range(200)])
    finally:
        handlers._HANDLERS.pop("test_runner.double", None)
    for i, r in results.items():
        if i % 10 == 7:
            assert not r.success and "the handler raised StopIteration" in r.error, r.error
        elif i % 10 == 9:
            assert not r.success and "ValueError: nine" in r.error
        else:
            assert r.success and r.value == 2 * (i % 10)
    assert handlers.running() == 0


def test_sync_calls_that_block_each_get_a_thread_though_they_came_together(monkeypatch):
    """Calls that come in one loop turn wake one thread, which wakes the next as it takes a
    call and sees more waiting: 8 calls that each wait for all the others (a barrier) end only
    if the 8 run at once, on threads of a fresh pool."""
    barrier = threading.Barrier(8, timeout=20)
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.meet", barrier.wait)
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())

    async def body() -> list[int]:
        calls = [handlers.call("test_runner.meet", [], {}) for _ in range(8)]
        return await asyncio.wait_for(asyncio.gather(*calls), 30)

    assert sorted(run(body())) == list(range(8))  # (each its own place at the barrier)
    assert handlers._THREADS._made == 8 and handlers.running() == 0


def test_a_sync_call_that_outlives_its_event_loop_does_not_keep_the_loop_alive():
    """Its answer, which no closed loop can take, held the loop (and the answer) for ever."""
    release = threading.Event()

    def outlive() -> bytes:
        release.wait(10)
        return b"x" * 1_000_000

    async def body(refs: list) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handlers.call("test_runner.outlive", [], {}), 0.05)
        refs.append(weakref.ref(asyncio.get_running_loop()))

    handlers.handler("test_runner.outlive")(outlive)
    refs: list = []
    try:
        for _ in range(3):
            asyncio.run(body(refs))
        release.set()  # the threads answer now, to loops that are closed
        _collected(refs)  # (the threads' answers are on their way)
    finally:
        release.set()
        handlers._HANDLERS.pop("test_runner.outlive", None)
    assert [r() for r in refs] == [None, None, None]


def test_a_cancelled_sync_call_holds_its_slot_exactly_until_its_thread_has_ended(monkeypatch):
    """Whichever order the cancel, the thread's answer and its delivery come in, the runner's
    slot waits for a thread that runs on, and only for one that does (a wait for one that
    has ended would never end). The loop is held still (a blocking wait on it) to fix the
    order in which its callbacks run."""
    gate, answered, entered = threading.Event(), threading.Event(), threading.Event()
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.gated",
                        lambda: entered.set() or gate.wait(10))
    put, deliver = handlers._Back.put, handlers._Back._deliver
    at_delivery: list[asyncio.Task] = []

    def put_then_say(self: Any, *a: Any) -> None:
        put(self, *a)
        answered.set()

    def deliver_then_cancel(self: Any) -> None:
        deliver(self)
        while at_delivery:
            at_delivery.pop().cancel()  # it has its answer, and has not run on with it

    monkeypatch.setattr(handlers._Back, "put", put_then_say)
    monkeypatch.setattr(handlers._Back, "_deliver", deliver_then_cancel)

    async def left_by(order: str) -> list[asyncio.Future[Any]]:
        gate.clear(), answered.clear(), entered.clear()
        left: list[asyncio.Future[Any]] = []
        task = asyncio.create_task(_call_in_slot("test_runner.gated", left))
        await asyncio.sleep(0)  # (the task has made its call)
        assert entered.wait(10)  # (the loop held until a thread runs it)
        if order == "cancel, then the answer":  # the task's step runs before the delivery
            task.cancel()
        if order == "cancel at delivery":
            at_delivery.append(task)
        if order == "cancel while it runs":
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert len(left) == 1 and not left[0].done()  # the slot waits for the thread
        gate.set()
        assert answered.wait(10)  # (the loop held until the thread has answered)
        if order == "answer, then cancel":  # the delivery comes before the task's step
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), order
        if left:
            await asyncio.wait_for(asyncio.wait(left), 10)  # its thread's end frees the slot
        return left

    async def body() -> None:
        assert len(await left_by("cancel while it runs")) == 1  # resolved as the thread ends
        assert len(await left_by("cancel, then the answer")) == 1  # resolved by its delivery
        assert await left_by("answer, then cancel") == []
        assert await left_by("cancel at delivery") == []

    try:
        run(body())
    finally:
        gate.set()


def _collected(refs: list[weakref.ref[Any]], seconds: float = 10) -> None:
    """Collect garbage until nothing ``refs`` refer to is alive, for ``seconds`` at most
    (the caller asserts on what is left)."""
    deadline = time.monotonic() + seconds
    while any(r() is not None for r in refs) and time.monotonic() < deadline:
        gc.collect()
        threading.Event().wait(0.02)


async def _call_in_slot(name: str, left: list[asyncio.Future[Any]]) -> Any:
    """A sync handler's call as a runner's slot makes it."""
    handlers.THREADS_LEFT.set(left)
    return await handlers.call(name, [], {})


def test_a_sync_call_whose_thread_cannot_be_made_fails_and_leaves_nothing_behind(monkeypatch):
    """Out of threads: the call raises, and runs neither later nor twice (it used to wait in
    the queue, run on the next thread made, outside any slot, and count itself ended twice)."""
    ran: list[str] = []
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.first", lambda: ran.append("first"))
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.second",
                        lambda: ran.append("second") or "ok")
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())
    start = threading.Thread.start

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def body() -> None:
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        monkeypatch.setattr(threading.Thread, "start", cannot_start)
        try:
            await handlers.call("test_runner.first", [], {})
        except RuntimeError as exc:
            assert "can't start new thread" in str(exc)
        else:
            raise AssertionError("the call did not fail")
        monkeypatch.setattr(threading.Thread, "start", start)
        assert await handlers.call("test_runner.second", [], {}) == "ok"

    run(body())
    assert ran == ["second"] and handlers._THREADS._made == 1 and handlers.running() == 0


def test_sync_calls_whose_new_thread_died_as_it_started_get_another(monkeypatch):
    """A thread made that died before it came to the queue (out of memory as it started, in
    a review: "Exception ignored in: Thread._bootstrap ... MemoryError") left the calls
    waiting for ever, the worker's slots held. One found dead STARTING s later is counted no
    more, and another is made for what waits."""
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.after", lambda: "ran")
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())
    monkeypatch.setattr(handlers, "STARTING", 0.2)
    start, died = threading.Thread.start, []

    def dies_first(self: threading.Thread) -> None:
        if not died:
            died.append(self.name)  # (made, but it never runs: not alive)
            return
        start(self)

    async def body() -> list[Any]:
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        monkeypatch.setattr(threading.Thread, "start", dies_first)
        calls = [handlers.call("test_runner.after", [], {}) for _ in range(3)]
        return await asyncio.wait_for(asyncio.gather(*calls), 10)

    with Said() as said:
        assert run(body()) == ["ran"] * 3
    assert died and handlers.running() == 0
    assert said.lines == ["1 thread(s) made for sync handlers died as they started (out of "
                          "memory?): 3 call(s) waiting"]


def test_a_thread_slow_to_come_to_the_queue_is_not_taken_for_dead(monkeypatch):
    """A handler holding the GIL keeps a new thread from its first steps for longer than
    STARTING: alive, it is waited for, not said dead and doubled (a review)."""
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.after", lambda: "ran")
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())
    monkeypatch.setattr(handlers, "STARTING", 0.05)
    gate = threading.Event()
    work = handlers._THREADS._work

    def late() -> None:
        gate.wait(10)  # (as a thread waiting for the GIL would)
        work()

    monkeypatch.setattr(handlers._THREADS, "_work", late)

    async def body() -> list[Any]:
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        calls = asyncio.gather(*[handlers.call("test_runner.after", [], {}) for _ in range(3)])
        await asyncio.sleep(0.3)  # (six looks at it meanwhile: the time is the test)
        gate.set()
        return await asyncio.wait_for(calls, 10)

    with Said() as said:
        assert run(body()) == ["ran"] * 3
    assert said.lines == [] and handlers._THREADS._made <= 3  # (none made for a "dead" one)


def test_an_answer_that_comes_as_its_loop_closes_does_not_keep_the_loop_alive(monkeypatch):
    """The thread answered while the loop was still open; the loop closed before it took the
    answer. The answer, and the loop, were held for ever."""
    gate, answered = threading.Event(), threading.Event()
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.closing",
                        lambda: gate.wait(10) and b"x" * 1_000_000)
    put = handlers._Back.put
    monkeypatch.setattr(handlers._Back, "put",
                        lambda self, *a: (put(self, *a), answered.set())[0])

    calls: list[asyncio.Future[Any]] = []

    async def call() -> None:
        calls.append(asyncio.ensure_future(handlers.call("test_runner.closing", [], {})))
        await asyncio.sleep(0)  # (the call is made)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(call())
        gate.set()
        assert answered.wait(10)  # its delivery waits in the loop, which closes now
        loop.close()
        ref = weakref.ref(loop)
        del loop
        calls.clear()  # (the user's part: nobody holds the call's task)
        _collected([ref])
    finally:
        gate.set()
    assert ref() is None


def test_a_sync_call_cancelled_before_a_thread_took_it_never_runs(monkeypatch):
    """All threads busy (here: none may be made), a task's call waits in the queue; cancelled
    (its time limit, say) before a thread took it, it never runs, and holds no slot. It used
    to run later, outside its task's time, holding the slot meanwhile."""
    ran: list[str] = []
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.later", lambda: ran.append("later"))
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())
    monkeypatch.setattr(handlers, "MAX_THREADS", 0)

    async def body() -> list[asyncio.Future[Any]]:
        # (threads of the tests before, released as they ended, count down as they return)
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        left: list[asyncio.Future[Any]] = []
        task = asyncio.create_task(_call_in_slot("test_runner.later", left))
        await asyncio.sleep(0)  # (the call waits in the queue: no thread may be made)
        assert handlers.running() == 1 and len(handlers._THREADS._calls) == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Out of the queue too (it would keep its loop referenced until a thread came to it).
        assert not handlers._THREADS._calls
        monkeypatch.setattr(handlers, "MAX_THREADS", 4)
        # A thread is made now: it runs the next call.
        assert await _call_in_slot("test_runner.later", []) is None
        return left

    assert run(body()) == []
    assert ran == ["later"] and handlers.running() == 0


def test_a_runner_on_hold_starts_nothing_queued_and_gives_it_back_on_request():
    """The worker says it may be lost to its admin (may_start: no): its runner starts nothing
    queued from then, running tasks run on; what is queued can go back (each said as given
    back, none started); after resume() what comes runs."""
    async def body() -> None:
        runner, tasks, crashes = await _running(Task(1, "running"))
        ok = [True]
        runner.may_start, runner.touch_until = (lambda: ok[0]), 0.0  # (as a worker sets them)
        for i in (2, 3):
            runner.accept(TaskAssignment(Task(i, "queued"), "w", 1))
        ok[0] = False
        tasks.open(1)  # its slot is free: the next may not start
        await wait_until(lambda: runner.on_hold, 5, "the runner to hold")
        await wait_until(lambda: 1 in {r.task_id for r in runner.unsent}, 5, "1's result")
        assert runner.release_queued() == 2
        assert runner.take_news()[1] == [[2, 1], [3, 1]] and tasks.started == [1]
        runner.accept(TaskAssignment(Task(4, "after"), "w", 1))
        for _ in range(3):
            await asyncio.sleep(0)  # (no start to wait for: the runner holds)
        assert tasks.started == [1]
        ok[0] = True
        runner.resume()
        await wait_until(lambda: tasks.started == [1, 4], 5, "4 to start after resume()")
        # Told it need not ask for a long while, it asks anew once held (registered again:
        # the next admin may call it lost sooner).
        runner.touch_until = 1e18
        runner.hold()
        runner.resume()
        ok[0] = False
        tasks.open(4)
        runner.accept(TaskAssignment(Task(5, "after again"), "w", 1))
        await wait_until(lambda: runner.on_hold, 5, "the runner to ask, and hold")
        assert tasks.started == [1, 4]
        await runner.stop()
        assert not crashes

    run(body())


@pytest.mark.parametrize("message", ["z" * 200_000, "z\n" * 100_000, "\udcff" * 50_000])
def test_a_handlers_traceback_is_cut_to_at_most_max_error_characters_keeping_its_last_line(
        message):
    """The start and the exception's own line, type first; 65,612 characters were sent for
    a limit of 65,536 (the cut's own note came on top), and more for a file name not UTF-8."""
    from ceylon_net.edge.runner import MAX_ERROR, traceback_text

    def fail():
        raise ValueError(message)

    try:
        fail()
    except ValueError as exc:
        text = traceback_text(exc)
    assert len(text) <= MAX_ERROR
    assert text.startswith("Traceback (most recent call last):")
    assert "characters in all: cut here) ..." in text
    assert text.splitlines()[-1].endswith("characters)") or text.endswith("z")
    assert "ValueError: " in text.split("cut here) ...\n", 1)[1]
    text.encode("utf-8")  # (sendable: no lone surrogate left)


def test_an_object_with_an_async_call_and_a_function_returning_a_coroutine_are_awaited(
        monkeypatch):
    """Either ran in a thread: the result was a coroutine never awaited, and the task failed
    as 'cannot encode coroutine'. The second, quick, would go into thread batches too."""
    class Doubler:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

    async def triple(x: int) -> int:
        return 3 * x

    monkeypatch.setitem(handlers._HANDLERS, "test_runner.doubler", Doubler())
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.tripler", lambda x: triple(x))
    monkeypatch.setattr(handlers, "_AWAITS", set())

    results = _handled([Task(i, "d", 1, args=[i], handler="test_runner.doubler" if i % 2
                             else "test_runner.tripler") for i in range(200)])
    assert {i: (r.success, r.value) for i, r in results.items()} == \
        {i: (True, (2 if i % 2 else 3) * i) for i in range(200)}
    assert handlers.running() == 0


@pytest.mark.parametrize("room", [0, 10, 60, 200, 1000, 7_000])
@pytest.mark.parametrize("text", ["a" * 50_000, "é€😀\n" * 9_000 + "ValueError: last",
                                  "\udcff" * 20_000, "short"])
def test_an_error_text_is_fitted_in_its_room_of_bytes_keeping_its_start_and_last_line(
        text, room):
    from ceylon_net.edge.runner import fit_error

    fitted = fit_error(text, room)
    size = len(fitted.encode())  # (sendable: no lone surrogate left)
    assert size <= room
    if len(text.encode("utf-8", "backslashreplace")) <= room:
        assert fitted == text.encode("utf-8", "backslashreplace").decode()
    elif room >= 1000:
        assert "characters in all: cut here) ..." in fitted
        assert fitted[:5] == text.encode("utf-8", "backslashreplace").decode()[:5]
        assert fitted.endswith("ValueError: last") or "\n" not in text


def test_a_run_task_that_returns_no_task_result_fails_its_task_and_the_runner_goes_on():
    """An override of Worker.run_task that returns None or its value, or a TaskResult with a
    field of the wrong type: the task fails saying so. Before, the runner stopped on an
    AttributeError, the worker left, and a playground with that one worker waited for ever;
    or the admin dropped the frame with the results beside it, sent again for ever."""
    async def run_task(task: Task) -> Any:
        return None if task.id == 1 else "the value" if task.id == 2 else \
            TaskResult("some other id", "x", True, value=3) if task.id in (3, 5) else \
            TaskResult(task.id, "w", True, seconds="x")  # (the admin drops the whole frame)

    async def body() -> tuple[list[TaskResult], list[Any]]:
        crashes: list[Any] = []
        runner = TaskRunner("w", 2, run_task, lambda: None)
        runner.start(crashes.append)
        for i in (1, 2, 3, 4, 5):
            runner.accept(TaskAssignment(Task(i, "d", 1), "w", 1))
        got = await _all_answers(runner, 5)
        return got, crashes

    with Said() as said:
        got, crashes = run(body())
    assert crashes == []
    # (another task's result: a bug in the override, said once; it was taken silently)
    assert [m for m in said.lines if "run_task returned a TaskResult of" in m] == [
        "w: run_task returned a TaskResult of task 'some other id' for task 3: taken as task "
        "3's (return TaskResult(task.id, self.name, ...); said once)"]
    by_id = {r.task_id: r for r in got}
    assert not by_id[1].success and by_id[1].error == (
        "run_task returned NoneType None, not a TaskResult: return TaskResult(task.id, "
        "self.name, success, value=...)")
    assert not by_id[2].success and "run_task returned str 'the value'" in by_id[2].error
    assert (by_id[3].success, by_id[3].worker, by_id[3].value) == (True, "w", 3)
    assert not by_id[4].success and by_id[4].error == (
        "run_task returned a TaskResult whose seconds is str 'x', not a float: the admin "
        "could not read it")
    for r in got:  # what the admin reads back
        assert wire.from_wire(TaskResult, wire.to_wire(r)) == r


def test_a_release_of_a_task_never_got_here_is_answered_not_one_that_ended_or_runs():
    """The admin asks back an assignment it did not hear reached the worker in time; the
    RELEASE comes after it on the connection, so a task not here by then never comes: said
    given back, for the admin to give it elsewhere (it waited for this, not to run it
    twice). Not so for one that ran here (its result is on its way) or runs."""
    async def body():
        t = Task("T", "t", 1)
        runner, tasks, _ = await _running(t)
        assert runner.release("never", 1) is True
        assert runner.release("T", 1) is False  # (running: said started)
        tasks.open("T")
        await wait_until(lambda: runner.unsent, 5, "T's result")
        assert runner.release("T", 1) is False  # (its result not sent yet: the next flush)
        runner.take_unsent()  # (sent, not acknowledged yet)
        assert runner.release("T", 1) is False
        await runner.stop()
        return runner.released

    assert run(body()) == [("never", 1)]


def test_a_queued_task_of_a_higher_priority_starts_before_the_lower_ones_queued_before_it():
    """The admin sends ahead what it has: two low tasks queued behind the running one, then
    an urgent one. The urgent one starts next; the low ones keep their order, and so do two
    urgent ones (first in, first out among equals)."""

    async def body():
        runner, tasks, crashes = await _running(Task("run", "t", 1))
        for tid, priority in (("low-1", 0), ("low-2", 0), ("urgent-1", 9), ("urgent-2", 9),
                              ("mid", 5)):
            runner.accept(TaskAssignment(Task(tid, "t", 1, priority=priority), "w", 1))
        for n, tid in enumerate(("run", "urgent-1", "urgent-2", "mid", "low-1"), start=2):
            tasks.open(tid)  # (one slot: the next starts as this one ends)
            await wait_until(lambda n=n: len(tasks.started) == n, 5, f"start number {n}")
        tasks.open("low-2")
        assert tasks.started == ["run", "urgent-1", "urgent-2", "mid", "low-1", "low-2"]
        assert not crashes
        await runner.stop()

    run(body())


@pytest.mark.timeout(60)
def test_an_urgent_task_that_comes_while_a_batch_runs_late_is_not_put_behind_its_tasks(
        monkeypatch):
    """The worker's queue runs by priority (02a05a9). Quick sync handlers' tasks go in
    batches: the runner takes the first and those behind it; one call turns out slow, and
    those not started go back to the queue's FRONT (_take_back -> put_front), even ahead of
    an urgent task that came meanwhile. The urgent task then starts after the low ones."""
    calls: list[str] = []
    gate = threading.Event()

    def step(x: str) -> str:
        calls.append(x)
        if x == "gate":
            gate.wait(20)
        return x

    monkeypatch.setitem(handlers._HANDLERS, "test_runner.step", step)
    monkeypatch.setitem(handlers._slowest, "test_runner.step", 0.0)  # known quick
    monkeypatch.setattr(runner_module, "BATCH_WAIT", 3.0)  # (room to hand the urgent one in)

    async def run_task(task: Task) -> TaskResult:
        value = await handlers.call(task.handler, task.args, task.kwargs)
        return TaskResult(task.id, "w", True, value=value)

    def task(tid: str, priority: int = 0) -> TaskAssignment:
        return TaskAssignment(Task(tid, "t", 1, priority=priority,
                                   handler="test_runner.step", args=[tid]), "w", 1)

    async def body() -> tuple[list[str], list[str]]:
        runner = TaskRunner("w", 1, run_task, lambda: None, batches=True)
        crashes: list[Any] = []
        runner.start(crashes.append)
        for tid in ("gate", "low-1", "low-2"):
            runner.accept(task(tid))
        await wait_until(lambda: calls == ["gate"], 10, "the batch's first call to start")
        runner.accept(task("urgent", 9))  # (while the batch's call runs: queued alone)
        queue = runner.queue._queue  # type: ignore[attr-defined]
        await wait_until(lambda: len(queue) == 3, 10, "the batch's late tasks to go back")
        order = [a.task.id for a in queue]
        gate.set()
        await wait_until(lambda: len(calls) == 4, 10, "all four to run")
        await runner.stop()
        assert not crashes
        return order, list(calls)

    try:
        order, ran = run(body())
    finally:
        gate.set()
    assert ran == ["gate", "urgent", "low-1", "low-2"], (
        f"queue after the batch went back: {order}; ran {ran}")


def test_a_thread_woken_for_waiting_calls_costs_the_loop_no_wake_up(monkeypatch):
    """Asking a loop to look at threads being made, each time a thread woke another, cost a
    wake-up of the loop a call where none was being made (a review: twice the wake-ups,
    sync no-ops 10 % slower at 64 slots)."""
    monkeypatch.setitem(handlers._HANDLERS, "test_runner.nap", lambda: time.sleep(0.01))
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())
    asked: list[Any] = []
    monkeypatch.setattr(handlers._Back, "watch", lambda self, threads: asked.append(1))

    async def body() -> None:
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        for _ in range(2):  # (the first round makes the threads, the second wakes them)
            await asyncio.wait_for(asyncio.gather(
                *[handlers.call("test_runner.nap", [], {}) for _ in range(8)]), 20)
            await wait_until(lambda: not handlers._THREADS._starting, 10, "the threads")
            asked.clear()

        await asyncio.wait_for(asyncio.gather(
            *[handlers.call("test_runner.nap", [], {}) for _ in range(8)]), 20)

    run(body())
    assert asked == [] and handlers._THREADS._made == 8


class SlowToStop:
    """A run_task whose tasks wait until ``release`` is set, cancelled or not (slow to
    stop), recording each start."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.release = asyncio.Event()

    async def __call__(self, t: Task) -> TaskResult:
        self.started.append(t.id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            await self.release.wait()
            raise
        return TaskResult(t.id, "w", True)


async def _given_again(task: SlowToStop, stopping: bool) -> TaskRunner:
    """A runner of one slot running task "t" (attempt 1), stopped if ``stopping``, and given
    attempt 2 as it runs (it answers for it) or as it stops (it runs once that one ends)."""
    runner = TaskRunner("w", 1, task, lambda: None)
    runner.start(lambda crash: None)
    try:
        runner.accept(TaskAssignment(Task("t", "x"), "w", 1))
        await wait_until(lambda: task.started == ["t"], 5, "attempt 1 to start")
    except BaseException:
        await runner.stop()
        raise
    if stopping:
        runner.cancel("t", 1, "stop it")
    runner.accept(TaskAssignment(Task("t", "x"), "w", 2))
    return runner


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["given again as it runs", "given again as it stops"])
def test_an_unreadable_copy_of_an_attempt_the_runner_holds_is_not_answered(how):
    """The runner holds attempt 2 of a task (given again while attempt 1 ran, it answers for
    it; or given again while attempt 1 was being stopped, it runs once that one ends): a
    copy of attempt 2 it cannot read is not answered as failed beside it (a review: two
    answers for one attempt, and the second run went ahead after the failure was said)."""
    task = SlowToStop()

    async def body() -> list[tuple[Any, int, bool]]:
        runner = await _given_again(task, stopping=how == "given again as it stops")
        try:
            runner.unreadable([("t", 2, "Task.difficulty: expected int, got float")])
            assert not [r for r in runner.unsent if r.attempt == 2]
            task.release.set()
            await wait_until(lambda: any(r.attempt == 2 for r in runner.unsent), 5,
                             "attempt 2's answer")
        finally:
            await runner.stop()
        return [(r.task_id, r.attempt, r.success) for r in runner.take_unsent()]

    answers = run(body())
    assert [a for a in answers if a[1] == 2] == [("t", 2, True)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sent", [False, True])
def test_a_copy_of_an_attempt_that_ran_here_is_not_run_again_while_its_answer_is_unsent(sent):
    """A copy of an attempt that came again after its run here ended is not run a second
    time, whether its result is still waiting to leave (held a moment to go with others) or
    left and is not acknowledged yet (a review: with the result unsent, it ran again)."""
    async def body() -> tuple[list[Any], list[tuple[Any, int, bool]]]:
        runner, tasks, _ = await _running(Task("T", "t", 1))
        try:
            tasks.open("T")
            await wait_until(lambda: runner.unsent, 5, "T's result")
            answers = runner.take_unsent() if sent else []
            runner.accept(TaskAssignment(Task("T", "t", 1), "w", 1))
            runner.accept(TaskAssignment(Task("U", "u", 1), "w", 1))  # (the runner goes on)
            tasks.open("U")
            await wait_until(lambda: any(r.task_id == "U" for r in runner.unsent), 5,
                             "U's result")
        finally:
            await runner.stop()
        return tasks.started, [(r.task_id, r.attempt, r.success)
                               for r in [*answers, *runner.take_unsent()]]

    started, answers = run(body())
    assert started == ["T", "U"]
    assert answers == [("T", 1, True), ("U", 1, True)]


@pytest.mark.timeout(30)
def test_an_older_attempt_queued_here_does_not_run_once_a_newer_one_was_answered_unreadable():
    """The admin gave a queued task again (attempt 2), and this worker could not read the
    new copy: attempt 2 is answered as failed, and attempt 1, which the admin no longer
    waits for, does not run after (a review: it ran, for nothing)."""
    async def body() -> tuple[list[Any], list[tuple[Any, int, bool]]]:
        runner, tasks, _ = await _running(Task("T", "t", 1))
        try:
            runner.accept(TaskAssignment(Task("U", "u", 1), "w", 1))
            runner.unreadable([("U", 2, "Task.difficulty: expected int, got float")])
            tasks.open("T")
            await wait_until(lambda: any(r.task_id == "T" for r in runner.unsent), 5,
                             "T's result")
            await runner.drain(5)
        finally:
            await runner.stop()
        return tasks.started, [(r.task_id, r.attempt, r.success) for r in runner.take_unsent()]

    started, answers = run(body())
    assert started == ["T"]
    assert sorted(answers) == [("T", 1, True), ("U", 2, False)]


@pytest.mark.timeout(30)
def test_a_draining_worker_gives_back_an_assignment_it_cannot_read_as_it_does_the_others():
    """A worker that drains gives back what comes (another worker may run it), the
    assignments it cannot read too, not answered as failed (a review)."""
    async def body() -> tuple[list[Any], list[Any]]:
        runner, tasks, _ = await _running(Task("T", "t", 1))
        try:
            runner.give_back_queued()
            runner.accept(TaskAssignment(Task("U", "u", 1), "w", 1))
            runner.unreadable([("V", 1, "Task.difficulty: expected int, got float")])
            tasks.open("T")
            await runner.drain(5)
        finally:
            await runner.stop()
        return runner.released, [(r.task_id, r.attempt, r.success) for r in runner.take_unsent()]

    released, answers = run(body())
    assert released == [("U", 1), ("V", 1)]
    assert answers == [("T", 1, True)]


@pytest.mark.timeout(30)
def test_an_attempt_waiting_for_a_stopped_run_does_not_run_once_a_newer_was_answered_unreadable():
    """Attempt 2 waits for attempt 1's run, being stopped, to end; attempt 3 comes, and this
    worker cannot read it: attempt 3 is answered as failed, and attempt 2 does not run after
    (a review: it did, for nothing)."""
    task = SlowToStop()

    async def body() -> list[tuple[Any, int, bool]]:
        runner = await _given_again(task, stopping=True)
        try:
            runner.unreadable([("t", 3, "Task.difficulty: expected int, got float")])
            task.release.set()
            await runner.drain(5)
        finally:
            await runner.stop()
        return [(r.task_id, r.attempt, r.success) for r in runner.take_unsent()]

    answers = run(body())
    assert task.started == ["t"]
    assert sorted(answers) == [("t", 1, False), ("t", 3, False)]
