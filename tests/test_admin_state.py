"""The admin's policy, driven without sockets or sleeps: messages and clock ticks in, commands
out (h11 / dask style). Each test reads as what a worker or a user did and what the admin
decided."""

from __future__ import annotations

import math
from typing import Any

import pytest
from kit import (
    BEAT,
    EPOCH,
    Sim,
    SimWorker,
    assigned,
    frames,
    given_elsewhere,
    logs,
    noop,
    of,
    one_of_two_group,
    sends,
    taken_back,
    taken_over,
    ticked,
)

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core import membership
from ceylon_net.core.board import TaskState
from ceylon_net.core.restore import JournaledTask
from ceylon_net.core.snapshot import snapshot
from ceylon_net.core.tasks import Task, TaskResult, TaskStatus
from ceylon_net.core.workers import WorkerState
from ceylon_net.errors import ConfigError
from ceylon_net.wire import Kind

# --------------------------------------------------------------------------- registration


def test_a_worker_says_hello_is_welcomed_on_probation_and_connected_once_it_hears_pub():
    sim = Sim()
    w = sim.worker("Senior", skill=9, capacity=4)

    cmds = w.hello()

    (welcome,) = sends(cmds, Kind.WELCOME, w.peer)
    assert (welcome.agent_id, welcome.pub_port, welcome.heartbeat) == ("Senior", 8001, 1.0)
    assert sim.st.board.scheduler.workers["Senior"].state is WorkerState.PROBATION
    joined = sim.st.workers()[0].detail
    assert (joined.name, joined.skill, joined.capacity) == ("Senior", 9, 4)
    assert c.Publish(Kind.EVENT, wire.Event("worker_joined", wire.to_wire(joined))) in cmds
    # Not connected yet: it cannot hear a broadcast until its subscription works. The admin
    # heartbeats on PUB, with the broadcast count, until it says it hears them.
    assert of(cmds, c.Connected) == [] and sim.st.connected() == []
    assert c.Publish(Kind.HEARTBEAT, BEAT, seq=0) in cmds
    assert c.Timer(("sync",), 0.02) in cmds
    assert c.Publish(Kind.HEARTBEAT, BEAT, seq=0) in sim.fire("sync")
    w.heard = 0
    cmds = w.heartbeat()
    assert of(cmds, c.Connected) == [c.Connected(joined)]
    assert [r.name for r in sim.st.connected()] == ["Senior"]
    assert of(sim.fire("sync"), c.Publish) == []  # everyone hears: no more sync heartbeats


def test_registrations_that_do_not_fit_are_rejected_with_the_reason():
    sim = Sim(token="sesame-sesame")
    cases = [
        (dict(workspace="prod", token="sesame-sesame"),
         "worker 'w' rejected: workspace 'prod' != admin's 'default'"),
        (dict(token="wrong-token!"), "wrong or missing token (--token / CEYLON_TOKEN)"),
        (dict(token="sesame-sesame", version=99),
             f"protocol version 99 != admin's {wire.PROTOCOL_VERSION}"),
    ]
    for kw, reason in cases:
        w = sim.worker("w")
        assert sends(w.hello(**kw), Kind.REJECT, w.peer) == [wire.Reject(reason)]
    too_skilled = sim.worker("x", skill=11)
    (reject,) = sends(too_skilled.hello(token="sesame-sesame"), Kind.REJECT)
    assert reject.reason == "worker 'x' rejected: skill must be 0-10 and capacity 1-10000"
    assert sim.st.workers() == []


def test_a_worker_that_takes_smaller_messages_than_the_admin_sends_is_refused_saying_so():
    sim = Sim(max_message_bytes=1 << 20)
    small = sim.worker("small")
    (reject,) = sends(small.hello(limit=65536), Kind.REJECT, small.peer)
    assert reject == wire.Reject("worker 'small' takes messages of at most 65,536 bytes and "
                                 "this admin sends up to 1,048,576 (--max-message-bytes): give "
                                 "the worker at least the admin's value")
    for name, limit in (("same", 1 << 20), ("larger", 8 << 20), ("unsaid", 0)):
        w = sim.worker(name)
        assert sends(w.hello(limit=limit), Kind.WELCOME, w.peer), name
    assert sorted(r.name for r in sim.st.workers()) == ["larger", "same", "unsaid"]


def test_a_second_worker_under_a_live_name_is_refused_a_silent_one_replaced():
    sim = Sim()
    first = sim.join("Senior")
    second = sim.worker("Senior")

    (reject,) = sends(second.hello(), Kind.REJECT)
    assert reject.reason.startswith("worker name 'Senior' is already connected")

    sim.now = 1.5  # silent for a heartbeat and a half: late, perhaps, on a busy host
    assert sends(second.hello(), Kind.REJECT)
    assert [r.peer for r in sim.st.workers()] == [first.peer]
    sim.now = 2.1  # silent for more than two heartbeats: restarted, surely
    cmds = second.hello()
    assert sends(cmds, Kind.WELCOME, second.peer)
    assert "worker 'Senior' replaced by a new connection under its name; 0 task(s) back in " \
           "the queue" in logs(cmds)
    assert [r.peer for r in sim.st.workers()] == [second.peer]
    assert first.peer not in [r.peer for r in sim.st.workers()]


def test_expect_workers_holds_assignment_until_enough_have_joined():
    sim = Sim(expect_workers=2)
    sim.submit(noop(1), noop(2))
    a = sim.worker("a")
    assert assigned(a.hello()) == {}
    b = sim.worker("b")
    cmds = b.hello()
    assert "all 2 expected workers connected: starting task distribution" in logs(cmds)
    assert assigned(cmds) == {"a": [1], "b": [2]}  # one each: both on probation


def test_while_it_waits_for_expected_workers_the_admin_says_so():
    sim = Sim(expect_workers=3)
    sim.submit(noop(1))
    assert "progress: 0/1 done, 0 running, 1 queued, 0 worker(s) (assigning once 3 more " \
           "connect: --expect-workers)" in logs(sim.tick(at=1.0))
    assert "1 of 3 expected workers connected: assigning once all are (--expect-workers)" \
        in logs(sim.worker("a").hello())
    assert snapshot(sim.st)["counts"]["awaiting_workers"] == 2


def test_a_run_resumed_after_it_started_does_not_wait_for_expected_workers_again():
    """They may not all come back (a machine lost with the admin): the run goes on with
    those that do, as it would have before the restart."""
    sim = Sim(expect_workers=2)
    sim.st.resume(_journal(("done", TaskStatus.COMPLETED, 1, "a"),
                           ("next", TaskStatus.PENDING, 0, None)), [], sim.now)
    cmds = sim.tick()
    assert "resumed a run that had started: assigning as workers come, not waiting for 2 " \
           "again (--expect-workers)" in logs(cmds)
    assert assigned(sim.worker("a").hello()) == {"a": ["next"]}
    assert snapshot(sim.st)["counts"]["awaiting_workers"] == 0


def test_a_resumed_run_that_had_not_started_still_waits_for_its_expected_workers():
    sim = Sim(expect_workers=2)
    sim.st.resume(_journal(("t", TaskStatus.PENDING, 0, None),
                           ("c", TaskStatus.CANCELLED, 0, None)), [], sim.now)  # (never ran)
    assert assigned(sim.worker("a").hello()) == {}
    assert [t for ids in assigned(sim.worker("b").hello()).values() for t in ids] == ["t"]


# --------------------------------------------------------------------------- probation


def test_a_new_worker_gets_one_task_asking_to_confirm_then_its_capacity_once_it_reads():
    sim = Sim()
    sim.submit(*[noop(i) for i in range(5)])
    w = sim.worker("w", capacity=3)

    cmds = w.hello()
    (assign,) = of(cmds, c.Assign)
    assert [(a.task.id, a.confirm) for a in assign.assignments] == [(0, True)]
    # Its time to confirm runs from when the assignment has left (the edge starts the timer):
    # a heartbeat, so a link of a few hundred ms confirms in time.
    assert c.Timer(("probation", "w", ((0, 1),)), 1.0) in cmds

    cmds = w.heartbeat()  # lists task 0: it reads what it is sent
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.TRUSTED
    assert assigned(cmds) == {"w": [1, 2]}
    assert all(not a.confirm for x in of(cmds, c.Assign) for a in x.assignments)


def test_a_worker_on_probation_has_its_time_to_confirm_again_after_the_admin_was_held_up():
    """Its time to confirm ran out while the admin itself was held up (its confirmation
    unread yet): it was asked whether it got the task it had (a review). It has the time
    the admin was away once more; then it is asked as before."""
    sim = Sim()
    sim.submit(noop("t"))
    mute = sim.worker("mute")
    mute.hello()
    sim.st.held_up(0.2, 3.2)  # (before its timer: the admin stopped 3 s)
    sim.now = 3.2
    cmds = sim.fire("probation")
    assert sends(cmds, Kind.RELEASE) == [] and sends(cmds, Kind.CANCEL) == []
    assert of(cmds, c.Timer) == [c.Timer(("probation", "mute", (("t", 1),)), 3.0)]
    sim.now = 6.2
    cmds = sim.fire("probation")  # not confirmed in its own time either: taken back
    assert sends(cmds, Kind.RELEASE, mute.peer) or sends(cmds, Kind.CANCEL, mute.peer), cmds


def test_a_task_not_confirmed_in_time_is_taken_back_and_goes_to_a_trusted_worker():
    sim = Sim()
    sim.submit(noop("busy"))  # keeps the trusted worker busy
    trusted = sim.join("trusted")  # and it confirms it: trusted
    sim.fire("probation")  # its probation timer: nothing to take back
    mute = sim.worker("mute")
    mute.hello()
    cmds = sim.submit(noop("t"))
    assert assigned(cmds) == {"mute": ["t"]}

    assert sends(sim.tick(at=0.1), Kind.CANCEL) == []  # the clock alone takes nothing back
    cmds = sim.fire("probation")  # its time to confirm ran out
    assert sends(cmds, Kind.CANCEL, mute.peer) == [
        wire.Cancel([["t", 1]], "not confirmed in time; reassigned")]
    assert sim.st.board.scheduler.workers["mute"].state is WorkerState.STALLED
    assert sim.st.board.records["t"].state is TaskState.QUEUED

    cmds = trusted.finish("busy")
    assert assigned(cmds) == {"trusted": ["t"]}
    assert trusted.held == {"t": 2}


def test_a_worker_back_holding_a_task_taken_back_from_it_on_probation_has_the_loss_undone():
    """Taken back as not confirmed, then the worker found gone: the loss counts, as it may
    have crashed on it. It was paused, not dead: back still running it, the loss is undone
    and the task, given to no one since, stays with it."""
    sim = Sim(max_attempts=2)
    trusted, _ = taken_back(sim, "paused")
    for at in (1.0, 2.0, 3.0, 3.5):  # the paused one silent: lost at 3.5
        sim.now = at
        trusted.heartbeat()
        sim.tick()
    rec = sim.st.board.records["t"]
    assert (rec.state, rec.losses) == (TaskState.QUEUED, 1)
    back = sim.worker("paused", held={"t": 1})
    back.hello()
    assert (rec.state, rec.losses, rec.worker) == (TaskState.RUNNING, 0, "paused")
    back.finish("t")
    trusted.finish("busy")
    assert sim.finished()["t"].result.worker == "paused"


# --------------------------------------------------------------------------- liveness


def test_a_worker_welcomed_that_has_not_answered_yet_is_given_the_time_it_asks_again_in():
    """Back from a host cut off, a worker's WELCOME waited behind what TCP sent again, backed
    off (3-5 s after a 20 s cut): it was taken for lost again 3 s after its HELLO, and again
    after the next, its tasks requeued each time (a review across hosts). It sends its HELLO
    again at most HELLO_AGAIN_MAX apart while it has no answer: it is given that much more."""
    sim = Sim()  # heartbeat 1 s x liveness 3
    sim.submit(noop(1))
    w = sim.worker("w")
    w.hello(welcomed=False)
    assert w.held == {1: 1}
    said = ticked(sim, [], until=4.0)
    assert not said  # (silent 4 s: not lost, it may not have its WELCOME)
    sim.now = 5.0
    assert "joined" not in " ".join(logs(w.hello(welcomed=False)))  # (again: the same one)
    said = ticked(sim, [], until=7.5, step=0.5)
    assert not said and sim.st.board.records[1].worker == "w"
    w.heard = sim.st.broadcasts.seq  # (its WELCOME came: it hears the PUB, and beats)
    w.heartbeat()
    assert ticked(sim, [], until=10.5, step=3.0) == []
    said = ticked(sim, [], until=10.6, step=0.1)  # (answered: lost as any other, at 3.1 s)
    assert said == ["worker 'w' lost: silent for 3.1 s; 1 task(s) back in the queue"]
    from ceylon_net.core.pacing import HELLO_AGAIN_MAX

    assert HELLO_AGAIN_MAX == 5.0  # (the patience above: 3 s + 5 s)


def test_a_worker_that_only_says_hello_again_is_lost_8_s_after_the_first():
    """Its HELLO again every 5 s, each reaching the admin, none of its WELCOMEs reaching it:
    each HELLO made it younger, and it kept its registration and its task for as long as it
    tried (a review of the change above)."""
    sim = Sim()
    sim.submit(noop(1))
    w = sim.worker("w")
    said = []
    for at in (0.0, 5.0, 10.0):
        sim.now = at
        w.hello(welcomed=False)
        said += ticked(sim, [], until=at + 4.5, step=0.5)
    assert said == ["worker 'w' lost: silent but for its HELLO for 8.5 s; 1 task(s) back in "
                    "the queue"], said


def test_a_worker_whose_welcome_was_held_up_is_said_deaf_to_the_pub_port_only_after_it_answers():
    """It was said not to hear the PUB port (blocked?) 3 s after its HELLO, where it had not
    had its WELCOME yet, nor what the PUB sent it (a link just back: a review)."""
    sim = Sim(lost_wait=60.0)
    w = sim.worker("w")
    w.hello(welcomed=False)
    sim.now = 4.5
    w.heartbeat()  # (its WELCOME came at last; PUB not heard yet)
    assert ticked(sim, [w], until=7.0, step=0.5) == []
    said = ticked(sim, [w], until=7.5, step=0.5)
    assert said == ["worker 'w' does not hear the PUB port 8001 after 3 s (is it blocked?): it "
                    "takes tasks, but no broadcast can reach it"]


def test_a_worker_never_heard_after_its_hello_is_lost_once_it_would_have_asked_again():
    sim = Sim()
    w = sim.worker("w")
    w.hello(welcomed=False)
    assert not ticked(sim, [], until=8.0, step=0.5)
    said = ticked(sim, [], until=8.5, step=0.5)
    assert said == ["worker 'w' lost: silent but for its HELLO for 8.5 s; 0 task(s) back in "
                    "the queue"]


def test_an_admin_held_up_does_not_count_the_time_as_its_workers_silence():
    """Its process stopped 8 s (a suspended VM): its timers ran before it read what its
    workers sent meanwhile, and it called them lost, their tasks started again elsewhere (a
    review). Told it was held up, it counts their silence without that time; one silent in
    the admin's own time is lost as before."""
    sim = Sim()  # heartbeat 1 s x liveness 3
    sim.submit(noop(1), noop(2))
    quiet, busy = sim.join("quiet", capacity=1), sim.join("busy", capacity=1)
    sim.now = 1.0
    quiet.heartbeat(), busy.heartbeat()
    sim.tick(at=1.2)
    cmds = sim.st.held_up(1.2, 9.5)  # (its timers did not run from 1.2 s to 9.5 s)
    assert logs(cmds) == ["the admin was held up 8.3 s (its process stopped, or its event "
                          "loop blocked): the time is not counted against its workers (their "
                          "silence, the waits for them to come)"]
    assert lost(sim.tick(at=9.5)) == []  # (busy's heartbeats of the pause, unread yet)
    sim.now = 9.6
    busy.heartbeat()
    assert lost(sim.tick(at=12.2)) == []
    # quiet, silent 3.1 s of the admin's own time (from 1.0 s to 1.2 s, 9.5 s to 12.4 s)
    assert lost(sim.tick(at=12.4)) == [
        "worker 'quiet' lost: silent for 3.1 s; 1 task(s) back in the queue"]
    assert list(sim.st.members.registry.by_name) == ["busy"]


def test_an_admin_held_up_gives_up_on_no_task_and_forgets_no_lost_worker_meanwhile():
    """The clocks that wait for a worker to come do not count the admin's own pause either:
    it gave up on a task as the worker that could take it joined during the pause (its
    HELLO unread), and --lost-wait ran out for a lost one (a review)."""
    sim = Sim(unassignable_timeout=5, lost_wait=5)
    junior = sim.join("Junior", skill=3)
    away = sim.join("Away", skill=3)
    sim.submit(Task(3, "ML training", 8), Task(4, "sum", 1))
    junior.finish(4) if 4 in junior.held else away.finish(4)
    sim.now = 1.0
    junior.heartbeat()
    sim.tick(at=3.5)  # Away, silent since 0: lost; the wait for it begins
    assert "Away" in sim.st.members.lost
    sim.st.held_up(3.5, 13.5)  # (its timers did not run from 3.5 s to 13.5 s)
    sim.now = 13.5
    junior.heartbeat()
    cmds = sim.tick(at=13.6)
    assert 3 not in sim.finished() and "Away" in sim.st.members.lost, logs(cmds)
    senior = sim.join("Senior", skill=9)  # (its HELLO, sent in the pause, read now)
    assert senior.held == {3: 1}


def test_an_admin_busy_a_moment_excuses_it_unsaid():
    """A round longer than a heartbeat (a large submission decoded) is excused as a pause
    is, but a line each time was a line a tick under load (a review)."""
    sim = Sim()
    w = sim.join("w")
    sim.now = 1.0
    w.heartbeat()
    assert logs(sim.st.held_up(3.2, 3.9)) == []  # (0.7 s: unsaid)
    assert lost(sim.tick(at=4.5)) == []  # silent 3.5 s, 0.7 of them the admin's
    assert lost(sim.tick(at=4.8)) == ["worker 'w' lost: silent for 3.1 s; 0 task(s) back in "
                                      "the queue"]


def test_timers_that_run_late_by_a_heartbeat_find_the_admin_held_up():
    """The edge tells tick() when it meant to run it; the core judges the lateness: a
    heartbeat late or more (2 s at most), the admin was held up, and the time is excused;
    less, it is only a late tick."""
    sim = Sim()  # heartbeat 1 s x liveness 3
    w = sim.join("w")
    sim.now = 1.0
    w.heartbeat()
    assert lost(sim.st.tick(3.9, due=2.95)) == []  # 0.95 s late: not a hold, not yet lost
    assert lost(sim.st.tick(4.2, due=4.1)) == [
        "worker 'w' lost: silent for 3.2 s; 0 task(s) back in the queue"]
    sim = Sim()
    w = sim.join("w")
    sim.now = 1.0
    w.heartbeat()
    cmds = sim.st.tick(6.0, due=3.0)  # 3 s late: held up, the 3 s excused
    assert "the admin was held up 3.0 s" in " ".join(logs(cmds)) and lost(cmds) == []
    assert lost(sim.st.tick(7.2, due=7.1)) == [
        "worker 'w' lost: silent for 3.2 s; 0 task(s) back in the queue"]


def lost(cmds: list) -> list[str]:
    return [line for line in logs(cmds) if " lost: " in line]


def test_a_silent_worker_is_lost_at_3_1_s_and_its_tasks_go_to_another():
    sim = Sim()  # heartbeat 1 s x liveness 3
    sim.submit(noop(1), noop(2))
    victim = sim.join("victim", capacity=2)
    assert victim.held == {1: 1, 2: 1}
    sim.submit(noop("warm-up"))
    other = sim.join("other", capacity=2)
    other.finish("warm-up")  # it reads: trusted with its full capacity

    sim.now = 2.0
    other.heartbeat()
    assert of(sim.tick(at=3.0), c.Assign) == []  # silent for 3.0 s: not yet
    sim.now = 3.0
    other.heartbeat()

    cmds = sim.tick(at=3.1)
    assert "worker 'victim' lost: silent for 3.1 s; 2 task(s) back in the queue" in logs(cmds)
    assert assigned(cmds) == {"other": [1, 2]}
    assert [a.attempt for x in of(cmds, c.Assign) for a in x.assignments] == [2, 2]
    assert sim.st.stats.lost == 1


def test_a_task_lost_max_attempts_times_is_dead_and_finished_without_a_result():
    sim = Sim(max_attempts=2)
    sim.submit(noop("poison"))
    for i, at in enumerate((0.0, 10.0)):
        sim.now = at
        sim.join(f"w{i}")
        sim.tick(at=at + 3.5)

    finished = sim.finished()["poison"]
    assert finished.status is TaskStatus.FAILED and finished.result is None
    assert finished.reason == ("lost 2 times, last with worker 'w1' (lost: silent for 3.5 s); "
                               "giving up")
    assert sim.st.report().dead == ["poison"]


def test_a_worker_back_with_results_of_tasks_queued_again_is_said_to_bring_them_not_run_them():
    """Back from a cut, one task still running, the other ended while it was away (its
    result in the HELLO): "came back still running 2 task(s)" was said (a review of network
    faults: tasks that had ended seconds before)."""
    sim = Sim()
    sim.submit(noop("long"), noop("short"))
    w = sim.join("w", capacity=2)
    w.start("long", "short")
    w.heartbeat()
    sim.tick(at=sim.now + 3.5)  # (cut off: lost, both queued again)
    back = sim.worker("w", capacity=2, held={"long": w.held["long"]})
    back.unacked = {("short", 1): TaskResult("short", "w", True, 0.001, attempt=1)}
    assert "worker 'w' came back still running 1 task(s) and with the results of 1 task(s) " \
           "queued again while it was away; they stay with it" in logs(back.hello())
    assert sim.st.board.records["short"].status is TaskStatus.COMPLETED


def test_a_worker_back_from_a_cut_keeps_what_it_runs_if_no_one_else_took_it_meanwhile():
    """Cut off (or paused) past the liveness limit, with no other worker to take its tasks:
    back, it goes on with them, not told to stop and given them again from the start; and
    being cut off three times does not make a task dead (max_attempts 3)."""
    sim = Sim()
    sim.submit(noop("long"), noop("next"))
    w = sim.join("w", capacity=2)
    w.start("long")
    for _ in range(3):  # cut off: silent for 3.5 s each time
        sim.now += 0.5
        w.heartbeat()
        cmds = sim.tick(at=sim.now + 3.5)
        assert "worker 'w' lost: silent for 3.5 s; 2 task(s) back in the queue" in logs(cmds)
        assert sorted(sim.st.board.queued()) == ["long", "next"]  # (at the admin)
        back = sim.worker("w", capacity=2, held=dict(w.held))
        cmds = back.hello()
        assert "worker 'w' came back still running 2 task(s) queued again while it was " \
               "away; they stay with it" in logs(cmds)
        assert sends(cmds, Kind.CANCEL) == [] and assigned(cmds) == {}
        assert [(r.state, r.worker, r.losses, r.front, r.started) for r in
                map(sim.st.board.records.get, ("long", "next"))] == [
            (TaskState.RUNNING, "w", 0, False, True)] * 2  # (its queue was given back)
        w = back
    w.finish("long")
    w.finish("next")
    assert {t: f.result.success for t, f in sim.finished().items()} == {"long": True,
                                                                        "next": True}
    assert [a.attempt for x in of(sim.every, c.Assign) for a in x.assignments] == [1, 1]


def test_pauses_of_workers_whose_tasks_went_elsewhere_meanwhile_do_not_make_a_task_dead():
    """w1 paused, called lost: its task goes to w2 and runs there; w1 comes back still
    running it (told to stop: it is w2's now), its loss undone; then w2 pauses and is called
    lost too. That is one loss, not two: with max_attempts 2 the task was dead."""
    sim = Sim(max_attempts=2)
    w1, _ = taken_over(sim)
    back = sim.worker("w1", held=dict(w1.held))
    assert sends(back.hello(), Kind.CANCEL, back.peer) == [
        wire.Cancel([["t", 1]], "reassigned while away")]
    assert sim.st.board.records["t"].losses == 0
    cmds = []
    for at in (4.0, 5.0, 6.0, 7.0):  # w2 silent since 3.5: lost at 7.0
        sim.now = at
        back.heartbeat()
        cmds += sim.tick(at=at)
    assert "worker 'w2' lost: silent for 3.5 s; 1 task(s) back in the queue" in logs(cmds)
    assert "t" not in sim.finished()  # not dead: one loss
    assert sim.st.board.records["t"].losses == 1 and assigned(cmds) == {"w1": ["t"]}


def test_a_worker_back_with_the_result_of_a_task_given_to_another_meanwhile_has_it_taken():
    """w1, paused past the liveness limit, finished "t" meanwhile; "t" went to w2, which has
    not said it started it. w1's result is taken (the task ran: it is not run again) and w2
    is told to cancel its copy; w2's answer to that changes nothing."""
    sim = Sim()
    w1, w2 = given_elsewhere(sim)
    w1.finish("t")  # (unheard: w1 is not registered any more)
    cmds = w1.hello()
    assert sends(cmds, Kind.CANCEL, w2.peer) == [wire.Cancel(
        [["t", 2]], "done meanwhile by worker 'w1', back from being taken for lost")]
    assert not sends(cmds, Kind.CANCEL, w1.peer)
    done = sim.finished()["t"]
    assert (done.status, done.result.worker, done.result.attempt) == (
        TaskStatus.COMPLETED, "w1", 1)
    assert sim.st.board.records["t"].losses == 0
    w2.held.pop("t")
    w2.say(Kind.RESULT, [TaskResult("t", "w2", False, attempt=2, cancelled=True,
                                    error="cancelled")])
    w2.heartbeat()
    assert list(sim.finished()) == ["t"]  # (once: Sim checks)
    sim.st.board.validate()
    assert sim.st.idle


def test_a_worker_back_with_a_result_stops_the_copy_started_elsewhere_and_one_requeued():
    """The task has its result: a copy another worker started meanwhile is stopped there
    (not run to its end for nothing), one back in the queue is not given out again."""
    sim = Sim()
    w1, w2 = taken_over(sim)  # "t" started on w2
    w1.finish("t")
    assert sends(w1.hello(), Kind.CANCEL, w2.peer) == [wire.Cancel(
        [["t", 2]], "done meanwhile by worker 'w1', back from being taken for lost")]
    assert sim.finished()["t"].result.worker == "w1"

    sim = Sim()
    w1, w2 = taken_over(sim)
    for at in (4.0, 5.0, 6.0, 7.0):  # w2 silent since 3.5: lost at 7.0; nobody else
        sim.tick(at=at)
    assert sim.st.board.records["t"].state is TaskState.QUEUED
    w1.finish("t")
    cmds = w1.hello()
    assert sim.finished()["t"].result.worker == "w1" and not sends(cmds, Kind.CANCEL)
    sim.st.board.validate()


def test_a_copy_told_to_stop_whose_success_comes_first_is_the_task_s_result():
    """w1, paused past the liveness limit, comes back still running "t", which w2 started
    meanwhile: told to stop its copy. Its task's time was up as it resumed, so its result
    left before that CANCEL arrived (its HELLO had gone out first; the suite saw this under
    load): the task ran to its result, which is taken, as one handed over in the HELLO is,
    and w2's copy is stopped, not run to its end for nothing."""
    sim = Sim()
    w1, w2 = taken_over(sim)
    back = sim.worker("w1", held=dict(w1.held))
    assert sends(back.hello(), Kind.CANCEL, back.peer) == [
        wire.Cancel([["t", 1]], "reassigned while away")]
    cmds = back.finish("t")
    assert sends(cmds, Kind.CANCEL, w2.peer) == [wire.Cancel(
        [["t", 2]], "done meanwhile by worker 'w1', before the stop sent to it arrived")]
    assert "worker 'w1' ran 1 task(s) it was told to stop (other workers had them) to a " \
           "result before the stop arrived: taken, and the copies there cancelled" in logs(cmds)
    done = sim.finished()["t"]
    assert (done.status, done.result.worker, done.result.attempt) == (
        TaskStatus.COMPLETED, "w1", 1)
    w2.held.pop("t")  # w2's answer to the cancel changes nothing
    w2.say(Kind.RESULT, [TaskResult("t", "w2", False, attempt=2, cancelled=True,
                                    error="cancelled")])
    w2.heartbeat()
    assert list(sim.finished()) == ["warm-up", "t"]  # (once: Sim checks)
    sim.st.board.validate()
    assert sim.st.idle


def test_a_late_failure_or_cancel_answer_of_a_copy_told_to_stop_leaves_the_task_elsewhere():
    """The same, but w1's copy failed (a time limit the pause itself may have caused), or
    answers the CANCEL: nothing is taken; "t" runs on at w2, whose result is the task's."""
    for success, cancelled in ((False, False), (False, True)):
        sim = Sim()
        w1, w2 = taken_over(sim)
        back = sim.worker("w1", held=dict(w1.held))
        back.hello()
        back.held.pop("t")
        cmds = back.say(Kind.RESULT, [TaskResult("t", "w1", success, attempt=1,
                                                 cancelled=cancelled, error="x")])
        assert not sends(cmds, Kind.CANCEL) and "t" not in sim.finished()
        w2.finish("t")
        assert sim.finished()["t"].result.worker == "w2"
        sim.st.board.validate()


def test_a_copy_a_dropped_claim_stopped_whose_success_comes_first_is_the_task_s_result():
    """The same race through a claim (a reviewing helper's finding): w is back still running
    "t", asked back from "other" for it; "other" starts it first, so w is told to stop, and
    w's success left before that CANCEL arrived. Taken, whether or not w beat in between."""
    for beat in (False, True):
        sim = Sim()
        back, other, _ = _back_from_a_cut(sim)
        assert sends(other.start("t"), Kind.CANCEL, back.peer) == [
            wire.Cancel([["t", 1]], "reassigned while away")]
        if beat:
            back.heartbeat()
        cmds = back.finish("t")
        assert sends(cmds, Kind.CANCEL, other.peer) == [wire.Cancel(
            [["t", 2]], "done meanwhile by worker 'w', before the stop sent to it arrived")]
        assert sim.finished()["t"].result.worker == "w"
        sim.st.board.validate()


def test_a_late_success_of_a_copy_told_to_stop_is_taken_while_its_task_waits_in_the_queue():
    """w1 back still running "t" (told to stop: w2 runs it); w2 is then lost, and "t" waits
    in the queue (w1 is busy): w1's success, sent before the CANCEL arrived, is the task's
    result, not run a third time."""
    sim = Sim()
    w1, _ = taken_over(sim)
    back = sim.worker("w1", held=dict(w1.held))
    back.hello()
    sim.submit(noop("busy"))
    assert back.held == {"t": 1, "busy": 1}
    for at in (4.0, 5.0, 6.0, 7.0):  # w2 silent since 3.5: lost at 7.0
        sim.now = at
        back.heartbeat()
        sim.tick(at=at)
    assert sim.st.board.records["t"].state is TaskState.QUEUED
    back.finish("t")
    assert sim.finished()["t"].result.worker == "w1"
    assert sim.st.board.records["t"].attempt == 1 and not sim.st.board.queued()
    sim.st.board.validate()


def test_a_copy_stolen_on_probation_whose_success_comes_first_is_taken_and_said_as_such():
    """Not a worker back from being taken for lost: one on probation whose task was taken
    back ('not confirmed in time') and started elsewhere, its success first: taken, and said
    for what it is (a reviewing helper's finding: it was said 'came back')."""
    sim = Sim()
    trusted, mute = taken_back(sim, "mute")
    trusted.finish("busy")
    assert trusted.held == {"t": 2}
    trusted.start("t")
    mute.heartbeat()  # it holds t, attempt 1: not its own any more
    cmds = mute.finish("t")
    assert sim.finished()["t"].result.worker == "mute"
    assert sends(cmds, Kind.CANCEL, trusted.peer) == [wire.Cancel(
        [["t", 2]], "done meanwhile by worker 'mute', before the stop sent to it arrived")]
    assert not any("came back" in m for m in logs(cmds)), logs(cmds)
    sim.st.board.validate()


@pytest.mark.parametrize("elsewhere", [True, False])
def test_a_worker_back_with_its_answer_to_a_cancel_does_not_end_the_task_with_it(elsewhere):
    """Its task taken back on probation (CANCEL "not confirmed in time"), then it was found
    gone: back, it hands over the answer to that CANCEL, a cancelled result. That is no
    result of the task: it runs on where it went (or waits in the queue), not ended
    cancelled with its copy elsewhere stopped (a reviewing helper's finding)."""
    sim = Sim()
    if elsewhere:
        sim.submit(noop("warm", 1))
        w2 = sim.join("w2", skill=10)
        w2.finish("warm")
    p = sim.worker("p", skill=5)
    p.hello()
    p.heard = sim.st.broadcasts.seq
    assert assigned(sim.submit(noop("t", 5))) == {"p": ["t"]}
    sim.now = 1.0
    cmds = sim.fire(next(x for x in sim.timers if x.key[:2] == ("probation", "p")))
    if elsewhere:
        assert assigned(cmds) == {"w2": ["t"]}
        w2.start("t")
    for at in (2.0, 3.0, 4.0, 5.0):  # p silent: lost
        sim.now = at
        if elsewhere:
            w2.heartbeat()
        sim.tick()
    assert sim.st.board.records["t"].losses == 1
    p.held.pop("t")
    p.unacked[("t", 1)] = TaskResult("t", "p", False, 0.0, "cancelled: not confirmed in time; "
                                     "reassigned", 1, cancelled=True)
    cmds = p.hello()
    assert not sends(cmds, Kind.CANCEL) and "t" not in sim.finished()
    rec = sim.st.board.records["t"]  # on w2 still; or given to p again, a new attempt
    assert (rec.state, rec.worker, rec.attempt) == (TaskState.RUNNING, "w2" if elsewhere else
                                                    "p", 2)
    sim.st.board.validate()


def test_a_failed_result_handed_over_by_a_worker_back_does_not_stop_the_new_attempt():
    """A failure may come of the pause itself (a time limit): the copy started elsewhere
    runs on. A result naming another worker is no result of the sender's (the frame is
    refused): nothing is taken or stopped for it either."""
    for result in (dict(success=False, error="timed out after 1 s"),
                   dict(success=True, worker="someone-else")):
        sim = Sim()
        w1, w2 = taken_over(sim)  # "t" started on w2
        w1.held.pop("t")
        r = TaskResult("t", result.pop("worker", "w1"), attempt=1, **result)
        w1.unacked[("t", 1)] = r
        cmds = w1.hello()
        assert not sends(cmds, Kind.CANCEL, w2.peer), result
        assert "t" not in sim.finished() and sim.st.board.records["t"].worker == "w2"
        w2.finish("t")
        assert sim.finished()["t"].result.worker == "w2"


def _back_from_a_cut(sim: Sim) -> tuple[Any, Any, list[Any]]:
    """given_elsewhere, then "w" is back (a new connection) still running "t", attempt 1,
    which "other" holds, attempt 2, not started: (w back, other, the HELLO's commands)."""
    w, other = given_elsewhere(sim, "w", "other")
    back = sim.worker("w", held=dict(w.held))
    return back, other, back.hello()


def _found_lost(sim: Sim, lost: str, beating: Any) -> list[Any]:
    """After _back_from_a_cut: ``lost`` ("w" back, or "other") goes silent and is found lost
    by 8.0, while ``beating`` beats. Returns the commands of those rounds."""
    cmds = []
    for at in (4.0, 5.0, 6.0, 7.0, 8.0):
        sim.now = at
        cmds += beating.heartbeat() + sim.tick()
    assert f"worker '{lost}' lost" in " ".join(logs(cmds))
    return cmds


def test_a_worker_back_from_a_cut_keeps_a_task_given_to_another_meanwhile_not_started_there():
    """Rather than stop the copy that has been running and run the task again from the
    start, the copy given out meanwhile is asked back; given back, the task is the returning
    worker's, at its attempt, and its result is taken. Its heartbeats meanwhile do not get
    it stopped as not its own."""
    sim = Sim()
    back, other, cmds = _back_from_a_cut(sim)
    assert not sends(cmds, Kind.CANCEL)
    assert sends(cmds, Kind.RELEASE, other.peer) == [wire.Release([["t", 2]])]
    assert "worker 'w' came back still running 1 task(s) given meanwhile to other workers, " \
           "not started there: asked back, to stay with it" in logs(cmds)
    assert not sends(back.heartbeat(), Kind.CANCEL)
    cmds = other.give_back("t")
    assert not sends(cmds, Kind.CANCEL) and assigned(cmds) == {}
    rec = sim.st.board.records["t"]
    assert (rec.state, rec.worker, rec.attempt, rec.losses) == (TaskState.RUNNING, "w", 1, 0)
    sim.st.board.validate()
    back.finish("t")
    done = sim.finished()["t"]
    assert (done.status, done.result.worker, done.result.attempt) == (
        TaskStatus.COMPLETED, "w", 1)
    assert sim.st.idle


def test_a_task_asked_back_for_a_worker_back_that_starts_there_first_stops_that_worker_s_copy():
    """The RELEASE came too late: the task started where it was given. Two copies must not
    run: the returning worker's is stopped, as before there was a way to keep it."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    cmds = other.start("t")
    assert sends(cmds, Kind.CANCEL, back.peer) == [wire.Cancel([["t", 1]],
                                                               "reassigned while away")]
    back.held.pop("t")
    back.say(Kind.RESULT, [TaskResult("t", "w", False, attempt=1, cancelled=True,
                                      error="cancelled")])
    other.finish("t")
    assert sim.finished()["t"].result.worker == "other"
    sim.st.board.validate()


def test_a_worker_back_whose_kept_copy_ends_first_has_its_result_taken():
    """The returning worker's copy ends before the other answers the RELEASE: a success is
    the task's result and the copy given out meanwhile is cancelled; a failure (a pause may
    cause one) is not: the task runs where it was given."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    cmds = back.finish("t")
    assert sends(cmds, Kind.CANCEL, other.peer) == [wire.Cancel(
        [["t", 2]], "done meanwhile by worker 'w', back from being taken for lost")]
    assert "worker 'w' ran 1 task(s) it came back still running (asked back from the " \
           "workers given them meanwhile) to a result first: taken, and the copies there " \
           "cancelled" in logs(cmds)  # (said, as the other ways of taking such a result are)
    assert sim.finished()["t"].result.worker == "w"
    other.give_back("t")  # (its answer to the RELEASE, crossing the CANCEL)
    assert list(sim.finished()) == ["t"] and sim.st.idle
    sim.st.board.validate()

    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    cmds = back.finish("t", success=False, error="timed out")
    assert not sends(cmds, Kind.CANCEL) and "t" not in sim.finished()
    other.start("t")
    other.finish("t")
    assert sim.finished()["t"].result.worker == "other"
    sim.st.board.validate()


def test_a_task_asked_back_for_a_worker_back_ends_both_copies_when_cancelled_or_lost_there():
    """Cancelled by a user while asked back, the task stops at both workers. The worker it
    was given to found gone before it answered: the task runs on at the returning worker, not
    given out a third time."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    cmds = sim.cancel("t")
    assert sends(cmds, Kind.CANCEL, back.peer) == [wire.Cancel([["t", 1]],
                                                               "cancelled by request")]
    assert sends(cmds, Kind.CANCEL, other.peer) == [wire.Cancel([["t", 2]],
                                                                "cancelled by request")]

    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    cmds = _found_lost(sim, "other", back)  # (silent since 3.5)
    assert not sends(cmds, Kind.CANCEL) and assigned(cmds) == {}
    rec = sim.st.board.records["t"]
    assert (rec.state, rec.worker, rec.attempt) == (TaskState.RUNNING, "w", 1)
    back.finish("t")
    assert sim.finished()["t"].result.worker == "w"
    sim.st.board.validate()


def test_a_worker_back_running_a_task_asked_back_for_it_has_that_slot_taken():
    """Its copy takes a slot (capacity 1: a new task waits in the admin's queue, and one
    that must run alone is not placed beside it); a copy that fails frees the slot (the new
    task goes there) and leaves the task asked back for no one (an idle worker may steal it
    again). A reviewer's findings: the copy took no slot, and the ask stayed."""
    sim = Sim()
    back, _, _ = _back_from_a_cut(sim)
    back.heard = sim.st.broadcasts.seq
    back.heartbeat()
    assert sim.st.board.scheduler.workers["w"].running == 1
    assert assigned(sim.submit(noop("u"))) == {}
    sim.st.board.validate()
    cmds = back.finish("t", success=False, error="timed out")
    assert assigned(cmds) == {"w": ["u"]} and not sim.st.board._stealing
    sim.st.board.validate()


def test_a_task_is_asked_back_for_one_worker_back_only_and_not_for_a_copy_that_ended():
    """Two workers back, each still running an old copy of "t" (the state machine found the
    second claim taking the first's place, the first's slot counted taken for ever): the
    first keeps it, the second's copy is stopped. A worker back with its copy's failure
    (an unacknowledged result) does not ask the task back: it runs where it was given."""
    sim = Sim()
    sim.submit(noop("t"))
    sim.join("a")
    sim.tick(at=3.5)  # a lost
    b = sim.join("b")
    assert b.held == {"t": 2}
    for at in (4.5, 5.5, 6.5, 7.5):  # b silent: lost
        sim.tick(at=at)
    c = sim.join("c")
    assert c.held == {"t": 3}
    a_back = sim.worker("a", held={"t": 1})
    assert sends(a_back.hello(), Kind.RELEASE, c.peer) == [wire.Release([["t", 3]])]
    b_back = sim.worker("b", held={"t": 2})
    cmds = b_back.hello()
    assert sends(cmds, Kind.CANCEL, b_back.peer) == [wire.Cancel([["t", 2]],
                                                                 "reassigned while away")]
    assert not sends(cmds, Kind.RELEASE)
    sim.st.board.validate()
    c.give_back("t")
    a_back.finish("t")
    assert sim.finished()["t"].result.worker == "a"
    sim.st.board.validate()

    sim = Sim()
    w, _ = given_elsewhere(sim, "w", "other")
    w.finish("t", success=False, error="timed out")  # (unheard: w is not registered)
    cmds = sim.worker("w", unacked=dict(w.unacked)).hello()
    assert not sends(cmds, Kind.RELEASE) and not sim.st.board._claims
    assert sim.st.board.records["t"].worker == "other"


def test_a_probation_steal_of_a_task_asked_back_for_a_worker_back_cancels_the_attempt_sent():
    """The task went to a worker on probation, which did not confirm it in time: taken back
    from it, the task runs on at the worker back; the CANCEL names the attempt the worker on
    probation holds (a reviewer's finding: it named the other's, and was ignored there)."""
    sim = Sim()
    sim.submit(noop("t"))
    w = sim.join("w")
    sim.tick(at=3.5)  # w lost
    other = sim.worker("other")
    assert assigned(other.hello()) == {"other": ["t"]}  # on probation
    back = sim.worker("w", held=dict(w.held))
    assert sends(back.hello(), Kind.RELEASE, other.peer) == [wire.Release([["t", 2]])]
    sim.now += 2.0
    cmds = sim.fire(next(x for x in sim.timers if x.key[:2] == ("probation", "other")))
    assert sends(cmds, Kind.CANCEL, other.peer) == [
        wire.Cancel([["t", 2]], "not confirmed in time; reassigned")]
    rec = sim.st.board.records["t"]
    assert (rec.worker, rec.attempt) == ("w", 1)
    said = [x for x in logs(cmds, "WARNING") if "did not confirm" in x]
    assert len(said) == 1 and "0 task(s) back in the queue, 1 running on at the worker back" \
        in said[0], said
    sim.st.board.validate()


def _goal_group(sim: Sim) -> tuple[Any, Any]:
    """A group of "i0", "i1" whose goal (one done) cancels the rest; "i0" ran on w, found
    lost, and went to "other", unstarted there; w is back still running it (a claim), and
    "i1" ends at x: the goal is met. (w back, other)."""
    from ceylon_net import TaskGroupGoal, TaskManager, TaskMessage, create_goal_checker

    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"i{n}", f"i{n}", "", 0.0) for n in range(2)],
        goal=TaskGroupGoal("one", "", create_goal_checker(1), "ok", "no"),
        on_goal="cancel_rest")
    sim.carry(sim.st.submit(groups=[group], now=sim.now))
    w, x = sim.join("w"), sim.join("x")
    assert (w.held, x.held) == ({"i0": 1}, {"i1": 1})
    for at in (2.0, 3.5):  # w silent: lost at 3.5
        sim.now = at
        x.heartbeat()
        sim.tick()
    other = sim.join("other")
    assert other.held == {"i0": 2}
    back = sim.worker("w", held={"i0": 1})
    back.hello()
    x.finish("i1")  # the goal is met: "i0" is claimed by w, so not asked back to cancel
    return back, other


def test_a_goal_cancelling_the_rest_leaves_a_task_running_at_a_worker_back():
    """cancel_rest ends the group's tasks that have not started; one asked back for a worker
    back from being taken for lost has: it runs on there (not stopped as reassigned)."""
    sim = Sim()
    back, other = _goal_group(sim)
    cmds = other.give_back("i0")
    assert not sends(sim.every, Kind.CANCEL, back.peer) and "i0" not in sim.finished()
    assert sim.st.board.records["i0"].worker == "w" and assigned(cmds) == {}
    back.finish("i0")
    assert sim.finished()["i0"].result.worker == "w"
    sim.st.board.validate()


def test_a_claimant_that_leaves_leaves_no_promise_behind():
    """w back claims "t"; w says BYE before "other" answers: "t" is promised to no one
    (a second reviewer's findings, as the tests below: each failed on 75f65c8)."""
    sim = Sim()
    back, _other, _ = _back_from_a_cut(sim)
    back.say(Kind.BYE, wire.End("worker stopping"))
    assert not sim.st.board._claims
    assert "t" not in sim.st.board._stealing, sim.st.board._stealing


def test_a_second_claim_after_a_claimant_left_asks_the_task_back():
    """w back claims "t" (on other, attempt 2), then says BYE; other, which had started "t"
    (its STARTED unheard), is found lost; "t" goes to y; other comes back still running
    attempt 2: "t" is asked back from y (a RELEASE), as for any claim."""
    sim = Sim()
    back, _other, _ = _back_from_a_cut(sim)
    back.say(Kind.BYE, wire.End("worker stopping"))
    sim.tick(at=6.0)  # other silent since 2.0: lost
    assert sim.st.board.records["t"].state is TaskState.QUEUED
    y = sim.join("y")
    assert y.held == {"t": 3}
    other_back = sim.worker("other", held={"t": 2})
    cmds = other_back.hello()
    assert sim.st.board._claims == {"t": ("other", 2)}
    assert sends(cmds, Kind.RELEASE, y.peer) == [wire.Release([["t", 3]])]


def test_a_goal_met_while_claimed_cancels_the_task_when_the_claimant_leaves():
    """The goal's cancel_rest spared "i0" as running at w (claimed); w leaves before other
    answers: "i0" has started nowhere, and is to end cancelled as the goal said, not run
    again from the start."""
    sim = Sim()
    back, other = _goal_group(sim)
    back.say(Kind.BYE, wire.End("worker stopping"))
    cmds = other.give_back("i0")
    assert assigned(cmds) == {}, assigned(cmds)
    f = sim.finished().get("i0")
    assert f is not None and f.status is TaskStatus.CANCELLED, f


def test_a_goal_met_while_claimed_cancels_the_task_when_the_claimant_s_copy_fails():
    """As above, the copy at w failing instead (a failure is not the task's result)."""
    sim = Sim()
    back, other = _goal_group(sim)
    back.finish("i0", success=False, error="timed out")
    cmds = other.give_back("i0")
    assert assigned(cmds) == {}, assigned(cmds)
    f = sim.finished().get("i0")
    assert f is not None and f.status is TaskStatus.CANCELLED, f


def test_the_worker_a_claimed_task_leaves_does_not_say_it_went_back_to_the_queue():
    """other, holding "t" asked back for w, is found lost: "t" runs on at w (not queued),
    and the log line and the worker_left event say so, not "1 task(s) back in the queue"."""
    sim = Sim()
    back, _other, _ = _back_from_a_cut(sim)
    cmds = []
    for at in (4.0, 5.0, 6.0):
        sim.now = at
        cmds += back.heartbeat() + sim.tick()
    rec = sim.st.board.records["t"]
    assert (rec.state, rec.worker) == (TaskState.RUNNING, "w")
    said = [m for m in logs(cmds) if m.startswith("worker 'other' lost")]
    assert said and "1 task(s) back in the queue" not in said[0], said


def test_a_claimant_lost_again_and_back_with_its_copy_s_result_has_it_taken():
    """w back claims "t" (on other, not started); w is cut off again and found lost, its
    copy running on; back once more with that copy's success: it is the task's result, as
    hand_back takes one for an attempt lost with a worker (not thrown away, the task run
    again from the start at other)."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    _found_lost(sim, "w", other)  # (back silent since 3.5)
    back.held.pop("t")
    back.unacked[("t", 1)] = TaskResult("t", "w", True, 0.5, attempt=1)
    sim.worker("w", unacked=dict(back.unacked)).hello()
    f = sim.finished().get("t")
    assert f is not None and f.result.worker == "w", (f, sim.st.board.records["t"])


def test_a_claimant_that_said_hello_again_lost_again_and_back_with_its_result_has_it_taken():
    """A HELLO again on the same connection while the claim is pending forgot the attempt lost
    with the worker (a third reviewer's finding): lost again and back with its copy's
    success, the result was dropped and the task ran again."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    back.hello()  # again, on the same connection, still running "t"
    _found_lost(sim, "w", other)
    back.held.pop("t")
    back.unacked[("t", 1)] = TaskResult("t", "w", True, 0.5, attempt=1)
    sim.worker("w", unacked=dict(back.unacked)).hello()
    done = sim.finished().get("t")
    assert done is not None and done.result.worker == "w", sim.st.board.records["t"]


def test_a_claimant_back_with_its_result_while_the_claim_is_pending_has_it_taken_once():
    """Its HELLO again carries the copy's success: taken, the copy at the other cancelled,
    nothing of the claim left behind; the other's late give-back changes nothing."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    back.held.pop("t")
    back.unacked[("t", 1)] = TaskResult("t", "w", True, 0.5, attempt=1)
    cmds = back.hello()
    board = sim.st.board
    assert sends(cmds, Kind.CANCEL, other.peer)
    assert sim.finished()["t"].result.worker == "w"
    assert not (board._claims or board._lost_with or board._unless_started or board._stealing)
    other.give_back("t")
    assert list(sim.finished()) == ["t"]
    board.validate()


def test_a_claimant_lost_again_whose_task_went_on_elsewhere_hands_in_its_result():
    """w back claims "t", is found lost again; the other gives "t" back and it goes out a
    third time; w back once more with its copy's success: taken, the third copy cancelled,
    no loss counted, nothing left behind."""
    sim = Sim()
    back, other, _ = _back_from_a_cut(sim)
    _found_lost(sim, "w", other)
    board = sim.st.board
    assert not board._claims and board._lost_with == {"t": {1: ("w", False, False)}}
    other.give_back("t")
    y = sim.join("y")
    holder = y if "t" in y.held else other
    back.held.pop("t")
    back.unacked[("t", 1)] = TaskResult("t", "w", True, 0.5, attempt=1)
    cmds = sim.worker("w", unacked=dict(back.unacked)).hello()
    assert [c.tasks for c in sends(cmds, Kind.CANCEL, holder.peer)] == [[["t", holder.held["t"]]]]
    assert sim.finished()["t"].result.worker == "w" and board.records["t"].losses == 0
    assert not (board._lost_with or board._claims or board._unless_started)
    board.validate()


# --------------------------------------------------------------------------- drain, leave


def test_a_draining_worker_gets_nothing_new_and_its_running_task_finishes():
    sim = Sim()
    w = sim.join("w", capacity=2)
    sim.submit(noop(1))
    w.say(Kind.DRAIN, wire.End("draining"))
    cmds = sim.submit(noop(2))

    assert assigned(cmds) == {}
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.DRAINING
    w.finish(1)
    assert sim.finished()[1].result.success
    cmds = w.say(Kind.BYE, wire.End("worker stopping"))
    # Said as news, not as a warning: it left cleanly, nothing left behind.
    assert logs(cmds, "INFO") == ["worker 'w' left; 0 task(s) back in the queue"]
    assert sim.st.board.records[2].state is TaskState.QUEUED


def test_a_worker_back_under_its_name_counts_as_a_reconnect_among_the_latest_names_gone(
        monkeypatch):
    """The admin remembers the names of workers gone to count one that comes back, but only
    the latest few: workers with names of their own each time (host and pid) would grow that
    memory for ever."""
    monkeypatch.setattr(membership, "REMEMBER_LEFT", 3)
    sim = Sim()

    def come_and_go(name: str) -> None:
        sim.join(name).say(Kind.BYE, wire.End("worker stopping"))

    come_and_go("a")
    come_and_go("a")
    assert sim.st.stats.reconnects == 1
    for name in ("b", "c", "d"):
        come_and_go(name)
    come_and_go("a")  # three others left after it: forgotten, so a newcomer
    come_and_go("d")
    assert sim.st.stats.reconnects == 2
    assert len(sim.st.members._left) <= 3


# --------------------------------------------------------------------------- cancel


def test_cancel_ends_a_queued_task_at_once_and_asks_the_worker_for_a_running_one():
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop("running"), noop("queued"))
    outcome, cmds = sim.st.cancel(["running", "queued", "nope"], "changed my mind", sim.now)

    assert outcome == {"cancelled": ["queued"], "stopping": ["running"], "unknown": ["nope"],
                       "finished": [], "was_cancelled": []}
    again, _ = sim.st.cancel(["queued"], "again", sim.now)
    assert again["was_cancelled"] == ["queued"] and again["finished"] == []
    assert c.Finished("queued", TaskStatus.CANCELLED, None, "changed my mind") in cmds
    assert sends(cmds, Kind.CANCEL, w.peer) == [wire.Cancel([["running", 1]],
                                                            "changed my mind")]
    w.finish("running", success=False, cancelled=True, error="cancelled: changed my mind")
    # (the reason given, as for the queued one: it was "cancelled: changed my mind")
    assert sim.finished()["running"] == c.Finished("running", TaskStatus.CANCELLED, None,
                                                   "changed my mind")


def test_a_client_of_another_workspace_is_told_which_the_admin_serves():
    sim = Sim()
    cmds = sim.receive(b"client", frames(Kind.CANCEL, wire.Cancel([["x", 0]], "why"),
                                         workspace="other"))
    assert [r.reason for r in sends(cmds, Kind.REJECT, b"client")] == [
        "workspace 'other' != admin's 'default' (--workspace / CEYLON_WORKSPACE)"]


def test_cancelling_several_tasks_on_one_worker_asks_it_once_for_all_of_them():
    # One message: asked one by one, the worker could start a task queued on it in the slot
    # the first cancel freed before the second cancel arrived (and its handler would run).
    sim = Sim()
    w = sim.join("w", capacity=2)
    sent = sim.submit(noop("a"), noop("b"))
    sent += w.heartbeat()  # it confirms the first (on probation), and is trusted
    assert assigned(sent) == {"w": ["a", "b"]}
    outcome, cmds = sim.st.cancel(["a", "b"], "enough", sim.now)

    assert outcome["stopping"] == ["a", "b"]
    assert sends(cmds, Kind.CANCEL, w.peer) == [wire.Cancel([["a", 1], ["b", 1]], "enough")]


def test_a_worker_that_registers_again_still_running_a_cancelled_task_is_asked_again():
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop("t"), noop("u"))
    w2 = sim.join("w2")
    assert set(w.held) | set(w2.held) == {"t", "u"}
    who = w if "t" in w.held else w2
    sim.cancel("t", reason="stop it")  # the CANCEL is lost: it was registering again
    cmds = who.hello()  # it comes back saying it still runs t

    assert sends(cmds, Kind.CANCEL, who.peer) == [wire.Cancel([["t", 1]], "stop it")]
    who.finish("t", success=False, cancelled=True, error="cancelled: stop it")
    assert sim.finished()["t"].status is TaskStatus.CANCELLED
    assert not sends(who.hello(), Kind.CANCEL, who.peer)  # answered: not asked again


def test_a_running_task_being_cancelled_ends_when_its_worker_is_lost_instead_of_rerunning():
    sim = Sim()
    sim.join("w")
    sim.submit(noop("t"))
    sim.cancel("t", reason="stop it")
    sim.join("other")

    cmds = sim.tick(at=3.5)

    assert assigned(cmds) == {}
    assert sim.finished()["t"] == c.Finished("t", TaskStatus.CANCELLED, None, "stop it")


def test_cancelling_a_task_cancels_what_depends_on_it_each_finished_once():
    sim = Sim()
    sim.submit(noop("a", 9), Task("b", "after a", depends_on=["a"]),
               Task("c", "after b", depends_on=["b"]))
    sim.cancel("a")

    done = sim.finished()
    assert [(t, f.status, f.reason) for t, f in done.items()] == [
        ("a", TaskStatus.CANCELLED, "cancelled by request"),
        ("b", TaskStatus.CANCELLED, "dependency 'a' was cancelled"),
        ("c", TaskStatus.CANCELLED, "dependency 'b' was cancelled")]
    assert sim.st.idle


def test_a_goal_that_cancels_the_rest_finishes_each_remaining_task_once():
    from ceylon_net import TaskGroupGoal, TaskManager, TaskMessage, create_goal_checker

    sim = Sim()
    w = sim.join("w", capacity=1)
    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"i{n}", f"i{n}", "", 0.0) for n in range(4)],
        goal=TaskGroupGoal("one", "", create_goal_checker(1), "ok", "no"), on_goal="cancel_rest")
    sim.carry(sim.st.submit(groups=[group], now=sim.now))
    w.finish("i0")

    done = sim.finished()
    assert done["i0"].status is TaskStatus.COMPLETED
    assert {t: f.status for t, f in done.items() if t != "i0"} == dict.fromkeys(
        ("i1", "i2", "i3"), TaskStatus.CANCELLED)
    assert sim.st.task_manager.task_groups[group.id].goal.status.value == "achieved"


# --------------------------------------------------------------------------- unassignable


def test_a_task_nobody_can_take_is_said_once_then_given_up_after_the_timeout():
    sim = Sim(unassignable_timeout=5)
    w = sim.join("Junior", skill=3)
    sim.submit(Task(3, "ML training", 8))

    cmds = sim.tick(at=0.5)
    assert "task 3 'ML training' needs skill >= 8; best connected is 3" in logs(cmds, "WARNING")
    assert "only unassignable tasks remain; giving up on them in 5 s unless a capable worker " \
           "joins" in logs(cmds)
    for at in (1.0, 2.0, 3.0, 4.0, 5.0, 5.4):
        sim.now = at
        w.heartbeat()
        assert "needs skill" not in " ".join(logs(sim.tick()))  # said once
    assert 3 not in sim.finished()
    cmds = sim.tick(at=5.5)
    assert c.Finished(3, TaskStatus.CANCELLED, None, "no connected worker can take it (needs "
                      "skill >= 8; best connected is 3)") in cmds
    assert sim.st.unassigned == {3: "needs skill >= 8; best connected is 3"} and sim.st.idle
    report = sim.st.report()  # (why, in the report too: the log is not everyone's to read)
    assert (report.unassigned, report.unassigned_why) == \
        ([3], {3: "needs skill >= 8; best connected is 3"})


def test_tasks_left_with_no_worker_wait_for_one_and_the_admin_says_so_every_30_s():
    """Not given up (the next worker may well take them: it is not known what it can do),
    but the run does not go quiet either."""
    sim = Sim(unassignable_timeout=5)
    sim.submit(noop(1), noop(2))
    w = sim.join("w")
    sim.now = 2.0
    w.heartbeat()
    said = [(at, m) for at in range(3, 80) for m in logs(sim.tick(at=at), "WARNING")
            if "no worker" in m]
    assert "worker 'w' lost: silent for 4.0 s; 1 task(s) back in the queue" in logs(sim.every)
    assert said == [(16, "no worker connected for 10 s: 2 task(s) wait for one to join"),
                    (46, "no worker connected for 40 s: 2 task(s) wait for one to join"),
                    (76, "no worker connected for 70 s: 2 task(s) wait for one to join")]
    assert sim.finished() == {}
    again = sim.join("again")
    again.finish_all()
    again.finish_all()
    assert set(sim.finished()) == {1, 2}


def test_tasks_only_a_lost_worker_can_take_wait_for_it_and_the_admin_says_so_every_30_s():
    """A serving admin's only skill-9 worker crashed and was restarted 15 s later: its queued
    tasks had been given up as unassignable after 10 s (a new user's trial), though they
    waited for the worker that could take them. They wait, as tasks wait with no worker at
    all; one no worker of the run could take is still given up; a worker that left saying
    goodbye is not waited for."""
    sim = Sim(unassignable_timeout=5)
    junior = sim.join("Junior", skill=3)
    senior = sim.join("Senior", skill=9, capacity=2)
    sim.submit(Task("k0", "deep", 9), Task("k1", "deep", 9), Task("x", "deeper", 10))
    assert "k0" in senior.held
    said = []
    for at in range(1, 50):
        sim.now = float(at)
        junior.heartbeat()
        said += [(at, m) for m in logs(sim.tick(), "WARNING") if "'k0'" in m]
    assert said == [(4, "task 'k0' 'deep' (and 1 more like it) needs skill >= 9; best connected "
                        "is 3: waiting for 'Senior' (lost) to come back, or another worker "
                        "that can take them"), (34, said[1][1])]
    assert set(sim.finished()) == {"x"} and sim.st.unassigned == {
        "x": "needs skill >= 10; best connected is 3"}
    back = sim.worker("Senior", skill=9, capacity=2)
    back.hello()
    back.finish_all()  # (on probation: one task, then the other)
    back.finish_all()
    assert set(sim.finished()) == {"x", "k0", "k1"}
    # Gone saying goodbye: not waited for.
    back.say(Kind.BYE, wire.End("worker stopping"))
    sim.submit(Task("k2", "deep", 9))
    for at in (51.0, 53.0, 55.0, 56.5):
        sim.now = at
        junior.heartbeat()
        sim.tick()
    assert sim.st.unassigned["k2"] == "needs skill >= 9; best connected is 3"


def test_a_worker_lost_while_draining_is_not_waited_for():
    """It was leaving (SIGTERM), and was killed before its goodbye (the SIGKILL after a stop
    timeout): its kind of task is given up as any other no worker can take (a review's
    finding: it was waited for)."""
    sim = Sim(unassignable_timeout=5)
    junior = sim.join("Junior", skill=3)
    senior = sim.join("Senior", skill=9)
    senior.say(Kind.DRAIN, wire.End("draining"))
    sim.submit(Task("k0", "deep", 9))
    said = ticked(sim, [junior], 30.0)
    assert not any("waiting for 'Senior' (lost)" in m for m in said), said
    assert sim.st.unassigned == {"k0": "needs skill >= 9; best connected is 3"}


def test_a_poison_task_that_killed_every_worker_able_to_take_it_ends_after_the_lost_wait():
    """Two skill-9 workers crash on it (2 losses of 3) and stay down; a skill-3 worker
    remains: it waited for its victims for ever, and a --tasks run never ended (a review's
    finding). They are waited for --lost-wait (60 s), then it is given up as unassignable."""
    sim = Sim(unassignable_timeout=5, max_attempts=3)
    junior = sim.join("Junior", skill=3)
    sim.submit(Task("poison", "kills its worker", 9))
    for i in range(2):
        victim = sim.join(f"S{i}", skill=9)
        assert "poison" in victim.held
        said = ticked(sim, [junior], sim.now + 4.0)  # the victim goes silent: lost with it
        assert any(m.startswith(f"worker 'S{i}' lost") for m in said), said
    lost_at = sim.now
    said = ticked(sim, [junior], lost_at + 55.0)
    assert "poison" not in sim.finished() and any("waiting for 'S0', 'S1' (lost)" in m
                                                  for m in said), said
    ticked(sim, [junior], lost_at + 80.0)
    assert sim.st.unassigned == {"poison": "needs skill >= 9; best connected is 3"}


def test_ticks_with_nothing_changed_do_not_scan_every_lost_worker_for_every_blocked_kind(
        monkeypatch):
    """1,000 lost workers and 100 kinds of blocked task were looked at each tick (every
    0.25 s; 13 ms a tick, 130 ms with 1,000 kinds: a review's finding): only when the queue,
    what runs or the lost workers change."""
    from ceylon_net.core import unassignable

    sim = Sim(unassignable_timeout=5, hello_rate=1e9)
    for i in range(1000):
        sim.join(f"gpu{i}", skill=9, role="gpu", handlers=[f"h{i}"])
    junior = sim.join("Junior", skill=3)
    sim.now = 40.0  # (1,000 workers beat every 5 s: lost after 15 s)
    junior.heartbeat()
    sim.tick()
    assert len(sim.st.members.lost) == 1000
    sim.submit(*[Task(f"t{k}", "x", 1, required_role="gpu", handler=f"zz{k}")
                 for k in range(100)])
    sim.tick(at=40.25)  # (the first look: each kind against each lost worker, once)
    calls = []
    real = unassignable.can_do
    monkeypatch.setattr(unassignable, "can_do", lambda *a: calls.append(1) or real(*a))
    for i in range(1, 9):
        sim.tick(at=40.25 + i * 0.25)
    assert calls == []


def test_a_task_waiting_on_one_given_up_as_unassignable_says_so_not_cancelled():
    sim = Sim(unassignable_timeout=1)
    sim.join("proc", role="proc")
    sim.submit(Task(2, "etl", 1, required_role="etl"), Task(3, "after", 1, depends_on=[2]))
    sim.tick(at=0.5)
    sim.tick(at=1.6)
    report = sim.st.report()
    assert report.unassigned == [2]
    assert report.cancelled == {3: "dependency 2 was unassigned: no connected worker can take "
                                   "it (needs role 'etl'; no connected worker has it)"}


def test_a_group_whose_task_no_worker_can_take_fails_with_it_counted_unassigned():
    """Nobody cancelled it: the group did not complete because a task could not run anywhere,
    and its counts say so (they add up to its total)."""
    from ceylon_net.core.workfile import parse_work

    sim = Sim(unassignable_timeout=1)
    w = sim.join("proc", role="proc")
    _, groups = parse_work({"groups": [
        {"name": "g", "goal": {"kind": "at_least", "count": 2}, "tasks": [
            {"id": "p", "description": "x", "difficulty": 1, "required_role": "proc"},
            {"id": "e", "description": "x", "difficulty": 1, "required_role": "etl"}]},
        {"name": "plain", "tasks": [
            {"id": "e2", "description": "x", "difficulty": 1, "required_role": "etl"}]}]}, "t")
    sim.carry(sim.st.submit((), groups, sim.now))
    w.finish("p")
    sim.tick(at=0.5)
    sim.now = 1.6
    w.heartbeat()
    sim.tick()
    summaries = {g["name"]: g for g in sim.st.task_manager.summaries()}
    assert summaries["g"] | {"id": None} == {
        "id": None, "name": "g", "status": "failed", "priority": 1, "total": 2,
        "completed": 1, "failed": 0, "cancelled": 0, "unassigned": 1,
        "goal": "g: at least 2 tasks completed",
        "goal_status": "failed"}
    assert (summaries["plain"]["status"], summaries["plain"]["unassigned"]) == ("failed", 1)
    assert "Goal 'g: at least 2 tasks completed' failed: 1/2 completed, 0 failed, 0 " \
           "cancelled, 1 unassigned." in " ".join(logs(sim.every))
    assert sorted(sim.st.report().unassigned) == ["e", "e2"]


def test_a_task_needing_a_role_nobody_has_is_said_to_need_the_role_not_its_handler():
    sim = Sim()
    sim.join("proc", role="proc", handlers=["noop"])
    sim.submit(Task(1, "ghostly", 1, required_role="ghost", handler="noop"),
               Task(2, "nowhere", 1, required_role="proc", handler="other"))
    said = logs(sim.tick(at=0.5), "WARNING")
    assert "task 1 'ghostly' needs role 'ghost'; no connected worker has it" in said, said
    assert "task 2 'nowhere' needs handler 'other'; no connected worker has it" in said, said


def test_a_group_none_of_whose_tasks_went_to_a_worker_is_pending_not_running():
    """Its task only queued (no worker has its role): it was shown 'running' and its goal
    'in_progress' when the admin already had a group (its tasks' moves are followed then)."""
    from ceylon_net.core.workfile import parse_work

    sim = Sim()
    sim.join("proc", role="proc")
    for name in ("first", "second"):
        _, groups = parse_work({"groups": [{"name": name, "goal": {"kind": "all"}, "tasks": [
            {"id": name, "description": "x", "difficulty": 1, "required_role": "ghost"}]}]},
            "t")
        sim.carry(sim.st.submit((), groups, sim.now))
        sim.tick(at=sim.now + 0.5)
    summaries = {g["name"]: (g["status"], g["goal_status"])
                 for g in sim.st.task_manager.summaries()}
    assert summaries == {"first": ("pending", "not_started"),
                         "second": ("pending", "not_started")}


def test_cancel_rest_does_not_count_a_task_the_user_cancelled_as_its_own():
    """The goal met by i0's result; i1, cancelled by the user, answered in the same frame:
    the goal cancelled nothing (the event named i1)."""
    from ceylon_net import AtLeast, TaskGroupGoal, TaskManager, TaskMessage

    sim = Sim()
    w = sim.join("w", capacity=2)
    sim.submit(noop("warm"))
    w.finish("warm")  # (trusted: both go to it)
    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"i{n}", f"i{n}", "", 0.0) for n in range(2)],
        goal=TaskGroupGoal("one", "", AtLeast(1), "ok", "no"), on_goal="cancel_rest")
    sim.carry(sim.st.submit(groups=[group], now=sim.now))
    w.start("i0", "i1")
    sim.cancel("i1", reason="user says stop")
    cmds = w.say(Kind.RESULT, [
        TaskResult("i0", "w", True, 0.1, attempt=w.held.pop("i0")),
        TaskResult("i1", "w", False, 0.1, "cancelled: user says stop", w.held.pop("i1"),
                   cancelled=True)])
    assert not any("cancelled 1 task(s) not started yet" in m for m in logs(cmds)), logs(cmds)
    assert sim.finished()["i1"].reason == "user says stop"
    assert group.summary()["cancelled"] == 1 and group.status == TaskStatus.COMPLETED


def test_what_a_submitter_names_cannot_forge_lines_in_the_admins_log():
    sim = Sim()
    sim.join("Junior", skill=3)
    forged = "x\n05:00:00.000 | CRITICAL | forged\x1b[31m"
    sim.submit(Task(1, forged, 1, handler="h\nCRITICAL"))
    said = logs(sim.tick(at=0.5), "WARNING")
    assert "task 1 'x\n    05:00:00.000 | CRITICAL | forged\\x1b[31m' needs handler " \
           "'h\n    CRITICAL'; no connected worker has it" in said, said
    for message in said:  # (no line of it starts as a log line would, or colours the rest)
        assert all(line.startswith("    ") for line in message.split("\n")[1:])
        assert "\x1b" not in message


def test_a_task_nobody_can_take_that_comes_after_a_give_up_gets_the_whole_timeout_too():
    sim = Sim(unassignable_timeout=5)
    w = sim.join("Junior", skill=3)
    sim.submit(Task(1, "first", 8))
    sim.tick(at=0.5)
    sim.now = 5.6
    w.heartbeat()
    assert c.Finished(1, TaskStatus.CANCELLED, None, "no connected worker can take it (needs "
                      "skill >= 8; best connected is 3)") in sim.tick()

    sim.now = 5.7  # (a program that tries again at once, before the next tick)
    sim.submit(Task(2, "again", 8))
    cmds = sim.tick(at=5.8)
    assert 2 not in sim.finished()
    assert "task 2 'again' needs skill >= 8; best connected is 3" in logs(cmds, "WARNING")
    for at in (6.0, 8.0, 10.0, 10.7):
        sim.now = at
        w.heartbeat()
        assert 2 not in sim.finished(), at
        sim.tick()
    sim.now = 10.9
    w.heartbeat()
    assert c.Finished(2, TaskStatus.CANCELLED, None, "no connected worker can take it (needs "
                      "skill >= 8; best connected is 3)") in sim.tick()


# --------------------------------------------------------------------------- restart


def _journal(*rows):
    return [JournaledTask(Task(t, t), None, status, attempt, worker, None, None)
            for t, status, attempt, worker in rows]


def test_after_a_restart_a_worker_that_comes_back_keeps_its_task_and_hands_in_its_result():
    sim = Sim()
    sim.st.resume(_journal(("kept", TaskStatus.RUNNING, 1, "w"),
                           ("done", TaskStatus.RUNNING, 1, "w"),
                           ("lost", TaskStatus.RUNNING, 1, "w")), [], sim.now)
    w = sim.worker("w", capacity=3)
    w.held = {"kept": 1}
    w.unacked = {("done", 1): TaskResult("done", "w", True, attempt=1)}
    sim.now = 2.0  # the HELLO was written after those assignments: "lost" really is lost

    cmds = w.hello()
    assert sim.finished()["done"].result.success
    assert c.Acknowledge(w.peer, [["done", 1]]) in cmds
    assert "worker 'w' came back without 1 of its task(s); requeued" in logs(cmds)
    assert sim.st.board.records["kept"].state is TaskState.RUNNING
    # It holds what it was sent (it reads): trusted, and the lost task goes out again.
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.TRUSTED
    assert assigned(cmds) == {"w": ["lost"]} and w.held == {"kept": 1, "lost": 2}


def test_a_worker_that_holds_a_task_meanwhile_given_elsewhere_is_told_to_stop_it():
    sim = Sim()
    sim.st.resume(_journal(("t", TaskStatus.RUNNING, 2, "other")), [], sim.now)
    w = sim.worker("w")
    w.held = {"t": 1}  # an older attempt

    cmds = w.hello()

    assert sends(cmds, Kind.CANCEL, w.peer) == [wire.Cancel([["t", 1]], "reassigned while away")]


def test_a_worker_that_holds_a_task_the_admin_does_not_know_is_told_so_when_told_to_stop():
    """An admin restarted without its journal: the worker's task was cancelled as
    'reassigned while away', though nothing was reassigned (a helper trying it as a user)."""
    sim = Sim()
    w = sim.worker("w")
    w.held = {"old": 1}

    cmds = w.hello()

    assert sends(cmds, Kind.CANCEL, w.peer) == [wire.Cancel([["old", 1]], (
        "the admin has no such task (it restarted without its journal, or the task finished "
        "and was forgotten)"))]


def test_orphans_of_a_restart_wait_for_their_worker_then_go_back_to_the_queue():
    sim = Sim()
    sim.st.resume(_journal(("t", TaskStatus.RUNNING, 1, "gone")), [], sim.now)
    sim.join("here")
    assert assigned(sim.tick(at=5.0)) == {}  # grace: 2 x heartbeat x liveness = 6 s
    sim.join("here-too")
    cmds = sim.tick(at=6.0)
    assert "worker 'gone' did not come back after the admin restarted; 1 task(s) back in " \
           "the queue" in logs(cmds)
    assert [t for ids in assigned(cmds).values() for t in ids] == ["t"]


# --------------------------------------------------------------------------- the rest


def test_results_are_acknowledged_recorded_once_and_published():
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop(1))
    cmds = w.finish(1)
    assert c.Acknowledge(w.peer, [[1, 1]]) in cmds
    assert of(cmds, c.Publish)[0].kind == Kind.RESULT
    cmds = w.say(Kind.RESULT, [TaskResult(1, "w", True, attempt=1)])  # a duplicate
    assert c.Acknowledge(w.peer, [[1, 1]]) in cmds and of(cmds, c.Finished) == []
    assert sim.st.stats.results == 1


def test_a_result_naming_another_worker_is_a_bad_frame_and_changes_nothing():
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop(1))
    cmds = w.say(Kind.RESULT, [TaskResult(1, "someone-else", True)])
    assert sim.st.stats.bad_frames == 1 and of(cmds, c.Finished) == []
    assert "result names worker 'someone-else', sender is 'w'" in logs(cmds)[0]


def test_a_stranger_is_asked_to_register_and_garbage_is_counted():
    sim = Sim()
    cmds = sim.receive(b"ghost", frames(Kind.HEARTBEAT, wire.Heartbeat([])))
    assert sends(cmds, Kind.REJECT) == [wire.Reject("not registered: send HELLO first",
                                                    retry=True)]
    sim.receive(b"ghost", [b"nonsense"])
    assert sim.st.stats.bad_frames == 1


def test_a_strangers_broadcast_is_refused_naming_it_so_the_worker_can_send_it_again():
    sim = Sim()
    sent = frames(Kind.BCAST, wire.Event("hi"), sender="w")
    msg_id = wire.decode_frames(sent).header.msg_id
    cmds = sim.receive(b"w/2", sent)
    (refusal,) = [x for x in of(cmds, c.Send) if x.kind == Kind.REJECT]
    assert refusal.answers == msg_id and refusal.msg.retry


def test_what_a_busy_worker_sent_before_an_admin_restart_is_not_taken_for_garbage():
    """Its DEALER delivers what it held to the new admin ahead of its HELLO: starts and
    results of a busy worker, hundreds of them, then a BYE if it was leaving."""
    sim = Sim(bad_frame_limit=3)
    ghost = sim.worker("w")
    for i in range(10):
        cmds = ghost.say(Kind.STARTED, wire.Started([[i, 1]]))
        assert sends(cmds, Kind.REJECT) == [wire.Reject("not registered: send HELLO first",
                                                        retry=True)]
        ghost.say(Kind.RESULT, [TaskResult(i, "w", True, attempt=1)])
    assert ghost.say(Kind.DRAIN) == [] and ghost.say(Kind.BYE) == []
    assert sim.st.stats.bad_frames == 0
    ghost.hello()
    assert [r.name for r in sim.st.workers()] == ["w"]  # not banned


def test_peers_that_sent_garbage_once_are_forgotten_in_time():
    """A ROUTER gives each new connection a new identity: a hostile peer reconnecting would
    otherwise grow what the admin remembers of bad senders without end."""
    sim = Sim()
    for i in range(500):
        cmds = sim.receive(f"anon{i}".encode(), [b"garbage"])
        assert len(logs(cmds, "WARNING")) == 1  # each said once
    sim.tick(at=30.0)
    assert sim.st._warned_senders == set()
    assert sim.st.stats.bad_frames == 500


def test_a_flood_of_bad_frames_bans_the_peer_and_drops_its_worker():
    sim = Sim(bad_frame_limit=3)
    w = sim.join("w")
    for _ in range(4):
        cmds = sim.receive(w.peer, [b"RESULT", b"\xc1", b""])
    assert "worker 'w' disconnected for sending bad frames; 0 task(s) back in the queue" \
        in logs(cmds)
    assert sim.st.workers() == []
    w.hello()  # banned: unread
    assert sim.st.workers() == [] and sim.st.stats.bad_frames == 5


def test_a_broadcast_is_relayed_on_pub_and_delivered_to_the_admin_under_its_sender():
    sim = Sim()
    w = sim.join("w")
    cmds = w.say(Kind.BCAST, wire.Event("hi"), )
    (fwd,) = of(cmds, c.Forward)
    (deliver,) = of(cmds, c.Deliver)
    assert fwd.peer is None and fwd.kind == Kind.BCAST and fwd.header.sender == "w"
    # Numbered in this admin process: a restarted one numbers from 1 again.
    assert (fwd.header.seq, fwd.header.epoch) == (1, EPOCH)
    assert wire.decode_payload(deliver.header, deliver.payload) == wire.Event("hi")


def test_a_submitted_batch_is_answered_followed_and_reported_when_done():
    sim = Sim()
    w = sim.join("w")
    client = b"client-1"
    doc = {"tasks": [{"id": 1, "description": "x", "difficulty": 1}]}
    cmds = sim.receive(client, frames(Kind.SUBMIT, wire.Submission(doc, wait=True)))
    assert sends(cmds, Kind.SUBMIT, client) == [wire.Submitted(1, 1, sim.st.run)]
    assert of(cmds, c.NewWork)[0].tasks[0].id == 1
    assert sends(sim.tick(at=1.0), Kind.PROGRESS, client) == [wire.BatchProgress(1, 0, 1, 0)]
    (report,) = sends(w.finish(1), Kind.REPORT, client)
    assert report.report["success_rate"] == 1.0


def _batch_of(sim: Sim, client: bytes, *ids: Any, sequential: bool = False) -> Any:
    """A client's batch of no-op tasks, waited for; the admin's answer to it."""
    doc = {"tasks": [{"id": i, "description": "x", "difficulty": 1} for i in ids]}
    cmds = sim.receive(client, frames(Kind.SUBMIT, wire.Submission(doc, True, sequential)))
    return [*sends(cmds, Kind.SUBMIT, client), *sends(cmds, Kind.REJECT, client)][0]


def test_a_batch_refused_does_not_break_the_chain_of_sequential_batches():
    sim = Sim()
    w = sim.join("w", capacity=4)
    assert _batch_of(sim, b"c", 1, 2).batch == 1
    w.heartbeat()
    refused = _batch_of(sim, b"c", 1, sequential=True)  # task 1 again: refused
    assert isinstance(refused, wire.Reject)
    assert _batch_of(sim, b"c", 3, sequential=True).batch == 2  # (the refused one's number)
    w.heartbeat()
    assert sorted(w.held) == [1, 2]  # 3 waits for batch 1, still running
    w.finish(1)
    assert assigned(w.finish(2)) == {"w": [3]}


def test_every_client_waiting_for_a_batch_hears_its_progress_and_report():
    sim = Sim()
    w = sim.join("w", capacity=2)
    submitted = _batch_of(sim, b"submitter", 1, 2)
    w.heartbeat()
    watch = wire.Watch([], [], [[1, submitted.run]])
    assert sim.receive(b"watcher", frames(Kind.WATCH, watch)) == []
    progress = sim.tick(at=1.0)
    for client in (b"submitter", b"watcher"):
        assert sends(progress, Kind.PROGRESS, client) == [wire.BatchProgress(1, 0, 2, 0)]
    w.finish(1)
    cmds = w.finish(2)
    assert [r.batch for r in sends(cmds, Kind.REPORT, b"submitter")] == [1]
    assert [r.batch for r in sends(cmds, Kind.REPORT, b"watcher")] == [1]


def test_an_admin_stopping_without_a_journal_tells_its_waiting_clients():
    """Nothing they wait for will come; with a journal it may come back, and they wait."""
    for durable in (False, True):
        sim = Sim()
        w = sim.join("w")
        _batch_of(sim, b"waiter", 1)
        watch = wire.Watch([1], [])
        sim.receive(b"watcher", frames(Kind.WATCH, watch))
        w.heartbeat()
        cmds = sim.carry(sim.st.close("admin stopped", durable=durable))
        told = sorted(x.peer for x in of(cmds, c.Send) if x.kind == Kind.END)
        workers = [w.peer]  # workers hear it either way
        assert told == (workers if durable else sorted([w.peer, b"waiter", b"watcher"]))


def test_an_assignment_that_arrives_after_its_task_went_elsewhere_is_cancelled():
    """A heartbeat written before an assignment arrived reaches the admin late (a network
    stall): the task goes to another worker, and when the first one gets the assignment
    after all it must drop it, not run the task a second time."""
    sim = Sim()
    a = sim.join("a", skill=10)
    sim.submit(noop(1))
    assert a.held == {1: 1}
    a.held.clear()  # the ASSIGN is still on its way
    b = sim.join("b", skill=5)
    sim.now = 2.5
    a.heartbeat()  # written before it arrived: taken back, given to b
    assert b.held == {1: 2}
    a.held[1] = 1  # now it arrives
    cmds = a.heartbeat()
    assert [m.tasks for m in sends(cmds, Kind.CANCEL, a.peer)] == [[[1, 1]]]
    assert sends(cmds, Kind.ACK, a.peer) == []  # (not finished: nothing to acknowledge)
    b.finish(1)
    a.held.clear()
    a.unacked[(1, 1)] = TaskResult(1, "a", True, attempt=1)  # it ran before the CANCEL
    cmds = a.heartbeat()  # its result (ignored: not its attempt) is acknowledged again
    assert [m.results for m in sends(cmds, Kind.ACK, a.peer)] == [[[1, 1]]]


def test_a_worker_with_a_long_name_has_its_results_taken():
    """Names of up to 200 characters are allowed; they are shortened only where quoted."""
    sim = Sim()
    w = sim.join("w" * 200)
    sim.submit(noop(1))
    w.finish(1)
    assert sim.finished()[1].result.success
    cmds = sim.worker("x" * 201).hello()
    assert "is longer than 200 characters" in sends(cmds, Kind.REJECT)[0].reason


def test_a_name_that_would_forge_log_lines_is_refused():
    """The CLI refuses such names; a raw HELLO got them in, and each log line quoting them
    then held a fake line, or cleared the operator's terminal."""
    sim = Sim()
    for name, role in (("evil\n22:00:00.000 | INFO | admin stopped", "default"),
                       ("\x1b[2Jred", "default"), ("w", "role\r")):
        cmds = sim.worker(name, role=role).hello()
        (refusal,) = sends(cmds, Kind.REJECT)
        assert "must be printable characters" in refusal.reason
        assert all(line.isprintable() for line in logs(cmds))
    assert sim.st.workers() == []


def test_a_worker_restarted_under_its_name_is_asked_to_retry_then_taken():
    """A supervisor restarts a crashed worker at once: its old self still looks alive for a
    moment. The new one is refused for now (it may retry), and taken once the old one has
    been silent for two heartbeats."""
    sim = Sim()
    sim.join("w")
    sim.now = 0.5
    new = sim.worker("w")
    hello = frames(Kind.HELLO, wire.Hello("w", "default", 10, 1, [], []), sender="w")
    (refused,) = [x for x in of(sim.receive(new.peer, hello), c.Send) if x.kind == Kind.REJECT]
    assert refused.msg.retry and "already connected" in refused.msg.reason
    # It names the HELLO it answers: the worker tells a refusal of its name (worth reporting
    # if it never changes) from an answer to something it said before.
    assert refused.answers == wire.decode_header(hello[1]).msg_id
    sim.now = 2.1
    assert sends(new.hello(), Kind.WELCOME, new.peer)


def test_a_stalled_worker_whose_first_assignment_was_lost_is_tried_again():
    """On probation, its first ASSIGN is lost (a connection reset): the task is taken back
    and the worker stalled. It heartbeats on, listing nothing of it: it never got it (it did
    not ignore it), so it is on probation again and gets a task."""
    sim = Sim()
    w = sim.worker("w")
    w.hello()
    w.heard = sim.st.broadcasts.seq
    w.heartbeat()
    sim.submit(noop(1), noop(2), noop(3))
    assert w.held == {1: 1}
    w.held.clear()  # lost with the connection
    sim.now = 0.3
    sim.fire("probation")
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.STALLED
    sim.now = 1.0
    w.heartbeat()  # too soon to tell
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.STALLED and not w.held
    sim.now = 2.5
    w.heartbeat()
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.PROBATION
    assert len(w.held) == 1


def test_a_request_the_admin_has_no_memory_for_is_not_taken_for_a_bad_one(monkeypatch):
    """Out of memory as it decoded a client's batch, the admin counted it a bad frame (bad
    frames get a peer banned) and the client was told its batch was a bad request, exit 2 as
    for a bad file (a review under prlimit --as)."""
    import msgpack

    sim = Sim()
    client = b"client-9"
    doc = {"tasks": [{"id": 1, "description": "x", "difficulty": 1}]}
    msg = frames(Kind.SUBMIT, wire.Submission(doc))
    unpackb = msgpack.unpackb

    def short_of_memory(data: bytes, **kw: Any) -> Any:
        if b"tasks" in data:
            raise MemoryError
        return unpackb(data, **kw)

    monkeypatch.setattr(msgpack, "unpackb", short_of_memory)
    cmds = sim.receive(client, msg)
    (reject,) = sends(cmds, Kind.REJECT, client)
    assert reject.reason == "the admin is out of memory: not taken"
    assert logs(cmds) == [f"out of memory taking SUBMIT from {client!r}: dropped"]
    assert sim.st.stats.bad_frames == 0
    monkeypatch.setattr(msgpack, "unpackb", unpackb)
    assert sends(sim.receive(client, msg), Kind.SUBMIT, client)  # (memory again: taken)


def test_every_answer_to_a_client_names_its_request_even_a_refusal_or_a_bad_one():
    sim = Sim()
    client = b"client-7"

    def ask(kind: bytes, msg: Any = None) -> tuple[int, list[Any]]:
        msg_frames = frames(kind, msg)
        return wire.decode_header(msg_frames[1]).msg_id, sim.receive(client, msg_frames)

    def answers(cmds: list[Any]) -> list[tuple[bytes, int | None]]:
        return [(x.kind, x.answers) for x in of(cmds, c.Send) if x.peer == client]

    asked, cmds = ask(Kind.STATUS)
    assert answers(cmds) == [(Kind.STATUS, asked)]
    doc = {"tasks": [{"id": 1, "description": "x", "difficulty": 1}]}
    asked, cmds = ask(Kind.SUBMIT, wire.Submission(doc))
    assert answers(cmds) == [(Kind.SUBMIT, asked)]
    asked, cmds = ask(Kind.SUBMIT, wire.Submission(doc))  # task 1 again: refused
    assert answers(cmds) == [(Kind.REJECT, asked)]
    assert "duplicate task id 1" in sends(cmds, Kind.REJECT)[0].reason
    asked, cmds = ask(Kind.SUBMIT, wire.Event("not a submission"))  # undecodable as one
    assert answers(cmds) == [(Kind.REJECT, asked)]
    assert sends(cmds, Kind.REJECT)[0].reason.startswith("bad request: ")
    asked, cmds = ask(Kind.CANCEL, wire.Cancel([[1, 0]], "no more"))
    # The answer, then the report of the first batch, whose one task ended: it answers no
    # request (the refused second batch did not take task 1 from the first).
    assert answers(cmds) == [(Kind.STATUS, asked), (Kind.REPORT, None)]
    assert sends(cmds, Kind.REPORT)[0].batch == 1


def test_a_client_watching_groups_again_hears_of_finished_unknown_and_running_ones():
    from ceylon_net.core.workfile import parse_work

    sim = Sim()
    w = sim.join("w", capacity=4)
    _, groups = parse_work({"groups": [
        {"name": "done", "tasks": [{"id": "d1", "description": "x", "difficulty": 1}]},
        {"name": "open", "tasks": [{"id": "o1", "description": "x", "difficulty": 1},
                                   {"id": "o2", "description": "x", "difficulty": 1}]},
        {"name": "bad", "tasks": [{"id": "b1", "description": "x", "difficulty": 1}]},
        {"name": "after", "depends_on": ["bad"],
         "tasks": [{"id": "a1", "description": "x", "difficulty": 1}]}]}, "t")
    sim.carry(sim.st.submit((), groups, sim.now))
    w.heartbeat()  # (trusted: it gets as many as it has slots)
    w.finish("d1")
    w.finish("o1")
    w.finish("b1", success=False)  # "after" ends cancelled: its dependency failed
    client = b"client-8"
    cmds = sim.receive(client, frames(Kind.WATCH, wire.Watch(
        ["o2"], ["done", "open", "gone", "after"])))
    news = {n.group: n for n in sends(cmds, Kind.GROUP, client)}
    assert news.pop("open").event == "group_progress"  # still running: how far it got
    assert sorted(news) == ["after", "done", "gone"]
    assert news["done"].event == "group_finished" and news["done"].data["completed"] == 1
    assert news["after"].event == "group_finished" and \
        news["after"].data["status"] == "cancelled"
    assert news["gone"].event == "group_unknown" and "no group 'gone'" in news["gone"].message
    cmds = w.finish("o2")
    assert [n.event for n in sends(cmds, Kind.GROUP, client)][-1] == "group_finished"
    assert [d.task_id for d in sends(cmds, Kind.DONE, client)] == ["o2"]


def test_a_client_watching_a_group_again_hears_how_its_goal_went_and_how_far_it_got():
    """Who watches a group is not journaled: results that reach an admin restarted on its
    journal before the client's WATCH tell no one. The client's on_event missed the goal."""
    from ceylon_net.core.workfile import parse_work

    sim = Sim()
    w = sim.join("w", capacity=4)
    _, groups = parse_work({"groups": [
        {"name": "g", "goal": {"kind": "at_least", "count": 1, "name": "one"},
         "tasks": [{"id": f"g{i}", "description": "x", "difficulty": 1} for i in range(3)]},
        {"name": "small", "goal": {"kind": "all"},
         "tasks": [{"id": "s", "description": "x", "difficulty": 1}]}]}, "t")
    sim.carry(sim.st.submit((), groups, sim.now))
    w.heartbeat()
    w.finish("g0")
    w.finish("s")
    client = b"client-9"
    cmds = sim.receive(client, frames(Kind.WATCH, wire.Watch([], ["g", "small"])))
    said = [(n.group, n.event, n.message) for n in sends(cmds, Kind.GROUP, client)]
    assert said == [
        ("g", "group_progress", "group 'g': 1/3 done"),
        ("g", "goal_achieved", "Goal 'one' achieved (1/3 completed by now)"),
        ("small", "group_progress", "group 'small': 1/1 done"),
        ("small", "goal_achieved", "Goal 'small: every task completed' achieved (1/1 "
                                   "completed by now)"),
        ("small", "group_finished", "group 'small' completed: 1/1 completed")]
    cmds = w.finish("g1")  # and it hears "g" on, as it goes
    assert [n.event for n in sends(cmds, Kind.GROUP, client)] == ["group_progress"]


def test_a_client_hears_of_every_task_before_the_group_or_batch_they_end():
    sim = Sim()
    w = sim.join("w")
    client = b"client-9"
    doc = {"groups": [{"name": "g", "tasks": [
        {"id": i, "description": "x", "difficulty": 1} for i in ("a", "b")]}]}
    cmds = sim.receive(client, frames(Kind.SUBMIT, wire.Submission(doc, wait=True, follow=True)))
    for _ in range(4):  # the worker finishes what it holds until nothing is left
        cmds += w.finish_all()
    said = [(x.kind, getattr(x.msg, "event", None)) for x in of(cmds, c.Send) if x.peer == client]
    done = [i for i, (kind, _) in enumerate(said) if kind == Kind.DONE]
    assert len(done) == 2
    # A future on the group (or the batch) must not resolve while one of its tasks' has not.
    assert said[-2:] == [(Kind.GROUP, "group_finished"), (Kind.REPORT, None)]
    assert max(done) < said.index((Kind.GROUP, "group_finished"))


def test_what_a_client_hears_of_its_tasks_and_groups_names_the_submission_they_came_in():
    """(so that it tells them from older tasks and groups of their keys and names)"""
    sim = Sim()
    w = sim.join("w")
    doc = {"tasks": [{"id": "t", "description": "x", "difficulty": 1}],
           "groups": [{"name": "g", "tasks": [{"id": "a", "description": "x", "difficulty": 1}]}]}
    cmds = sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc, False, follow=True,
                                                                      sid=5)))
    for _ in range(4):
        cmds += w.finish_all()
    cmds += sim.receive(b"client", frames(Kind.WATCH, wire.Watch(["t"], ["g"])))
    told = [(x.msg.task_id if x.kind == Kind.DONE else x.msg.event, x.msg.sid)
            for x in of(cmds, c.Send) if x.peer == b"client" and x.kind != Kind.SUBMIT]
    # (the WATCH: 't' again, and where the group stands; 'a' only as it ended)
    assert sorted(told) == sorted([("a", 5), ("t", 5), ("t", 5),
                                   *[("group_progress", 5), ("group_finished", 5)] * 2])


def test_a_submission_of_other_tasks_under_a_name_taken_is_refused_not_answered_as_that():
    """A client whose names are not unique (a counter, or another client's): answered as the
    batch of that name, its own tasks were silently never taken (a reviewer's finding)."""
    sim = Sim()
    sim.join("w")

    def submit(peer: bytes, task: str) -> list[Any]:
        doc = {"tasks": [{"id": task, "description": "x", "difficulty": 1}]}
        return sim.receive(peer, frames(Kind.SUBMIT, wire.Submission(doc, False, follow=True,
                                                                     sid=1)))

    submit(b"client-1", "a")
    (refused,) = sends(submit(b"client-2", "b"), Kind.REJECT, b"client-2")
    assert "name (1) is batch 1's, which holds other tasks" in refused.reason
    assert "b" not in sim.st.board.records


def test_a_batch_report_has_the_batchs_groups_and_only_those():
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop("before"))
    doc = {"tasks": [{"id": "t", "description": "x", "difficulty": 1}],
           "groups": [{"name": "g", "tasks": [{"id": "a", "description": "x", "difficulty": 1}]}]}
    cmds = sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc, wait=True)))
    for _ in range(4):
        cmds += w.finish_all()
    (report,) = sends(cmds, Kind.REPORT, b"client")
    assert sorted(t["id"] for t in report.report["tasks"]) == ["a", "t"]
    assert [(g["name"], g["status"], g["completed"]) for g in report.report["groups"]] == \
        [("g", "completed", 1)]


def test_an_assignment_that_cannot_be_sent_goes_back_and_out_again_once_its_worker_is_heard():
    """Not out again every round (a warning each time) while the worker is gone or does
    not read: once it is heard from, on probation (one task until it shows it reads)."""
    sim = Sim()
    w = sim.join("w")
    cmds = sim.submit(noop(1), noop(2))
    (assign,) = of(cmds, c.Assign)
    cmds = sim.st.undelivered(w.peer, "w", assign.assignments, sim.now)
    assert of(cmds, c.Assign) == []  # not straight back to the same worker
    assert sim.st.board.records[1].state is TaskState.QUEUED
    assert assigned(sim.tick(at=0.25)) == {}  # nor at the next tick
    assert assigned(w.heartbeat()) == {"w": [1]}  # heard: one task, on probation
    assert sim.st.board.records[1].attempt == 1
    assert assigned(w.finish(1)) == {"w": [2]}  # it reads: trusted again


def test_a_round_s_second_assign_to_a_worker_its_first_could_not_reach_is_not_sent():
    """A worker's free slots' tasks and those it queues ahead go in two Assigns: the first
    could not be sent, the worker gets nothing more until heard from, the second neither
    (the edge asks undeliverable() and gives it back as undelivered: said once)."""
    sim = Sim(prefetch=100)
    sim.submit(*[noop(i) for i in range(6)])
    w = sim.worker("w", capacity=2)
    w.hello()  # (on probation: one task)
    w.heard = sim.st.broadcasts.seq
    first, second = of(w.heartbeat(), c.Assign)  # (trusted: fed up to its slots and ahead)
    assert [[a.task.id for a in x.assignments] for x in (first, second)] == [[1], [2, 3, 4, 5]]
    assert not sim.st.undeliverable("w")
    said = of(sim.st.undelivered(w.peer, "w", first.assignments, sim.now), c.Log)
    assert sim.st.undeliverable("w")
    said += of(sim.st.undelivered(w.peer, "w", second.assignments, sim.now), c.Log)
    assert [x.message for x in said if "could not deliver" in x.message] == [
        "could not deliver 1 task(s) to 'w' (gone, or not reading); requeued, and it gets "
        "no more until it is heard from"]
    assert [sim.st.board.records[i].state for i in range(1, 6)] == [TaskState.QUEUED] * 5
    w.held = {0: 1}  # (only the probation task reached it)
    assert assigned(w.heartbeat()) == {"w": [1, 2, 3, 4, 5]}  # heard, and it reads: fed again
    assert not sim.st.undeliverable("w")


def test_a_worker_that_cannot_be_sent_to_gets_nothing_more_and_an_idle_one_takes_its_tasks():
    """A worker killed and not yet found lost: the admin kept giving it the tasks that could
    not reach it, a warning each round, while a worker that had joined sat idle until the
    dead one was found lost (found by a reviewing helper: 10-12 warnings, 0.65 s idle)."""
    sim = Sim()
    dead = sim.join("dead")
    (assign,) = of(sim.submit(noop(1)), c.Assign)
    assert assign.worker == "dead"
    idle = sim.join("idle")  # (after: nothing queued for it then)
    cmds = sim.carry(sim.st.undelivered(dead.peer, "dead", assign.assignments, sim.now))
    assert assigned(cmds) == {"idle": [1]}  # at once, to the one that can take it
    (warning,) = [x.message for x in of(cmds, c.Log) if "could not deliver" in x.message]
    assert warning == "could not deliver 1 task(s) to 'dead' (gone, or not reading); " \
                      "requeued, and it gets no more until it is heard from"
    assert assigned(sim.submit(noop(2))) == {}  # (idle is full: it waits for idle)
    assert assigned(idle.finish(1)) == {"idle": [2]}
    for at in (0.25, 0.5, 0.75):
        assert "dead" not in assigned(sim.tick(at=at))
    sim.st.validate()


def test_the_admin_heartbeats_on_pub_and_over_the_router_only_to_who_does_not_hear_pub():
    sim = Sim()
    deaf = sim.worker("deaf")
    deaf.hello()
    deaf.heartbeat(pub=False)
    hearing = sim.join("hearing")
    cmds = sim.tick(at=0.0)
    assert c.Publish(Kind.HEARTBEAT, BEAT, seq=0) in cmds
    assert [x.peer for x in of(cmds, c.Send) if x.kind == Kind.HEARTBEAT] == [deaf.peer]
    assert hearing.peer not in [x.peer for x in of(cmds, c.Send)]
    # (over the ROUTER with the number of broadcasts sent: one whose PUB stalled asks for
    # what it missed; see test_broadcast_repair)
    (alone,) = [x.msg for x in of(cmds, c.Send) if x.kind == Kind.HEARTBEAT]
    assert alone.data == {**BEAT.data, "seq": 0}


def test_closing_tells_every_worker_the_run_is_over():
    sim = Sim()
    a, b = sim.join("a"), sim.join("b")
    cmds = sim.st.close("bye now")
    assert sends(cmds, Kind.END) == [wire.End("bye now"), wire.End("bye now")]
    assert {x.peer for x in of(cmds, c.Send)} == {a.peer, b.peer}
    with pytest.raises(ConfigError, match="admin 'admin' is closed: it takes no more tasks"):
        sim.submit(noop(1))  # (it was queued, and waited for ever)


def _cancel_rest_group(tasks: int) -> tuple[Sim, Any]:
    """A group of ``tasks`` whose goal (one completed) cancels the rest, submitted with
    pipelining on (tasks wait in a worker's queue behind its one slot), and its worker,
    trusted (it confirmed its first task), holding i0, i1, i2."""
    from ceylon_net import TaskGroupGoal, TaskManager, TaskMessage, create_goal_checker

    sim = Sim(prefetch=2)
    w = sim.join("w", capacity=1)
    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"i{n}", f"i{n}", "", 0.0) for n in range(tasks)],
        goal=TaskGroupGoal("one", "", create_goal_checker(1), "ok", "no"), on_goal="cancel_rest")
    sim.carry(sim.st.submit(groups=[group], now=sim.now))
    w.heartbeat()
    assert list(w.held) == ["i0", "i1", "i2"]
    return sim, w


def test_a_goal_that_cancels_the_rest_asks_back_what_waits_on_workers_unstarted():
    sim, w = _cancel_rest_group(5)
    w.start("i0", "i1")  # i1 started too (the worker's slot freed early, say)
    cmds = w.finish("i0")  # the goal is met

    # i3 and i4 never left the admin: cancelled at once. i2 waits on the worker, not
    # started: asked back. i1 started: it runs on.
    assert [m.tasks for m in sends(cmds, Kind.RELEASE, w.peer)] == [[["i2", 1]]]
    assert not sends(cmds, Kind.CANCEL, w.peer)
    assert "asked 1 more back from workers" in " ".join(logs(cmds))
    w.give_back("i2")  # it had not started: given back
    w.finish("i1")
    done = sim.finished()
    assert {t: f.status for t, f in done.items()} == {
        "i0": TaskStatus.COMPLETED, "i1": TaskStatus.COMPLETED, "i2": TaskStatus.CANCELLED,
        "i3": TaskStatus.CANCELLED, "i4": TaskStatus.CANCELLED}
    assert done["i2"].reason == "goal 'one' achieved"
    assert sim.st.idle


def test_a_goal_s_ask_back_lost_while_its_worker_registers_again_is_asked_again():
    sim, w = _cancel_rest_group(5)
    w.start("i0")
    cmds = w.finish("i0")  # the goal is met: i1, i2 (queued there, not started) asked back
    assert [m.tasks for m in sends(cmds, Kind.RELEASE, w.peer)] == [[["i1", 1], ["i2", 1]]]
    # The RELEASE is lost (it was registering again); its HELLO says it holds both.
    cmds = w.hello()
    assert [m.tasks for m in sends(cmds, Kind.RELEASE, w.peer)] == [[["i1", 1], ["i2", 1]]]
    w.give_back("i1", "i2")
    assert {t: f.status for t, f in sim.finished().items()} == {
        "i0": TaskStatus.COMPLETED, **dict.fromkeys(("i1", "i2", "i3", "i4"),
                                                    TaskStatus.CANCELLED)}


def test_a_task_asked_back_for_a_goal_that_had_started_runs_on_and_counts():
    sim, w = _cancel_rest_group(3)
    w.start("i0")
    cmds = w.finish("i0")
    assert [m.tasks for m in sends(cmds, Kind.RELEASE, w.peer)] == [[["i1", 1], ["i2", 1]]]
    w.start("i1", "i2")  # too late: both had started by then
    w.finish_all()
    done = sim.finished()
    assert {t: f.status for t, f in done.items()} == dict.fromkeys(
        ("i0", "i1", "i2"), TaskStatus.COMPLETED)


def test_a_goal_met_in_the_round_a_task_came_back_to_the_queue_cancels_it():
    sim, w = _cancel_rest_group(3)
    w.start("i0")
    # One batch from the worker, so one round: it gives back i2 (asked back by a steal,
    # say; the group still says it runs there) and i0's result meets the goal.
    i0 = TaskResult("i0", "w", True, 0.001, attempt=w.held.pop("i0"))
    back = [["i2", w.held.pop("i2")]]
    sim.carry(sim.st.receive_many([
        (w.peer, frames(Kind.STARTED, wire.Started([], back), sender="w"), "127.0.0.1"),
        (w.peer, frames(Kind.RESULT, [i0], sender="w"), "127.0.0.1")], sim.now))
    w.give_back("i1")
    done = sim.finished()
    assert {t: f.status for t, f in done.items()} == {
        "i0": TaskStatus.COMPLETED, "i1": TaskStatus.CANCELLED, "i2": TaskStatus.CANCELLED}
    assert sim.st.idle


def test_the_progress_line_counts_tasks_sent_ahead_as_queued_not_running():
    """Pipelining: a worker of 2 slots holds 2 tasks more in its queue. They wait there: the
    progress line does not call them running."""
    sim = Sim(prefetch=2)
    w = sim.join("w", capacity=2)
    sim.submit(*[noop(i) for i in range(10)])
    w.heartbeat()
    assert len(w.held) == 4

    assert [line for line in logs(sim.tick(1.0)) if line.startswith("progress")] == [
        "progress: 0/10 done, 2 running, 8 queued, 1 worker(s)"]


def test_a_submitted_group_may_depend_on_groups_and_tasks_submitted_before():
    """ceylon-submit / Client: a second batch's group names a group (and its task a task)
    that an earlier batch brought: they are on the admin, so the batch is taken."""
    sim = Sim()
    w = sim.join("w", capacity=4)
    client = b"client-1"

    def submit(doc: dict[str, Any]) -> list[Any]:
        return sim.receive(client, frames(Kind.SUBMIT, wire.Submission(doc, wait=False)))

    first = {"groups": [{"name": "Ingest", "tasks": [{"id": "a1", "description": "a"}]}]}
    assert sends(submit(first), Kind.SUBMIT, client)
    second = {"groups": [{"name": "Process", "depends_on": ["Ingest"],
                          "tasks": [{"id": "p1", "description": "p", "depends_on": ["a1"]}]}]}
    cmds = submit(second)
    assert sends(cmds, Kind.REJECT, client) == []
    assert sends(cmds, Kind.SUBMIT, client)[0].tasks == 1
    assert sim.st.board.records["p1"].state is TaskState.WAITING
    w.finish_all()  # a1: Ingest completes, and p1 goes out
    w.finish_all()
    assert sim.finished()["p1"].status == TaskStatus.COMPLETED
    # A group that names none on the admin is still refused, saying which.
    cmds = submit({"groups": [{"name": "X", "depends_on": ["nope"],
                               "tasks": [{"id": "x1", "description": "x"}]}]})
    assert sends(cmds, Kind.REJECT, client)[0].reason == \
        "group 'X' depends on unknown group 'nope'"


def test_metrics_count_tasks_sent_ahead_as_queued_on_workers_not_running():
    from ceylon_net.core.snapshot import metrics

    sim = Sim(prefetch=2)
    w = sim.join("w", capacity=2)
    sim.submit(*[noop(i) for i in range(10)])
    w.heartbeat()
    tasks = metrics(sim.st)["tasks"]
    assert (tasks["running"], tasks["queued_on_workers"]) == (2, 2)


def test_the_dashboards_failed_count_survives_a_restart_on_the_journal(tmp_path):
    from kit import JSim

    from ceylon_net.core.snapshot import dashboard

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.submit(noop(1), noop(2))
    w.finish(1, success=False)
    w.finish(2)
    before = dashboard(sim.st, sim.now)
    after = dashboard(sim.restart().st, sim.now)
    assert before["totals"]["failed"] == after["totals"]["failed"] == 1
    assert after["counts"]["done"] == 2 and after["counts"]["succeeded"] == 1


def test_each_missing_handler_is_said_not_only_the_first():
    sim = Sim()
    sim.join("w")
    sim.submit(noop("h1", handler="foo"), noop("h2", handler="bar"))
    said = [line for line in logs(sim.tick(at=1.0)) if "needs handler" in line]
    assert said == ["task 'h1' 'task h1' needs handler 'foo'; no connected worker has it",
                    "task 'h2' 'task h2' needs handler 'bar'; no connected worker has it"]


def test_refused_tokens_are_said_once_a_minute_per_sender_and_a_flood_is_cut_off():
    """20 clients sending STATUS with a wrong token were a log line each, per request, for
    ever (107,447 lines in 10 s), and never counted as bad frames."""
    sim = Sim(token="t" * 20)
    said = []
    for _ in range(120):  # one sender, 120 in a second
        said += logs(sim.receive(b"hostile/1", frames(Kind.STATUS, token="wrong")))
        sim.now += 0.01
    for i in range(30):  # 30 senders
        said += logs(sim.receive(f"h/{i}".encode(), frames(Kind.STATUS, token="wrong")))
    refusals = [line for line in said if "wrong or missing token" in line]
    assert len(refusals) == 20  # the first sender once, then 19 more this minute
    assert any("sent more than 100 bad frames" in line for line in said)  # cut off
    sim.now += 61.0
    again = logs(sim.receive(b"h/29", frames(Kind.STATUS, token="wrong")))
    assert sum("wrong or missing token" in line for line in again) == 1  # a new minute


def test_a_group_task_handed_back_finished_by_a_worker_back_from_lost_shows_completed():
    """A worker finished a group task, its RESULT lost; found gone, it came back with the
    result in its HELLO: in that round the task was kept (moved to running) and ended. The
    board and the group said completed, the task's own status PENDING for good: the moves
    were followed after the ends, and every state but running was shown as pending."""
    from ceylon_net import TaskManager, TaskMessage

    sim = Sim()
    group = TaskManager.create_task_group("g", "", [TaskMessage("t", "t", "", 0.0)])
    w = sim.join("w")
    sim.carry(sim.st.submit([], groups=[group], now=sim.now))
    w.start("t")
    attempt = w.held.pop("t")
    w.unacked[("t", attempt)] = TaskResult("t", "w", True, 0.01, attempt=attempt)
    sim.tick(at=3.5)  # (silent: taken for lost, its task back in the queue)
    assert group.subtasks[0].status == TaskStatus.PENDING
    w.hello()
    assert (sim.st.board.records["t"].state, group.status, group.subtasks[0].status) == (
        TaskState.COMPLETED, TaskStatus.COMPLETED, TaskStatus.COMPLETED)


def _one_of_two_group() -> tuple[Sim, Any, SimWorker, SimWorker]:
    """:func:`kit.one_of_two_group` on a new Sim: (sim, group, w1, w2)."""
    sim = Sim()
    return sim, *one_of_two_group(sim)


def _w1_lost(sim: Sim, w2: SimWorker) -> list[Any]:
    """w2 and a new worker w3 heartbeat for 3 s, w1 is silent: lost at 3.5 s (the round)."""
    w3 = sim.join("w3")
    for t in (1.0, 2.0, 3.0):
        sim.now = t
        w2.heartbeat()
        w3.heartbeat()
    return sim.tick(at=3.5)


def test_a_task_that_ran_on_past_a_cancel_rest_goal_is_not_run_again_once_its_worker_is_lost():
    """cancel_rest: a task that started when the goal was met runs on. Its worker then lost,
    it went back to the queue and ran again from the start on another worker: new work the
    goal said not to do. It ends cancelled, as one not started would have."""
    sim, group, w1, w2 = _one_of_two_group()
    w1.start("t0")
    w2.start("t1")
    w2.finish("t1")  # the goal is met: t0 started, it runs on
    assert sim.st.board.records["t0"].state == TaskState.RUNNING
    assert assigned(_w1_lost(sim, w2)) == {}
    done = sim.finished()
    assert (done["t0"].status, done["t0"].reason) == (TaskStatus.CANCELLED, "goal 'one' achieved")
    assert (group.status, group.completed, group.cancelled) == (TaskStatus.COMPLETED, 1, 1)


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1e300])
def test_a_result_whose_run_time_is_not_a_duration_does_not_poison_the_admin_s_figures(seconds):
    """A worker's RESULT with seconds=NaN (or -1e300): the run-time histogram's total was
    NaN for good (the metrics, the dashboard's trend, ceylon-status), and the task's time in
    the report too. Taken as 0: the worker's word, not a duration."""
    sim = Sim()
    w = sim.join("w")
    sim.submit(noop(1), noop(2))
    attempt = w.held.pop(1)
    w.say(Kind.RESULT, [TaskResult(1, "w", True, seconds, attempt=attempt)])
    w.finish(2)
    assert sim.st.stats.results == 2
    assert math.isfinite(sim.st.stats.run_seconds.total)
    assert sim.st.stats.run_seconds.buckets()[0] == ("0.001", 2)


def test_a_done_batch_watched_from_many_connections_keeps_no_trace_of_each_for_long():
    """Each WATCH of a finished batch from a new connection (ceylon-submit --watch in a
    loop, a monitor) left an entry for as long as the batch was kept: 5,000 watches, 5,000
    entries. Each still gets the report once a heartbeat at most."""
    sim = Sim()
    w = sim.join("w")
    cmds = sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(
        {"tasks": [{"id": 1, "description": "x", "difficulty": 1}]})))
    (sub,) = sends(cmds, Kind.SUBMIT, b"client")
    w.finish_all()
    batch = sim.st.batches.known[sub.batch]
    watch = frames(Kind.WATCH, wire.Watch(batches=[[sub.batch, sub.run]]))
    reports = 0
    for i in range(5000):
        sim.now += 0.001
        reports += len(sends(sim.receive(f"watcher-{i}".encode(), watch), Kind.REPORT))
    again = [sends(sim.receive(b"watcher-4999", watch), Kind.REPORT) for _ in range(2)]
    assert reports == 5000 and again == [[], []]  # (once a heartbeat to each)
    assert len(batch.answered) <= 1001  # (those of the last heartbeat, 1 s)


# --------------------------------------------------------------------------- late, not lost
# A worker that says it answers a RELEASE of a task it never got (Hello.answers_unheld): an
# assignment not heard to have reached it in time is asked back, and goes elsewhere only
# once it answers; it ran twice when given elsewhere at once and it came late (a slow or
# lossy link: TCP keeps it, and delivers it).


def test_a_first_task_not_confirmed_in_time_is_asked_back_and_runs_where_it_came_late():
    sim = Sim()
    w = sim.worker("w", answers_unheld=True)
    w.hello()
    w.heard = sim.st.broadcasts.seq
    w.heartbeat()
    sim.submit(noop("t"))
    late = w.held.pop("t")  # (on its way, slowly)
    sim.now = 1.1
    cmds = sim.fire("probation")
    assert sends(cmds, Kind.RELEASE, w.peer) == [wire.Release([["t", 1]])]
    assert not sends(cmds, Kind.CANCEL, w.peer)
    assert "asked back, not given elsewhere until it answers" in " ".join(logs(cmds, "WARNING"))
    other = sim.join("other")  # (a worker that could take it)
    w.held["t"] = late  # it came, then the RELEASE: it had started it
    w.start("t")
    assert "t" not in other.held and sim.st.board.records["t"].worker == "w"
    w.finish("t")
    assert sim.finished()["t"].status == TaskStatus.COMPLETED
    assert not sends(sim.every, Kind.CANCEL, w.peer)
    sim.st.board.validate()


@pytest.mark.parametrize("away", [0.2, 1.5])
def test_queued_tasks_a_worker_gives_back_as_it_registers_again_are_not_taken_for_lost_sends(
        away):
    """A worker that found itself paused registers again, giving back what was queued there
    (not started: it may run elsewhere by now). Its HELLO no longer lists those, and the give
    back came after it: the admin warned they had not reached it (a slow or lossy link), or
    that it came back without them, sending an operator after a network fault there was not
    (found by a review of task groups with a paused worker and a restarted admin)."""
    sim = Sim(prefetch=1)
    w = sim.join("w", capacity=1, answers_unheld=True)
    sim.submit(noop("warm"))
    w.finish("warm")
    sim.submit(noop("a"), noop("b"))
    w.start("a")
    sim.now += away  # (younger than a heartbeat, or older)
    given_back = {"b": w.held.pop("b")}
    cmds = w.hello(released=given_back)
    assert logs(cmds, "WARNING") == [] and not sends(cmds, Kind.RELEASE)
    assert assigned(cmds) == {"w": ["b"]}  # (back in the queue, and sent again: no attempt)
    w.finish("a")
    w.finish("b")
    assert {t: f.status for t, f in sim.finished().items()} == {
        "warm": TaskStatus.COMPLETED, "a": TaskStatus.COMPLETED, "b": TaskStatus.COMPLETED}
    w.say(Kind.STARTED, wire.Started([], [["b", 1]]))  # (said again, with its next news)
    assert logs(sim.every, "WARNING") == [] and sim.st.board.records["b"].losses == 0
    sim.st.board.validate()


def _t_never_reaches(sim: Sim) -> SimWorker:
    """Worker "w", trusted (it ran a task), which answers for tasks it never got; task "t"
    sent to it, which never reaches it (lost with a connection, or on a link broken one
    way): w."""
    w = sim.join("w", answers_unheld=True)
    sim.submit(noop("warm"))
    w.finish("warm")
    sim.submit(noop("t"))
    w.held.pop("t")
    return w


def test_a_task_a_heartbeat_does_not_list_is_asked_back_and_goes_elsewhere_once_given_back():
    sim = Sim()
    w = _t_never_reaches(sim)
    sim.now = 2.5
    cmds = w.heartbeat()
    assert sends(cmds, Kind.RELEASE, w.peer) == [wire.Release([["t", 1]])]
    assert not [x for x in logs(cmds, "WARNING") if "never got" in x]
    other = sim.join("other")
    assert "t" not in other.held  # (not while it may come to w)
    sim.now = 3.0
    assert sends(w.heartbeat(), Kind.RELEASE, w.peer) == [wire.Release([["t", 1]])]  # again
    w.say(Kind.STARTED, wire.Started([], [["t", 1]]))  # "never got it"
    assert "t" in other.held
    other.finish("t")
    assert sim.finished()["t"].status == TaskStatus.COMPLETED
    sim.st.board.validate()


def test_a_task_asked_back_as_unheard_goes_elsewhere_when_its_worker_never_answers():
    """Its heartbeats come, not its answers: what is sent to it does not reach it (a link
    broken one way). Not held there for good: after UNHEARD_BEATS heartbeats, as before."""
    from ceylon_net.core.membership import UNHEARD_BEATS

    sim = Sim()
    w = _t_never_reaches(sim)
    other = sim.join("other")
    sim.now = 2.5
    w.heartbeat()
    for beat in range(1, UNHEARD_BEATS + 1):
        sim.now = 2.5 + beat
        cmds = w.heartbeat()
        other.heartbeat()
        assert ("t" in other.held) == (beat == UNHEARD_BEATS), beat
    assert [x for x in logs(cmds, "WARNING") if "never got task(s) ['t']" in x]
    other.finish("t")
    assert sim.finished()["t"].status == TaskStatus.COMPLETED


def test_a_worker_a_task_was_given_up_on_gets_no_task_until_it_answers_again():
    """What is sent to it does not arrive: the task given up on it went back to the queue,
    and straight back to it (probation allows one), again and again, while another worker
    sat idle (found by a test with a relay that stops passing the admin's messages on). It
    is stalled now, the task still asked back each heartbeat; its answer, once what is
    sent arrives again, puts it on probation."""
    from ceylon_net.core.membership import UNHEARD_BEATS
    from ceylon_net.core.workers import WorkerState

    sim = Sim()
    w = _t_never_reaches(sim)
    sim.now = 2.5
    w.heartbeat()
    for beat in range(1, UNHEARD_BEATS + 1):
        sim.now = 2.5 + beat
        cmds = w.heartbeat()
    assert "gets no task until it answers" in " ".join(logs(cmds, "WARNING"))
    state = sim.st.board.scheduler.workers["w"].state
    assert (state, "t" in w.held) == (WorkerState.STALLED, False)  # (not given it again)
    other = sim.join("other")
    sim.submit(noop("u"))
    sim.now += 1
    assert sends(w.heartbeat(), Kind.RELEASE, w.peer) == [wire.Release([["t", 1]])]
    assert ("t" in other.held, "u" in w.held) == (True, False)
    cmds = w.say(Kind.STARTED, wire.Started([], [["t", 1]]))  # (it answers: "never got it")
    assert "answers again" in " ".join(logs(cmds, "INFO"))
    assert "u" in w.held and sim.st.board.scheduler.workers["w"].state is WorkerState.PROBATION
    other.finish("t")
    w.finish("u")
    assert {k: f.status for k, f in sim.finished().items()} == {
        k: TaskStatus.COMPLETED for k in ("warm", "t", "u")}
    sim.st.board.validate()


def test_a_worker_taken_for_lost_is_told_so_to_give_its_queue_back_and_register_again():
    """A worker whose messages are stuck on their way here (loss one way: TCP retransmits)
    hears the admin, and did not know it had been taken for lost: it started what it had
    queued while the admin gave those tasks to others (a chaos trial's finding). Told, it
    gives them back and registers again, as a worker the admin does not know does."""
    sim = Sim(prefetch=2)
    w = sim.join("w")
    sim.submit(noop(1), noop(2))
    cmds = sim.tick(at=3.5)  # (silent: its heartbeats are on their way)
    (told,) = sends(cmds, Kind.REJECT, w.peer)
    assert told.retry and told.reason.startswith("taken for lost (the admin heard nothing "
                                                 "from you for 3.5 s)")


def test_a_task_whose_goal_ask_back_came_too_late_is_not_run_again_once_its_worker_is_lost():
    """As above, but the task was not heard to start when the goal was met: asked back, its
    worker said it had started it (the RELEASE came too late: it runs on). Its worker then
    lost, it ran again from the start elsewhere (a reviewer's finding)."""
    sim, _, w1, w2 = _one_of_two_group()
    w2.start("t1")
    assert sends(w2.finish("t1"), Kind.RELEASE, w1.peer) == [wire.Release([["t0", 1]])]
    w1.start("t0")  # (too late: it runs on)
    assert assigned(_w1_lost(sim, w2)) == {}
    assert sim.finished()["t0"].status == TaskStatus.CANCELLED


def test_a_worker_stalled_by_an_ask_back_gets_work_again_once_the_task_left_it_otherwise():
    """On probation, it did not confirm its task in time: asked back (it may be on its way),
    and the worker stalled until it answers. The task left it another way (the worker it
    was lost with came back with its result): nothing took the worker out of STALLED, and
    it never got a task again (a reviewer's finding)."""
    sim = Sim()
    sim.submit(noop("t"))
    w1 = sim.join("w1")
    w1.start("t")
    sim.tick(at=3.5)  # w1 lost: t back in the queue
    w = sim.worker("w", answers_unheld=True)
    w.hello()
    w.held.pop("t")  # (on its way, slowly)
    sim.now = 4.6
    sim.fire(next(x for x in sim.timers if x.key[:2] == ("probation", "w")))
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.STALLED
    result = TaskResult("t", "w1", True, 0.5, attempt=w1.held.pop("t"))
    w1.unacked[("t", result.attempt)] = result
    back = sim.worker("w1", held=dict(w1.held), unacked=dict(w1.unacked))
    back.hello()  # (cut off, not dead: back with t's result)
    assert sim.finished()["t"].status == TaskStatus.COMPLETED
    sim.now = 5.6
    w.heartbeat()
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.PROBATION
    sim.submit(noop("v"))
    assert "v" in w.held or "v" in back.held


def test_a_worker_whose_name_a_new_connection_took_is_told_so():
    """Silent two heartbeats, its name goes to a new connection (most likely itself,
    restarted); were it alive, its messages held up, it would start what it had queued."""
    sim = Sim()
    old = sim.join("w")
    sim.now = 2.5
    new = sim.worker("w")
    cmds = new.hello()
    assert sends(cmds, Kind.WELCOME, new.peer)
    (told,) = sends(cmds, Kind.REJECT, old.peer)
    assert told.retry and told.reason == ("replaced by a new connection under your name: "
                                          "register again")


def test_an_asked_back_task_that_came_after_all_is_not_taken_for_unheard_when_given_back():
    """The heartbeat after the ask lists it (the RELEASE lost on the way): it came. Given
    back later for another reason (an idle worker), its trusted worker was put on probation
    as if it had not come (a reviewer's finding)."""
    sim = Sim(prefetch=2)
    w = sim.join("w", answers_unheld=True)
    sim.submit(noop("warm"))
    w.finish("warm")
    sim.submit(noop("run"), noop("t"))
    w.start("run")
    late = w.held.pop("t")
    sim.now = 2.5
    assert sends(w.heartbeat(), Kind.RELEASE, w.peer) == [wire.Release([["t", 1]])]
    w.held["t"] = late  # (it comes; the RELEASE is lost with the connection)
    sim.now = 3.0
    w.heartbeat()
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.TRUSTED
    w.say(Kind.STARTED, wire.Started([], [["t", late]]))  # (given back: for an idle one)
    assert sim.st.board.scheduler.workers["w"].state is WorkerState.TRUSTED


def test_a_task_kept_from_running_again_that_ended_cancelled_leaves_no_trace():
    sim, _, w1, w2 = _one_of_two_group()
    w2.start("t1")
    w2.finish("t1")
    w1.start("t0")  # (the goal's ask-back too late: it runs on)
    sim.cancel("t0")
    attempt = w1.held.pop("t0")
    w1.say(Kind.RESULT, [TaskResult("t0", "w1", False, 0.1, "cancelled: by request",
                                    attempt=attempt, cancelled=True)])
    assert sim.finished()["t0"].status == TaskStatus.CANCELLED
    assert sim.st.board._not_again == {} and sim.st.board._unless_started == {}


def test_a_task_asked_back_as_unheard_is_not_counted_lost_with_its_worker():
    """Its heartbeats went on without it (asked back: it may be on its way), then the worker
    was lost: the task counted as lost with it (a worker's slots not said started are taken
    for possible starts), and a flaky worker's losses made a task that never ran there dead
    (a chaos trial: 'lost 3 times', run once). It did not crash the worker: not counted."""
    sim = Sim()
    w = sim.join("w", answers_unheld=True, capacity=2)
    sim.submit(noop("warm"))
    w.finish("warm")
    sim.submit(noop("t"))
    w.held.pop("t")
    sim.now = 2.5
    w.heartbeat()  # (asked back)
    sim.tick(at=6.0)  # w lost
    assert sim.st.board.records["t"].losses == 0


def test_every_task_is_counted_in_one_state_of_the_metrics_and_the_done_add_up():
    """The metrics counted an unassigned task as cancelled and unassigned, a dead one as
    failed and dead, a waiting one as pending and waiting: their sum over-counted, and
    ceylon-status and the dashboard showed no cancelled task anywhere (a review)."""
    from ceylon_net.core.snapshot import counts, metrics

    sim = Sim(unassignable_timeout=5, max_attempts=1)
    w = sim.join("w", skill=5, capacity=3)
    sim.submit(noop("warm-up"))
    w.finish("warm-up")  # (trusted: its full capacity)
    sim.submit(noop("ok"), noop("bad"), noop("gone"), noop("dropped"), Task("hard", "h", 8),
               noop("next"), noop("after", depends_on=["next"]))
    seen = []

    def check() -> None:
        tasks, n = metrics(sim.st)["tasks"], counts(sim.st)
        assert sum(tasks.values()) == n["total"] == 8, tasks
        assert n["done"] == n["succeeded"] + n["failed"] + n["cancelled"] + n["unassigned"], n
        seen.append({k: v for k, v in tasks.items() if v})

    check()
    sim.cancel("dropped")
    w.finish("ok")
    w.finish("bad", success=False)
    check()
    for at in (1.0, 2.0, 3.5):  # w silent: lost with 'gone' and 'next' on their last attempt
        sim.tick(at=at)
    check()
    v = sim.join("v", skill=3)  # (with no worker at all, 'hard' would wait for one)
    for at in (4.0, 6.0, 8.0, 9.6):  # 'hard' given up: no connected worker can take it
        sim.now = at
        v.heartbeat()
        sim.tick()
    check()
    assert seen[0] == {"completed": 1, "running": 3, "pending": 3,
                       "waiting_on_dependencies": 1}
    assert seen[-1] == {"completed": 2, "failed": 1, "dead": 2, "cancelled": 2,
                        "unassigned": 1}
    n = counts(sim.st)
    assert (n["succeeded"], n["failed"], n["cancelled"], n["unassigned"]) == (2, 3, 2, 1)


def test_the_workers_told_the_run_is_over_are_waited_for_until_each_says_it_heard():
    """The END went out once and the admin closed its sockets at once: on a lossy link a
    worker missed it (registering again as the run ended, or its connection reset by the
    close), waited for its --connect-timeout and exited 1 after a run that succeeded (a
    review of network faults: 3 runs in 12 at 30 % loss). The admin now knows whom it told
    and who said they heard (a BYE); one registering again while it closes is told again."""
    from ceylon_net.edge.worker import HEARD_THE_END

    sim = Sim()
    a, b = sim.join("a"), sim.join("b")
    cmds = sim.carry(sim.st.close("run over"))
    assert [sorted(p for p in (a.peer, b.peer) if sends(cmds, Kind.END, p))] == \
        [sorted((a.peer, b.peer))]
    assert sim.st.told_end == {a.peer, b.peer}
    a.say(Kind.BYE, wire.End(HEARD_THE_END))
    assert sim.st.told_end == {b.peer}
    again = sim.worker("b")  # (a new connection: its END lost with the old one)
    cmds = again.hello()
    assert sends(cmds, Kind.END, again.peer) == [wire.End("run over")]
    assert again.peer in sim.st.told_end
    again.say(Kind.BYE, wire.End(HEARD_THE_END))
    assert sim.st.told_end == {b.peer}  # (the old connection's: the edge waits a while)
    assert (sim.st.all_heard, sim.st.end_wait) == (False, 2.0)  # (END_WAIT: lost at 3 s)
    sim.st.end_unsent(b.peer)  # (its connection gone: the ROUTER could not send it)
    assert sim.st.all_heard


def test_closing_a_worker_lost_is_waited_for_no_longer_and_one_still_beating_is_told_again():
    """A review of the wait above: a worker killed just before the END, declared lost while
    the admin waited, was waited for still; one whose END went with a connection ZeroMQ made
    again (no HELLO: its identity kept) beat on and was never told again; a HELLO of another
    workspace was told the run is over instead of refused; every BYE logged 'left' at
    every run's end."""
    from ceylon_net.edge.worker import HEARD_THE_END

    sim = Sim()
    a, b = sim.join("a"), sim.join("b")
    sim.carry(sim.st.close("run over"))
    sim.now += 1.0
    assert sends(a.heartbeat(), Kind.END, a.peer) == [wire.End("run over")]
    said = of(a.say(Kind.BYE, wire.End(HEARD_THE_END)), c.Log)
    assert said == [] and sim.st.told_end == {b.peer}
    stranger = sim.worker("x")
    cmds = sim.receive(stranger.peer, frames(Kind.HELLO, wire.Hello("x", "default", 5, 1), "x",
                                             workspace="other"))
    assert sends(cmds, Kind.END, stranger.peer) == [] and sends(cmds, Kind.REJECT, stranger.peer)
    for t in range(2, 8):  # (b silent: lost after liveness x heartbeat)
        sim.tick(at=float(t))
    assert b.peer not in sim.st.members.registry.by_peer and sim.st.told_end == set()


def test_a_progress_line_counts_in_its_groups_what_the_same_timer_ended():
    """A restarted admin gave up on a worker that did not come back, which ended a task of
    a group, then logged "progress: 30/42 done" beside "group 'G1': 29/30 done" (a review of
    task groups): the groups heard of it only at the round's end, after the line."""
    from ceylon_net import TaskManager, TaskMessage

    sim = Sim()
    sim.join("w", capacity=2)
    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"i{n}", f"i{n}", "", 0.0) for n in range(2)])
    sim.carry(sim.st.submit(groups=[group], now=sim.now))
    assert sim.st.board.cancel(["i1"], "gone with its worker")  # (as a timer's input does)
    sim.st.followup.log_progress(1)
    said = logs(sim.st.out.take(), "INFO")
    assert "progress: 1/2 done, 1 running, 0 queued, 1 worker(s)" in said, said
    assert "group 'g': 1/2 done" in said, said
