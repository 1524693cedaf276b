"""The admin's network edge: the shell around :class:`~ceylon_net.core.admin_state.AdminState`.

It owns the sockets, the receive and tick loops, the timers the state asks for, the ack delay,
the journal and the results file, and the user's API; it decides nothing. Every input goes to
the state with the time, and the commands that come back are carried out in order, after the
journal has the round (a task is on disk before its assignment leaves, a result before its
acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from loguru import logger

from .. import wire
from ..core import commands as c
from ..core.admin_state import AdminState
from ..core.groups import TaskGroup, TaskManager
from ..core.snapshot import metrics, snapshot
from ..core.tasks import RunReport, Task, TaskAssignment, TaskId, TaskResult
from ..core.workers import AgentDetail
from ..core.workfile import MAX_SECONDS, TASK_FIELDS, valid_field
from ..errors import (
    ConfigError,
    Crashed,
    LocalProtocolError,
    RemoteProtocolError,
    TaskFailed,
    stopped,
)
from ..settings import AdminSettings, bracket
from ..wire import Kind
from . import loop
from .agent import AgentBase, finish_tasks, guarded, supervised
from .collector import FullCollections
from .dashboard import Dashboard
from .journal import Journal, JournalWriteError, ResultsFile, record_round, resume
from .metrics import MetricsServer, on_the_loop
from .outlet import Outlet
from .transport import AdminSockets, load_keys

if TYPE_CHECKING:
    from .worker import Worker

TICK = 0.25  # resolution of the regular timers (heartbeats, liveness, unassignable timeout)
# Results are acknowledged this long after they are recorded, several in one ACK: off the
# round trip of the next task (an ACK sent at once delayed the next ASSIGN by a send), and
# fewer sends under load. A worker only forgets acknowledged results, so nothing is at risk.
ACK_DELAY = 0.01
RECV_BATCH = 256  # messages handled per round before the timers get a turn
CATCH_UP = 0.5  # s a due timer waits at most for the receive loop to read what came
RECHECK = 0.001  # s between its looks


class Admin(AgentBase):
    """Coordinates a workspace. ``Admin(name, port)`` as in the tutorials; everything else has a
    default taken from ``CEYLON_*`` environment variables, or pass ``settings``."""

    _SLOW_LOOP_COSTS = "its workers waited, and a longer wait has them take it for gone"

    def __init__(self, name: str = "admin", port: int | None = None,
                 workspace_id: str | None = None, *, settings: AdminSettings | None = None,
                 **options: Any) -> None:
        settings = settings or AdminSettings.of(name, port, workspace_id, options)
        super().__init__(settings.name, settings.workspace)
        self.settings = settings
        self.state = AdminState(settings, time.monotonic())
        self.limits = self.state.limits
        self.port, self.pub_port = settings.port, settings.pub_port or 0
        self.journal: Journal | None = None
        self._sockets: AdminSockets | None = None
        self._out: Outlet | None = None
        self._loops: list[asyncio.Task] = []
        self._stopped, self._idle = asyncio.Event(), asyncio.Event()
        self._serving = False  # serve() waits for stop()
        self._heard = asyncio.Event()  # closing: every worker told the run is over heard it
        self._thread: int | None = None  # the one it started in, whose loop it runs on
        self._closing: asyncio.Future[None] | None = None  # close() under way, or done
        self._waiters = Waiters()
        self.failure: Crashed | None = None  # why the admin stopped on its own
        self._acks = Acks(self._send_ack, self._crashed)
        self._timers: set[asyncio.TimerHandle] = set()
        self._on_timer_guarded = guarded(_once_read, "an admin timer", self._crashed)
        self._results: ResultsFile | None = None
        self._gc = FullCollections()
        self.dashboard: Dashboard | None = None
        self.metrics: MetricsServer | None = None
        self._carry_out = {c.Send: self._send, c.Assign: self._assign, c.Log: _log,
                           c.Forward: self._forward, c.Publish: self._publish,
                           c.Acknowledge: lambda a: self._acks.add(a.peer, a.results),
                           c.Timer: self._timer,
                           c.Finished: self._finished, c.NewWork: _nothing, c.Forgot: _nothing,
                           c.Deliver: lambda d: self._deliver(d.header, d.payload, self.limits),
                           c.Connected: self._connected}
        self._rounds = Rounds(self._journal, self._carry_out)
        self._rest = Rest()

    @property
    def task_manager(self) -> TaskManager:
        """Task groups and their live status (seed 000)."""
        return self.state.task_manager

    @property
    def resumed(self) -> bool:
        """The state came back from the journal."""
        return self.state.resumed

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the ROUTER and PUB sockets and start serving (once: ConfigError again)."""
        if self._sockets is not None or self.state.closing:
            raise ConfigError(f"admin '{self.name}' was started already, or closed (make a new "
                              f"one)")
        s = self.settings
        curve = load_keys(s.curve_secret) if s.curve_secret else None
        self._sockets = AdminSockets(s.endpoint_host, s.max_message_bytes, s.workspace, curve,
                                     s.authorized_keys)
        self._thread = threading.get_ident()  # (before its first await: _undo_start forgets)
        try:
            self.port, self.pub_port = self._sockets.bind(s.port, s.pub_port)
            if s.journal is not None and self.journal is None:  # (bound first: a port in use
                # leaves the journal to the next try; held, it would refuse a new admin)
                _resume(self, Journal(s.journal, s.workspace, hold=True))
            await _open_outputs(self)
        except ConfigError:
            await _undo_start(self)
            raise
        self._out = Outlet(self._sockets, s.workspace, s.name)
        self._sockets.on_subscriptions = self.state.pub_listeners
        self.state.pub_listeners(frozenset())  # nobody yet
        self.state.started(time.monotonic(), self.port, self.pub_port,
                           int.from_bytes(os.urandom(8), "big") >> 1)
        if self._results is not None:
            self._results.run = self.state.run
            if self.state.resumed:
                self._results.complete(self.state.board)
        logger.info("admin '{}' serving workspace '{}' on tcp://{}:{} (PUB {})", self.name,
                    self.workspace_id, bracket(s.bind), self.port, self.pub_port)
        if s.exposure:
            logger.warning(s.exposure)
        self._gc.install()
        self._loops = [supervised(coro, f"the admin's {what} loop", self._crashed)
                       for coro, what in ((self._recv_loop(), "receive"),
                                          (_ticking(self), "tick"),
                                          (self._sockets.follow_subscriptions(),
                                           "subscriptions"))]

    async def stop(self) -> None:
        """Stop: :meth:`serve` returns (:meth:`arun_admin` then closes the admin); an admin
        nobody serves (started with :meth:`start`) is closed now."""
        self._stopped.set()
        if self.state.closing:  # (waiting for its workers to hear the run is over: no more)
            self._heard.set()
        if not self._serving:
            await self.close("stopped")

    async def serve(self) -> None:
        """Run until :meth:`stop`. Raises Crashed if the admin stopped on an error of its own."""
        self._serving = True
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure.again()

    def _crashed(self, crash: Crashed) -> None:
        """A loop died: stop, and fail whoever waits rather than let them hang."""
        self.failure = self.failure or crash
        self._waiters.fail_all(str(crash))
        self._stopped.set()
        self._idle.set()
        self._heard.set()

    async def close(self, reason: str = "admin stopped") -> None:
        """Tell every worker the run is over, then close the sockets. Whoever still waits for
        a task (:meth:`execute`) gets TaskFailed. Once: a second call waits for the first (a
        call from one of the admin's handlers, which closing cancels, lets it finish)."""
        if self._closing is None:
            if self._sockets is None:
                return _closed_unstarted(self, reason)
            self._closing = asyncio.ensure_future(self._close(reason))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        assert self._sockets is not None
        reason = reason if self.failure is None else f"the admin failed: {self.failure}"
        try:
            _say_goodbye(self, reason)
            await _hear_the_end(self)
            for task in self._loops:
                task.cancel()
            await asyncio.gather(*self._loops, return_exceptions=True)
            await self._cancel_handlers()
        finally:  # whatever failed above, nothing is left open
            await _close_http(self)
            self._sockets.close()
            self._sockets = self._out = None
            self._gc.uninstall()
            self._waiters.fail_all(reason)
            for output in (self.journal, self._results):
                if output is not None:
                    output.close()
            self.journal = self._results = None
        logger.info("admin '{}' stopped: {}", self.name, reason)

    async def arun_admin(self, inputs: bytes = b"", workers: Iterable[Worker] = ()) -> None:
        """Start, run the given in-process workers against this admin over real loopback
        sockets, and serve until :meth:`stop`. ``inputs`` is kept for the tutorials' sake."""
        await self.start()
        runs = {asyncio.create_task(w.arun_against(self), name=f"worker-{w.name}"): w
                for w in workers}
        try:
            await _serve_with(self, list(runs))
        finally:
            await self.close("run over")
            await _stop_workers(runs)

    def run_admin(self, inputs: bytes = b"", workers: Iterable[Worker] = ()) -> None:
        """Blocking form of :meth:`arun_admin`."""
        loop.run(self.arun_admin(inputs, list(workers)))

    # ------------------------------------------------------------------ tasks
    def submit(self, tasks: Sequence[Task]) -> None:
        """Queue tasks for the workers; ConfigError (nothing queued): see submit_work."""
        self.submit_work(tasks, ())

    def submit_groups(self, groups: Sequence[TaskGroup]) -> None:
        """Queue task groups (seed 000): their tasks, dependencies, priorities and goals."""
        self.submit_work((), groups)

    def submit_work(self, tasks: Sequence[Task], groups: Sequence[TaskGroup],
                    after: Any = None) -> list[TaskId]:
        """Queue tasks and groups together, all of them waiting on gate ``after`` if given.
        All or nothing: ConfigError (a duplicate id, an unknown dependency, a cycle, a task no
        worker could read, the admin closed) leaves the admin as it was; Crashed once it
        stopped on an error of its own. Returns the ids."""
        _takes(self, tasks, groups)
        self._apply(self.state.submit(tasks, groups, time.monotonic(), after))
        return [t.id for t in tasks] + [t.task_id for g in groups for t in g.subtasks]

    async def run_tasks(self, tasks: Sequence[Task] = (), groups: Sequence[TaskGroup] = ()
                        ) -> RunReport:
        """Submit tasks and groups, and wait until every task submitted (by any call) has a
        result, was cancelled, or was given up as unassignable: the whole run's report."""
        self.submit_work(tasks, groups)
        await self.wait_idle()
        return self.report()

    async def wait_idle(self) -> None:
        """Wait until nothing submitted is left to run. Raises Crashed if the admin stops on an
        error of its own first, ConfigError if it is closed first."""
        await self._idle.wait()
        if self.failure is not None:
            raise self.failure.again()
        if not self.state.finished:  # (closed, with tasks unfinished, or none)
            why = "its tasks did not all finish" if self.state.board.total else "no task given"
            raise ConfigError(f"admin '{self.name}' is closed ({why})")

    def report(self) -> RunReport:
        return self.state.report()

    async def execute(self, task: Task) -> TaskResult:
        """Submit one task and wait for its result (a failed run is a result too). A task
        that ends without one (cancelled, a dependency cancelled, lost too often, no worker
        can take it, the admin stopped) raises TaskFailed saying why. Cancelling the call
        (``asyncio.timeout``, ``task.cancel()``) cancels the task too, as a client's
        future's ``cancel()`` does; ``asyncio.shield`` the call to let the task run on."""
        _takes(self, (task,), ())
        fut = self._waiters.add(task.id)
        try:  # (forgettable: the caller has its result; see --keep-finished)
            self._apply(self.state.submit((task,), (), time.monotonic(), forgettable=True))
        except BaseException:
            self._waiters.discard(task.id)
            raise
        try:
            return await fut
        except asyncio.CancelledError:
            self._waiters.discard(task.id)
            if self.failure is None and not self.state.closing:
                self.cancel([task.id], "its execute() call was cancelled")
            raise

    def cancel(self, task_ids: Sequence[TaskId], reason: str = "cancelled by request"
               ) -> dict[str, list[TaskId]]:
        """Cancel tasks: queued or waiting ones at once, running ones by asking their worker
        (they finish as CANCELLED when it answers). Returns what happened to each."""
        _from_its_thread(self)
        outcome, cmds = self.state.cancel(task_ids, reason, time.monotonic())
        self._apply(cmds)
        return outcome

    def status(self) -> dict[str, Any]:
        """Workers, groups, queued tasks and counts (what ceylon-status prints)."""
        return snapshot(self.state)

    # ------------------------------------------------------------------ agents
    def get_connected_agents(self) -> list[AgentDetail]:
        """Agents registered and hearing broadcasts (on_agent_connected has fired for each)."""
        return [rec.detail for rec in self.state.connected()]

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        """Called when a worker has joined and hears broadcasts: a broadcast sent from here
        reaches it. Override it (the tutorials do)."""

    async def _transmit(self, kind: bytes, to: str | None, data: Any) -> None:
        _from_its_thread(self)
        type_, payload = self._outgoing(data, self.settings.max_message_bytes, self.limits)
        if self._out is None:  # (a broadcast would be numbered, and counted, for nobody)
            raise ConfigError(f"admin '{self.name}' is not serving (start() it first; once "
                              f"closed, it sends nothing)")
        if kind == Kind.BCAST:
            header = wire.make_header(self.workspace_id, self.name, type_)
            self._apply(self.state.broadcast(header, payload, time.monotonic()))
            return
        peer = self.state.peer_of(to or "")
        if peer is None:
            raise ConfigError(f"no connected agent named '{to}'")
        self.state.spoke(time.monotonic())
        self._rest.stir()  # (its answer is read as it comes: a review)
        if not self._out.direct(peer, to or "", type_, payload):
            raise ConfigError(f"agent '{to}' is not reachable (gone, or not reading: its "
                              f"queue is full)")

    # ------------------------------------------------------------------ loops
    async def _recv_loop(self) -> None:
        sockets = self._sockets
        assert sockets is not None
        while True:
            messages = await sockets.recv_batch(RECV_BATCH)
            now = time.monotonic()
            cmds = self.state.receive_many(messages, now)
            journaled = bool(self._waiters) and self._waiters.wake(cmds)
            if journaled:
                # An execute() caller waits on one: it goes on first, after the journal (and
                # the round's --results lines: what the caller does next may forget them).
                self._journal(cmds)
                if self._results is not None:
                    self._results.first(cmds, self.state.board)
                await asyncio.sleep(0)
            self._apply(cmds, journaled)
            if not cmds and not sockets.full and (rest := self.state.rest(now)):
                # (idle among many workers: see AdminState.rest; not with more to read, a
                # review's 800 beats a second piled up unread, and workers were lost)
                await self._rest.take(rest)
            elif sockets.busy:
                # A recv that is already complete does not yield: while messages keep coming
                # the timers (acknowledgements, heartbeats, liveness) would never run.
                await asyncio.sleep(0)

    def _on_timer(self, key: tuple[Any, ...]) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {t for t in self._timers if t.when() > now}
        self._apply(self.state.timer(key, time.monotonic()))  # (open: see _once_read)

    # ------------------------------------------------------------------ carrying out
    def _apply(self, cmds: list[c.Command], journaled: bool = False) -> None:
        """The journal first (unless ``journaled`` already), then every command in order
        (see Rounds: a round that follows from carrying out another comes after it)."""
        if cmds:
            self._rest.stir()
        if self._rounds.apply(cmds, journaled):
            if self._results is not None:
                self._results.flush()
            _sync_idle(self)

    def _journal(self, cmds: list[c.Command]) -> None:
        if self.journal is not None:
            _journal_round(self, self.journal, cmds)

    def _send(self, cmd: c.Send) -> None:
        if self._out is not None and not self._out.send(cmd.peer, cmd.kind, cmd.msg,
                                                        cmd.answers) and cmd.kind == Kind.END:
            self.state.end_unsent(cmd.peer)

    def _assign(self, cmd: c.Assign) -> None:
        _carry_assign(self, cmd)

    def _forward(self, cmd: c.Forward) -> None:
        if self._out is not None and not _forwarded(self._out, self.state, cmd):
            self._apply(self.state.not_forwarded(cmd.peer, cmd.header, time.monotonic(),
                                                 cmd.payload if cmd.kind == Kind.DIRECT
                                                 else None, cmd.held))

    def _publish(self, cmd: c.Publish) -> None:
        if self._out is not None:
            self._out.publish(cmd.kind, cmd.msg, cmd.type, cmd.seq)

    def _send_ack(self, peer: bytes, keys: list[list[Any]]) -> None:
        if self._out is not None:
            self._out.send(peer, Kind.ACK, wire.Ack(keys))

    def _timer(self, cmd: c.Timer) -> None:
        # (not a deadline: "until" long past, it runs at once, not once what came is read)
        self._timers.add(asyncio.get_running_loop().call_later(
            cmd.after, self._on_timer_guarded, self, cmd.key, None if cmd.deadline else 0.0))

    def _finished(self, f: c.Finished) -> None:
        if self._waiters:
            self._waiters.resolve(f)
        if self._results is not None:
            self._results.finished(f, self.state.board)

    def _connected(self, cmd: c.Connected) -> None:
        self._spawn(self.on_agent_connected(self.workspace_id, cmd.agent),
                    f"on_agent_connected({cmd.agent.name})")


async def _ticking(admin: Admin) -> None:
    """The regular timers, every TICK at most, told when they were due: the core judges
    whether they ran so late that the admin itself was held up (AdminState.tick). (From
    when they were due, not from the last run: a review's admin stopped 2.2 s at a time,
    awake 0.2 s between, kept a dead worker for ever.)"""
    state, due = admin.state, time.monotonic()
    while True:
        now = time.monotonic()
        admin._apply(state.tick(now, due))
        admin._gc.tick(now, not state.board.open)
        after = time.monotonic()  # (the round's own time not counted as late)
        wait = min(TICK, max(0.0, state.beat_due - after))
        due = after + wait
        await asyncio.sleep(wait)


def _once_read(admin: Admin, key: tuple[Any, ...], until: float | None) -> None:
    """A timer is due: what it decides (a worker on probation did not confirm in time, say)
    is decided once the receive loop has read what reached the ROUTER by then (looked at every
    RECHECK s), or (``until``) CATCH_UP s after the first look, under a flood that never lets
    up. A timer's callback runs in the loop turn that found it due, and the frames that turn
    found waiting are read in a later one: after the admin was held up past the deadline (a
    loaded host, a pause), an answer that came in time was judged missing, and a worker's
    task taken back from it."""
    sockets = admin._sockets
    if sockets is None:
        return
    now = time.monotonic()
    if sockets.caught_up() or (until is not None and now >= until):
        admin._on_timer(key)
    else:  # (looked at again shortly: a call each loop turn cost W1 3 % while busy)
        admin._rest.stir()  # (a resting receive loop reads what came first: a review)
        asyncio.get_running_loop().call_later(RECHECK, admin._on_timer_guarded, admin, key,
                                              now + CATCH_UP if until is None else until)


async def _stop_workers(runs: dict[asyncio.Task[str], Worker]) -> None:
    """After the admin's end: its in-process workers hear it and end; one that does not
    within a second (registering again, its loop blocked for a while: it tried on until
    cancelled 5 s later) is stopped."""
    if runs:
        await asyncio.wait(runs, timeout=1.0)
    for run, worker in runs.items():
        if not run.done():
            await worker.stop()
    await finish_tasks(list(runs), timeout=5.0)


async def _serve_with(admin: Admin, runs: list[asyncio.Task[str]]) -> None:
    """Serve until stop(); one of the in-process workers that cannot run (refused: another
    workspace, say; no admin answered; crashed) ends it with its error. run_admin() served
    on for ever beside workers the admin had refused."""
    serving = asyncio.create_task(admin.serve(), name="serve")
    pending: set[asyncio.Task[Any]] = {serving, *runs}
    try:
        while serving in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for run in done - {serving}:
                if not run.cancelled() and (error := run.exception()) is not None:
                    raise error
        serving.result()
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


def _sync_idle(admin: Admin) -> None:
    state = admin.state
    if state.idle or admin.failure is not None or state.closing:
        admin._idle.set()
    elif admin._idle.is_set():
        admin._idle.clear()
    if state.all_heard:
        admin._heard.set()


async def _hear_the_end(admin: Admin) -> None:
    """Closing, its loops still running: wait until every worker told the run is over says
    it heard (an END lost on a lossy link, its sockets closed at once, left a worker waiting
    for its --connect-timeout, then exit 1: a review of network faults); one registering
    again or still beating meanwhile is told again. AdminState.end_wait at most, cut short
    by stop() (a signal)."""
    if admin.failure is not None or admin.state.all_heard:
        return
    limit = admin.state.end_wait
    logger.debug("admin '{}': waiting up to {:g} s for {} worker(s) to say they heard the run "
                 "is over", admin.name, limit, len(admin.state.told_end))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(admin._heard.wait(), limit)
    if admin.state.told_end:
        logger.info("admin '{}': {} worker(s) did not say they heard the run is over within "
                    "{:g} s: closing all the same", admin.name, len(admin.state.told_end),
                    limit)


def _resume(admin: Admin, journal: Journal) -> None:
    if resume(journal, admin.state, time.monotonic()):  # (refusing, it closes the file)
        _sync_idle(admin)
    admin.journal = journal


def _closed_unstarted(admin: Admin, reason: str) -> None:
    """Closed before it started: what waits on it (an execute(), a run_tasks() called
    before start()) ends, as a started admin's would (they waited for ever), and it does
    not start."""
    admin.state.closing = True
    admin._waiters.fail_all(reason)
    admin._stopped.set()
    admin._idle.set()


def _from_its_thread(admin: Admin) -> None:
    """ConfigError for a call from another thread than the one the admin started in (whose
    event loop it runs on): a future made on another loop and set from the admin's never
    woke its caller, and neither its state nor its sockets are thread-safe. (Before start(),
    from any thread: what waits is woken thread-safely, see Waiters.)"""
    if admin._thread not in (None, threading.get_ident()):
        raise ConfigError(f"admin '{admin.name}' runs in another thread's event loop: call it "
                          f"there, or from this thread hand the call to that loop: asyncio."
                          f"run_coroutine_threadsafe(admin.execute(task), loop).result(), "
                          f"with loop = asyncio.get_running_loop() taken in the admin's thread")


def _takes(admin: Admin, tasks: Sequence[Task], groups: Sequence[TaskGroup]) -> None:
    """Can the admin take this work? Crashed once it stopped on an error of its own;
    ConfigError for a task no worker could be sent (check_sendable), or a call from another
    thread than the one the admin runs in (its event loop's: a future made on another loop
    and set from the admin's never woke its caller, and the state is not thread-safe)."""
    if admin.failure is not None:
        raise admin.failure.again()
    _from_its_thread(admin)
    _check_priorities(groups)
    check_sendable([*tasks, *(t.as_task(g.priority) for g in groups for t in g.subtasks)],
                   admin.settings.max_message_bytes)


def _check_priorities(groups: Sequence[TaskGroup]) -> None:
    """A group's priority goes to each of its tasks: one the wire cannot carry, or not an
    int, stopped the admin, or had every worker drop the group's tasks, as a task's did (a
    review). ConfigError."""
    for g in groups:
        if not valid_field("priority", g.priority):
            raise ConfigError(f"group {g.name!r}: priority must be {TASK_FIELDS['priority']}, "
                              f"got {g.priority!r}")


def _carry_assign(admin: Admin, cmd: c.Assign) -> None:
    """Send a round's assignments to a worker; the core hears of those that could not go,
    and of those that could not be encoded (first: they leave the worker's slots)."""
    unsent, bad = _unsent(admin, cmd)
    if bad:
        admin._apply(admin.state.unsendable(cmd.worker, bad, time.monotonic()))
    if unsent:
        admin._apply(admin.state.undelivered(cmd.peer, cmd.worker, unsent, time.monotonic()))


def _unsent(admin: Admin, cmd: c.Assign
            ) -> tuple[list[TaskAssignment], list[tuple[TaskAssignment, str]]]:
    """Send the assignments; those that could not go (all of them to a worker a send of the
    round failed to reach already: see AdminState.undeliverable), and those that could not
    be encoded, with why."""
    if admin._out is None or admin.state.undeliverable(cmd.worker):
        return cmd.assignments, []
    return admin._out.assign(cmd.peer, cmd.assignments)


def _forwarded(out: Outlet, state: AdminState, cmd: c.Forward) -> bool:
    """Sent on; a direct message not while ones held for its receiver wait to go again
    ahead of it (AdminState.forward_now: it would overtake them)."""
    return (cmd.kind != Kind.DIRECT or state.forward_now(cmd.header)) and \
        out.forward(cmd.peer, cmd.kind, cmd.header, cmd.payload)


def _journal_round(admin: Admin, journal: Journal, cmds: list[c.Command]) -> None:
    try:
        record_round(journal, admin.state, cmds)
    except JournalWriteError as exc:  # (a full disk): stop as if killed, saying why
        if admin.failure is None:  # (said by the loop it stops, or to the caller)
            admin._crashed(Crashed.by(exc))
        raise


def _say_goodbye(admin: Admin, reason: str) -> None:
    """Acknowledge what is recorded, tell every worker the run is over. After a crash the
    edge may be what broke: then an error here is logged, not raised."""
    for timer in admin._timers:
        timer.cancel()
    admin._timers.clear()
    if admin.journal is not None and admin.journal.broken:
        return  # (told nothing: the workers hold what they have for the admin's restart)
    try:
        if admin.failure is None:  # an ACK only lets a worker forget a result we have
            admin._acks.flush()
        admin._apply(admin.state.close(reason, durable=admin.journal is not None))
    except Exception:
        if admin.failure is None:
            raise
        logger.exception("admin '{}': saying goodbye failed too", admin.name)


async def _close_http(admin: Admin) -> None:
    """The dashboard and the metrics endpoint stop serving (their ports are free again)."""
    if admin.dashboard is not None:
        await admin.dashboard.close()
        admin.dashboard = None
    if admin.metrics is not None:
        admin.metrics.close()
        admin.metrics = None


async def _undo_start(admin: Admin) -> None:
    """A start that failed (a port in use, a file it cannot write): nothing of it stays
    open. The journal is let go (a new admin takes the file, which the lock held here would
    refuse), and this admin, holding its state already, cannot start again."""
    assert admin._sockets is not None
    admin._sockets.close(0)
    admin._sockets, admin._thread = None, None
    await _close_http(admin)
    if admin.journal is not None:
        admin.journal.close()
        admin.journal, admin.state.closing = None, True


async def _open_outputs(admin: Admin) -> None:
    """The dashboard, the metrics endpoint and the results file, where asked for."""
    s = admin.settings
    if s.dashboard_port is not None and admin.dashboard is None:
        admin.dashboard = await Dashboard.serve(admin.state, s.bind, s.dashboard_port, s.token)
    if s.metrics_port is not None and admin.metrics is None:
        admin.metrics = MetricsServer(on_the_loop(asyncio.get_running_loop(),
                                                  lambda: metrics(admin.state)),
                                      s.bind, s.metrics_port)
    if s.results_file is not None and admin._results is None:
        admin._results = ResultsFile(s.results_file, journaled=s.journal is not None)


class Rounds:
    """The admin's rounds of commands, journaled then carried out, one after another. A
    round that follows from carrying out another (an assignment that could not be sent:
    AdminState.undelivered) is carried out after it, not inside it: hundreds of workers
    killed at once made as many rounds, each inside the last, and a RecursionError stopped
    the admin."""

    def __init__(self, journal: Callable[[list[c.Command]], None],
                 carry_out: dict[type, Callable[[Any], None]]) -> None:
        self._journal, self._carry_out = journal, carry_out
        self._pending: deque[tuple[list[c.Command], bool]] = deque()

    def apply(self, cmds: list[c.Command], journaled: bool) -> bool:
        """Carry ``cmds`` out (journal first, unless ``journaled``), and the rounds that
        follow; False when called from inside one: it is carried out after it."""
        pending = self._pending
        pending.append((cmds, journaled))
        if len(pending) > 1:
            return False
        try:
            while pending:
                cmds, journaled = pending[0]
                if not journaled:
                    self._journal(cmds)
                for cmd in cmds:
                    self._carry_out[type(cmd)](cmd)
                pending.popleft()
        finally:
            pending.clear()  # (one that raised: the next call starts afresh)
        return True


class Rest:
    """The receive loop's rest (AdminState.rest), which anything the admin carries out
    ends at once: a task submitted in this process has its result read as it comes."""

    def __init__(self) -> None:
        self._wait: asyncio.Future[None] | None = None

    async def take(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._wait = loop.create_future()
        timer = loop.call_later(seconds, self.stir)
        try:
            await self._wait
        finally:
            timer.cancel()
            self._wait = None

    @property
    def resting(self) -> bool:
        return self._wait is not None and not self._wait.done()

    def stir(self) -> None:
        if self._wait is not None and not self._wait.done():
            self._wait.set_result(None)


class Acks:
    """Results are acknowledged ACK_DELAY after they are recorded, several in one ACK per
    worker (see ACK_DELAY)."""

    def __init__(self, send: Callable[[bytes, list[list[Any]]], None],
                 on_crash: Callable[[Crashed], None]) -> None:
        self._send = send
        self._pending: dict[bytes, list[list[Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flush_later = guarded(self.flush, "an admin timer", on_crash)

    def add(self, peer: bytes, keys: list[list[Any]]) -> None:
        self._pending.setdefault(peer, []).extend(keys)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_later)

    def flush(self) -> None:
        """Acknowledge the results recorded since the last time (the journal has them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for peer, keys in pending.items():
            self._send(peer, keys)


class Waiters:
    """The futures of :meth:`Admin.execute` calls, by task id."""

    def __init__(self) -> None:
        self._futures: dict[TaskId, asyncio.Future[TaskResult]] = {}

    def __bool__(self) -> bool:
        return bool(self._futures)

    def add(self, task_id: TaskId) -> asyncio.Future[TaskResult]:
        if task_id in self._futures:
            raise ConfigError(f"duplicate task id {task_id!r}")
        fut = self._futures[task_id] = asyncio.get_running_loop().create_future()
        return fut

    def discard(self, task_id: TaskId) -> None:
        self._futures.pop(task_id, None)

    def wake(self, cmds: list[c.Command]) -> bool:
        """Resolve the waiters of the round's Finished commands; True if any."""
        woke = False
        for cmd in cmds:
            if type(cmd) is c.Finished and self.resolve(cmd):
                woke = True
        return woke

    def resolve(self, f: c.Finished) -> bool:
        fut = self._futures.pop(f.task_id, None)
        if fut is None or fut.done():
            return False
        _settle(fut, f.result, None if f.result is not None else TaskFailed(
            f"task {f.task_id!r} {f.status.value}: {f.reason}", f.task_id, f.reason))
        return True

    def fail_all(self, reason: str) -> None:
        """The admin stopped: every waiter gets TaskFailed saying why."""
        for task_id, fut in self._futures.items():
            if not fut.done():
                _settle(fut, None, TaskFailed(f"task {task_id!r}: the admin {stopped(reason)} "
                                              f"before it finished", task_id, reason))
        self._futures.clear()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """An execute() call's outcome, set on its future's own loop: one called before
    start() from another thread (its own loop) is woken from the admin's thread safely."""
    loop = fut.get_loop()
    if loop.is_closed() or fut.done():  # (its caller is gone)
        return
    if loop is not asyncio.get_running_loop():
        loop.call_soon_threadsafe(_settle, fut, result, exc)
    elif exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _plain(v: Any) -> bool:
    """Sendable at a glance: an int msgpack carries, or an ASCII string (one with a lone
    surrogate, say from os.fsdecode, cannot be encoded; isascii() is O(1)). Anything else is
    packed to see."""
    t = type(v)
    return (t is str and v.isascii()) or (t is int and v in wire.MSGPACK_INTS)


def check_sendable(tasks: Sequence[Task], max_bytes: int) -> None:
    """Refuse, before anything is queued, a task no worker could be sent (ConfigError): its
    args hold something the wire cannot carry (a set, an open file, lists nested past
    wire.MAX_DEPTH), a field of a type the worker would not read (an id of 1.5, a difficulty
    of '3'), a value a tasks file may not hold either (a difficulty of 11, a duration of
    inf), or it is over the ``max_bytes`` a message may carry. Submitted over the wire it
    could not be; submitted here, it was assigned, dropped by the worker, and waited for for
    ever (or stopped the admin)."""
    if _plainly_sendable(tasks):
        return
    # Only what could be such a thing is looked at closer: a task with arguments, or a field
    # not plainly what the wire carries (most tasks of a large batch are neither).
    odd = [t for t in tasks if t.args or t.kwargs or type(t.args) is not list
           or type(t.kwargs) is not dict or type(t.depends_on) is not list
           or not _plain(t.id) or _odd_fields(*_FIELDS(t))]
    if odd:
        _closer_look(odd, max_bytes)


# A task's fields other than its id and lists, as a tuple (made at C speed for a batch)
_FIELDS = attrgetter("description", "difficulty", "priority", "duration", "timeout",
                     "required_role", "handler")
_ARGS, _KWARGS, _DEPS, _ID = (attrgetter("args"), attrgetter("kwargs"),
                              attrgetter("depends_on"), attrgetter("id"))


def _odd_fields(description: Any, difficulty: Any, priority: Any, duration: Any,
                timeout: Any, role: Any, handler: Any) -> bool:
    """Not plainly what the wire carries and a tasks file holds (then looked at closer)."""
    return type(description) is not str or not description.isascii() \
        or type(difficulty) is not int or type(priority) is not int \
        or not 1 <= difficulty <= 10 or priority not in wire.MSGPACK_INTS \
        or (duration is not None and not (type(duration) in _NUMBER
                                          and 0 <= duration <= MAX_SECONDS)) \
        or (timeout is not None and not (type(timeout) in _NUMBER
                                         and 0 < timeout <= MAX_SECONDS)) \
        or (role is not None and type(role) is not str) \
        or (handler is not None and type(handler) is not str)


def _plainly_sendable(tasks: Sequence[Task]) -> bool:
    """A large batch of plain tasks, seen so in passes at C speed (a task at a time took 0.8
    µs, a tenth of W1's time before its first task went out): few distinct combinations of
    fields, each plain; no arguments; ids all plain ints, or all ASCII strings. False: look
    at each task."""
    if len(tasks) < 256:
        return False
    try:
        kinds = set(map(_FIELDS, tasks))
    except TypeError:  # (a field no set holds: a list for a description, say)
        return False
    if len(kinds) > 64 or any(_odd_fields(*k) for k in kinds) or not _numbers_typed(tasks) \
            or any(map(_ARGS, tasks)) or any(map(_KWARGS, tasks)) \
            or {*map(type, map(_ARGS, tasks)), *map(type, map(_DEPS, tasks))} != {list} \
            or set(map(type, map(_KWARGS, tasks))) != {dict}:
        return False
    ids = list(map(_ID, tasks))
    kind = set(map(type, ids))
    if kind == {int}:
        return min(ids) in wire.MSGPACK_INTS and max(ids) in wire.MSGPACK_INTS
    return kind == {str} and all(map(str.isascii, ids))


_NUMBER = (int, float)
_INTS, _TIMES = (attrgetter("difficulty"), attrgetter("priority")), \
    (attrgetter("duration"), attrgetter("timeout"))
_TIME_TYPES = {type(None), int, float}


def _numbers_typed(tasks: Sequence[Task]) -> bool:
    """Every task's difficulty and priority an int, its duration and timeout None, an int or
    a float. (A set of the tasks' fields holds 1, 1.0 and True as one: a difficulty of 1.0
    among 1s was let through, and the worker dropped the task, for ever; a review.)"""
    return set(map(type, chain(*(map(get, tasks) for get in _INTS)))) == {int} and \
        set(map(type, chain(*(map(get, tasks) for get in _TIMES)))) <= _TIME_TYPES


def _closer_look(odd: list[Task], max_bytes: int) -> None:
    for t in odd:
        _check_values(t)
    try:
        packed = wire.packb([(t.id, t.description, t.args, t.kwargs) for t in odd])
        if len(packed) <= max_bytes - wire.FRAME_SLACK and all(map(_typed, odd)):
            return  # the usual case, in one go; else find which, and say why
    except LocalProtocolError:
        pass
    limits = wire.Limits(max_str_len=max_bytes, max_bin_len=max_bytes)
    for t in odd:
        try:
            payload = wire.pack(t)
            if len(payload) > max_bytes - wire.FRAME_SLACK:
                raise ConfigError(f"task {t.id!r} is {len(payload):,} bytes encoded, over the "
                                  f"{max_bytes - wire.FRAME_SLACK:,} a message may carry "
                                  f"(--max-message-bytes): pass large data by reference")
            wire.unpack(Task, payload, limits)  # as the worker will read it
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise ConfigError(f"task {t.id!r} cannot be sent to a worker: {exc}") from None


def _check_values(t: Task) -> None:
    """What a tasks file is held to (its loader says the same): a difficulty no worker could
    have waited to be given up as unassignable; a duration or time limit past MAX_SECONDS
    (or inf) never ended; arguments nested past wire.MAX_DEPTH would run the admin out of
    stack when it encodes the assignment, and a list or map longer than a worker decodes
    would be refused there."""
    if type(t.difficulty) is int and not valid_field("difficulty", t.difficulty):
        raise ConfigError(f"task {t.id!r}: difficulty must be 1-10, got {t.difficulty}")
    if type(t.priority) is int and not valid_field("priority", t.priority):  # (it was packed
        # as the task was assigned: the admin stopped on it)
        raise ConfigError(f"task {t.id!r}: priority must be {TASK_FIELDS['priority']}, got "
                          f"{t.priority}")
    for name in ("duration", "timeout"):  # (another type: the wire's check says it)
        value = getattr(t, name)
        if type(value) in _NUMBER and not valid_field(name, value):
            raise ConfigError(f"task {t.id!r}: {name} must be {TASK_FIELDS[name]}, got {value}")
    for name, value in (("args", t.args), ("kwargs", t.kwargs)):
        if (why := wire.unfit(value)) is not None:
            raise ConfigError(f"task {t.id!r}: {name} {why}")


def _typed(t: Task) -> bool:
    """Its fields are of the types the wire carries (ids, strings and numbers as such)."""
    return type(t.id) in (int, str) and type(t.description) is str \
        and type(t.difficulty) is int and type(t.priority) is int \
        and (t.duration is None or type(t.duration) in _NUMBER) \
        and (t.timeout is None or type(t.timeout) in _NUMBER) \
        and (t.required_role is None or type(t.required_role) is str) \
        and (t.handler is None or type(t.handler) is str) and type(t.depends_on) is list \
        and all(type(d) in (int, str) for d in t.depends_on) \
        and type(t.args) is list and type(t.kwargs) is dict


def _log(cmd: c.Log) -> None:
    logger.log(cmd.level, cmd.message)


def _nothing(cmd: c.Command) -> None:
    """Carried out before the rest (NewWork, Forgot: the journal)."""
