"""The worker agent: handshake, heartbeats, running assigned tasks within its capacity."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from loguru import logger

from .. import wire
from ..core.broadcasts import BroadcastInbox
from ..core.guard import Tally
from ..core.pacing import (
    HELLO_AGAIN_MAX,
    RESULT_HOLD,
    Flush,
    flush_stands,
    out_of_touch,
    when_to_flush,
)
from ..core.tasks import Task, TaskAssignment, TaskId, TaskResult, listed
from ..core.workers import AgentDetail
from ..errors import (
    AdminUnreachableError,
    ConfigError,
    Crashed,
    LocalProtocolError,
    RejectedError,
    RemoteProtocolError,
)
from ..settings import AdminSettings, WorkerSettings
from ..wire import Ack, Cancel, Envelope, Hello, Kind, Limits, Reject, Welcome
from . import handlers
from .agent import AgentBase, guarded, supervised
from .collector import FullCollections
from .outbox import MAX_KEPT, MAX_KEPT_BYTES, Outbox
from .runner import TaskRunner, fit_error
from .transport import WorkerSockets, load_keys, why_no_answer, why_unreachable


class Serving(Protocol):
    """An admin running in this process (what :meth:`Worker.arun_against` needs of it)."""

    settings: AdminSettings
    port: int


RECV_BATCH = 512  # messages from the admin handled before the worker's other loops get a turn
MAX_BEAT = 600.0  # seconds: a heartbeat interval the admin asks for beyond this is refused
HEARD_THE_END = "heard the run is over"  # a BYE's reason, after the admin's END


TASK_KINDS = frozenset((Kind.ASSIGN, Kind.ACK, Kind.CANCEL, Kind.RELEASE))  # see _on_tasks


CONTINUED = [float("-inf")]  # when this process was last continued (SIGCONT), if watched


def watch_continued() -> None:
    """Note when this process is continued after a stop (SIGSTOP, Ctrl-Z), for
    Worker._on_the_loop: from the main thread, where the program has no SIGCONT handler of
    its own (the process is continued all the same: the kernel does it, a handler or not)."""
    if threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "SIGCONT"):
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGCONT) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGCONT, _continued)


def _continued(signum: int, frame: Any) -> None:
    CONTINUED[0] = time.monotonic()


class _Reconnect(Exception):
    """The admin went silent or forgot us: register again."""


class _Ended(Exception):
    """The admin ended the run while we were registering again (its END crossed our HELLO:
    it still counted us in)."""


class Worker(AgentBase):
    """A worker agent. ``Worker(name, workspace_id, admin_peer, admin_port)`` as in the
    tutorials, plus ``role``, ``skill`` and ``max_concurrent_tasks``. Override
    :meth:`run_task` to do real work; the default is the tutorials' simulated task."""

    _flush_pending: asyncio.Handle | None = None  # a flush scheduled: this turn's, a held one
    _flush_held = False  # it is a held one (uvloop's timers are no asyncio.TimerHandle)
    _admin_limit = 0  # the admin's --max-message-bytes, as its last WELCOME said (0: unsaid)
    _refused: str | None = None  # the admin's last refusal that may change (a name taken)
    _why_held = ""  # why the runner holds our queued tasks (see _in_touch)
    _beat_every = 1.0  # the interval our heartbeat loop sleeps now
    _welcomed_at = 0.0  # when the latest welcome came
    _said_deaf = False  # said since it: nothing heard on the admin's PUB port
    _beat_cpu = 0.0  # the loop thread's CPU time as our last heartbeat went (_on_the_loop)
    _end_reason: str | None = None  # why the run ended, as the admin's END said
    _failure: Crashed | None = None  # one of our own loops failed: why (see _crashed)
    _told_end = False  # the admin's END came (its reason may read "stopped", as ours does)

    @property
    def refusal(self) -> str | None:
        """Why the admin refuses this worker for now, when it does (its name is taken by a
        worker still connected, say); None otherwise."""
        return self._refused

    def __init__(
        self,
        name: str,
        workspace_id: str | None = None,
        admin_peer: str | None = None,
        admin_port: int | None = None,
        *,
        role: str | None = None,
        skill: int | None = None,
        max_concurrent_tasks: int | None = None,
        settings: WorkerSettings | None = None,
        **options: Any,
    ) -> None:
        settings = settings or WorkerSettings.of(name, workspace_id, admin_peer, admin_port, role,
                                                 skill, max_concurrent_tasks, options)
        super().__init__(settings.name, settings.workspace, settings.role)
        self.settings = settings
        self.skill = settings.skill
        if max_concurrent_tasks is not None or not hasattr(self, "max_concurrent_tasks"):
            self.max_concurrent_tasks = settings.capacity  # (see _take_capacity)
        self.limits = Limits(max_str_len=(n := settings.max_message_bytes), max_bin_len=n)
        self.runner = TaskRunner(settings.name, settings.capacity, self.run_task,
                                 self._schedule_flush, self._unsendable, _stock(self.run_task))
        self.task_queue = self.runner.queue  # the seed's worker shape: its own queue
        self.active_tasks = self.runner.active  # and the tasks running now
        self._sockets: WorkerSockets | None = None
        self._welcome: Welcome | None = None
        self._draining, self._unknown = False, ""  # _unknown: see _serve
        self._flush_soon = guarded(self._scheduled_flush, f"{self.name}'s flush", self._crashed)
        self._stop, self._beat_wake = asyncio.Event(), asyncio.Event()  # (wake: beat now)
        self._admin_seen = self._pub_beat = self._beat_sent = 0.0  # (heard; PUB beat; ours)
        self._after_hello: list[tuple[Any, int]] = []  # results the last HELLO had no room for
        self._inbox = BroadcastInbox()  # numbered broadcasts, delivered once and in order
        self._epoch: int | None = None  # the admin process the inbox counts for
        self._session: asyncio.Task | None = None
        self._gc, self._outbox = FullCollections(), Outbox()  # (Outbox: what may be refused)
        self._undelivered_said = Tally()  # (see _not_delivered)
        self._poked: Any = None  # the epoch of the last new admin process told we are here

    @property
    def send_limit(self) -> int:
        """The largest message the admin takes: our --max-message-bytes, or the admin's if
        smaller (its socket would drop a larger one with the connection). The admin's is the
        last one a WELCOME said, kept while we register again (a HELLO and a result that
        ends meanwhile are held to it too)."""
        limit = self.settings.max_message_bytes
        return min(limit, self._admin_limit) if self._admin_limit else limit

    @property
    def tasks_run(self) -> int:
        return self.runner.runs

    def details(self) -> AgentDetail:
        s = self.settings
        return AgentDetail(self.id, self.name, s.role, s.skill, s.capacity, "")

    # ------------------------------------------------------------------ the task itself
    async def run_task(self, task: Task) -> TaskResult:
        """A task naming a handler runs it (its return value is the result's ``value``).
        Otherwise the tutorials' simulated task: take ``duration`` (or difficulty x time
        scale) seconds, succeed when skill >= difficulty."""
        if task.handler is not None:
            value = await handlers.call(task.handler, task.args, task.kwargs)
            return TaskResult(task.id, self.name, True, value=value)
        seconds = task.duration if task.duration is not None \
            else task.difficulty * self.settings.time_scale
        if seconds > 0:
            await asyncio.sleep(seconds)
        return TaskResult(task.id, self.name, self.skill >= task.difficulty)

    def _unsendable(self, result: TaskResult) -> str | None:
        """Why the admin could not take this result, if it could not: too big for a message,
        or what msgpack cannot carry or the admin would not read back (a set, int keys, a
        list of a million items). Only a result that carries more than a number is looked
        at. A failure's error text too long for a message is cut to fit (the start and its
        last line): sent whole, the admin's socket would drop it with the connection, and it
        would be sent again for ever."""
        limit = self.send_limit - wire.FRAME_SLACK
        error = result.error
        if error is not None and len(error) > limit // 8:  # (4 bytes a character at most)
            result.error = fit_error(error, limit // 2)
        value = result.value
        if value is None or type(value) in (bool, float) \
                or (type(value) is int and value in wire.MSGPACK_INTS):
            return None
        try:
            # (what the admin would refuse, said in its words first: msgpack's decoder said
            # "int is not allowed for map key when strict_map_key=True")
            if (why := wire.unfit(value, self.limits)) is not None:
                return f"its return value cannot be sent to the admin: it {why}"
            packed = wire.pack_batch([result])
            if len(packed) > limit:
                return (f"its return value is {len(packed):,} bytes encoded, over the "
                        f"{limit:,} a message may carry (--max-message-bytes): return less, "
                        f"or where to find it (a path, a URL)")
            read = wire.unpack_batch(TaskResult, packed, self.limits)  # as the admin will
            why = wire.unfit(read[0].value, self.limits)  # (deeper, the admin refuses it)
        except Exception as exc:  # LocalProtocolError, RemoteProtocolError, RecursionError
            return f"its return value cannot be sent to the admin: {_why(value, exc)}"
        return None if why is None else f"its return value cannot be sent to the admin: it {why}"

    # ------------------------------------------------------------------ lifecycle
    def _take_capacity(self) -> None:
        """``max_concurrent_tasks`` as the code left it, whichever way it set it: given to
        __init__, set after super().__init__() (seed 000), before it, or on the class."""
        n = self.max_concurrent_tasks
        if n != self.settings.capacity:
            self.settings = dataclasses.replace(self.settings, capacity=n)  # (checks it)
            self.runner.capacity = n

    async def arun(self) -> str:
        """Connect, register, serve until the admin ends the run or :meth:`stop`.

        Returns the reason the run ended. Raises RejectedError when the admin refuses us and
        AdminUnreachableError when nobody answers within the connect timeout; ConfigError
        when this worker ran already (a stopped worker stays stopped: make a new one).
        """
        if self._session is not None:
            raise ConfigError(f"worker '{self.name}' has run already (make a new one)")
        self._take_capacity()
        s = self.settings
        curve = load_keys(s.curve_secret, s.admin_key) if s.curve_secret else None
        self._sockets = WorkerSockets(s.name, s.endpoint, s.max_message_bytes, curve)
        bus = supervised(self._broadcast_loop(), f"{self.name}'s broadcast loop", self._crashed)
        beat = supervised(self._heartbeat_loop(), f"{self.name}'s heartbeat loop", self._crashed)
        self.runner.may_start, self.runner.touch_until = self._in_touch, 0.0
        self.runner.start(self._crashed)
        self._gc.install()
        watch_continued()
        self._session = asyncio.create_task(self._connected_session(), name=f"{s.name}-session")
        try:
            await self._session
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
        except AdminUnreachableError:  # (gave up on it: what it never acknowledged ends here,
            self._results_left("we give up on the admin")  # and what still runs)
            if running := list(self.runner.active):
                logger.warning("{}: {} running task(s) cut off as we give up on the admin (it "
                               "runs them again if it still has them): {}", self.name,
                               len(running), listed(running, 10, repr))
            raise
        finally:
            try:
                await self._shutdown(bus, beat)
            finally:
                self._gc.uninstall()
        if self._failure is not None:
            raise self._failure.again()
        return self._end_reason or "stopped"

    async def _connected_session(self) -> None:
        """Register, serve; register again whenever the admin goes silent or forgets us."""
        while True:
            try:
                await self._handshake()
            except _Ended:
                return
            try:
                await self._serve()
                return
            except _Reconnect as why:
                self._welcome = None
                # The admin may have called us lost and given what is queued here to other
                # workers: none of it starts; it goes back, and the admin sends it again.
                self.runner.hold()
                back = self.runner.release_queued()
                logger.warning("{}: {}; registering again{}", self.name, why,
                               f" ({back} queued task(s) given back to the admin)" if back
                               else "")

    def _in_touch(self) -> bool:
        """May a queued task start now? :func:`out_of_touch` decides, on our clocks; when
        not, the runner holds and we register again (see _connected_session)."""
        w = self._welcome
        if w is None:
            return False
        why, until = out_of_touch(time.monotonic(), self._beat_sent, self._admin_seen,
                                  w.heartbeat, w.liveness, self._beat_every)
        if why is not None:
            # The first reason found while held is its cause: the heartbeat loop, first to
            # run after a block, found our beats stopped (and why), then sent one, and the
            # next look found only the admin's messages not yet read ("admin silent").
            if not (self.runner.on_hold and self._why_held):
                self._why_held = why + (self._on_the_loop(self._beat_sent)
                                        if why.startswith("no heartbeat of ours") else "")
            return False
        self.runner.touch_until = until  # (no need to ask before: a start reads a clock)
        return True

    def _on_the_loop(self, since: float) -> str:
        """Said beside "no heartbeat of ours went out": the async handlers that ran here
        since ``since`` (a blocking call in one holds the event loop, our heartbeats too);
        that this process was stopped and continued meanwhile, if it was (then no handler is
        to blame: a soak found handlers that only slept named after SIGSTOP)."""
        # (and the loop's thread ran little meanwhile: a SIGCONT a supervisor sends a process
        # not stopped must not hide an async handler that held the loop busy. Its own CPU
        # time: the process's, handler threads hashing on other cores, hid a real pause)
        if CONTINUED[0] >= since and \
                time.thread_time() - self._beat_cpu < (time.monotonic() - since) / 2:
            return ("; paused: this process was stopped, then continued (SIGSTOP or Ctrl-Z, "
                    "then SIGCONT)")
        runner = self.runner
        ran = [(a.task.handler, tid) for tid, a in runner.active.items() if a.task.handler]
        ran += [(handler, tid) for handler, tid, at in runner.ended if at >= since]
        named = list(dict.fromkeys(f"{h!r} (task {tid!r})" for h, tid in ran
                                   if handlers.on_loop(h)))
        if named:
            return (f"; async handler {_few(named)} ran on the event loop meanwhile: a "
                    f"blocking call in an async def holds it (make it a plain def, which runs "
                    f"in a thread, or await asyncio.to_thread(...) for its blocking part)")
        threaded = list(dict.fromkeys(f"{h!r} (task {tid!r})" for h, tid in ran))
        if threaded:  # (a thread holding the GIL in one long C call holds the loop too)
            return (f"; sync handler {_few(threaded)} ran in a thread meanwhile: a call that "
                    f"holds Python's GIL (one long C call: big-integer arithmetic, an "
                    f"extension that does not release it) stops the event loop as well (run "
                    f"it in a process of its own, concurrent.futures.ProcessPoolExecutor)")
        return ""

    async def arun_against(self, admin: Serving) -> str:
        """Run against an in-process admin (over loopback sockets, like any other worker)."""
        host = admin.settings.bind if admin.settings.endpoint_host != "*" else "127.0.0.1"
        self.settings = dataclasses.replace(self.settings, admin_peer=host, port=admin.port)
        return await self.arun()

    async def stop(self) -> None:
        """Leave now: tell the admin (what ran here goes back to its queue), return from
        arun()."""
        self._leave()

    def _crashed(self, crash: Crashed) -> None:
        """One of our loops died: leave (arun() raises it) rather than run on without it."""
        self._failure = self._failure or crash
        self._leave()

    def _leave(self) -> None:
        self._end_reason = self._end_reason or "stopped"
        self._stop.set()
        if self._session is not None and not self._session.done():
            self._session.cancel()

    async def drain(self, timeout: float) -> bool:
        """Graceful leave: take no new work, let running tasks finish (up to ``timeout`` s),
        deliver their results, then leave. True when everything finished in time."""
        if self._draining:  # asked twice: stop now
            logger.warning("{}: asked again to stop: leaving now; {} running task(s) cut off "
                           "(the admin runs them elsewhere)", self.name,
                           len(self.runner.active))
            await self.stop()
            return False
        self._draining = True
        back = self.runner.give_back_queued()  # they run elsewhere, now
        logger.info("{}: draining: no new tasks, {} queued given back; waiting up to {:g} s "
                    "for {} running", self.name, back, timeout, len(self.runner.active))
        if self._welcome is not None and self._sockets is not None:
            await self._send(Kind.DRAIN, wire.End("draining"))
            self._flush()  # what was given back, and what started: before anything else
        finished = await self.runner.drain(timeout)
        waited = min(timeout, 5.0)
        deadline = time.monotonic() + waited
        while self.runner.undelivered() and time.monotonic() < deadline:
            self._schedule_flush()
            await asyncio.sleep(0.05)  # the acknowledgement arrives on the serving loop
        self._results_left(f"the admin did not acknowledge them within {waited:g} s (it is "
                           f"stopped, or out of reach)")
        if not finished:
            logger.warning("{}: drain timeout: {} task(s) still running are given back",
                           self.name, len(self.runner.active))
        await self.stop()
        return finished

    def _results_left(self, why: str) -> None:
        """Said as we leave: results the admin never acknowledged, dropped with us."""
        if lost := self.runner.undelivered():
            logger.warning("{}: {} result(s) not delivered: {}; it runs their task(s) again if "
                           "it still has them: {}", self.name, len(lost), why,
                           listed([r.task_id for r in lost], 10, repr))

    async def _shutdown(self, *loops: asyncio.Task) -> None:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        cut_off = self.runner.holding()  # (what the stop ends here: still ours until BYE)
        await self.runner.stop()
        await self._cancel_handlers()
        if self._sockets is None:
            return
        try:
            if not self._told_end and self._welcome is not None \
                    and self._end_reason == "stopped":  # (told: its BYE went, see _handle)
                self._flush()  # which tasks started
                # What it heard, last; and the tasks the stop cut off, held until the goodbye
                # gives them back (left out, the admin would say this worker "never got" them).
                self._sockets.send_soon(self._heartbeat_frames(cut_off))
                await self._send(Kind.BYE, wire.End("worker stopping"))
        except Exception:
            if self._failure is None:
                raise
            # After a crash the goodbye may run into the same bug: the admin then finds us
            # gone by our silence instead.
            logger.exception("{}: saying goodbye failed too", self.name)
        finally:
            # Never registered: nothing of ours is worth a linger (a HELLO nobody took would
            # hold the close, and the event loop, for a second past the connect timeout).
            self._sockets.close(*(() if self._welcome is not None or self._told_end else (0,)))
            self._sockets = None

    # ------------------------------------------------------------------ handshake
    async def _handshake(self) -> None:
        assert self._sockets is not None
        s = self.settings
        deadline = time.monotonic() + s.connect_timeout
        delay, attempt, refused = 0.25, 0, None
        self._refused = None
        hellos: set[int] = set()  # msg_ids of our HELLOs: the admin names one it refuses
        while True:
            attempt += 1
            refused = self._refused or refused  # (the last one the admin said)
            self._refused = None  # (said again by this attempt's answer, if it refuses)
            hello = self._hello()  # built anew each time: what we hold changes
            header = self._header(hello, s.token)
            hellos.add(header.msg_id)
            await self._sockets.send(self._frames(Kind.HELLO, hello, header=header),
                                     max(0.05, min(delay, deadline - time.monotonic())))
            welcome = await self._await_welcome(min(delay, max(0.0, deadline - time.monotonic())),
                                                hellos)
            if welcome is not None:
                self._on_welcome(welcome)
                return
            if time.monotonic() >= deadline:
                if (self._refused or refused) is not None:  # (it answered: not the link)
                    raise RejectedError(f"{self._refused or refused} (still after "
                                        f"{s.connect_timeout:g} s)")
                if self._epoch is not None:  # (it welcomed us before: not a wrong address)
                    raise AdminUnreachableError(
                        f"lost the admin at {s.endpoint}: no answer for {s.connect_timeout:g} "
                        f"s (--connect-timeout) since it went silent (stopped, or the link "
                        f"to it is down){await why_unreachable(s.endpoint)}")
                why = await why_no_answer(s.endpoint, s.curve_secret,
                                          "is ceylon-admin running there, on that --port "
                                          "(its own, not its PUB port, the one after it)?")
                raise AdminUnreachableError(f"no admin answered at {s.endpoint} within "
                                            f"{s.connect_timeout:g} s{why}")
            delay = min(delay * 2, HELLO_AGAIN_MAX)
            await self._say_retry(attempt, delay)

    async def _say_retry(self, attempt: int, delay: float) -> None:
        if self._refused is not None:  # (it answers: not "waiting for the admin")
            logger.warning("{}: the admin refuses us for now: {} (attempt {}, asking again in "
                           "{:.1f} s)", self.name, self._refused, attempt, delay)
            return
        # A host name that does not resolve (yet: in compose, the admin's container may come
        # later) is said at once, not only when we give up.
        why = await why_unreachable(self.settings.endpoint) if attempt == 1 else ""
        (logger.warning if why else logger.info)(
            "{}: waiting for the admin at {} (attempt {}, retrying in {:.1f} s){}", self.name,
            self.settings.endpoint, attempt, delay, why)

    async def _await_welcome(self, timeout: float, hellos: set[int]) -> Welcome | None:
        assert self._sockets is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frames = await self._sockets.recv(left)
            if frames is None:
                return None
            env = self._decode(frames)
            if env is None:
                continue
            if env.kind == Kind.REJECT:
                reject = wire.unpack(Reject, env.payload, self.limits)
                if reject.retry:
                    # A refusal of a HELLO that may change (our name is taken by a worker
                    # about to be called lost), or an answer to something we said before
                    # (a broadcast of ours: sent again once we are welcomed).
                    if env.header.seq in hellos:
                        self._refused = reject.reason
                    self._outbox.refused(env.header.seq)
                    continue
                raise RejectedError(reject.reason)
            if env.kind == Kind.WELCOME:
                return wire.unpack(Welcome, env.payload, self.limits)
            # Not said again once we are back, unlike what concerns tasks (the admin sends
            # those again after the welcome): the run's end, another agent's message, and a
            # message of ours that could not be delivered.
            if env.kind in (Kind.END, Kind.DIRECT, Kind.EVENT) and self._handled(env):
                raise _Ended
        return None

    def _hello(self) -> Hello:
        """What we hold, and the results the admin never acknowledged, as many as fit in
        half a message (the admin's socket drops a larger one, and we could never register
        again): the others it is told we hold, and they follow the WELCOME as results."""
        s = self.settings
        budget = (self.send_limit - wire.FRAME_SLACK) // 2
        results, self._after_hello = [], []
        for r in self.runner.undelivered():
            raw = wire.to_wire(r)
            size = len(wire.packb(raw))
            if size <= budget:
                results.append(raw)
                budget -= size
            else:
                self._after_hello.append((r.task_id, r.attempt))
        holding = self.runner.holding() + [[t, a] for t, a in self._after_hello]
        return Hello(s.name, s.role, s.skill, s.capacity, holding, results,
                     sorted(handlers.registered()), s.max_message_bytes, answers_unheld=True,
                     released=[[t, a] for t, a in self.runner.released[:wire.MAX_HELD]])

    def _on_welcome(self, welcome: Welcome) -> None:
        assert self._sockets is not None
        self._welcome = welcome
        self._admin_limit = welcome.max_message_bytes
        if welcome.epoch != self._epoch:  # a new admin process: its broadcasts count from 1
            if upto := self._left_by_the_old_admin():  # (first: ours among them relayed)
                self._outbox.gapped(upto)
            # (ours not back, kept, are sent again: a receiver that had one drops the copy)
            if self._epoch is not None and (again := self._outbox.admin_restarted()):
                logger.info("{}: a new admin process: {} broadcast(s) of ours the old one "
                            "may not have relayed are sent again", self.name, again)
            self._inbox, self._epoch = BroadcastInbox(), welcome.epoch
        self.id = welcome.agent_id
        self._admin_seen = self._beat_sent = self._welcomed_at = time.monotonic()
        self._beat_cpu = time.thread_time()
        self._said_deaf = False
        topic = wire.topic(self.workspace_id)
        moved = self._sockets.sub is not None
        if self._sockets.subscribe(self.settings.admin_peer, welcome.pub_port,
                                   [topic + Kind.BCAST, topic + Kind.HEARTBEAT]) and moved:
            logger.info("{}: the admin's broadcasts are now on port {}", self.name,
                        welcome.pub_port)
        logger.info("{}: registered with admin '{}' at {} (skill {}, role {}, capacity {})",
                    self.name, welcome.admin, self.settings.endpoint, self.skill, self.role,
                    self.max_concurrent_tasks)
        # Results that went with the HELLO may be sent again: the admin drops duplicates.
        self.runner.resend(self._after_hello)
        self._send_held()
        self._schedule_flush()
        if self._draining:  # said to the admin before (or to another admin process)
            self._sockets.send_soon(self._frames(Kind.DRAIN, wire.End("draining")))
        self.runner.resume()  # (what was queued before went back: what comes now is ours)
        self._beat_wake.set()  # (our first beat at the admin's pace: from now)

    def _left_by_the_old_admin(self) -> int:
        """A new admin process numbers its broadcasts anew: those of the old one held here
        behind a gap are delivered, in order, and the gaps it never filled said lost (the
        last of them returned; 0: none)."""
        old = self._inbox
        if old.heard is None or old.next > old.top:
            return 0
        before, upto = old.skipped, old.last_missing()
        for header, payload in old.drain():
            self._take(header, payload)
        if lost := old.skipped - before:
            logger.warning("{}: {} broadcast(s) were lost to us: the admin process that "
                           "stopped had not sent them again", self.name, lost)
        return upto if lost else 0

    def _send_held(self) -> None:
        """Welcomed: the broadcasts and messages the admin refused while it did not know us,
        and those sent while we registered, go now, in the order they were first sent."""
        assert self._sockets is not None
        held, room = self._outbox.take(), self.send_limit - wire.FRAME_SLACK
        hearing = self._inbox.heard is not None
        for msg_id, frames in held:
            if len(frames[-1]) > room:  # (an admin's smaller limit, first known now)
                logger.warning("{}: a {} held while we registered is not sent: {:,} bytes "
                               "encoded, over the {:,} the admin takes (its "
                               "--max-message-bytes)", self.name, _what(frames),
                               len(frames[-1]), room)
                continue
            self._outbox.sent(msg_id, frames, hearing, self._inbox.top)
            self._sockets.send_soon(frames)
        if held:
            logger.info("{}: sent {} broadcast(s) or message(s) the admin could not take "
                        "before we registered", self.name, len(held))
        if lost := self._outbox.lost:
            self._outbox.lost = 0
            logger.warning("{}: {} broadcast(s) or message(s) of ours are lost: the admin did "
                           "not relay them (it restarted, or took us for lost), and we no "
                           "longer kept them to send again (we keep the last {:,} sent, {} "
                           "MiB at most)", self.name, lost, MAX_KEPT, MAX_KEPT_BYTES >> 20)

    # ------------------------------------------------------------------ serving
    async def _serve(self) -> None:
        assert self._sockets is not None and self._welcome is not None
        welcome = self._welcome
        while True:
            batch = await self._sockets.recv_batch(welcome.heartbeat, RECV_BATCH)
            now = time.monotonic()
            if batch:
                self._admin_seen = now
            for frames in batch:
                if self._handle(frames):
                    return
            if self.runner.on_hold:  # (first: it may say this process was paused, which is
                self._unknown = ""  # why the admin forgot us, or fell silent)
                raise _Reconnect(self._why_held)
            if self._unknown:  # (the admin does not know us, as it said it; after the whole
                # batch: each refusal names a broadcast)
                said, self._unknown = self._unknown, ""
                # (a result sent as this process resumed, before the heartbeat loop woke to
                # find it was paused, is refused: the pause is what to say, as it is why)
                raise _Reconnect(self._why_held if not self._in_touch()
                                 else f"admin does not know us any more ({said})")
            if self.runner.queue.qsize() or len(batch) >= RECV_BATCH or self._sockets.busy:
                # The runners start on what came before we wait again; and a recv that did
                # not wait did not yield: the runners and heartbeats get a turn.
                await asyncio.sleep(0)
            if now - self._admin_seen > welcome.heartbeat * welcome.liveness \
                    and not self._in_touch():  # (it says which side went quiet: if our beats
                raise _Reconnect(self._why_held)  # stopped too, this process was paused)

    def _handle(self, frames: list[bytes]) -> bool:
        """Handle one message from the admin; True when the run is over."""
        env = self._decode(frames)
        return env is not None and self._handled(env)

    def _handled(self, env: Envelope) -> bool:
        try:
            return self._dispatch(env)
        except RemoteProtocolError as exc:
            logger.warning("{}: dropped a bad {} from the admin: {}", self.name,
                           env.kind.decode(), exc)
            return False

    def _dispatch(self, env: Envelope) -> bool:
        if env.kind in TASK_KINDS:
            self._on_tasks(env)
        elif env.kind == Kind.DIRECT:
            self._deliver(env.header, env.payload, self.limits)
        elif env.kind == Kind.BCAST:  # one it missed on PUB, sent again
            self._numbered(env)
        elif env.kind == Kind.SKIP:
            self._skip(wire.unpack(wire.Skip, env.payload, self.limits))
        elif env.kind == Kind.END:
            self._end_reason = wire.unpack(wire.End, env.payload, self.limits).reason
            self._told_end = True  # (its reason may read "stopped", as our own stop's)
            logger.info("{}: admin ended the run: {}", self.name, self._end_reason)
            if lost := self.runner.undelivered():  # (it acknowledges what it has first)
                logger.warning("{}: the admin ended the run without acknowledging {} result(s) "
                               "of ours ({}); it runs their task(s) again if it restarts "
                               "holding them: {}", self.name, len(lost), self._end_reason,
                               listed([r.task_id for r in lost], 10, repr))
            if self._sockets is not None:  # (the admin waits to hear we heard: at once, not
                # after our handlers stop, which may take a second: a review of the wait)
                self._sockets.send_soon(self._frames(Kind.BYE, wire.End(HEARD_THE_END)))
            return True
        elif env.kind == Kind.REJECT:  # register again; a broadcast it names goes again then
            self._outbox.refused(env.header.seq)
            self._unknown = "?"  # (first: should the rest of its REJECT be unreadable)
            self._unknown = repr(wire.unpack(wire.Reject, env.payload, self.limits).reason)[:300]
        elif env.kind == Kind.HEARTBEAT:  # the admin's, to us alone: we do not hear PUB
            data = self._beat_data(env)
            self._paced(data)
            self._told_of(data.get("seq"))
        elif env.kind == Kind.EVENT:  # messages of ours the admin could not deliver
            self._not_delivered(wire.unpack(wire.Event, env.payload, self.limits).data)
        return False

    def _not_delivered(self, data: dict[str, Any]) -> None:
        """The admin could not deliver ``count`` (1 unless said) of our messages to an agent:
        said as a flood of them allows, a line a minute for each name and reason, with how
        many it stands for (a message sent again and again to a name nobody has, or to one
        lost that did not come back, was a line each)."""
        count = data.get("count", 1)
        count = count if type(count) is int and count > 0 else 1
        to, reason = str(data.get("to")), str(data.get("reason"))
        if n := self._undelivered_said.say((to, reason), time.monotonic(), count):
            self._said_undelivered(to, reason, n)

    def _said_undelivered(self, to: str, reason: str, n: int) -> None:
        logger.warning("{}: {} to '{}' {} not delivered: {}", self.name,
                       "a message" if n == 1 else f"{n:,} messages", to,
                       "was" if n == 1 else "were", reason)

    def _readable(self, payload: bytes, exc: RemoteProtocolError) -> list[TaskAssignment]:
        """Of a frame of assignments one of which this worker cannot read, the others: they
        are taken first, then each it cannot read, whose task and attempt it can tell, is
        answered as failed, unless a readable copy was taken (dropped with its frame, it was
        sent again and again, for ever; reviews)."""
        try:
            good, bad = wire.unpack_each(TaskAssignment, payload, self.limits)
        except RemoteProtocolError:
            logger.warning("{}: dropped a bad assignment: {}", self.name, exc)
            return []
        self.runner.accept_many(good)
        told = [(_task_key(raw), why) for raw, why in bad]
        keys = [(key, why) for key, why in told if key is not None]
        if nameless := [why for key, why in told if key is None]:
            logger.warning("{}: dropped {} bad assignment(s) (no task id): {}", self.name,
                           len(nameless), nameless[0])
        if keys:
            logger.warning("{}: could not read {} assignment(s), answered as failed: task {!r}: "
                           "{}", self.name, len(keys), keys[0][0][0], keys[0][1])
            self.runner.unreadable([(*key, str(why)) for key, why in keys])
        return good

    def _on_tasks(self, env: Envelope) -> None:
        """Assignments, acknowledgements, cancels and requests to give queued ones back."""
        if env.kind == Kind.ASSIGN:
            try:
                batch = wire.unpack_batch(TaskAssignment, env.payload, self.limits)
            except RemoteProtocolError as exc:
                batch = self._readable(env.payload, exc)  # (it takes them)
            else:
                self.runner.accept_many(batch)
            logger.debug("{}: got {} task(s); {} queued or running here", self.name, len(batch),
                         self.runner.held)
            if any(a.confirm for a in batch) and self._sockets is not None:
                # On probation: say at once that we have them.
                self._sockets.send_soon(self._heartbeat_frames())
        elif env.kind == Kind.ACK:
            acked = wire.unpack(Ack, env.payload, self.limits).results
            self.runner.acknowledge(list(wire.task_pairs(acked, "ACK").items()))
        elif env.kind == Kind.CANCEL:
            cancel = wire.unpack(Cancel, env.payload, self.limits)
            pairs = wire.task_pairs(cancel.tasks, "CANCEL").items()
            stopped = [t for t, attempt in pairs if self.runner.cancel(t, attempt, cancel.reason)]
            if stopped:  # (not those that ended here: an ACK crossed by our heartbeat, say)
                logger.info("{}: the admin cancels task(s) {}: {!r}", self.name,
                            listed(stopped, 20, repr), cancel.reason)
        elif env.kind == Kind.RELEASE:
            asked = wire.unpack(wire.Release, env.payload, self.limits).tasks
            self.runner.release_many(wire.task_pairs(asked, "RELEASE").items())

    def _beat_data(self, env: Envelope) -> dict[str, Any]:
        """What the admin's heartbeat says (an older admin's may say nothing)."""
        return wire.unpack(wire.Event, env.payload, self.limits).data if env.payload else {}

    def _ours(self, epoch: Any) -> bool:
        """Is PUB traffic numbered by ``epoch`` from the admin process we registered with?
        After a restart our SUB reconnects to the new admin's PUB before we are welcomed
        again: its broadcasts count from 1 again and would be taken for the old ones."""
        if epoch is None or epoch == self._epoch:
            return True
        logger.debug("{}: ignored PUB traffic of another admin process (epoch {})",
                     self.name, epoch)
        return False

    def _new_admin(self, epoch: Any) -> None:
        """Another admin process beats on PUB (restarted): our heartbeat goes to it at once,
        not at our pace, which may have slowed past the time it waits for its last process's
        workers; it does not know us, says so, and we register again."""
        if epoch is None or epoch == self._poked or self._welcome is None \
                or self._sockets is None:
            return
        self._poked = epoch
        self._sockets.send_soon(self._heartbeat_frames())

    def _paced(self, data: dict[str, Any]) -> None:
        """The admin's heartbeat says how often both sides beat now: slower when many
        workers are connected (ceylon_net.core.pacing.Pulse)."""
        if self._welcome is None:
            return
        every = data.get("every")
        if type(every) in (int, float) and 0 < every <= MAX_BEAT \
                and every != self._welcome.heartbeat:
            logger.debug("{}: the admin asks for a heartbeat every {:g} s", self.name, every)
            self._welcome.heartbeat = float(every)

    def _decode(self, frames: list[bytes]) -> Envelope | None:
        try:
            return wire.decode_frames(frames, self.limits)
        except RemoteProtocolError as exc:
            logger.warning("{}: dropped a bad frame from the admin: {}", self.name, exc)
            return None

    async def _broadcast_loop(self) -> None:
        while True:
            if self._sockets is None or self._sockets.sub is None:
                await asyncio.sleep(0.05)
                continue
            for frames in await self._sockets.recv_broadcasts():
                self._on_bus(frames)
            # A recv that is already complete does not yield: under a flood of broadcasts the
            # heartbeats (and the admin's messages) would starve, and the admin would call us
            # lost.
            await asyncio.sleep(0)

    def _on_bus(self, frames: list[bytes]) -> None:
        env = self._decode(frames[1:])
        if env is None:
            return
        if env.kind == Kind.HEARTBEAT:
            try:
                data = self._beat_data(env)
            except RemoteProtocolError as exc:
                logger.warning("{}: dropped a bad heartbeat: {}", self.name, exc)
                return
            if not self._ours(data.get("epoch")):
                self._new_admin(data.get("epoch"))
                return
            if self._pub_beat < self._welcomed_at:  # (first since the welcome)
                if self._said_deaf:  # (said blocked: a slow or healed link, as the admin says)
                    logger.info("{}: hears the admin's PUB port now: broadcasts reach this "
                                "worker", self.name)
                else:
                    logger.debug("{}: hears the admin's heartbeats on PUB", self.name)
            self._admin_seen = self._pub_beat = time.monotonic()
            if env.header.seq is not None and self._welcome is not None:
                self._heard(self._inbox.hear(env.header.seq))
            self._paced(data)
        elif env.kind == Kind.BCAST:
            try:
                self._numbered(env)
            except RemoteProtocolError as exc:
                logger.warning("{}: dropped a bad broadcast: {}", self.name, exc)

    def _numbered(self, env: Envelope) -> None:
        """A broadcast, from PUB or sent again: delivered once, in the admin's order (one
        of our own is counted, not delivered)."""
        if env.header.seq is None:
            raise RemoteProtocolError("a broadcast without its number")
        if not self._ours(env.header.epoch):
            return
        first = self._inbox.heard is None
        for header, payload in self._inbox.accept(env.header.seq, (env.header, env.payload)):
            self._take(header, payload)
        self._heard(first)

    def _take(self, header: wire.Header, payload: bytes) -> None:
        """A broadcast's turn has come: ours came back (relayed: forgotten); another's is
        delivered, unless it came before (sent again to a new admin process)."""
        if header.sender == self.id:
            self._outbox.echoed(header.msg_id)
        elif self._outbox.seen.first(header.sender, header.msg_id, header.ts):
            self._deliver(header, payload, self.limits)

    def _skip(self, skip: wire.Skip) -> None:
        before = self._inbox.skipped
        for header, payload in self._inbox.skip(skip.first, skip.last):
            self._take(header, payload)
        if self._inbox.skipped > before:  # (a SKIP repeated while we were slow says nothing)
            self._outbox.unsure()  # (ours among them would never come back)
            logger.warning("{}: {} broadcast(s) were lost to us: we fell further behind than "
                           "the admin keeps", self.name, self._inbox.skipped - before)

    def _told_of(self, seq: Any) -> None:
        """The admin's heartbeat to us alone says how many broadcasts it sent: what we
        missed, once our PUB stalled (BroadcastInbox.told), we ask for over the ROUTER."""
        welcome = self._welcome
        if type(seq) is int and seq >= 0 and welcome is not None \
                and self._inbox.told(seq, time.monotonic(), 2 * welcome.heartbeat):
            self._heard(False)

    def _heard(self, first: bool) -> None:
        """Tell the admin at once what we miss when the inbox says it is due (see
        BroadcastInbox.ask_due: we start hearing, a new gap, or catching up)."""
        inbox = self._inbox
        if inbox.ask_due(first) and self._sockets is not None and self._welcome is not None:
            if inbox.newest_gap > inbox.asked_upto:
                logger.debug("{}: missed broadcasts up to {}; asking the admin for them",
                             self.name, inbox.newest_gap)
            inbox.asked()
            self._sockets.send_soon(self._heartbeat_frames())

    async def _heartbeat_loop(self) -> None:
        while True:
            # The admin's WELCOME sets the pace for both sides; until then, a second (a
            # WELCOME ends that wait: its pace counts from then).
            self._beat_every = self._welcome.heartbeat if self._welcome else 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._beat_every):
                    await self._beat_wake.wait()
            self._beat_wake.clear()
            self._gc.tick(time.monotonic(), self.runner.idle)
            for (to, reason), n in self._undelivered_said.due(time.monotonic()):
                self._said_undelivered(to, reason, n)  # (what a flood that stopped left)
            if self._welcome is not None and self._sockets is not None:
                every = self._welcome.heartbeat
                lost = self.runner.resend_unacknowledged(time.monotonic() - 2 * every)
                if lost:
                    logger.warning("{}: {} result(s) not acknowledged after {:g} s: sending "
                                   "them again", self.name, lost, 2 * every)
                if self.runner.starts or lost:
                    self._flush()  # tasks that started since the last results, results again
                if not self._in_touch():  # (asked before the beat makes us look in touch)
                    self.runner.hold()
                self._deaf_to_pub(self._welcome)
                if await self._sockets.send(self._heartbeat_frames(), 1.0):
                    self._beat_sent = time.monotonic()  # (one that did not leave: not a beat)
                    self._beat_cpu = time.thread_time()

    def _deaf_to_pub(self, welcome: wire.Welcome) -> None:
        """Said once a welcome, as the admin says it: nothing heard on its PUB port a
        liveness window after registering (a firewall that lets only the ROUTER port in)."""
        waited = time.monotonic() - self._welcomed_at
        if self._pub_beat < self._welcomed_at and not self._said_deaf \
                and waited >= welcome.heartbeat * welcome.liveness:
            self._said_deaf = True
            logger.warning("{}: hears nothing on the admin's PUB port {} {:.0f} s after "
                           "registering (is it blocked?): tasks run, but no broadcast can "
                           "reach this worker", self.name, welcome.pub_port, waited)

    def _heartbeat_frames(self, cut_off: Sequence[list[Any]] = ()) -> list[bytes]:
        interval = self._welcome.heartbeat if self._welcome else 1.0
        hears_pub = time.monotonic() - self._pub_beat < 2 * interval
        inbox = self._inbox
        accounted = self.runner.accounted()
        return self._frames(Kind.HEARTBEAT, wire.Heartbeat(
            [*accounted, *(p for p in cut_off if p not in accounted)], pub=hears_pub,
            heard=-1 if inbox.heard is None else inbox.heard, delivered=inbox.delivered,
            missing=inbox.missing(), lost=inbox.skipped, stuck=self.runner.stuck))

    # ------------------------------------------------------------------ results
    def _schedule_flush(self) -> None:
        """News to send: now, at the end of this loop turn, or within RESULT_HOLD (see
        :func:`when_to_flush`: results of a queue of short tasks leave in few frames)."""
        runner = self.runner
        if self._flush_pending is not None and runner.queue.qsize() and flush_stands(
                self._flush_held, len(runner.unsent), runner.urgent):
            return  # (the path of most results)
        if not runner.news:
            return
        when = when_to_flush(len(runner.unsent), runner.urgent, runner.busy,
                             bool(runner.queue.qsize()))
        if when is Flush.NOW:
            self._flush()
            return
        if when is Flush.TURN and self._flush_held and self._flush_pending is not None:
            self._flush_pending.cancel()  # (held no longer: all goes at the end of this turn)
            self._flush_pending = None
        if self._flush_pending is None:
            loop = asyncio.get_running_loop()
            self._flush_held = when is Flush.HOLD
            self._flush_pending = loop.call_later(RESULT_HOLD, self._flush_soon) \
                if self._flush_held else loop.call_soon(self._flush_soon)

    def _scheduled_flush(self) -> None:
        self._flush_pending, self._flush_held = None, False
        self._flush()

    def _flush(self) -> None:
        runner = self.runner
        if self._welcome is None or self._sockets is None or not runner.news:
            return
        started, released, stuck = runner.take_news()
        if started or released or stuck >= 0:
            self._sockets.send_soon(self._frames(Kind.STARTED,
                                                 wire.Started(started, released, stuck)))
        if runner.unsent:
            header = wire.make_header(self.workspace_id, self.name, "TaskResult")
            limit = self.send_limit - wire.FRAME_SLACK
            for _, payload in wire.packed_batches(runner.take_unsent(), limit):
                self._sockets.send_soon(wire.encode_frames(Kind.RESULT, header, payload))

    # ------------------------------------------------------------------ sending
    async def _send(self, kind: bytes, msg: Any, token: str | None = None,
                    timeout: float = 1.0) -> bool:
        """Send a control message; False if it could not leave within ``timeout`` s (then
        the admin is unreachable, which the heartbeats notice)."""
        assert self._sockets is not None
        return await self._sockets.send(self._frames(kind, msg, token), timeout)

    def _frames(self, kind: bytes, msg: Any, token: str | None = None,
                header: wire.Header | None = None) -> list[bytes]:
        """A control message to the admin, ready to send (``header``: one made for it by
        :meth:`_header`, when the caller needs its msg_id)."""
        return wire.encode_frames(kind, header or self._header(msg, token), wire.pack(msg))

    def _header(self, msg: Any, token: str | None = None) -> wire.Header:
        return wire.make_header(self.workspace_id, self.name, wire.type_name(msg), token=token)

    async def _transmit(self, kind: bytes, to: str | None, data: Any) -> None:
        if self._sockets is None:
            raise RuntimeError(f"worker '{self.name}' is not running")
        type_, payload = self._outgoing(data, self.send_limit, self.limits)
        header = wire.make_header(self.workspace_id, self.id, type_, to)
        frames = wire.encode_frames(kind, header, payload)
        if self._welcome is None:  # registering: it goes once we are welcomed
            self._outbox.hold(header.msg_id, frames)
            return
        self._outbox.sent(header.msg_id, frames, self._inbox.heard is not None,
                          self._inbox.top)
        await self._sockets.send(frames)


def _what(frames: list[bytes]) -> str:
    """'broadcast' or 'message', and its type, of our frames (for a log line)."""
    env = wire.decode_frames(frames)
    return (f"{'broadcast' if env.kind == Kind.BCAST else 'message'} "
            f"({env.header.type or 'raw bytes'})")


def _why(value: Any, exc: Exception) -> str:
    """Why a return value cannot be sent: what in it msgpack cannot carry, and where (the
    batch's own error names the batch's list), else the batch's error."""
    try:
        wire.packb(value)
    except LocalProtocolError as own:
        exc = own
    return f"{type(exc).__name__}: {exc}"


Agent = Worker
"""The tutorials' ``Agent``: a worker-side agent (connects to an admin)."""


_STOCK_RUN_TASK = Worker.run_task


def _stock(run_task: Any) -> bool:
    """Is this the worker's own run_task (not a subclass's or one put in its place)? Only
    then may its runner run queued tasks of quick sync handlers in batches: a batch calls
    the handlers itself, not run_task."""
    return getattr(run_task, "__func__", None) is _STOCK_RUN_TASK


def _few(named: list[str]) -> str:
    return f"{', '.join(named[:3])}{' and more' if named[3:] else ''}"


def _task_key(raw: Any) -> tuple[TaskId, int] | None:
    """The task id and attempt of an assignment as it came (msgpack's form), if they are
    what an id and an attempt are (the attempt is left out when 1)."""
    task = raw.get("task") if isinstance(raw, dict) else None
    tid = task.get("id") if isinstance(task, dict) else None
    attempt = raw.get("attempt", 1) if isinstance(raw, dict) else None
    if not (type(tid) is str or (type(tid) is int and tid in wire.MSGPACK_INTS)) \
            or type(attempt) is not int or attempt < 1:
        return None
    return tid, attempt
