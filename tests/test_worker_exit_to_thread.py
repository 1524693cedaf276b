"""An async handler whose blocking part went to asyncio.to_thread (the worker's own advice,
"await asyncio.to_thread(...) for its blocking part") and hung past its task's time limit:
the task is answered "timed out", the run ends, and the worker exits, saying it left the
thread behind (the loop's close waited for the default executor for ever: Python 3.11's
shutdown_default_executor has no timeout)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import run

from ceylon_net.dev.testing import Cluster, cli, free_port

APP = '''
import asyncio, threading
from ceylon_net import handler

_never = threading.Event()

@handler("hangs_in_to_thread")
async def hangs_in_to_thread():
    await asyncio.to_thread(_never.wait)
'''


@pytest.mark.timeout(90)
def test_a_worker_exits_after_its_run_though_a_to_thread_call_of_a_handler_hangs(tmp_path):
    (tmp_path / "h5_to_thread_app.py").write_text(APP)
    (tmp_path / "tasks.json").write_text(json.dumps({"tasks": [
        {"id": "T1", "description": "t", "difficulty": 1, "handler": "hangs_in_to_thread",
         "timeout": 0.5}]}))
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(tmp_path / "tasks.json"),
                                  "--expect-workers", "1")
            worker = await c.worker("w1", "--app", "h5_to_thread_app", "--concurrency", "1",
                                    env={"PYTHONPATH": path})
            assert await admin.wait(30) == 0, admin.stderr()
            try:
                code = await worker.wait(20)  # (it exits within a second or two when it can)
            except TimeoutError:
                code = None
            return code, worker.stderr()

    code, err = run(body())
    assert code == 0, f"the worker never exited after its run:\n{err[-800:]}"
    assert "a thread of asyncio.to_thread (or run_in_executor) still runs after 1 s: not " \
           "waited for" in err
    assert "a thread of asyncio.to_thread still running (a thread cannot be stopped): " \
           "exiting without waiting for them" in err


STUBBORN = '''
import asyncio, time
from ceylon_net import handler

@handler("stubborn")
async def stubborn(secs: float) -> int:
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
    return 1
'''


@pytest.mark.timeout(60)
def test_a_handler_that_will_not_stop_does_not_hold_the_admins_end(tmp_path):
    """The worker said it heard the run is over (its BYE) only once its handlers had stopped:
    one that catches its cancellation is given 1 s, and the admin's report and exit waited
    for it (a review of the END's acknowledgement). The BYE goes as the END comes now: the
    admin is gone while the worker still gives its handler that second."""
    (tmp_path / "stubbornapp.py").write_text(STUBBORN)
    tasks = tmp_path / "t.json"
    tasks.write_text(json.dumps({"tasks": [{"id": 1, "description": "s", "difficulty": 1,
                                            "handler": "stubborn", "args": [6],
                                            "timeout": 1}]}))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    admin = subprocess.Popen([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(port),
                              "--pub-port", str(free_port()), "--tasks", str(tasks),
                              "--expect-workers", "1"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen([*cli("ceylon-worker"), "--name", "w", "--port", str(port),
                               "--app", "stubbornapp"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        err = admin.communicate(timeout=30)[1]
        worker_on = worker.poll() is None  # (giving its handler its second still)
        werr = worker.communicate(timeout=30)[1]
    finally:
        for proc in (admin, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (admin.returncode, worker.returncode) == (0, 0), (err, werr)
    assert "did not stop within 1 s" in werr, werr
    assert worker_on, "the admin's end waited for the worker's handler"
