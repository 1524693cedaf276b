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


async def _chaos(c: Cluster, rng: random.Random, admins: list[Proc], workers: list[Proc],
                 admin_args: tuple[str, ...] | None) -> list[str]:
    """Pause or kill (and replace) a random worker, again and again, until the run is over
    or STEPS faults were made; with ``admin_args``, two of the first ten faults kill the
    admin, which is started again so (on its journal). The sleeps are the faults' own
    lengths, not waits for something to happen. Returns what was done."""
    done: list[str] = []
    admin_at = set(rng.sample(range(1, 10), 2)) if admin_args is not None else set()
    while admins[-1].returncode is None and len(done) < STEPS:
        live = [w for w in workers if w.returncode is None]
        if not live:  # (the run just ended: they left as the admin said so)
            break
        victim, dice = rng.choice(live), rng.random()
        if admin_args is not None and len(done) in admin_at:
            done.append("killed the admin")
            admins[-1].signal(signal.SIGKILL)
            await admins[-1].wait(10)
            admins.append(await c.admin(*admin_args, name=f"admin-{len(admins)}"))
        elif dice < 0.75 or len(live) < 2:
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


@pytest.mark.timeout(240)  # (the faults take 80 s at most, the run's end 60 more)
@pytest.mark.parametrize("admin_too", [False, True], ids=["workers", "workers-and-admin"])
def test_a_run_through_random_pauses_and_kills_ends_every_task_once(tmp_path, tasks_file,
                                                                     admin_too):
    seed = int(os.environ.get("CEYLON_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"CEYLON_CHAOS_SEED={seed}")  # (shown with any failure, a timeout's too)
    rng = random.Random(seed)
    count = 240
    path = tasks_file([{"id": i, "description": f"t{i}", "difficulty": 1,
                        "duration": rng.choice((0.02, 0.05, 0.2, 0.8))} for i in range(count)])
    report_path, results = tmp_path / "report.json", tmp_path / "results.jsonl"
    args = ("--tasks", str(path), "--report-json", str(report_path), "--results", str(results),
            "--heartbeat", "0.3", "--max-attempts", "1000", "--expect-workers", "3",
            *(("--journal", str(tmp_path / "state.db")) if admin_too else ()))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admins = [await c.admin(*args)]
            workers = [await c.worker(f"w{i}", "--concurrency", "2") for i in range(3)]
            started = time.monotonic()
            done = await _chaos(c, rng, admins, workers, args if admin_too else None)
            code = await admins[-1].wait(60)
            return code, [a.stderr() for a in admins], done, time.monotonic() - started

    code, errs, done, took = run(body())
    said = f"seed {seed}, {len(done)} faults in {took:.1f} s: {done}"
    assert code == 0, f"{said}\n{errs[-1][-3000:]}"
    for err in errs:
        assert "Traceback" not in err and "| ERROR" not in err, f"{said}\n{err[-3000:]}"
    report = json.loads(report_path.read_text())
    assert sorted(t["id"] for t in report["tasks"]) == list(range(count)), said
    assert all(t["success"] for t in report["tasks"]), said
    recorded = Counter(json.loads(line)["task_id"] for line in
                       results.read_text().splitlines())
    assert recorded == Counter(range(count)), (said, [t for t, n in recorded.items() if n > 1])
    assert len(done) >= 10, f"the run ended before the faults did: {said}"
    assert any("lost: silent for" in err for err in errs), f"no worker was found lost: {said}"
