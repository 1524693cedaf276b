"""ceylon-submit against a serving admin: results, exit codes, batches in order or side by
side, and across an admin restarted on its journal (or without one)."""

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from conftest import REPO, run

from ceylon_net.dev.testing import Cluster, EventLog, cli, free_port, wait_until

SEED = str(REPO / "examples" / "seed_tasks.json")


async def _serving(c, *admin_args, workers=(("Junior", 3), ("Senior", 9)), time_scale="0.05"):
    admin = await c.admin(*admin_args)
    for name, skill in workers:
        await c.worker(name, "--skill", str(skill), "--time-scale", time_scale)
    # (each joined: not a count of the lines, which one registering twice on a loaded machine
    # made one too many for ever; the suite failed so once, its workers "not joined" in 20 s)
    await wait_until(lambda: all(f"worker '{name}' joined from" in admin.stderr()
                                 for name, _ in workers), 20, "workers")
    return admin


async def _submit(c, *args, label="submit"):
    p = await c.spawn(label, [*cli("ceylon-submit"), *args, "--port", str(c.port)])
    return await p.wait(60), p.stdout(), p.stderr()


def _submit_offline(tmp_path, path):
    """ceylon-submit PATH with no admin to send it to (a file refused before connecting):
    its exit code, stdout and stderr."""
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            return await _submit(c, str(path), "--connect-timeout", "1")

    return run(body())


def test_submit_wait_prints_results_and_exits_0(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c)
            return await _submit(c, SEED, "--wait")

    code, out, err = run(body())
    assert code == 0, err
    assert "Success rate: 100.00% (3/3 tasks)" in out
    assert "Junior" in out and "Senior" in out


def test_submit_json_and_unassignable_tasks_exit_3(tmp_path, tasks_file):
    path = tasks_file([{"id": "easy", "description": "easy", "difficulty": 1},
                       {"id": "hard", "description": "too hard", "difficulty": 10}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, "--unassignable-timeout", "1")
            return await _submit(c, str(path), "--wait", "--json")

    code, out, _ = run(body())
    assert code == 3
    report = json.loads(out)
    assert report["unassigned"] == ["hard"]
    # (why: it was in the admin's log only, out of a remote submitter's sight)
    assert report["unassigned_why"] == [{"id": "hard", "reason": "needs skill >= 10; best "
                                                                 "connected is 9"}]
    assert report["batch"] == 1 and re.fullmatch(r"1@[0-9a-f]+", report["watch"]), report
    assert [t["id"] for t in report["tasks"]] == ["easy"]


def test_without_wait_it_returns_at_once_and_a_duplicate_batch_is_refused(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c)
            first = await _submit(c, SEED, label="first")
            second = await _submit(c, SEED, label="second")
            return first, second

    (code1, out1, _), (code2, _, err2) = run(body())
    assert code1 == 0 and out1.startswith("submitted batch 1: 3 task(s)")
    assert code2 == 2
    assert "the admin refused the batch: duplicate task id 1" in err2


def test_sequential_batches_run_one_after_another(tmp_path, tasks_file):
    first = tasks_file([{"id": f"a{i}", "description": "a", "difficulty": 1, "duration": 0.3}
                        for i in range(4)], name="a.json")
    second = tasks_file([{"id": f"b{i}", "description": "b", "difficulty": 1, "duration": 0.05}
                         for i in range(4)], name="b.json")

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c)
            async with EventLog("127.0.0.1", c.pub_port) as bus:
                await bus.wait_subscribed()
                await _submit(c, str(first), label="a")
                code, _, err = await _submit(c, str(second), "--wait", "--sequential",
                                             label="b")
                return code, err, bus

    code, err, bus = run(body())
    assert code == 0, err
    order = [(e.kind, getattr(item, "task_id", None) or item.task.id)
             for e in bus.events if e.kind in (b"ASSIGN", b"RESULT") for item in e.items]
    last_a_result = max(i for i, (k, t) in enumerate(order) if k == b"RESULT" and t[0] == "a")
    first_b_assign = min(i for i, (k, t) in enumerate(order) if k == b"ASSIGN" and t[0] == "b")
    assert last_a_result < first_b_assign


def test_submit_to_a_dead_admin_says_so_within_connect_timeout(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            c.port = free_port()
            started = time.monotonic()
            result = await _submit(c, SEED, "--wait", "--connect-timeout", "2")
            return result, time.monotonic() - started, c.port

    (code, _, err), took, port = run(body())
    assert code == 4
    assert f"no admin answered at tcp://127.0.0.1:{port} within 2 s" in err
    assert took < 8


def test_a_bad_file_is_refused_before_anything_is_sent(tmp_path, tasks_file):
    path = tasks_file([{"id": 1, "description": "x", "difficulty": 0}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            c.port = free_port()  # nothing listens: a bad file must not even try
            return await _submit(c, str(path), "--wait")

    code, _, err = run(body())
    assert code == 2
    assert "field 'difficulty' must be int 1-10, got 0" in err


def test_cancel_stops_a_running_task_and_one_queued_on_its_worker(tmp_path, tasks_file):
    path = tasks_file([{"id": "long", "description": "long", "difficulty": 1, "duration": 30},
                       {"id": "queued", "description": "waits", "difficulty": 1,
                        "duration": 30},
                       {"id": "quick", "description": "quick", "difficulty": 1,
                        "duration": 0.05, "priority": -1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving(c, workers=(("Only", 9),))
            waiting = await c.spawn("waiting", [*cli("ceylon-submit"), str(path), "--port",
                                                str(c.port), "--wait", "--json"])
            await wait_until(lambda: "batch 1 from" in admin.stderr(), 20, "the batch")
            cancel = await c.spawn("cancel", [*cli("ceylon-cancel"), "long", "queued", "nope",
                                              "--port", str(c.port), "--reason", "not needed"])
            cancel_code = await cancel.wait(20)
            code = await waiting.wait(30)
            return cancel_code, cancel.stdout(), cancel.stderr(), code, waiting.stdout()

    cancel_code, out, err, code, report = run(body())
    assert cancel_code == 1  # 'nope' is unknown
    # The worker runs one at a time, and holds the next queued behind it (pipelining): both
    # are stopped there; the low-priority one waits at the admin and runs.
    assert "long: stopping (on its worker: queued there or running)" in out
    assert "queued: stopping (on its worker: queued there or running)" in out
    assert "nope: unknown task" in err
    assert code == 0  # nothing failed: cancelled is not failed
    data = json.loads(report)
    assert [t["id"] for t in data["tasks"]] == ["quick"]
    # The reason given, as for a task cancelled at the admin ("cancelled: not needed" before)
    assert {c["id"]: c["reason"] for c in data["cancelled"]} == {
        "long": "not needed", "queued": "not needed"}


@pytest.mark.timeout(120)
def test_batches_waited_for_survive_an_admin_killed_and_restarted_on_its_journal(
        tmp_path, tasks_file):
    """ceylon-submit --wait, and a --sequential batch behind it, while the admin is killed
    and started again on its journal: both end with their full report, and the second still
    starts only once the first is done."""
    first = tasks_file([{"id": f"a{i}", "description": "a", "difficulty": 1, "duration": 0.4}
                        for i in range(6)], name="a.json")
    second = tasks_file([{"id": f"b{i}", "description": "b", "difficulty": 1, "duration": 0.05}
                         for i in range(3)], name="b.json")
    journal, results = tmp_path / "state.db", tmp_path / "results.jsonl"
    admin_args = ("--journal", str(journal), "--results", str(results))

    async def submit(c, path, *args, label):
        return await c.spawn(label, [*cli("ceylon-submit"), str(path), "--wait", *args,
                                     "--port", str(c.port)])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving(c, *admin_args, workers=(("w1", 5), ("w2", 5)),
                                   time_scale="1")
            a = await submit(c, first, label="a")
            await wait_until(lambda: "batch 1 from" in admin.stderr(), 20, "batch 1")
            b = await submit(c, second, "--sequential", label="b")
            await wait_until(lambda: "batch 2 from" in admin.stderr(), 20, "batch 2")
            await wait_until(lambda: results.exists() and results.read_text().count("\n") >= 2,
                             20, "two results")
            admin.signal(signal.SIGKILL)
            assert await admin.wait(10) == -signal.SIGKILL
            again = await c.admin(*admin_args, name="admin-2")
            ends = [await a.wait(60), await b.wait(60)]
            return ends, a.stdout() + a.stderr(), b.stdout() + b.stderr(), again.stderr()

    (code_a, code_b), out_a, out_b, log = run(body())
    assert "resumed from journal" in log
    assert code_a == 0 and "Success rate: 100.00% (6/6 tasks)" in out_a, out_a
    assert code_b == 0 and "Success rate: 100.00% (3/3 tasks)" in out_b, out_b
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    last_a = max(r["at"] for r in rows if r["task_id"].startswith("a"))
    first_b = min(r["at"] - r["seconds"] for r in rows if r["task_id"].startswith("b"))
    assert first_b > last_a - 0.01, rows  # b's tasks started after a's last ended


def test_a_value_json_cannot_hold_is_written_as_its_repr_and_the_report_is_whole(
        tmp_path, tasks_file):
    path = tasks_file([{"id": "raw", "description": "bytes back", "difficulty": 1,
                        "handler": "raw_bytes"},
                       {"id": "plain", "description": "a", "difficulty": 1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            await c.worker("w1", "--app", "demo_handlers", "--time-scale", "0",
                           env={"PYTHONPATH": str(REPO / "tests" / "apps")})
            await wait_until(lambda: "joined from" in admin.stderr(), 20, "the worker")
            return await _submit(c, str(path), "--wait", "--json")

    code, out, err = run(body())
    assert code == 0, err
    by_id = {t["id"]: t for t in json.loads(out)["tasks"]}
    assert by_id["raw"]["success"] and by_id["raw"]["value"] == "b'\\x00\\x01'"
    assert by_id["plain"]["success"]


@pytest.mark.parametrize("args, says", [
    ([10 ** 30], "task #1 (id 'x'): field 'args' has an integer of 100 bits (the wire carries "
                 "-2**63 to 2**64 - 1)"),
    ("deep", "task #1 (id 'x'): field 'args' nests lists and maps more than 100 deep"),
])
def test_a_task_whose_arguments_the_wire_cannot_carry_is_refused_before_sending(
        tmp_path, tasks_file, args, says):
    if args == "deep":
        args = []
        for _ in range(600):
            args = [args]
    path = tasks_file([{"id": "x", "description": "a", "difficulty": 1, "handler": "h",
                        "args": args}])

    code, _, err = _submit_offline(tmp_path, path)
    assert code == 2, err
    assert f"error: {path}: {says}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("doc, says", [
    ({"tasks": [{"id": 1, "description": "x", "difficulty": 1, "depends_on": [2]},
                {"id": 2, "description": "y", "difficulty": 1, "depends_on": [1]}]},
     "dependency cycle: task 1 -> task 2 -> task 1"),
    ({"groups": [{"name": "G", "tasks": [{"id": "a", "description": "a", "depends_on": ["b"]},
                                         {"id": "b", "description": "b",
                                          "depends_on": ["a"]}]}]},
     "dependency cycle: task 'a' -> task 'b' -> task 'a'"),
])
def test_a_file_with_a_dependency_cycle_is_refused_before_sending(tmp_path, doc, says):
    """Its tasks may depend on ones the admin holds, so ceylon-submit left dependencies to
    the admin: with none answering, a cyclic file was 'no admin answered' (exit 4), not a bad
    file (exit 2). A cycle can only be within the file: it is looked for here."""
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(doc))

    code, _, err = _submit_offline(tmp_path, path)
    assert code == 2 and f"error: {path}: {says}" in err, err


def test_a_file_with_an_unknown_top_level_key_is_refused_before_sending(tmp_path):
    """"group" for "groups": the group's tasks were dropped without a word, the rest ran."""
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"tasks": [{"id": 1, "description": "x", "difficulty": 1}],
                                "group": [{"name": "g", "tasks": [{"description": "y"}]}]}))

    code, _, err = _submit_offline(tmp_path, path)
    assert code == 2, err
    assert f"error: {path}: unknown top-level key 'group'; allowed: tasks, groups" in err, err


@pytest.mark.parametrize("limit, says", [
    (2048, "bytes encoded, over the 1,024 a message may carry: split it into several files "
           "(or raise the admin's --max-message-bytes, 2,048 now)"),
    (1024, "the admin's --max-message-bytes 1,024 leaves no room for a batch (1,024 bytes of "
           "a message go around it): raise it on the admin"),
])
def test_a_batch_over_a_small_admin_limit_is_refused_before_sending(tmp_path, limit, says):
    """The client kept its default 1 MiB against an admin that takes at most 2 KiB: the admin
    dropped the batch unread, and ceylon-submit said 'no admin answered' (exit 4)."""
    path = tmp_path / "mid.json"
    path.write_text(json.dumps([{"id": i, "description": "x" * 50, "difficulty": 1}
                                for i in range(60)]))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin("--max-message-bytes", str(limit))
            return await _submit(c, str(path), "--connect-timeout", "10")

    code, _, err = run(body())
    assert code == 2 and f"error: {path}: " in err and says in err, err


async def _waiting_submit(c, path):
    """A serving admin (no journal) with one worker, and ceylon-submit --wait of ``path``
    whose batch it has taken: (admin, submit)."""
    admin = await _serving(c, workers=(("w1", 5),), time_scale="1")
    p = await c.spawn("submit", [*cli("ceylon-submit"), str(path), "--wait", "--port",
                                 str(c.port)])
    await wait_until(lambda: "batch 1 from" in admin.stderr(), 20, "batch 1")
    # (and the client heard it was taken: killed before its answer left, the admin would
    # leave the client waiting for an answer, not for a batch)
    await wait_until(lambda: "taken: waiting for its report" in p.stderr(), 20, "the answer")
    return admin, p


@pytest.mark.timeout(60)
def test_a_batch_waited_for_is_said_lost_when_the_admin_restarts_without_a_journal(
        tmp_path, tasks_file):
    path = tasks_file([{"id": f"a{i}", "description": "a", "difficulty": 1, "duration": 5}
                       for i in range(2)])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin, p = await _waiting_submit(c, path)
            admin.signal(signal.SIGKILL)
            assert await admin.wait(10) == -signal.SIGKILL
            await c.admin(name="admin-2")
            return await p.wait(30), p.stderr()

    code, err = run(body())
    assert code == 4
    # Told so by the new admin (not left to give up after 30 s without a word), and not
    # told to follow it again: a --watch could only fail the same way (a review).
    assert "error: batch 1 at tcp://" in err and "restarted without its journal" in err, err
    assert "--watch" not in err and "may run on" not in err, err


@pytest.mark.timeout(60)
def test_an_admin_stopped_without_a_journal_ends_a_waiting_submit_at_once(tmp_path, tasks_file):
    path = tasks_file([{"id": "long", "description": "a", "difficulty": 1, "duration": 30}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin, p = await _waiting_submit(c, path)
            admin.signal(signal.SIGTERM)
            return await p.wait(20), p.stderr()

    code, err = run(body())
    assert code == 4
    # Told by the admin as it stopped, not left to give up after 30 s without a word; and
    # not told to follow the batch again (it is gone: a --watch of it could only fail).
    assert "stopped without a journal" in err and "(admin stopped)" not in err, err
    assert "--watch" not in err and "may run on" not in err, err


def test_a_later_batch_may_depend_on_an_earlier_ones_groups_and_tasks(tmp_path):
    """And what scripts read: --json without --wait is JSON too; ceylon-cancel 007 is task
    7, said once."""
    first = tmp_path / "first.json"
    first.write_text(json.dumps({
        "tasks": [{"id": 7, "description": "seven", "difficulty": 1, "duration": 0.01}],
        "groups": [{"name": "Ingest", "tasks": [{"id": "a1", "description": "a",
                                                 "duration": 0.01}]}]}))
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"groups": [{
        "name": "Process", "depends_on": ["Ingest"],
        "tasks": [{"id": "p1", "description": "p", "duration": 0.01, "depends_on": [7]}]}]}))

    big = tmp_path / "big.json"  # over what one message carries: said, not sent
    big.write_text(json.dumps([{"id": f"big-{i}", "description": "x" * 40, "difficulty": 1}
                               for i in range(20_000)]))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c)
            one = await _submit(c, str(first), "--json", label="first")
            two = await _submit(c, str(second), "--wait", "--json", label="second")
            cancel = await c.spawn("cancel", [*cli("ceylon-cancel"), "007", "--port",
                                              str(c.port)])
            return one, two, (await cancel.wait(20), cancel.stdout(), cancel.stderr()), \
                await _submit(c, str(big), label="big")

    (code1, out1, err1), (code2, out2, err2), (code3, out3, err3), (code4, _, err4) = \
        run(body())
    assert code4 == 2 and "bytes encoded, over the 1,047,552 a message may carry: split it" \
        in err4, err4
    assert code1 == 0 and json.loads(out1)["batch"] == 1 and json.loads(out1)["tasks"] == 2, err1
    assert json.loads(out1)["watch"].startswith("1@"), out1
    assert code2 == 0, err2
    assert [(t["id"], t["success"]) for t in json.loads(out2)["tasks"]] == [("p1", True)]
    assert [(g["name"], g["status"]) for g in json.loads(out2)["groups"]] == \
        [("Process", "completed")]  # (its own groups only: not the first batch's Ingest)
    assert (code3, out3.strip(), err3.strip()) == (0, "007: already finished", "")


def test_a_batch_sent_without_waiting_is_followed_later_by_the_name_it_was_given(tmp_path):
    """ceylon-submit names the batch it sent (BATCH@RUN); --watch follows it from any shell:
    its report, as --wait would have printed it. After Ctrl-C on --wait there was no way back
    to a batch's report."""
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c)
            sent = await _submit(c, SEED, label="send")
            token = re.search(r"ceylon-submit --watch (\S+)\)", sent[1]).group(1)
            followed = await _submit(c, "--watch", token, "--json", label="follow")
            run_id = token.split("@")[1]
            other = await _submit(c, "--watch", f"99@{run_id}", label="unknown")
            wrong = await _submit(c, "--watch", "three", label="wrong")
            both = await _submit(c, SEED, "--watch", token, label="both")
            huge = await _submit(c, "--watch", f"{2**64}@{run_id}", label="huge")
            elsewhere = await _submit(c, "--watch", token, "--workspace", "other",
                                      label="elsewhere")
            return sent, followed, other, wrong, both, huge, elsewhere

    sent, followed, other, wrong, both, huge, elsewhere = run(body())
    assert sent[0] == 0 and "submitted batch 1: 3 task(s) (follow it: ceylon-submit --watch 1@" \
        in sent[1], sent
    assert followed[0] == 0, followed[2]
    assert sorted(t["id"] for t in json.loads(followed[1])["tasks"]) == [1, 2, 3]
    # (named, for a script: it named the batch nowhere)
    assert list(json.loads(followed[1]))[:2] == ["batch", "watch"]
    token = re.search(r"ceylon-submit --watch (\S+)\)", sent[1]).group(1)
    assert (json.loads(followed[1])["batch"], json.loads(followed[1])["watch"]) == (1, token)
    assert all(t["success"] for t in json.loads(followed[1])["tasks"])
    assert other[0] == 4 and "the admin has no batch 99 in this run: a wrong number?" \
        in other[2], other
    assert wrong[0] == 2 and "--watch 'three': give BATCH@RUN" in wrong[2], wrong
    assert both[0] == 2 and "one of the two" in both[2], both
    assert huge[0] == 2 and "give BATCH@RUN" in huge[2] and "Traceback" not in huge[2], huge
    assert elsewhere[0] == 2 and "the admin refused: workspace 'other' != admin's 'default'" \
        in elsewhere[2] and "Traceback" not in elsewhere[2], elsewhere


def test_ceylon_cancel_takes_an_id_as_typed_first_and_never_cancels_two_tasks_for_one(
        tmp_path, tasks_file):
    path = tasks_file([{"id": 7, "description": "the number", "difficulty": 1},
                       {"id": "7", "description": "the string", "difficulty": 1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=())  # (nobody runs them: both stay queued)
            submitted = await _submit(c, str(path), label="submit")
            said = []
            for n, args in enumerate((["7"], ["007", "²"], ["7", "07"])):
                p = await c.spawn(f"cancel{n}", [*cli("ceylon-cancel"), *args, "--port",
                                                 str(c.port)])
                said.append((await p.wait(20), p.stdout().strip(), p.stderr().strip()))
            return submitted, said

    (code, _, err), said = run(body())
    assert code == 0, err
    assert said == [(0, "7: cancelled", ""),  # the task "7" (as typed), not 7 as well
                    (1, "007: cancelled", "²: unknown task"),  # no task "007": the number 7
                    (0, "7: already cancelled\n07: already cancelled", "")]  # "7", then 7


def test_ceylon_cancel_says_what_became_of_each_id_and_refuses_none_with_a_traceback(
        tmp_path, tasks_file):
    path = tasks_file([{"id": "gate", "description": "waits", "difficulty": 1},
                       {"id": 77, "description": "after", "difficulty": 1,
                        "depends_on": ["gate"]},
                       {"id": 78, "description": "after", "difficulty": 1,
                        "depends_on": ["gate"]}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=())  # (nobody runs them)
            submitted = await _submit(c, str(path), label="submit")
            p = await c.spawn("cancel", [*cli("ceylon-cancel"), "077", "78", "gate",
                                         "99999999999999999999999999", "--port", str(c.port)])
            return submitted, (await p.wait(20), p.stdout().strip(), p.stderr().strip())

    (code, _, err), said = run(body())
    assert code == 0, err
    # 77 and 78 were cancelled with the task they depend on (before: "already finished",
    # though they never ran); an id past 64 bits is no task's (before: a traceback). In the
    # order typed (it was by outcome: gate first).
    assert said == (1, "077: already cancelled\n78: already cancelled\ngate: cancelled",
                    "99999999999999999999999999: unknown task")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_or_a_stop_signal_on_submit_wait_says_the_batch_runs_on(tmp_path, tasks_file,
                                                                       sig):
    """SIGTERM and SIGHUP killed it on the spot (exit -15, -1), without the note."""
    path = tasks_file([{"id": "q", "description": "queued", "difficulty": 1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving(c, workers=())  # (nobody runs it: it stays queued)
            p = await c.spawn("submit", [*cli("ceylon-submit"), str(path), "--wait",
                                         "--port", str(c.port)])
            await wait_until(lambda: "batch 1 from" in admin.stderr(), 20, "the batch")
            await wait_until(lambda: "waiting for its report" in p.stderr(), 20, "its answer")
            p.signal(sig)
            try:
                return await p.wait(20), p.stderr()
            except TimeoutError:  # (seen twice in a fresh clone's whole suite, never alone:
                masks = [line for line in  # say what the process made of the signal)
                         Path(f"/proc/{p.process.pid}/status").read_text().splitlines()
                         if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))]
                raise AssertionError(f"ceylon-submit did not end within 20 s of SIGINT; its "
                                     f"signals: {masks}; its stderr:\n{p.stderr()}") from None

    # A suite run in the background (`bin/test &`, no job control) ignores SIGINT, and so
    # would ceylon-submit, as a program started so should: it is started as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, err = run(body())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 128 + sig, err
    taken, said = err.strip().splitlines()
    token = re.fullmatch(r"batch (1@[0-9a-f]+) \(1 task\(s\)\) taken: waiting for its report",
                         taken).group(1)
    assert said == f"error: interrupted: batch 1 runs on at the admin (follow it again: " \
                   f"ceylon-submit --watch {token}; ceylon-cancel stops its tasks)", err


@pytest.mark.timeout(60)
def test_ctrl_c_on_a_watch_says_how_to_follow_the_batch_again(tmp_path, tasks_file):
    """--wait said how to follow the batch again; --watch said only that it runs on (a
    review of the clients), though README says the last line always says how."""
    path = tasks_file([{"id": "q", "description": "queued", "difficulty": 1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=())  # (nobody runs it: it stays queued)
            sent = await c.spawn("submit", [*cli("ceylon-submit"), str(path), "--port",
                                            str(c.port)])
            assert await sent.wait(20) == 0, sent.stderr()
            token = re.search(r"--watch ([0-9]+@[0-9a-f]+)", sent.stdout()).group(1)
            p = await c.spawn("watch", [*cli("ceylon-submit"), "--watch", token, "--port",
                                        str(c.port), "--log-level", "DEBUG"])
            await wait_until(lambda: "client: connected to admin" in p.stderr(), 20,
                             "the admin's answer")
            p.signal(signal.SIGINT)
            return token, await p.wait(20), p.stderr()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see above)
    try:
        token, code, err = run(body())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (
        f"error: interrupted: batch 1 runs on at the admin (follow it again: ceylon-submit "
        f"--watch {token}; ceylon-cancel stops its tasks)"), err


@pytest.mark.parametrize(("watch", "said"), [
    (False, "error: interrupted: no admin had answered yet: nothing was sent"),
    (True, "error: interrupted: no admin had answered yet")])
def test_ctrl_c_before_any_admin_answered_says_nothing_was_sent(tmp_path, tasks_file, watch,
                                                                said):
    """Stopped while it still waited for an admin to answer, it said "the batch may have
    reached the admin (ceylon-status shows its tasks)", and --watch "batch 3 runs on at the
    admin": nothing had left. A ROUTER that takes its first request and never answers stands
    in for an admin that does not."""
    path = tasks_file([{"id": "q", "description": "queued", "difficulty": 1}])
    what = ["--watch", "3@5f0c2a9e41b7d613"] if watch else [str(path), "--wait"]

    async def body():
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        port = router.bind_to_random_port("tcp://127.0.0.1")
        try:
            async with Cluster(workdir=tmp_path) as c:
                p = await c.spawn("submit", [*cli("ceylon-submit"), *what, "--port",
                                             str(port)])
                request = await asyncio.wait_for(router.recv_multipart(), 20)
                p.signal(signal.SIGINT)
                return request, await p.wait(20), p.stderr()
        finally:
            router.close()
            ctx.term()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (see above)
    try:
        request, code, err = run(body())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert request[1] == b"STATUS", request  # (what it asks an admin first: still connecting)
    assert code == 130, err
    assert err.strip() == said, err


@pytest.mark.timeout(120)
def test_submit_wait_takes_the_report_of_a_batch_larger_than_a_message(tmp_path, tasks_file):
    """20,000 tasks: the report is over 1 MiB. The client's connection was dropped on it (and
    again on every report sent again): exit 4 'lost the admin' after 30 s, every task done."""
    path = tasks_file([{"id": i, "description": "t", "difficulty": 1, "duration": 0}
                       for i in range(20_000)])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=(("w", 5),))
            return await _submit(c, str(path), "--wait", "--json")

    code, out, err = run(body())
    assert code == 0, err
    report = json.loads(out)
    assert len(report["tasks"]) == 20_000 and report["success_rate"] == 1.0


def test_the_readme_quotes_the_lines_submit_names_a_batch_with(tmp_path, tasks_file):
    """The README quoted the line without --wait (stdout) as what --wait says on stderr."""
    later = tasks_file([{"id": "later", "description": "x", "difficulty": 1}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=(("Senior", 9),))
            return await _submit(c, SEED, label="sent"), await _submit(
                c, str(later), "--wait", "--log-level", "ERROR", label="waited")

    def as_quoted(line: str) -> str:  # (the README's batch 3 of 120 tasks, its run 5f0c...)
        line = re.sub(r"\b\d+@[0-9a-f]+", "3@5f0c2a9e41b7d613", line)
        return re.sub(r"batch \d+:", "batch 3:", re.sub(r"\d+ task\(s\)", "120 task(s)", line))

    (code, out, err), (waited_code, _, waited_err) = run(body())
    assert code == waited_code == 0, (err, waited_err)
    readme = " ".join((REPO / "README.md").read_text().split())
    for line in (out.strip(), waited_err.strip()):
        assert f"`{as_quoted(line)}`" in readme, as_quoted(line)


def test_a_batch_cancelled_for_a_failure_in_an_earlier_batch_exits_1(tmp_path):
    """A script chaining steps on exit codes: step two's tasks depend on a task of step one
    that failed; they are cancelled, none ran, and the step did not succeed (it exited 0)."""
    first = tmp_path / "first.json"
    first.write_text(json.dumps([{"id": "fetch", "description": "fetch", "difficulty": 1,
                                  "handler": "boom", "args": ["no network"]}]))
    second = tmp_path / "second.json"
    second.write_text(json.dumps([
        {"id": "parse", "description": "parse", "difficulty": 1, "depends_on": ["fetch"]},
        {"id": "index", "description": "index", "difficulty": 1, "depends_on": ["parse"]}]))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving(c, workers=())
            await c.worker("w", "--app", "demo_handlers",
                           env={"PYTHONPATH": str(REPO / "tests" / "apps")})
            one = await _submit(c, str(first), "--wait", label="first")
            two = await _submit(c, str(second), "--wait", "--json", label="second")
            return one, two

    (code1, _, err1), (code2, out2, err2) = run(body())
    assert code1 == 1, err1
    assert code2 == 1, err2
    report = json.loads(out2)
    assert report["tasks"] == [] and report["after_failure"] == ["parse", "index"]
    assert report["cancelled"] == [{"id": "parse", "reason": "dependency 'fetch' failed"},
                                   {"id": "index", "reason": "dependency 'parse' was cancelled "
                                                             "(for a failure upstream)"}]


def test_a_batch_taken_then_the_admin_lost_says_how_to_follow_it_again(tmp_path, capsys):
    """ceylon-submit --wait cut off from the admin after its batch was taken: exit 4, 'lost
    the admin', and nothing said of the batch (it ran on at the admin; with --json, stdout
    empty: nothing to give --watch), where a signal's stop says how to follow it (a review of
    network faults, the client's host cut off for 40 s)."""
    import typer

    from ceylon_net.cli import clients
    from ceylon_net.errors import AdminUnreachableError
    from ceylon_net.wire import Submitted

    class CutOff:  # (an AsyncClient whose admin took the batch, then went out of reach)
        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def submit_batch(self, doc, on_submitted, **kw):
            on_submitted(Submitted(3, 1, "0af163e5e6d37d3d"))
            raise AdminUnreachableError("lost the admin at tcp://10.66.0.1:7000: no word "
                                        "for 30 s")

    tasks = tmp_path / "t.json"
    tasks.write_text(json.dumps({"tasks": [{"id": 1, "description": "x", "difficulty": 1}]}))
    with pytest.raises(typer.Exit) as stopped:
        clients._send(CutOff(), tasks, wait=True, sequential=False, as_json=True)
    err = capsys.readouterr().err.splitlines()
    assert (stopped.value.exit_code, err[-1]) == (4, (
        "error: lost the admin at tcp://10.66.0.1:7000: no word for 30 s; batch 3 may run on "
        "at the admin (follow it again once it is back in reach: ceylon-submit --watch "
        "3@0af163e5e6d37d3d)")), err
