"""User handlers on worker processes, and a poison task that kills every worker it meets."""

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
from conftest import REPO, run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import Cluster, EventLog, cli, wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.wire import Limits, pack_batch, unpack_batch

APP = ["--app", "demo_handlers"]
APP_ENV = {"PYTHONPATH": str(REPO / "tests" / "apps")}


async def _worker(c, name, *args):
    return await c.worker(name, *APP, *args, env=APP_ENV)


def _expected_sha(text, rounds):
    d = text.encode()
    for _ in range(rounds):
        d = hashlib.sha256(d).digest()
    return d.hex()


def test_handlers_return_values_errors_and_keep_heartbeats(tmp_path, tasks_file):
    tasks = [{"id": f"h{i}", "description": "hash", "difficulty": 1, "handler": "sha256",
              "args": [f"x{i}", 200]} for i in range(100)]
    tasks += [{"id": f"e{i}", "description": "echo", "difficulty": 1, "handler": "echo_later",
               "args": [i]} for i in range(100)]
    tasks += [{"id": "bad", "description": "raises", "difficulty": 1, "handler": "boom",
               "args": ["no good"]},
              {"id": "long", "description": "3 s in a thread", "difficulty": 1,
               "handler": "busy", "args": [3.0]},
              {"id": "raw", "description": "bytes back", "difficulty": 1,
               "handler": "raw_bytes"}]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "2",
                                  "--report-json", str(report_path))
            workers = [await _worker(c, f"w{i}", "--concurrency", "4") for i in range(2)]
            code = await admin.wait(90)
            return code, admin.stderr(), [await w.wait(15) for w in workers]

    code, err, worker_codes = run(body())
    assert code == 0, err
    assert worker_codes == [0, 0]
    assert " lost: " not in err  # the 3-second sync task did not stop the heartbeats
    report = json.loads(report_path.read_text())
    by_id = {t["id"]: t for t in report["tasks"]}
    assert len(by_id) == 203
    assert report["success_rate"] == 202 / 203
    assert by_id["raw"]["value"] == "b'\\x00\\x01'"  # (JSON holds no bytes: their repr)
    assert not by_id["bad"]["success"]
    assert "ValueError: no good" in by_id["bad"]["error"]
    assert by_id["long"]["success"] and by_id["long"]["seconds"] >= 3.0
    for i in range(100):
        assert by_id[f"h{i}"]["value"] == _expected_sha(f"x{i}", 200)
        assert by_id[f"e{i}"]["value"] == {"echo": i}


def test_a_result_larger_than_the_admin_takes_fails_on_a_worker_that_takes_larger_ones(
        tmp_path, tasks_file):
    """The worker checks a result against the admin's limit too (said in its welcome):
    before, a result between the two limits broke the connection on every resend, for ever."""
    path = tasks_file([{"id": "big", "description": "2 MB back", "difficulty": 1,
                        "handler": "sized", "args": [2_000_000]},
                       {"id": "small", "description": "1 kB back", "difficulty": 1,
                        "handler": "sized", "args": [1000]}])
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report_path))
            w = await _worker(c, "w", "--max-message-bytes", "8000000")
            return await admin.wait(60), admin.stderr(), await w.wait(15)

    code, err, worker_code = run(body())
    assert code == 0, err  # (the run ended: a task failed, as a handler's error does)
    assert worker_code == 0
    by_id = {t["id"]: t for t in json.loads(report_path.read_text())["tasks"]}
    assert by_id["small"]["success"] and len(by_id["small"]["value"]) == 1000
    assert not by_id["big"]["success"]
    assert "over the 1,047,552 a message may carry" in by_id["big"]["error"], by_id["big"]


def test_a_poison_task_fails_after_three_attempts_and_the_run_finishes(tmp_path, tasks_file):
    """Workers of two slots, one after another. The poison task takes the task running beside
    it down with it twice; on its last attempt it runs alone, so that task is not used up by
    its crashes (before, it was lost a third time beside it, and failed as dead), and every
    other task ends well."""
    tasks = [{"id": "poison", "description": "kills its worker", "difficulty": 1,
              "handler": "die", "priority": 10}]
    tasks += [{"id": i, "description": f"ok {i}", "difficulty": 1, "duration": 0.5}
              for i in range(6)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report_path),
                                  "--heartbeat", "0.5")
            workers = []
            for i in range(4):
                workers.append(await _worker(c, f"w{i}", "--concurrency", "2"))
                if i < 3:  # the poison task kills it
                    assert await workers[-1].wait(60) == 17, workers[-1].stderr()
            code = await admin.wait(90)
            return code, admin.stderr(), [w.returncode for w in workers]

    code, err, worker_codes = run(body())
    assert code == 0, err
    assert sorted(worker_codes, key=lambda x: (x is None, x)).count(17) == 3
    report = json.loads(report_path.read_text())
    assert report["dead"] == ["poison"]
    poison = next(t for t in report["tasks"] if t["id"] == "poison")
    assert not poison["success"]
    assert re.match(r"lost 3 times, last with worker 'w\d'", poison["error"])
    others = [t for t in report["tasks"] if t["id"] != "poison"]
    assert sorted(t["id"] for t in others) == list(range(6))
    assert all(t["success"] for t in others), others


def test_prefetch_queues_tasks_on_the_worker_but_it_never_runs_more_than_its_concurrency(
        tmp_path, tasks_file):
    tasks = [{"id": i, "description": f"overlap {i}", "difficulty": 1, "handler": "overlap",
              "kwargs": {"delay": 0.05}} for i in range(24)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--prefetch", "3", "--report-json", str(report_path))
            async with EventLog("127.0.0.1", c.pub_port) as bus:
                await bus.wait_subscribed()
                worker = await _worker(c, "w", "--concurrency", "2")
                assert await admin.wait(60) == 0, admin.stderr()
                assert await worker.wait(15) == 0
            return bus

    bus = run(body())
    report = json.loads(report_path.read_text())
    assert report["success_rate"] == 1.0
    assert sorted(t["id"] for t in report["tasks"]) == list(range(24))
    assert max(t["value"] for t in report["tasks"]) == 2  # the most it ever ran at once
    assert bus.max_in_flight() == {"w": 5}  # 2 running and 3 queued on the worker


@pytest.mark.timeout(60)
def test_a_program_whose_sync_handler_hangs_past_its_time_limit_still_exits(tmp_path):
    """An in-process worker's hung handler thread does not hold the user's program at exit
    (threads of a ThreadPoolExecutor are joined at exit: it waited for the handler)."""
    script = REPO / "tests" / "apps" / "hung_exit.py"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            # (port 0: the admin picks both of its ports; a free one and the one after it,
            # its PUB port by default, need not both be free)
            prog = await c.spawn("prog", [sys.executable, str(script), "0"])
            return await prog.wait(30), prog.stdout(), prog.stderr()

    code, out, err = run(body())
    assert code == 0, err
    assert out.splitlines() == ["result: False timed out after 0.3 s", "main done"]


async def _lost_and_back(c, path, *worker_args: str, fault=None) -> str:
    """``path`` run on an admin beating every 0.25 s with one worker of the "stall" app,
    ``fault(worker)`` awaited first if given, until the worker finds its heartbeats stopped
    and registers again, and the run ends (exit 0): the worker's log."""
    admin = await c.admin("--tasks", str(path), "--heartbeat", "0.25", "--expect-workers", "1")
    worker = await c.worker("w", "--app", "stall", *worker_args, env=APP_ENV)
    if fault is not None:
        await fault(worker)
    await wait_until(lambda: "registering again" in worker.stderr(), 30,
                     "the worker to find its heartbeats stopped")
    assert await admin.wait(60) == 0, admin.stderr()
    return worker.stderr()


@pytest.mark.timeout(90)
def test_an_async_handler_that_blocks_is_named_when_the_worker_finds_its_heartbeats_stopped(
        tmp_path, tasks_file):
    """An ``async def`` handler that makes a blocking call holds the worker's event loop, its
    heartbeats too: the admin calls it lost, and the worker registers again, saying its
    heartbeats stopped ("was this process paused, or its event loop blocked?"). It names
    the async handler that ran meanwhile, and how to fix it; a plain handler that sleeps as
    long runs in a thread, holds nothing, and is named nowhere."""
    path = tasks_file([{"id": "blocks", "description": "b", "difficulty": 1,
                        "handler": "stall", "args": [2.0]},
                       {"id": "naps", "description": "n", "difficulty": 1,
                        "handler": "nap", "args": [2.0]}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            return await _lost_and_back(c, path)

    said = run(body())
    again = [line for line in said.splitlines() if "registering again" in line]
    assert again and all("was this process paused, or its event loop blocked?" in line
                         for line in again), again
    assert "async handler 'stall' (task 'blocks') ran on the event loop meanwhile: a " \
           "blocking call in an async def holds it (make it a plain def, which runs in a " \
           "thread, or await asyncio.to_thread(...) for its blocking part)" in again[0]
    assert "'nap'" not in said


@pytest.mark.timeout(90)
def test_a_worker_stopped_and_continued_says_so_and_names_no_handler(tmp_path, tasks_file):
    """SIGSTOP, then SIGCONT (Ctrl-Z and fg, a debugger): the worker said an async handler
    that only awaited held its loop ("a blocking call in an async def holds it"), telling
    the user to rewrite code that was right (a soak under faults)."""
    path = tasks_file([{"id": "dozes", "description": "d", "difficulty": 1,
                        "handler": "doze", "args": [8.0]}])

    async def paused(worker) -> None:
        await wait_until(lambda: "running task 'dozes'" in worker.stderr(), 30,
                         "the task to start")
        worker.signal(signal.SIGSTOP)
        await asyncio.sleep(2.0)  # (the fault: a pause past the admin's 0.75 s)
        worker.signal(signal.SIGCONT)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            return await _lost_and_back(c, path, "--log-level", "DEBUG", fault=paused)

    said = run(body())
    again = [line for line in said.splitlines() if "registering again" in line]
    assert "no heartbeat of ours went out" in again[0], again
    assert "paused: this process was stopped, then continued (SIGSTOP or Ctrl-Z, then " \
           "SIGCONT)" in again[0], again
    assert "'doze'" not in " ".join(again), again


def test_a_sync_handler_holding_the_gil_is_named_when_the_worker_finds_its_heartbeats_stopped(
        tmp_path, tasks_file):
    """A plain handler runs in a thread, but one long C call holding the GIL (big integers,
    an extension that does not release it) stops the event loop too: the worker said only
    "was this process paused, or its event loop blocked?"; the user had nothing to go on."""
    path = tasks_file([{"id": "holds", "description": "h", "difficulty": 1,
                        "handler": "gil_hold", "args": [1.5]}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin("--tasks", str(path), "--heartbeat", "0.25", "--expect-workers", "1")
            worker = await c.worker("w", "--app", "stall", env=APP_ENV)
            await wait_until(lambda: "registering again" in worker.stderr(), 60,
                             "the worker to find its heartbeats stopped")
            return worker.stderr()

    again = [line for line in run(body()).splitlines() if "registering again" in line]
    assert "sync handler 'gil_hold' (task 'holds') ran in a thread meanwhile: a call that " \
           "holds Python's GIL" in again[0], again


# ---- a review's findings (helper): a returned object reported as it was when its call
# returned; a batch whose thread cannot be made; --app imports that fail oddly

QUICK = "test_review.quick"


async def _run_task(task: Task) -> TaskResult:
    """What the worker's own run_task does with a task naming a handler."""
    value = await handlers.call(task.handler, task.args, task.kwargs)
    return TaskResult(task.id, "w", True, value=value)


@pytest.mark.timeout(30)
def test_a_batch_whose_thread_cannot_be_made_fails_its_tasks_not_the_worker(monkeypatch):
    """Out of threads (a pids limit, ulimit -u): a sync handler's task fails, saying so, and
    the runner goes on (test_runner's test of one call). Tasks of a *quick* sync handler,
    queued behind one another, go to a batch instead, and there the same error escapes the
    runner's loop: the runner dies as of a bug, and the worker leaves (exit 1)."""
    ran: list[int] = []
    monkeypatch.setitem(handlers._HANDLERS, QUICK, lambda x: ran.append(x) or 2 * x)
    monkeypatch.setitem(handlers._slowest, QUICK, 0.0)  # (known quick, as after a quick call)
    monkeypatch.setattr(handlers, "_THREADS", handlers._Threads())  # (no thread made yet)
    start = threading.Thread.start

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def body() -> tuple[list[Any], dict[Any, TaskResult]]:
        await wait_until(lambda: handlers.running() == 0, 10, "other tests' threads to end")
        crashes: list[Any] = []
        runner = TaskRunner("w", 1, _run_task, lambda: None, batches=True)
        for i in (1, 2, 3):  # (queued before the slot starts: it takes them as one batch)
            runner.accept(TaskAssignment(Task(i, "d", 1, handler=QUICK, args=[i]), "w", 1))
        monkeypatch.setattr(threading.Thread, "start", cannot_start)
        got: dict[Any, TaskResult] = {}
        try:
            runner.start(crashes.append)

            def answered() -> bool:
                got.update((r.task_id, r) for r in runner.take_unsent())
                return len(got) == 3 or bool(crashes)

            await wait_until(answered, 10, "the three tasks to be answered (or a crash)")
        finally:
            monkeypatch.setattr(threading.Thread, "start", start)
            await runner.stop()
        return crashes, got

    crashes, got = run(body())
    assert crashes == [], f"the runner died: {crashes[0]!r}" if crashes else ""
    assert sorted(got) == [1, 2, 3]
    assert all(not r.success and "can't start new thread" in (r.error or "")
               for r in got.values()), got
    assert ran == [] and handlers.running() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("source", "message"), [
    # an exception class of the module's whose str() fails (a bug in the user's own error
    # class): the message built from it raises inside load_app's own except clause
    ('class Bad(Exception):\n    def __str__(self):\n        raise RuntimeError("no str")\n'
     'raise Bad()\n', "--app badapp2: importing it raised Bad"),
    # a BaseException that is not an Exception (asyncio.CancelledError is one: a module-level
    # asyncio.run() of a set-up coroutine that got cancelled)
    ("import asyncio\nraise asyncio.CancelledError()\n",
     "--app badapp2: importing it raised CancelledError"),
])
def test_a_worker_app_whose_import_fails_oddly_is_still_a_clear_config_error(
        tmp_path, source, message):
    """README: a bad --app is exit 2 with one line saying why (test_cli covers an Exception
    and sys.exit). These two give a Python traceback and exit 1, the code for 'rejected by
    the admin / no admin answered / a bug in the worker'."""
    (tmp_path / "badapp2.py").write_text(source)
    proc = subprocess.run([*cli("ceylon-worker"), "--name", "x", "--app", "badapp2",
                           "--connect-timeout", "0.5"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(90)
def test_a_returned_object_the_handler_goes_on_changing_is_reported_as_it_was_returned(
        tmp_path, tasks_file):
    """A handler returns a list it keeps (a running tally). Each task's value must be that
    list as it was when its call returned: task k (in the order they ran) saw k items. The
    worker keeps the object itself, checks it, and packs it only when the result is sent
    (results are held a moment to leave together; a batch of a quick handler's tasks runs
    them all before any is answered): by then later tasks have appended to it, and earlier
    tasks report later tasks' items."""
    n = 40
    path = tasks_file([{"id": f"s{i}", "description": "tally", "difficulty": 1,
                        "handler": "seen_so_far", "args": [i]} for i in range(n)])
    report_path = tmp_path / "report.json"

    async def body() -> tuple[int, str, int]:
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report_path))
            w = await c.worker("w", "--app", "shared_state", "--concurrency", "1",
                               env={"PYTHONPATH": str(REPO / "tests" / "apps")})
            code = await admin.wait(60)
            return code, admin.stderr(), await w.wait(15)

    code, err, worker_code = run(body())
    assert code == 0 and worker_code == 0, err
    report = json.loads(report_path.read_text())
    values = {t["id"]: t["value"] for t in report["tasks"]}
    assert len(values) == n and all(isinstance(v, list) for v in values.values()), values
    # Each task's own argument is the last item of the list it returned ...
    wrong = {tid: v for tid, v in values.items() if not v or v[-1] != int(tid[1:])}
    # ... and the lists grow one item per task: n different lengths.
    lengths = sorted(len(v) for v in values.values())
    assert not wrong and lengths == list(range(1, n + 1)), (
        f"{len(wrong)} of {n} tasks reported items appended after they returned; lengths "
        f"{lengths}")


@pytest.mark.timeout(90)
def test_a_task_does_not_fail_for_what_a_later_task_put_in_the_object_it_returned(
        tmp_path, tasks_file):
    """As above, with a later task putting a set in the returned dict. Each of the earlier
    tasks returned a dict of strings, sendable; but the worker checks (and packs) the object
    only after the call, when a batch's later calls have changed it: earlier tasks fail,
    "its return value cannot be sent to the admin: ... (at ['s']: set)", for what another
    task did. Only the last one should fail."""
    tasks = [{"id": f"n{i}", "description": "note", "difficulty": 1, "handler": "note",
              "args": [f"k{i}"]} for i in range(20)]
    tasks.append({"id": "set", "description": "note a set", "difficulty": 1,
                  "handler": "note", "args": ["s", True]})
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body() -> tuple[int, str, int, str]:
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report_path),
                                  "--lost-wait", "0")
            w = await c.worker("w", "--app", "shared_state", "--concurrency", "1",
                               env={"PYTHONPATH": str(REPO / "tests" / "apps")})
            code = await admin.wait(60)
            return code, admin.stderr(), await w.wait(15), w.stderr()

    code, err, worker_code, werr = run(body())
    assert worker_code == 0 and "stopped on an unexpected error" not in werr, werr[-3000:]
    assert code == 0, err
    report = json.loads(report_path.read_text())
    by_id = {t["id"]: t for t in report["tasks"]}
    failed = {i: by_id[i].get("error") for i in by_id
              if i != "set" and not by_id[i]["success"]}
    assert not failed, failed
    assert not by_id["set"]["success"]


KEPT = "test_handlers.kept"


async def _run_task_kept(task: Task) -> TaskResult:
    """What the worker's own run_task does with a task naming a handler."""
    value = await handlers.call(task.handler, task.args, task.kwargs)
    return TaskResult(task.id, "w", True, value=value)


@pytest.mark.timeout(30)
def test_a_value_with_a_string_over_1_mib_is_still_reported_as_it_was_when_its_call_returned(
        monkeypatch):
    """A worker run with --max-message-bytes 8 MiB sends a value holding a 2 MiB string
    (its _unsendable finds nothing wrong: it reads it back with its own limits). But
    handlers.snapshot() read its copy back with the wire's default limits (strings of 1 MiB
    at most), failed, and kept the handler's own object uncopied: the task reported what the
    handler changed after its call returned (a review's finding, helper)."""
    state: dict[str, object] = {"blob": "x" * ((1 << 20) + 1), "seen": []}

    def kept(x: int) -> dict[str, object]:
        state["seen"].append(x)  # type: ignore[attr-defined]
        return state

    monkeypatch.setitem(handlers._HANDLERS, KEPT, kept)
    worker_limits = Limits(max_str_len=8 << 20, max_bin_len=8 << 20)  # (Worker.limits)

    async def body() -> TaskResult:
        first = await _run_task_kept(Task(1, "d", 1, handler=KEPT, args=[1]))
        await _run_task_kept(Task(2, "d", 1, handler=KEPT, args=[2]))  # (before 1's result left)
        return first

    first = run(body())
    # the worker would send it: the admin, with the same limits, reads it back
    unpack_batch(TaskResult, pack_batch([first]), worker_limits)
    assert first.value["seen"] == [1], \
        f"task 1 reports {first.value['seen']} (task 2's item too): its value was not copied"


@pytest.mark.parametrize("what, said", [("exit", "SystemExit(5)"),
                                        ("interrupt", "KeyboardInterrupt('from a background")])
def test_sys_exit_in_a_task_a_handler_started_is_said_and_the_worker_goes_on(
        tmp_path, tasks_file, what, said):
    """asyncio lets SystemExit and KeyboardInterrupt out of its loop from any task: the
    worker ended on the spot, exit 5 (or 130, as a Ctrl-C), nothing said, its tasks waiting
    for it to be found lost."""
    path = tasks_file([{"id": "bg", "description": "x", "difficulty": 1,
                        "handler": "exit_behind", "args": [what]},
                       {"id": "after", "description": "x", "difficulty": 1,
                        "handler": "echo_later", "args": [1], "depends_on": ["bg"]}])
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--report-json", str(report_path))
            worker = await _worker(c, "w")
            code = await admin.wait(60)
            return code, admin.stderr(), await worker.wait(15), worker.stderr()

    code, err, worker_code, worker_err = run(body())
    assert code == 0, err
    assert worker_code == 0, worker_err
    assert f"worker 'w': a task of its own that is not a handler's call (one a handler " \
           f"started?) raised {said}" in worker_err
    outcomes = {t["id"]: t for t in json.loads(report_path.read_text())["tasks"]}
    assert outcomes["bg"]["value"] == "returned" and outcomes["after"]["success"]
    assert " lost: " not in err
