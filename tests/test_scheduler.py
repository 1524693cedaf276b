"""Which ready task goes to which worker: the scheduling rules, checked without a network.

Ready tasks go by priority, then age; a worker is eligible when its role fits, its skill is at
least the task's difficulty and it has a free slot; among eligible workers the least skilled
wins (seniors stay free for hard tasks), then the least loaded.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from ceylon_net.core.scheduler import (
    ALONE,
    SLOT,
    Blocked,
    Scheduler,
    WorkerSlot,
    best_fit,
    can_do,
    role_fits,
)


def scheduler(*workers: WorkerSlot) -> Scheduler:
    s = Scheduler()
    for w in workers:
        s.add_worker(w)
    return s


# --------------------------------------------------------------------------- best fit


def test_least_skilled_capable_worker_wins():
    s = scheduler(WorkerSlot("Senior", 9), WorkerSlot("Junior", 3))
    s.push("sum", difficulty=2, role=None)

    assert s.assign() == [("sum", "Junior")]


def test_skill_equal_to_difficulty_is_enough():
    s = scheduler(WorkerSlot("Senior", 9), WorkerSlot("Mid", 5))
    s.push("t", difficulty=5, role=None)

    assert s.assign() == [("t", "Mid")]


def test_too_junior_worker_is_passed_over():
    s = scheduler(WorkerSlot("Junior", 3), WorkerSlot("Senior", 9))
    s.push("analysis", difficulty=5, role=None)

    assert s.assign() == [("analysis", "Senior")]


def test_seniors_stay_free_for_the_hard_tasks():
    s = scheduler(WorkerSlot("Senior", 9), WorkerSlot("Junior", 3))
    s.push("easy", 2, None)
    s.push("hard", 8, None)

    assert sorted(s.assign()) == [("easy", "Junior"), ("hard", "Senior")]


def test_among_equally_skilled_the_least_loaded_wins():
    busy = WorkerSlot("A", 5, capacity=4, running=2)  # half full
    idle = WorkerSlot("B", 5, capacity=2, running=0)
    assert best_fit([busy, idle], 3) is idle

    almost_full = WorkerSlot("C", 5, capacity=4, running=3)
    assert best_fit([almost_full, busy], 3) is busy


def test_load_is_measured_as_a_fraction_of_slots():
    # 2 of 10 slots used is lighter than 1 of 2, even though it is more tasks.
    big = WorkerSlot("Big", 5, capacity=10, running=2)
    small = WorkerSlot("Small", 5, capacity=2, running=1)

    assert best_fit([small, big], 1) is big


def test_a_queue_is_measured_in_rounds_of_slots_not_in_the_credit_fed_ahead():
    # Both full, 12 in flight on 8 slots each: a task queued on either starts after the same
    # wait, whatever credit each has (it differs with their measured pace).
    deep = WorkerSlot("A", 5, capacity=264, slots=8, running=12)
    shallow = WorkerSlot("B", 5, capacity=16, slots=8, running=11)

    assert best_fit([deep, shallow], 1) is shallow


def test_skill_beats_load():
    loaded_junior = WorkerSlot("Junior", 3, capacity=4, running=3)
    idle_senior = WorkerSlot("Senior", 9, capacity=4)

    assert best_fit([idle_senior, loaded_junior], 2) is loaded_junior


def test_name_breaks_exact_ties():
    assert best_fit([WorkerSlot("b", 5), WorkerSlot("a", 5)], 1).name == "a"


def test_full_or_incapable_workers_are_never_chosen():
    full = WorkerSlot("Full", 3, capacity=2, running=2)
    junior = WorkerSlot("Junior", 2)
    analyst = WorkerSlot("Analyst", 9, role="analyst")

    assert best_fit([full, junior], 3) is None
    assert best_fit([analyst], 3, "writer") is None
    assert best_fit([], 1) is None
    assert best_fit([WorkerSlot("Zero", 9, capacity=0)], 1) is None


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize(
    ("worker_role", "task_role", "fits"),
    [
        ("default", None, True),
        ("default", "default", True),
        ("default", "analyst", True),  # a default worker takes any role
        ("analyst", None, True),  # a task without a role fits everybody
        ("analyst", "default", True),
        ("analyst", "analyst", True),
        ("analyst", "writer", False),
        ("writer", "analyst", False),
        ("Analyst", "analyst", False),  # exact match
        ("analyst", "analyst ", False),
    ],
)
def test_role_fits(worker_role, task_role, fits):
    assert role_fits(worker_role, task_role) is fits
    assert can_do(WorkerSlot("w", 5, worker_role), 5, task_role) is fits
    assert can_do(WorkerSlot("w", 4, worker_role), 5, task_role) is False


def test_a_task_with_a_role_goes_to_that_role_even_if_more_skilled():
    s = scheduler(WorkerSlot("Writer", 2, "writer"), WorkerSlot("Analyst", 9, "analyst"))
    s.push("report", 1, "analyst")

    assert s.assign() == [("report", "Analyst")]


def test_a_default_worker_takes_a_role_nobody_else_has():
    s = scheduler(WorkerSlot("Writer", 2, "writer"), WorkerSlot("Generalist", 9))
    s.push("report", 1, "analyst")

    assert s.assign() == [("report", "Generalist")]


def test_role_default_and_no_role_are_the_same_class():
    s = Scheduler()
    s.push("a", 4, "default")
    s.push("b", 4, None)

    assert s.blocked() == [Blocked(4, None, ("a", "b"), None)]


# --------------------------------------------------------------------------- order


def test_priority_then_age_across_difficulty_classes():
    s = scheduler(WorkerSlot("w", 10, capacity=10))
    s.push("old-easy", 1, None, priority=0)
    s.push("old-hard", 9, None, priority=0)
    s.push("urgent-medium", 5, None, priority=2)
    s.push("urgent-easy", 1, None, priority=2)
    s.push("new-medium", 5, None, priority=0)
    s.push("whenever", 3, None, priority=-1)
    expected = ["urgent-medium", "urgent-easy", "old-easy", "old-hard", "new-medium", "whenever"]

    assert s.queued() == expected
    assert [task for task, _ in s.assign()] == expected


def test_one_slot_goes_to_the_highest_priority_task_whatever_its_class():
    s = scheduler(WorkerSlot("w", 10))
    s.push("low", 1, None, priority=1)
    s.push("high", 7, "analyst", priority=5)

    assert s.assign() == [("high", "w")]
    assert s.queued() == ["low"]


def test_one_slot_goes_to_the_oldest_task_among_equal_priorities():
    s = scheduler(WorkerSlot("w", 10))
    s.push("first", 8, None)
    s.push("second", 1, None)

    assert s.assign() == [("first", "w")]


def test_an_unplaceable_high_priority_task_does_not_block_the_rest():
    s = scheduler(WorkerSlot("Junior", 3))
    s.push("hard", 9, None, priority=10)
    s.push("easy", 1, None, priority=0)

    assert s.assign() == [("easy", "Junior")]
    assert s.queued() == ["hard"]


def test_a_task_waiting_for_a_busy_senior_does_not_block_a_free_junior():
    s = scheduler(WorkerSlot("Senior", 9, running=1), WorkerSlot("Junior", 3))
    s.push("hard", 8, None, priority=10)
    s.push("easy", 2, None)

    assert s.assign() == [("easy", "Junior")]
    s.release("Senior")
    assert s.assign() == [("hard", "Senior")]


def test_tasks_that_can_only_wait_in_queues_are_split_evenly_among_equal_workers():
    # No free slot anywhere: each worker queues its share, not the first one all of them
    # (tasks queued behind one worker's running ones while another could start them as soon).
    s = scheduler(*[WorkerSlot(f"w{i}", 5, capacity=100, slots=2, running=2) for i in range(4)])
    for i in range(40):
        s.push(i, 1, None)

    placed = s.assign()
    assert len(placed) == 40
    assert sorted(Counter(w for _, w in placed).values()) == [10, 10, 10, 10]


def test_queued_parts_are_whole_rounds_of_slots_the_rest_on_the_worker_served_first():
    # 200 tasks on 4 x 8 free slots: 50 each would make every worker run a seventh round
    # (50 = 6 x 8 + 2), and the run end with the last worker to start. In whole rounds, one
    # worker runs seven (the one sent to first, which starts first) and three run six.
    s = scheduler(*[WorkerSlot(f"w{i}", 5, capacity=1000, slots=8) for i in range(4)])
    for i in range(200):
        s.push(i, 1, None)

    placed = s.assign()
    parts = Counter(w for _, w in placed)
    assert len(placed) == 200
    assert sorted(parts.values()) == [48, 48, 48, 56]
    assert parts[placed[0][1]] == 56


def test_queued_parts_of_less_than_a_round_stay_spread_among_the_workers():
    # 40 tasks behind 4 x 100 busy slots: in whole rounds, one worker would queue all 40
    # while slots free on the others as soon.
    s = scheduler(*[WorkerSlot(f"w{i}", 5, capacity=1000, slots=100, running=100)
                    for i in range(4)])
    for i in range(40):
        s.push(i, 1, None)

    placed = s.assign()
    assert sorted(Counter(w for _, w in placed).values()) == [10, 10, 10, 10]


def test_a_task_that_needs_a_free_slot_holds_the_workers_that_could_give_it_one():
    # A "front" task (it was with a worker that died) goes only to a free slot. Younger tasks
    # do not queue on the workers that could take it, so their queues drain and a slot frees
    # for it; workers that could not take it are fed as usual.
    s = scheduler(WorkerSlot("Senior", 9, capacity=3, slots=1, running=1),
                  WorkerSlot("Junior", 3, capacity=3, slots=1, running=1))
    s.push("lost", 8, None, place=SLOT)
    for task in ("next-hard", "easy-1", "easy-2"):
        s.push(task, 8 if task == "next-hard" else 2, None)

    assert s.assign() == [("easy-1", "Junior"), ("easy-2", "Junior")]
    s.release("Senior")
    assert s.assign() == [("lost", "Senior"), ("next-hard", "Senior")]


@pytest.mark.parametrize("place, then", [
    (SLOT, [[("lost", "w"), ("later", "w")]]),  # a free slot: "later" queues behind it
    (ALONE, [[("lost", "w")], [("later", "w")]]),  # alone: "later" once it ended
])
def test_a_task_ahead_of_the_reserving_one_may_still_go_to_its_worker(place, then):
    s = scheduler(WorkerSlot("w", 5, capacity=3, slots=1, running=1))
    s.push("lost", 1, None, place=place)
    s.push("later", 1, None)
    s.push("urgent", 1, None, priority=5)

    assert s.assign() == [("urgent", "w")]  # ahead of "lost": queued as ever
    s.release("w", 2)
    for placed in then:
        assert s.assign() == placed
        s.release("w")


def test_a_task_on_its_last_attempt_runs_alone():
    # A task lost with workers until its next attempt is its last goes only to a worker with
    # nothing in flight, which gets nothing more until it ends: if it kills its worker again,
    # no other task is lost with it.
    s = scheduler(WorkerSlot("w", 5, capacity=4, slots=2))
    s.push("lost", 1, None, place=ALONE)
    for i in range(3):
        s.push(i, 1, None)

    assert s.assign() == [("lost", "w")]
    assert s.workers["w"].alone and s.workers["w"].room == 0
    assert s.assign() == []
    s.release("w")
    assert not s.workers["w"].alone
    assert s.assign() == [(0, "w"), (1, "w"), (2, "w")]


def test_a_task_to_run_alone_waits_for_an_idle_worker_not_a_free_slot():
    s = scheduler(WorkerSlot("busy", 5, capacity=4, slots=4, running=1),
                  WorkerSlot("idle", 9, capacity=4, slots=4))
    s.push("lost", 1, None, place=ALONE)
    s.push("next", 1, None)

    # The best fit (least skilled) has three free slots, but one task in flight.
    assert s.assign() == [("lost", "idle"), ("next", "busy")]


def test_a_task_waiting_to_run_alone_holds_one_worker_the_others_work_on():
    # While no worker is idle, one that could take it is held for it: it gets no younger
    # task, so it drains; the one with the least in flight is held, and the others (and
    # workers that could not take it) are fed as usual.
    s = scheduler(WorkerSlot("A", 9, capacity=3, slots=1, running=3),
                  WorkerSlot("B", 9, capacity=3, slots=1, running=2),
                  WorkerSlot("Junior", 3, capacity=3, slots=1, running=1))
    s.push("lost", 8, None, place=ALONE)
    for task in ("hard-1", "hard-2", "easy-1"):
        s.push(task, 8 if task.startswith("hard") else 2, None)

    assert s.assign() == [("easy-1", "Junior")]  # A is full, B (least in flight) held
    # B stays held though A now has less in flight: a hold that moved to whoever had least
    # at each look could keep every worker from draining.
    s.release("A", 2)
    assert s.assign() == [("hard-1", "A"), ("hard-2", "A")]
    s.release("B", 2)
    assert s.assign() == [("lost", "B")]
    assert s.workers["B"].alone


def test_when_the_held_worker_leaves_another_is_held_in_its_place():
    s = scheduler(WorkerSlot("A", 9, capacity=2, slots=1, running=1),
                  WorkerSlot("B", 9, capacity=3, slots=1, running=2))
    s.push("lost", 1, None, place=ALONE)
    s.push("later", 1, None)
    assert s.assign() == [("later", "B")]  # A (least in flight) is held
    s.remove_worker("A")
    s.push("later-2", 1, None)
    assert s.assign() == []  # B is held now
    s.release("B", 3)
    assert s.assign() == [("lost", "B")]


def test_what_a_worker_was_found_to_hold_sets_whether_it_runs_alone():
    s = scheduler(WorkerSlot("w", 5, capacity=4))
    v = s.version
    s.holds("w", 1, alone=True)
    assert (s.workers["w"].running, s.workers["w"].alone, s.workers["w"].room) == (1, True, 0)
    assert s.version > v
    s.holds("w", 0, alone=True)  # nothing in flight: nothing runs alone
    assert (s.workers["w"].running, s.workers["w"].alone) == (0, False)
    s.holds("gone", 3, alone=False)  # unknown worker: nothing to do


def test_a_role_task_without_its_worker_does_not_block_the_rest():
    s = scheduler(WorkerSlot("Writer", 5, "writer"))
    s.push("analysis", 1, "analyst", priority=3)
    s.push("essay", 1, "writer")

    assert s.assign() == [("essay", "Writer")]
    assert s.queued() == ["analysis"]


def test_requeue_with_the_age_stamp_keeps_the_place():
    s = scheduler(WorkerSlot("w", 10))
    stamp = s.push("a", 1, None)
    s.push("b", 1, None)
    assert s.assign() == [("a", "w")]

    s.release("w")
    s.push("a", 1, None, seq=stamp)  # the worker left: back to where it was
    assert s.queued() == ["a", "b"]


def test_queued_does_not_change_the_queue():
    s = scheduler(WorkerSlot("w", 10, capacity=3))
    for i, difficulty in enumerate([3, 1, 2]):
        s.push(i, difficulty, None)

    assert s.queued() == s.queued() == [0, 1, 2]
    assert len(s) == 3
    assert [t for t, _ in s.assign()] == [0, 1, 2]
    assert s.queued() == []


def test_mixed_int_and_string_ids_queue_together():
    s = scheduler(WorkerSlot("w", 10, capacity=3))
    s.push(1, 1, None)
    s.push("1", 1, None)
    s.push(2, 1, None)

    assert s.queued() == [1, "1", 2]
    assert s.assign() == [(1, "w"), ("1", "w"), (2, "w")]


# --------------------------------------------------------------------------- capacity


def test_assign_fills_every_free_slot_and_no_more():
    s = scheduler(WorkerSlot("A", 5, capacity=2), WorkerSlot("B", 5, capacity=3))
    for i in range(10):
        s.push(i, 1, None)

    decisions = s.assign()
    assert len(decisions) == 5
    assert {w: sum(1 for _, n in decisions if n == w) for w in "AB"} == {"A": 2, "B": 3}
    assert s.workers["A"].free == s.workers["B"].free == 0
    assert s.assign() == []
    assert len(s) == 5


def test_release_frees_slots_and_never_goes_below_zero():
    s = scheduler(WorkerSlot("w", 5, capacity=3, running=3))
    s.release("w", 2)
    assert s.workers["w"].running == 1
    s.release("w", 5)
    assert s.workers["w"].running == 0
    s.release("gone")  # unknown worker: nothing to do
    assert list(s.workers) == ["w"]


def test_remove_worker():
    slot = WorkerSlot("w", 5)
    s = scheduler(slot)
    s.push("t", 1, None)

    assert s.remove_worker("w") is slot
    assert s.remove_worker("w") is None
    assert s.assign() == []
    assert s.queued() == ["t"]


# --------------------------------------------------------------------------- discard / push


def test_discard():
    s = scheduler(WorkerSlot("w", 10, capacity=5))
    s.push("a", 1, None)
    s.push("b", 2, None)
    s.push("c", 1, None)

    assert s.discard("a") is True
    assert s.discard("a") is False
    assert s.discard("never-queued") is False
    assert "a" not in s and "b" in s
    assert len(s) == 2
    assert s.queued() == ["b", "c"]
    assert s.assign() == [("b", "w"), ("c", "w")]


def test_discarding_a_whole_class_removes_it_from_blocked():
    s = scheduler(WorkerSlot("Junior", 3))
    s.push("hard", 9, None)
    assert [b.tasks for b in s.blocked()] == [("hard",)]

    s.discard("hard")
    assert s.blocked() == []
    assert s.assign() == []


def test_push_of_a_queued_task_raises():
    s = Scheduler()
    s.push("a", 1, None)

    with pytest.raises(ValueError, match=r"^task 'a' is already queued$"):
        s.push("a", 5, "analyst", priority=9)
    assert s.queued() == ["a"]


def test_a_task_can_be_queued_again_once_assigned():
    s = scheduler(WorkerSlot("w", 5))
    s.push("a", 1, None)
    assert s.assign() == [("a", "w")]

    s.push("a", 1, None)
    assert s.queued() == ["a"]


def test_a_discarded_task_queued_again_is_queued_once():
    s = Scheduler()
    s.push("a", 1, None)
    s.discard("a")
    s.push("a", 1, None)

    assert len(s) == 1
    assert s.queued() == ["a"]
    assert s.blocked() == [Blocked(1, None, ("a",), None)]


def test_a_discarded_task_queued_again_takes_its_new_priority():
    s = scheduler(WorkerSlot("w", 5))
    s.push("a", 1, None, priority=5)
    s.push("b", 1, None, priority=1)
    s.discard("a")
    s.push("a", 1, None, priority=0)

    assert s.queued() == ["b", "a"]
    assert s.assign() == [("b", "w")]


# --------------------------------------------------------------------------- blocked


def test_blocked_reports_what_no_connected_worker_can_do():
    s = scheduler(WorkerSlot("Writer", 3, "writer"), WorkerSlot("Analyst", 5, "analyst"))
    s.push("x", 7, None)
    s.push("ok", 1, None)
    s.push("z", 2, "translator")
    s.push("x2", 7, None)
    s.push("y", 7, None, priority=1)
    s.push("q", 9, "analyst")

    assert sorted(s.blocked(), key=lambda b: b.difficulty) == [
        Blocked(2, "translator", ("z",), None),  # nobody has the role
        Blocked(7, None, ("y", "x", "x2"), 5),  # queue order; best skill of any role
        Blocked(9, "analyst", ("q",), 5),  # best skill among analysts
    ]


def test_blocked_names_tasks_of_one_kind_once_those_that_run_alone_among_them():
    s = scheduler(WorkerSlot("Junior", 3))
    s.push("new", 7, None)
    s.push("lost", 7, None, seq=-1, place=ALONE)  # (lost with a worker: older, alone)
    s.push("stolen", 7, None, trusted=True)

    assert s.blocked() == [Blocked(7, None, ("lost", "new", "stolen"), 3)]


def test_blocked_ignores_load():
    s = scheduler(WorkerSlot("Senior", 9, running=1))
    s.push("hard", 8, None)

    assert s.assign() == []
    assert s.blocked() == []


def test_blocked_best_skill_counts_default_role_workers():
    s = scheduler(WorkerSlot("Generalist", 4), WorkerSlot("Writer", 8, "writer"))
    s.push("deep-analysis", 6, "analyst")

    assert s.blocked() == [Blocked(6, "analyst", ("deep-analysis",), 4)]


def test_everything_is_blocked_without_workers():
    s = Scheduler()
    s.push("a", 1, None)

    assert s.blocked() == [Blocked(1, None, ("a",), None)]
    s.add_worker(WorkerSlot("w", 1))
    assert s.blocked() == []


# --------------------------------------------------------------------------- any sequence


NAMES = ["w0", "w1", "w2", "w3"]
ROLES = [None, "default", "analyst", "writer"]
WORKER_ROLES = ["default", "analyst", "writer"]


class SchedulerMachine(RuleBasedStateMachine):
    """Any mix of joins, leaves, pushes, discards, assigns and completions keeps the rules;
    tasks lost with a worker (to a free slot only, or alone) among them."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler()
        self.queued: dict[int, tuple[int, str | None, int, int]] = {}  # id -> (d, role, p, seq)
        self.running: dict[str, list[int]] = {}
        self.taken: dict[int, tuple[int, str | None, int, int]] = {}  # assigned: as queued
        self.place: dict[int, int] = {}  # tasks that go to a free slot only, or alone
        self.next_id = 0

    @rule(name=st.sampled_from(NAMES), skill=st.integers(0, 10),
          role=st.sampled_from(WORKER_ROLES), capacity=st.integers(1, 3),
          queue=st.integers(0, 2))
    def join(self, name, skill, role, capacity, queue):
        """``queue``: of its capacity, how many wait in its queue (slots: the rest)."""
        if name not in self.running:
            self.s.add_worker(WorkerSlot(name, skill, role, capacity,
                                         slots=max(1, capacity - queue)))
            self.running[name] = []

    @rule(name=st.sampled_from(NAMES))
    def leave(self, name):
        slot = self.s.remove_worker(name)
        assert (slot is None) == (name not in self.running)
        self.running.pop(name, None)

    @rule(target=tasks, difficulty=st.integers(1, 10), role=st.sampled_from(ROLES),
          priority=st.integers(-2, 2))
    def push(self, difficulty, role, priority):
        task, self.next_id = self.next_id, self.next_id + 1
        seq = self.s.push(task, difficulty, role, priority)
        self.queued[task] = (difficulty, role, priority, seq)
        return task

    @rule(task=consumes(tasks))
    def discard(self, task):
        assert self.s.discard(task) == (task in self.queued)
        self.queued.pop(task, None)

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def complete(self, data):
        name = data.draw(st.sampled_from(sorted(n for n, r in self.running.items() if r)))
        self.taken.pop(self.running[name].pop(0))
        self.s.release(name)

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def requeue(self, data):
        """A task back in the queue with its old age stamp (its worker was lost): out of
        the order new tasks come in."""
        name = data.draw(st.sampled_from(sorted(n for n, r in self.running.items() if r)))
        task = self.running[name].pop(data.draw(st.integers(0, len(self.running[name]) - 1)))
        self.s.release(name)
        difficulty, role, priority, seq = self.taken.pop(task)
        # Lost with its worker: from now on to a free slot only, alone on its last attempt.
        place = data.draw(st.sampled_from([0, SLOT, ALONE]))
        self.place[task] = max(place, self.place.get(task, 0))
        assert self.s.push(task, difficulty, role, priority, seq=seq,
                           place=self.place[task]) == seq
        self.queued[task] = (difficulty, role, priority, seq)

    @rule()
    def assign(self):
        before = {n: WorkerSlot(w.name, w.skill, w.role, w.capacity, w.running, slots=w.slots,
                                alone=w.alone) for n, w in self.s.workers.items()}
        decisions = self.s.assign()
        decided = {task for task, _ in decisions}
        left = {t: q for t, q in self.queued.items() if t not in decided}
        # Tasks left waiting for a free slot or to run alone hold workers (they drain for
        # them): every worker that could take a SLOT one, one worker for an ALONE one (the
        # scheduler says which). Only tasks ahead of such a task may go to those.
        waiting = {t: self.place[t] for t in left if self.place.get(t)}
        held = set(self.s.held)
        assert len(held) <= sum(p == ALONE for p in waiting.values()), (held, waiting)

        def reserved(priority: int, seq: int) -> set[str]:
            return {w.name for w in before.values() for u, place in waiting.items()
                    if (-left[u][2], left[u][3]) < (-priority, seq)
                    and can_do(w, *left[u][:2]) and (place == SLOT or w.name in held)}

        order = []
        for task, name in decisions:
            difficulty, role, priority, seq = self.taken[task] = self.queued.pop(task)
            chosen, not_to = before[name], reserved(priority, seq)
            place = self.place.get(task, 0)
            if place == ALONE:  # to an idle worker, the best fit of those
                assert chosen.running == 0 and not self.running[name], (task, name)
                assert best_fit(before.values(), difficulty, role, place=ALONE,
                                reserved=not_to) is chosen
                chosen.alone = True
            elif place == SLOT:  # to a free slot: the best fit of those
                assert chosen.running < chosen.slots, (task, name)
                assert best_fit(before.values(), difficulty, role, place=SLOT,
                                reserved=not_to) is chosen
            else:
                # The best fit; or, in a run of one class to one worker, a free slot of it
                # (the task starts at once there as anywhere: see Scheduler.assign).
                free_slot = chosen.running < chosen.slots and can_do(chosen, difficulty, role)
                assert free_slot or best_fit(before.values(), difficulty, role,
                                             reserved=not_to) is chosen
            assert name not in not_to, (task, name, not_to)
            before[name].running += 1
            self.running[name].append(task)
            order.append((-priority, seq))
        assert order == sorted(order), "decisions go best task first"
        # Nothing placeable is left behind but on workers held for a task ahead of it.
        workers = self.s.workers.values()
        for t, (difficulty, role, priority, seq) in left.items():
            assert best_fit(workers, difficulty, role, place=self.place.get(t, 0),
                            reserved=reserved(priority, seq)) is None, t

    @invariant()
    def capacity_is_never_exceeded(self):
        for name, slot in self.s.workers.items():
            assert 0 <= slot.running <= slot.capacity
            assert slot.running == len(self.running[name])

    @invariant()
    def a_task_lost_with_a_worker_runs_alone(self):
        for name, slot in self.s.workers.items():
            alone = [t for t in self.running[name] if self.place.get(t) == ALONE]
            assert slot.alone == bool(alone), (name, self.running[name])
            assert not alone or len(self.running[name]) == 1, (name, self.running[name])

    @invariant()
    def queue_matches_the_model(self):
        expected = sorted(self.queued, key=lambda t: (-self.queued[t][2], self.queued[t][3]))
        assert self.s.queued() == expected
        assert len(self.s) == len(self.queued)

    @invariant()
    def blocked_is_exactly_what_nobody_can_do(self):
        workers = list(self.s.workers.values())
        expected: dict[tuple[int, str | None], list[int]] = {}
        for t in self.s.queued():
            d, role, _, _ = self.queued[t]
            if not any(can_do(w, d, role) for w in workers):
                expected.setdefault((d, None if role == "default" else role), []).append(t)
        got = {(b.difficulty, b.role): list(b.tasks) for b in self.s.blocked()}
        assert got == expected
        for b in self.s.blocked():
            fitting = [w.skill for w in workers if role_fits(w.role, b.role)]
            assert b.best_skill == max(fitting, default=None)


SchedulerMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=30, deadline=None
)
TestSchedulerRules = SchedulerMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([None, "a"]),
                                           st.integers(-1, 1)), max_size=12), max_size=5),
       dropped=st.sets(st.integers(0, 60)))
def test_queueing_many_new_tasks_at_once_is_the_same_as_one_by_one(batches, dropped):
    """push_new (a large submission) and push (one task) leave the same queue: the same
    tasks go to the same workers in the same order; and so does push_run, for a batch whose
    tasks share a class and a priority (in order after the class's newest, or not)."""
    one, many, runs = Scheduler(), Scheduler(), Scheduler()
    n = 0
    for batch in batches:
        items = []
        for difficulty, role, priority in batch:
            one.push(n, difficulty, role, priority)
            items.append((n, difficulty, role, priority, None))
            n += 1
        many.push_new(items)
        if items and len({item[1:] for item in items}) == 1:
            _, difficulty, role, priority, _ = items[0]
            stamps = runs.push_run([item[0] for item in items], difficulty, role, priority)
            assert list(stamps) == list(range(n - len(items), n))
        else:
            runs.push_new(items)
    for task in dropped:
        assert one.discard(task) == many.discard(task) == runs.discard(task)
    assert one.queued() == many.queued() == runs.queued()
    for s in (one, many, runs):
        s.add_worker(WorkerSlot("a", 3, "a", capacity=7, slots=2))
        s.add_worker(WorkerSlot("b", 2, capacity=5))
    assert one.assign() == many.assign() == runs.assign()


def test_a_run_of_tasks_already_queued_is_refused_whole():
    s = Scheduler()
    s.push_run([1, 2], 1, None)
    with pytest.raises(ValueError, match="task 2 is already queued"):
        s.push_run([3, 2, 4], 1, None)
    assert s.queued() == [1, 2]
