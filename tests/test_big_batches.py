"""Assignments to one worker go out in frames no larger than the message limit, however far
ahead the admin feeds it: fast tasks with large arguments must not be batched into a frame the
worker's socket refuses (its connection would drop, and the same batch would be sent again)."""

import json

from conftest import run
from test_handlers_and_poison import APP, APP_ENV

from ceylon_net.dev.testing import Cluster


def test_fast_tasks_with_large_arguments_are_sent_in_frames_within_the_limit(tmp_path,
                                                                          tasks_file):
    # 200 tasks of 64 KiB each, run as fast as they come: 12.5 MiB in all, and the admin feeds
    # the worker hundreds ahead once it measures them, more than fits a 1 MiB message.
    blob = "x" * 65_536
    tasks = [{"id": i, "description": "echo", "difficulty": 1, "handler": "echo_later",
              "kwargs": {"value": blob, "delay": 0}} for i in range(200)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--report-json", str(report_path))
            worker = await c.worker("w", *APP, env=APP_ENV)
            code = await admin.wait(60)
            return code, admin.stderr(), await worker.wait(15), worker.stderr()

    code, admin_err, worker_code, worker_err = run(body())
    assert (code, worker_code) == (0, 0), admin_err + worker_err
    report = json.loads(report_path.read_text())
    assert report["success_rate"] == 1.0
    assert all(t["value"] == {"echo": blob} for t in report["tasks"])
    assert "registering again" not in worker_err and "never got" not in admin_err
