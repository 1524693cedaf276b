"""examples/user_handlers as its README runs it: values come back, results are appended as
JSON lines, metrics match the report, and a task for a handler nobody has is reported while
the rest run."""

import json
import os
import urllib.request

from conftest import REPO, run

from ceylon_net.dev.testing import Cluster, cli, free_port, wait_until

EXAMPLE = REPO / "examples" / "user_handlers"


def _metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ceylon_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_user_handlers_results_file_and_metrics(tmp_path):
    results = tmp_path / "results.jsonl"
    metrics_port = free_port()
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"tasks": [
        {"id": "nobody", "description": "no worker has it", "difficulty": 1,
         "handler": "no_such_handler"},
        {"id": "fine", "description": "primes", "difficulty": 1, "handler": "count_primes",
         "args": [100]}]}))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            os.chdir(EXAMPLE)  # the tasks name texts/... relative to the example
            admin = await c.admin("--results", str(results), "--metrics-port",
                                  str(metrics_port), "--unassignable-timeout", "1")
            for n in ("cpu-1", "cpu-2"):
                await c.spawn(n, [*cli("ceylon-worker"), "--name", n, "--port", str(c.port),
                                  "--app", "user_tasks", "--concurrency", "2"],
                              env={"PYTHONPATH": str(EXAMPLE)})
            await wait_until(lambda: admin.stderr().count("joined from") == 2, 20, "workers")
            sub = await c.spawn("submit", [*cli("ceylon-submit"), "tasks.json", "--port",
                                           str(c.port), "--wait", "--json"])
            assert await sub.wait(60) == 0, sub.stderr()
            scraped = _metrics(metrics_port)
            other = await c.spawn("odd", [*cli("ceylon-submit"), str(odd), "--port",
                                          str(c.port), "--wait", "--json"])
            odd_code = await other.wait(60)
            return json.loads(sub.stdout()), scraped, odd_code, json.loads(other.stdout()), \
                admin.stderr()

    cwd = os.getcwd()
    try:
        report, scraped, odd_code, odd_report, err = run(body())
    finally:
        os.chdir(cwd)
    values = {t["id"]: t["value"] for t in report["tasks"]}
    assert values == {
        "primes-10k": 1229, "primes-100k": 9592, "primes-1m": 78498,
        "words-ceylon": {"path": "ceylon.txt", "words": 15, "lines": 2},
        "words-tutorial": {"path": "tutorial.txt", "words": 21, "lines": 3},
    }
    assert scraped['ceylon_tasks{state="completed"}'] == len(report["tasks"]) == 5
    assert scraped['ceylon_tasks{state="failed"}'] == 0
    assert scraped["ceylon_results_total"] == 5
    assert scraped["ceylon_workers_connected"] == 2
    assert scraped['ceylon_tasks{state="completed"}'] + scraped['ceylon_tasks{state="failed"}'] \
        + scraped['ceylon_tasks{state="dead"}'] == sum(v for k, v in scraped.items()
                                                     if k.startswith("ceylon_tasks{"))
    assert scraped["ceylon_task_seconds_count"] == 5
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["task_id"] for r in lines) == sorted(["fine", *values])
    assert odd_code == 3
    assert odd_report["unassigned"] == ["nobody"]
    assert [t["id"] for t in odd_report["tasks"]] == ["fine"]
    assert err.count("task 'nobody' 'no worker has it' needs handler 'no_such_handler'; no "
                     "connected worker has it") == 1
