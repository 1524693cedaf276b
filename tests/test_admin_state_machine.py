"""Any sequence of events, from workers, clients, the clock and the network, leaves the admin's
state consistent: each task in exactly one state, never more in flight on a worker than its
capacity, and every submitted task finishes exactly once (hypothesis, stateful)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kit import Sim, SimWorker, frames, sends

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.board import IN_FLIGHT
from ceylon_net.core.tasks import Task, TaskResult
from ceylon_net.errors import ConfigError
from ceylon_net.wire import Kind

NAMES = ("w0", "w1", "w2", "w3")


class AdminMachine(RuleBasedStateMachine):
    PREFETCH: int | None = 0  # no pipelining: exactly the capacity in flight
    KEEP: int | None = 100_000  # --keep-finished (only batches from clients are forgotten)

    def __init__(self) -> None:
        super().__init__()
        self.sim = Sim(max_attempts=2, unassignable_timeout=2.0, prefetch=self.PREFETCH,
                       keep_finished=self.KEEP)
        self.sim.carry = self.carry  # type: ignore[method-assign]
        self.submitted: list[Any] = []
        self.finished: Counter[Any] = Counter()
        self.silent: set[bytes] = set()  # processes gone quiet (dead, or their host cut off)
        self.unreachable: set[bytes] = set()  # sends to them fail
        self.pending: dict[bytes, list[TaskResult]] = {}  # answers to CANCELs, not sent yet
        self.started: dict[bytes, dict[Any, int]] = {}  # what each worker started
        self.given_back: dict[bytes, list[list[Any]]] = {}  # answers to RELEASEs, not sent yet
        # Assignments on their way to a worker (a slow link): TCP keeps the order, so they
        # reach it before anything sent to it after them; lost with its connection.
        self.late: dict[bytes, dict[Any, int]] = {}

    # ---- the world's side of the commands
    def carry(self, cmds: list[Any]) -> list[Any]:
        for cmd in cmds:
            if isinstance(cmd, c.Log):
                assert cmd.level != "ERROR" or "unassignable" in cmd.message, cmd.message
            elif isinstance(cmd, c.Finished):
                self.finished[cmd.task_id] += 1
                assert self.finished[cmd.task_id] == 1, f"{cmd.task_id!r} finished twice"
        for cmd in cmds:
            w = self.sim.workers.get(getattr(cmd, "peer", None) or b"")
            if w is not None:
                self._arrive(w)  # (what was on its way comes first)
            if isinstance(cmd, c.Assign):
                self._assign(cmd, w)
            elif w is None:
                continue
            elif isinstance(cmd, c.Acknowledge):
                for t, a in cmd.results:
                    w.unacked.pop((t, a), None)
            elif isinstance(cmd, c.Send) and cmd.kind == Kind.CANCEL:
                self._cancel(w, cmd.msg)
            elif isinstance(cmd, c.Send) and cmd.kind == Kind.RELEASE:
                self._release(w, cmd.msg)
        return cmds

    def _arrive(self, w: SimWorker) -> None:
        for t, a in self.late.pop(w.peer, {}).items():
            w.held[t] = max(a, w.held.get(t, 0))

    def _release(self, w: SimWorker, release: wire.Release) -> None:
        started = self.started.get(w.peer, {})
        for t, a in release.tasks:
            if w.held.get(t) == a and started.get(t) != a:  # queued: given back
                del w.held[t]
                self.given_back.setdefault(w.peer, []).append([t, a])
            elif w.answers_unheld and t not in w.held and (t, a) not in w.unacked:
                self.given_back.setdefault(w.peer, []).append([t, a])  # (never got it)

    def _assign(self, cmd: c.Assign, w: SimWorker | None) -> None:
        if w is None or w.peer in self.unreachable:
            self.carry(self.sim.st.undelivered(cmd.peer, cmd.worker, cmd.assignments,
                                               self.sim.now))
            return
        for a in cmd.assignments:
            w.held[a.task.id] = max(a.attempt, w.held.get(a.task.id, 0))

    def _cancel(self, w: SimWorker, cancel: wire.Cancel) -> None:
        for t, a in cancel.tasks:
            if w.held.get(t) == a:  # as the runner does: stop it, report it cancelled
                del w.held[t]
                result = TaskResult(t, w.name, False, error="cancelled", attempt=a,
                                    cancelled=True)
                w.unacked[(t, a)] = result
                self.pending.setdefault(w.peer, []).append(result)

    def talking(self) -> list[SimWorker]:
        return [w for w in self.sim.workers.values() if w.peer not in self.silent]

    def holding(self) -> list[tuple[SimWorker, Any]]:
        return [(w, t) for w in self.talking() for t in sorted(w.held, key=str)]

    # ---- rules
    @rule(name=st.sampled_from(NAMES), skill=st.integers(1, 10),
          role=st.sampled_from(["default", "a"]), capacity=st.integers(1, 3),
          answers_unheld=st.booleans())
    def join(self, name: str, skill: int, role: str, capacity: int,
             answers_unheld: bool) -> None:
        self.sim.worker(name, skill=skill, role=role, capacity=capacity,
                        answers_unheld=answers_unheld).hello()

    @precondition(lambda self: self.sim.workers)
    @rule(data=st.data())
    def restart_with_a_new_connection(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(sorted(self.sim.workers.values(), key=lambda w: w.peer)))
        del self.sim.workers[old.peer]
        self.silent.discard(old.peer)
        new = self.sim.worker(old.name, skill=old.skill, role=old.role, capacity=old.capacity,
                              answers_unheld=old.answers_unheld)
        new.held, new.unacked = old.held, old.unacked
        self.late.pop(old.peer, None)  # (lost with its connection)
        self.pending.pop(old.peer, None)
        new.hello()

    @rule(count=st.integers(1, 3), difficulty=st.integers(1, 10),
          role=st.sampled_from([None, "a", "nobody"]), data=st.data())
    def submit(self, count: int, difficulty: int, role: str | None, data: st.DataObject) -> None:
        tasks = []
        for _ in range(count):
            deps = data.draw(st.lists(st.sampled_from(self.submitted), max_size=1)) \
                if self.submitted else []
            tasks.append(Task(len(self.submitted), "t", difficulty, role, depends_on=deps))
            self.submitted.append(tasks[-1].id)
        self.sim.submit(*tasks)

    @precondition(lambda self: self.holding())
    @rule(data=st.data(), success=st.booleans())
    def finish(self, data: st.DataObject, success: bool) -> None:
        w, task_id = data.draw(st.sampled_from(self.holding()))
        w.finish(task_id, success=success)

    @precondition(lambda self: self.talking())
    @rule(data=st.data(), pub=st.booleans())
    def heartbeat(self, data: st.DataObject, pub: bool) -> None:
        w = data.draw(st.sampled_from(self.talking()))
        self._answer(w)
        w.heartbeat(pub)

    def _answer(self, w: SimWorker) -> None:
        """What the worker answered and the admin did not hear yet arrives now."""
        back = self.given_back.pop(w.peer, [])
        if back:
            w.say(Kind.STARTED, wire.Started([], back))
        for result in self.pending.pop(w.peer, []):
            w.say(Kind.RESULT, [result])

    @precondition(lambda self: self.holding())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        w, task_id = data.draw(st.sampled_from(self.holding()))
        self.started.setdefault(w.peer, {})[task_id] = w.held[task_id]
        w.start(task_id)

    @precondition(lambda self: self.talking())
    @rule(data=st.data(), what=st.sampled_from(["silent", "leave", "drain", "cut", "heal",
                                                "garbage"]))
    def something_happens_to_a_worker(self, data: st.DataObject, what: str) -> None:
        w = data.draw(st.sampled_from(self.talking()))
        if what == "silent":
            self.silent.add(w.peer)
        elif what == "leave":
            w.say(Kind.BYE, wire.End("worker stopping"))
            del self.sim.workers[w.peer]
        elif what == "drain":
            w.say(Kind.DRAIN, wire.End("draining"))
        elif what in ("cut", "heal"):
            (self.unreachable.add if what == "cut" else self.unreachable.discard)(w.peer)
        else:
            self.sim.receive(w.peer, [Kind.RESULT, b"\xc1", b""])

    @precondition(lambda self: self.silent)
    @rule(data=st.data())
    def a_silent_worker_comes_back(self, data: st.DataObject) -> None:
        """Paused, or its host cut off, not dead: it registers again holding what it held,
        with the results the admin did not acknowledge (the admin may have found it gone and
        given its tasks to others meanwhile)."""
        peer = data.draw(st.sampled_from(sorted(self.silent)))
        self.silent.discard(peer)
        self._registers_again(self.sim.workers[peer])

    def _registers_again(self, w: SimWorker) -> None:
        """A HELLO on the connection it had: what was still on its way to it arrives before
        the WELCOME and is dropped, as Worker._await_welcome does (the admin may have called
        it lost and given those tasks to others)."""
        self.late.pop(w.peer, None)
        w.hello()

    def slowed(self) -> list[tuple[SimWorker, Any]]:
        """Assignments to workers that answer a RELEASE of a task they never got, not
        started there: ones that could be on their way still."""
        return [(w, t) for w, t in self.holding() if w.answers_unheld
                and self.started.get(w.peer, {}).get(t) != w.held[t]]

    @precondition(lambda self: self.slowed())
    @rule(data=st.data())
    def an_assignment_is_late(self, data: st.DataObject) -> None:
        """Still on its way (a slow or lossy link): the admin may take it for lost."""
        w, t = data.draw(st.sampled_from(self.slowed()))
        self.late.setdefault(w.peer, {})[t] = w.held.pop(t)

    def on_their_way(self) -> list[bytes]:
        return sorted(p for p in self.late if p in self.sim.workers)  # (not a process gone)

    @precondition(lambda self: self.on_their_way())
    @rule(data=st.data())
    def late_assignments_arrive(self, data: st.DataObject) -> None:
        self._arrive(self.sim.workers[data.draw(st.sampled_from(self.on_their_way()))])

    @precondition(lambda self: self.talking())
    @rule(data=st.data())
    def hello_again_on_the_same_connection(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.talking()))
        self._answer(w)
        self._registers_again(w)

    @precondition(lambda self: self.talking())
    @rule(data=st.data())
    def drain_and_leave_with_what_it_runs(self, data: st.DataObject) -> None:
        """DRAIN, then BYE at once (its drain timeout ran out): what it ran is cut off."""
        w = data.draw(st.sampled_from(self.talking()))
        w.say(Kind.DRAIN, wire.End("draining"))
        w.say(Kind.BYE, wire.End("worker stopping"))
        del self.sim.workers[w.peer]

    @precondition(lambda self: self.talking())
    @rule(data=st.data(), stuck=st.integers(-1, 4))
    def slots_held_by_threads(self, data: st.DataObject, stuck: int) -> None:
        """A handler's thread outlived its task (or ended): said in STARTED or a heartbeat;
        -1 is "not said", more than its capacity a lie."""
        w = data.draw(st.sampled_from(self.talking()))
        w.stuck = stuck
        if data.draw(st.booleans()):
            w.say(Kind.STARTED, wire.Started([], [], stuck))
        else:
            self._answer(w)
            w.heartbeat()

    @precondition(lambda self: self.submitted)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.sim.cancel(data.draw(st.sampled_from(self.submitted)))

    @rule(dt=st.sampled_from([0.05, 0.25, 1.0, 3.5]))
    def time_passes(self, dt: float) -> None:
        self.sim.tick(at=self.sim.now + dt)

    @precondition(lambda self: self.sim.timers)
    @rule(data=st.data())
    def a_timer_runs_out(self, data: st.DataObject) -> None:
        self.sim.fire(data.draw(st.sampled_from(self.sim.timers)))

    # ---- what must always hold
    @invariant()
    def state_is_consistent(self) -> None:
        self.sim.st.validate()

    @invariant()
    def a_worker_whose_slots_are_all_held_is_sent_nothing(self) -> None:
        """Its slots are those its threads do not hold (0 to its --concurrency); with none,
        nothing more is sent to it, not even ahead."""
        for rec in self.sim.st.members.registry.by_peer.values():
            slot = self.sim.st.board.scheduler.workers.get(rec.name)
            if slot is None:
                continue
            assert slot.slots == rec.detail.capacity - rec.stuck, (slot, rec.stuck)
            assert 0 <= rec.stuck <= rec.detail.capacity, rec.stuck
            assert slot.slots or slot.capacity == 0, slot

    @invariant()
    def a_task_is_asked_back_only_for_a_registered_worker_from_another(self) -> None:
        """Claims (a worker back from being taken for lost still runs the task): each for a
        worker still there, of a task in flight on another."""
        board = self.sim.st.board
        for task_id, (worker, _) in board._claims.items():
            rec = board.records[task_id]
            assert worker in board.scheduler.workers, (task_id, worker)
            assert rec.state in IN_FLIGHT and rec.worker != worker, (task_id, rec.state)

    @invariant()
    def nothing_runs_on_two_workers_at_once(self) -> None:
        running: Counter[Any] = Counter()
        for w in self.talking():  # registered ones: a replaced connection is told to stop
            if self.sim.st.peer_of(w.name) != w.peer:
                continue
            started = self.started.get(w.peer, {})
            running.update(t for t, a in w.held.items() if started.get(t) == a)
        assert all(n == 1 for n in running.values()), running

    def teardown(self) -> None:
        """Everyone still talking does its work; time passes: every task must end once."""
        sim = self.sim
        self.unreachable.clear()
        sim.worker("closer", skill=10, capacity=50).hello()
        for w in sim.workers.values():
            w.stuck = 0  # every thread ends in the end
        for _ in range(100):
            if all(t in self.finished for t in self.submitted):
                break
            for w in self.talking():
                if sim.st.peer_of(w.name) != w.peer:
                    self._registers_again(w)  # rejected earlier (name taken): again
                    continue
                self._answer(w)
                w.finish_all()
                w.heartbeat()
            sim.tick(at=sim.now + 1.0)
            while sim.timers:
                sim.fire()
            sim.st.validate()
        assert set(self.finished) == set(self.submitted), \
            sorted(set(self.submitted) - set(self.finished))
        assert all(n == 1 for n in self.finished.values())


AdminMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                          deadline=None)
TestAdminStateMachine = AdminMachine.TestCase


class PipelinedMachine(AdminMachine):
    """The same, with pipelining as by default: workers fed ahead of their slots, queued tasks
    asked back for idle workers, starts reported."""

    PREFETCH = None


PipelinedMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                              deadline=None)
TestPipelinedStateMachine = PipelinedMachine.TestCase


class ForgettingMachine(PipelinedMachine):
    """The same with every task sent as a client's batch to an admin that keeps one finished
    task (--keep-finished 1): finished batches are forgotten as the run goes, and a batch
    whose task depends on a forgotten one is refused, saying why."""

    KEEP = 1

    @rule(count=st.integers(1, 3), difficulty=st.integers(1, 10),
          role=st.sampled_from([None, "a", "nobody"]), grouped=st.booleans(), data=st.data())
    def submit(self, count: int, difficulty: int, role: str | None, grouped: bool,
               data: st.DataObject) -> None:
        tasks, first = [], len(self.submitted)
        for i in range(first, first + count):
            deps = data.draw(st.lists(st.sampled_from(self.submitted), max_size=1)) \
                if self.submitted else []
            tasks.append({"id": i, "description": "t", "difficulty": difficulty,
                          "required_role": role, "depends_on": deps})
        gone = [d for t in tasks for d in t["depends_on"] if d not in self.sim.st.board.records]
        doc = {"groups": [{"name": f"g{first}", "tasks": tasks}]} if grouped else \
            {"tasks": tasks}  # (a group's tasks show their live status: see follow_moves)
        cmds = self.sim.receive(b"client", frames(Kind.SUBMIT, wire.Submission(doc)))
        refused = sends(cmds, Kind.REJECT, b"client")
        assert bool(refused) == bool(gone), (refused, gone)
        if refused:
            assert "(or one of a finished batch the admin forgot: --keep-finished)" in \
                refused[0].reason, refused
        else:
            self.submitted.extend(t["id"] for t in tasks)

    @rule(difficulty=st.integers(1, 10), data=st.data())
    def execute(self, difficulty: int, data: st.DataObject) -> None:
        """A task as Admin.execute() gives it: outside batches, forgotten once finished."""
        task_id = len(self.submitted)
        deps = data.draw(st.lists(st.sampled_from(self.submitted), max_size=1)) \
            if self.submitted else []
        try:
            self.sim.submit(Task(task_id, "t", difficulty, depends_on=deps), forgettable=True)
        except ConfigError as exc:
            assert any(d not in self.sim.st.board.records for d in deps), exc
            assert "(or one the admin forgot: it keeps the latest finished" in str(exc), exc
        else:
            self.submitted.append(task_id)
        loose, followup = self.sim.st.followup.loose_done, self.sim.st.followup
        assert len(loose) <= 1 or followup.forget_due or followup._holds(
            (loose[0],), followup._needed()), list(loose)

    @invariant()
    def what_is_kept_is_bounded_and_every_task_counted(self) -> None:
        batches, board, followup = self.sim.st.batches, self.sim.st.board, self.sim.st.followup
        # Over the limit only until the next round, or while an open task depends on the
        # oldest done batch (it holds the newer ones back).
        assert batches.kept <= 1 or followup.forget_due or followup._holds(
            batches.known[batches.done[0]].task_ids, followup._needed()), \
            (batches.kept, batches.done)
        assert batches.kept == sum(len(batches.known[b].task_ids) for b in batches.done)
        assert board.total == len(self.submitted), (board.total, len(self.submitted))


ForgettingMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50,
                                               deadline=None)
TestForgettingStateMachine = ForgettingMachine.TestCase
