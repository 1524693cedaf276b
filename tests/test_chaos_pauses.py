"""Workers paused (SIGSTOP: a laptop suspended, a debugger, a long GC) and killed at random
moments while a run goes on, the faults coming faster than the admin's liveness limit: every
task ends once, with its result; nothing is recorded twice; the admin exits 0. The faults
follow a seed, said on failure (CEYLON_CHAOS_SEED=N replays them)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter

import pytest
from conftest import run

from ceylon_net.dev.testing import Cluster, Proc

STEPS = 40  # faults at most
PAUSE = (0.2, 1.5)  # seconds a worker stays stopped (the liveness limit is 0.9 s)
BETWEEN = (0.1, 0.5)  # seconds between two faults


async def _chaos(c: Cluster, rng: random.Random, admin: Proc, workers: list[Proc]) -> list[str]:
    """Pause or kill (and replace) a random worker, again and again, until the run is over
    or STEPS faults were made. The sleeps are the faults' own lengths, not waits for
    something to happen. Returns what was done."""
    done: list[str] = []
    while admin.returncode is None and len(done) < STEPS:
        live = [w for w in workers if w.returncode is None]
        victim = rng.choice(live)
        if rng.random() < 0.75 or len(live) < 2:
            seconds = rng.uniform(*PAUSE)
            done.append(f"paused {victim.name} {seconds:.2f} s")
            with victim.paused():
                await asyncio.sleep(seconds)
        else:
            done.append(f"killed {victim.name}")
            victim.signal(signal.SIGKILL)
            workers.append(await c.worker(f"w{len(workers)}", "--concurrency", "2"))
        await asyncio.sleep(rng.uniform(*BETWEEN))
    return done


@pytest.mark.timeout(150)
def test_a_run_through_random_pauses_and_kills_of_its_workers_ends_every_task_once(
        tmp_path, tasks_file):
    seed = int(os.environ.get("CEYLON_CHAOS_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    count = 240
    path = tasks_file([{"id": i, "description": f"t{i}", "difficulty": 1,
                        "duration": rng.choice((0.02, 0.05, 0.2, 0.8))} for i in range(count)])
    report_path, results = tmp_path / "report.json", tmp_path / "results.jsonl"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report_path),
                                  "--results", str(results), "--heartbeat", "0.3",
                                  "--max-attempts", "1000", "--expect-workers", "3")
            workers = [await c.worker(f"w{i}", "--concurrency", "2") for i in range(3)]
            started = time.monotonic()
            done = await _chaos(c, rng, admin, workers)
            code = await admin.wait(90)
            return code, admin.stderr(), done, time.monotonic() - started

    code, err, done, took = run(body())
    said = f"seed {seed}, {len(done)} faults in {took:.1f} s: {done}"
    assert code == 0, f"{said}\n{err[-3000:]}"
    assert "Traceback" not in err and "| ERROR" not in err, f"{said}\n{err[-3000:]}"
    report = json.loads(report_path.read_text())
    assert sorted(t["id"] for t in report["tasks"]) == list(range(count)), said
    assert all(t["success"] for t in report["tasks"]), said
    recorded = Counter(json.loads(line)["task_id"] for line in
                       results.read_text().splitlines())
    assert recorded == Counter(range(count)), (said, [t for t, n in recorded.items() if n > 1])
    assert len(done) >= 3, f"the run ended before the faults began: {said}"
