"""The ported tutorials and the demo run as a newcomer would run them."""

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO

from ceylon_net.dev.testing import free_port, wait_until


def _run(argv, **env):
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=90,
                          env={**os.environ, **env})


@pytest.mark.parametrize("script", ["task_management.py", "task_management_typed.py"])
def test_ported_tutorial_runs_skill_based_tasks(script):
    proc = _run([sys.executable, f"examples/{script}"],
                CEYLON_PORT=str(free_port()), CEYLON_PUB_PORT=str(free_port()),
                CEYLON_TIME_SCALE="0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-4:] == [
        "task 1 -> Junior: success",
        "task 2 -> Intermediate: success",
        "task 3 -> Senior: success",
        "All tasks completed. Success rate: 100.00%",
    ]
    assert "admin ended the run" in proc.stderr


@pytest.mark.parametrize("script", ["task_management_literal.py",
                                    "task_management_typed_literal.py"])
def test_literal_tutorial_ports_run_their_broadcasts_to_the_end(script):
    """The tutorials as written (broadcast_data from on_agent_connected): every worker hears
    every assignment, so each of the three runs task 1 (seed 001: the first it hears; seed 003:
    all three, and the manager stops after the first three results, task 1's)."""
    proc = _run([sys.executable, f"examples/{script}"],
                CEYLON_PORT=str(free_port()), CEYLON_PUB_PORT=str(free_port()),
                CEYLON_TIME_SCALE="0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-4:] == [
        "task 1 -> Intermediate: success",
        "task 1 -> Junior: success",
        "task 1 -> Senior: success",
        "All tasks completed. Success rate: 100.00%",
    ]
    assert "admin ended the run" in proc.stderr


def test_demo_assigns_each_seed_task_to_its_best_fit_worker(tmp_path):
    """And leaves nothing behind: its processes' logs went to a temporary directory that
    stayed (338 of them in /tmp on the machine that found it). The user's CEYLON_* settings
    are not its processes' (a token too short stopped its admin; a journal made a second
    demo report the first's run, its workers waiting 30 s for nothing)."""
    journal = tmp_path.parent / f"{tmp_path.name}-journal.db"
    proc = _run([sys.executable, "-m", "ceylon_net.dev.demo"], TMPDIR=str(tmp_path),
                CEYLON_TOKEN="short", CEYLON_JOURNAL=str(journal))
    assert proc.returncode == 0, proc.stderr
    assert "not passing CEYLON_JOURNAL, CEYLON_TOKEN to the demo's processes" in proc.stdout
    assert list(tmp_path.iterdir()) == [] and not journal.exists()
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()}
    assert "Junior" in rows["1"] and "Intermediate" in rows["2"] and "Senior" in rows["3"]
    assert "Success rate: 100.00% (3/3 tasks)" in proc.stdout
    assert "all processes exited cleanly" in proc.stdout


def test_a_demo_whose_admin_fails_says_why_at_once(tmp_path, monkeypatch, capsys):
    """It waited 30 s more for the workers (left trying to reach the admin), then ended on
    a TimeoutError traceback that hid the admin's own error."""
    import asyncio
    import time

    from ceylon_net.dev import demo

    bad = tmp_path / "seed_tasks.json"
    bad.write_text('[{"id": 1, "description": "x", "difficulty": 11}]')
    monkeypatch.setattr(demo, "SEED_TASKS", bad)
    t0 = time.monotonic()
    assert asyncio.run(demo.main()) == 1
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err
    assert "admin exited 2" in err
    assert "field 'difficulty' must be int 1-10, got 11" in err


@pytest.mark.timeout(90)
def test_the_readmes_task_groups_program_runs_as_shown(tmp_path):
    """README's seed 000 snippet, as a user would save it (on a free port)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (program,) = [b for b in blocks if "TaskPlayGround(port=8000)" in b]
    path = tmp_path / "groups_program.py"
    path.write_text(program.replace("port=8000", f"port={free_port()}"))
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done!" in done.stderr  # the goal's success message, logged by the admin


def _processes_on(port: int) -> list[int]:
    """The processes whose command line holds ``--port PORT``: the demo's admin and workers."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:  # (not a process, or gone meanwhile)
            continue
        if any(pair == (b"--port", str(port).encode()) for pair in itertools.pairwise(args)):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_demo_stopped_by_sigterm_or_sighup_stops_its_processes(sig):
    """Only Ctrl-C stopped them: SIGTERM left the admin and three workers running, orphans
    (and an admin waiting for its workers, for ever)."""
    async def body() -> tuple[int, str, list[int]]:
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ceylon_net.dev.demo", cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        port = 0
        try:
            said = (await asyncio.wait_for(demo.stdout.readline(), 30)).decode()
            port = int(re.match(r"admin on 127\.0\.0\.1:(\d+) ", said).group(1))
            await wait_until(lambda: len(_processes_on(port)) == 4, 30, "its four processes")
            demo.send_signal(sig)
            _, err = await asyncio.wait_for(demo.communicate(), 30)
            return demo.returncode, err.decode(), _processes_on(port)
        finally:
            for pid in _processes_on(port) if port else []:  # (what it left: not ours to keep)
                os.kill(pid, signal.SIGKILL)
            if demo.returncode is None:
                demo.kill()
                await demo.wait()

    code, err, left = asyncio.run(body())
    assert left == [], err
    assert code == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}: the admin and workers were stopped" in err


@pytest.mark.timeout(90)
def test_a_demo_whose_reader_goes_away_exits_as_its_run_did(tmp_path):
    """``bin/demo | head -1`` (README's first command, cut short) ended on a BrokenPipeError
    traceback, exit 1: the admin's results went to a reader gone, which README says changes
    no program's exit code. Here the reader takes the first line and closes its end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEYLON_")}
    port, left = 0, []
    with open(tmp_path / "stderr", "w") as err:
        demo = subprocess.Popen([sys.executable, "-m", "ceylon_net.dev.demo"], cwd=REPO,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
    try:
        said = demo.stdout.readline().decode()  # (bounded by the timeout mark)
        port = int(re.match(r"admin on 127\.0\.0\.1:(\d+) ", said).group(1))
        demo.stdout.close()
        code = demo.wait(60)
        left = _processes_on(port)
    finally:
        for pid in _processes_on(port) if port else []:  # (what it left: not ours to keep)
            os.kill(pid, signal.SIGKILL)
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    said_err = (tmp_path / "stderr").read_text()
    assert code == 0, said_err
    assert "Traceback" not in said_err and "BrokenPipeError" not in said_err, said_err
    assert said_err == "", said_err
    assert left == [], said_err


@pytest.mark.parametrize("script", ["task_management.py", "task_management_literal.py"])
def test_ctrl_c_on_a_ported_tutorial_shuts_it_down_without_a_traceback(script):
    """Its ``except KeyboardInterrupt`` sat inside ``async def main()``, which asyncio.run
    cancels on Ctrl-C: it never ran, and the user saw a CancelledError and KeyboardInterrupt
    traceback instead of "Shutting down" (found by a reviewing helper)."""
    async def body() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, f"examples/{script}", cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "CEYLON_PORT": str(free_port()),
                 "CEYLON_PUB_PORT": str(free_port()), "CEYLON_TIME_SCALE": "100"})
        said = b""
        try:
            while b"Starting task management system" not in said:
                line = await asyncio.wait_for(proc.stderr.readline(), 30)
                assert line, said.decode()
                said += line
            proc.send_signal(signal.SIGINT)
            rest = await asyncio.wait_for(proc.stderr.read(), 30)
            return await proc.wait(), (said + rest).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (as from a shell)
    try:
        code, err = asyncio.run(body())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0, err
    assert "Shutting down task management system..." in err, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize(("sig", "code"), [("INT", 130), ("TERM", -signal.SIGTERM)])
def test_a_stop_signal_while_bin_demo_sets_up_ends_it_quietly(tmp_path, sig, code):
    """Ctrl-C in its first moments (the Python version check) said "ceylon_net needs Python
    >= 3.11 (found: Python 3.11.7)", exit 2 (found by a reviewing helper). A stand-in for
    python3 signals the whole process group, as a terminal's Ctrl-C does."""
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nkill -{sig} 0\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    proc = subprocess.run([str(REPO / "bin" / "demo")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": str(python)},
                          start_new_session=True)  # (its own group: the kill stays in it)
    assert proc.returncode == code, proc.stderr
    assert "needs Python" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
