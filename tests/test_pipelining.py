"""Pipelined dispatch and work stealing in the admin's pure core (issue 15), driven by events
with a fake clock: how far ahead each worker is fed, what an idle worker takes back from a busy
one, what counts as lost with a killed worker, and a steal that races a start."""

from __future__ import annotations

import itertools

import pytest
from kit import Sim, assigned, frames, logs, noop, of, sends

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.pacing import (
    DEFAULT_RTT,
    MAX_CREDIT,
    RESULT_BATCH,
    Flush,
    Pace,
    flush_stands,
    when_to_flush,
)
from ceylon_net.core.snapshot import snapshot
from ceylon_net.core.tasks import TaskResult, TaskStatus
from ceylon_net.wire import Kind


def releases(cmds: list, peer: bytes) -> list[list]:
    """[task, attempt] pairs a RELEASE to ``peer`` asks back."""
    return [pair for m in sends(cmds, Kind.RELEASE, peer) for pair in m.tasks]


# --------------------------------------------------------------------------- the credit
def test_credit_covers_a_round_trip_at_the_measured_pace():
    pace = Pace()
    assert pace.credit("w", 8) == 8  # nothing measured: one round of its slots ahead
    pace.ran("w", 0.010, count=50)  # 10 ms tasks: a 2 ms round trip is a fifth of one
    assert pace.credit("w", 8) == 2
    pace.ran("w", 2.0, count=50)  # long tasks: one queued is enough
    assert pace.credit("w", 8) == 1
    for _ in range(3):
        pace.ran("w", 0.000_01, count=50)  # no-op tasks: as many as allowed
    assert pace.credit("w", 8) == MAX_CREDIT
    assert Pace(fixed=0).credit("w", 8) == 0 and Pace(fixed=5).credit("w", 8) == 5
    assert pace.rtt == DEFAULT_RTT
    pace.round_trip(0.0005)
    assert pace.rtt < DEFAULT_RTT


def test_a_worker_is_fed_beyond_its_slots_by_default_and_more_once_tasks_prove_short():
    sim = Sim(prefetch=None)
    sim.submit(*[noop(i) for i in range(600)])
    w = sim.join("w", capacity=4)
    w.heartbeat()
    assert len(w.held) == 4 + 4  # its slots, and as many queued behind them
    sim.now += 0.003
    for task_id in sorted(w.held)[:4]:  # 0.1 ms tasks, 3 ms after they were sent
        w.finish(task_id, seconds=0.000_1)
    # A round trip (about 3 ms) is worth many of them: it holds more, queued.
    assert 4 + 60 <= len(w.held) <= 4 + MAX_CREDIT


def test_prefetch_0_turns_pipelining_off_and_a_fixed_prefetch_holds():
    for prefetch, held in ((0, 2), (3, 5)):
        sim = Sim(prefetch=prefetch)
        sim.submit(*[noop(i) for i in range(20)])
        w = sim.join("w", capacity=2)
        w.finish_all()
        assert len(w.held) == held, prefetch


def test_a_worker_s_results_wait_for_others_only_while_tasks_wait_in_its_queue():
    """A lone result leaves at once; while tasks wait in the worker's queue (a stream of them),
    it is held a moment for others to join it, unless the batch is full or the news is one
    another worker waits on; beside running tasks alone (a long one, perhaps), not held."""
    def when(results: int, urgent: bool = False, running: bool = False,
             queued: bool = False) -> Flush:
        return when_to_flush(results, urgent, running, queued)

    assert when(1) is Flush.NOW and when(0, urgent=True) is Flush.NOW
    assert when(1, running=True) is Flush.TURN
    assert when(1, queued=True) is Flush.HOLD
    assert when(0, running=True, queued=True) is Flush.HOLD  # (starts alone)
    assert when(RESULT_BATCH - 1, running=True, queued=True) is Flush.HOLD
    assert when(RESULT_BATCH, running=True, queued=True) is Flush.TURN
    assert when(1, urgent=True, running=True, queued=True) is Flush.TURN


def test_a_flush_said_to_stand_is_one_when_to_flush_would_leave_as_it_is():
    """The worker asks flush_stands first, for most results, in place of when_to_flush: with
    tasks queued and a flush due, it must say 'stands' exactly when when_to_flush's answer
    would change nothing (no NOW; a TURN only brings a held flush forward)."""
    for held, results, urgent, running in itertools.product(
            (False, True), (0, 1, RESULT_BATCH - 1, RESULT_BATCH, RESULT_BATCH + 1),
            (False, True), (False, True)):
        when = when_to_flush(results, urgent, running, queued=True)
        unchanged = when is not Flush.NOW and not (when is Flush.TURN and held)
        assert flush_stands(held, results, urgent) == unchanged, (held, results, urgent, running)


def test_a_task_goes_to_a_free_slot_rather_than_behind_a_better_fitting_worker():
    sim = Sim(prefetch=4)
    sim.submit(noop("warm-up"))
    junior = sim.join("junior", skill=3, capacity=1)
    senior = sim.join("senior", skill=9, capacity=1)
    assert junior.held == {"warm-up": 1}  # best fit: the least skilled that can do it
    cmds = sim.submit(noop("next"))
    assert assigned(cmds) == {"senior": ["next"]}  # not queued behind the junior's task
    assert senior.held == {"next": 1}


def test_every_worker_s_free_slots_are_filled_before_tasks_are_queued_ahead_on_any():
    """What starts at once goes first, in a frame of its own for each worker; what is queued
    ahead of it follows, after every worker got its first round (W3's start)."""
    sim = Sim(prefetch=100)
    workers = [trusted(sim, f"w{i}", capacity=8, skill=7 + i) for i in range(4)]
    cmds = of(sim.submit(*[noop(i) for i in range(200)]), c.Assign)
    firsts, then = cmds[:4], cmds[4:]
    assert [len(cmd.assignments) for cmd in firsts] == [8, 8, 8, 8]
    assert {cmd.worker for cmd in firsts} == {w.name for w in workers}
    assert sum(len(cmd.assignments) for cmd in then) == 200 - 32
    assert len({cmd.worker for cmd in then}) == len(then)  # (one more frame a worker at most)
    for w in workers:  # each got its tasks in their order
        ids = [a.task.id for cmd in cmds if cmd.worker == w.name for a in cmd.assignments]
        assert ids == sorted(ids) and len(ids) == len(w.held)


def test_new_work_fills_free_slots_in_its_own_round_and_what_is_queued_ahead_follows():
    """The round new work comes in plans only the free slots' tasks, so that they leave
    before the rest is planned (W3: the first of 200 tasks on 4 x 8 slots went out after all
    200 were); a timer of no time then queues the rest ahead, in the same parts as one round
    would (56, 48, 48, 48: only the worker served first runs a seventh round)."""
    sim = Sim(prefetch=100)
    workers = [sim.join(f"w{i}", capacity=8) for i in range(4)]
    sim.submit(*[noop(f"warm-{i}") for i in range(4)])  # (one each, on probation)
    for w in workers:
        w.finish(*w.held)  # (trusted: fed up to its slots and ahead)
    sim.ahead_at_once = False
    cmds = sim.submit(*[noop(i) for i in range(200)])
    assert [len(cmd.assignments) for cmd in of(cmds, c.Assign)] == [8, 8, 8, 8]
    assert of(cmds, c.Timer) == [c.Timer(("ahead",), 0.0, deadline=False)]
    assert [len(w.held) for w in workers] == [8, 8, 8, 8]
    then = of(sim.fire("ahead"), c.Assign)
    assert [len(cmd.assignments) for cmd in then] == [48, 40, 40, 40]
    assert [len(w.held) for w in workers] == [56, 48, 48, 48]
    assert not [t for t in sim.timers if t.key == ("ahead",)]
    ids = [a.task.id for cmd in of(cmds, c.Assign) + then for a in cmd.assignments]
    assert sorted(ids) == list(range(200))  # each once


def test_work_that_fills_no_more_than_the_free_slots_asks_for_no_round_after():
    """One task for an idle worker (W2's execute()), or work with no slot free: one round,
    no timer (a round more would cost every execute() a turn of the loop)."""
    sim = Sim(prefetch=100)
    trusted(sim, "w", capacity=2)
    sim.ahead_at_once = False
    cmds = sim.submit(noop("one"))
    assert assigned(cmds) == {"w": ["one"]} and not of(cmds, c.Timer)
    cmds = sim.submit(noop("two"), noop("three"), noop("four"))  # one slot free, two ahead
    assert assigned(cmds) == {"w": ["two"]} and of(cmds, c.Timer)
    assert assigned(sim.fire("ahead")) == {"w": ["three", "four"]}
    cmds = sim.submit(noop("five"))  # no slot free: queued ahead at once
    assert assigned(cmds) == {"w": ["five"]} and not of(cmds, c.Timer)


def test_a_task_no_worker_takes_now_does_not_cost_each_execute_a_round_more():
    """A task left queued (a difficulty no worker has) is not new work still to queue
    ahead: one task for a worker with free slots takes one round, no timer (a review
    found each execute() then paid a round more)."""
    sim = Sim(prefetch=100)
    trusted(sim, "w", capacity=8, skill=3)
    sim.submit(noop("too-hard", difficulty=9))
    sim.ahead_at_once = False
    for i in range(3):
        cmds = sim.submit(noop(f"exec-{i}"))
        assert assigned(cmds) == {"w": [f"exec-{i}"]} and not of(cmds, c.Timer)
    assert sim.st.board.scheduler.queued() == ["too-hard"]


def test_new_work_in_a_round_whose_free_slots_went_to_older_tasks_is_queued_ahead_after():
    """Results that free a worker's slots and a client's SUBMIT read in one round: the free
    slots take older tasks, the new one is left queued, and the round that queues ahead
    still follows (a review: it did not, when the queue was no longer than before the
    SUBMIT, and the worker had nothing queued ahead until its next message or a tick)."""
    sim = Sim(prefetch=4)
    w = trusted(sim, "w", capacity=2)
    sim.submit(*[noop(i) for i in range(20)])
    assert sorted(w.held) == [0, 1, 2, 3, 4, 5]  # (2 slots, 4 ahead)
    sim.ahead_at_once = False
    sim.now += 1
    results = [TaskResult(t, "w", True, 0.001, attempt=a) for t, a in w.held.items()]
    w.held.clear()
    doc = {"tasks": [{"id": "new", "description": "x", "difficulty": 1}]}
    cmds = sim.carry(sim.st.receive_many([
        (w.peer, frames(Kind.RESULT, results, sender="w"), "127.0.0.1"),
        (b"client-1", frames(Kind.SUBMIT, wire.Submission(doc)), "127.0.0.1")], sim.now))
    assert assigned(cmds) == {"w": [6, 7]} and of(cmds, c.Timer)
    assert assigned(sim.fire("ahead")) == {"w": [8, 9, 10, 11]}


def test_new_work_that_takes_the_free_slots_leaves_older_tasks_to_be_queued_ahead_after():
    """The other half: an urgent task submitted as results free the worker's slots takes
    one of them, older tasks the worker could queue ahead are left, and none of the new
    work is: the round that queues ahead still follows (a review: it did not, and the
    worker's queue ran dry for a round trip)."""
    sim = Sim(prefetch=4)
    w = trusted(sim, "w", capacity=2)
    sim.submit(*[noop(i) for i in range(20)])
    sim.ahead_at_once = False
    sim.now += 1
    results = [TaskResult(t, "w", True, 0.001, attempt=a) for t, a in w.held.items()]
    w.held.clear()
    doc = {"tasks": [{"id": "new", "description": "x", "difficulty": 1, "priority": 10}]}
    cmds = sim.carry(sim.st.receive_many([
        (w.peer, frames(Kind.RESULT, results, sender="w"), "127.0.0.1"),
        (b"client-1", frames(Kind.SUBMIT, wire.Submission(doc)), "127.0.0.1")], sim.now))
    assert assigned(cmds) == {"w": ["new", 6]} and of(cmds, c.Timer)
    assert assigned(sim.fire("ahead")) == {"w": [7, 8, 9, 10]}


def test_urgent_new_work_asks_back_no_low_task_its_ahead_round_would_not():
    """The round that fills free slots leaves the rest of the new work queued for a moment:
    taken for urgent tasks waiting for room, it asked low tasks queued ahead back that the
    ahead round then did not need (a review: 32 asked back, where 16 were due)."""
    sim = Sim(prefetch=4)
    a = trusted(sim, "a", capacity=1, skill=3)
    sim.now += 60
    sim.submit(noop("low-0"), noop("low-1"))  # (one running, one queued ahead)
    a.start("low-0")
    b = trusted(sim, "b", capacity=2, skill=10)
    cmds = sim.submit(*[noop(f"urgent-{i}", priority=10) for i in range(3)])
    assert assigned(cmds) == {"b": ["urgent-0", "urgent-1"], "a": ["urgent-2"]}
    assert not releases(cmds, a.peer) and not releases(cmds, b.peer)


def test_without_pipelining_new_work_is_planned_in_one_round():
    sim = Sim(prefetch=0)
    w = trusted(sim, "w", capacity=2)
    sim.ahead_at_once = False
    cmds = sim.submit(*[noop(i) for i in range(5)])
    assert assigned(cmds) == {"w": [0, 1]} and not of(cmds, c.Timer)
    assert w.held == {0: 1, 1: 1}


def test_a_worker_with_free_slots_only_gets_one_frame():
    sim = Sim(prefetch=100)
    w = trusted(sim, "w", capacity=8)
    assert [len(cmd.assignments) for cmd in of(sim.submit(*[noop(i) for i in range(5)]),
                                               c.Assign)] == [5]
    assert [len(cmd.assignments) for cmd in of(sim.submit(*[noop(i) for i in range(5, 20)]),
                                               c.Assign)] == [3, 12]  # 3 free, 12 ahead
    assert len(w.held) == 20
    assert [len(cmd.assignments) for cmd in of(sim.submit(*[noop(i) for i in range(20, 30)]),
                                               c.Assign)] == [10]  # all ahead


# --------------------------------------------------------------------------- stealing
def busy_and_idle(**settings) -> tuple[Sim, object, object]:
    """'busy' runs a long task with two short ones queued behind it; 'idle' then joins."""
    sim = Sim(**{"prefetch": 2, **settings})
    sim.submit(noop("long"), noop("short-1"), noop("short-2"))
    busy = sim.join("busy", capacity=1)
    assert list(busy.held) == ["long", "short-1", "short-2"]
    busy.start("long")
    sim.now = 1.0  # the queued ones have waited a while
    idle = sim.join("idle", capacity=1)
    return sim, busy, idle


def test_an_idle_worker_takes_tasks_queued_behind_a_long_one():
    sim, busy, idle = busy_and_idle()
    asked = releases(sim.every, busy.peer)
    assert asked == [["short-2", 1]]  # the last sent first, as many as the idle one has slots
    assert idle.held == {}  # nothing moves until the busy worker gives it back

    cmds = busy.give_back("short-2")
    assert assigned(cmds) == {"idle": ["short-2"]}
    rec = sim.st.board.records["short-2"]
    assert (rec.attempt, rec.losses, rec.worker) == (2, 0, "idle")
    assert sim.st.stats.stolen == 1

    idle.finish("short-2")  # its slot is free again: the other queued one follows
    assert releases(sim.every, busy.peer)[-1] == ["short-1", 1]
    busy.give_back("short-1")
    idle.finish("short-1")
    busy.finish("long")
    assert {t: f.status for t, f in sim.finished().items()} == {
        "long": TaskStatus.COMPLETED, "short-1": TaskStatus.COMPLETED,
        "short-2": TaskStatus.COMPLETED}
    sim.st.validate()


def test_nothing_is_asked_back_while_it_would_start_there_as_soon():
    sim = Sim(prefetch=2)
    sim.submit(noop("a"), noop("b"))
    busy = sim.join("busy", capacity=1)
    busy.start("a")
    sim.join("idle", capacity=1)  # at once: "b" has waited less than a few round trips
    assert releases(sim.every, busy.peer) == []


def busy_with_one_queued(seconds: float) -> tuple[Sim, object]:
    """'busy' (1 slot) has shown its tasks take ``seconds``; it started "second" at 0.021,
    "third" waits in its queue."""
    sim = Sim(prefetch=1)
    sim.submit(noop("first"), noop("second"), noop("third"))
    busy = sim.join("busy", capacity=1)
    busy.start("first")
    sim.now = 0.021
    busy.finish("first", seconds=seconds)
    busy.start("second")
    assert list(busy.held) == ["second", "third"]
    return sim, busy


def test_a_task_stays_queued_where_a_slot_frees_sooner_than_a_steal_and_moves_once_late():
    sim, busy = busy_with_one_queued(0.020)  # its tasks take 20 ms
    patience = 3 * sim.st.pace.rtt  # a steal costs about a round trip
    # "second" is due to end within less than a steal would take: "third" starts there first,
    # though it has waited there longer than a few round trips.
    sim.now += 0.020 - patience / 2
    assert sim.now - 0.021 > patience
    idle = sim.join("idle", capacity=1)
    assert releases(sim.every, busy.peer) == []
    # Just past its usual time (its result may be on the way): still left there.
    sim.now = 0.021 + 0.020 + 0.000_001
    idle.heartbeat()
    assert releases(sim.every, busy.peer) == []
    # "second" runs late, by more than a steal takes: it may run long. "third" moves.
    sim.now = 0.021 + 0.020 + patience + 0.001
    idle.heartbeat()
    assert releases(sim.every, busy.peer) == [["third", 1]]
    busy.give_back("third")
    assert idle.held == {"third": 2}
    sim.st.validate()


def test_a_run_time_that_is_no_duration_is_not_taken_and_stealing_goes_on():
    sim, busy = busy_with_one_queued(float("nan"))  # a worker's word, off the wire
    assert "busy" not in sim.st.pace.run
    sim.now = 0.021 + 3 * sim.st.pace.rtt
    idle = sim.join("idle", capacity=1)
    sim.tick(100.0)
    idle.heartbeat()
    assert releases(sim.every, busy.peer) == [["third", 1]]
    pace = Pace()
    for bad in (float("nan"), float("inf"), -1.0):
        pace.ran("w", bad)
    assert pace.run == {} and pace.credit("w", 8) == 8


def test_a_worker_that_cannot_do_a_queued_task_does_not_take_it():
    sim = Sim(prefetch=2)
    sim.submit(noop("long"), noop("hard", difficulty=9))
    busy = sim.join("busy", skill=9, capacity=1)
    busy.start("long")
    sim.now = 1.0
    sim.join("junior", skill=3, capacity=1)
    assert releases(sim.every, busy.peer) == []


def test_a_steal_that_races_the_start_leaves_the_task_where_it_runs():
    sim, busy, idle = busy_and_idle()
    assert releases(sim.every, busy.peer) == [["short-2", 1]]
    # The busy worker started it before the RELEASE arrived: it says so, gives nothing back.
    busy.start("short-2")
    assert sim.st.board.records["short-2"].worker == "busy"
    assert idle.held == {}
    busy.finish("short-2")
    busy.say(Kind.STARTED, wire.Started([], []))  # an empty answer changes nothing
    finished = sim.finished()["short-2"]
    assert finished.status is TaskStatus.COMPLETED and finished.result.worker == "busy"
    assert sum(isinstance(x, c.Assign) and any(a.task.id == "short-2" for a in x.assignments)
               for x in sim.every) == 1  # sent once: never run anywhere else
    sim.st.validate()


def test_a_give_back_that_comes_after_the_result_is_stale_and_ignored():
    sim, busy, _ = busy_and_idle()
    busy.finish("short-2")  # it ran it before the RELEASE came
    cmds = busy.say(Kind.STARTED, wire.Started([], [["short-2", 1]]))
    assert of(cmds, c.Assign) == []
    assert sim.finished()["short-2"].result.worker == "busy"
    sim.st.validate()


def test_the_stolen_task_s_old_result_is_ignored_after_it_ran_elsewhere():
    sim, busy, idle = busy_and_idle()
    busy.give_back("short-2")
    idle.finish("short-2")
    stale = TaskResult("short-2", "busy", True, attempt=1)
    cmds = busy.say(Kind.RESULT, [stale])
    assert of(cmds, c.Finished) == []
    assert sim.finished()["short-2"].result.worker == "idle"


# --------------------------------------------------------------------------- held slots
def _hung(sim: Sim, capacity: int, stuck: int):
    """A worker whose task 'hung' timed out, its thread holding ``stuck`` slots: said, as a
    worker does, before the result."""
    w = sim.join("w", capacity=capacity)
    w.start(*list(w.held)[:capacity])  # as many as it has slots
    w.say(Kind.STARTED, wire.Started([], [], stuck=stuck))
    w.finish("hung", success=False)
    return w


def test_the_held_slots_counted_for_the_progress_line_go_with_a_worker_lost():
    sim = Sim()
    sim.submit(noop("hung"))
    _hung(sim, capacity=2, stuck=2)
    assert sim.st.members.registry.stuck == 2
    sim.tick(at=sim.now + 3.5)  # silent: lost
    assert len(sim.st.members.registry) == 0 and sim.st.members.registry.stuck == 0


def test_a_slot_held_by_a_thread_past_its_task_is_not_fed_until_the_thread_ends():
    sim = Sim(prefetch=1)
    sim.submit(noop("hung"), noop("a"), noop("b"))
    w = _hung(sim, capacity=2, stuck=1)
    assert sorted(w.held) == ["a", "b"]  # a runs, b waits behind it: its other slot is held
    assert assigned(sim.submit(noop("c"))) == {}
    (shown,) = snapshot(sim.st)["workers"]
    assert (shown["running"], shown["queued"], shown["stuck"]) == (1, 1, 1)
    said = "1 of its 2 slot(s) held by a handler that outlived its task"
    assert any(said in m for m in logs(sim.every))
    progress = [m for m in logs(sim.tick(at=sim.now + 1.0)) if m.startswith("progress:")]
    assert progress and progress[0].endswith("1 worker(s) (1 slot(s) held by a handler past "
                                             "its task)"), progress
    w.stuck = 0  # the thread ended: its heartbeat says so
    assert assigned(w.heartbeat()) == {"w": ["c"]}
    assert snapshot(sim.st)["workers"][0]["stuck"] == 0
    assert sim.st.members.registry.stuck == 0
    sim.st.validate()


def test_tasks_queued_behind_a_worker_s_only_slot_held_by_a_thread_go_to_an_idle_one():
    sim = Sim(prefetch=2)
    sim.submit(noop("hung"), noop("next"))
    w = _hung(sim, capacity=1, stuck=10**9)  # (more than it has: all of them)
    assert sim.st.board.scheduler.workers["w"].capacity == 0  # none ahead either
    sim.now = 1.0
    idle = sim.join("idle", capacity=1)
    assert releases(sim.every, w.peer) == [["next", 1]]
    assert assigned(w.give_back("next")) == {"idle": ["next"]}
    assert idle.held == {"next": 2}
    sim.st.validate()


# --------------------------------------------------------------------------- losses
def test_a_killed_worker_s_queued_tasks_go_back_without_an_attempt_counted():
    sim = Sim(prefetch=3, max_attempts=1)
    sim.submit(*[noop(i) for i in range(4)])
    victim = sim.join("victim", capacity=1)
    assert list(victim.held) == [0, 1, 2, 3]
    victim.start(0)

    cmds = sim.tick(at=3.5)  # silent: lost
    assert "worker 'victim' lost" in " ".join(x.message for x in of(cmds, c.Log))
    finished = sim.finished()
    assert list(finished) == [0] and finished[0].status is TaskStatus.FAILED  # it started
    board = sim.st.board
    assert [board.records[i].losses for i in (1, 2, 3)] == [0, 0, 0]
    assert [board.records[i].status for i in (1, 2, 3)] == [TaskStatus.PENDING] * 3

    other = sim.join("other", capacity=1)
    assert list(other.held) == [1]  # waited there: now only to a free slot, not queued
    other.finish_all()
    assert set(sim.finished()) == {0, 1}


def test_a_task_not_said_started_counts_when_it_was_within_the_worker_s_slots():
    # A task that crashes its worker as it starts may never be said to have started: the
    # first tasks sent, as many as it has slots, count anyway.
    sim = Sim(prefetch=2, max_attempts=1)
    sim.submit(noop("poison"), noop("queued"))
    sim.join("w", capacity=1)
    sim.tick(at=3.5)
    finished = sim.finished()
    assert list(finished) == ["poison"] and finished["poison"].status is TaskStatus.FAILED
    assert sim.st.board.records["queued"].losses == 0


def test_a_lost_task_that_waited_is_counted_next_time_it_is_lost():
    sim = Sim(prefetch=1, max_attempts=1)
    sim.submit(noop("first"), noop("second"))
    w0 = sim.join("w0", capacity=1)
    w0.start("first")
    sim.tick(at=3.5)  # "second" waited: not counted, back to a free slot only
    assert "second" not in sim.finished()
    sim.join("w1", capacity=1)
    sim.tick(at=7.5)  # it went to a free slot there: it may have started: counted
    assert sim.finished()["second"].status is TaskStatus.FAILED


def test_a_task_lost_with_a_worker_never_waits_in_a_worker_s_queue_again():
    # Queued behind another, a task that crashes its worker as it starts may be lost before
    # its start is said (the other's result dies with the worker too). So once a task was
    # with a worker that died, it waits at the admin for a free slot: each crash counts.
    sim = Sim(prefetch=2, max_attempts=3)
    sim.submit(noop("poison", priority=1))
    sim.join("w0", capacity=1)
    busy = sim.join("busy", capacity=1)
    sim.submit(noop("long"))  # to the free slot
    sim.now = 3.0
    busy.heartbeat()
    sim.tick(at=3.5)  # w0 is lost with the poison task
    assert sim.st.board.records["poison"].losses == 1
    sim.submit(*[noop(f"later-{i}") for i in range(4)])
    # Room in busy's queue, but no free slot: the poison task waits, and busy is held for
    # it: the younger tasks do not queue there ahead of it, or it would never get a slot.
    assert list(busy.held) == ["long"]
    busy.finish("long")
    assert list(busy.held) == ["poison", "later-0", "later-1"]
    assert busy.held["poison"] == 2
    # Lost a second time, it is on its last attempt (--max-attempts 3): it runs alone.
    sim.now = 10.0
    sim.tick(at=13.5)  # busy is lost with it
    assert sim.st.board.records["poison"].losses == 2
    last = sim.join("last", capacity=1)
    assert list(last.held) == ["poison"]  # nothing queued behind it
    last.finish("poison")
    assert list(last.held) == ["later-0"]  # (it waited on busy: to a free slot only)


def test_status_shows_a_worker_held_for_a_task_to_run_alone_and_then_running_it():
    sim = Sim(max_attempts=2)
    sim.submit(noop("lost"))
    sim.join("w0", capacity=1)
    busy = sim.join("busy", capacity=2)
    sim.submit(noop("long"))
    sim.now = 3.0
    busy.heartbeat()
    sim.tick(at=3.5)  # w0 is lost with it: its next attempt is its last, alone
    shown = {w["name"]: w for w in snapshot(sim.st)["workers"]}
    assert (shown["busy"]["held"], shown["busy"]["alone"]) == (True, False)
    busy.finish("long")
    assert list(busy.held) == ["lost"]
    shown = {w["name"]: w for w in snapshot(sim.st)["workers"]}
    assert (shown["busy"]["held"], shown["busy"]["alone"]) == (False, True)


def _answer_releases(cmds: list, w) -> None:
    """The worker gives back what a RELEASE asks for if it has not started it (it runs the
    first ``capacity`` tasks it holds)."""
    running = set(list(w.held)[: w.capacity])
    for pair in releases(cmds, w.peer):
        back = [t for t, a in [pair] if w.held.get(t) == a and t not in running]
        if back:
            _answer_releases(w.give_back(*back), w)


def test_an_urgent_task_is_not_kept_waiting_by_lower_ones_sent_ahead_to_a_full_worker():
    """A worker of one slot whose tasks take a minute holds one task ahead (pipelining on,
    by default). Two low tasks: one runs, one waits in its queue; then an urgent one comes,
    and the worker has no room for it. The low one that waits there is asked back, and the
    urgent one goes in its stead: it starts next, not a minute later (a review's finding:
    the low one started first, and with short tasks up to 1,024 could be ahead)."""
    sim = Sim(prefetch=None)
    w = sim.join("w", capacity=1)
    sim.submit(noop("warm-up"))
    sim.now += 60
    w.finish("warm-up", seconds=60.0)  # its tasks take a minute: one is queued ahead
    sim.submit(noop("low-1", priority=0), noop("low-2", priority=0))
    assert list(w.held) == ["low-1", "low-2"]
    cmds = sim.submit(noop("urgent", priority=10))
    assert releases(cmds, w.peer) == [["low-2", 1]]
    _answer_releases(cmds, w)
    assert list(w.held) == ["low-1", "urgent"]  # low-2 back in the admin's queue
    sim.now += 60
    cmds = w.finish("low-1", seconds=60.0)
    assert list(w.held) == ["urgent", "low-2"] and not releases(cmds, w.peer)


def test_tasks_of_one_priority_are_never_asked_back_for_each_other():
    """Only a better task waiting takes a place in a worker's queue: a second batch of the
    same priority waits its turn, and nothing goes back and forth."""
    sim = Sim(prefetch=None)
    w = sim.join("w", capacity=1)
    sim.submit(noop("warm-up"))
    sim.now += 60
    w.finish("warm-up", seconds=60.0)
    cmds = sim.submit(*[noop(f"a{i}") for i in range(3)])
    cmds += sim.submit(*[noop(f"b{i}") for i in range(3)])
    for _ in range(3):
        sim.now += 1
        cmds += w.heartbeat() + sim.tick()
    assert not releases(cmds, w.peer)
    assert list(w.held) == ["a0", "a1"]


def test_a_low_task_is_not_asked_back_for_a_better_one_the_worker_could_not_take():
    """The urgent task needs more skill than the worker has: its queue is left alone."""
    sim = Sim(prefetch=None)
    w = sim.join("w", capacity=1, skill=3)
    sim.submit(noop("warm-up"))
    sim.now += 60
    w.finish("warm-up", seconds=60.0)
    sim.submit(noop("low-1"), noop("low-2"))
    cmds = sim.submit(noop("urgent", difficulty=9, priority=10))
    sim.now += 1
    cmds += w.heartbeat() + sim.tick()
    assert not releases(cmds, w.peer) and list(w.held) == ["low-1", "low-2"]


# ---- a review of the above (helper): one place made a task asked back, not more

def _full_workers(n: int) -> tuple[Sim, list]:
    """``n`` workers of one slot whose tasks take a minute (each holds one task ahead), each
    holding two low tasks: one runs, one waits in its queue."""
    sim = Sim(prefetch=None)
    ws = [sim.join(f"w{i}", capacity=1) for i in range(n)]
    sim.submit(*[noop(f"warm-{i}") for i in range(n)])
    sim.now += 60
    for i, w in enumerate(ws):
        w.finish(f"warm-{i}", seconds=60.0)
    sim.submit(*[noop(f"low-{i}") for i in range(2 * n)])
    assert all(len(w.held) == 2 for w in ws)
    return sim, ws


@pytest.mark.timeout(30)
def test_one_urgent_task_asks_back_one_low_task_not_one_from_every_full_worker():
    """Three full workers, each with a low task waiting in its queue; ONE urgent task comes.
    One place is needed, so one low task should be asked back. preempts() asks each worker
    on its own (each sees 'one better task waits that I could take'): three RELEASEs, and
    two of the low tasks given back are then sent straight out again (churn that grows with
    the number of workers, for every urgent task that comes)."""
    sim, ws = _full_workers(3)
    cmds = sim.submit(noop("urgent", priority=10))
    asked = {w.name: releases(cmds, w.peer) for w in ws}
    back_again: dict[str, list] = {}
    for w in ws:
        given = [t for t, _ in asked[w.name]]
        if given:
            for worker, tasks in assigned(w.give_back(*given)).items():
                back_again.setdefault(worker, []).extend(tasks)
    total = sum(len(v) for v in asked.values())
    resent = [t for tasks in back_again.values() for t in tasks if t != "urgent"]
    assert total == 1 and not resent, (
        f"one urgent task: asked back {asked}, and sent out again at once {back_again}")


@pytest.mark.timeout(30)
def test_while_a_release_is_on_its_way_each_change_asks_back_one_more_for_one_urgent_task():
    """One worker holding six low tasks (one runs, five wait in its queue: --prefetch 4);
    ONE urgent task comes and one low task is asked back. Before the worker's answer
    arrives (a round trip), tasks keep coming (any change of the scheduler will do: a
    result, a submission). Each such round, preempts() sees the same urgent task still
    waiting and asks back ANOTHER low task (what is asked already is left out of the
    candidates, but not of the count of places needed): within a few rounds the worker's
    whole queue is asked back, and even the task it runs, all for one urgent task."""
    sim = Sim(prefetch=4)
    w = sim.join("w", capacity=1)
    sim.submit(noop("warm-up"))
    sim.now += 60
    w.finish("warm-up", seconds=60.0)
    sim.submit(*[noop(f"low-{i}") for i in range(8)])
    assert len(w.held) == 5
    asked = releases(sim.submit(noop("urgent", priority=10)), w.peer)
    assert len(asked) == 1
    for i in range(4):  # (the RELEASE not answered yet: other work comes meanwhile)
        sim.now += 0.01
        asked += releases(sim.submit(noop(f"more-{i}")), w.peer)
    assert len(asked) == 1, f"one urgent task waits, yet asked back {asked} of {list(w.held)}"


@pytest.mark.timeout(120)
def test_one_task_of_another_priority_long_ago_does_not_make_every_result_cost_more(
        monkeypatch):
    """The hot path. 50 busy workers, a backlog of tasks all of priority 0; no better task
    waits anywhere. One task of priority 1 came (and ended) before: from then on every
    round sorted every full worker's whole in-flight set (and scanned the queue's heaps)
    looking for tasks to ask back, though nothing ever could be: 4-6 ms a result against
    0.07-0.11 ms (a review's measure). Now it looks once, finds nothing, and not again
    until a task above the lowest priority is queued."""
    from ceylon_net.core.board import TaskBoard

    looked: list[str] = []
    preempt_from = TaskBoard._preempt_from

    def counted(self, worker, asked):  # type: ignore[no-untyped-def]
        looked.append(worker.name)
        return preempt_from(self, worker, asked)

    monkeypatch.setattr(TaskBoard, "_preempt_from", counted)
    sim = Sim(prefetch=500)
    ws = [sim.join(f"w{i}", capacity=4) for i in range(50)]
    sim.submit(noop("odd", priority=1))
    for w in ws:
        if "odd" in w.held:
            w.finish("odd")
    sim.submit(*[noop(f"t{i}") for i in range(45_000)])
    for w in ws:  # (each off probation: once a worker is trusted, its queue is looked at)
        w.finish(next(iter(w.held)))
    looked.clear()
    for r in range(300):
        w = ws[r % 50]
        w.finish(next(iter(w.held)))
    assert looked == []
    sim.submit(noop("better", priority=5))  # (one above: looked at again, and asked)
    assert len(set(looked)) == 50


# ---- a review of the above (helper): places counted, and a task back from a lost worker


def trusted(sim: Sim, name: str, **kw):
    """A worker that joined, ran a task (off probation) and so is fed up to its capacity."""
    sim.submit(noop(f"warm-{name}", difficulty=kw.get("skill", 10)))  # (only it can)
    w = sim.join(name, **kw)
    w.finish(f"warm-{name}")
    assert not w.held
    return w


def answer(cmds: list, w, running: set) -> list:
    """The worker gives back what a RELEASE asks of it that it has not started."""
    out = []
    for t, a in releases(cmds, w.peer):
        if w.held.get(t) == a and t not in running:
            more = w.give_back(t)
            out += more + answer(more, w, running)
    return out


def next_start(sim: Sim, w, ending: str):
    """The task ``w`` starts from its own queue the moment ``ending`` ends (before the admin
    hears of it): the best priority it holds, first come first served among equals."""
    rest = [t for t in w.held if t != ending]
    if not rest:
        return None
    return max(rest, key=lambda t: (sim.st.board.records[t].task.priority,
                                    -rest.index(t)))


@pytest.mark.timeout(30)
def test_a_low_task_given_back_and_sent_out_in_the_same_round_keeps_using_up_a_place():
    """W (skill 10) and V (skill 3), one slot each, one task held ahead (--prefetch 1).
    An urgent task only W can do comes: W's queued low task is asked back and given back;
    in that same round the urgent one takes its place on W and the low one goes straight
    into V's queue (V has room there). preempts() ran before the give-back was carried out
    and counts the low task, in flight again and not started, as a place still being made
    (TaskBoard._preempting is cleaned only of tasks started or no longer in flight). A
    second urgent task, one V could take, then gets no place: V's low task is not asked
    back, and starts on V before it, though it waited at the admin all along."""
    sim = Sim(prefetch=1)
    w = trusted(sim, "w", capacity=1, skill=10)
    sim.submit(noop("l0"), noop("l1"))
    assert list(w.held) == ["l0", "l1"]
    w.start("l0")
    v = trusted(sim, "v", capacity=1, skill=3)
    sim.submit(noop("v0"))
    assert list(v.held) == ["v0"]
    v.start("v0")
    cmds = sim.submit(noop("urgent", difficulty=9, priority=10))
    assert releases(cmds, w.peer) == [["l1", 1]]
    w.give_back("l1")
    assert list(w.held) == ["l0", "urgent"] and list(v.held) == ["v0", "l1"]
    cmds = sim.submit(noop("urgent-2", difficulty=1, priority=10))
    answer(cmds, w, {"l0"})
    answer(cmds, v, {"v0"})
    for _ in range(3):  # seconds: many round trips; RELEASEs answered at once
        sim.now += 1
        cmds = w.heartbeat() + v.heartbeat() + sim.tick()
        answer(cmds, w, {"l0"})
        answer(cmds, v, {"v0"})
    started = next_start(sim, v, "v0")
    assert started != "l1", (
        f"v0 ends: v starts l1 from its queue {list(v.held)} though urgent-2 waited "
        f"at the admin for 3 s; places counted as being made: {sim.st.board._preempting}")
