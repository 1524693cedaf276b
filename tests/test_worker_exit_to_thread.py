"""An async handler whose blocking part went to asyncio.to_thread (the worker's own advice,
"await asyncio.to_thread(...) for its blocking part") and hung past its task's time limit:
the task is answered "timed out", the run ends, and the worker exits, saying it left the
thread behind (the loop's close waited for the default executor for ever: Python 3.11's
shutdown_default_executor has no timeout)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run

from ceylon_net.dev.testing import Cluster

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
