"""More of the world for the admin's state machine (test_admin_state_machine): results sent
again long after, paused workers waking with a result before anything else, worker processes
restarted with nothing held, priorities, and an admin killed and restarted on a real journal
at any step. On top of the invariants there: the counts a status shows add up, a task given
up as lost was with that many workers, and the admin never sees more started on a worker
than its slots (hypothesis, stateful)."""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from kit import JSim, Sim, SimWorker
from test_admin_state_machine import AdminMachine, ForgettingMachine

from ceylon_net.core import commands as c
from ceylon_net.core.board import TaskState
from ceylon_net.core.snapshot import counts
from ceylon_net.core.tasks import Task, TaskResult
from ceylon_net.edge.journal import record_round
from ceylon_net.wire import Kind

RUN = settings(max_examples=100, stateful_step_count=40, deadline=None)


class WorldMachine(AdminMachine):
    PREFETCH = None  # pipelining, as by default

    def __init__(self) -> None:
        super().__init__()
        self.sent_results: dict[bytes, list[TaskResult]] = defaultdict(list)
        self.reached: dict[Any, set[tuple[bytes, int]]] = defaultdict(set)

    def carry(self, cmds: list[Any]) -> list[Any]:
        for cmd in cmds:
            if isinstance(cmd, c.Assign) and cmd.peer not in self.unreachable \
                    and cmd.peer in self.sim.workers:
                self.reached_by(cmd)
        return super().carry(cmds)

    def reached_by(self, cmd: c.Assign) -> None:
        for a in cmd.assignments:
            self.reached[a.task.id].add((cmd.peer, a.attempt))

    # ---- rules
    @rule(count=st.integers(1, 3), difficulty=st.integers(1, 10),
          role=st.sampled_from([None, "a"]), priority=st.sampled_from([0, 1, 5]))
    def submit_with_a_priority(self, count: int, difficulty: int, role: str | None,
                               priority: int) -> None:
        tasks = []
        for _ in range(count):
            tasks.append(Task(len(self.submitted), "t", difficulty, role, priority=priority))
            self.submitted.append(tasks[-1].id)
        self.sim.submit(*tasks)

    @precondition(lambda self: self.sim.workers)
    @rule(data=st.data(), capacity=st.integers(1, 3))
    def the_process_restarts_with_nothing(self, data: st.DataObject, capacity: int) -> None:
        """The worker process died and was started again: a new connection, nothing held,
        maybe another --concurrency."""
        old = data.draw(st.sampled_from(sorted(self.sim.workers.values(), key=lambda w: w.peer)))
        self._gone(old)
        self.sim.worker(old.name, skill=old.skill, role=old.role, capacity=capacity,
                        answers_unheld=old.answers_unheld).hello()

    def _gone(self, w: SimWorker) -> None:
        del self.sim.workers[w.peer]
        self.silent.discard(w.peer)
        for waiting in (self.late, self.pending, self.given_back):
            waiting.pop(w.peer, None)

    @precondition(lambda self: self.sim.workers)
    @rule(data=st.data())
    def restart_with_a_new_connection(self, data: st.DataObject) -> None:
        """As the worker does on a new connection: only what it runs goes with it (what it
        had queued is dropped, the HELLO names what runs)."""
        old = data.draw(st.sampled_from(sorted(self.sim.workers.values(), key=lambda w: w.peer)))
        self._gone(old)
        new = self.sim.worker(old.name, skill=old.skill, role=old.role, capacity=old.capacity,
                              answers_unheld=old.answers_unheld)
        started = self.started.pop(old.peer, {})
        new.held = {t: a for t, a in old.held.items() if started.get(t) == a}
        new.unacked = old.unacked
        self.started[new.peer] = dict(started)
        new.hello()

    def _registers_again(self, w: SimWorker) -> None:
        """As the worker does on registering again: what it had queued, not started, is
        dropped before the HELLO, which names what runs."""
        self.late.pop(w.peer, None)
        started = self.started.get(w.peer, {})
        for t in [t for t, a in w.held.items() if started.get(t) != a]:
            del w.held[t]
        w.hello()

    @precondition(lambda self: self.holding())
    @rule(data=st.data(), success=st.booleans())
    def finish(self, data: st.DataObject, success: bool) -> None:
        w, task_id = data.draw(st.sampled_from(self.holding()))
        self._finish(w, task_id, success)

    def _finish(self, w: SimWorker, task_id: Any, success: bool) -> None:
        attempt = w.held[task_id]
        w.finish(task_id, success=success)
        self.sent_results[w.peer].append(w.unacked.get((task_id, attempt)) or TaskResult(
            task_id, w.name, success, 0.001, attempt=attempt))

    def resendable(self) -> list[bytes]:
        return sorted(p for p in self.sent_results if p in self.sim.workers
                      and p not in self.silent)

    @precondition(lambda self: self.resendable())
    @rule(data=st.data())
    def a_result_is_sent_again(self, data: st.DataObject) -> None:
        """Its ACK crossed it, or was lost: the same result again, maybe long after."""
        peer = data.draw(st.sampled_from(self.resendable()))
        self.sim.workers[peer].say(Kind.RESULT, [data.draw(st.sampled_from(
            self.sent_results[peer]))])

    def startable(self) -> list[tuple[SimWorker, Any]]:
        """Held, not started, on a worker with a slot free (as its runner starts them)."""
        out = []
        for w, t in self.holding():
            started = self.started.get(w.peer, {})
            running = sum(1 for x, a in w.held.items() if started.get(x) == a)
            if started.get(t) != w.held[t] and running + max(w.stuck, 0) < w.capacity:
                out.append((w, t))
        return out

    @precondition(lambda self: self.startable())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        w, task_id = data.draw(st.sampled_from(self.startable()))
        self._answer(w)  # (a cancelled task's result goes before the next one's start)
        if task_id in w.held:
            self.started.setdefault(w.peer, {})[task_id] = w.held[task_id]
            w.start(task_id)

    def silent_holding(self) -> list[tuple[SimWorker, Any]]:
        return [(w, t) for w in self.sim.workers.values() if w.peer in self.silent
                for t in sorted(w.held, key=str)]

    @precondition(lambda self: self.silent_holding())
    @rule(data=st.data(), success=st.booleans(), beat=st.booleans())
    def a_paused_worker_wakes_with_a_result(self, data: st.DataObject, success: bool,
                                            beat: bool) -> None:
        """Paused (the admin may have found it gone): its first words on waking are a
        result and maybe a heartbeat, on the connection it had, before any HELLO."""
        w, t = data.draw(st.sampled_from(self.silent_holding()))
        self._finish(w, t, success)
        if beat:
            w.heartbeat()

    # ---- what must always hold
    @invariant()
    def the_counts_shown_add_up(self) -> None:
        k = counts(self.sim.st)
        assert min(k.values()) >= 0, k
        assert k["succeeded"] + k["failed"] + k["cancelled"] + k["unassigned"] == k["done"], k
        assert k["running"] + k["queued"] + k["waiting"] + k["done"] == k["total"], k
        assert len(self.finished) == k["done"], (dict(self.finished), k)

    @invariant()
    def a_task_lost_too_often_was_with_that_many_workers(self) -> None:
        """Only attempts that reached a worker count: one sent to a worker found
        unreachable is not an attempt."""
        board = self.sim.st.board
        for t in board.dead:
            assert len(self.reached[t]) >= board.max_attempts, (t, self.reached[t])

    @invariant()
    def no_worker_is_seen_running_more_than_its_slots(self) -> None:
        started: dict[str, int] = defaultdict(int)
        for rec in self.sim.st.board.records.values():
            if rec.state is TaskState.RUNNING and rec.started:
                started[rec.worker] += 1
        for name, n in started.items():
            rec = self.sim.st.members.registry.by_peer.get(self.sim.st.peer_of(name))
            assert rec is None or n <= rec.detail.capacity, (name, n, rec.detail.capacity)


WorldMachine.TestCase.settings = RUN
TestWorldMachine = WorldMachine.TestCase


class WorldMachineNoPipelining(WorldMachine):
    PREFETCH = 0


WorldMachineNoPipelining.TestCase.settings = RUN
TestWorldMachineNoPipelining = WorldMachineNoPipelining.TestCase


class OneAttemptMachine(WorldMachine):
    """--max-attempts 1: a task lost once is given up, never run again."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = Sim(max_attempts=1, unassignable_timeout=5.0, prefetch=None,
                       keep_finished=100_000)
        self.sim.carry = self.carry  # type: ignore[method-assign]


OneAttemptMachine.TestCase.settings = RUN
TestOneAttemptMachine = OneAttemptMachine.TestCase


class JournalMachine(WorldMachine):
    """With a journal, the admin killed and started again on it at any step (up to three
    times a run): every invariant holds across, and every task ends once."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ceylon-machine-"))
        self.sim = self.journaled(self.dir / "journal.db")
        self.restarts, self.restarting = 0, False

    def journaled(self, path: Path) -> JSim:
        sim = JSim(path, max_attempts=2, unassignable_timeout=2.0, prefetch=None,
                   keep_finished=self.KEEP)
        sim.carry = self.carry  # type: ignore[method-assign]
        return sim

    def carry(self, cmds: list[Any]) -> list[Any]:
        record_round(self.sim.journal, self.sim.st, cmds)  # (as Admin._apply, first)
        return super().carry(cmds)

    @precondition(lambda self: self.restarts < 3)
    @rule()
    def the_admin_is_killed_and_restarted(self) -> None:
        self.restarts += 1
        old = self.sim
        self.restarting = True  # (until it is up: a restart that raised leaves no admin)
        new = old.restart()
        self.restarting = False
        new.carry = self.carry  # type: ignore[method-assign]
        new._peers = old._peers
        for peer, w in old.workers.items():
            w.sim = new
            new.workers[peer] = w
        self.sim = new
        for lost in (self.late, self.pending, self.given_back):  # (with the connections)
            lost.clear()
        for w in self.talking():
            self._registers_again(w)

    def teardown(self) -> None:
        try:
            if not self.restarting:
                super().teardown()
        finally:
            self.sim.journal.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


JournalMachine.TestCase.settings = RUN
TestJournalMachine = JournalMachine.TestCase


class JournalForgettingMachine(JournalMachine, ForgettingMachine):
    """The same with --keep-finished 1, batches from a client and execute()'s tasks: what
    is kept stays bounded across restarts too."""

    KEEP = 1


JournalForgettingMachine.TestCase.settings = settings(RUN, max_examples=300)
TestJournalForgettingMachine = JournalForgettingMachine.TestCase
