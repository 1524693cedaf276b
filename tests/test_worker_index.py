"""The workers filed for the scheduler's choice (ceylon_net.core.worker_index): a scheduler that
finds the worker for a task in them makes, step for step, the choices of one that looks at
each worker (best_fit), whatever joins, leaves, loads and changes of state, capacity or slots
come; and among many workers a choice looks at a few of them, not at each."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ceylon_net.core import scheduler as sched
from ceylon_net.core.scheduler import ALONE, ANYWHERE, SLOT, Scheduler, WorkerSlot
from ceylon_net.core.worker_index import heap_of
from ceylon_net.core.workers import WorkerState

NAMES = [f"w{i}" for i in range(5)]
ROLES = [None, "default", "analyst"]
HANDLERS = [None, "sum", "fetch"]
# (mostly the states in which a worker takes tasks: those are where choices differ)
STATES = [WorkerState.TRUSTED] * 3 + [WorkerState.PROBATION] * 2 + list(WorkerState)
KIN = [(2, "default", frozenset()), (6, "analyst", frozenset({"sum"}))]  # skill, role, handlers
CLASSES = [(d, role, handler) for d in (1, 4, 8) for role in ROLES for handler in HANDLERS]


class Lockstep(RuleBasedStateMachine):
    """Schedulers finding workers in the index, by looking at each, and by either as the
    kinds of worker go, fed the same steps: the same decisions, the same workers held, every
    worker filed as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.three = (Scheduler(indexed=True), Scheduler(indexed=False), Scheduler())
        self.next_id = 0
        self.queued: set[int] = set()

    def alike(self, fn):  # type: ignore[no-untyped-def]
        got = [fn(s) for s in self.three]
        assert got[0] == got[1] == got[2], got
        return got[0]

    @rule(name=st.sampled_from(NAMES), skill=st.integers(0, 10),
          role=st.sampled_from(["default", "analyst", "writer"]),
          handlers=st.frozensets(st.sampled_from(["sum", "fetch"])),
          capacity=st.integers(1, 4), queue=st.integers(0, 2),
          state=st.sampled_from(STATES))
    def join(self, name, skill, role, handlers, capacity, queue, state):
        """A new worker, or one of the same name registered again (it replaces it)."""
        for s in self.three:
            s.add_worker(WorkerSlot(name, skill, role, capacity, handlers=handlers,
                                    state=state, slots=max(1, capacity - queue)))

    @rule(name=st.sampled_from(NAMES), kin=st.sampled_from(KIN),
          capacity=st.integers(1, 4), queue=st.integers(0, 2),
          state=st.sampled_from(STATES))
    def join_kin(self, name, kin, capacity, queue, state):
        """A worker of one of a few kinds: workers share kinds, so the scheduler that goes
        by the kinds uses the index as often as not."""
        self.join(name, *kin, capacity, queue, state)

    @rule(name=st.sampled_from(NAMES))
    def leave(self, name):
        self.alike(lambda s: s.remove_worker(name) is None)

    @rule(difficulty=st.integers(1, 10), role=st.sampled_from(ROLES),
          handler=st.sampled_from(HANDLERS), priority=st.integers(-1, 1),
          trusted=st.booleans(), place=st.sampled_from([ANYWHERE, ANYWHERE, SLOT, ALONE]))
    def push(self, difficulty, role, handler, priority, trusted, place):
        task, self.next_id = self.next_id, self.next_id + 1
        self.alike(lambda s: s.push(task, difficulty, role, priority, handler=handler,
                                   trusted=trusted, place=place))
        self.queued.add(task)

    @precondition(lambda self: self.queued)
    @rule(data=st.data())
    def discard(self, data):
        task = data.draw(st.sampled_from(sorted(self.queued)))
        self.queued.discard(task)
        self.alike(lambda s: s.discard(task))

    @rule(slots_only=st.booleans())
    def assign(self, slots_only):
        decided = self.alike(lambda s: s.assign(slots_only))
        self.queued -= {task for task, _ in decided}
        self.alike(lambda s: set(s.held))

    @rule(name=st.sampled_from(NAMES), n=st.integers(-1, 3))
    def release(self, name, n):
        """Tasks ended on it (n < 0: a slot taken, as a task given back undone does)."""
        for s in self.three:
            s.release(name, n)

    @rule(name=st.sampled_from(NAMES), n=st.integers(0, 4), alone=st.booleans())
    def holds(self, name, n, alone):
        """Its heartbeat says what it holds."""
        for s in self.three:
            s.holds(name, n, alone)

    @rule(name=st.sampled_from(NAMES), state=st.sampled_from(STATES),
          capacity=st.integers(0, 5), slots=st.integers(0, 4), say=st.booleans())
    def changed(self, name, state, capacity, slots, say):
        """Its state, its capacity (pacing's credit) or its slots (a handler that outlived its
        task) changed from outside, told by name, or not (touch() with none: any). With no
        slot left, no capacity either (as the admin's pacing has it)."""
        capacity = capacity if slots else 0
        for s in self.three:
            slot = s.workers.get(name)
            if slot is not None:
                slot.state, slot.capacity, slot.slots = state, capacity, slots
                s.touch(*([name] if say else []))

    @invariant()
    def every_choice_is_best_fits(self):
        """For any task, the worker the index finds is best_fit's, and so is the count of
        workers with room that could take it (what a worker's share of a queue is cut by)."""
        s = self.three[0]
        workers = list(s.workers.values())
        for difficulty, role, handler in CLASSES:
            for trusted in (False, True):
                key = sched.class_key(difficulty, role, handler, trusted)
                kinds = list(s._kinds(key))
                for place in (ANYWHERE, SLOT, ALONE):
                    best = s._index.best(kinds, trusted, place)
                    expect = sched.best_fit(workers, difficulty, role, handler, trusted, place)
                    assert (best and best[3]) == (expect and expect.name), (key, place)
                assert sum(k.takers(trusted) for k in kinds) == sum(
                    1 for w in workers if w.running < w.room and sched.fits(w, key))

    @rule(name=st.sampled_from(NAMES), capacity=st.integers(1, 5))
    def changed_untold(self, name, capacity):
        """A change not told (no touch()) is found by the index's check when the worker
        would be filed elsewhere; told, it is filed again."""
        s = self.three[0]
        slot = s.workers.get(name)
        if slot is None:
            return
        before = filing(slot)
        slot.capacity, slot.slots = capacity, capacity
        if filing(slot) != before:
            with pytest.raises(AssertionError, match=name):
                s.check_index()
        for other in self.three[1:]:
            other.workers[name].capacity = other.workers[name].slots = capacity
        for each in self.three:
            each.touch(name)

    @invariant()
    def the_same_choice_is_open_to_all(self):
        self.alike(lambda s: s.placeable())
        self.three[0].check_index()
        self.three[2].check_index()
        loads = [{n: (w.running, w.alone) for n, w in s.workers.items()} for s in self.three]
        assert loads[0] == loads[1] == loads[2]


def filing(slot: WorkerSlot) -> tuple[int | None, float | None]:
    """Where a worker is filed: its heap, and its load there."""
    n = heap_of(slot)
    return n, None if n is None else slot.running / slot.slots


Lockstep.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                      deadline=None)
TestLockstep = Lockstep.TestCase


def test_a_choice_among_a_thousand_workers_looks_at_a_few_of_them(monkeypatch):
    """1,000 workers of two kinds, filling up: where each task goes is found without a look
    at each worker (best_fit's), and is the worker best_fit would find."""
    s = Scheduler()
    for i in range(1000):
        s.add_worker(WorkerSlot(f"w{i:04}", 3 + 5 * (i % 2), capacity=2, slots=1))
    looked = []
    real = sched.best_fit
    monkeypatch.setattr(sched, "best_fit", lambda *a, **k: looked.append(a) or real(*a, **k))
    for task in range(1500):
        difficulty = 2 + 5 * (task % 3 == 0)
        expect = real(s.workers.values(), difficulty)
        s.push(task, difficulty, role=None)
        assert s.assign() == [(task, expect.name)]
        if task % 5 == 0:
            s.release(expect.name)  # (some end: load goes down as well as up)
    assert looked == []  # never the look at each worker
    filed = sum(map(len, (h for k in s._index.kinds.values() for h in k.heaps)))
    assert filed < 3 * len(s.workers)  # (what changed is filed again, the old dropped)


def test_every_small_worker_alone_and_beside_another_kind_is_found_as_best_fit_finds_it():
    """Each state, capacity (0-3), slots (0-3, none only with no capacity) and load (0-4) of
    a worker, alone and beside a worker of another kind in a sample of those: for a task of
    each trust and place, the index's worker is best_fit's (a trusted worker with its slots
    busy and room in its queue, say, which the machine above reaches seldom)."""
    shapes = [(state, capacity, slots, running) for state, capacity, slots, running
              in itertools.product(WorkerState, range(4), range(4), range(5))
              if slots or not capacity]
    for a, b in itertools.product(shapes, [None, *shapes[::7]]):
        s = Scheduler(indexed=True)
        for name, skill, shape in (("a", 3, a), ("b", 5, b)):
            if shape is not None:
                state, capacity, slots, running = shape
                slot = WorkerSlot(name, skill, capacity=capacity, state=state)
                slot.slots, slot.running = slots, running
                s.add_worker(slot)
        s.check_index()
        for trusted in (False, True):
            key = sched.class_key(1, None, None, trusted)
            for place in (ANYWHERE, SLOT, ALONE):
                best = s._index.best(s._kinds(key), trusted, place)
                expect = sched.best_fit(s.workers.values(), 1, None, None, trusted, place)
                assert (best and best[3]) == (expect and expect.name), (a, b, trusted, place)
