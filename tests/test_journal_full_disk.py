"""A journal whose disk fills up mid-run (a real one: a small tmpfs, so root): the admin stops
as if killed, saying why in one line, its workers keep what they hold for it, and the same
command, once there is space again, finishes the run with nothing lost or run twice."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run

from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.edge.client import AsyncClient

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (needs root)"),
              pytest.mark.timeout(120)]

APP = ["--app", "demo_handlers"]
APP_ENV = {"PYTHONPATH": str(REPO / "tests" / "apps")}


@contextlib.contextmanager
def small_disk(where: Path, size: str = "1m") -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill(disk: Path) -> Path:
    """Write to ``disk`` until it is full; the file written."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(1 << 16):  # (a bound: 256 MiB)
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_stops_the_admin_saying_so_and_the_same_command_finishes_the_run(tmp_path):
    flag, notes = tmp_path / "go", tmp_path / "ran.txt"

    async def body():
        with small_disk(tmp_path / "disk") as disk:
            async with Cluster(workdir=tmp_path) as c:
                journal = ["--journal", str(disk / "state.db")]
                admin = await c.admin(*journal)
                worker = await c.worker("w", *APP, "--concurrency", "4", env=APP_ENV)
                await wait_until(lambda: "joined from" in admin.stderr(), 30, "the worker")
                async with AsyncClient(f"127.0.0.1:{c.port}", gone_after=60) as client:
                    futures = client.map("hold_and_note", [str(flag)] * 4, [str(notes)] * 4,
                                         range(4))

                    async def all_running() -> bool:
                        return (await client.status())["counts"]["running"] == 4

                    await wait_until(all_running, 30, "the 4 tasks to start")
                    filler = fill(disk)
                    flag.touch()  # the tasks end: their results make a round it cannot write
                    code = await admin.wait(30)
                    told = worker.stderr()
                    filler.unlink()
                    again = await c.admin(*journal, name="admin-2")
                    values = await client.gather(futures)
                return code, admin.stderr(), told, worker.returncode, again.stderr(), values

    code, err, worker_err, worker_code, err2, values = run(body())
    assert code == 1, err
    assert f"journal {tmp_path / 'disk' / 'state.db'} could not be written (database or disk " \
           f"is full): the admin stops" in err, err
    assert "Traceback" not in err and "a bug" not in err, err
    assert "admin ended the run" not in worker_err and worker_code is None, worker_err
    assert "resumed from journal" in err2, err2
    assert values == [0, 1, 2, 3]
    assert sorted(notes.read_text().split()) == ["0", "1", "2", "3"]  # each ran once


@pytest.mark.parametrize("free, said", [
    (0, "could not be opened (disk I/O error; 0 bytes free on its disk): free space"),
    (256, "could not be written as the admin started (database or disk is full): the admin "
          "stops")])
def test_a_journal_it_cannot_fold_on_a_full_disk_is_said_in_one_line_and_left_as_it_was(
        tmp_path, free, said):
    """Full: not even opened (reading a WAL journal writes its index file). Nearly full:
    its log is not folded into one snapshot as the admin starts."""
    from ceylon_net.core.tasks import Task, TaskStatus
    from ceylon_net.dev.testing import cli
    from ceylon_net.edge.journal import Journal

    with small_disk(tmp_path / "disk", "4m") as disk:
        path = disk / "state.db"
        j = Journal(path, "default")
        j.add_tasks((Task(i, "x" * 200), None) for i in range(2_000))
        j.commit()
        for i in range(0, 2_000, 100):  # rows of changes: the admin folds them as it starts
            j.update((t, TaskStatus.COMPLETED, 1, "w", None, None, 0, False, None, 0)
                     for t in range(i, i + 100))
            j.commit()
        j.close()
        filler = fill(disk)
        os.truncate(filler, max(0, filler.stat().st_size - free * 1024))
        before = path.read_bytes()
        p = subprocess.run([*cli("ceylon-admin"), "--journal", str(path), "--port", "0",
                            "--pub-port", "0", "--bind", "127.0.0.1"],
                           capture_output=True, text=True, timeout=60)
        after = path.read_bytes()
        filler.unlink()
        j = Journal(path, "default")  # (space again: it reads as before)
        done = sum(t.status is TaskStatus.COMPLETED for t in j.tasks())
        j.close()
    assert p.returncode == 2, p.stderr
    assert f"journal {path} {said}" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert after == before
    assert done == 2_000


def test_a_results_file_on_a_full_disk_waits_for_space_and_the_admin_serves_on(tmp_path):
    """`--results FILE` on a disk that fills: the admin stopped on it, as "a bug", and told
    its workers the run was over with results it did not have: a restart on its journal ran
    them again (a review: 38 of 60). Now its lines wait, said once, the admin serving on;
    with space again, they are written, each once, none cut short."""
    results = tmp_path / "disk" / "results.jsonl"

    async def body():
        with small_disk(tmp_path / "disk", "256k") as disk:
            async with Cluster(workdir=tmp_path) as c:
                admin = await c.admin("--results", str(results))
                await c.worker("w", *APP, "--concurrency", "4", env=APP_ENV)
                await wait_until(lambda: "joined from" in admin.stderr(), 30, "the worker")
                async with AsyncClient(f"127.0.0.1:{c.port}") as client:
                    assert await client.gather(client.map("echo_later", range(5))) == \
                        [{"echo": i} for i in range(5)]
                    filler = fill(disk)
                    big = ["x" * 3000 + str(i) for i in range(20)]  # (lines no disk room holds)
                    assert await client.gather(client.map("echo_later", big)) == \
                        [{"echo": x} for x in big]
                    await wait_until(lambda: "could not be written" in admin.stderr(), 30,
                                     "the admin to say its results wait")
                    filler.unlink()
                    assert await client.gather(client.map("echo_later", range(5, 10))) == \
                        [{"echo": i} for i in range(5, 10)]
                    await wait_until(lambda: "written again" in admin.stderr(), 30,
                                     "the lines that waited to be written")
                    lines = results.read_text().splitlines()
                return admin.stderr(), admin.returncode, lines

    err, code, lines = run(body())
    assert code is None, err  # (serving on)
    assert "--results " + str(results) + ": could not be written (No space left on device): " \
        in err, err
    assert err.count("could not be written") == 1, err
    assert "Traceback" not in err and "a bug" not in err, err
    values = sorted(str(json.loads(line)["value"]["echo"]) for line in lines)
    assert values == sorted([str(i) for i in range(10)] + ["x" * 3000 + str(i)
                                                             for i in range(20)])


def test_a_report_the_full_disk_cannot_hold_leaves_no_file_behind(tmp_path):
    """--report-json on a disk that filled: the admin said it could not be written, and left
    an empty file a reader took for the report (a review). Whole, or not at all."""
    import typer

    from ceylon_net.cli.admin import _finish
    from ceylon_net.core.tasks import RunReport, TaskOutcome

    report = RunReport([TaskOutcome(i, f"task {i}", 1, "w", True, 0.5) for i in range(200)])
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk)
        path = disk / "report.json"
        try:
            _finish(report, path)
        except (typer.Exit, SystemExit) as exc:
            code = getattr(exc, "exit_code", getattr(exc, "code", None))
        else:
            code = 0
        left = sorted(p.name for p in disk.iterdir())
    assert code == 1
    assert left == ["filler"]


def test_results_waiting_for_a_disk_go_out_as_far_as_it_has_room_the_oldest_kept(
        tmp_path, monkeypatch):
    """Lines that waited for space were written all at once or not at all: more of them than
    the disk had room for, none went out again, for ever; and they piled up in memory, all
    joined again every round (a review). They go out a chunk at a time as far as there is
    room; past RESULTS_WAITING the oldest are dropped, counted."""
    from ceylon_net.core.tasks import TaskResult
    from ceylon_net.edge import journal

    monkeypatch.setattr(journal, "RESULTS_CHUNK", 100)
    monkeypatch.setattr(journal, "RESULTS_WAITING", 1_500)
    with small_disk(tmp_path / "disk", "128k") as disk:
        filler = fill(disk)
        out = journal.ResultsFile(str(disk / "results.jsonl"))
        for i in range(2_000):  # (some 150 bytes a line: 300 KB, more than the disk)
            out.add(TaskResult(i, "w", True, 0.01, value="v" * 40))
            if i % 100 == 99:
                out.flush()  # (a round: nothing goes)
        assert len(out.lines) == 1_500 and out.dropped == 500
        filler.unlink()
        out._retry_at = 0.0  # (a second later: while the disk is full, a try a second)
        out.flush()  # room for some: as many as fit, in ever smaller chunks
        lines = (disk / "results.jsonl").read_text().splitlines()
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        out.out.close()
    assert 0 < len(lines) < 1_500 and free < 4096 + 200  # (what had room went)
    assert [json.loads(line)["task_id"] for line in lines] == list(range(500, 500 + len(lines)))
    assert json.loads(out.lines[0])["task_id"] == 500 + len(lines)
