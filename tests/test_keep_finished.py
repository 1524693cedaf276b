"""A serving admin forgets finished client batches beyond --keep-finished, oldest first and
whole: what it keeps stays bounded, its counts go on including the forgotten, and whoever
asks for a forgotten batch or task is told so. Driven without sockets (tests/kit.py), through
a real journal across restarts, and once with the programs a user runs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import REPO, run
from kit import JSim, Sim, frames, noop, of, sends

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.snapshot import counts, metrics
from ceylon_net.core.tasks import TaskResult
from ceylon_net.dev.testing import Cluster, cli, wait_until
from ceylon_net.errors import ConfigError
from ceylon_net.settings import AdminSettings
from ceylon_net.wire import Kind

CLIENT = b"client-1"


def batch(sim: Sim, *ids: Any, depends: dict[Any, list[Any]] | None = None,
          groups: list[dict[str, Any]] | None = None, wait: bool = True,
          difficulty: int = 1) -> Any:
    """A client's batch of no-op tasks; the admin's answer to it (Submitted or Reject)."""
    doc: dict[str, Any] = {"tasks": [{"id": i, "description": "x", "difficulty": difficulty,
                                      "depends_on": (depends or {}).get(i, [])} for i in ids]}
    if groups:
        doc["groups"] = groups
    cmds = sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, wait)))
    return [*sends(cmds, Kind.SUBMIT, CLIENT), *sends(cmds, Kind.REJECT, CLIENT)][0]


def watch(sim: Sim, batch_id: int, client: bytes = b"watcher") -> wire.BatchReport:
    cmds = sim.receive(client, frames(Kind.WATCH, wire.Watch([], [], [[batch_id,
                                                                          sim.st.run]])))
    (report,) = sends(cmds, Kind.REPORT, client)
    return report


def done(w: Any, task_id: Any) -> list[Any]:
    """``w`` finishes the task, and the admin's next round (a timer's): a batch done in a
    round is forgotten at the start of the next."""
    return w.finish(task_id) + w.sim.tick()


def run_batches(sim: Sim, w: Any, n: int, first: int = 1) -> list[Any]:
    """``n`` batches of one task each, run to the end one after another; the commands of
    each task's result."""
    out = []
    for i in range(first, first + n):
        assert batch(sim, i).batch == i
        out.append(done(w, i))
    return out


def test_done_batches_beyond_the_limit_are_forgotten_oldest_first_and_still_counted():
    sim = Sim(keep_finished=2)
    w = sim.join("w")
    rounds = run_batches(sim, w, 3)
    assert of(rounds[0] + rounds[1], c.Forgot) == []  # two kept: nothing to forget yet
    (forgot,) = of(rounds[2], c.Forgot)
    assert (forgot.tasks, forgot.groups, forgot.batches, forgot.next_batch) == ([1], [], [1], 4)
    assert sorted(sim.st.board.records) == [2, 3]
    sim.st.board.validate()
    shown = counts(sim.st)
    assert (shown["total"], shown["done"], shown["succeeded"], shown["forgotten"]) == (3, 3, 3, 1)
    assert metrics(sim.st)["tasks"]["completed"] == 3
    # Its client had the report as the batch finished, before it was forgotten.
    (report,) = sends(rounds[2], Kind.REPORT, CLIENT)
    assert [t["id"] for t in report.report["tasks"]] == [3]
    assert "forgot batch 1: it had finished" in watch(sim, 1).error
    kept = watch(sim, 2)
    assert kept.error is None and kept.report["tasks"][0]["id"] == 2
    assert "no batch 9 in this run" in watch(sim, 9).error  # (never given: not forgotten)


def test_forgetting_waits_for_a_quarter_more_than_the_limit_then_goes_down_to_it():
    """One pass over what the board keeps forgets many batches, not one each."""
    sim = Sim(keep_finished=8)
    w = sim.join("w")
    rounds = run_batches(sim, w, 11)
    assert [i + 1 for i, cmds in enumerate(rounds) if of(cmds, c.Forgot)] == [11]
    assert of(rounds[10], c.Forgot)[0].batches == [1, 2, 3]
    assert len(sim.st.board.records) == 8


@pytest.mark.parametrize("restarted", [False, True], ids=["same admin", "restarted"])
def test_a_submission_sent_again_after_its_batch_ran_and_was_forgotten_does_not_run_again(
        tmp_path, restarted):
    """Its answer lost (a dropped send, a restart): the client sends it again under its
    name, by then run and forgotten (--keep-finished 0). It was taken as new, and its task,
    a payment say, ran again (a reviewer's finding; across a restart, a chaos trial's: the
    names of forgotten batches were not journaled). Answered as the batch it was, its
    tasks told of as forgotten: the futures fail saying so."""
    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w = sim.join("w")
    doc = {"tasks": [{"id": "pay", "description": "x", "difficulty": 1}]}

    def submit() -> list[Any]:
        return sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False, follow=True,
                                                                       sid=5)))

    (first,) = sends(submit(), Kind.SUBMIT, CLIENT)
    w.finish("pay")
    sim.tick()
    assert "pay" not in sim.st.board.records  # (forgotten)
    if restarted:
        sim = sim.restart()
        w = sim.join("w")
    cmds = submit()
    (again,) = sends(cmds, Kind.SUBMIT, CLIENT)
    (told,) = sends(cmds, Kind.DONE, CLIENT)
    assert again.batch == first.batch and "pay" not in sim.st.board.records
    assert (told.task_id, told.status) == ("pay", "unknown") and "forgot" in told.reason
    assert w.held == {}


def test_a_client_s_batch_restored_from_the_journal_is_kept_until_it_watches_its_tasks(tmp_path):
    """After a restart nobody watches a client's tasks (who watched is not journaled): with
    a small --keep-finished its finished batch was forgotten before the client was back, and
    its futures failed 'unknown' though their tasks had run (a chaos trial's finding). Kept
    until the client watches one of its tasks, as a batch waited for with --wait."""
    sim = JSim(tmp_path / "j.db", keep_finished=0)
    doc = {"tasks": [{"id": "a", "description": "x", "difficulty": 1}]}
    sim.receive(CLIENT, frames(Kind.SUBMIT, wire.Submission(doc, False, follow=True, sid=5)))
    sim = sim.restart()
    w = sim.join("w")
    w.finish("a")
    sim.tick(at=sim.now + 1)
    assert "a" in sim.st.board.records  # (not forgotten: its client has not been back)
    cmds = sim.receive(b"client-again", frames(Kind.WATCH, wire.Watch(["a"], [])))
    (done,) = sends(cmds, Kind.DONE, b"client-again")
    assert (done.task_id, done.status, done.sid) == ("a", "completed", 5)
    sim.tick(at=sim.now + 2)
    assert "a" not in sim.st.board.records  # (claimed: forgotten as any)


def test_with_keep_finished_0_each_batch_is_forgotten_once_its_report_is_sent():
    sim = Sim(keep_finished=0)
    w = sim.join("w")
    assert batch(sim, "a", "b").batch == 1
    done(w, "a")
    cmds = done(w, "b")
    (report,) = sends(cmds, Kind.REPORT, CLIENT)
    assert sorted(t["id"] for t in report.report["tasks"]) == ["a", "b"]
    assert of(cmds, c.Forgot)[0].tasks == ["a", "b"]
    assert sim.st.board.records == {} and sim.st.board.total == 2
    assert sim.st.idle  # (all it was given is done: a --tasks run would end)


def test_a_dependency_on_a_forgotten_task_is_refused_saying_why_and_its_id_is_free_again():
    sim = Sim(keep_finished=1)
    w = sim.join("w")
    run_batches(sim, w, 3)  # 1 is forgotten
    refused = batch(sim, "late", depends={"late": [1]})
    assert isinstance(refused, wire.Reject)
    assert refused.reason == ("task 'late' depends on unknown task 1 (or one of a finished "
                              "batch the admin forgot: --keep-finished)")
    assert batch(sim, 1).batch == 4  # (a refused batch's number goes to the next)
    assert not isinstance(batch(sim, "after-2", depends={"after-2": [3]}), wire.Reject)


def test_the_groups_of_a_forgotten_batch_are_forgotten_with_it():
    sim = Sim(keep_finished=2)
    w = sim.join("w", capacity=2)
    group = {"name": "Ingest", "tasks": [{"id": "g1", "description": "x", "difficulty": 1},
                                         {"id": "g2", "description": "x", "difficulty": 1}]}
    assert batch(sim, groups=[group]).batch == 1
    w.heartbeat()
    done(w, "g1")
    done(w, "g2")
    manager = sim.st.task_manager
    assert [g.name for g in manager.task_groups.values()] == ["Ingest"]
    (forgot,) = of([x for cmds in run_batches(sim, w, 2, first=2) for x in cmds], c.Forgot)
    assert forgot.tasks == ["g1", "g2"] and len(forgot.groups) == 1
    assert manager.task_groups == {} and manager.completed_tasks == {}
    # A group that names it is refused as one that names an unknown group.
    refused = batch(sim, groups=[{"name": "Process", "depends_on": ["Ingest"], "tasks": [
        {"id": "p1", "description": "x", "difficulty": 1}]}])
    assert "depends on unknown group 'Ingest' (or one of a finished batch the admin forgot" \
        in refused.reason


def test_a_batch_still_running_or_a_task_outside_batches_is_never_forgotten():
    sim = Sim(keep_finished=0)
    w = sim.join("w", capacity=2)
    sim.submit(noop("own"))  # (as admin.submit / --tasks: no batch)
    done(w, "own")
    assert batch(sim, "long", "short").batch == 1
    w.heartbeat()
    assert batch(sim, "next").batch == 2
    done(w, "short")
    w.heartbeat()
    cmds = done(w, "next")  # batch 2 done, batch 1 still runs: only 2 goes
    assert of(cmds, c.Forgot)[0].batches == [2]
    assert sorted(sim.st.board.records, key=str) == ["long", "own", "short"]
    done(w, "long")
    assert sorted(sim.st.board.records, key=str) == ["own"]
    sim.st.board.validate()


def test_a_task_id_given_again_starts_above_the_forgotten_one_s_attempts():
    """A worker may still hold a result of the forgotten task (its acknowledgement lost):
    sent again, it must not pass for the new task's, as results are known by id and
    attempt."""
    sim = Sim(keep_finished=0)
    w1 = sim.join("w1")
    assert batch(sim, "X").batch == 1
    old = TaskResult("X", "w1", True, 0.001, value="OLD", attempt=w1.held["X"])
    done(w1, "X")  # forgotten with its batch
    assert sim.st.board.records == {}
    w1.held.clear()
    w2 = sim.join("w2")
    assert batch(sim, "X").batch == 2
    holder = w1 if "X" in w1.held else w2
    assert holder.held == {"X": 2}  # (attempt 1 was the forgotten one's)
    cmds = w1.say(Kind.RESULT, [old])  # the old result, sent again
    assert of(cmds, c.Finished) == [] and sim.st.board.records["X"].result is None
    (ended,) = of(done(holder, "X"), c.Finished)
    assert ended.result.worker == holder.name and ended.result.value is None


def test_forgotten_batches_leave_no_gate_behind_and_their_unassigned_tasks_counted():
    sim = Sim(keep_finished=0, unassignable_timeout=1)
    w = sim.join("w", skill=3)
    for i in range(5):
        assert batch(sim, i).batch == i + 1
        done(w, i)
    assert sim.st.board._opened == set()  # (each a done batch's gate: 190 B a batch, kept)
    assert batch(sim, "hard", difficulty=8).batch == 6  # nobody can take it
    sim.tick(at=0.5)
    w.heartbeat()
    cmds = sim.tick(at=1.6) + sim.tick()  # given up: its batch is done, and forgotten
    assert of(cmds, c.Forgot)[0].tasks == ["hard"] and sim.st.unassigned == {}
    assert counts(sim.st)["unassigned"] == 1 and metrics(sim.st)["tasks"]["unassigned"] == 1


def test_watching_a_forgotten_task_or_group_says_it_may_have_been_forgotten():
    sim = Sim(keep_finished=0)
    w = sim.join("w")
    batch(sim, "a")
    done(w, "a")
    cmds = sim.receive(b"watcher", frames(Kind.WATCH, wire.Watch(["a"], ["g"])))
    (said,) = sends(cmds, Kind.DONE, b"watcher")
    assert said.status == "unknown" and said.reason.endswith(
        "or it finished in a batch the admin forgot: --keep-finished)")
    (news,) = sends(cmds, Kind.GROUP, b"watcher")
    assert news.message.endswith("or it finished in a batch the admin forgot: --keep-finished)")


def test_execute_s_tasks_are_forgotten_the_same_way_and_other_tasks_kept():
    """An admin embedded in a program that calls execute() without end stays bounded too:
    the caller has each result. Tasks given by submit() (a run's report holds them) stay."""
    sim = Sim(keep_finished=2)
    w = sim.join("w")
    sim.submit(noop("kept"))
    done(w, "kept")
    forgot = []
    for i in range(5):
        sim.submit(noop(i), forgettable=True)
        forgot += of(done(w, i), c.Forgot)
    assert [f.tasks for f in forgot] == [[0], [1], [2]]  # (one at a time past 2 + 2 // 4)
    assert sorted(sim.st.board.records, key=str) == [3, 4, "kept"]
    assert counts(sim.st)["total"] == 6 and counts(sim.st)["forgotten"] == 3
    with pytest.raises(ConfigError, match=r"depends on unknown task 0 \(or one the admin "
                                          r"forgot: it keeps the latest finished"):
        sim.submit(noop("late", depends_on=[0]))
    sim.st.board.validate()


def test_the_limit_is_checked():
    with pytest.raises(ConfigError, match="--keep-finished must be >= 0, got -1"):
        AdminSettings(keep_finished=-1)
    AdminSettings(keep_finished=None)  # (the Python API: keep every one)


# ---- through a journal


def test_a_restart_on_the_journal_keeps_them_forgotten_and_the_numbers_and_counts_going(
        tmp_path):
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w")
    run_batches(sim, w, 3)
    sim = sim.restart()
    assert sorted(sim.st.board.records) == [3]
    shown = counts(sim.st)
    assert (shown["total"], shown["done"], shown["succeeded"], shown["forgotten"]) == (3, 3, 3, 2)
    assert "forgot batch 2" in watch(sim, 2).error
    assert watch(sim, 3).report["tasks"][0]["id"] == 3
    w = sim.join("w2")
    assert batch(sim, 4).batch == 4


def test_with_every_task_forgotten_a_restart_still_numbers_on(tmp_path):
    """Else batch 1 of the same run would be another batch than the one a client follows."""
    sim = JSim(tmp_path / "j.db", keep_finished=0, expect_workers=1)
    w = sim.join("w")
    run_batches(sim, w, 2)
    run_id = sim.st.run
    sim = sim.restart()
    assert sim.st.board.records == {} and sim.st.run == run_id
    assert "forgot batch 1" in watch(sim, 1).error
    assert counts(sim.st)["total"] == 2
    # The run had started and ended: not announced again, not held for --expect-workers.
    assert sim.st.followup.run_announced and sim.st.assigning
    sim.join("w")
    assert batch(sim, "x").batch == 3


def test_a_batch_an_open_task_depends_on_is_kept_until_that_task_ends(tmp_path):
    """Forgotten while ``b`` waited to run, ``a`` could be given again, and a restart would
    have ``b`` wait on the new ``a`` (a deadlock when that one depends on ``b``). So ``a``'s
    batch stays, holding the newer ones back, until ``b`` ends; across a restart too."""
    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w = sim.join("w")
    assert batch(sim, "a", wait=False).batch == 1
    assert batch(sim, "c", "b", depends={"b": ["a"]}, wait=False).batch == 2
    done(w, "a")
    assert "a" in sim.st.board.records and w.held == {"c": 1}  # kept: b is queued behind c
    assert isinstance(batch(sim, "a"), wire.Reject)  # (its id is not free)
    sim = sim.restart()
    w = sim.worker("w", held={"c": 1})
    w.hello()
    done(w, "c")
    w.heartbeat()
    assert w.held == {"b": 1}
    (forgot,) = of(done(w, "b"), c.Forgot)
    assert forgot.batches == [1, 2] and sim.st.board.records == {}


def test_after_a_restart_a_group_after_a_forgotten_group_is_restored_and_runs(tmp_path):
    """The forgotten group's row is gone from the journal: the restart raised KeyError, on
    every start."""
    ingest = {"name": "Ingest", "tasks": [{"id": "i1", "description": "x", "difficulty": 1}]}
    process = {"name": "Process", "depends_on": ["Ingest"],
               "tasks": [{"id": "p1", "description": "x", "difficulty": 1}]}
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w")
    assert batch(sim, groups=[ingest]).batch == 1
    assert batch(sim, groups=[process]).batch == 2  # waits for Ingest
    done(w, "i1")  # batch 1 done, kept (one task)
    assert batch(sim, "z").batch == 3
    assert w.held == {"p1": 1}
    assert of(done(w, "p1"), c.Forgot)[0].batches == [1]  # Ingest forgotten; z starts
    assert w.held == {"z": 1}
    sim = sim.restart()
    assert [g.name for g in sim.st.task_manager.task_groups.values()] == ["Process"]
    w = sim.worker("w", held={"z": 1})
    w.hello()
    assert of(done(w, "z"), c.Finished)[0].status.value == "completed"
    assert sim.st.board.open == 0


def test_a_result_of_a_forgotten_task_is_not_taken_for_a_new_one_of_its_id_after_a_restart(
        tmp_path):
    """The new task, journaled as given (attempt 0), comes back above the forgotten one's
    attempts; and a worker's copy or result of the old one (its acknowledgement lost) is
    not the new one's, even as a late copy of it."""
    sim = JSim(tmp_path / "j.db", keep_finished=0)
    w1 = sim.join("w1", capacity=2)
    assert batch(sim, "busy", wait=False).batch == 1
    assert batch(sim, "X", wait=False).batch == 2
    w1.heartbeat()
    old = TaskResult("X", "w1", True, 0.001, value="OLD", attempt=w1.held["X"])
    done(w1, "X")  # batch 2 forgotten
    assert batch(sim, "busy2", wait=False).batch == 3
    w1.heartbeat()
    assert batch(sim, "X", wait=False).batch == 4  # queued: w1 is full
    sim = sim.restart()
    w2 = sim.join("w2")
    assert w2.held == {"X": 2}
    w1 = sim.worker("w1", capacity=2, held={"busy": 1, "busy2": 1})
    w1.unacked[("X", old.attempt)] = old  # (its acknowledgement was lost)
    cmds = w1.hello() + w1.heartbeat()
    assert of(cmds, c.Finished) == [] and sim.st.board.records["X"].result is None
    (ended,) = of(w2.finish("X"), c.Finished)
    assert ended.result.worker == "w2"


def test_a_worker_s_copy_of_a_forgotten_task_is_stopped_before_a_new_one_of_its_id_goes_to_it():
    """Back from a partition still running the old X, while a new X was given: its copy is
    told to stop, before the new X is sent to it (a worker's runner then runs the new one
    after the old has ended, not the old one's run for it)."""
    from kit import assigned

    sim = Sim(keep_finished=0)
    w1 = sim.join("w1")
    assert batch(sim, "X").batch == 1 and w1.held == {"X": 1}
    w1.start("X")
    w2 = sim.join("w2")
    sim.now = 2.0
    w2.heartbeat()
    assert assigned(sim.tick(at=3.5)) == {"w2": ["X"]}  # w1 silent: lost
    done(w2, "X")  # batch 1 done, and forgotten
    assert sim.st.board.records == {}
    sim.submit(noop("busy"))  # w2 is busy
    assert batch(sim, "X").batch == 2
    cmds = w1.hello()  # back, still running the old X (attempt 1)
    stop = [i for i, x in enumerate(cmds) if isinstance(x, c.Send) and x.kind == Kind.CANCEL
            and x.peer == w1.peer]
    sent = [i for i, x in enumerate(cmds) if isinstance(x, c.Assign) and x.peer == w1.peer]
    assert [cmds[i].msg.tasks for i in stop] == [[["X", 1]]]
    assert assigned(cmds) == {"w1": ["X"]} and w1.held == {"X": 3} and stop[0] < sent[0]
    cmds = w1.heartbeat()  # (still holding the old copy as it stops: told again, kept apart)
    assert sim.st.board.records["X"].worker == "w1"


def test_a_batch_restored_for_its_waiting_client_stays_until_the_client_has_it(tmp_path):
    """Done as the admin died, before its report reached the client that waited: restored,
    it waits for that client's WATCH, however old, and is forgotten only after; the newer
    ones wait with it (oldest first, always)."""
    sim = JSim(tmp_path / "j.db", keep_finished=1)
    w = sim.join("w")
    assert batch(sim, 1).batch == 1
    done(w, 1)  # (its report went out: the client may not have had it; one task is kept)
    sim = sim.restart()
    w = sim.join("w")
    assert batch(sim, 2, wait=False).batch == 2
    assert of(done(w, 2), c.Forgot) == []  # 1 is still to be claimed: 2 waits behind it
    assert watch(sim, 1, client=CLIENT).report["tasks"][0]["id"] == 1
    assert batch(sim, 3, wait=False).batch == 3
    cmds = done(w, 3)  # (held back before: tried again a heartbeat on)
    w.heartbeat()
    cmds += sim.tick(at=sim.now + 1.0)
    assert of(cmds, c.Forgot)[0].batches == [1, 2]


def test_a_journal_s_unreadable_counts_are_refused(tmp_path):
    from ceylon_net.edge.journal import Journal, JournalError

    sim = JSim(tmp_path / "j.db", keep_finished=0)
    run_batches(sim, sim.join("w"), 1)
    sim.journal.db.execute("UPDATE meta SET value='[1, \"x\"]' WHERE key='forgotten'")
    sim.journal.close()
    with pytest.raises(JournalError, match="holds counts it cannot read"):
        Journal(tmp_path / "j.db", "default").forgotten()


# ---- the programs


def test_a_serving_admin_forgets_old_batches_and_says_so_to_watch_and_status(tmp_path,
                                                                             tasks_file):
    files = [tasks_file([{"id": f"t{i}", "description": "x", "difficulty": 1}],
                        name=f"b{i}.json") for i in range(3)]
    late = tasks_file([{"id": "late", "description": "x", "difficulty": 1,
                        "depends_on": ["t0"]}], name="late.json")

    async def body():
        async with Cluster(workdir=tmp_path) as cl:
            admin = await cl.admin("--keep-finished", "1")
            await cl.worker("w", "--skill", "5")
            await wait_until(lambda: "joined from" in admin.stderr(), 20, "the worker")
            sent = []
            for i, path in enumerate(files):
                p = await cl.spawn(f"b{i}", [*cli("ceylon-submit"), str(path), "--wait",
                                             "--port", str(cl.port)])
                sent.append((await p.wait(60), p.stdout(), p.stderr()))
            token = re.search(r"batch (1@[0-9a-f]+)", sent[0][2]).group(1)
            out = []
            for label, args in (("watch", ["--watch", token]), ("late", [str(late)])):
                p = await cl.spawn(label, [*cli("ceylon-submit"), *args, "--port",
                                           str(cl.port)])
                out.append((await p.wait(60), p.stdout(), p.stderr()))
            p = await cl.spawn("cancel", [*cli("ceylon-cancel"), "t0", "--port", str(cl.port)])
            cancelled = (await p.wait(30), p.stdout(), p.stderr())
            for args in (["--json"], []):
                p = await cl.spawn("status", [*cli("ceylon-status"), *args, "--port",
                                              str(cl.port)])
                out.append((await p.wait(30), p.stdout(), p.stderr()))
            return sent, out, cancelled

    sent, ((wcode, _, werr), (lcode, _, lerr), (scode, sout, serr), (_, text, _)), \
        (ccode, _, cerr) = run(body())
    assert ccode == 1 and "t0: unknown task (or one the admin forgot with its finished batch: " \
        "--keep-finished)" in " ".join(cerr.split()), cerr
    assert [code for code, _, _ in sent] == [0, 0, 0], sent
    assert wcode == 4 and "error: batch 1 at tcp://127.0.0.1:" in werr and \
        "the admin forgot batch 1: it had finished, and the admin keeps only the latest " \
        "finished batches (--keep-finished)" in " ".join(werr.split()), werr
    assert lcode == 2 and "depends on unknown task 't0' (or one of a finished batch the " \
        "admin forgot: --keep-finished)" in lerr, lerr
    assert scode == 0, serr
    shown = json.loads(sout)["counts"]
    assert (shown["total"], shown["done"], shown["forgotten"]) == (3, 3, 2), shown
    assert "tasks: 3/3 done (3 succeeded)" in text and "(2 of the done forgotten with their " \
        "batches: --keep-finished)" in " ".join(text.split()), text
    assert "Traceback" not in werr + lerr + serr


def test_an_embedded_admin_calling_execute_keeps_only_the_latest_finished():
    """The Python API as a program uses it: an Admin and a Worker in one process, execute()
    after execute(); the results all come back, the admin keeps the latest two."""
    import asyncio

    from ceylon_net import Admin, Task, Worker
    from ceylon_net.core.tasks import TaskStatus

    async def body():
        admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0, keep_finished=2))
        runner = asyncio.create_task(admin.arun_admin(b"", [Worker("w")]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        results = [await asyncio.wait_for(admin.execute(Task(i, f"t{i}", 1, duration=0.01)), 10)
                   for i in range(6)]
        kept = sorted(admin.state.board.records)
        status = {t: admin.state.board.records[t].status for t in kept}
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return results, kept, status, admin.state.board.total

    results, kept, status, total = run(body())
    assert [r.task_id for r in results] == list(range(6)) and all(r.success for r in results)
    # (the last one's forgetting comes with the admin's next round: a timer's, within 1 s)
    assert kept in ([4, 5], [3, 4, 5]) and set(status.values()) == {TaskStatus.COMPLETED}
    assert total == 6


def test_a_negative_limit_is_refused_by_the_cli():
    import subprocess

    p = subprocess.run([*cli("ceylon-admin"), "--keep-finished", "-1", "--port", "0"],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert p.returncode == 2 and "--keep-finished must be >= 0, got -1" in p.stderr, p.stderr
