"""A bug in one of a program's own loops stops the program with an error, instead of leaving
it alive without that loop (an asyncio task that raises dies without a word): the admin and
the workers say what broke, exit 1, and nobody waiting on them hangs. The bugs are planted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys

import pytest
from conftest import REPO, run
from loguru import logger

from ceylon_net import (
    Admin,
    AdminSettings,
    AsyncClient,
    ConfigError,
    Crashed,
    Task,
    TaskFailed,
    Worker,
)
from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.wire import Kind

APPS = REPO / "tests" / "apps"


def _admin(**kw) -> Admin:
    return Admin(settings=AdminSettings(bind="127.0.0.1", port=0, **kw))


def test_a_bug_in_the_admin_stops_it_and_whoever_waits_hears_why():
    logged: list = []

    async def body():
        admin = _admin()
        await admin.start()
        sink = logger.add(logged.append, level="CRITICAL")
        try:
            waiting = asyncio.create_task(admin.execute(Task("t", "no worker to run it")))
            idle = asyncio.create_task(admin.wait_idle())
            await wait_until(lambda: not admin.state.idle, 5, "the task to be queued")

            def tick(now, due=None):
                raise RuntimeError("a planted bug")

            admin.state.tick = tick
            with pytest.raises(Crashed, match=r"the admin's tick loop .*a planted bug"):
                await asyncio.wait_for(admin.serve(), 10)
            with pytest.raises(TaskFailed, match=r"admin stopped .*a planted bug"):
                await asyncio.wait_for(waiting, 1)
            with pytest.raises(Crashed):
                await asyncio.wait_for(idle, 1)
            with pytest.raises(Crashed):  # and it takes nothing more
                await asyncio.wait_for(admin.execute(Task("u", "too late")), 1)
            with pytest.raises(Crashed):  # (it queued them, on a board nobody serves)
                admin.submit([Task("v", "too late too")])
        finally:
            logger.remove(sink)
            await admin.close()

    run(body())
    (record,) = [m.record for m in logged]
    assert "tick loop stopped on an unexpected error" in record["message"]
    assert "a planted bug" in str(record["exception"].value)  # with its traceback


def test_a_bug_in_an_admin_timer_stops_it_too():
    """Timers (acknowledgements here) run as loop callbacks, whose errors asyncio only logs."""

    async def body():
        admin = _admin()
        serving = asyncio.create_task(admin.arun_admin(b"", [Worker("w")]))
        await wait_until(lambda: admin.get_connected_agents(), 10, "the worker to join")
        send = admin._out.send

        def send_but_no_acks(peer, kind, msg, answers=None):
            if kind == Kind.ACK:
                raise RuntimeError("a planted bug")
            send(peer, kind, msg, answers)

        admin._out.send = send_but_no_acks
        result = await asyncio.wait_for(admin.execute(Task("t", "quick", duration=0)), 10)
        with pytest.raises(Crashed, match=r"an admin timer .*a planted bug"):
            await asyncio.wait_for(serving, 10)
        return result

    assert run(body()).success


def test_a_bug_in_the_client_fails_its_futures_at_once_and_closes_it():
    """Not after ``gone_after`` of silence (here an hour): at once, saying why."""

    async def body():
        admin = _admin()
        await admin.start()
        try:
            client = await AsyncClient(f"127.0.0.1:{admin.port}", gone_after=3600).connect()
            waiting = client.submit("nobody_has_this_handler")
            dealer = client._dealer

            async def receive(timeout):
                raise RuntimeError("a planted bug")

            dealer.receive = receive
            with contextlib.suppress(Crashed):  # (the batch's answer may come first)
                await client.status()  # an answer takes the receive loop round to the bug
            with pytest.raises(Crashed, match=r"client's receive loop .*a planted bug"):
                await asyncio.wait_for(waiting, 5)
            with pytest.raises(ConfigError, match="not connected"):
                client.submit("more")
            await client.close()
        finally:
            await admin.close()

    run(body())


def test_the_admin_program_exits_1_on_a_bug_and_tells_its_workers(tmp_path, tasks_file):
    path = tasks_file([{"id": i, "description": "nap", "difficulty": 1,
                          "duration": 0.05} for i in range(4)])
    report = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.spawn("admin", [
                sys.executable, str(APPS / "bug_in_admin.py"), "--port", str(c.port),
                "--pub-port", str(c.pub_port), "--bind", "127.0.0.1", "--tasks", str(path),
                "--expect-workers", "1", "--report-json", str(report)])
            worker = await c.worker("w1")
            return await admin.wait(60), admin.stderr(), await worker.wait(15), worker.stderr()

    code, err, worker_code, worker_err = run(body())
    assert code == 1, err
    assert "error: the admin's receive loop stopped on an unexpected error: " \
           "RuntimeError('a planted bug')" in err
    assert "Traceback" in err  # the log has where it broke
    assert not report.exists()  # no report of a run that did not finish
    assert worker_code == 0, worker_err  # the admin ended the run, saying why
    assert "admin ended the run: the admin failed:" in worker_err


def test_a_bug_in_a_worker_makes_it_leave_with_exit_1_and_its_tasks_run_elsewhere(
        tmp_path, tasks_file):
    path = tasks_file([{"id": i, "description": "nap", "difficulty": 1,
                        "duration": 0.05} for i in range(4)])
    report = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path, env={"PYTHONPATH": str(APPS)}) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--report-json", str(report))
            buggy = await c.worker("buggy", "--app", "bug_in_worker", "--concurrency", "4")
            buggy_code = await buggy.wait(20)
            good = await c.worker("good")
            return (await admin.wait(60), admin.stderr(), buggy_code, buggy.stderr(),
                    await good.wait(15))

    code, err, buggy_code, buggy_err, good_code = run(body())
    assert buggy_code == 1, buggy_err
    assert re.search(r"error: buggy's runner \d stopped on an unexpected error: "
                     r"RuntimeError\('a planted bug'\)", buggy_err), buggy_err
    # It said goodbye: the tasks it held went back at once, not when it fell silent.
    assert re.search(r"worker 'buggy' left; [1-4] task\(s\) back in the queue", err), err
    assert "worker 'buggy' lost" not in err
    assert code == 0, err
    assert good_code == 0
    tasks = json.loads(report.read_text())["tasks"]
    assert sorted(t["id"] for t in tasks) == [0, 1, 2, 3]
    assert {t["worker"] for t in tasks} == {"good"} and all(t["success"] for t in tasks)
