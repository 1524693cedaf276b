"""Seed 000 end to end: the ported tutorial, groups files through the CLIs, ceylon-status
mid-run, and the progress bars on a terminal."""

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, run

from ceylon_net import TaskPlayGround
from ceylon_net.dev.testing import Cluster, EventLog, cli, free_port, wait_until
from ceylon_net.wire import Event


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class WatchedPlayground(TaskPlayGround):
    """The tutorial's playground, with an observer on the PUB bus before any task goes out."""

    def play(self, workers=None):
        self.workers = workers
        return super().play(workers=workers)

    async def assign_task_groups(self, groups):
        self.bus = EventLog("127.0.0.1", self.admin.pub_port)
        await self.bus.__aenter__()
        await self.bus.wait_subscribed()
        await super().assign_task_groups(groups)


def test_seed_000_goal_fires_once_between_5_and_10_and_concurrency_stays_at_2(capsys):
    example = _load_example("task_groups")
    pg = WatchedPlayground(port=0, bind="127.0.0.1")

    async def body():
        await asyncio.wait_for(example.main(pg), 60)
        await asyncio.sleep(0)  # let the observer take the last frames already received
        await pg.bus.__aexit__()

    run(body())
    out = capsys.readouterr().out
    events = pg.bus.events
    goal_at = [i for i, e in enumerate(events)
               if e.kind == b"EVENT" and isinstance(e.items[0], Event)
               and e.items[0].event == "goal_achieved"]
    assert len(goal_at) == 1
    results_before = sum(len(e.items) for e in events[:goal_at[0]] if e.kind == b"RESULT")
    assert 5 <= results_before < 10
    assert len(pg.bus.of(b"RESULT")) == 10  # the rest still completed
    assert {w.name: w.runner.peak for w in pg.workers} == {"worker1": 2, "worker2": 2}
    assert "Goal achieved! System can stop while tasks continue." in out
    assert "Final Statistics: 10/10 tasks completed by ['worker1', 'worker2']; group " \
           "completed, goal achieved" in out


def test_a_playground_whose_worker_is_refused_says_why_it_did_not_join():
    """Two workers of one name: 'only 1 of 2 workers joined within 2 s', without the reason."""
    from ceylon_net import Worker

    pg = TaskPlayGround(port=0, bind="127.0.0.1")

    async def body():
        with pytest.raises(TimeoutError) as timed_out:
            async with pg.play([Worker("twin"), Worker("twin")], connect_timeout=2):
                pass
        return str(timed_out.value)

    said = run(body())
    assert said.startswith("only 1 of 2 workers joined within 2 s (the admin refuses twin: "
                           "worker name 'twin' is already connected"), said


def test_seed_000_example_runs_as_a_program():
    proc = subprocess.run([sys.executable, "examples/task_groups.py"], cwd=REPO, timeout=90,
                          capture_output=True, text=True,
                          env={**os.environ, "CEYLON_PORT": str(free_port()),
                               "CEYLON_PUB_PORT": str(free_port())})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Goal Status: GoalStatus.ACHIEVED") == 1
    assert "Progress: 5/5 tasks completed" in proc.stdout
    assert "Final Statistics: 10/10 tasks completed" in proc.stdout
    assert proc.stderr.count("Goal 'Partial Processing Complete' achieved: 5/10") == 1


def _groups_file(tmp_path, duration):
    doc = {"groups": [
        {"name": "Ingest", "priority": 1, "goal": {"kind": "all"},
         "tasks": [{"id": f"in-{i}", "description": f"Fetch {i}", "duration": duration,
                    "required_role": "processor"} for i in range(2)]},
        {"name": "Data Processing", "depends_on": ["Ingest"],
         "goal": {"kind": "at_least", "count": 5, "name": "Partial Processing Complete"},
         "tasks": [{"description": f"Process Data Item {i}", "duration": duration,
                    "required_role": "processor"} for i in range(10)]},
    ]}
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(doc))
    return path


def test_groups_file_through_the_clis_with_status_mid_run(tmp_path):
    path = _groups_file(tmp_path, duration=0.6)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "2",
                                  "--report-json", str(report_path))
            for name in ("worker1", "worker2"):
                await c.worker(name, "--role", "processor", "--concurrency", "2")
            await wait_until(lambda: "starting task distribution" in admin.stderr(), 20, "start")
            table = await c.spawn("status", [*cli("ceylon-status"), "--port", str(c.port)])
            as_json = await c.spawn("status-json",
                                    [*cli("ceylon-status"), "--port", str(c.port), "--json"])
            codes = [await table.wait(20), await as_json.wait(20)]
            assert await admin.wait(60) == 0, admin.stderr()
            return codes, table.stdout(), json.loads(as_json.stdout()), admin

    codes, table, snap, admin = run(body())
    assert codes == [0, 0]
    # (the queued tasks' table only when some are: they may all be on the workers by then)
    for text in ("Workers of admin 'admin'", "worker1", "worker2", "127.0.0.1", "processor",
                 "Task groups", "Ingest", "Data Processing", "Partial Processing Complete",
                 "tasks: ", " queued"):
        assert text in table, text
    assert {w["name"] for w in snap["workers"]} == {"worker1", "worker2"}
    assert all(w["running"] <= w["capacity"] == 2 for w in snap["workers"])
    assert [g["name"] for g in snap["groups"]] == ["Ingest", "Data Processing"]
    assert snap["counts"]["total"] == 12

    report = json.loads(report_path.read_text())
    order = [t["id"] for t in report["tasks"]]
    assert set(order[:2]) == {"in-0", "in-1"}  # the dependency held Data Processing back
    assert len(order) == 12 and report["success_rate"] == 1.0
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["Data Processing"]["goal_status"] == "achieved"
    assert admin.stderr().count("Goal 'Partial Processing Complete' achieved: 5/10") == 1


def test_a_task_whose_role_no_worker_has_waits_and_is_reported(tmp_path, tasks_file):
    path = tasks_file([{"id": 1, "description": "GPU job", "difficulty": 1,
                        "required_role": "gpu"},
                       {"id": 2, "description": "CPU job", "difficulty": 1,
                        "required_role": "cpu"}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--unassignable-timeout", "1")
            await c.worker("cpu-worker", "--role", "cpu", "--time-scale", "0")
            return await admin.wait(30), admin.stderr()

    code, err = run(body())
    assert code == 3
    assert err.count("task 1 'GPU job' needs role 'gpu'; no connected worker has it") == 1


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux 'script' for a pty")
def test_progress_bars_render_on_a_terminal_and_end_at_100(tmp_path):
    path = _groups_file(tmp_path, duration=0.2)
    typescript = tmp_path / "typescript"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin_cmd = " ".join([*cli("ceylon-admin"), "--port", str(c.port), "--pub-port",
                                  str(c.pub_port), "--bind", "127.0.0.1", "--tasks", str(path),
                                  "--expect-workers", "1"])
            term = await c.spawn("pty", ["script", "-q", "-e", "-c", admin_cmd,
                                         str(typescript)], env={"COLUMNS": "120"})
            await c.worker("worker1", "--role", "processor", "--concurrency", "4")
            return await term.wait(60)

    assert run(body()) == 0
    raw = typescript.read_text(errors="replace")
    assert "\x1b[" in raw  # drawn with terminal control sequences: live bars
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    for bar in (r"all tasks\s.*12/12\s+100%", r"group 'Ingest'\s.*2/2\s+100%",
                r"group 'Data Processing'\s.*10/10\s+100% completed; goal achieved"):
        assert re.search(bar, screen), bar
