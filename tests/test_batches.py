"""A worker's queued tasks of a quick sync handler run several to one thread call (a batch):
each still runs once, answers for itself, can be cancelled or given back until its batch's
thread starts it, and none waits behind one that turns out slow while a slot is free. Driven
with a real TaskRunner and real handler threads, no sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge import runner as runner_module
from ceylon_net.edge.runner import TaskRunner

NAME = "test_batches.work"


async def _run_task(task: Task) -> TaskResult:
    """What the worker's run_task does with a task naming a handler."""
    value = await handlers.call(task.handler, task.args, task.kwargs)
    return TaskResult(task.id, "w", True, value=value)


class Work:
    """The handler: returns twice its argument, records each call; a call whose argument is
    in ``held`` waits until ``gate`` opens (``entered`` says it is in)."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.held: set[int] = set()
        self.gate, self.entered = threading.Event(), threading.Event()
        self.now = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.ran.append(x)
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            if x in self.held:
                self.entered.set()
                assert self.gate.wait(20)
            return 2 * x
        finally:
            with self._lock:
                self.now -= 1


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    """The handler registered."""
    w = Work()
    monkeypatch.setitem(handlers._HANDLERS, NAME, w)
    yield w
    w.gate.set()


@pytest.fixture
def quick(work: Work, monkeypatch: pytest.MonkeyPatch) -> Work:
    """The handler, known to be quick (as after a quick call)."""
    monkeypatch.setitem(handlers._slowest, NAME, 0.0)
    return work


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The arguments of each batch made, in order."""
    made: list[list[int]] = []
    real = handlers.Batch.__init__

    def record(self: handlers.Batch, calls: list[tuple[str, list[Any], dict[str, Any]]],
               *more: Any) -> None:
        made.append([args[0] for _, args, _ in calls])
        real(self, calls, *more)

    monkeypatch.setattr(handlers.Batch, "__init__", record)
    return made


def _give(runner: TaskRunner, ids: range | list[int], attempt: int = 1) -> None:
    for i in ids:
        runner.accept(TaskAssignment(Task(i, "d", 1, handler=NAME, args=[i]), "w", attempt))


async def _results(runner: TaskRunner, got: dict[Any, TaskResult], want: Callable[[], bool],
                   what: str) -> None:
    def check() -> bool:
        for r in runner.take_unsent():
            assert r.task_id not in got, f"task {r.task_id} answered twice"
            got[r.task_id] = r
        return want()

    await wait_until(check, 10, what)


def test_queued_tasks_of_a_quick_sync_handler_run_many_to_a_thread_call_each_once(
        work: Work, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a first quick call, 200 tasks queued at once on 8 slots: each runs once and
    answers with its own value, never more than 8 at once, in far fewer thread calls than
    tasks (with one each, a worker ran a no-op sync handler at half the tasks/s of an async
    one)."""
    calls = []
    call = handlers._Threads.call
    monkeypatch.setattr(handlers._Threads, "call",
                        lambda self, *a, **k: calls.append(1) or call(self, *a, **k))

    async def body() -> dict[Any, TaskResult]:
        runner = TaskRunner("w", 8, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        got: dict[Any, TaskResult] = {}
        _give(runner, [1000])
        await _results(runner, got, lambda: len(got) == 1, "the first result")
        _give(runner, range(200))
        await _results(runner, got, lambda: len(got) == 201, "200 results")
        assert runner.idle
        await runner.stop()
        return got

    got = run(body())
    assert {i: (r.success, r.value) for i, r in got.items()} == {i: (True, 2 * i)
                                                                for i in [*range(200), 1000]}
    assert sorted(work.ran) == [*range(200), 1000] and work.most <= 8
    assert len(calls) < 50, len(calls)
    assert handlers.running() == 0


def test_a_batch_s_task_is_cancelled_or_given_back_until_its_thread_starts_it(
        quick: Work, batches: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """One slot, five tasks in one batch, the first held in its call: the third cancelled
    and the fourth given back (to the admin, for another worker) never run; the first, which
    started, cannot be given back (said started, at once); the rest run once each."""
    monkeypatch.setattr(runner_module, "BATCH_WAIT", 30.0)  # (no slot to take them back for)
    quick.held.add(1)

    async def body() -> tuple[dict[Any, TaskResult], TaskRunner]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [1, 2, 3, 4, 5])
        await wait_until(quick.entered.is_set, 10, "the first call to start")
        assert batches == [[1, 2, 3, 4, 5]]
        runner.cancel(3, 1, "not needed")
        assert runner.release(4, 1) is True
        assert runner.release(1, 1) is False and runner.urgent  # (said at once: it started)
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: 3 in got, "the cancelled result")
        quick.gate.set()
        await _results(runner, got, lambda: len(got) == 4, "the other results")
        await runner.stop()
        return got, runner

    got, runner = run(body())
    assert quick.ran == [1, 2, 5]
    assert got[3].cancelled and got[3].error == "cancelled: not needed"
    assert [got[i].value for i in (1, 2, 5)] == [2, 4, 10]
    _, released, _ = runner.take_news()
    assert released == [[4, 1]]


def test_tasks_behind_a_batch_call_that_turns_slow_go_to_the_free_slots(
        quick: Work, batches: list[list[int]]) -> None:
    """Four slots, eight tasks: the first's call hangs. The task batched behind it goes back
    to the queue after BATCH_WAIT and another slot runs it: all seven others end while the
    first still hangs."""
    quick.held.add(0)

    async def body() -> dict[Any, TaskResult]:
        runner = TaskRunner("w", 4, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, range(8))
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 7, "the seven others")
        assert 0 not in got and quick.entered.is_set()
        quick.gate.set()
        await _results(runner, got, lambda: len(got) == 8, "the hung one")
        await runner.stop()
        return got

    got = run(body())
    assert any(b[0] == 0 and len(b) > 1 for b in batches), batches  # (one was behind it)
    assert sorted(quick.ran) == list(range(8)) and got[0].value == 0
    assert handlers.running() == 0


def test_a_batch_s_task_cancelled_as_it_runs_late_is_answered_and_its_slot_waits(
        quick: Work, batches: list[list[int]]) -> None:
    """One slot; the first of a batch hangs past BATCH_WAIT (the second goes back to the
    queue), then is cancelled: its cancelled result comes at once, and the slot takes nothing
    else until the hung call's thread ends (no more run at once than the slots)."""
    quick.held.add(0)

    async def body() -> tuple[dict[Any, TaskResult], TaskRunner]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1])
        await wait_until(lambda: 0 in runner.active, 10, "the hung call to run late")
        assert batches == [[0, 1]]
        runner.cancel(0, 1, "enough")
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: 0 in got, "the cancelled result")
        await wait_until(lambda: runner.stuck == 1, 10, "the slot held for the thread")
        assert quick.ran == [0] and 1 not in got
        quick.gate.set()
        await _results(runner, got, lambda: 1 in got, "the second task")
        await runner.stop()
        return got, runner

    got, runner = run(body())
    assert got[0].cancelled and got[0].error == "cancelled: enough"
    assert quick.ran == [0, 1] and got[1].value == 2 and runner.stuck == 0
    assert handlers.running() == 0


def test_a_batch_s_tasks_not_started_when_its_runner_stops_never_run(
        quick: Work, batches: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "BATCH_WAIT", 30.0)
    quick.held.add(0)

    async def body() -> None:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1, 2])
        await wait_until(quick.entered.is_set, 10, "the first call to start")
        await runner.stop()
        quick.gate.set()
        await wait_until(lambda: handlers.running() == 0, 10, "the batch's thread to end")

    run(body())
    assert batches == [[0, 1, 2]] and quick.ran == [0]


def test_a_batch_s_task_given_again_answers_once_for_the_newest_attempt(
        quick: Work, batches: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin gives a worker its tasks again (attempt 2: it took them for lost) while
    their batch runs: the one started answers for attempt 2; the one not started yet is taken
    out of the batch and runs once, as attempt 2."""
    monkeypatch.setattr(runner_module, "BATCH_WAIT", 30.0)
    quick.held.add(0)

    async def body() -> dict[Any, TaskResult]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1])
        await wait_until(quick.entered.is_set, 10, "the first call to start")
        _give(runner, [0, 1], attempt=2)
        quick.gate.set()
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 2, "both results")
        await runner.stop()
        return got

    got = run(body())
    assert quick.ran == [0, 1] and batches[0] == [0, 1]
    assert (got[0].attempt, got[0].value, got[1].attempt, got[1].value) == (2, 0, 2, 2)


def test_one_slow_call_takes_a_sync_handler_out_of_batches_for_a_while() -> None:
    """A handler is quick once a call was timed and none lately took QUICK or more; after a
    slow one, some 70 quick calls bring it back."""
    name = "test_batches.timed"
    try:
        assert not handlers.quick(name) and not handlers.quick(None)  # (never timed)
        handlers._took(name, 0.00001)
        assert handlers.quick(name)
        handlers._took(name, 1.0)
        calls = 0
        while not handlers.quick(name) and calls < 1000:
            handlers._took(name, 0.00001)
            calls += 1
        assert 60 <= calls <= 80, calls
    finally:
        handlers._slowest.pop(name, None)


def test_a_batch_s_started_task_given_again_then_cancelled_ends_cancelled(
        quick: Work, batches: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin gives a task again (attempt 2) while a batch's thread runs it, then cancels
    attempt 2: it cannot be given back (said started), and it ends cancelled, for attempt 2
    (the cancel named an attempt the runner knew only as the newest of a started task, and
    was dropped: the task answered success)."""
    monkeypatch.setattr(runner_module, "BATCH_WAIT", 30.0)
    quick.held.add(0)

    async def body() -> tuple[dict[Any, TaskResult], TaskRunner]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1])
        await wait_until(quick.entered.is_set, 10, "the first call to start")
        _give(runner, [0], attempt=2)
        assert runner.release(0, 2) is False and runner.urgent
        runner.cancel(0, 2, "changed my mind")
        quick.gate.set()
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 2, "both results")
        await runner.stop()
        return got, runner

    got, runner = run(body())
    assert batches[0] == [0, 1] and quick.ran == [0, 1]
    assert got[0].cancelled and got[0].attempt == 2 and got[0].error == "cancelled: changed my mind"
    assert got[1].success and runner.idle


def test_a_batch_s_task_cancelled_as_it_starts_is_answered_while_its_call_hangs(
        quick: Work, batches: list[list[int]]) -> None:
    """Cancelled just after its batch's thread started it, a hung call's task is answered
    cancelled once the batch gives up waiting for it (BATCH_WAIT), not when the call ends."""
    quick.held.add(0)

    async def body() -> dict[Any, TaskResult]:
        runner = TaskRunner("w", 2, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1, 2, 3])
        await wait_until(quick.entered.is_set, 10, "the first call to start")
        runner.cancel(0, 1, "stop")
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 4, "all four results")
        assert not quick.gate.is_set()  # (answered while the call still hangs)
        quick.gate.set()
        await wait_until(lambda: runner.stuck == 0, 10, "the hung call's slot back")
        await runner.stop()
        return got

    got = run(body())
    assert got[0].cancelled and [got[i].value for i in (1, 2, 3)] == [2, 4, 6]
    assert any(b[0] == 0 and len(b) > 1 for b in batches), batches


class BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr")


@pytest.mark.parametrize("batched", [False, True], ids=["one call each", "batched"])
def test_a_sync_handler_raising_what_coroutines_treat_apart_fails_only_its_task(
        batched: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """GeneratorExit thrown into the awaiting coroutines closed them: the worker's slot
    ended (a runner crash). A StopIteration whose argument's repr raises left a batch's
    other tasks unanswered for ever. Each now fails its own task; the others run."""
    def odd(x: int) -> int:
        if x == 1:
            raise GeneratorExit("odd")
        if x == 2:
            raise StopIteration(BadRepr())
        return x

    monkeypatch.setitem(handlers._HANDLERS, NAME, odd)
    if batched:
        monkeypatch.setitem(handlers._slowest, NAME, 0.0)
    crashes: list[Any] = []

    async def body() -> dict[Any, TaskResult]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=batched)
        runner.start(crashes.append)
        _give(runner, [0, 1, 2, 3, 4])
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 5, "five results")
        assert runner.idle
        await runner.stop()
        return got

    got = run(body())
    assert crashes == []
    assert [got[i].value for i in (0, 3, 4)] == [0, 3, 4]
    assert not got[1].success and "the handler raised GeneratorExit('odd')" in got[1].error
    assert not got[2].success and "the handler raised StopIteration" in got[2].error


def test_a_worker_whose_run_task_is_its_own_sees_every_task(monkeypatch) -> None:
    """A Worker subclass's run_task (the README's way to wrap tasks) is called for each task:
    no batch of a quick handler's tasks goes round it."""
    from ceylon_net.edge.worker import Worker

    seen: list[Any] = []

    class Audited(Worker):
        async def run_task(self, task: Task) -> TaskResult:
            seen.append(task.id)
            return await super().run_task(task)

    monkeypatch.setitem(handlers._HANDLERS, NAME, lambda x: x)
    monkeypatch.setitem(handlers._slowest, NAME, 0.0)

    async def body() -> dict[Any, TaskResult]:
        assert Worker("plain").runner.batches
        worker = Audited("audited", max_concurrent_tasks=4)
        runner = worker.runner
        runner.start(lambda crash: None)
        _give(runner, range(40))
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 40, "40 results")
        await runner.stop()
        return got

    got = run(body())
    assert sorted(seen) == list(range(40)) and all(got[i].value == i for i in range(40))


def test_a_batch_held_up_past_its_wait_starts_no_more_of_its_tasks(
        batches: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's loop is held (the process paused: SIGSTOP, a frozen VM) while its
    batch's first call runs long: the thread starts none of the rest once BATCH_WAIT has gone
    by; they go back to the queue and start only once the loop runs again (when it may have
    heard that the admin gave them to another worker). It ran them all straight on."""
    import time

    started: dict[int, float] = {}

    def slow_first(x: int) -> int:
        started[x] = time.monotonic()
        if x == 0:
            time.sleep(0.1)
        return x

    monkeypatch.setitem(handlers._HANDLERS, NAME, slow_first)
    monkeypatch.setitem(handlers._slowest, NAME, 0.0)

    async def body() -> tuple[dict[Any, TaskResult], float]:
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        runner.start(lambda crash: None)
        _give(runner, [0, 1, 2])
        await wait_until(lambda: 0 in started, 10, "the first call to start")
        time.sleep(0.3)  # the loop held, as in a paused process (the thread runs on)
        resumed = time.monotonic()
        got: dict[Any, TaskResult] = {}
        await _results(runner, got, lambda: len(got) == 3, "three results")
        await runner.stop()
        return got, resumed

    got, resumed = run(body())
    assert batches[0] == [0, 1, 2] and [got[i].value for i in range(3)] == [0, 1, 2]
    assert started[1] >= resumed and started[2] >= resumed, (started, resumed)


def test_a_batch_whose_thread_starts_late_starts_nothing_past_its_workers_word(
        quick: Work) -> None:
    """The thread of a batch starts late. Past the time its worker knew itself in touch with
    the admin (the process was paused between the slot's look and the thread's start: the
    admin may have given the tasks to another worker), it starts none of the calls, and the
    loop takes them back; it used to run the first. Only late (threads busy with other work
    for the GIL), it runs the first, however long that took."""
    import time

    async def body(start_by: float) -> handlers.Batch:
        batch = handlers.Batch([(NAME, [i], {}) for i in range(3)], 0.0, start_by)
        await asyncio.wait((batch.job.future,), timeout=10)
        return batch

    paused = run(body(time.monotonic() - 1.0))
    assert quick.ran == [] and all(claim.take() is not None for claim in paused.claims)
    late = run(body(time.monotonic() + 3600))  # (a budget of 0 s: the first call, no more)
    assert quick.ran == [0] and [c.take() is not None for c in late.claims] == [False, True,
                                                                               True]
