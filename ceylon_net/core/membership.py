"""Worker membership: who may register, what a (re)registering worker still holds, heartbeats
both ways, whether it hears broadcasts (and what it missed of them), drain, leave, and who is
lost. Pure: ``now`` is an argument, effects are commands.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from .. import wire
from ..errors import RemoteProtocolError
from ..settings import AdminSettings
from ..wire import MAX_CAPACITY, PROTOCOL_VERSION, Envelope, Hello, Kind
from .board import ENDED, FINISHED, IN_FLIGHT, TaskBoard
from .broadcasts import REPAIR_BATCH, BroadcastLog
from .commands import Connected, Forward, Outbox, Timer
from .guard import Hush
from .mailbox import DELIVER_AGAIN, DELIVER_CHUNK, DELIVER_SLOWEST, Mailbox, by_sender
from .pacing import HELLO_AGAIN_MAX, Pace, Pulse
from .scheduler import WorkerSlot
from .stats import AdminStats
from .tasks import TaskId, TaskResult, listed
from .workers import AgentDetail, Registry, WorkerRecord, WorkerState

_WITH_A_WORKER_OR_ENDED = ENDED | IN_FLIGHT  # (a gone worker's task not back in the queue)

MAX_NAME = 200  # a worker's name, as ceylon_net.settings allows it
TAKEOVER_BEATS = 2  # a worker silent this many heartbeats gives its name to a newcomer
REMEMBER_LEFT = 10_000  # names of workers gone, kept to count one that comes back
REMEMBER_LOST = 1_000  # workers lost (they may come back), kept with what they can do
OWED_EACH = 100  # notices kept for a sender taken for lost (a receiver each): see owed
# A task asked back from a worker as not heard to have reached it (TaskBoard._unheard) goes
# back to the queue, unanswered, after this many heartbeats (its heartbeats come, but not
# its answers: the link to it is broken one way, or slower than that).
UNHEARD_BEATS = 10


def clip(text: str, limit: int = 64) -> str:
    """A peer's string as we quote it back (logs, REJECT reasons): bounded."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


# An admin held up this long (s) says so; a shorter hold (a busy round) is excused unsaid.
SAID_HELD_UP = 1.0


class Membership:
    def __init__(self, settings: AdminSettings, board: TaskBoard, out: Outbox,
                 stats: AdminStats, limits: wire.Limits, broadcasts: BroadcastLog,
                 pace: Pace | None = None) -> None:
        self.settings = settings
        self.pace = pace or Pace(settings.prefetch)
        self.pulse = Pulse(settings.heartbeat, settings.liveness, settings.beats_per_second)
        self.board = board
        self.out = out
        self.refusals = Hush()  # which refusals are logged
        self.stats = stats
        self.limits = limits
        self.broadcasts = broadcasts
        self.registry = Registry()
        self.joined = 0  # registrations so far (watchers compare it to notice a new worker)
        self.pub_port = 0  # announced in WELCOME
        self.epoch = 0  # this admin's broadcast sequence, announced in WELCOME
        self.deaf: dict[bytes, float] = {}  # registered, not hearing broadcasts yet: since
        self.said_deaf: set[bytes] = set()  # of them, those said not to hear it, still not
        # Names of workers that left, newest last, to count one coming back as a reconnect;
        # only the latest REMEMBER_LEFT, so names that never return cost nothing for ever.
        # With each, the broadcasts it left without confirming: (the last it had, how many).
        self._left: dict[str, tuple[int, int] | None] = {}
        # Workers lost, not back yet (a crash, a host cut off: a restart may bring them back),
        # with when last heard: tasks only they can do (see Unassignable), and messages to
        # them (mailbox), wait up to --lost-wait. The latest REMEMBER_LOST; lost_seq counts
        # changes.
        self.lost: dict[str, tuple[WorkerSlot, float]] = {}
        self.lost_seq, self.mailbox = 0, Mailbox()
        self._delivering: set[str] = set()  # held messages being delivered: a Timer is due
        self._pause: dict[str, float] = {}  # ... and how long after the last part
        # Notices of undelivered messages due to senders taken for lost themselves as the
        # wait for their receiver ran out: told when they are back (OWED_EACH at most each).
        self.owed: dict[str, list[tuple[wire.Event, int]]] = {}
        # After a restart: the workers the last process had or waited for, by what they can
        # do (journaled: see abilities), not back yet; lost if not back in the come-back
        # window (see gone_lost).
        self.gone: dict[str, WorkerSlot] = {}

    # ---- registering
    def hello(self, peer: bytes, env: Envelope, address: str, now: float
              ) -> list[TaskResult] | None:
        """Register (or re-register) the sender and welcome it; None when it is refused.
        Returns the results it carried (ones the admin never acknowledged)."""
        hello = self._admissible(peer, env, now)
        if hello is None:
            return None
        if fresh := peer not in self.registry:
            unconfirmed = None
            self._forget_lost(hello.name)
            self.gone.pop(hello.name, None)
            if hello.name in self._left:
                unconfirmed = self._left.pop(hello.name)
                self.stats.reconnects += 1
            self._register(peer, hello, address, now)
            self.registry.by_peer[peer].unconfirmed = unconfirmed
        s = self.settings
        self.pulse.update(len(self.registry), now)  # the others hear it on the next beat
        self.out.send(peer, Kind.WELCOME, wire.Welcome(hello.name, s.name, self.pub_port,
                                                       self.pulse.every, s.liveness,
                                                       self.epoch, s.max_message_bytes))
        for event, answers in self.owed.pop(hello.name, ()) if fresh else ():
            self.out.send(peer, Kind.EVENT, event, answers)  # (said while it was lost)
        if fresh and (held := len(self.mailbox.held.get(hello.name, ()))):
            self.out.log("INFO", f"worker '{hello.name}' is back: delivering the {held} "
                                 f"message(s) held for it while it was lost")
            self.deliver_held(hello.name)  # (a HELLO again, its WELCOME lost: under way)
        return self._reconcile(self.registry.by_peer[peer], hello, now)

    def deliver_held(self, name: str) -> None:
        """The messages held for a worker while it was lost (see Mailbox), in order, after
        its WELCOME: DELIVER_CHUNK now, the next part in the next round; once a part found
        its queue full (held_again), one at a time, DELIVER_AGAIN s on, doubling."""
        self._delivering.discard(name)
        peer = self.registry.by_name.get(name)
        if peer is None:  # (gone again: held on, for when it is back)
            return
        stalled = self.mailbox.stalled(name)  # (the last part found its queue full)
        # (the next part at once while they go: held behind them, new messages to it waited
        # 0.1 s a part, and past 5,000 were refused though its queue had room, a review)
        self._pause[name] = min(max(DELIVER_AGAIN, 2 * self._pause.get(name, 0.0)),
                                DELIVER_SLOWEST) if stalled else 0.0
        for header, payload in self.mailbox.take(name, 1 if stalled else DELIVER_CHUNK):
            self.out.add(Forward(peer, Kind.DIRECT, header, payload, held=True))
        self.deliver_later(name)

    def held_again(self, header: wire.Header, payload: bytes) -> None:
        """A held message its receiver's queue had no room for: held again, in its place,
        and tried again shortly."""
        self.mailbox.again(header.to or "", header, payload)
        self.deliver_later(header.to or "")

    def deliver_later(self, name: str) -> None:
        """Deliver what is held for ``name`` a pause from now (once; see deliver_held)."""
        if name not in self.mailbox.held:
            self._pause.pop(name, None)
        elif name not in self._delivering:
            self._delivering.add(name)
            self.out.add(Timer(("deliver", name), self._pause.get(name, DELIVER_AGAIN)))

    def held_undelivered(self, name: str, why: str) -> None:
        """A worker messages were held for is waited for no more: each sender is told how
        many of its messages to it were not delivered, and why."""
        held = self.mailbox.take(name) if self.mailbox.count else []
        if not held:
            return
        self.out.log("WARNING", f"{len(held)} message(s) held for worker '{name}' not "
                                f"delivered: {why}")
        for sender, (count, last) in by_sender(held).items():
            event = wire.Event("undelivered", {"to": name, "reason": why, "count": count})
            if (peer := self.registry.by_name.get(sender)) is not None:
                self.out.send(peer, Kind.EVENT, event, last)
            elif sender in self.lost and len(owed := self.owed.setdefault(sender, [])) \
                    < OWED_EACH:  # (lost itself: told if it comes back)
                owed.append((event, last))

    def reject(self, peer: bytes, reason: str, answers: int | None = None,
               retry: bool = False, now: float | None = None) -> None:
        """Refuse a peer's HELLO or request (``answers``: its msg_id, so the peer knows which
        of its messages this answers; ``retry``: it may ask again, as the answer may
        change). Logged, at ``now`` as the refusals' Hush allows (a peer refused again and
        again was a log line each, 100 a second: a review of hostile peers)."""
        if now is None or self.refusals.say(peer, now):
            more = "" if now is None else " (more refusals of it within a minute: not logged)"
            self.out.log("WARNING", f"rejected {peer!r}: {reason}{more}")
        self.out.send(peer, Kind.REJECT, wire.Reject(reason, retry=retry), answers)

    def _admissible(self, peer: bytes, env: Envelope, now: float) -> Hello | None:
        h, workspace = env.header, self.settings.workspace
        if h.version != PROTOCOL_VERSION:
            self.reject(peer, f"protocol version {h.version} != admin's {PROTOCOL_VERSION}",
                        h.msg_id, now=now)
            return None
        if h.workspace != workspace:  # known from the header: the payload stays unread
            self.reject(peer, f"worker '{clip(h.sender)}' rejected: workspace "
                              f"'{clip(h.workspace)}' != admin's '{workspace}'", h.msg_id,
                        now=now)
            return None
        try:
            hello = wire.unpack(Hello, env.payload, self.limits)
        except RemoteProtocolError as exc:  # (a bad frame: counted, its sender cut off)
            self.out.send(peer, Kind.REJECT, wire.Reject(f"bad HELLO: {clip(str(exc))}"),
                          h.msg_id)
            raise RemoteProtocolError(f"bad HELLO: {exc}") from None
        refusal = self._problem(peer, hello, now)
        if refusal is not None:
            self.reject(peer, refusal.reason, h.msg_id, refusal.retry, now)
            return None
        return hello

    def _problem(self, peer: bytes, hello: Hello, now: float) -> wire.Reject | None:
        name = clip(hello.name)  # as quoted back (the name itself is what its results say)
        if not 0 <= hello.skill <= 10 or not 1 <= hello.capacity <= MAX_CAPACITY:
            return wire.Reject(f"worker '{name}' rejected: skill must be 0-10 and capacity "
                               f"1-{MAX_CAPACITY}")
        if not hello.name or hello.name == self.settings.name:
            return wire.Reject(f"worker name '{name}' is reserved")
        if len(hello.name) > MAX_NAME:
            return wire.Reject(f"worker name '{name}' is longer than {MAX_NAME} characters")
        if max(map(len, (hello.role, *hello.handlers))) > MAX_NAME:  # (written to the log)
            return wire.Reject(f"worker '{name}': its role and handler names must be at most "
                               f"{MAX_NAME} characters")
        ours = self.settings.max_message_bytes
        if 0 < hello.max_message_bytes < ours:
            return wire.Reject(f"worker '{name}' takes messages of at most "
                               f"{hello.max_message_bytes:,} bytes and this admin sends up to "
                               f"{ours:,} (--max-message-bytes): give the worker at least "
                               f"the admin's value")
        if not all(s.isprintable() for s in (hello.name, hello.role, *hello.handlers)):
            # (a newline or a terminal escape in a name would forge lines in every log)
            return wire.Reject(f"worker {clip(hello.name)!r} rejected: its name, role and "
                               f"handler names must be printable characters")
        old = self.registry.named(hello.name)
        if old is not None and old.peer != peer:
            if now - old.last_seen > TAKEOVER_BEATS * self.pulse.every:
                # Silent for two heartbeats (one may just be late, on a busy host): most
                # likely the same worker restarted. Take the new one.
                self.leave(old.peer, "replaced by a new connection under its name")
                self._told_gone(old.peer, "replaced by a new connection under your name")
                return None
            # It may be this worker's old self, restarted: called lost soon, and this one is
            # taken then. It may ask again.
            return wire.Reject(f"worker name '{name}' is already connected (from "
                               f"{old.detail.host or '?'}); choose another --name (or wait: "
                               f"it is taken once the other one is lost)", retry=True)
        return None

    def _register(self, peer: bytes, hello: Hello, host: str, now: float) -> None:
        detail = AgentDetail(hello.name, hello.name, hello.role, hello.skill, hello.capacity,
                             host)
        self.registry.add(WorkerRecord(peer, detail, now, registered_at=now, hello_at=now))
        self.deaf[peer] = now
        self.joined += 1
        # The admin keeps some more on the worker than it runs at once (pipelining: its
        # runner still runs at most --concurrency; the rest wait in its queue).
        slots = hello.capacity
        self.board.add_worker(WorkerSlot(hello.name, hello.skill, hello.role,
                                         self._held(hello.name, slots),
                                         handlers=frozenset(hello.handlers), slots=slots,
                                         answers_unheld=hello.answers_unheld),
                              probation=True)
        self.out.log("INFO", f"worker '{hello.name}' joined from {host or '?'} (role "
                             f"{hello.role}, skill {hello.skill}, capacity {hello.capacity}); "
                             f"{len(self.registry)} connected")
        self.out.event("worker_joined", **wire.to_wire(detail))

    def _reconcile(self, rec: WorkerRecord, hello: Hello, now: float) -> list[TaskResult]:
        """A worker (re)registered telling what it still runs and which results we never
        acknowledged: keep what is still its own, requeue what it lost, stop what is not
        its any more; return the results."""
        running = self._current(rec, wire.task_pairs(hello.running, "HELLO running"))
        if hello.released:  # (given back as it registers again: not missing, see reclaim)
            self.board.released(rec.name, self.board.current(
                wire.task_pairs(hello.released, "HELLO released")))
        results = [wire.from_wire(TaskResult, r) for r in hello.results]
        # What it ran to an end here: not an answer to a cancel (it holds nothing then), nor a
        # result naming another worker (refused with the frame: AdminState._accept).
        done = self.board.current({r.task_id: r.attempt for r in results
                                   if not r.cancelled and r.worker == rec.name})
        self._handed_back(rec.name, len(self.board.hand_back(
            rec.name, {r.task_id: r.attempt for r in results if r.success and r.task_id in done})))
        held = {**running, **done}
        kept, claimed = self.board.keep(rec.name, held, running)
        self._kept(rec.name, kept, running, len(claimed))
        # Assignments younger than a heartbeat may be on their way (sent after this HELLO
        # was written): the next heartbeat settles those.
        requeued, stale = self.board.reclaim(rec.name, held, now - self.settings.heartbeat,
                                             self._unheard_limit(now))
        self._asked_unheard(rec.name)
        self.board.confirm(rec.name, running)
        if requeued:
            self.out.log("WARNING", f"worker '{rec.name}' came back without {len(requeued)} "
                                    f"of its task(s); requeued")
        records = self.board.records
        for unknown in (False, True):
            cancel = [[t, running[t]] for t in stale
                      if t in running and (t not in records) is unknown]
            if cancel:
                self.out.send(rec.peer, Kind.CANCEL, wire.Cancel(cancel, (
                    "the admin has no such task (it restarted without its journal, or the "
                    "task finished and was forgotten)") if unknown else "reassigned while away"))
        self._ask_again(rec, running)
        return results

    def _kept(self, worker: str, kept: list[TaskId], running: Container[TaskId],
              claimed: int) -> None:
        """Said: tasks queued again while it was away that stay with a worker back, still
        running, or ended while away (their results in its HELLO: "still running" was said
        of those too, a review of network faults found); and ``claimed``, those it still runs
        that went to other workers meanwhile (see TaskBoard.keep)."""
        if claimed:
            self.out.log("INFO", f"worker '{worker}' came back still running {claimed} "
                                 f"task(s) given meanwhile to other workers, not started "
                                 f"there: asked back, to stay with it")
        if kept:
            ended = sum(t not in running for t in kept)
            self.out.log("INFO", f"worker '{worker}' came back " + " and ".join(
                f"{how} {n} task(s)" for how, n in (("still running", len(kept) - ended),
                                                    ("with the results of", ended)) if n)
                + " queued again while it was away; they stay with it")

    def _handed_back(self, worker: str, count: int) -> None:
        """A worker back from being taken for lost handed over in its HELLO the results of
        ``count`` tasks given to other workers since (see TaskBoard.hand_back): said; those
        copies are cancelled there (TaskBoard.to_cancel, sent at the round's end)."""
        if count:
            self.out.log("INFO", f"worker '{worker}' came back with the result of "
                                 f"{count} task(s) given to other workers meanwhile: "
                                 f"taken, and their copies there cancelled")

    def stop_copies(self, stops: Mapping[str, Mapping[str, list[tuple[TaskId, int]]]]
                    ) -> None:
        """Cancel copies of tasks on workers that are not to run them ({worker: {reason:
        [(task, attempt)]}}, TaskBoard.to_cancel)."""
        for worker, why in stops.items():
            peer = self.registry.by_name.get(worker)
            for reason, pairs in why.items() if peer is not None else ():
                self.out.send(peer, Kind.CANCEL, wire.Cancel([[t, a] for t, a in pairs],
                                                             reason))

    def _ask_again(self, rec: WorkerRecord, running: dict[Any, int]) -> None:
        """Tasks we asked this worker to cancel, or to give back unstarted, that it still
        holds: the CANCEL or RELEASE may not have reached it (it was away, or registering
        again, when we sent it). Asked again."""
        why: dict[str, list[list[Any]]] = {}
        records = self.board.records
        for t in self.board.in_flight(rec.name):
            task = records[t]
            if task.stopping is not None and running.get(t) == task.attempt:
                why.setdefault(task.stopping, []).append([t, task.attempt])
        for reason, tasks in why.items():
            self.out.send(rec.peer, Kind.CANCEL, wire.Cancel(tasks, reason))
        back = [[t, a] for t, a in self.board.asked_back(rec.name) if running.get(t) == a]
        if back:
            self.out.send(rec.peer, Kind.RELEASE, wire.Release(back))

    # ---- while registered
    def heartbeat(self, rec: WorkerRecord, env: Envelope, now: float) -> None:
        beat = wire.unpack(wire.Heartbeat, env.payload, self.limits)
        self.registry.hears(rec, beat.pub)
        if beat.heard >= 0:
            self._hears(rec, beat.heard, beat.delivered)
            self._lost(rec, beat.lost, now)
            self._repair(rec, beat.missing, now)
        self._stuck(rec, beat.stuck)
        holding = self._current(rec, wire.task_pairs(beat.holding, "heartbeat"))
        # Anything assigned two heartbeats ago that the worker does not mention never
        # reached it; what is younger may still be on its way.
        cutoff = now - 2 * self.settings.heartbeat
        requeued, stale = self.board.reclaim(rec.name, holding, cutoff,
                                             self._unheard_limit(now))
        self._asked_unheard(rec.name)
        self.board.confirm(rec.name, holding)
        self.board.unstall(rec.name, holding, stalled_before=cutoff)
        if requeued:
            self.out.log("WARNING", f"worker '{rec.name}' never got task(s) {requeued}; "
                                    f"requeued" + (
                                        ", and it gets no task until it answers one of "
                                        "these asks (its heartbeats come, its answers do not: "
                                        "what is sent to it does not arrive)"
                                        if self.board.unanswering(rec.name) else ""))
        if stale:
            self._settle(rec, [[t, holding[t]] for t in stale])

    def _unheard_limit(self, now: float) -> float:
        """Tasks asked back as not heard to have reached their worker (TaskBoard._unheard)
        since before this, unanswered, go back to the queue (its heartbeats come, but not
        its answers: what we send it does not reach it)."""
        return now - UNHEARD_BEATS * self.pulse.every  # (its pace: slower with many workers)

    def _asked_unheard(self, worker: str) -> None:
        asked, self.board.unheard_asked = self.board.unheard_asked, []
        if asked:
            self.out.log("WARNING", f"worker '{worker}' has not said it got task(s) "
                                    f"{listed(asked, 20, repr)} in time (a slow or lossy link, "
                                    f"or a connection lost): asked back, not given elsewhere "
                                    f"until it answers (they may still be on their way, and "
                                    f"would run twice)")

    def _settle(self, rec: WorkerRecord, stale: list[list[Any]]) -> None:
        """What a worker holds that is not its own any more: an assignment that reached it
        after we had given the task to another worker (a heartbeat of before it arrived
        came late), or a result we recorded whose ACK was lost. Each is cancelled (a task
        must not run twice), a finished one acknowledged again too."""
        records = self.board.records
        done = [p for p in stale if p[0] in records and records[p[0]].status in FINISHED]
        if done:
            self.out.send(rec.peer, Kind.ACK, wire.Ack(done))
        self.out.send(rec.peer, Kind.CANCEL, wire.Cancel(stale, "not yours any more: "
                                                                "finished, or given elsewhere"))

    def _current(self, rec: WorkerRecord, pairs: dict[Any, int]) -> dict[Any, int]:
        """The worker's [task, attempt] pairs but those of a forgotten task whose id was
        given again (see TaskBoard.current): its copies of that one are told to stop, before
        anything of the new task is sent to it (its runner then holds the new one until the
        old has ended)."""
        current = self.board.current(pairs)
        if len(current) != len(pairs):
            stale = [[t, a] for t, a in pairs.items() if t not in current]
            self.out.send(rec.peer, Kind.CANCEL, wire.Cancel(
                stale, "an earlier task of that id, finished and forgotten (--keep-finished)"))
        return current

    def started(self, rec: WorkerRecord, news: wire.Started) -> None:
        """What started on the worker, and what it gave back on a RELEASE."""
        self._stuck(rec, news.stuck)
        if news.started:
            self.board.started(rec.name, self._current(
                rec, wire.task_pairs(news.started, "STARTED started")))
        if news.released:
            back = self.board.released(rec.name, self.board.current(
                wire.task_pairs(news.released, "STARTED released")))
            self.stats.stolen += len(back)
            if back:
                self.out.log("DEBUG", f"worker '{rec.name}' gave back {len(back)} queued "
                                      f"task(s) for idle workers")
        if self.board.hears_again:
            self.board.hears_again.clear()
            self.out.log("INFO", f"worker '{rec.name}' answers again what it is sent: on "
                                 f"probation (one task at a time until it shows it reads)")

    def paced(self, worker: str, results: list[TaskResult], rtt: float | None) -> None:
        """Results came from ``worker``: measure, and feed it as far ahead as that calls
        for."""
        pace = self.pace
        pace.ran(worker, sum(r.seconds for r in results) / len(results), len(results))
        if rtt is not None:
            pace.round_trip(rtt)
        slot = self.board.scheduler.workers.get(worker)
        if slot is not None:
            held = self._held(worker, slot.slots)
            if held != slot.capacity:
                slot.capacity = held
                self.board.scheduler.touch(worker)

    def _held(self, worker: str, slots: int) -> int:
        """Tasks a worker may have in flight: its slots and the credit fed ahead of them
        (none with no slot free of a leftover thread: nothing it is sent could start)."""
        return min(slots + self.pace.credit(worker, slots), MAX_CAPACITY) if slots else 0

    def _stuck(self, rec: WorkerRecord, stuck: int) -> None:
        """The worker says how many of its slots a handler holds after its task ended (past
        its time limit, or cancelled: a sync handler's thread cannot be stopped, an async
        handler may catch the cancel): it runs that many fewer at once until they end, and
        is sent that many fewer."""
        if stuck < 0:
            return  # not said: unchanged, or an older worker
        stuck = min(stuck, rec.detail.capacity)
        was = self.registry.set_stuck(rec, stuck)
        slot = self.board.scheduler.workers.get(rec.name)
        if stuck == was or slot is None:
            return
        slot.slots = rec.detail.capacity - stuck
        slot.capacity = self._held(rec.name, slot.slots)
        self.board.scheduler.touch(rec.name)
        if stuck > was:
            self.out.log("WARNING", f"worker '{rec.name}': {stuck} of its {rec.detail.capacity} "
                                    f"slot(s) held by a handler that outlived its task (a time "
                                    f"limit, a cancel: a sync handler's thread cannot be "
                                    f"stopped, an async handler may catch the cancel); it is "
                                    f"sent fewer tasks until the handler ends")
        elif not stuck:
            self.out.log("INFO", f"worker '{rec.name}': its slots are all free again")

    def steal_back(self, now: float) -> None:
        """Idle workers, and tasks waiting in other workers' queues: ask for those back."""
        patience = 3 * self.pace.rtt
        asks = self.board.steals(now, patience, self.pace.run)
        for worker, tasks in self.board.preempts().items():  # (better tasks wait for room)
            asks.setdefault(worker, []).extend(tasks)
        self.ask_back(asks)

    def ask_back(self, asks: Mapping[str, list[tuple[TaskId, int]]]) -> None:
        """Ask each worker to give back these tasks ({worker: [(task, attempt)]}) if they
        have not started there (RELEASE)."""
        for worker, tasks in asks.items():
            peer = self.registry.by_name.get(worker)
            if peer is not None:
                self.out.send(peer, Kind.RELEASE, wire.Release([[t, a] for t, a in
                                                                dict.fromkeys(tasks)]))

    def drain(self, rec: WorkerRecord) -> None:
        self.board.drain(rec.name)
        self.out.log("INFO", f"worker '{rec.name}' is draining: no new tasks for it")

    def leave(self, peer: bytes, why: str) -> None:
        """The worker is gone (left, lost, replaced, cut off): its tasks go back to the
        queue."""
        rec = self.registry.remove(peer)
        if rec is None:
            return
        self.deaf.pop(peer, None)
        self.said_deaf.discard(peer)
        self.pace.forget(rec.name)
        self._forget_oldest_left()
        self._left[rec.name] = self._unconfirmed(rec)
        if why.startswith("lost"):
            self.stats.lost += 1
            self._remember_lost(rec.name, rec.last_seen)
        if rec.name not in self.lost and not why.startswith("replaced"):
            self.held_undelivered(rec.name, f"it {why}")  # (left: not waited for)
        held = self.board.remove_worker(rec.name, why)
        requeued, ended, said = self._back(held)
        # A worker that said goodbye with nothing left behind is news, not trouble.
        level = "INFO" if why == "left" and not held else "WARNING"
        self.out.log(level, f"worker '{rec.name}' {why}; {said}")
        self.out.event("worker_left", name=rec.name, reason=why, requeued=requeued,
                       ended=ended)

    def _back(self, held: list[TaskId]) -> tuple[list[TaskId], list[TaskId], str]:
        """Tasks taken from a worker: those back in the queue, those that ended with it (lost
        too often, or being cancelled), and the words for both."""
        records = self.board.records
        ended = [t for t in held if records[t].state in ENDED]
        requeued = [t for t in held if records[t].state not in _WITH_A_WORKER_OR_ENDED]
        kept = len(held) - len(ended) - len(requeued)
        said = f"{len(requeued)} task(s) back in the queue" + (
            f", {kept} running on at the worker back from being taken for lost that still "
            f"ran it" if kept else "") + (
            f", {len(ended)} ended with it (lost too often, or being cancelled)" if ended else "")
        return requeued, ended, said

    def _remember_lost(self, name: str, heard: float) -> None:
        """Not one that was draining: it was leaving (a stop, its BYE cut short)."""
        slot = self.board.scheduler.workers.get(name)
        if slot is not None and slot.state is not WorkerState.DRAINING:
            self._remember(slot, heard)

    def _remember(self, slot: WorkerSlot, heard: float) -> None:
        self.lost.pop(slot.name, None)  # (the latest last)
        while len(self.lost) >= REMEMBER_LOST:
            oldest = next(iter(self.lost))
            del self.lost[oldest]
            self.owed.pop(oldest, None)
            self.held_undelivered(oldest, f"more than {REMEMBER_LOST:,} workers were lost "
                                          f"since it was")
        self.lost[slot.name] = (slot, heard)
        self.lost_seq += 1

    def _forget_lost(self, name: str) -> None:
        if self.lost.pop(name, None) is not None:
            self.lost_seq += 1

    def forget_lost(self, now: float) -> None:
        """Lost workers not back after --lost-wait are waited for no more."""
        wait = self.settings.lost_wait
        for name in [n for n, (_, heard) in self.lost.items() if now - heard >= wait]:
            self._forget_lost(name)
            self.owed.pop(name, None)
            self.held_undelivered(name, f"it did not come back within --lost-wait ({wait:g} s)")

    def _forget_oldest_left(self) -> None:
        while len(self._left) >= REMEMBER_LEFT:
            del self._left[next(iter(self._left))]

    def purge_lost(self, now: float) -> None:
        """Declare lost every worker silent for ``liveness`` heartbeats, and tell it so: one
        whose messages are late or lost on the way here (it hears us) would start what it
        had queued until it heard back (its tasks are going elsewhere): told, it gives them
        back and registers again, as one the admin does not know does.

        One welcomed that has said nothing since its HELLO may not have its WELCOME yet: back
        from a host cut off, the answer waits behind what TCP sends again, backed off (3-5 s
        after a 20 s cut), and it was lost again, and again, its tasks requeued each time (a
        review across hosts). It sends its HELLO again, at most HELLO_AGAIN_MAX apart, as
        long as it has no answer: it is given that much more, from its first HELLO (a HELLO
        again every 5 s kept one for ever, with its tasks: a review)."""
        limit = self.pulse.silent_limit(now)
        late = [rec for rec in self.registry.silent_since(now - limit) if rec.answered]
        late += self.registry.unanswered_since(now - limit - HELLO_AGAIN_MAX)
        for rec in late:
            silent = now - (rec.last_seen if rec.answered else rec.hello_at)
            said = "silent" if rec.answered else "silent but for its HELLO"
            self.leave(rec.peer, f"lost: {said} for {silent:.1f} s")
            self._told_gone(rec.peer, f"taken for lost (the admin heard nothing from you for "
                                      f"{silent:.1f} s{'' if rec.answered else ' but HELLO'})")

    def held_up(self, gap: float, now: float) -> None:
        """The admin itself heard nothing for ``gap`` s up to ``now`` (its process stopped, a
        suspended VM, its loop blocked): what its workers sent meanwhile may be unread yet.
        That time is not counted as their silence, nor as a new worker's deafness to the PUB
        port: a stopped admin called every worker lost, its tasks started again elsewhere (a
        review)."""
        self.registry.excuse(gap, now)
        for peer, at in self.deaf.items():
            self.deaf[peer] = min(at + gap, now)
        for name, (slot, heard) in self.lost.items():  # (--lost-wait: theirs to come back)
            self.lost[name] = (slot, min(heard + gap, now))
        if gap >= SAID_HELD_UP:  # (shorter: a busy round, a line a tick under load)
            self.out.log("WARNING", f"the admin was held up {gap:.1f} s (its process stopped, "
                                    f"or its event loop blocked): the time is not counted "
                                    f"against its workers (their silence, the waits for them "
                                    f"to come)")

    def _told_gone(self, peer: bytes, why: str) -> None:
        """A worker the admin let go (its tasks went back to the queue) may be alive, its
        messages held up on their way: told, it gives back its queue and registers again."""
        self.out.send(peer, Kind.REJECT, wire.Reject(f"{why}: register again", retry=True))

    def steal(self, worker: str, sent: tuple[tuple[Any, int], ...], within: float) -> None:
        """A worker on probation had ``within`` seconds to confirm ``sent``: take back what it
        did not confirm (see TaskBoard.steal) and tell it to drop those."""
        tasks = self.board.steal(worker, sent)
        self._asked_unheard(worker)
        if not tasks:
            return
        ids = [t for t, _ in tasks]
        said = self._back(ids)[2]
        self.out.log("WARNING", f"worker '{worker}' did not confirm task(s) "
                                f"{ids[:20]} within {within:g} s (it does "
                                f"not read what it is sent, or its link loses packets): "
                                f"{said}; it gets no more until it answers")
        peer = self.registry.by_name.get(worker)
        if peer is not None:
            self.out.send(peer, Kind.CANCEL, wire.Cancel([[t, a] for t, a in tasks],
                                                         "not confirmed in time; reassigned"))

    def purge_orphans(self) -> None:
        """Tasks waiting since a restart for a worker that did not come back: requeued."""
        for worker in list(self.board.orphans()):
            held = self.board.remove_worker(worker, "did not come back after the restart")
            self.out.log("WARNING", f"worker '{worker}' did not come back after the admin "
                                    f"restarted; {self._back(held)[2]}")

    def gone_lost(self, now: float) -> None:
        """The workers of the last process not back in the restart's window are lost from
        now (see lost)."""
        for slot in self.gone.values():
            self._remember(slot, now)
        self.gone.clear()

    def abilities(self) -> dict[str, list[Any]]:
        """What the workers that may come back can do, by name (journaled, for a restart):
        those registered, lost, or not back since the last restart."""
        every = {**self.gone, **{n: slot for n, (slot, _) in self.lost.items()},
                 **{n: w for n, w in self.board.scheduler.workers.items()
                    if w.state is not WorkerState.DRAINING}}  # (one draining is leaving)
        return {n: [w.skill, w.role, sorted(w.handlers)] for n, w in every.items()}

    def restore_abilities(self, abilities: Mapping[str, Any]) -> None:
        """The workers of :meth:`abilities`, after a restart: awaited (see gone)."""
        for name, (skill, role, handlers) in abilities.items():
            self.gone[name] = WorkerSlot(name, skill, role, 0, handlers=frozenset(handlers))

    def beat(self) -> None:
        """The admin's heartbeat: once on PUB for everyone, with the number of broadcasts
        sent; over the ROUTER only to workers that do not hear it (just joined, or their PUB
        connection is blocked): 1,000 idle workers would cost 1,000 sends a second
        otherwise. Each says how often the workers are to beat now (see Pulse); one over
        the ROUTER also the number of broadcasts sent: a worker whose PUB connection stalls
        (a lossy link's TCP backing off for minutes) learns from it what it missed, and asks
        for it over the ROUTER, where it would otherwise wait for PUB without knowing."""
        beat = self._beat()
        self.out.publish(Kind.HEARTBEAT, beat, seq=self.broadcasts.seq)
        if self.registry.unheard:
            alone = wire.Event("heartbeat", {**beat.data, "seq": self.broadcasts.seq})
            for peer in self.registry.unheard:
                self.out.send(peer, Kind.HEARTBEAT, alone)

    def _beat(self) -> wire.Event:
        return wire.Event("heartbeat", {"every": self.pulse.every, "epoch": self.epoch})

    def end(self, reason: str) -> None:
        """The run is over: tell every worker."""
        for rec in self.registry.by_peer.values():
            self.end_one(rec.peer, reason)

    def end_one(self, peer: bytes, reason: str) -> None:
        self.out.send(peer, Kind.END, wire.End(reason))

    # ---- hearing broadcasts
    def sync(self) -> bool:
        """A heartbeat on PUB for workers that do not hear broadcasts yet: the first one that
        reaches a worker tells it where it starts (and it says so at once). True while some
        joined recently and still do not hear; one that never does (its PUB port blocked)
        is said once, and waits for the regular heartbeat."""
        if not self.deaf:
            return False
        self.out.publish(Kind.HEARTBEAT, self._beat(), seq=self.broadcasts.seq)
        return True

    def answered(self, rec: WorkerRecord, now: float) -> None:
        """The worker said something after its HELLO: it has its WELCOME. Whether it hears
        the PUB port counts from now (the WELCOME may have been held up on the way, a link
        just back, and what the PUB sent it too: the port was said blocked, a review)."""
        self.registry.answers(rec, True, now)
        if rec.peer in self.deaf:
            self.deaf[rec.peer] = now

    def still_deaf(self, now: float) -> bool:
        """Workers registered a while ago that still hear nothing on PUB are named, once."""
        limit = self.pulse.every * self.settings.liveness
        for peer, since in list(self.deaf.items()):
            if now - since < limit or not (rec := self.registry.by_peer[peer]).answered:
                continue
            del self.deaf[peer]
            self.said_deaf.add(peer)
            self.out.log("WARNING", f"worker '{rec.name}' does not hear the PUB port "
                                    f"{self.pub_port} after {limit:g} s (is it blocked?): it "
                                    f"takes tasks, but no broadcast can reach it")
        return bool(self.deaf)

    def _hears(self, rec: WorkerRecord, heard: int, delivered: int) -> None:
        rec.delivered = max(rec.delivered, delivered)
        if rec.heard is None:
            rec.heard = heard
            self.deaf.pop(rec.peer, None)
            if self.said_deaf and rec.peer in self.said_deaf:  # (a slow or healed link)
                self.said_deaf.discard(rec.peer)
                self.out.log("INFO", f"worker '{rec.name}' hears the PUB port now: "
                                     f"broadcasts reach it")
            self.out.add(Connected(rec.detail))
            if rec.unconfirmed is not None and heard <= rec.unconfirmed[0]:
                # Back (taken for lost, say) with the inbox it had: it goes on from where it
                # was, and asks for what it missed; what it cannot get is counted lost.
                self.stats.broadcasts_unconfirmed -= rec.unconfirmed[1]
                self.out.log("INFO", f"worker '{rec.name}' is back and goes on with the "
                                     f"{rec.unconfirmed[1]} broadcast(s) it had not confirmed")
            rec.unconfirmed = None

    def _repair(self, rec: WorkerRecord, missing: list[list[int]], now: float) -> None:
        """Send again what it missed, REPAIR_BATCH at most for one request (the ROUTER queues
        10,000 messages a peer and drops the rest: a far-behind agent asks again for what
        did not go yet, once half of what was sent reached it, or on its next beat); what
        the ring no longer holds, it is told to skip, first, as often as it asks (a SKIP is
        small, and one dropped would leave it waiting behind it for ever; said again, it is
        counted once). A range it lists again before what was sent reaches it (it is slow,
        or asks ahead) is not sent again within two heartbeats: what follows it is."""
        log, after = self.broadcasts, rec.heard or 0
        again = now - rec.resent_at >= 2 * self.pulse.every  # (the resends may have been lost)
        if not all(len(pair) == 2 and all(type(n) is int for n in pair) for pair in missing):
            raise RemoteProtocolError("heartbeat missing: expected [first, last] numbers")
        # What was sent again and is still on its way counts: a batch in flight at most (it
        # asks again as half came: the window grew by half a batch an ask, a review found).
        low = max(after + 1, log.oldest)  # (what is older is told to skip, not sent)
        budget = REPAIR_BATCH if again else max(0, REPAIR_BATCH - sum(
            max(0, min(b, rec.resent_to) - max(a, low) + 1) for a, b in missing))
        for pair in missing:
            first, last = max(pair[0], after + 1), min(pair[1], log.seq)
            self._skip(rec, first, min(last, log.oldest - 1))
            kept = log.get(first if again else max(first, rec.resent_to + 1), last)[0][:budget]
            for sent in kept:
                self.out.add(Forward(rec.peer, Kind.BCAST, *sent.item))
            if kept:
                rec.resent_to, rec.resent_at = max(rec.resent_to, kept[-1].seq), now
            budget -= len(kept)

    def _skip(self, rec: WorkerRecord, first: int, last: int) -> None:
        """Tell it broadcasts ``first``..``last`` are gone; count (and say) what was not
        counted before."""
        if last < first:
            return
        new = last - max(first, rec.skipped_to + 1) + 1
        rec.skipped_to = max(rec.skipped_to, last)
        self.out.send(rec.peer, Kind.SKIP, wire.Skip(first, last))
        if rec.lost is None and new > 0:  # it does not say what it lost: count what we skip
            self.stats.broadcasts_lost += new
            self._say_lost(rec, new)

    def _lost(self, rec: WorkerRecord, lost: int, now: float) -> None:
        """What the worker says it lost (the ring no longer held it): counted, and said once
        a heartbeat at most (a worker far behind loses a few more on every beat)."""
        if lost < 0:
            return
        if rec.lost is None:  # its first word: what it lost before is counted already
            rec.lost = lost
            return
        if lost > rec.lost:
            self.stats.broadcasts_lost += lost - rec.lost
            rec.lost_unsaid += lost - rec.lost
            rec.lost = lost
        if rec.lost_unsaid and now - rec.lost_said_at >= self.pulse.every:
            self._say_lost(rec, rec.lost_unsaid)
            rec.lost_unsaid, rec.lost_said_at = 0, now

    def _say_lost(self, rec: WorkerRecord, n: int) -> None:
        self.out.log("WARNING", f"worker '{rec.name}' missed {n} broadcast(s) the admin no "
                                f"longer keeps (it fell more than {self.broadcasts.capacity} "
                                f"behind): lost to it")

    def _unconfirmed(self, rec: WorkerRecord) -> tuple[int, int] | None:
        """A worker that leaves without having confirmed every broadcast: counted, said;
        (the last it confirmed, how many it did not) when there are some."""
        if rec.heard is None:
            return None
        confirmed = max(rec.delivered, rec.heard)
        missed = self.broadcasts.seq - confirmed
        if missed <= 0:
            return None
        self.stats.broadcasts_unconfirmed += missed
        self.out.log("WARNING", f"worker '{rec.name}' left without confirming the last "
                                f"{missed} broadcast(s)")
        return confirmed, missed
