"""``await admin.execute(task)`` returns or raises on every way a task can end: a result, a
cancel, a dependency cancelled, lost with its worker too often, nobody able to take it, the
admin stopping. Real admin, real workers (in-process over loopback, or a killed process)."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest
from conftest import run

from ceylon_net import Admin, AdminSettings, ConfigError, Task, TaskFailed, TaskResult, Worker
from ceylon_net.dev.testing import Cluster, cli, wait_until


def _admin(**kw) -> Admin:
    return Admin(settings=AdminSettings(bind="127.0.0.1", port=0, **kw))


class Sleeper(Worker):
    """Runs each task for its ``duration`` (the built-in task), and says when it starts."""

    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.started: list = []

    async def run_task(self, task: Task) -> TaskResult:
        self.started.append(task.id)
        if task.description == "boom":
            raise ValueError("boom")
        return await super().run_task(task)


async def _with_worker(admin: Admin, body, *workers: Worker):
    serving = asyncio.create_task(admin.arun_admin(b"", list(workers)))
    try:
        await wait_until(lambda: len(admin.get_connected_agents()) == len(workers), 10,
                         "the workers to join")
        return await body()
    finally:
        await admin.stop()
        await asyncio.wait_for(serving, 10)


def test_execute_returns_a_result_and_a_failed_run_is_a_result_too():
    admin, w = _admin(), Sleeper("w", skill=3)

    async def body():
        ok = await asyncio.wait_for(admin.execute(Task("ok", "easy", 2, duration=0)), 10)
        boom = await asyncio.wait_for(admin.execute(Task("boom", "boom", duration=0)), 10)
        return ok, boom

    ok, boom = run(_with_worker(admin, body, w))
    assert ok.success and ok.worker == "w"
    assert not boom.success and "ValueError: boom" in boom.error  # the remote traceback


def test_execute_of_a_cancelled_queued_task_raises_instead_of_hanging():
    admin = _admin()

    async def body():
        pending = asyncio.create_task(admin.execute(Task("t", "too hard for junior", 9)))
        await wait_until(lambda: "t" in admin.state.board.records, 5, "the task queued")
        assert admin.cancel(["t"], "no longer wanted")["cancelled"] == ["t"]
        with pytest.raises(TaskFailed) as failed:
            await asyncio.wait_for(pending, 5)
        return failed.value

    err = run(_with_worker(admin, body, Sleeper("junior", skill=3)))
    assert str(err) == "task 't' cancelled: no longer wanted"
    assert (err.task_id, err.reason) == ("t", "no longer wanted")


def test_execute_of_a_running_task_cancelled_raises_once_its_worker_stops_it():
    admin, w = _admin(), Sleeper("w")

    async def body():
        pending = asyncio.create_task(admin.execute(Task("long", "long", duration=30)))
        await wait_until(lambda: w.started == ["long"], 10, "the task to start")
        assert admin.cancel(["long"], "stop")["stopping"] == ["long"]
        with pytest.raises(TaskFailed) as failed:
            await asyncio.wait_for(pending, 10)
        return failed.value

    err = run(_with_worker(admin, body, w))
    # The reason given, as for a task cancelled in the queue ("cancelled: stop" before).
    assert (str(err), err.reason) == ("task 'long' cancelled: stop", "stop")


def test_execute_of_a_task_whose_dependency_was_cancelled_raises():
    admin = _admin()

    async def body():
        admin.submit([Task("first", "too hard for junior", 9)])
        pending = asyncio.create_task(admin.execute(Task("second", "after first",
                                                         depends_on=["first"])))
        await wait_until(lambda: "second" in admin.state.board.records, 5, "queued")
        admin.cancel(["first"])
        with pytest.raises(TaskFailed) as failed:
            await asyncio.wait_for(pending, 5)
        return failed.value

    err = run(_with_worker(admin, body, Sleeper("junior", skill=3)))
    assert err.reason == "dependency 'first' was cancelled"


def test_execute_of_a_task_no_worker_can_take_raises_after_the_unassignable_timeout():
    admin = _admin(unassignable_timeout=0.5)

    async def body():
        with pytest.raises(TaskFailed) as failed:
            await asyncio.wait_for(admin.execute(Task("ml", "ML training", 8)), 10)
        return failed.value

    err = run(_with_worker(admin, body, Sleeper("junior", skill=3)))
    # (why, as the admin's log and its report say it: a client's TaskFailed said only this)
    assert err.reason == "no connected worker can take it (needs skill >= 8; best connected " \
        "is 3)"
    assert admin.report().unassigned == ["ml"]


def test_execute_of_a_task_lost_with_its_worker_max_attempts_times_raises(tmp_path):
    admin = _admin(max_attempts=1, heartbeat=0.2, liveness=2)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            victim = await c.spawn("victim", [*_worker_cli(), "--name", "victim", "--port",
                                              str(admin.port), "--log-level", "DEBUG"])
            await wait_until(lambda: admin.get_connected_agents(), 20, "the worker to join")
            pending = asyncio.create_task(admin.execute(Task("doomed", "sleeps", duration=30)))
            await wait_until(lambda: "running task 'doomed'" in victim.stderr(), 20,
                             "the task to start")
            victim.signal(signal.SIGKILL)
            with pytest.raises(TaskFailed) as failed:
                await asyncio.wait_for(pending, 10)
            return failed.value

    async def main():
        await admin.start()
        try:
            return await body()
        finally:
            await admin.close()

    err = run(main())
    assert err.reason.startswith("lost once, last with worker 'victim' (lost: silent for")
    assert admin.report().dead == ["doomed"]


def test_execute_raises_when_the_admin_stops_before_the_task_ends():
    admin = _admin()

    async def main():
        await admin.start()
        pending = asyncio.create_task(admin.execute(Task("t", "nobody here")))
        await wait_until(lambda: "t" in admin.state.board.records, 5, "queued")
        await admin.close("shutting down")
        with pytest.raises(TaskFailed) as failed:
            await asyncio.wait_for(pending, 5)
        return failed.value

    err = run(main())
    assert "the admin stopped (shutting down) before it finished" in str(err)


def test_execute_twice_with_the_same_id_is_refused_and_the_first_still_resolves():
    admin = _admin()

    async def body():
        first = asyncio.create_task(admin.execute(Task("same", "x", duration=0.2)))
        await wait_until(lambda: "same" in admin.state.board.records, 5, "queued")
        with pytest.raises(Exception, match="duplicate task id 'same'"):
            await admin.execute(Task("same", "again"))
        return await asyncio.wait_for(first, 10)

    result = run(_with_worker(admin, body, Sleeper("w")))
    assert result.success


def _worker_cli():
    return [*cli("ceylon-worker"), "--admin-peer", "127.0.0.1"]


def test_an_execute_call_given_up_by_its_caller_cancels_its_task():
    """``asyncio.timeout`` around ``execute()`` ran out: the task was left running on the
    cluster, holding its worker's slot, with nobody waiting for its result. It is cancelled
    now (as a client's future's cancel() does), and the slot goes to the next task; a
    shielded call lets its task run on."""
    admin, w = _admin(), Sleeper("w", max_concurrent_tasks=1)

    async def body():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await admin.execute(Task("long", "long", duration=30))
        await wait_until(lambda: admin.report().cancelled.get("long"), 10,
                         "the task to end cancelled")
        quick = await asyncio.wait_for(admin.execute(Task("next", "quick", duration=0)), 10)
        kept = asyncio.ensure_future(admin.execute(Task("kept", "short", duration=0.5)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(kept), 0.05)
        return quick, await asyncio.wait_for(kept, 10), admin.report()

    quick, kept, report = run(_with_worker(admin, body, w))
    assert report.cancelled["long"].endswith("its execute() call was cancelled")
    assert quick.success and kept.success and w.started == ["long", "next", "kept"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ending", ["close", "stop"])
@pytest.mark.parametrize("call", ["execute", "run_tasks"])
def test_a_call_waiting_on_an_admin_closed_before_it_started_ends(call, ending):
    """execute() and run_tasks() may be called before start() (a later start() runs the
    task); closed or stopped instead, the call waited for ever (a review of the API)."""
    async def body():
        admin = _admin()
        task = Task(1, "x", 1, duration=0.01)
        pending = asyncio.ensure_future(
            admin.execute(task) if call == "execute" else admin.run_tasks([task]))
        await wait_until(lambda: 1 in admin.state.board.records, 5, "the task taken")
        await getattr(admin, ending)()
        try:
            async with asyncio.timeout(5):
                with pytest.raises((TaskFailed, ConfigError)) as raised:
                    await pending
        finally:
            pending.cancel()
        with pytest.raises(ConfigError, match="was started already, or closed"):
            await admin.start()
        return raised.value

    said = str(run(body()))
    assert "stopped" in said or "is closed" in said, said


@pytest.mark.timeout(60)
def test_execute_from_another_thread_s_event_loop_is_refused_with_what_to_do():
    """A thread's asyncio.run(admin.execute(task)), the admin running in the main thread:
    its future was made on the thread's loop and set from the admin's, not thread-safe;
    the first call came back by luck, every later one waited for ever (a review of the
    API). Refused now, saying how to call it; from the admin's own loop it works."""
    async def body():
        admin = _admin()
        serving = asyncio.create_task(admin.arun_admin(b"", [Worker("w")]))
        try:
            await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
            here = asyncio.get_running_loop()

            def elsewhere() -> str:
                try:
                    asyncio.run(admin.execute(Task("t", "x", 1, duration=0.01)))
                except ConfigError as exc:
                    return str(exc)
                return "no error"

            said = await asyncio.to_thread(elsewhere)

            def threadsafe() -> TaskResult:
                return asyncio.run_coroutine_threadsafe(
                    admin.execute(Task("u", "x", 1, duration=0.01)), here).result(10)

            result = await asyncio.to_thread(threadsafe)
        finally:
            await admin.stop()
            await asyncio.wait_for(serving, 10)
        return said, result

    said, result = run(body())
    assert said.startswith("admin 'admin' runs in another thread's event loop: call it there, "
                           "or from this thread hand the call to that loop: asyncio."
                           "run_coroutine_threadsafe("), said
    assert result.success and result.task_id == "u"


@pytest.mark.timeout(60)
def test_execute_from_another_thread_before_the_admin_starts_returns_once_it_ran():
    """Before start() the admin has no thread of its own, and such a call is taken; its
    future, on the calling thread's loop, was set from the admin's once the task ran, not
    thread-safely: the caller slept on until some timer of its own woke it (a review of the
    fix above: 8 s, its wait_for's)."""
    admin = _admin()
    taken, said = threading.Event(), []

    def caller() -> None:
        async def call() -> None:
            pending = asyncio.ensure_future(admin.execute(Task("t", "x", 1, duration=0.01)))
            await asyncio.sleep(0)  # (submitted now: the admin may start)
            taken.set()
            try:
                said.append((await asyncio.wait_for(pending, 20)).success)
            except TimeoutError:
                said.append("woken by its own timer only")

        asyncio.run(call())

    async def body() -> None:
        thread = threading.Thread(target=caller)
        thread.start()
        await asyncio.to_thread(taken.wait, 10)
        serving = asyncio.create_task(admin.arun_admin(b"", [Worker("w")]))
        try:
            await asyncio.to_thread(thread.join, 30)
            with pytest.raises(ConfigError, match="runs in another thread's event loop"):
                await asyncio.to_thread(admin.cancel, ["t"])
            with pytest.raises(ConfigError, match="runs in another thread's event loop"):
                await asyncio.to_thread(asyncio.run, admin.broadcast_data(TaskResult("t", "w",
                                                                                     True)))
        finally:
            await admin.stop()
            await asyncio.wait_for(serving, 10)

    run(body())
    assert said == [True]


@pytest.mark.timeout(60)
def test_an_admin_whose_start_failed_early_is_not_bound_to_that_thread(tmp_path):
    """start() failed on a --curve-secret it could not read, before its sockets existed,
    the thread kept as the admin's all the same: a submit() before a later start, from any
    other thread, was refused as a call from "another thread's event loop" of an admin that
    ran nowhere (a review of the thread rule)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    admin = _admin(curve_secret=str(tmp_path / "missing.key_secret"),
                   authorized_keys=str(keys))
    said: list[str] = []

    def failed_start() -> None:
        try:
            asyncio.run(admin.start())
        except ConfigError as exc:
            said.append(str(exc))

    thread = threading.Thread(target=failed_start)
    thread.start()
    thread.join(30)
    assert said and "cannot load a key" in said[0], said
    admin.submit([Task("t", "x", 1)])  # (from this thread: taken, queued)
    assert admin.status()["counts"]["queued"] == 1


def test_wait_idle_on_an_admin_closed_with_no_task_says_so():
    """It said "its tasks did not all finish" of an admin that never had one (a review of
    the API)."""
    async def body() -> str:
        admin = _admin()
        await admin.close("bye")
        with pytest.raises(ConfigError) as closed:
            await admin.wait_idle()
        return str(closed.value)

    assert run(body()) == "admin 'admin' is closed (no task given)"


def test_a_worker_whose_end_could_not_be_sent_is_not_waited_for():
    """Its connection gone (killed), the END to it cannot even be sent (the ROUTER says so
    at once): it was waited for all the same, as long as it took to be lost (a review of
    the END's acknowledgement)."""
    from ceylon_net.core import commands as c
    from ceylon_net.wire import End, Kind

    class Gone:  # (the outlet of a ROUTER whose peer's connection is gone)
        def send(self, *args) -> bool:
            return False

    admin = _admin()
    admin._out = Gone()
    admin.state.told_end = {b"k/1", b"w/1"}
    admin._send(c.Send(b"k/1", Kind.END, End("run over")))
    assert admin.state.told_end == {b"w/1"}
