"""Every decision of the admin, with no I/O: the sans-IO core the ``Admin`` shell drives.

As in h11 and dask's scheduler state: inputs are method calls, with the time passed in, and
each returns the commands (:mod:`ceylon_net.core.commands`) the network edge carries out::

    st = AdminState(AdminSettings(), now=0.0)
    cmds = st.receive(peer, frames, address, now=0.1)    # a message from a worker or client
    cmds = st.tick(now=3.1)                               # timers: heartbeats, liveness...
    cmds = st.submit([Task(1, "x")], now=3.2)             # the admin's own API
    cmds = st.cancel([1], "no longer needed", now=3.3)
    cmds = st.undelivered(peer, worker, assignments, now) # an Assign that could not be sent
    cmds = st.timer(key, now)                             # a Timer it asked for ran out
    cmds = st.broadcast(header, payload, now)             # the admin's own broadcast

It imports neither zmq nor asyncio and reads no clock. A task's end, whatever its cause, comes
out as one :class:`~ceylon_net.core.commands.Finished`.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

from .. import wire
from ..errors import ConfigError, RemoteProtocolError, UnknownDependency
from ..settings import AdminSettings
from ..wire import PROTOCOL_VERSION, Envelope, Header, Kind, Limits
from .batches import Batch, Batches
from .board import TaskBoard, TaskState, unassignable, unassignable_why
from .broadcasts import BroadcastLog
from .commands import (
    Acknowledge,
    Assign,
    Command,
    Deliver,
    Forward,
    NewWork,
    Outbox,
    Timer,
)
from .followup import Followup
from .groups import TaskGroup, TaskManager, journal_keeps, unkept_goal
from .guard import Hush, PeerGuard, Tally, token_ok
from .membership import Membership, clip
from .pacing import HELD_UP, Pace
from .restore import restore
from .snapshot import snapshot
from .stats import AdminStats
from .tasks import RunReport, Task, TaskAssignment, TaskId, TaskResult, listed
from .unassignable import Unassignable
from .watchers import Watchers
from .workers import WorkerRecord
from .workfile import parse_work, work_ids

PROBATION = 0.2  # least seconds a worker on probation has to confirm its first task
SYNC_EVERY = 0.02  # seconds between PUB heartbeats while a new worker does not hear them yet
SYNC_FANOUT = 50  # ... for up to this many agents; more agents, proportionally slower
REST = 0.02  # s an idle admin leaves its ROUTER unread after reading heartbeats alone...
RESTFUL_BEATS = 100  # ... when its workers beat this often a second or more (see rest())...
QUIET = 0.2  # ... and nothing else came or was sent for this long
UNREACHABLE = "not reachable (gone, or not reading: its queue is full)"
CLIENT_KINDS = frozenset((Kind.HELLO, Kind.STATUS, Kind.SUBMIT, Kind.WATCH))
ANSWERED = frozenset((Kind.STATUS, Kind.SUBMIT, Kind.CANCEL))  # a client awaits an answer
# What a worker sends while registered, so what an admin that restarted may get from it first.
STRANGERS_MAY_SEND = frozenset((Kind.HEARTBEAT, Kind.RESULT, Kind.STARTED, Kind.BCAST,
                                Kind.DIRECT))


class AdminState:
    """The admin's whole state and policy. Parts: the task board (with the scheduler), task
    groups, client batches, worker membership, the hostile-peer guard, the unassignable
    watcher and the follow-up of finished tasks; this class routes inputs to them and ends
    each round (follow-ups, assignments, the run's end)."""

    # New work came since the last plan (see _plan); and a round that queues tasks ahead is
    # due (a Timer of no time asked for it).
    _fresh = _ahead_due = False
    _talked = -math.inf  # when a message other than a heartbeat last came, or was sent (rest)

    def __init__(self, settings: AdminSettings, now: float = 0.0) -> None:
        s = self.settings = settings
        self.name, self.workspace = s.name, s.workspace
        self.limits = Limits(max_str_len=s.max_message_bytes, max_bin_len=s.max_message_bytes)
        self.out = Outbox()
        self.stats = AdminStats()
        self.board = TaskBoard(s.max_attempts)
        self.task_manager = TaskManager()
        self.batches = Batches()
        self.guard = PeerGuard(s.bad_frame_limit, s.bad_frame_window, s.ban_seconds, s.hello_rate)
        self.broadcasts = BroadcastLog()
        self.pace = Pace(s.prefetch)  # how far ahead of its slots each worker is fed
        self.members = Membership(s, self.board, self.out, self.stats, self.limits,
                                  self.broadcasts, self.pace)
        self.unassignable = Unassignable(s.unassignable_timeout)
        # Given up: no connected worker could take them; each with why ("": not known)
        self.unassigned: dict[TaskId, str] = {}
        self.watchers = Watchers(self.board, self.out)  # clients' futures
        self.followup = Followup(self.board, self.task_manager, self.batches, self.out,
                                 self.unassigned, self.watchers, s.keep_finished)
        self.port = s.port
        self.assigning = s.expect_workers == 0  # --expect-workers holds assignment back
        self.started_at = self._next_beat = self._next_pulse = now
        self.resumed = False  # state came back from a journal
        # Workers connected when the last admin process stopped without telling them the run
        # was over (killed): a run that ends (or had ended) waits for them to come back, as
        # long as for a lost worker, so they hear it, rather than retry until their
        # --connect-timeout and exit 1.
        self.owed_end: set[str] = set()
        # Told the run is over, not heard from (see close); of them, told on a HELLO again
        self.told_end, self._told_again, self.end_reason = set[bytes](), set[bytes](), ""
        # This run's name (kept in its journal): a client WATCHing a batch names the run it
        # was submitted to, so another run's batch of the same number is not taken for it.
        self.run = ""
        self.closing = self._syncing = False  # (_syncing: a sync Timer is pending)
        self._awaited, self._spent = set[bytes](), set[tuple[bytes, str]]()  # _awaited_hello
        self._warned_senders: set[bytes] = set()
        self._refusals, self._drops = Hush(), Tally()  # which are logged: bad tokens; drops
        # Time held up in all (see held_up); what it was as each probation timer was set
        self._held, self._armed = 0.0, dict[tuple[Any, ...], float]()

    def started(self, now: float, port: int, pub_port: int, epoch: int = 0) -> None:
        """The edge bound its sockets: the ports to announce, the start of the clock, and
        this process's broadcast epoch (a random number: agents start counting afresh; it
        names the run too, unless a journal named it)."""
        self.started_at = self._next_beat = self._next_pulse = now
        self.port, self.members.pub_port, self.members.epoch = port, pub_port, epoch
        self.run = self.run or f"{epoch:016x}"  # (16 digits, as a journal's)

    def pub_listeners(self, kinds: frozenset[bytes]) -> None:
        """Which kinds anyone subscribes to on PUB now (the edge says so whenever that
        changes): events and records nobody would hear are not made."""
        self.out.listening = kinds

    @property
    def probation(self) -> float:
        """Seconds a worker on probation has to confirm an assignment: a heartbeat. A round
        trip is what it takes, but a link of 250 ms (another region) or a new worker's first
        turn on a loaded host takes longer than the 0.2 s this was: its first task was taken
        back while it ran, and run again elsewhere. A peer that never reads holds one task
        that long."""
        return max(PROBATION, self.settings.heartbeat)

    @property
    def finished(self) -> bool:
        """Everything submitted has finished (and something was)."""
        return bool(self.board.total) and self.board.open == 0

    @property
    def idle(self) -> bool:
        """Finished, and no client that waited for a batch before a restart is still to pick
        it up, nor a worker to be told the run is over (see owed_end)."""
        return self.finished and not self.batches.unclaimed and not self.owed_end

    # ------------------------------------------------------------------ inputs
    def receive(self, peer: bytes, frames: Sequence[bytes], address: str = "",
                now: float = 0.0) -> list[Command]:
        """A message from a peer (ROUTER identity ``peer``, remote ``address``)."""
        return self.receive_many([(peer, frames, address)], now)

    def receive_many(self, messages: Iterable[tuple[bytes, Sequence[bytes], str]],
                     now: float) -> list[Command]:
        """Messages that arrived together: one round, so assignments and results go out
        batched per worker."""
        self.board.now = now
        for peer, frames, address in messages:
            self._receive(peer, frames, address, now)
        return self._end_round(now)

    def tick(self, now: float, due: float | None = None) -> list[Command]:
        """Timers: heartbeats out, lost workers, probation deadlines, unassignable tasks,
        orphans after a restart, progress lines. ``due``: when the edge meant to run them;
        late by a heartbeat (or HELD_UP) or more, the admin was held up (see held_up)."""
        s = self.settings
        if due is not None and now - due > min(HELD_UP, s.heartbeat):
            self._excuse(due, now)
        self.board.now = now
        pulse = self.members.pulse
        if pulse.update(len(self.members.registry), now):
            self._next_pulse = min(self._next_pulse, now + pulse.every)
        if now >= self._next_pulse:  # the workers' heartbeat: slower with many workers
            self._next_pulse = now + pulse.every
            self.members.beat()
        if now >= self._next_beat:
            self._next_beat = now + s.heartbeat
            self.followup.batch_progress()
            self._beat_clients()
            if now - self.started_at >= s.come_back:
                if self.resumed:
                    self.members.purge_orphans()  # after a restart: they had their chance
                self.members.gone_lost(now)
                self.owed_end.clear()
            if self.resumed and now - self.started_at >= s.clients_come_back:
                self.batches.unclaimed.clear()  # (the clients that waited had theirs)
            self.followup.log_progress(len(self.members.registry), self.members.registry.stuck,
                                       self.awaited)
            self.guard.forget_idle(now)
            for (sender, to, why), n in self._drops.due(now):
                self.out.log("WARNING", f"{n:,} more message(s) from '{sender}' to '{to}' "
                                        f"dropped in the last minute: {why}")
            # (a hostile peer reconnecting gets a new identity each time: forget the old)
            self._warned_senders = {p for p in self._warned_senders if self.guard.counting(p)}
        self.members.purge_lost(now)
        if self.told_end:  # (one lost or gone meanwhile is waited for no longer)
            self.told_end &= self.members.registry.by_peer.keys() | self._told_again
        self.members.still_deaf(now)
        self._give_up_unassignable(now)
        return self._end_round(now)

    def held_up(self, since: float, now: float) -> list[Command]:
        """The admin itself was held up from ``since`` to ``now`` (the edge's timers, due
        then, did not run: its process stopped, a suspended VM, its loop blocked), what was
        sent to it meanwhile unread yet: none of the clocks that wait for someone to come or
        to answer counts the time (its workers' silence, --lost-wait, the unassignable
        timeout, a restart's windows to come back in: reviews found each)."""
        self._excuse(since, now)
        return self._end_round(now)

    def _excuse(self, since: float, now: float) -> None:
        gap, s = now - since, self.settings
        self._held += gap
        self.members.held_up(gap, now)
        self.unassignable.held_up(gap)
        if since - self.started_at < max(s.come_back, s.clients_come_back):  # (not after)
            self.started_at = min(self.started_at + gap, now)

    @property
    def beat_due(self) -> float:
        """When the workers' next heartbeat is due: tick() by then (at a --heartbeat below
        the edge's tick, a beat left to the tick goes out late, and workers take the admin
        for gone)."""
        return self._next_pulse

    def rest(self, now: float) -> float:
        """How long the edge may leave what comes unread after a round in which nothing
        happened (no command): REST while no task is on a worker (none is open, or those
        queued wait for one that can take them), nothing but heartbeats came or was sent for
        QUIET s, and the workers beat RESTFUL_BEATS times a second or more, so that their
        heartbeats are read a few at a time (1,000 idle workers beat 200 times a second: a
        wake-up of the admin each was half its idle CPU); else 0, read at once. Anything
        submitted or decided meanwhile ends the rest. (Not after other messages: agents and
        clients talking through the admin waited out a rest at each step, a review's
        worker-to-worker ping-pong 2 -> 15 ms.)"""
        if self.board.on_workers or self.closing or now - self._talked < QUIET:
            return 0.0
        beats = len(self.members.registry) / self.members.pulse.every
        return REST if beats >= RESTFUL_BEATS else 0.0

    def submit(self, tasks: Sequence[Task] = (), groups: Sequence[TaskGroup] = (),
               now: float = 0.0, after: Any = None, forgettable: bool = False
               ) -> list[Command]:
        """Queue tasks and groups, all waiting on gate ``after`` if given. All or nothing:
        ConfigError (a duplicate id, an unknown dependency, a cycle) leaves the state as it
        was; and once the admin is closing, anything. ``forgettable`` tasks (execute()'s:
        their caller has the result) are forgotten once finished, beyond --keep-finished,
        as client batches are."""
        if self.closing:
            raise ConfigError(f"admin '{self.name}' is closed: it takes no more tasks")
        self.board.now = self._talked = now
        loose = forgettable and self.settings.keep_finished is not None
        try:
            self._submit(tasks, groups, after, loose=loose)
        except UnknownDependency as exc:
            if self.board.forgotten.tasks:
                raise UnknownDependency(f"{exc} (or one the admin forgot: it keeps the latest "
                                        f"finished, --keep-finished)") from None
            raise
        if loose:
            self.followup.loose.update(t.id for t in tasks)
        return self._end_round(now)

    def cancel(self, task_ids: Sequence[TaskId], reason: str = "cancelled by request",
               now: float = 0.0) -> tuple[dict[str, list[TaskId]], list[Command]]:
        """Cancel tasks: queued or waiting ones at once, running ones by asking their worker
        (they finish as cancelled when it answers, or at once if it is lost meanwhile).
        Returns what happened to each, and the commands."""
        self.board.now = self._talked = now
        outcome = self._cancel(task_ids, reason)
        return outcome, self._end_round(now)

    def undelivered(self, peer: bytes, worker: str, assignments: list[TaskAssignment],
                    now: float) -> list[Command]:
        """An :class:`Assign` could not be sent (the worker is gone or its queue is full):
        its tasks go back to the queue, to other workers now, and the worker gets nothing
        more until it is heard from (TaskBoard.unsent)."""
        self.board.now = now
        if not self.board.unreachable(worker):  # (else said with the round's first)
            self.out.log("WARNING", f"could not deliver {len(assignments)} task(s) to "
                                    f"'{worker}' (gone, or not reading); requeued, and it "
                                    f"gets no more until it is heard from")
        self.board.unsent(worker, assignments)
        return self._end_round(now)

    def unsendable(self, worker: str, bad: list[tuple[TaskAssignment, str]], now: float
                   ) -> list[Command]:
        """Assignments the edge could not encode: a task changed, through the Python API,
        after it was submitted, into what the wire cannot carry (it was looked at as it was
        then). Each fails saying why, as if its worker had said so; before, the admin
        stopped on it, with every task it held."""
        self.board.now = now
        ids = [a.task.id for a, _ in bad]
        self.out.log("ERROR", clip(f"task(s) {listed(ids, 10, repr)} could not be encoded to "
                                   f"send to worker '{worker}' (changed after they were "
                                   f"submitted?): failed; {bad[0][1]}", 1000))
        rec = self.members.registry.named(worker)
        if rec is not None:
            self._accept(rec, [TaskResult(a.task.id, worker, False, error=(
                f"the admin could not send it to a worker: {why} (was the task changed after "
                f"it was submitted?)"), attempt=a.attempt) for a, why in bad])
        return self._end_round(now)

    def undeliverable(self, worker: str) -> bool:
        """An Assign to ``worker`` could not be sent and it was not heard from since (see
        undelivered): the rest of the round's assignments to it (those it would queue
        ahead, in an Assign of their own) are not sent either, but undelivered too."""
        return self.board.unreachable(worker)

    def forward_now(self, header: Header) -> bool:
        """May a direct message to ``header.to`` be sent now? Not while one held for it,
        taken, was held again (its queue had no room): it would overtake it."""
        return not self.members.mailbox.stalled(header.to or "")

    def not_forwarded(self, peer: bytes, header: Header, now: float,
                      payload: bytes | None = None, held: bool = False) -> list[Command]:
        """A :class:`Forward` could not be sent to ``peer`` (its connection is gone, not yet
        taken for lost; or its queue is full), or was not (see forward_now). A broadcast
        sent again to one that missed it: it asks again. A message held for it (``held``)
        is held again in its place, and tried again shortly; another is held for it too
        (_hold), its sender told only when there is no room, or the receiver is gone."""
        if held and payload is not None and self._reachable_later(header.to or ""):
            self.members.held_again(header, payload)
            return self._end_round(now, assign=False)
        if header.to is None:
            self.out.log("WARNING", f"broadcast {header.seq} from '{header.sender}' could not "
                                    f"be sent again to {peer.decode(errors='replace')}: the "
                                    f"admin's queue for it is full (it asks again)")
            return self._end_round(now, assign=False)
        to, why = clip(header.to), UNREACHABLE if payload is None else "it left" if held \
            else self._hold(header, payload)
        if why is None:
            return self._end_round(now, assign=False)
        self.board.now = now
        self._dropped(header.sender, to, why)
        if (sender := self.peer_of(header.sender)) is not None:
            self._undelivered(sender, header.msg_id, to, why)
        return self._end_round(now, assign=False)

    def _hold(self, header: Header, payload: bytes) -> str | None:
        """A direct message the edge could not send: held for its receiver when the admin
        still counts on it (registered, its connection dead and not yet noticed, or its
        queue full: paused, or slow; or taken for lost), tried again shortly, and what is
        sent to it next waits behind (see Mailbox); else, or when there is no room left,
        why not."""
        to, mailbox = header.to or "", self.members.mailbox
        stalled = mailbox.stalled(to)
        if not (stalled or self._reachable_later(to)):
            return UNREACHABLE
        if stalled or to in mailbox.held:  # (behind those held)
            why = mailbox.keep(to, header, payload)
        elif (why := mailbox.full(to, len(payload))) is None:
            mailbox.again(to, header, payload)  # (the first: the next ones wait behind it)
        if why is None:
            self.members.deliver_later(to)
        return why

    def _reachable_later(self, to: str) -> bool:
        """An agent messages may be held for: registered, or one the admin waits for (taken
        for lost; after a restart, one the last process had). Not one that left (a held
        message found its queue full as it said goodbye: held again, it waited for ever)."""
        members = self.members
        return self.peer_of(to) is not None or to in members.lost or to in members.gone

    def _undelivered(self, sender: bytes, msg_id: int, to: str, why: str) -> None:
        """Tell an agent its message to ``to`` was not delivered, and why (it logs it)."""
        self.out.send(sender, Kind.EVENT, wire.Event("undelivered", {"to": to, "reason": why}),
                      msg_id)

    def timer(self, key: tuple[Any, ...], now: float) -> list[Command]:
        """A :class:`Timer` ran out: ``("probation", worker, ((task, attempt), ...))``, the
        time a worker on probation had to confirm those assignments; ``("ahead",)``, the
        round after new work filled free slots (see _plan); ``("sync",)``, ``("deliver",
        name)``."""
        self.board.now = now
        if key[0] == "probation" and not self.closing:
            held = self._held - self._armed.pop(key, self._held)
            if held > 0:  # (the admin held up meanwhile: the worker has that much more)
                self._armed[key] = self._held
                self.out.add(Timer(key, held))
            else:
                self.members.steal(key[1], key[2], self.probation)
        elif key[0] == "sync" and not self.closing:  # (said goodbye: nothing more goes out)
            self._syncing = False
            self._sync()
        elif key[0] == "deliver" and not self.closing:
            self.members.deliver_held(key[1])
        return self._end_round(now)  # (("ahead",): the plan of what is queued ahead)

    def spoke(self, now: float) -> None:
        """The admin sent a message of its own to an agent (the edge sends it): its answer
        may come soon (see rest)."""
        self._talked = now

    def broadcast(self, header: Header, payload: bytes, now: float) -> list[Command]:
        """The admin's own broadcast (``header`` names the admin as its sender): numbered,
        kept for repairs, published."""
        self.board.now = self._talked = now  # (_talked: answers may come, see rest)
        self._broadcast(header, payload, deliver=False)
        return self._end_round(now, assign=False)  # no task changed

    def close(self, reason: str, durable: bool = False) -> list[Command]:
        """The admin stops: every worker is told the run is over; and unless its state is
        ``durable`` (a journal: it may come back with it), every client waiting for tasks or
        a batch too, since nothing it waits for will come."""
        self.closing, self.end_reason = True, reason
        self.members.end(reason)
        # (until each says it heard: the edge waits for them a while before it closes its
        # sockets; an END lost on a lossy link left a worker waiting for its
        # --connect-timeout, then exit 1)
        self.told_end = set(self.members.registry.by_peer)
        if not durable:
            for peer in self._waiting_clients():
                self.out.send(peer, Kind.END, wire.End(reason))
        self.out.event("admin_stopped", reason=reason)
        return self.out.take()

    @property
    def all_heard(self) -> bool:
        """Closing, and every worker told the run is over said it heard (or is gone)."""
        return self.closing and not self.told_end

    @property
    def end_wait(self) -> float:
        """How long the edge waits at most, closing, for its workers to say they heard the
        run is over: END_WAIT, or less if a silent worker is found lost sooner (the report of
        a --tasks run comes after it: a review found 27 s of silence at --heartbeat 10)."""
        return min(END_WAIT, self.members.pulse.every * self.settings.liveness)

    def end_unsent(self, peer: bytes) -> None:
        """The END to ``peer`` could not be sent (its connection gone: the ROUTER says so at
        once): nobody there to hear it, so not waited for."""
        self.told_end.discard(peer)

    def resume(self, entries: list[Any], groups: list[tuple[str, dict[str, Any]]],
               now: float, batches: Sequence[tuple[int, list[Any]]] = (),
               slots: dict[str, int] | None = None,
               forgotten: tuple[int, list[int]] | None = None,
               owed: Iterable[str] = (), loose: Iterable[TaskId] = ()) -> bool:
        """Rebuild from a journal's tasks, groups, client batches, its workers' slots and
        what it forgot (the next batch's number, the counts: see Forgot), and keep track of
        changes from now on, for it; False when it held no task. ``owed``: the workers the
        last process did not tell the run was over (see owed_end); ``loose``: execute()'s
        tasks (forgotten once finished, beyond --keep-finished)."""
        self.board.dirty = set()
        self.board.slots_of_gone = dict(slots or {})
        self._awaited = {n.encode() for n in self.board.slots_of_gone}
        self.resumed = restore(self.board, self.task_manager, entries, groups,
                               Batches.gates(batches))
        if self.resumed:
            for gate in self.batches.restore(batches, self.board.records):
                self.board.open_gate(gate)
        if forgotten is not None:  # (even with every task forgotten: numbers go on)
            self.batches.renumber(forgotten[0])
            self.board.restore_forgotten(forgotten[1])
            if not self.resumed:  # every task forgotten: the run had started, and had ended
                self.followup.run_announced = self.assigning = True
        for group, goal in self.task_manager.unkept_goals:
            self.out.log("WARNING", unkept_goal(group, goal, restarted=True))
        self.started_at = now
        # Given up as unassignable (reported apart from cancellations): by their reason.
        self.unassigned.clear()  # (in place: the follow-up holds it too)
        self.unassigned.update((t, unassignable_why(rec.reason or ""))
                               for t, rec in self.board.records.items()
                               if rec.state is TaskState.CANCELLED and unassignable(rec.reason))
        if self.resumed:
            self.board.moved = [] if self.task_manager.task_groups else None
            self.followup.run_announced = self.idle
            self._resume_assigning()
        self._owe_end(owed, forgotten is not None)
        self._forget_again(loose)
        return self.resumed

    def _forget_again(self, loose: Iterable[TaskId]) -> None:
        """After a restart, with --keep-finished: execute()'s tasks (``loose``) are forgotten
        once finished, and what the last process had yet to forget (it was killed in
        between, or held it back) is forgotten at once: else kept until a batch finished."""
        if self.settings.keep_finished is not None:
            self.followup.restore_loose(loose, self.board.records)
            self.followup.forget_due, self.followup.forget_at = True, 0.0

    def _owe_end(self, owed: Iterable[str], forgot: bool) -> None:
        """After the above (a run that had ended was announced, not again): the workers the
        last process did not tell, when it held a run (``forgot``: one every task of which
        was forgotten held one too)."""
        self.owed_end = set(owed) if self.resumed or forgot else set()
        if self.owed_end and self.board.open == 0:
            self.out.log("INFO", f"the run had finished, and the last admin process stopped "
                                 f"before it told its workers: waiting up to "
                                 f"{self.settings.come_back:g} s for "
                                 f"{listed(sorted(self.owed_end), 5, repr)} to come back, to "
                                 f"tell them")

    def _resume_assigning(self) -> None:
        """--expect-workers holds back a run's start, not a run resumed after it started:
        its workers may not all come back (those that do pick up where they were)."""
        if self.assigning or not any(r.attempt for r in self.board.records.values()):
            # (none was ever given to a worker: one cancelled before, say, is no start)
            return
        self.assigning = True
        self.out.log("INFO", f"resumed a run that had started: assigning as workers come, "
                             f"not waiting for {self.settings.expect_workers} again "
                             f"(--expect-workers)")

    @property
    def awaited(self) -> int:
        """Workers still to connect before tasks are assigned (--expect-workers)."""
        return 0 if self.assigning else \
            max(0, self.settings.expect_workers - len(self.members.registry))

    # ------------------------------------------------------------------ views
    def report(self, only: Iterable[TaskId] | None = None) -> RunReport:
        report = self.followup.report(only)
        if only is None:
            report.groups = self.task_manager.summaries()
        return report

    def peer_of(self, name: str) -> bytes | None:
        """The ROUTER identity of a registered agent (by name), or None."""
        return self.members.registry.by_name.get(name)

    def workers(self) -> list[WorkerRecord]:
        return list(self.members.registry.by_peer.values())

    def connected(self) -> list[WorkerRecord]:
        """Workers that hear broadcasts: what the user sees as connected agents."""
        return self.members.registry.hearing()

    def validate(self) -> None:
        """Check the state's invariants (AssertionError otherwise): the board's, and that the
        registered workers are exactly the scheduler's."""
        self.board.validate()
        names = set(self.members.registry.by_name)
        assert names == set(self.board.scheduler.workers), "registry and scheduler differ"

    # ------------------------------------------------------------------ one message
    def _awaited_hello(self, peer: bytes, address: str, now: float) -> bytes:
        """The name of a worker of the last process not back yet (its DEALER's identity is
        name/uuid) when this HELLO is the first under it from this address, in the
        come-back window: it is not held to the per-address HELLO rate. They come all at
        once, as they hear this process on PUB; dropped, they would try again too late.
        Once a name and address (a flood under it is held to the rate; one from elsewhere
        does not spend it), until a worker of that name is back. b"": not such a HELLO."""
        if not self._awaited:
            return b""
        if now - self.started_at >= self.settings.come_back:  # (the window is over)
            self._awaited.clear()
            self._spent.clear()
            return b""
        name, slash, _ = peer.rpartition(b"/")
        if not slash or name not in self._awaited or (name, address) in self._spent:
            return b""
        self._spent.add((name, address))
        return name

    def _back(self, peer: bytes, name: bytes) -> None:
        """After an exempt HELLO: is a worker of its name registered from it now?"""
        rec = self.members.registry.by_peer.get(peer)
        if rec is not None and rec.name.encode() == name:
            self._awaited.discard(name)

    def _receive(self, peer: bytes, frames: Sequence[bytes], address: str, now: float) -> None:
        if self.guard.banned and self.guard.is_banned(peer, now):
            self.stats.bad_frames += 1
            return
        if not frames or frames[0] != Kind.HEARTBEAT:
            self._talked = now  # (see rest)
        awaited = b""
        if frames and frames[0] == Kind.HELLO and peer not in self.members.registry \
                and not (awaited := self._awaited_hello(peer, address, now)) \
                and not self.guard.allow_hello(address or "?", now):
            self.stats.dropped_hellos += 1
            return
        try:
            env = wire.decode_frames(frames, self.limits)
        except RemoteProtocolError as exc:
            self._bad_frame(peer, address, str(exc), now)
            return
        except MemoryError:
            self._out_of_memory(peer, None)
            return
        try:
            self._dispatch(peer, env, address, now)
            if awaited:
                self._back(peer, awaited)
        except MemoryError:
            self._out_of_memory(peer, env)
        except RemoteProtocolError as exc:
            self._refuse_request(peer, env, f"bad request: {clip(str(exc))}")
            self._bad_frame(peer, address, str(exc), now)
        except Exception as exc:
            # Our bug, triggered by what this peer sent: log it with the traceback, drop the
            # frame, and keep serving everyone else.
            self.out.log("ERROR", f"handling {env.kind.decode()} from {peer!r} failed; frame "
                                  f"dropped\n{''.join(traceback.format_exception(exc))}")
            self._bad_frame(peer, address, f"{type(exc).__name__}: {exc}", now)

    def _out_of_memory(self, peer: bytes, env: Envelope | None) -> None:
        """A frame the admin had no memory for: dropped, not counted against its sender (it
        was taken for a bad frame, and the client told its batch was a bad request: a
        review); a client waiting for an answer is told."""
        kind = "a frame" if env is None else env.kind.decode()
        self.out.log("ERROR", f"out of memory taking {kind} from {peer!r}: dropped")
        if env is not None:
            self._refuse_request(peer, env, "the admin is out of memory: not taken")

    def _refuse_request(self, peer: bytes, env: Envelope, why: str) -> None:
        """A client that waits for the answer to this request is told why it was not
        taken."""
        if env.kind in ANSWERED and peer not in self.members.registry:
            self.out.send(peer, Kind.REJECT, wire.Reject(why), env.header.msg_id)

    def _dispatch(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        rec = self.members.registry.get(peer)
        if rec is not None:
            self.members.registry.heard_from(rec, now)
            self.board.heard(rec.name)
            if env.kind == Kind.HELLO:
                self.members.registry.answers(rec, False, now)
            elif not rec.answered:
                self.members.answered(rec, now)
        kind = env.kind
        if kind in CLIENT_KINDS or (kind == Kind.CANCEL and rec is None):
            if self._token_ok(peer, env, address, now):
                self._client_request(peer, env, address, now)
        elif rec is None:
            self._stranger(peer, env)
        elif kind == Kind.RESULT:
            self._accept(rec, wire.unpack_batch(TaskResult, env.payload, self.limits),
                         env.payload)
        elif kind == Kind.HEARTBEAT:
            if self.closing:  # (its END lost: with a connection ZeroMQ made again, say)
                self.members.end_one(rec.peer, self.end_reason)
            self.members.heartbeat(rec, env, now)
        elif kind == Kind.STARTED:
            self.members.started(rec, wire.unpack(wire.Started, env.payload, self.limits))
        else:
            self._from_worker(rec, env)

    def _from_worker(self, rec: WorkerRecord, env: Envelope) -> None:
        kind = env.kind
        if kind == Kind.BCAST:
            env.header.sender = rec.name  # a worker speaks for itself only
            self._broadcast(env.header, env.payload, deliver=True)
            if rec.heard is not None and max(rec.delivered, rec.heard) == env.header.seq - 1:
                # Its own is not delivered to it: nothing for it to confirm (a worker that
                # leaves right after its broadcast missed nothing).
                rec.delivered = env.header.seq
        elif kind == Kind.DIRECT:
            self._direct(rec, env)
        elif kind == Kind.BYE and self.closing and rec.peer in self.told_end:
            self.told_end.discard(rec.peer)  # (it heard the run is over: nothing to say)
        elif kind == Kind.BYE:
            self.members.leave(rec.peer, "left")
        elif kind == Kind.DRAIN:
            self.members.drain(rec)
        else:
            raise RemoteProtocolError(f"{kind.decode()} is not for the admin")

    def _broadcast(self, header: Header, payload: bytes, deliver: bool) -> None:
        """Number a broadcast, keep it for repairs, publish it (and hand it to the admin's own
        handlers when a worker sent it)."""
        header.seq = self.broadcasts.append((header, payload), len(payload))
        header.epoch = self.members.epoch
        self.out.add(Forward(None, Kind.BCAST, header, payload))
        if deliver:
            self.out.add(Deliver(header, payload))

    def _sync(self) -> None:
        """PUB heartbeats every SYNC_EVERY while a new worker does not hear them yet. Each
        reaches every agent, so with many connected they go out less often (at most a
        heartbeat apart): 1,000 agents joining at once must not be flooded with 50,000
        messages a second, fall behind on their own heartbeats and be taken for lost."""
        if not self._syncing and self.members.sync():
            self._syncing = True
            agents = len(self.members.registry)
            every = min(self.members.pulse.every, SYNC_EVERY * max(1.0, agents / SYNC_FANOUT))
            self.out.add(Timer(("sync",), every))

    def _direct(self, rec: WorkerRecord, env: Envelope) -> None:
        env.header.sender = rec.name
        to = env.header.to
        if to in (None, self.name):
            self.out.add(Deliver(env.header, env.payload))
            return
        target, mailbox = self.peer_of(to), self.members.mailbox
        if target is not None and to not in mailbox.held:
            self.out.add(Forward(target, Kind.DIRECT, env.header, env.payload))
            return
        # One taken for lost may come back (--lost-wait; after a restart, one the last
        # process had): held for it (see Mailbox), if there is room; and behind what is held
        # for one back, still being delivered (their order kept).
        why = mailbox.keep(to, env.header, env.payload) if self._reachable_later(to) \
            else "no connected agent of that name"
        if why is not None:  # (the sender is told too, as the admin's own send() is)
            self._dropped(rec.name, clip(to), why)
            self._undelivered(rec.peer, env.header.msg_id, clip(to), why)

    def _dropped(self, sender: str, to: str, why: str) -> None:
        """Said, as a flood of them allows: a line a minute for each sender and name."""
        if n := self._drops.say((sender, to, why), self.board.now):
            self.out.log("WARNING", f"message from '{sender}' to '{to}' dropped: {why}" + (
                f" ({n - 1:,} more since it was last said)" if n > 1 else ""))

    def _stranger(self, peer: bytes, env: Envelope) -> None:
        # A worker's message from a peer we do not know (we restarted, and its DEALER still
        # held what it sent before; or it was declared lost): tell it to register again
        # rather than silently ignoring it. Not garbage: a busy worker may hold hundreds.
        if env.kind in (Kind.BYE, Kind.DRAIN):
            self.told_end.discard(peer)  # (told the run is over as it registered again)
            return  # leaving or draining: nothing to register for
        if env.kind not in STRANGERS_MAY_SEND:
            raise RemoteProtocolError(f"{env.kind.decode()} from an unregistered peer")
        self.out.send(peer, Kind.REJECT, wire.Reject("not registered: send HELLO first",
                                                     retry=True), env.header.msg_id)

    def _bad_frame(self, peer: bytes, address: str, reason: str, now: float) -> None:
        self.stats.bad_frames += 1
        if peer not in self._warned_senders:
            self._warned_senders.add(peer)
            self.out.log("WARNING", f"dropped a bad frame from {peer!r} ({address or '?'}): "
                                    f"{reason}; later ones from this sender are counted, not "
                                    f"logged")
        self._strike(peer, address, now)

    def _strike(self, peer: bytes, address: str, now: float) -> None:
        """One more bad frame (or refused request) from ``peer``: too many, and it is cut
        off for a while."""
        if self.guard.bad_frame(peer, now):
            g = self.guard
            self.out.log("WARNING", f"peer {peer!r} ({address or '?'}) sent more than "
                                    f"{g.limit} bad frames in {g.window:g} s: disconnected "
                                    f"(everything it sends is dropped for {g.ban:g} s)")
            self.members.leave(peer, "disconnected for sending bad frames")

    # ------------------------------------------------------------------ clients
    def _token_ok(self, peer: bytes, env: Envelope, address: str, now: float) -> bool:
        if token_ok(self.settings.token, env.header.token):
            return True
        # Said once a minute per sender, 20 a minute at most (a flood of them was a log line
        # each, for ever), and counted as a bad frame: a peer that keeps trying is cut off
        # like a garbage sender.
        if self._refusals.say(peer, now):
            self.out.log("WARNING", f"refused {env.kind.decode()} from {peer!r} "
                                    f"({address or '?'}): wrong or missing token (more from it "
                                    f"within a minute: refused, not logged)")
        self._strike(peer, address, now)
        self.out.send(peer, Kind.REJECT, wire.Reject("wrong or missing token (--token / "
                                                     "CEYLON_TOKEN)"), env.header.msg_id)
        return False

    def _client_request(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        ask = env.header.msg_id  # every answer names the request it answers
        if self.closing and env.kind != Kind.HELLO:
            return  # (closing: its clients were told so, or find it gone after a while)
        if env.header.version != PROTOCOL_VERSION and env.kind != Kind.HELLO:  # (a HELLO's
            self.members.reject(peer, f"protocol version {env.header.version} != admin's "
                                      f"{PROTOCOL_VERSION}", ask, now=now)  # own: see hello)
            return
        if env.kind == Kind.HELLO:
            self._hello(peer, env, address, now)
        elif env.header.workspace != self.workspace:  # (whatever it asks: a client's first
            # request is a status, so naming the request would say 'status' to ceylon-cancel)
            self.members.reject(peer, f"workspace '{clip(env.header.workspace)}' != admin's "
                                      f"'{self.workspace}' (--workspace / CEYLON_WORKSPACE)",
                                ask, now=now)
        elif env.kind == Kind.STATUS:
            self.out.send(peer, Kind.STATUS, wire.Status(snapshot(self)), ask)
        elif env.kind == Kind.SUBMIT:
            self._submission(peer, env, address, now)
        elif env.kind == Kind.WATCH:
            watch = wire.unpack(wire.Watch, env.payload, self.limits)
            self.watchers.watch(peer, watch.tasks)
            self.batches.claim_tasks(watch.tasks, self.board.records)
            self.watchers.watch_groups(peer, watch.groups, self.task_manager)
            for batch_id, run in dict.fromkeys(wire.batch_pairs(watch.batches)):
                self._watch_batch(peer, batch_id, run, now)
        else:
            request = wire.unpack(wire.Cancel, env.payload, self.limits)
            ids = list(wire.task_pairs(request.tasks, "cancel request"))
            outcome = self._cancel(ids, request.reason or "cancelled by request")
            self.out.log("INFO", clip(f"cancel request for {ids}: {outcome}", 500))
            self.out.send(peer, Kind.STATUS, wire.Status({"cancel": outcome}), ask)

    def _watch_batch(self, peer: bytes, batch_id: int, run: str, now: float) -> None:
        """A client waits for a batch (again: the admin restarted on its journal, or it
        heard nothing for a while): it hears the batch's progress from now on, and its
        report once it is done; at once if it is, but once a heartbeat (the WATCHes a client
        sent while the admin was down arrive together)."""
        batch = self.batches.claim(peer, batch_id) if run == self.run else None
        if batch is None:
            self.out.send(peer, Kind.REPORT, wire.BatchReport(batch_id, {}, (
                f"the admin forgot batch {batch_id}: it had finished, and the admin keeps "
                f"only the latest finished batches (--keep-finished)"
                if run == self.run and self.batches.forgot(batch_id) else
                f"the admin has no batch {batch_id} in this run: a wrong number?"
                if run == self.run else
                f"the admin has no such batch: its run is {self.run}, not {run} (a wrong "
                f"run id, or the admin restarted without its journal, or with another one, "
                f"and the batch's tasks are gone with it)")))
        elif batch.id not in self.batches.open and \
                batch.report_due(peer, now, self.settings.heartbeat):
            self.out.send(peer, Kind.REPORT, self.followup.batch_report(batch))

    def _hello(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        h = env.header
        if self.closing and h.workspace == self.workspace and h.version == PROTOCOL_VERSION:
            self.members.end_one(peer, self.end_reason)  # (registering again as the run
            self.told_end.add(peer)  # ended, its END lost: told again)
            self._told_again.add(peer)
            self.owed_end.discard(h.sender)  # (told: journaled as told all)
            return
        results = self.members.hello(peer, env, address, now)
        if results is None:
            return
        self.owed_end.discard(self.members.registry.by_peer[peer].name)
        self._sync()
        if results:
            self._accept(self.members.registry.by_peer[peer], results)
        expected = self.settings.expect_workers
        if self.assigning:
            return
        if len(self.members.registry) >= expected:
            self.assigning = True
            self.out.log("INFO", f"all {expected} expected workers connected: starting task "
                                 f"distribution")
        else:
            self.out.log("INFO", f"{len(self.members.registry)} of {expected} expected workers "
                                 f"connected: assigning once all are (--expect-workers)")

    def _submission(self, peer: bytes, env: Envelope, address: str, now: float) -> None:
        sub = wire.unpack(wire.Submission, env.payload, self.limits)
        try:
            tasks, groups = parse_work(sub.doc, "submission", standalone=False)
            ids = work_ids(tasks, groups)
            if self._named_before(peer, env, sub, ids, groups, now):
                return
            batch, after = self.batches.start(peer, ids, sub.wait, sub.sequential, sub.sid)
            try:
                self._submit(tasks, groups, after, batch)
            except ConfigError:
                self.batches.drop(batch)
                raise
            self.batches.mark(batch, self.board.records)
        except ConfigError as exc:
            why = str(exc)
            if isinstance(exc, UnknownDependency) and self.board.forgotten.tasks:
                why += " (or one of a finished batch the admin forgot: --keep-finished)"
            self.members.reject(peer, why, env.header.msg_id)
            return
        self.out.log("INFO", f"batch {batch.id} from {address or '?'}: {len(ids)} task(s)"
                             f"{', after the previous batch' if after else ''}")
        self.out.send(peer, Kind.SUBMIT, wire.Submitted(batch.id, len(ids), self.run),
                      env.header.msg_id)
        if sub.follow:
            for group in groups:
                self.watchers.watch_group(peer, group.id)
            self.watchers.watch(peer, ids)

    def _named_before(self, peer: bytes, env: Envelope, sub: wire.Submission, ids: list[TaskId],
                      groups: Sequence[TaskGroup], now: float) -> bool:
        """A submission of a name taken before (see Batch.sid), sent again: answered as it
        was, nothing taken twice (True). Forgotten since (it ran): its tasks are told of as
        unknown. Of other tasks (the name is another's): refused."""
        batch = self.batches.again(sub.sid)
        if batch is not None and not set(ids) <= set(batch.task_ids):
            raise ConfigError(f"the submission's name ({sub.sid}) is batch {batch.id}'s, "
                              f"which holds other tasks (a client's names must be unique)")
        if batch is not None:
            self._submitted_again(peer, env, sub, batch, groups, now)
            return True
        gone = self.batches.forgot_sids.get(sub.sid) if sub.sid else None
        if gone is None:
            return False
        self.out.send(peer, Kind.SUBMIT, wire.Submitted(gone, 0, self.run), env.header.msg_id)
        if sub.follow:  # ('unknown': it finished, and the admin forgot it)
            self.watchers.watch(peer, ids)
        return True

    def _submitted_again(self, peer: bytes, env: Envelope, sub: wire.Submission, batch: Batch,
                         groups: Sequence[TaskGroup], now: float) -> None:
        """A submission taken before, sent again (its answer was lost, or is slow): answered
        as it was, and its client waits on it (again) as it asks, but nothing taken twice."""
        self.out.send(peer, Kind.SUBMIT, wire.Submitted(batch.id, len(batch.task_ids),
                                                        self.run), env.header.msg_id)
        if sub.wait:
            self._watch_batch(peer, batch.id, self.run, now)
        if sub.follow:
            self.watchers.watch_groups(peer, [g.name for g in groups], self.task_manager)
            self.watchers.watch(peer, batch.task_ids)

    # ------------------------------------------------------------------ tasks
    def _submit(self, tasks: Sequence[Task], groups: Sequence[TaskGroup], after: Any,
                batch: Batch | None = None, loose: bool = False) -> None:
        group_tasks, gates = self.task_manager.register(groups, self.board.records.keys(), tasks)
        everything = [*tasks, *group_tasks]
        if self.settings.task_timeout is not None:
            for t in everything:
                if t.timeout is None:
                    t.timeout = self.settings.task_timeout
        if after is not None:
            gates = {t.id: [*gates.get(t.id, ()), after] for t in everything}
        try:
            self.board.add(everything, gates)
        except ConfigError:
            self.task_manager.forget(groups)
            raise
        if groups and self.board.moved is None:
            self.board.moved = []  # groups show their tasks' live status
        if self.board.dirty is not None:  # (journaled)
            self._unkept(groups)
        self.followup.run_announced = False
        self._fresh = True
        self.out.add(NewWork(everything, list(groups), batch, loose))

    def _unkept(self, groups: Sequence[TaskGroup]) -> None:
        """Said as a journaled admin takes them: goals a restart would lose (Python code)."""
        for g in groups:
            if g.goal is not None and not journal_keeps(g.goal):
                self.out.log("WARNING", unkept_goal(g.name, g.goal.name, restarted=False))

    def _cancel(self, task_ids: Sequence[TaskId], reason: str) -> dict[str, list[TaskId]]:
        # (ended before: "was_cancelled" when it ended cancelled, else "finished")
        out: dict[str, list[TaskId]] = {"cancelled": [], "stopping": [], "unknown": [],
                                        "finished": [], "was_cancelled": []}
        # One message a worker: asked one by one, it could start a task queued on it in the
        # slot the first cancel freed before the next cancel, for that very task, came.
        stops: dict[bytes, list[list[Any]]] = {}
        for task_id in task_ids:
            if task_id not in self.board.records:
                out["unknown"].append(task_id)
            elif self.board.cancel([task_id], reason):
                out["cancelled"].append(task_id)
            elif (on := self.board.stop(task_id, reason)) is not None:
                peer = self.peer_of(on[0])
                if peer is not None:
                    stops.setdefault(peer, []).append([task_id, on[1]])
                out["stopping"].append(task_id)
            elif self.board.records[task_id].state is TaskState.CANCELLED:
                out["was_cancelled"].append(task_id)
            else:
                out["finished"].append(task_id)
        for peer, pairs in stops.items():
            self.out.send(peer, Kind.CANCEL, wire.Cancel(pairs, reason))
        if out["unknown"] and self.board.forgotten.tasks:  # (--keep-finished: it may be one)
            out["maybe_forgotten"] = list(out["unknown"])
        return out

    def _said_taken(self, name: str) -> None:
        """Said: results of copies that ``name`` ran while other workers had the task, taken
        (TaskBoard.taken_late: it was told to stop; taken_claimed: it came back still
        running them, and they were asked back from the others), the copies there cancelled."""
        board = self.board
        for count, how in ((board.taken_late, "it was told to stop (other workers had "
                                              "them) to a result before the stop arrived"),
                           (board.taken_claimed, "it came back still running (asked back "
                                                 "from the workers given them meanwhile) to "
                                                 "a result first")):
            if count:
                self.out.log("INFO", f"worker '{name}' ran {count} task(s) {how}: taken, "
                                     f"and the copies there cancelled")
        board.taken_late = board.taken_claimed = 0

    def _accept(self, rec: WorkerRecord, results: list[TaskResult],
                payload: bytes | None = None) -> None:
        name = rec.name
        for result in results:
            if result.worker != name:
                raise RemoteProtocolError(f"result names worker '{clip(result.worker)}', "
                                          f"sender is '{name}'")
        self.out.add(Acknowledge(rec.peer, [[r.task_id, r.attempt] for r in results]))
        if not _NESTED.isdisjoint(map(type, map(_VALUE, results))):  # (at C speed)
            results, payload = [_within_depth(r) for r in results], None
        recorded = self.board.record_many(name, results)
        if self.board.taken_late or self.board.taken_claimed:
            self._said_taken(name)
        accepted = [r for r, task in zip(results, recorded, strict=True) if task is not None]
        if not accepted:
            return
        stats = self.stats
        stats.results += len(accepted)
        stats.run_seconds.observe_many([r.seconds for r in accepted])
        # A round trip, measured on a task that was sent to a free slot.
        rtt = next((self.board.now - task.assigned_at - r.seconds
                    for r, task in zip(results, recorded, strict=True)
                    if task is not None and not task.ahead), None)
        self.members.paced(name, accepted, rtt)
        for r in accepted:
            if not r.success and not r.cancelled:
                self._failed(r)
        whole = payload is not None and len(accepted) == len(results)
        self.out.publish(Kind.RESULT, payload if whole else accepted, "TaskResult")

    def _failed(self, result: TaskResult) -> None:
        """Kept for the dashboard: the latest failures, with the last line of their error."""
        last = (result.error or "").strip().splitlines()[-1:] or ["failed"]
        self.stats.failed += 1
        self.stats.recent_failures.append((result.task_id, result.worker, last[0][:300],
                                           self.board.now))

    # ------------------------------------------------------------------ the round's end
    def _end_round(self, now: float, assign: bool = True) -> list[Command]:
        """What follows from the round's inputs: finished tasks followed up, free slots
        filled, the run's end announced; the round's commands, in order."""
        followup, board = self.followup, self.board
        if followup.forget_due:
            followup.forget_when_due(now, self.settings.heartbeat)
        if board.finished:
            followup.settle()
        if board.to_release:
            asks, board.to_release = board.to_release, {}
            self.members.ask_back(asks)
        if board.to_cancel:
            stops, board.to_cancel = board.to_cancel, {}
            self.members.stop_copies(stops)
        if assign and self.assigning and not self.closing:
            self._assign(now)
            if self.pace.fixed != 0 and not self._ahead_due:  # (not before it: see _plan)
                self.members.steal_back(now)
        if board.moved:
            followup.follow_moves()
        if not followup.run_announced:
            followup.announce_run_end()
        return self.out.take()

    def _assign(self, now: float) -> None:
        """Give ready tasks to free slots, and queue some ahead of them on the workers.
        Every worker's tasks for its free slots go first, those it queues ahead after them
        all (a frame of their own): what starts at once is not held up by encoding, sending
        and decoding what waits (a first round of 200 tasks on 4 x 8 slots: 8 a worker,
        then 48, 40, 40, 40)."""
        board, stats = self.board, self.stats
        waits: list[float] = []
        later: list[Assign] = []
        for worker, assignments in self._plan(now, waits).items():
            peer = self.peer_of(worker)
            if peer is None:
                board.unsent(worker, assignments)
                continue
            board.delivered(assignments)
            stats.assignments += len(assignments)
            cut = board.filling(assignments)
            self.out.add(Assign(peer, worker, assignments[:cut] if cut else assignments))
            if cut:
                later.append(Assign(peer, worker, assignments[cut:]))
            if assignments[0].confirm:  # on probation: it has a moment to say it has them
                key = ("probation", worker, tuple((a.task.id, a.attempt) for a in assignments))
                self._armed[key] = self._held
                self.out.add(Timer(key, self.probation))
        for cmd in later:
            self.out.add(cmd)
        stats.wait_seconds.observe_many(waits)

    def _plan(self, now: float, waits: list[float]) -> dict[str, list[TaskAssignment]]:
        """The round's assignments. After new work came, free slots only, when some are
        free: what starts at once leaves before the rest is planned, and the rest is queued
        ahead on the workers in a round of its own straight after (a timer of no time: the
        first of W3's 200 tasks on 4 x 8 slots went out after all 200 were planned). Low
        tasks queued ahead are not asked back for the new ones until that round (a review:
        it would place them ahead, asked back or not)."""
        fresh, self._fresh, self._ahead_due = self._fresh, False, False
        plan = self.board.plan(now, waits, slots_only=True) \
            if fresh and self.pace.fixed != 0 else None
        if not plan:
            return self.board.plan(now, waits)
        # Some task left queued could go ahead on a worker (not one no worker takes now:
        # each execute() then cost a round more; nor only when one of the new tasks is left:
        # the free slots may take the new ones and leave older ones that could go; reviews)
        self._ahead_due = self.board.scheduler.placeable()
        if self._ahead_due:
            self.out.add(Timer(("ahead",), 0.0, deadline=False))
        return plan

    # ------------------------------------------------------------------ timers
    def _beat_clients(self) -> None:
        """Clients waiting on tasks or a batch hear the admin every heartbeat (silence: it is
        gone), with its epoch (a new one: it restarted, and they WATCH their tasks again) and
        how often it beats (how long a silence may last)."""
        beat = wire.Event("heartbeat", {"epoch": self.members.epoch,
                                        "every": self.settings.heartbeat})
        for peer in self._waiting_clients():
            self.out.send(peer, Kind.HEARTBEAT, beat)

    def _waiting_clients(self) -> set[bytes]:
        waiting = {c for b in self.batches.open.values() for c in b.waiters}
        return waiting.union(self.watchers.clients())

    def _give_up_unassignable(self, now: float) -> None:
        self.members.forget_lost(now)
        if not self.assigning:
            return
        ids = self.unassignable.check(self.board, len(self.members.registry),
                                      self.members.joined, now, self.out, self.members.lost,
                                      self.members.lost_seq)
        if ids:
            self.unassigned.update(ids)
            self.board.give_up(ids)


END_WAIT = 2.0  # seconds a closing admin waits at most for its workers to hear the END
_NESTED = frozenset((list, dict))
_VALUE = attrgetter("value")


def _within_depth(result: TaskResult) -> TaskResult:
    """A result whose value nests deeper than wire.MAX_DEPTH failed: passing it on (to its
    clients, the journal, the PUB channel) would run the admin out of stack (a worker that
    raised its own recursion limit, or a crafted frame: a review's finding); the worker
    refuses such a value itself."""
    why = wire.unfit(result.value) if type(result.value) in _NESTED else None
    if why is None:
        return result
    return TaskResult(result.task_id, result.worker, False, result.seconds,
                      f"its return value {why}: the admin does not take it (return less, "
                      f"or where to find it)", result.attempt)
