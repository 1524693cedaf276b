"""The admin's bookkeeping: a task is queued, in flight on exactly one worker, or finished.

Results that arrive late, twice, or from the wrong worker are acknowledged and ignored; a worker
that leaves gives its tasks back to the queue at their old place.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ceylon_net.core.board import FINISHED, TaskBoard
from ceylon_net.core.restore import JournaledTask
from ceylon_net.core.scheduler import ALONE, Blocked, WorkerSlot
from ceylon_net.core.tasks import RunReport, Task, TaskAssignment, TaskResult, TaskStatus
from ceylon_net.core.workers import WorkerState
from ceylon_net.errors import ConfigError

SIMPLE = Task(1, "Simple calculation", difficulty=2)
ANALYSIS = Task(2, "Data analysis", difficulty=5)
RESEARCH = Task(3, "Complex research", difficulty=8)


def board(tasks=(), *workers: WorkerSlot) -> TaskBoard:
    b = TaskBoard()
    b.add(list(tasks))
    for w in workers:
        b.add_worker(w)
    return b


def done(task: Task, worker: str, attempt: int = 1, success: bool = True, **kw) -> TaskResult:
    return TaskResult(task.id, worker, success, attempt=attempt, **kw)


# --------------------------------------------------------------------------- add / plan / record


def test_add_queues_tasks_as_pending():
    b = board([SIMPLE, ANALYSIS])

    assert b.open == 2
    assert b.running == 0
    assert b.queued() == [1, 2]
    assert [r.status for r in b.records.values()] == [TaskStatus.PENDING] * 2


def test_adding_no_tasks_changes_nothing():
    """run_tasks() with nothing new (it waits for what was submitted before) adds an empty
    list: the bulk path read its first task and raised IndexError."""
    board = TaskBoard()
    board.add([Task(1, "a")])
    board.add([])
    assert list(board.records) == [1] and board.open == 1 and len(board.scheduler) == 1


def test_plan_assigns_and_groups_by_worker():
    b = board([SIMPLE, ANALYSIS, RESEARCH], WorkerSlot("Junior", 3), WorkerSlot("Senior", 9))

    plan = b.plan()

    assert plan == {
        "Junior": [TaskAssignment(SIMPLE, "Junior", 1)],
        "Senior": [TaskAssignment(ANALYSIS, "Senior", 1)],
    }
    assert b.records[1].status is TaskStatus.ASSIGNED
    assert (b.records[2].worker, b.records[2].attempt) == ("Senior", 1)
    assert b.in_flight("Senior") == {2}
    assert b.in_flight("nobody") == set()
    assert b.running == 2
    assert b.queued() == [3]
    assert b.open == 3
    assert b.plan() == {}  # every slot taken


def test_record_completes_and_frees_the_slot():
    b = board([ANALYSIS, RESEARCH], WorkerSlot("Senior", 9))
    b.plan()

    rec = b.record(done(ANALYSIS, "Senior", seconds=1.5))

    assert rec is b.records[2]
    assert rec.status is TaskStatus.COMPLETED
    assert rec.result == done(ANALYSIS, "Senior", seconds=1.5)
    assert b.open == 1
    assert b.running == 0
    assert b.scheduler.workers["Senior"].running == 0
    assert b.plan() == {"Senior": [TaskAssignment(RESEARCH, "Senior", 1)]}


def test_a_failed_result_finishes_the_task_as_failed():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()

    rec = b.record(done(SIMPLE, "Junior", success=False, error="ZeroDivisionError"))

    assert rec.status is TaskStatus.FAILED
    assert rec.result.error == "ZeroDivisionError"
    assert b.open == 0


def test_capacity_lets_a_worker_take_several_tasks():
    b = board([SIMPLE, ANALYSIS, RESEARCH], WorkerSlot("Senior", 9, capacity=2))

    assert [a.task.id for a in b.plan()["Senior"]] == [1, 2]
    assert b.in_flight("Senior") == {1, 2}


# --------------------------------------------------------------------------- duplicates


def test_a_duplicate_id_already_known_is_refused():
    b = board([SIMPLE])

    with pytest.raises(ConfigError, match=r"^duplicate task id 1 \(the admin has one already, "
                       r"finished or not: it keeps finished ones up to its --keep-finished\)$"):
        b.add([Task(9, "new"), Task(1, "again")])
    assert list(b.records) == [1]  # refused whole: task 9 was not added either
    assert b.queued() == [1]
    assert b.open == 1


def test_a_duplicate_id_within_a_batch_is_refused():
    b = TaskBoard()

    with pytest.raises(ConfigError, match=r"^duplicate task id 'b'$"):
        b.add([Task("a", "x"), Task("b", "y"), Task("c", "z"), Task("b", "w")])
    assert b.records == {}
    assert b.open == 0


def test_int_and_string_ids_are_different_tasks():
    b = board([Task(1, "int"), Task("1", "str")])

    assert b.queued() == [1, "1"]


# --------------------------------------------------------------------------- stale results


def test_results_for_unknown_tasks_are_ignored():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()

    assert b.record(TaskResult(99, "Junior", True)) is None
    assert b.open == 1


def test_a_result_from_the_wrong_worker_is_ignored():
    b = board([SIMPLE], WorkerSlot("Junior", 3), WorkerSlot("Senior", 9))
    b.plan()

    assert b.record(done(SIMPLE, "Senior")) is None
    assert b.records[1].status is TaskStatus.ASSIGNED
    assert b.in_flight("Junior") == {1}
    assert b.scheduler.workers["Junior"].running == 1
    assert b.record(done(SIMPLE, "Junior")) is not None


def test_a_result_for_another_attempt_is_ignored():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()

    assert b.record(done(SIMPLE, "Junior", attempt=2)) is None
    assert b.record(done(SIMPLE, "Junior", attempt=0)) is None
    assert b.records[1].status is TaskStatus.ASSIGNED
    assert b.open == 1


def test_a_result_for_a_queued_task_is_ignored():
    b = board([SIMPLE])

    assert b.record(done(SIMPLE, "Junior")) is None
    assert b.records[1].status is TaskStatus.PENDING


def test_a_second_result_does_not_count_twice():
    b = board([SIMPLE, ANALYSIS], WorkerSlot("Senior", 9, capacity=2))
    b.plan()

    assert b.record(done(SIMPLE, "Senior")) is not None
    assert b.record(done(SIMPLE, "Senior")) is None
    assert b.record(done(SIMPLE, "Senior", success=False)) is None

    assert b.records[1].status is TaskStatus.COMPLETED
    assert b.open == 1
    assert b.finished_order == [1]
    assert b.scheduler.workers["Senior"].running == 1  # ANALYSIS still holds its slot
    assert len(b.report().tasks) == 1


# --------------------------------------------------------------------------- workers leaving


def test_remove_worker_requeues_in_flight_tasks_at_their_place():
    first, second, third = Task("a", "1"), Task("b", "2"), Task("c", "3")
    b = board([first, second, third], WorkerSlot("Senior", 9, capacity=2))
    b.plan()

    assert b.remove_worker("Senior") == ["a", "b"]

    assert b.queued() == ["a", "b", "c"]
    for tid in ("a", "b"):
        assert b.records[tid].status is TaskStatus.PENDING
        assert b.records[tid].worker is None
    assert b.running == 0
    assert b.open == 3
    assert "Senior" not in b.scheduler.workers


def test_a_requeued_task_goes_before_younger_tasks_of_the_same_priority():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()
    b.add([Task(4, "later", difficulty=2)])

    b.remove_worker("Junior")
    b.add_worker(WorkerSlot("Other", 3))

    assert b.plan() == {"Other": [TaskAssignment(SIMPLE, "Other", 2)]}


def test_reassignment_increments_the_attempt_and_old_results_are_stale():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()
    b.remove_worker("Junior")
    b.add_worker(WorkerSlot("Junior", 3))  # the same name comes back

    assert b.plan() == {"Junior": [TaskAssignment(SIMPLE, "Junior", 2)]}
    assert b.record(done(SIMPLE, "Junior", attempt=1)) is None
    assert b.records[1].status is TaskStatus.ASSIGNED
    assert b.record(done(SIMPLE, "Junior", attempt=2)).status is TaskStatus.COMPLETED


def test_a_late_result_for_a_lost_task_still_queued_is_taken_instead_of_a_rerun():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()
    b.remove_worker("Junior")
    assert b.queued() == [1]

    assert b.record(done(SIMPLE, "Junior")).status is TaskStatus.COMPLETED
    assert b.queued() == []
    assert b.open == 0
    assert b.plan() == {}


def test_a_result_for_a_queued_task_from_a_worker_never_given_it_is_ignored():
    """A registered worker could end any queued task with a RESULT of its own making (attempt
    0 for one never sent; the attempt lost with another worker for one back in the queue),
    past the skill, role and handler the task needs (a review of hostile peers: a skill-0
    worker's forged value reached the client's future)."""
    hard = Task(1, "hard", 9)
    b = board([hard], WorkerSlot("Junior", 3))
    assert b.plan() == {}  # (too hard for it: it stays queued)
    assert b.record(done(hard, "Junior", attempt=0)) is None
    b.add_worker(WorkerSlot("Senior", 9))
    assert b.plan() == {"Senior": [TaskAssignment(hard, "Senior", 1)]}
    b.remove_worker("Senior")  # (lost with it: back in the queue)
    assert b.queued() == [1]
    assert b.record(done(hard, "Junior", attempt=1)) is None
    assert (b.queued(), b.open) == ([1], 1)
    assert b.record(done(hard, "Senior", attempt=1)).status is TaskStatus.COMPLETED


def test_a_result_for_a_task_taken_back_on_probation_and_still_queued_is_taken():
    """A worker on probation that had not confirmed its task had it taken back; it had
    started it after all: its result is the task's, no rerun. (The check above read what
    trust() forgets as the result comes: the result was dropped, the task run again: a
    review of that check.)"""
    b = TaskBoard()
    b.add([Task(0, "t", 5)])
    b.add_worker(WorkerSlot("slow", 9), probation=True)
    b.plan(now=0.0)
    assert b.steal("slow", [(0, 1)]) == [(0, 1)]
    assert b.queued() == [0]
    assert b.record(TaskResult(0, "slow", True, attempt=1)).status is TaskStatus.COMPLETED


def test_a_result_for_a_task_given_up_on_unheard_and_still_queued_is_taken():
    """A task a worker's heartbeats did not list was asked back, then given up on (queued
    again): its assignment was only late, the worker ran it, and its result comes while the
    task waits in the queue: taken, no rerun (the same review)."""
    b = TaskBoard()
    b.add([Task(0, "t", 5)])
    b.add_worker(WorkerSlot("late", 9, answers_unheld=True))
    b.plan(now=0.0)
    b.now = 10.0
    assert b.reclaim("late", {}, assigned_before=5.0, give_up_before=-1.0) == ([], [])
    b.now = 20.0
    assert b.reclaim("late", {}, assigned_before=15.0, give_up_before=15.0)[0] == [0]
    assert b.queued() == [0]
    assert b.record(TaskResult(0, "late", True, attempt=1)).status is TaskStatus.COMPLETED


def test_a_late_result_for_a_lost_task_given_to_another_worker_is_ignored():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    b.plan()
    b.remove_worker("Junior")
    b.add_worker(WorkerSlot("Senior", 9))
    b.plan()

    assert b.record(done(SIMPLE, "Junior")) is None
    assert b.records[1].worker == "Senior"
    assert b.open == 1


def test_removing_an_unknown_or_idle_worker_changes_nothing():
    b = board([SIMPLE], WorkerSlot("Idle", 1))

    assert b.remove_worker("Idle") == []
    assert b.remove_worker("ghost") == []
    assert b.queued() == [1]


# --------------------------------------------------------------------------- undelivered


def test_unsent_assignments_go_back_to_the_queue():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    plan = b.plan()

    b.unsent("Junior", plan["Junior"])

    rec = b.records[1]
    assert (rec.status, rec.worker, rec.attempt) == (TaskStatus.PENDING, None, 0)
    assert b.queued() == [1]
    assert b.running == 0
    assert b.scheduler.workers["Junior"].running == 0
    assert b.plan() == {}  # not to it again until it is heard from (gone, or not reading)
    b.heard("Junior")
    (again,) = b.plan()["Junior"]  # attempt 1 again; on probation, it is to confirm it
    assert (again.task, again.attempt, again.confirm) == (plan["Junior"][0].task, 1, True)


def test_a_worker_that_could_not_be_sent_to_and_connects_anew_is_reached():
    b = board([SIMPLE], WorkerSlot("w", 3))
    b.unsent("w", b.plan()["w"])
    assert b.plan() == {}
    b.add_worker(WorkerSlot("w", 3), probation=True)  # (registered again: a new connection)
    b.validate()
    assert [a.task.id for a in b.plan()["w"]] == [SIMPLE.id]


def test_unsent_assignments_keep_their_place():
    first, second = Task("a", "1"), Task("b", "2")
    b = board([first, second], WorkerSlot("w", 5))
    plan = b.plan()

    b.unsent("w", plan["w"])

    assert b.queued() == ["a", "b"]
    b.heard("w")
    b.trust("w")  # (heard, it is on probation: one task until it answers one)
    assert b.plan() == plan


def test_unsent_keeps_the_place_of_a_reassigned_task():
    first, second = Task("a", "1"), Task("b", "2")
    b = board([first, second], WorkerSlot("w", 5))
    b.plan()
    b.remove_worker("w")
    b.add_worker(WorkerSlot("w", 5))
    plan = b.plan()
    assert plan == {"w": [TaskAssignment(first, "w", 2)]}

    b.unsent("w", plan["w"])

    assert b.queued() == ["a", "b"]
    assert b.records["a"].attempt == 1


def test_unsent_ignores_assignments_no_longer_in_flight():
    b = board([SIMPLE], WorkerSlot("Junior", 3))
    plan = b.plan()
    b.record(done(SIMPLE, "Junior"))

    b.unsent("Junior", plan["Junior"])

    assert b.records[1].status is TaskStatus.COMPLETED
    assert b.queued() == []
    assert b.open == 0


# --------------------------------------------------------------------------- giving up


def test_give_up_cancels_queued_tasks_nobody_can_take():
    b = board([SIMPLE, RESEARCH], WorkerSlot("Junior", 3))
    b.plan()
    assert b.blocked() == [Blocked(8, None, (3,), 3)]

    b.give_up([3])

    assert b.records[3].status is TaskStatus.CANCELLED
    assert b.queued() == []
    assert b.blocked() == []
    assert b.open == 1


def test_give_up_ignores_tasks_in_flight_or_finished():
    b = board([SIMPLE, ANALYSIS], WorkerSlot("Senior", 9, capacity=2))
    b.plan()
    b.record(done(SIMPLE, "Senior"))

    b.give_up([1, 2, 2])

    assert b.records[1].status is TaskStatus.COMPLETED
    assert b.records[2].status is TaskStatus.ASSIGNED
    assert b.open == 1


def test_give_up_twice_counts_once():
    b = board([SIMPLE, RESEARCH])

    b.give_up([3])
    b.give_up([3])

    assert b.open == 1


# --------------------------------------------------------------------------- report


def test_report_lists_outcomes_in_the_order_they_finished():
    b = board([SIMPLE, ANALYSIS, RESEARCH], WorkerSlot("Senior", 9, capacity=3))
    b.plan()
    b.record(done(RESEARCH, "Senior", seconds=3.0))
    b.record(done(SIMPLE, "Senior", success=False, seconds=0.5, error="boom"))
    b.record(done(ANALYSIS, "Senior", seconds=2.0))

    report = b.report(unassigned=[7])

    assert [(o.id, o.success, o.worker, o.seconds, o.error) for o in report.tasks] == [
        (3, True, "Senior", 3.0, None),
        (1, False, "Senior", 0.5, "boom"),
        (2, True, "Senior", 2.0, None),
    ]
    first = report.tasks[0]
    assert (first.description, first.difficulty) == ("Complex research", 8)
    assert report.success_rate == pytest.approx(2 / 3)
    assert report.unassigned == [7]


def test_a_report_made_before_the_end_names_the_tasks_not_finished():
    b = board([SIMPLE, ANALYSIS, RESEARCH, Task(4, "after", depends_on=[3])],
              WorkerSlot("Senior", 9))
    b.plan()
    b.record(done(SIMPLE, "Senior"))
    b.plan()

    assert b.report().unfinished == [2, 3, 4]  # on the worker, queued, waiting
    assert b.report(only=[4, 1]).unfinished == [4]
    assert RunReport.from_json(b.report().to_json()).unfinished == [2, 3, 4]
    b2 = board([SIMPLE], WorkerSlot("Senior", 9))
    b2.plan()
    b2.record(done(SIMPLE, "Senior"))
    assert "unfinished" not in b2.report().to_json()  # a run that ended: as before


def test_report_of_nothing():
    report = board([SIMPLE]).report()

    assert report.tasks == []
    assert report.success_rate is None
    assert report.unassigned == []


# --------------------------------------------------------------------------- any sequence


class BoardMachine(RuleBasedStateMachine):
    """Whatever happens, every task is in exactly one place and every count agrees."""

    def __init__(self) -> None:
        super().__init__()
        self.b = TaskBoard()
        self.next_id = 0
        self.results: list[TaskResult] = []  # every result ever seen, for replays
        self.recorded: set = set()

    @rule(difficulty=st.integers(1, 10), role=st.sampled_from([None, "analyst"]),
          priority=st.integers(0, 2), count=st.integers(1, 3))
    def add(self, difficulty, role, priority, count):
        tasks = []
        for _ in range(count):
            tasks.append(Task(self.next_id, "t", difficulty, role, priority))
            self.next_id += 1
        self.b.add(tasks)

    @precondition(lambda self: self.b.records)
    @rule(data=st.data())
    def add_a_duplicate(self, data):
        dup = data.draw(st.sampled_from(sorted(self.b.records)))
        before = dict(self.b.records)
        with pytest.raises(ConfigError):
            self.b.add([Task(self.next_id, "new"), Task(dup, "again")])
        assert self.b.records == before

    @rule(name=st.sampled_from(["w0", "w1", "w2"]), skill=st.integers(1, 10),
          role=st.sampled_from(["default", "analyst", "writer"]), capacity=st.integers(1, 3))
    def join(self, name, skill, role, capacity):
        if name not in self.b.scheduler.workers:
            self.b.add_worker(WorkerSlot(name, skill, role, capacity))

    @rule(name=st.sampled_from(["w0", "w1", "w2"]))
    def leave(self, name):
        flying = set(self.b.in_flight(name))
        assert set(self.b.remove_worker(name)) == flying
        self.recorded |= flying & set(self.b.dead)  # lost with its worker max_attempts times

    @rule(data=st.data())
    def plan(self, data):
        plan = self.b.plan()
        for worker, assignments in plan.items():
            for a in assignments:
                assert a.worker == worker
                assert a.attempt == self.b.records[a.task.id].attempt
        # Some deliveries fail (the worker's socket is gone): those go back to the queue.
        failed = data.draw(st.sets(st.sampled_from(sorted(plan))) if plan else st.just(set()))
        for worker, assignments in plan.items():
            if worker in failed:
                self.b.unsent(worker, assignments)
                for a in assignments:
                    assert self.b.records[a.task.id].attempt == a.attempt - 1
            else:
                self.b.delivered(assignments)
                for a in assignments:
                    assert self.b.records[a.task.id].status is TaskStatus.RUNNING

    @precondition(lambda self: self.b.running)
    @rule(data=st.data(), success=st.booleans())
    def result(self, data, success):
        flying = sorted((w, t) for w in self.b.scheduler.workers for t in self.b.in_flight(w))
        worker, task_id = data.draw(st.sampled_from(flying))
        res = TaskResult(task_id, worker, success, attempt=self.b.records[task_id].attempt)
        self.results.append(res)
        assert self.b.record(res) is self.b.records[task_id]
        self.recorded.add(task_id)

    @precondition(lambda self: self.results)
    @rule(data=st.data())
    def replay(self, data):
        res = data.draw(st.sampled_from(self.results))
        open_before = self.b.open
        assert self.b.record(res) is None
        assert self.b.open == open_before

    @precondition(lambda self: self.b.blocked())
    @rule()
    def give_up_on_blocked(self):
        self.b.give_up([t for blocked in self.b.blocked() for t in blocked.tasks])
        assert self.b.blocked() == []

    @invariant()
    def every_task_is_in_exactly_one_place(self):
        queued = self.b.queued()
        assert len(queued) == len(set(queued))
        flying = [t for w in self.b.scheduler.workers for t in self.b.in_flight(w)]
        assert len(flying) == len(set(flying))
        assert self.b.running == len(flying)  # nothing in flight on a worker that left
        for task_id, rec in self.b.records.items():
            places = [task_id in queued, task_id in flying, rec.status in FINISHED]
            assert places.count(True) == 1, (task_id, rec.status, places)
            if task_id in flying:
                assert rec.status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING)
                assert task_id in self.b.in_flight(rec.worker)
            if task_id in queued:
                assert rec.status is TaskStatus.PENDING and rec.worker is None

    @invariant()
    def counts_agree(self):
        unfinished = [r for r in self.b.records.values() if r.status not in FINISHED]
        assert self.b.open == len(unfinished)
        for name, slot in self.b.scheduler.workers.items():
            assert slot.running == len(self.b.in_flight(name)) <= slot.capacity
        assert set(self.b.finished_order) == self.recorded
        assert len(self.b.finished_order) == len(self.recorded)


BoardMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestBoardRules = BoardMachine.TestCase


# --------------------------------------------------------------------------- probation


def tasks(n: int) -> list[Task]:
    return [Task(i, f"t{i}") for i in range(n)]


def test_a_worker_on_probation_gets_one_task_asking_for_confirmation_until_it_reads():
    b = TaskBoard()
    b.add(tasks(6))
    b.add_worker(WorkerSlot("new", 5, capacity=4), probation=True)

    assert b.plan(now=0.0) == {"new": [TaskAssignment(tasks(1)[0], "new", 1, confirm=True)]}
    assert b.plan(now=0.0) == {}  # one in flight is all it gets

    b.confirm("new", {0: 1})  # a heartbeat listed it: it reads

    assert [a.task.id for a in b.plan(now=0.0)["new"]] == [1, 2, 3]
    assert b.records[1].confirmed is False  # confirmation is per assignment


def test_a_heartbeat_naming_an_older_attempt_does_not_confirm():
    b = TaskBoard()
    b.add(tasks(3))
    b.add_worker(WorkerSlot("new", 5, capacity=4), probation=True)
    b.plan(now=0.0)

    b.confirm("new", {0: 0, 99: 1})

    assert b.plan(now=0.0) == {}
    assert b.records[0].confirmed is False


def test_a_result_ends_probation():
    b = TaskBoard()
    b.add(tasks(4))
    b.add_worker(WorkerSlot("new", 5, capacity=2), probation=True)
    b.plan(now=0.0)
    b.record(TaskResult(0, "new", True, attempt=1))
    b.trust("new")

    assert [a.task.id for a in b.plan(now=0.0)["new"]] == [1, 2]
    assert all(not a.confirm for a in b.plan(now=0.0).get("new", []))


def test_steal_takes_back_an_unconfirmed_task_and_gives_the_thief_nothing_more():
    b = TaskBoard()
    b.add(tasks(3))
    b.add_worker(WorkerSlot("stalled", 9, capacity=100), probation=True)
    b.plan(now=0.0)  # stalled gets task 0 (best fit: it is the only worker)
    b.add_worker(WorkerSlot("honest", 9, capacity=1))

    assert b.steal("honest", [(0, 1)]) == []  # not its task
    assert b.steal("stalled", [(0, 2)]) == []  # another attempt
    assert b.steal("stalled", [(0, 1)]) == [(0, 1)]

    assert b.queued()[0] == 0  # back in its old place, ahead of the rest
    assert b.in_flight("stalled") == set()
    assert b.records[0].losses == 0  # not a loss: it never started
    assert b.plan(now=1.0) == {"honest": [TaskAssignment(tasks(1)[0], "honest", 2)]}
    # The stalled worker's late result for attempt 1 is stale now.
    assert b.record(TaskResult(0, "stalled", True, attempt=1)) is None
    b.trust("stalled")  # ... but it shows that it reads again
    assert [a.task.id for a in b.plan(now=1.0)["stalled"]] == [1, 2]


def test_a_task_its_worker_did_not_take_goes_only_to_a_free_slot_afterwards():
    # It may be what stopped that worker (a task that kills whoever starts it): queued behind
    # another on the next worker, its crash could take the other's result along and never be
    # said. So it waits for a free slot, and the worker that could give one gets no more
    # queued meanwhile.
    b = TaskBoard()
    b.add(tasks(1))
    b.add_worker(WorkerSlot("stalled", 9, capacity=1), probation=True)
    b.plan(now=0.0)
    b.add_worker(WorkerSlot("busy", 9, capacity=3, slots=1, running=1))
    b.steal("stalled", [(0, 1)])
    b.add(tasks(3)[1:])

    assert b.plan(now=1.0) == {}
    b.scheduler.release("busy")
    assert [a.task.id for a in b.plan(now=2.0)["busy"]] == [0, 1, 2]


def test_a_task_its_worker_did_not_take_runs_alone_on_its_last_attempt():
    # It may be what stopped that worker (a task that kills whoever starts it): beside another
    # on the next worker, its crash would take the other along, and with one attempt left
    # that would be the other's last too. So it waits for a worker with nothing in flight,
    # the worker that could give one gets nothing younger meanwhile, and it gets nothing
    # more while the task runs.
    b = TaskBoard(max_attempts=1)
    b.add(tasks(1))
    b.add_worker(WorkerSlot("stalled", 9, capacity=1), probation=True)
    b.plan(now=0.0)
    b.add(tasks(2)[1:])
    b.add_worker(WorkerSlot("busy", 9, capacity=3, slots=1))
    assert [a.task.id for a in b.plan(now=0.5)["busy"]] == [1]
    b.steal("stalled", [(0, 1)])
    b.add(tasks(4)[2:])

    assert b.plan(now=1.0) == {}
    b.record(TaskResult(1, "busy", True, attempt=1))
    assert [a.task.id for a in b.plan(now=2.0)["busy"]] == [0]
    b.validate()
    assert b.plan(now=2.5) == {}
    b.record(TaskResult(0, "busy", True, attempt=2))
    assert [a.task.id for a in b.plan(now=3.0)["busy"]] == [2, 3]
    b.validate()


def test_a_task_that_kills_its_workers_takes_no_other_task_down_on_its_last_attempt():
    # A poison task and an innocent one start together on a worker of two slots, which dies:
    # both are lost once, and go to free slots: together again on the next worker, lost
    # twice. Now on their last attempt, each runs alone: the third crash is the poison's
    # alone, and the innocent task runs (beside it on each next worker, it was lost three
    # times too, and failed as dead).
    b = TaskBoard(max_attempts=3)
    b.add([Task("poison", "kills its worker"), Task("innocent", "fine")])
    given = []
    for n in range(5):  # one worker at a time, each of two slots
        b.add_worker(WorkerSlot(f"w{n}", 5, capacity=2, slots=2))
        plan = b.plan(now=float(n)).get(f"w{n}", [])
        b.validate()
        given.append(sorted(a.task.id for a in plan))
        b.delivered(plan)
        if any(a.task.id == "poison" for a in plan):
            b.remove_worker(f"w{n}")  # it kills its worker
        else:
            for a in plan:
                b.record(TaskResult(a.task.id, f"w{n}", True, attempt=a.attempt))

    assert given == [["innocent", "poison"], ["innocent", "poison"], ["poison"], ["innocent"],
                     []]
    assert b.records["poison"].dead and b.records["poison"].losses == 3
    assert b.records["innocent"].status is TaskStatus.COMPLETED
    assert b.records["innocent"].losses == 2


def test_the_worker_held_for_a_task_waiting_to_run_alone_takes_nothing_back():
    # It drains, so the task can run alone there: stealing would fill it again.
    b = TaskBoard(max_attempts=2)
    b.add_worker(WorkerSlot("V", 9, capacity=3, slots=1))
    b.add(tasks(3))
    assert len(b.plan(now=0.0)["V"]) == 3  # one runs, two wait in its queue
    b.add_worker(WorkerSlot("X", 9, capacity=1))
    b.add(tasks(4)[3:])
    assert [a.task.id for a in b.plan(now=0.0)["X"]] == [3]
    b.add_worker(WorkerSlot("H", 9, capacity=2, slots=2))
    b.add(tasks(5)[4:])
    assert [a.task.id for a in b.plan(now=0.0)["H"]] == [4]  # a slot of H is free
    b.remove_worker("X")  # task 3 was with it: its next attempt is its last, alone
    assert b.plan(now=1.0) == {}  # no worker has nothing in flight; H (least) is held
    assert list(b.scheduler.held) == ["H"]
    assert b.steals(now=100.0, patience=0.1) == {}
    b.record(TaskResult(4, "H", True, attempt=1))
    assert [a.task.id for a in b.plan(now=101.0)["H"]] == [3]
    assert list(b.scheduler.held) == []
    b.validate()


def test_a_restored_task_lost_with_a_worker_runs_alone_on_its_last_attempt():
    b = TaskBoard(max_attempts=2)
    b.restore([JournaledTask(Task("p", "x"), None, TaskStatus.PENDING, 1, None, None, None,
                             losses=1),
               JournaledTask(Task("q", "y"), None, TaskStatus.PENDING, 0, None, None, None)],
              {})
    b.add_worker(WorkerSlot("w", 9, capacity=2))
    assert [a.task.id for a in b.plan(now=0.0)["w"]] == ["p"]
    b.validate()


def test_steal_leaves_confirmed_tasks_and_trusted_workers_alone():
    b = TaskBoard()
    b.add(tasks(3))
    b.add_worker(WorkerSlot("slow", 9, capacity=2), probation=True)
    b.add_worker(WorkerSlot("old", 9, capacity=1))
    b.plan(now=0.0)
    (mine,) = b.in_flight("slow")
    b.confirm("slow", {mine: 1})

    assert b.steal("slow", [(mine, 1)]) == []
    (theirs,) = b.in_flight("old")
    assert b.steal("old", [(theirs, 1)]) == []  # trusted


def test_reclaiming_tasks_a_trusted_worker_never_got_puts_it_back_on_probation():
    b = TaskBoard()
    b.add(tasks(5))
    b.add_worker(WorkerSlot("w", 9, capacity=3))
    b.plan(now=0.0)

    requeued, _ = b.reclaim("w", {}, assigned_before=1.0)  # a heartbeat that lists nothing

    assert sorted(requeued) == [0, 1, 2]
    plan = b.plan(now=2.0)["w"]
    assert [(a.task.id, a.confirm) for a in plan] == [(0, True)]


def test_a_stolen_task_waits_for_a_trusted_worker_when_there_is_one():
    b = TaskBoard()
    b.add(tasks(3))
    b.add_worker(WorkerSlot("first", 9), probation=True)
    b.plan(now=0.0)  # first gets 0
    b.steal("first", [(0, 1)])
    b.add_worker(WorkerSlot("old", 9))  # trusted, and it takes 0 at once
    assert b.plan(now=1.0) == {"old": [TaskAssignment(tasks(1)[0], "old", 2)]}
    b.record(TaskResult(0, "old", True, attempt=2))
    b.add(tasks(5)[3:])
    b.plan(now=1.0)  # old takes 1
    assert b.steal("old", [(1, 1)]) == []  # nothing: old is trusted
    b.add_worker(WorkerSlot("second", 9, capacity=2), probation=True)

    plan = b.plan(now=1.0)

    assert [a.task.id for a in plan["second"]] == [2]


def test_a_stolen_task_goes_to_an_idle_worker_on_probation_when_no_trusted_one_can_take_it():
    b = TaskBoard()
    b.add(tasks(2))
    b.add_worker(WorkerSlot("stalled", 9), probation=True)
    b.plan(now=0.0)
    b.steal("stalled", [(0, 1)])  # 0 is for trusted workers now; there are none
    b.add_worker(WorkerSlot("honest", 9, capacity=2), probation=True)

    plan = b.plan(now=1.0)

    assert [(a.task.id, a.confirm) for a in plan["honest"]] == [(0, True)]  # not stuck
    assert b.blocked() == []


def test_the_cancelled_answer_to_our_cancel_of_a_stolen_task_leaves_it_queued():
    b = TaskBoard()
    b.add(tasks(1))
    b.add_worker(WorkerSlot("slow", 9), probation=True)
    b.plan(now=0.0)
    b.steal("slow", [(0, 1)])  # the admin sends CANCEL [0, 1] to slow

    late = b.record(TaskResult(0, "slow", False, error="cancelled: reassigned", attempt=1,
                               cancelled=True))

    assert late is None
    assert b.records[0].status is TaskStatus.PENDING and b.queued() == [0]
    assert b.scheduler.workers["slow"].state is WorkerState.TRUSTED  # it answered: it reads


def test_only_a_result_about_a_task_it_was_sent_ends_probation():
    b = TaskBoard()
    b.add(tasks(3))
    b.add_worker(WorkerSlot("new", 9, capacity=3), probation=True)
    b.add_worker(WorkerSlot("other", 1))
    plan = b.plan(now=0.0)
    (mine,), (theirs,) = plan["new"], plan["other"]

    b.record(TaskResult(theirs.task.id, "new", True, attempt=1))  # a task it was not sent
    b.record(TaskResult(99, "new", True, attempt=1))  # no such task

    assert b.scheduler.workers["new"].state is WorkerState.PROBATION
    b.record(TaskResult(mine.task.id, "new", True, attempt=1))
    assert b.scheduler.workers["new"].state is WorkerState.TRUSTED


def _taken_back_from(worker: str) -> TaskBoard:
    """A board (--max-attempts 2) whose task 0 went to ``worker``, on probation, and was
    taken back from it unconfirmed."""
    b = TaskBoard(max_attempts=2)
    b.add(tasks(1))
    b.add_worker(WorkerSlot(worker, 9), probation=True)
    b.plan(now=0.0)
    b.steal(worker, [(0, 1)])
    return b


def test_tasks_stolen_from_a_worker_that_turns_out_gone_count_as_lost_with_it():
    b = _taken_back_from("dead")
    b.add_worker(WorkerSlot("also-dead", 9))
    b.plan(now=1.0)
    b.remove_worker("dead")
    assert b.records[0].losses == 1 and b.records[0].status is TaskStatus.ASSIGNED

    b.remove_worker("also-dead")

    assert b.dead == [0]
    assert b.records[0].result.error.startswith("lost 2 times, last with worker 'also-dead'")


def test_a_stolen_task_whose_loss_makes_its_next_attempt_the_last_runs_alone():
    # Counted lost while it waits in the queue (its first worker turned out gone), it is
    # queued again where it may go now: alone, not in a free slot beside another.
    b = _taken_back_from("dead")
    b.add(tasks(3)[1:])
    b.remove_worker("dead")
    assert b.records[0].losses == 1 and b.place(b.records[0]) == ALONE
    b.add_worker(WorkerSlot("w", 9, capacity=3))
    assert [a.task.id for a in b.plan(now=1.0)["w"]] == [0]
    b.validate()


def test_a_stolen_task_counted_lost_while_it_runs_beside_others_runs_on_there():
    # Sent on to a worker of 4 slots (beside others: not its last attempt then), it is
    # counted lost when the worker it was taken back from turns out gone. It runs on there;
    # what that worker says it holds does not make it run alone with four.
    b = _taken_back_from("dead")
    b.add(tasks(4)[1:])
    b.add_worker(WorkerSlot("w", 9, capacity=4))
    b.delivered(b.plan(now=1.0)["w"])
    b.remove_worker("dead")
    assert b.records[0].losses == 1
    b.validate()
    b.reclaim("w", {t: 1 for t in range(1, 4)} | {0: 2})
    assert not b.scheduler.workers["w"].alone
    b.validate()


def test_a_worker_that_was_slow_not_gone_costs_its_stolen_tasks_nothing():
    b = TaskBoard()
    b.add(tasks(1))
    b.add_worker(WorkerSlot("slow", 9), probation=True)
    b.plan(now=0.0)
    b.steal("slow", [(0, 1)])
    b.trust("slow")  # its late (stale) result came

    b.remove_worker("slow")

    assert b.records[0].losses == 0


def test_a_dependent_queued_when_its_dependency_completes_keeps_its_submission_place():
    """README: among equal priorities, older first. A step 2 submitted before 10,000 tasks
    of the same priority went after them all: it was stamped when it became ready."""
    a, then = Task("a", "step 1"), Task("b", "step 2", depends_on=["a"])
    b = board([a, then, *(Task(f"c{i}", "other") for i in range(6))], WorkerSlot("w", 5))
    assert b.plan() == {"w": [TaskAssignment(a, "w", 1)]}
    b.record(done(a, "w"))

    assert b.queued() == ["b", *(f"c{i}" for i in range(6))]
    assert [x.task.id for x in b.plan()["w"]] == ["b"]
