"""Which ready task goes to which worker. Pure: plain data in, decisions out, no I/O, no clock.

Rules (DESIGN.md "Scheduling"):
- ready tasks go by priority (higher first), then age (older first);
- a worker is eligible when its role fits, its skill >= the task's difficulty and it has
  room; credit-based, so a worker never has more in flight than its ``capacity``: its
  ``slots`` (what it runs at once) plus the credit it is fed ahead (pipelining, see
  :mod:`ceylon_net.core.pacing`);
- among eligible workers: one with a free slot before one that would only queue the task
  (a task never waits behind another while a slot is free), then best fit (least skilled that
  can do it), then least loaded, so seniors stay free for the hard tasks;
- a task that was with a worker that died or did not answer (its place: SLOT) goes only to a
  free slot; while it waits for one, the workers that could take it get no younger task into
  their queues, so their queues drain and a slot frees for it (a reservation: not starved);
- one on its last attempt after that (its place: ALONE) goes only to a worker with nothing in
  flight, which gets nothing more until it ends: if it is what kills workers, it takes no other
  task down with it. While it waits, one worker that could take it is held for it: it gets no
  younger task, so it drains (the one with the least in flight, kept until the task goes out,
  so the others work on).

A task naming a handler only goes to workers that have it.

Ready tasks are kept in one queue per *class* (difficulty, role, handler), and the workers
filed by what they can do and take (:mod:`ceylon_net.core.worker_index`). There are few
classes and few kinds of worker, so a decision costs O(classes x kinds + log n) however many
tasks are queued and workers connected, and a task taken from a class's queue O(1) when it was
queued in order (see :class:`ClassQueue`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .tasks import DEFAULT_ROLE
from .worker_index import ALONE, ANYWHERE, SLOT, Kind, WorkerIndex
from .workers import WorkerState, room

TaskKey = Hashable
# difficulty, role, handler, trusted workers only, where it may go (a place)
ClassKey = tuple[int, str | None, str | None, bool, int]
Entry = tuple[int, int, TaskKey]  # (-priority, age stamp, task): heap order is queue order


class ClassQueue:
    """One class's queued entries, in queue order: those pushed in order (new tasks of one
    priority, the common case) in a deque, ``run``, the others in a heap. Its head is the
    smaller of the two heads; taking the head of the run costs O(1), not a heap's O(log n)
    (0.07 µs against 0.7 µs a task at 100,000 queued). Stale entries (discarded tasks) stay
    until they reach a head, as in a plain heap."""

    __slots__ = ("heap", "run")

    def __init__(self) -> None:
        self.run: deque[Entry] = deque()
        self.heap: list[Entry] = []

    def add(self, entry: Entry) -> None:
        run = self.run
        if not run or entry > run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def __len__(self) -> int:
        return len(self.run) + len(self.heap)

    def __iter__(self) -> Iterator[Entry]:
        return itertools.chain(self.run, self.heap)


@dataclass(slots=True)
class WorkerSlot:
    """What the scheduler knows of a worker."""

    name: str
    skill: int
    role: str = DEFAULT_ROLE
    capacity: int = 1  # in flight at most: slots plus the credit fed ahead
    running: int = 0  # in flight: sent (queued or running there) and not finished
    handlers: frozenset[str] = frozenset()
    # Where the worker is in its life (ceylon_net.core.workers): how much it may hold now.
    state: WorkerState = WorkerState.TRUSTED
    slots: int = 0  # tasks it runs at once (its --concurrency); 0: the capacity
    alone: bool = False  # it runs a task ALONE: nothing more until its in flight is none
    answers_unheld: bool = False  # it answers a RELEASE of a task it never got (see Hello)

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = self.capacity

    @property
    def free(self) -> int:
        return self.room - self.running

    @property
    def queued(self) -> int:
        """Of ``running`` (in flight), those beyond its slots: they wait in its queue."""
        return max(0, self.running - self.slots)

    @property
    def room(self) -> int:
        """In flight allowed now: the capacity when trusted, one on probation, else none
        (none either while it runs a task alone)."""
        return 0 if self.alone else room(self.state, self.capacity)

    @property
    def trusted(self) -> bool:
        return self.state is WorkerState.TRUSTED


@dataclass(frozen=True, slots=True)
class Blocked:
    """Queued tasks that no connected worker can ever take, whatever its load."""

    difficulty: int
    role: str | None
    tasks: tuple[TaskKey, ...]  # in queue order
    best_skill: int | None  # best skill among connected workers of a fitting role, if any
    handler: str | None = None  # the handler the tasks need
    has_handler: bool = True  # some connected worker has that handler


def class_key(difficulty: int, role: str | None, handler: str | None, trusted: bool = False,
              place: int = ANYWHERE) -> ClassKey:
    """The class a ready task is queued in: tasks of one class suit the same workers."""
    return difficulty, None if role == DEFAULT_ROLE else role, handler, trusted, place


def role_fits(worker_role: str, task_role: str | None) -> bool:
    return task_role in (None, DEFAULT_ROLE) or worker_role in (DEFAULT_ROLE, task_role)


def can_do(worker: WorkerSlot | Kind, difficulty: int, role: str | None,
           handler: str | None = None) -> bool:
    """A worker (or a kind of worker: see worker_index) could do such a task, room aside."""
    return worker.skill >= difficulty and role_fits(worker.role, role) and \
        (handler is None or handler in worker.handlers)


def fits(worker: WorkerSlot, key: ClassKey) -> bool:
    """The worker could take tasks of class ``key`` (room aside)."""
    difficulty, role, handler, trusted, _ = key
    return (worker.trusted or not trusted) and can_do(worker, difficulty, role, handler)


def best_fit(workers: Iterable[WorkerSlot], difficulty: int, role: str | None = None,
             handler: str | None = None, trusted: bool = False, place: int = ANYWHERE,
             reserved: frozenset[str] | set[str] = frozenset()):
    """The eligible worker with room that fits best, or None. ``trusted``: only workers off
    probation; ``place``: where it may go (SLOT: a free slot, not a place in a worker's queue;
    ALONE: a worker with nothing in flight); ``reserved``: workers not to use."""
    best, best_key = None, None
    for w in workers:
        if (trusted and w.state is not WorkerState.TRUSTED) or w.name in reserved \
                or (place == ALONE and w.running):
            continue
        limit = min(w.room, w.slots) if place else w.room
        if w.running < limit and can_do(w, difficulty, role, handler):
            key = (w.running >= w.slots, w.skill, w.running / w.slots, w.name)
            if best_key is None or key < best_key:
                best, best_key = w, key
    return best


class Scheduler:
    """Ready queue plus worker slots; :meth:`assign` makes the decisions. The worker for a
    task is found in the workers filed by kind (:class:`WorkerIndex`), or by a look at each
    (:func:`best_fit`), the same choices (the tests compare the two); ``indexed``: always the
    first (True), always the second (False), or (None) the first while there are no more
    than half as many kinds of worker as workers (a choice looks at each kind: among 1,000
    workers of 1,000 kinds the index costs more than a look at each)."""

    def __init__(self, indexed: bool | None = None) -> None:
        self._classes: dict[ClassKey, ClassQueue] = {}
        # task -> its live entry (the very tuple); other entries of it are stale
        self._where: dict[TaskKey, Entry] = {}
        self._workers: dict[str, WorkerSlot] = {}
        self._next_seq = 0  # the next age stamp
        # Changes whenever the queue, the workers or their slots do (call touch() after
        # changing a WorkerSlot from outside); assign() does nothing while it is unchanged.
        self.version = 0
        self._settled = -1  # the version at which assign() last found nothing to place
        self._slots_only = False  # assign() fills free slots only (see there)
        self._held_for: dict[TaskKey, str] = {}  # a task waiting to run ALONE -> worker held
        self.indexed, self._index = indexed, WorkerIndex()

    def touch(self, *workers: str) -> None:
        """Workers' slots were changed from outside (state, capacity, slots): those named,
        or, with none named, any (each is filed again: O(workers))."""
        self.version += 1
        for name in workers or list(self._workers):
            if (slot := self._workers.get(name)) is not None:
                self._index.file(slot)

    @property
    def held(self) -> Iterable[str]:
        """Workers held, at the last :meth:`assign`, for tasks waiting to run alone."""
        return self._held_for.values()

    # ---- workers
    @property
    def workers(self) -> dict[str, WorkerSlot]:
        return self._workers

    def add_worker(self, slot: WorkerSlot) -> None:
        self.version += 1
        self._workers[slot.name] = slot
        self._index.file(slot)

    def remove_worker(self, name: str) -> WorkerSlot | None:
        self.version += 1
        self._index.drop(name)
        return self._workers.pop(name, None)

    def release(self, worker: str, n: int = 1) -> None:
        """``n`` tasks on ``worker`` ended: its slots are free again."""
        slot = self._workers.get(worker)
        if slot is not None:
            self.version += 1
            slot.running = max(0, slot.running - n)  # n < 0 takes a slot
            if not slot.running:
                slot.alone = False
            self._index.file(slot)

    def holds(self, worker: str, n: int, alone: bool) -> None:
        """What ``worker`` has in flight was found to be ``n`` tasks; ``alone``: one of them
        runs ALONE."""
        slot = self._workers.get(worker)
        if slot is not None and (slot.running, slot.alone) != (n, alone and n > 0):
            self.version += 1
            slot.running, slot.alone = n, alone and n > 0
            self._index.file(slot)

    # ---- ready queue
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task: TaskKey) -> bool:
        return task in self._where

    def push(
        self, task: TaskKey, difficulty: int, role: str | None, priority: int = 0,
        seq: int | None = None, handler: str | None = None, trusted: bool = False,
        place: int = ANYWHERE,
    ) -> int:
        """Queue a ready task; returns its age stamp (pass it back on requeue to keep its place).
        ``trusted``: it goes only to a worker off probation; ``place``: SLOT, only to a free
        slot; ALONE, only alone on a worker."""
        if task in self._where:
            raise ValueError(f"task {task!r} is already queued")
        key = class_key(difficulty, role, handler, trusted, place)
        if seq is None:
            seq = self._next_seq
            self._next_seq += 1
        self.version += 1
        entry = (-priority, seq, task)
        queue = self._classes.get(key)
        if queue is None:
            queue = self._classes[key] = ClassQueue()
        queue.add(entry)
        self._where[task] = entry
        return seq

    def stamps(self, n: int) -> range:
        """Age stamps for ``n`` tasks queued later (waiting on dependencies): push() them
        with theirs to queue them where they were submitted, among equal priorities."""
        first = self._next_seq
        self._next_seq += n
        return range(first, first + n)

    def push_new(self, tasks: Iterable[tuple[TaskKey, int, str | None, int, str | None]]
                 ) -> list[int]:
        """Queue many new tasks at once: (task, difficulty, role, priority, handler) each, in
        submission order; returns their age stamps. The same as push() one by one, at a
        fraction of the cost for a large submission."""
        where, classes, seq = self._where, self._classes, self._next_seq
        grown: dict[ClassKey, int] = {}  # class -> the size of its heap before
        seqs = []
        for task, difficulty, role, priority, handler in tasks:
            if task in where:
                raise ValueError(f"task {task!r} is already queued")
            key = class_key(difficulty, role, handler)
            queue = classes.get(key)
            if queue is None:
                queue = classes[key] = ClassQueue()
            seq += 1
            entry = (-priority, seq - 1, task)
            run = queue.run
            if not run or entry > run[-1]:
                run.append(entry)
            else:  # out of order (a higher priority): into the heap, ordered below
                if key not in grown:
                    grown[key] = len(queue.heap)
                queue.heap.append(entry)
            where[task] = entry
            seqs.append(seq - 1)
        self._next_seq = seq
        for key, before in grown.items():
            heap = classes[key].heap
            if len(heap) - before >= before:
                heapq.heapify(heap)  # O(size): no more than pushing the new ones
            else:
                new = heap[before:]
                del heap[before:]
                for entry in new:
                    heapq.heappush(heap, entry)
        self.version += 1
        return seqs

    def push_run(self, tasks: Sequence[TaskKey], difficulty: int, role: str | None,
                 priority: int = 0, handler: str | None = None) -> Sequence[int]:
        """Queue new tasks (distinct) that share a class and a priority, the usual shape of a
        large submission, in order: the same as push_new() of them, in passes at C speed (a
        task at a time was a quarter of W1's time before its first task went out). Returns
        their age stamps."""
        where = self._where
        if not where.keys().isdisjoint(tasks):
            raise ValueError(f"task {next(t for t in tasks if t in where)!r} is already queued")
        key = class_key(difficulty, role, handler)
        queue = self._classes.get(key)
        if queue is not None and queue.run and (-priority, self._next_seq) < queue.run[-1]:
            # (a higher priority than the class's newest: not in order, see ClassQueue)
            return self.push_new([(t, difficulty, role, priority, handler) for t in tasks])
        if queue is None:
            queue = self._classes[key] = ClassQueue()
        # (a list, not the range: each stamp one int object, shared with the task's record)
        seqs = list(range(self._next_seq, self._next_seq + len(tasks)))
        self._next_seq += len(tasks)
        entries = list(zip(itertools.repeat(-priority), seqs, tasks))
        queue.run.extend(entries)
        where.update(zip(tasks, entries, strict=True))
        self.version += 1
        return seqs

    def best_waiting(self, worker: WorkerSlot) -> int | None:
        """The highest priority of the queued tasks ``worker`` could take into its queue
        were it not full (the heads of the ANYWHERE classes it fits); None: none. (One that
        waits for a free slot, back from a lost worker, or to run alone, has workers held
        for it, whose queues drain: see _reservations.)"""
        best = None
        for key in list(self._classes):
            if key[4] != ANYWHERE or not fits(worker, key):
                continue
            head = self._head(key)
            if head is not None and (best is None or -head[0] > best):
                best = -head[0]
        return best

    def waiting_better(self, worker: WorkerSlot, than: int, limit: int) -> int:
        """How many queued tasks of priority above ``than`` ``worker`` could take into its
        queue were it not full (ANYWHERE tasks of a class it fits), counted up to
        ``limit``."""
        found, where = 0, self._where
        for key, queue in self._classes.items():
            if key[4] != ANYWHERE or not fits(worker, key):
                continue
            for entry in queue.run:  # (in queue order: the better ones first)
                if found >= limit or entry[0] >= -than:
                    break
                found += where.get(entry[2]) is entry
            for entry in queue.heap:
                if found >= limit:
                    break
                found += entry[0] < -than and where.get(entry[2]) is entry
            if found >= limit:
                break
        return found

    def discard(self, task: TaskKey) -> bool:
        """Take a queued task out (cancelled). Lazy: its heap entry is skipped later."""
        self.version += 1
        return self._where.pop(task, None) is not None

    def assign(self, slots_only: bool = False) -> list[tuple[TaskKey, str]]:
        """Fill free slots: [(task, worker name)], best task first. Marks the slots used.

        Tasks of one class go to the chosen worker in a run, as long as each is still the
        best task anywhere: up to its free slots when it has some (the next choice then goes
        to another worker with free slots), else up to its room, but no more than its share
        of the class's queue (so equally fit workers queue equal parts: one worker's queue
        must not take what the others could start as soon). ``slots_only``: free slots
        only, nothing queued ahead on a worker (as if every task needed a free slot); the
        same choices as a whole assign() makes first."""
        decisions: list[tuple[TaskKey, str]] = []
        if self.version == self._settled:
            return decisions  # nothing changed since nothing could be placed
        classes = self._classes
        self._slots_only = slots_only
        while True:
            choice = self._next_placeable()
            if choice is None:
                self._slots_only = False
                if not slots_only:  # (what is left may still be queued ahead)
                    self._settled = self.version
                return decisions
            key, worker, rival = choice
            queue = classes[key]
            room = min(worker.room, worker.slots) if key[4] or slots_only else worker.room
            free = min(room, worker.slots) - worker.running
            n = 1 if key[4] == ALONE else free if free > 0 else \
                max(1, min(room - worker.running, self._share(key, len(queue), worker.slots)))
            self.version += 1
            taken = self._take(key, queue, n, rival, worker.name, decisions)
            worker.running += taken
            if key[4] == ALONE and taken:
                worker.alone = True
            self._index.file(worker)

    def placeable(self) -> bool:
        """Some queued task could go to a worker now (an assign() would place one)."""
        return self.version != self._settled and self._next_placeable() is not None

    def _take(self, key: ClassKey, queue: ClassQueue, n: int, rival: Entry | None,
              name: str, decisions: list[tuple[TaskKey, str]]) -> int:
        """Up to ``n`` tasks from the head of ``queue`` (class ``key``) to worker ``name``,
        stopping before one behind ``rival``: how many."""
        where, run, heap, taken = self._where, queue.run, queue.heap, 0
        while taken < n:
            if heap:  # the general case: the smaller head of the two
                entry = self._head(key)
                if entry is None or (rival is not None and entry > rival):
                    break
                if run and run[0] is entry:
                    run.popleft()
                else:
                    heapq.heappop(heap)
            elif run:  # all in order (the common case): the run's head, O(1)
                entry = run[0]
                if where.get(entry[2]) is not entry:
                    run.popleft()  # discarded earlier
                    continue
                if rival is not None and entry > rival:
                    break
                run.popleft()
            else:
                break
            del where[entry[2]]
            decisions.append((entry[2], name))
            taken += 1
        return taken

    def _next_placeable(self) -> tuple[ClassKey, WorkerSlot, tuple | None] | None:
        """The class whose head is the best task some worker can take now, that worker, and
        the best head among the other classes some worker can take, or that a reservation on
        that worker stops at (None: none)."""
        best: tuple[tuple[int, int, TaskKey], ClassKey, WorkerSlot] | None = None
        rival = None
        reservations = self._reservations()
        for key in list(self._classes):
            head = self._head(key)
            if head is None or (rival is not None and head >= rival):
                continue
            reserved = {n for n, h in reservations.items() if h < head} \
                if reservations else frozenset()
            worker = self._taker(key, reserved)
            if worker is None:
                continue
            if best is None or head < best[0]:
                rival = None if best is None else best[0]
                best = (head, key, worker)
            else:
                rival = head
        if best is None:
            return None
        held = reservations.get(best[2].name)
        if held is not None and (rival is None or held < rival):
            rival = held  # younger tasks stop short of the reservation's
        return best[1], best[2], rival

    def _share(self, key: ClassKey, queued: int, slots: int) -> int:
        """A worker's part of ``queued`` tasks of class ``key``, split among the workers
        with room that could take them; a part of a round or more, in whole rounds of its
        ``slots``: what is left over a whole number of rounds goes to the workers served
        first, which start first, and the others end a round sooner (200 tasks on 4 x 8
        slots: 56, 48, 48, 48, one worker running a seventh round, not all four). Less than
        a round stays spread (40 tasks behind 4 x 100 busy slots: 10 each)."""
        takers = sum(k.takers(key[3]) for k in self._kinds(key)) if self._by_kind() else \
            sum(1 for w in self._workers.values() if w.running < w.room and fits(w, key))
        share = -(-queued // max(1, takers))
        return share if share < slots or slots < 1 else -(-share // slots) * slots

    def _reservations(self) -> dict[str, Entry]:
        """Workers held for a task that waits for a free slot or to run alone (the head of
        a SLOT or ALONE class that no worker takes now): worker name -> the best such head
        it could take. Only tasks ahead of that head may still go to it. A SLOT head holds
        every worker that could take it (their queues drain, the first slot to free is its);
        an ALONE head one: the one it held before while that can still take it, else the
        one with the least in flight (it drains first, as far as is known), so that the
        others work on while it drains."""
        out: dict[str, Entry] = {}
        held_for: dict[TaskKey, str] = {}
        for key in [k for k in self._classes if k[4]]:
            head = self._head(key)
            if head is None or self._taker(key) is not None:
                continue  # placeable now: assign() takes it in its turn
            able = [w for w in self._workers.values() if w.room > 0 and fits(w, key)]
            if key[4] == ALONE and able:
                name = self._held_for.get(head[2])
                held = next((w for w in able if w.name == name), None) or \
                    min(able, key=lambda w: (w.running, w.name))
                held_for[head[2]] = held.name
                able = [held]
            for w in able:
                if w.name not in out or head < out[w.name]:
                    out[w.name] = head
        self._held_for = held_for
        return out

    def _taker(self, key: ClassKey, reserved: frozenset[str] | set[str] = frozenset()
               ) -> WorkerSlot | None:
        """The worker the head of class ``key`` would go to now, or None."""
        difficulty, role, handler, trusted, place = key
        if self._slots_only and not place:
            place = SLOT
        if not reserved and self._by_kind():
            best = self._index.best(self._kinds(key), trusted, place)
            worker = None if best is None else self._workers[best[3]]
        else:  # (reserved: a few workers held for a task waiting for a slot, seldom)
            worker = best_fit(self._workers.values(), difficulty, role, handler, trusted,
                              place, reserved)
        if worker is None and key[3]:
            worker = self._untrusted_fallback(key)
        return worker

    def _by_kind(self) -> bool:
        """A choice is made in the index (see the class's note)."""
        if self.indexed is None:
            return 2 * len(self._index.kinds) <= len(self._workers)
        return self.indexed

    def _kinds(self, key: ClassKey) -> list[Kind]:
        """The kinds of worker that can do tasks of class ``key`` (room aside)."""
        difficulty, role, handler = key[0], key[1], key[2]
        return [k for k in self._index.kinds.values() if can_do(k, difficulty, role, handler)]

    def check_index(self) -> None:
        """Every worker filed as it is (AssertionError otherwise; see touch())."""
        self._index.check(self._workers.values())

    def _untrusted_fallback(self, key: ClassKey) -> WorkerSlot | None:
        """A task for trusted workers only, and none that could ever take it: an idle worker
        on probation may (it earns trust by this very task), rather than the task waiting
        for ever."""
        difficulty, role, handler, _, place = key
        if any(w.trusted and can_do(w, difficulty, role, handler)
               for w in self._workers.values()):
            return None  # a trusted one will, when it has room
        idle = (w for w in self._workers.values() if w.running == 0)
        return best_fit(idle, difficulty, role, handler, place=place)

    def _head(self, key: ClassKey) -> Entry | None:
        """The best live entry of class ``key`` (None, and the class is dropped, when it has
        none left); the stale entries before it are dropped."""
        queue, where = self._classes[key], self._where
        run, heap = queue.run, queue.heap
        while run and where.get(run[0][2]) is not run[0]:
            run.popleft()  # discarded earlier
        while heap and where.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        if run:
            return heap[0] if heap and heap[0] < run[0] else run[0]
        if heap:
            return heap[0]
        del self._classes[key]
        return None

    def blocked(self) -> list[Blocked]:
        """Queued tasks that no connected worker can do, even when idle: one Blocked for
        each difficulty, role and handler (tasks that run alone, or only on trusted workers,
        among the others: a worker on probation earns trust, so that is no block)."""
        entries: dict[tuple[int, str | None, str | None], list[Entry]] = {}
        for key in list(self._classes):
            if self._head(key) is None:
                continue
            difficulty, role, handler, _, _ = key
            if not any(can_do(w, difficulty, role, handler) for w in self._workers.values()):
                entries.setdefault((difficulty, role, handler), []).extend(
                    self._live_entries(key))
        out = []
        for (difficulty, role, handler), live in entries.items():
            fitting = [w for w in self._workers.values() if role_fits(w.role, role)]
            # (with no worker of the role, the role is what is missing, said first)
            has = handler is None or not fitting or any(handler in w.handlers for w in fitting)
            if handler is not None:
                fitting = [w for w in fitting if handler in w.handlers]
            tasks = tuple(t for _, _, t in sorted(live))
            out.append(Blocked(difficulty, role, tasks, max((w.skill for w in fitting),
                                                            default=None), handler, has))
        return out

    def _live_entries(self, key: ClassKey) -> list[tuple[int, int, TaskKey]]:
        return [e for e in self._classes.get(key, ()) if self._where.get(e[2]) is e]

    def queued(self) -> list[TaskKey]:
        """Queued tasks in the order they would go out (for status displays and reports)."""
        entries = [e for key in self._classes for e in self._live_entries(key)]
        return [task for _, _, task in sorted(entries)]
