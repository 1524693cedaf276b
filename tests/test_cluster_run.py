"""The core promise, as a user runs it: ceylon-admin and three ceylon-worker processes on a
loopback port run 30 tasks; everything is done by a capable worker within its concurrency, and
every assignment and result also appears on the PUB bus."""

import json
import re

from conftest import run

from ceylon_net.dev.testing import Cluster, EventLog

SKILLS = {"Junior": 3, "Intermediate": 6, "Senior": 9}


def test_thirty_tasks_on_three_worker_processes(tmp_path, tasks_file):
    tasks = [{"id": i, "description": f"job {i}", "difficulty": 1 + i % 9} for i in range(30)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "3",
                                  "--report-json", str(report_path))
            async with EventLog("127.0.0.1", c.pub_port) as bus:
                await bus.wait_subscribed()
                workers = [await c.worker(n, "--skill", str(s), "--concurrency", "2",
                                          "--time-scale", "0.02") for n, s in SKILLS.items()]
                assert await admin.wait(60) == 0, admin.stderr()
                assert [await w.wait(15) for w in workers] == [0, 0, 0]
            return admin, bus, workers

    admin, bus, workers = run(body())
    report = json.loads(report_path.read_text())
    assert report["success_rate"] == 1.0
    assert report["unassigned"] == []
    assert sorted(t["id"] for t in report["tasks"]) == list(range(30))
    for t in report["tasks"]:
        assert SKILLS[t["worker"]] >= t["difficulty"], t
    assert "Success rate: 100.00% (30/30 tasks)" in admin.stdout()

    assigned = bus.of(b"ASSIGN")
    results = bus.of(b"RESULT")
    # Every task went out (one queued behind a long one may have gone out again to an idle
    # worker after its first worker gave it back) and came back once.
    assert {a.task.id for a in assigned} == set(range(30))
    assert sorted(r.task_id for r in results) == list(range(30))
    assert all(a.worker in SKILLS for a in assigned)
    assert {a.worker for a in assigned} == set(SKILLS)
    for w in workers:  # tasks queue on a worker beyond its concurrency; 2 run at most
        ran = re.search(r"ran (\d+) task\(s\), at most (\d+) at once", w.stderr())
        assert ran is not None and 1 <= int(ran[2]) <= 2, w.stderr()[-2000:]
