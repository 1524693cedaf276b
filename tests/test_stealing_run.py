"""Work stealing between worker processes, with the admin's default pipelining: tasks queued
on a worker behind a long one are run by a worker that is idle (issue 15)."""

import json

from conftest import run

from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.edge.client import AsyncClient


def test_tasks_queued_behind_a_long_one_are_run_by_a_worker_that_joins_idle(tmp_path,
                                                                             tasks_file):
    tasks = [{"id": "long", "description": "long", "difficulty": 1, "duration": 4.0}]
    tasks += [{"id": f"short-{i}", "description": "short", "difficulty": 1, "duration": 0.05}
              for i in range(3)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--report-json", str(report_path))
            first = await c.worker("first", "--concurrency", "1")
            async with AsyncClient(f"127.0.0.1:{c.port}") as client:
                seen: dict = {}

                async def queued_behind_long() -> bool:
                    seen.update(await client.status())
                    w = {x["name"]: x for x in seen["workers"]}.get("first")
                    return w is not None and w["running"] == 1 and w["queued"] >= 1

                await wait_until(queued_behind_long, 20, "a task queued behind the long one")
                second = await c.worker("second", "--concurrency", "1")

                async def given_back() -> bool:  # while the long one still runs
                    counts = (await client.status())["counts"]
                    return counts["stolen"] >= 1 and counts["done"] < len(tasks)

                await wait_until(given_back, 20, "the first worker to give a task back")
                assert await admin.wait(60) == 0, admin.stderr()
                assert [await first.wait(15), await second.wait(15)] == [0, 0]
            return first, second

    first, second = run(body())
    report = json.loads(report_path.read_text())
    assert report["success_rate"] == 1.0
    by = {t["id"]: t["worker"] for t in report["tasks"]}
    assert by == {"long": "first", "short-0": "second", "short-1": "second",
                  "short-2": "second"}
    # In the order results came: the short ones did not wait for the long one.
    assert [t["id"] for t in report["tasks"]][-1] == "long"
    assert "ran 1 task(s)" in first.stderr() and "ran 3 task(s)" in second.stderr()
