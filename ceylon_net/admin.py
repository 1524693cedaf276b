"""The admin agent: registry of workers, task state, routing of messages, assignment."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import zmq
from loguru import logger

from . import protocol
from .agent import AgentBase, AgentDetail, finish_tasks
from .batches import Batch, Batches, batch_gate
from .board import TaskBoard
from .errors import ConfigError, RemoteProtocolError, TaskFailed
from .groups import GroupEvent, TaskGroup, TaskManager
from .guard import PeerGuard, token_ok
from .journal import Journal, record_added, record_changes, restore_state
from .metrics import Histogram, serve_metrics
from .protocol import (
    MAX_CAPACITY,
    PROTOCOL_VERSION,
    Ack,
    BatchProgress,
    BatchReport,
    Cancel,
    End,
    Envelope,
    Event,
    Heartbeat,
    Hello,
    Kind,
    Limits,
    Reject,
    Status,
    Submission,
    Submitted,
    Welcome,
)
from .scheduler import Blocked, WorkerSlot
from .settings import DEFAULT_PORT, DEFAULT_WORKSPACE_ID, AdminSettings, env_default
from .status import snapshot
from .tasks import RunReport, Task, TaskAssignment, TaskId, TaskResult, TaskStatus
from .transport import AdminSockets, load_keys, peer_address
from .workfile import parse_work

if TYPE_CHECKING:
    from .worker import Worker

TICK = 0.25  # resolution of timers (heartbeats, liveness, unassignable timeout)
PROBATION = 0.2  # least seconds a new worker has to confirm its first task
# Results are acknowledged this long after they are recorded, several in one ACK: off the
# round trip of the next task (an ACK sent at once delayed the next ASSIGN by a send), and
# fewer sends under load. A worker only forgets acknowledged results, so nothing is at risk.
ACK_DELAY = 0.01
RECV_BATCH = 256  # messages handled per round before the timers get a turn


@dataclass(slots=True)
class AdminStats:
    """Counters for the metrics endpoint (plain ints: cheap on the hot path)."""

    assignments: int = 0
    results: int = 0
    reconnects: int = 0
    lost: int = 0
    run_seconds: Histogram = field(default_factory=Histogram)
    wait_seconds: Histogram = field(default_factory=Histogram)


@dataclass(slots=True)
class WorkerRecord:
    identity: bytes
    detail: AgentDetail
    last_seen: float
    hears_pub: bool = False  # it gets our heartbeats on PUB (its last heartbeat said so)


class Admin(AgentBase):
    """Coordinates a workspace. ``Admin(name, port)`` as in the tutorials; everything else has a
    default taken from ``CEYLON_*`` environment variables, or pass ``settings``."""

    def __init__(
        self,
        name: str = "admin",
        port: int | None = None,
        workspace_id: str | None = None,
        *,
        settings: AdminSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = AdminSettings(
                name=name,
                workspace=workspace_id or env_default("WORKSPACE", DEFAULT_WORKSPACE_ID),
                port=env_default("PORT", DEFAULT_PORT, int) if port is None else port,
                **{"pub_port": env_default("PUB_PORT", None, int),
                   "bind": env_default("BIND", "0.0.0.0"), **options},
            )
        super().__init__(settings.name, settings.workspace)
        self.settings = settings
        self.limits = Limits(max_str_len=settings.max_message_bytes,
                             max_bin_len=settings.max_message_bytes)
        self.board = TaskBoard(settings.max_attempts, time.monotonic)
        self.stats = AdminStats()
        self._results_out: TextIO | None = None
        self._result_lines: list[str] = []
        self._seen_names: set[str] = set()
        self.task_manager = TaskManager()
        self.batches = Batches()
        self.port = settings.port
        self.pub_port = settings.pub_port or 0
        self.bad_frames = 0
        self.dropped_hellos = 0
        self.guard = PeerGuard(settings.bad_frame_limit, settings.bad_frame_window,
                               settings.ban_seconds, settings.hello_rate)
        self.unassigned: list[TaskId] = []
        self._workers: dict[bytes, WorkerRecord] = {}
        self._by_name: dict[str, bytes] = {}
        self._sockets: AdminSockets | None = None
        self._loops: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._run_done = asyncio.Event()
        self._assigning = settings.expect_workers == 0
        self._warned_senders: set[bytes] = set()
        self._warned_blocked: set[tuple[int, str | None]] = set()
        self._blocked_since: float | None = None
        self._blocked: list[Blocked] = []
        self._blocked_version: tuple[int, int] | None = None
        self._last_progress: tuple[int, int, int] | None = None
        self._waiters: dict[TaskId, asyncio.Future[TaskResult]] = {}
        self._acks: dict[bytes, list[list[Any]]] = {}
        self._ack_timer: asyncio.TimerHandle | None = None
        self._woke_waiters = False
        self._steal_timers: set[asyncio.TimerHandle] = set()
        self._closing = False
        self.journal: Journal | None = None
        self.resumed = False  # state came back from the journal
        self._started_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the ROUTER and PUB sockets and start serving."""
        s = self.settings
        if s.journal is not None and self.journal is None:
            self.journal = Journal(s.journal, s.workspace)  # JournalError: nothing started
            self._resume()
        self._started_at = time.monotonic()
        if s.results_file is not None and self._results_out is None:
            try:
                self._results_out = open(s.results_file, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(f"--results {s.results_file}: {exc.strerror}") from None
        if s.metrics_port is not None:
            try:
                serve_metrics(self, s.bind, s.metrics_port)
            except OSError as exc:
                raise ConfigError(f"--metrics-port {s.metrics_port}: {exc.strerror}") from None
        curve = load_keys(s.curve_secret) if s.curve_secret else None
        self._sockets = AdminSockets(s.endpoint_host, s.max_message_bytes, s.workspace, curve,
                                     s.authorized_keys)
        try:
            self.port, self.pub_port = self._sockets.bind(s.port, s.pub_port)
        except ConfigError:
            self._sockets.close(0)
            self._sockets = None
            raise
        logger.info("admin '{}' serving workspace '{}' on tcp://{}:{} (PUB {})",
                    self.name, self.workspace_id, s.bind, self.port, self.pub_port)
        if s.curve_secret is None and not _is_loopback(s.bind):
            logger.warning("running open on {}: no CURVE keys{}, so anyone who can reach these "
                           "ports can {} (see the README's Security section)", s.bind,
                           "" if s.token else " and no token",
                           "read the traffic" if s.token else "join, submit and read")
        self._loops = [asyncio.create_task(self._recv_loop(), name="admin-recv"),
                       asyncio.create_task(self._tick_loop(), name="admin-tick"),
                       asyncio.create_task(self._sockets.follow_subscriptions(),
                                           name="admin-subscriptions")]

    async def stop(self) -> None:
        """Ask the admin to stop; :meth:`arun_admin` / :meth:`serve` then shut down."""
        self._stopped.set()

    async def serve(self) -> None:
        """Run until :meth:`stop`."""
        await self._stopped.wait()

    async def close(self, reason: str = "admin stopped") -> None:
        """Tell every worker the run is over, then close the sockets."""
        if self._sockets is None:
            return
        self._closing = True
        for timer in self._steal_timers:
            timer.cancel()
        self._steal_timers.clear()
        self._flush_acks()
        for rec in list(self._workers.values()):
            self._send(rec.identity, Kind.END, End(reason))
        self._publish_event("admin_stopped", reason=reason)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._cancel_handlers()
        self._sockets.close()
        self._sockets = None
        self._commit()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._results_out is not None:
            self._results_out.close()
            self._results_out = None
        logger.info("admin '{}' stopped: {}", self.name, reason)

    async def arun_admin(self, inputs: bytes = b"", workers: Iterable[Worker] = ()) -> None:
        """Start, run the given in-process workers against this admin over real loopback
        sockets, and serve until :meth:`stop`. ``inputs`` is kept for the tutorials' sake."""
        await self.start()
        worker_tasks = [asyncio.create_task(w.arun_against(self), name=f"worker-{w.name}")
                        for w in workers]
        try:
            await self.serve()
        finally:
            await self.close("run over")
            await finish_tasks(worker_tasks, timeout=5.0)

    def run_admin(self, inputs: bytes = b"", workers: Iterable[Worker] = ()) -> None:
        """Blocking form of :meth:`arun_admin`."""
        asyncio.run(self.arun_admin(inputs, list(workers)))

    # ------------------------------------------------------------------ tasks
    def submit(self, tasks: Sequence[Task]) -> None:
        """Queue tasks for the connected (and future) workers. Raises ConfigError (nothing
        queued) for a duplicate id, an unknown dependency or a dependency cycle."""
        self.submit_work(tasks, ())

    def submit_groups(self, groups: Sequence[TaskGroup]) -> None:
        """Queue task groups (seed 000): their tasks, dependencies, priorities and goals."""
        self.submit_work((), groups)

    def submit_work(self, tasks: Sequence[Task], groups: Sequence[TaskGroup],
                    after: Any = None) -> list[TaskId]:
        """Queue tasks and groups together, all of them waiting on gate ``after`` if given.
        All or nothing: ConfigError leaves the admin as it was. Returns the task ids."""
        group_tasks, gates = self.task_manager.register(groups, self.board.records.keys())
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
        if self.journal is not None:
            record_added(self.journal, self.board, self.task_manager, everything, groups)
        self._run_done.clear()
        self._settle()
        self._pump()
        self._check_done()
        return [t.id for t in everything]

    async def run_tasks(self, tasks: Sequence[Task] = (), groups: Sequence[TaskGroup] = ()
                        ) -> RunReport:
        """Submit tasks and groups, and wait until every task has a result, was cancelled, or
        was given up as unassignable."""
        if tasks:
            self.submit(tasks)
        if groups:
            self.submit_groups(groups)
        await self.wait_idle()
        return self.report()

    async def wait_idle(self) -> None:
        """Wait until nothing submitted is left to run."""
        await self._run_done.wait()

    def report(self) -> RunReport:
        report = self.board.report(self.unassigned)
        report.groups = self.task_manager.summaries()
        return report

    async def execute(self, task: Task) -> TaskResult:
        """Submit one task and wait for its result (a failed run is a result too)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters[task.id] = fut
        try:
            self.submit([task])
        except BaseException:
            self._waiters.pop(task.id, None)
            raise
        return await fut

    # ------------------------------------------------------------------ agents
    def get_connected_agents(self) -> list[AgentDetail]:
        return [rec.detail for rec in self._workers.values()]

    async def on_agent_connected(self, topic: str, agent: AgentDetail) -> None:
        """Called when a worker joins. Override it (the tutorials do)."""

    # ------------------------------------------------------------------ receiving
    async def _recv_loop(self) -> None:
        assert self._sockets is not None
        while True:
            batch = await self._sockets.recv_batch(RECV_BATCH)
            for frames in batch:
                self._handle(frames)
            if self._woke_waiters:
                # Someone awaits one of these results (execute()): let it go first, so what it
                # submits next leaves before the bookkeeping below.
                self._woke_waiters = False
                await asyncio.sleep(0)
            self._settle()
            self._pump()
            self._commit()  # before the acks: an acknowledged result is on disk
            if self._acks and self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY,
                                                                        self._flush_acks)
            if self._sockets.more:
                # More is waiting, and a recv that is already complete does not yield: a peer
                # that never pauses would starve the timers (heartbeats, liveness).
                await asyncio.sleep(0)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        identity = frames[0].bytes
        now = time.monotonic()
        if self.guard.banned and self.guard.is_banned(identity, now):
            self.bad_frames += 1
            return
        if len(frames) > 1 and frames[1].bytes == Kind.HELLO and identity not in self._workers \
                and not self.guard.allow_hello(peer_address(frames[-1]) or "?", now):
            self.dropped_hellos += 1
            return
        try:
            env = protocol.decode_frames([f.bytes for f in frames[1:]], self.limits)
        except RemoteProtocolError as exc:
            self._bad_frame(identity, frames[-1], str(exc))
            return
        rec = self._workers.get(identity)
        if rec is not None:
            rec.last_seen = time.monotonic()
        try:
            if env.kind in (Kind.HELLO, Kind.STATUS, Kind.SUBMIT) or \
                    (env.kind == Kind.CANCEL and rec is None):
                address = peer_address(frames[-1])
                if not self._token_ok(identity, env, env.kind.decode(), address):
                    return
                if env.kind == Kind.HELLO:
                    self._on_hello(identity, env, address)
                elif env.kind == Kind.STATUS:
                    self._on_status(identity, env)
                elif env.kind == Kind.SUBMIT:
                    self._on_submit(identity, env, address)
                else:
                    self._on_cancel_request(identity, env)
            elif rec is None:
                self._on_stranger(identity, env)
            elif env.kind == Kind.RESULT:
                self._on_results(rec, env)
            elif env.kind == Kind.BCAST:
                self._on_broadcast(rec, env)
            elif env.kind == Kind.DIRECT:
                self._on_direct(rec, env)
            elif env.kind == Kind.BYE:
                self._drop_worker(identity, "left")
            elif env.kind == Kind.DRAIN:
                self._on_drain(rec)
            elif env.kind == Kind.HEARTBEAT:
                self._on_heartbeat(rec, env)
            else:
                raise RemoteProtocolError(f"{env.kind.decode()} is not for the admin")
        except RemoteProtocolError as exc:
            self._bad_frame(identity, frames[-1], str(exc))
        except Exception as exc:
            # Our bug, triggered by what this peer sent: log it with the traceback, drop the
            # frame, and keep serving everyone else.
            logger.opt(exception=exc).error("handling {} from {!r} failed; frame dropped",
                                            env.kind.decode(), identity)
            self._bad_frame(identity, frames[-1], f"{type(exc).__name__}: {exc}")

    def _bad_frame(self, identity: bytes, frame: zmq.Frame, reason: str) -> None:
        self.bad_frames += 1
        address = peer_address(frame) or "?"
        if identity not in self._warned_senders:
            self._warned_senders.add(identity)
            logger.warning("dropped a bad frame from {!r} ({}): {}; later ones from this sender "
                           "are counted, not logged", identity, address, reason)
        if self.guard.bad_frame(identity, time.monotonic()):
            g = self.guard
            logger.warning("peer {!r} ({}) sent more than {} bad frames in {:g} s: disconnected "
                           "(everything it sends is dropped for {:g} s)", identity, address,
                           g.limit, g.window, g.ban)
            self._drop_worker(identity, "disconnected for sending bad frames")

    def _token_ok(self, identity: bytes, env: Envelope, what: str, address: str) -> bool:
        if token_ok(self.settings.token, env.header.token):
            return True
        logger.warning("refused {} from {!r} ({}): wrong or missing token", what, identity,
                       address or "?")
        self._send(identity, Kind.REJECT, Reject("wrong or missing token (--token / "
                                                 "CEYLON_TOKEN)"))
        return False

    def _on_stranger(self, identity: bytes, env: Envelope) -> None:
        # Heartbeats or results from a peer we do not know (we restarted, or it was declared
        # lost): tell it to register again rather than silently ignoring it.
        if env.kind in (Kind.HEARTBEAT, Kind.RESULT, Kind.BCAST, Kind.DIRECT):
            self._send(identity, Kind.REJECT, Reject("not registered: send HELLO first",
                                                     retry=True))
        else:
            raise RemoteProtocolError(f"{env.kind.decode()} from an unregistered peer")

    def _on_status(self, identity: bytes, env: Envelope) -> None:
        if env.header.workspace != self.workspace_id:
            self._reject(identity, f"status for workspace '{_clip(env.header.workspace)}' asked "
                                   f"of admin of '{self.workspace_id}'")
            return
        self._send(identity, Kind.STATUS, Status(self.status()))

    def _on_submit(self, identity: bytes, env: Envelope, host: str) -> None:
        if env.header.workspace != self.workspace_id:
            self._reject(identity, f"batch for workspace '{_clip(env.header.workspace)}' sent "
                                   f"to admin of '{self.workspace_id}'")
            return
        sub = protocol.unpack(Submission, env.payload, self.limits)
        try:
            tasks, groups = parse_work(sub.doc, "submission")
            ids = [t.id for t in tasks] + [t.task_id for g in groups for t in g.subtasks]
            batch, after = self.batches.start(identity, ids, sub.wait, sub.sequential)
            try:
                self.submit_work(tasks, groups, after)
            except ConfigError:
                del self.batches.open[batch.id]
                raise
        except ConfigError as exc:
            self._reject(identity, str(exc))
            return
        logger.info("batch {} from {}: {} task(s){}", batch.id, host or "?", len(ids),
                    ", after the previous batch" if after else "")
        self._send(identity, Kind.SUBMIT, Submitted(batch.id, len(ids)))

    def status(self) -> dict[str, Any]:
        """Workers, groups, queued tasks and counts (what ceylon-status prints)."""
        return snapshot(self)

    def _on_hello(self, identity: bytes, env: Envelope, host: str) -> None:
        h = env.header
        if h.version != PROTOCOL_VERSION:
            self._reject(identity, f"protocol version {h.version} != admin's {PROTOCOL_VERSION}")
            return
        if h.workspace != self.workspace_id:  # known from the header: the payload stays unread
            self._reject(identity, f"worker '{_clip(h.sender)}' rejected: workspace "
                                   f"'{_clip(h.workspace)}' != admin's '{self.workspace_id}'")
            return
        try:
            hello = protocol.unpack(Hello, env.payload, self.limits)
        except RemoteProtocolError as exc:
            self._reject(identity, f"bad HELLO: {exc}")
            return
        reason = self._hello_problem(identity, hello)
        if reason:
            self._reject(identity, reason)
            return
        if identity not in self._workers:
            if hello.name in self._seen_names:
                self.stats.reconnects += 1
            self._seen_names.add(hello.name)
            self._register(identity, hello, host)
        self._send(identity, Kind.WELCOME, Welcome(hello.name, self.name, self.pub_port,
                                                   self.settings.heartbeat,
                                                   self.settings.liveness))
        self._reconcile(self._workers[identity], hello)

    def _hello_problem(self, identity: bytes, hello: Hello) -> str | None:
        hello.name = _clip(hello.name)  # quoted back below
        if not 0 <= hello.skill <= 10 or not 1 <= hello.capacity <= MAX_CAPACITY:
            return (f"worker '{hello.name}' rejected: skill must be 0-10 and capacity "
                    f"1-{MAX_CAPACITY}")
        if not hello.name or hello.name == self.name:
            return f"worker name '{hello.name}' is reserved"
        other = self._by_name.get(hello.name)
        if other is not None and other != identity:
            old = self._workers[other]
            if time.monotonic() - old.last_seen > self.settings.heartbeat:
                # Silent for a heartbeat: most likely the same worker restarted. Take the new one.
                self._drop_worker(other, "replaced by a new connection under its name")
                return None
            return (f"worker name '{hello.name}' is already connected (from "
                    f"{old.detail.host or '?'}); choose another --name")
        return None

    def _reconcile(self, rec: WorkerRecord, hello: Hello) -> None:
        """A worker (re)registered telling what it still runs and which results we never
        acknowledged: keep what is still its own, requeue what it lost, stop what is not
        its any more, and take the results."""
        running = protocol.task_pairs(hello.running, "HELLO running")
        results = [protocol.from_wire(TaskResult, r) for r in hello.results]
        held = {**running, **{r.task_id: r.attempt for r in results}}
        # Assignments younger than a heartbeat may be on their way (sent after this HELLO
        # was written): the next heartbeat settles those.
        requeued, stale = self.board.reclaim(rec.detail.name, held,
                                             time.monotonic() - self.settings.heartbeat)
        self.board.confirm(rec.detail.name, running)
        if requeued:
            logger.warning("worker '{}' came back without {} of its task(s); requeued",
                           rec.detail.name, len(requeued))
        cancel = [[t, running[t]] for t in stale if t in running]
        if cancel:
            self._send(rec.identity, Kind.CANCEL, Cancel(cancel, "reassigned while away"))
        if results:
            self._accept_results(rec, results)

    def _register(self, identity: bytes, hello: Hello, host: str) -> None:
        detail = AgentDetail(hello.name, hello.name, hello.role, hello.skill, hello.capacity, host)
        self._workers[identity] = WorkerRecord(identity, detail, time.monotonic())
        self._by_name[hello.name] = identity
        # With --prefetch the admin keeps that many more on the worker than it runs at once
        # (its runner still runs at most --concurrency; the rest wait in its queue).
        held = min(hello.capacity + self.settings.prefetch, MAX_CAPACITY)
        self.board.add_worker(WorkerSlot(hello.name, hello.skill, hello.role, held,
                                         handlers=frozenset(hello.handlers)), probation=True)
        self._warned_blocked.clear()
        logger.info("worker '{}' joined from {} (role {}, skill {}, capacity {}); {} connected",
                    hello.name, host or "?", hello.role, hello.skill, hello.capacity,
                    len(self._workers))
        self._publish_event("worker_joined", **protocol.to_wire(detail))
        if not self._assigning and len(self._workers) >= self.settings.expect_workers:
            self._assigning = True
            logger.info("all {} expected workers connected: starting task distribution",
                        self.settings.expect_workers)
        self._spawn(self.on_agent_connected(self.workspace_id, detail),
                    f"on_agent_connected({hello.name})")

    def _reject(self, identity: bytes, reason: str) -> None:
        logger.warning("rejected {!r}: {}", identity, reason)
        self._send(identity, Kind.REJECT, Reject(reason))

    def _on_results(self, rec: WorkerRecord, env: Envelope) -> None:
        results = protocol.unpack_batch(TaskResult, env.payload, self.limits)
        self._accept_results(rec, results, env.payload)

    def _accept_results(self, rec: WorkerRecord, results: list[TaskResult],
                        payload: bytes | None = None) -> None:
        accepted = []
        acks = self._acks.setdefault(rec.identity, [])
        for result in results:
            acks.append([result.task_id, result.attempt])
            if result.worker != rec.detail.name:
                raise RemoteProtocolError(f"result names worker '{result.worker}', "
                                          f"sender is '{rec.detail.name}'")
            if self.board.record(result) is None:
                logger.debug("ignored stale result for task {!r} from {}", result.task_id,
                             result.worker)
                continue
            accepted.append(result)
            self.stats.results += 1
            self.stats.run_seconds.observe(result.seconds)
            if self._results_out is not None:
                self._result_lines.append(json.dumps(
                    {"task_id": result.task_id, "worker": result.worker,
                     "success": result.success, "seconds": round(result.seconds, 6),
                     "attempt": result.attempt, "error": result.error, "value": result.value,
                     "at": time.time()}, default=repr))
            waiter = self._waiters.pop(result.task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
                self._woke_waiters = True
            logger.debug("task {!r} done by {}: success={}", result.task_id, result.worker,
                         result.success)
        if accepted and self._wanted(Kind.RESULT):
            if payload is None or len(accepted) != len(results):
                payload = protocol.pack_batch(accepted)
            self._publish(Kind.RESULT, "TaskResult", payload)

    def _on_heartbeat(self, rec: WorkerRecord, env: Envelope) -> None:
        beat = protocol.unpack(Heartbeat, env.payload, self.limits)
        rec.hears_pub = beat.pub
        holding = protocol.task_pairs(beat.holding, "heartbeat")
        # Anything assigned two heartbeats ago that the worker does not mention never
        # reached it; what is younger may still be on its way.
        cutoff = time.monotonic() - 2 * self.settings.heartbeat
        requeued, _ = self.board.reclaim(rec.detail.name, holding, assigned_before=cutoff)
        self.board.confirm(rec.detail.name, holding)
        if requeued:
            logger.warning("worker '{}' never got task(s) {}; requeued", rec.detail.name,
                           requeued)
            self.task_manager.mark(requeued, TaskStatus.PENDING)

    def _flush_acks(self) -> None:
        """Acknowledge the results handled since the last time (after they are recorded)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._commit()
        for identity, keys in self._acks.items():
            if keys:
                self._send(identity, Kind.ACK, Ack(keys))
        self._acks.clear()

    def _on_drain(self, rec: WorkerRecord) -> None:
        slot = self.board.scheduler.workers.get(rec.detail.name)
        if slot is not None:
            slot.capacity = 0
            self.board.scheduler.touch()
        logger.info("worker '{}' is draining: no new tasks for it", rec.detail.name)

    def cancel(self, task_ids: Sequence[TaskId], reason: str = "cancelled by request"
               ) -> dict[str, list[TaskId]]:
        """Cancel tasks: queued or waiting ones at once, running ones by asking their worker
        (they finish as CANCELLED when it answers). Returns what happened to each."""
        out: dict[str, list[TaskId]] = {"cancelled": [], "stopping": [], "unknown": [],
                                        "finished": []}
        for task_id in task_ids:
            rec = self.board.records.get(task_id)
            if rec is None:
                out["unknown"].append(task_id)
            elif self.board.cancel([task_id], reason):
                out["cancelled"].append(task_id)
            elif rec.worker is not None and rec.worker in self._by_name and \
                    rec.status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING):
                self._send(self._by_name[rec.worker], Kind.CANCEL,
                           Cancel([[task_id, rec.attempt]], reason))
                out["stopping"].append(task_id)
            else:
                out["finished"].append(task_id)
        self._settle()
        return out

    def _on_cancel_request(self, identity: bytes, env: Envelope) -> None:
        request = protocol.unpack(Cancel, env.payload, self.limits)
        ids = list(protocol.task_pairs(request.tasks, "cancel request"))
        outcome = self.cancel(ids, request.reason or "cancelled by request")
        logger.info("cancel request for {}: {}", ids, outcome)
        self._send(identity, Kind.STATUS, Status({"cancel": outcome}))

    def _on_broadcast(self, rec: WorkerRecord, env: Envelope) -> None:
        env.header.sender = rec.detail.name  # a worker speaks for itself only
        assert self._sockets is not None
        self._sockets.publish(Kind.BCAST, protocol.encode_frames(Kind.BCAST, env.header,
                                                                 env.payload))
        self._deliver(env.header, env.payload, self.limits)

    def _on_direct(self, rec: WorkerRecord, env: Envelope) -> None:
        env.header.sender = rec.detail.name
        to = env.header.to
        if to in (None, self.name, self.id):
            self._deliver(env.header, env.payload, self.limits)
            return
        target = self._by_name.get(to)
        if target is None:
            logger.warning("message from '{}' to unknown agent '{}' dropped", rec.detail.name, to)
            return
        frames = protocol.encode_frames(Kind.DIRECT, env.header, env.payload)
        if not self._sockets or not self._sockets.send(target, frames):
            logger.warning("message from '{}' to '{}' could not be delivered", rec.detail.name, to)

    # ------------------------------------------------------------------ sending
    async def _transmit(self, kind: bytes, to: str | None, data: Any) -> None:
        type_, payload = protocol.encode_payload(data)
        if kind == Kind.BCAST:
            self._publish(Kind.BCAST, type_, payload)
            return
        target = self._by_name.get(to or "")
        if target is None:
            raise ConfigError(f"no connected agent named '{to}'")
        header = protocol.make_header(self.workspace_id, self.name, type_, to)
        if not self._sockets or not self._sockets.send(
                target, protocol.encode_frames(Kind.DIRECT, header, payload)):
            raise ConfigError(f"agent '{to}' is not reachable")

    def _send(self, identity: bytes, kind: bytes, msg: Any) -> bool:
        if self._sockets is None:
            return False
        header = protocol.make_header(self.workspace_id, self.name, protocol.type_name(msg))
        return self._sockets.send(identity, protocol.encode_frames(kind, header,
                                                                   protocol.pack(msg)))

    def _wanted(self, kind: bytes) -> bool:
        return self._sockets is not None and self._sockets.wanted(kind)

    def _publish(self, kind: bytes, type_: str | None, payload: bytes) -> None:
        if self._sockets is not None and self._sockets.wanted(kind):
            header = protocol.make_header(self.workspace_id, self.name, type_)
            self._sockets.publish(kind, protocol.encode_frames(kind, header, payload))

    def _publish_event(self, event: str, **data: Any) -> None:
        if self._wanted(Kind.EVENT):
            self._publish(Kind.EVENT, "Event", protocol.pack(Event(event, data)))

    # ------------------------------------------------------------------ assignment
    def _pump(self) -> None:
        """Give ready tasks to free slots; one ASSIGN frame per worker per round."""
        if not self._assigning or self._sockets is None:
            return
        plan = self.board.plan(time.monotonic())
        if plan:
            self._commit()  # journal the assignments before any worker can act on them
        for worker, assignments in plan.items():
            self._deliver_assignments(worker, assignments)

    def _deliver_assignments(self, worker: str, assignments: list[TaskAssignment]) -> None:
        assert self._sockets is not None
        header = protocol.make_header(self.workspace_id, self.name, "TaskAssignment")
        frames = protocol.encode_frames(Kind.ASSIGN, header, protocol.pack_batch(assignments))
        identity = self._by_name.get(worker)
        if identity is None or not self._sockets.send(identity, frames):
            logger.warning("could not deliver {} task(s) to '{}'; requeued", len(assignments),
                           worker)
            self.board.unsent(worker, assignments)
            return
        self.board.delivered(assignments)
        if assignments[0].confirm:  # on probation: it has a moment to say it has them
            self._steal_timers.add(asyncio.get_running_loop().call_later(self._probation,
                                                                         self._steal))
        self.stats.assignments += len(assignments)
        for a in assignments:
            rec = self.board.records[a.task.id]
            self.stats.wait_seconds.observe(max(0.0, rec.assigned_at - rec.ready_at))
        if self.task_manager.task_groups:
            self.task_manager.mark((a.task.id for a in assignments), TaskStatus.RUNNING)
        self._sockets.publish(Kind.ASSIGN, frames)
        for a in assignments:
            logger.debug("assigned task {!r} (difficulty {}) to {}", a.task.id,
                         a.task.difficulty, worker)

    @property
    def _probation(self) -> float:
        """Seconds a worker on probation has to confirm an assignment."""
        return max(PROBATION, self.settings.heartbeat / 5)

    def _steal(self) -> None:
        """Take back what workers on probation did not confirm in time (see board.steal)."""
        now = asyncio.get_running_loop().time()
        self._steal_timers = {t for t in self._steal_timers if t.when() > now}
        if self._sockets is None or self._closing:
            return
        taken = self.board.steal(time.monotonic() - self._probation + 0.005)  # timers run early
        for worker, tasks in taken.items():
            logger.warning("worker '{}' did not confirm task(s) {} within {:g} s: it is not "
                           "reading; requeued, and it gets no more until it does", worker,
                           [t for t, _ in tasks], self._probation)
            self.task_manager.mark((t for t, _ in tasks), TaskStatus.PENDING)
            identity = self._by_name.get(worker)
            if identity is not None:
                self._send(identity, Kind.CANCEL, Cancel([[t, a] for t, a in tasks],
                                                         "not confirmed in time; reassigned"))
        if taken:
            self._pump()
            self._commit()

    # ------------------------------------------------------------------ timers
    async def _tick_loop(self) -> None:
        next_beat = 0.0
        while True:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat
                self._heartbeat()
                self._batch_progress()
                self._purge_orphans(now)
                self._log_progress()
                self.guard.forget_idle(now)
            self._purge_lost(now)  # every tick: a lost worker is noticed within a tick
            self._check_blocked(now)
            self._commit()
            await asyncio.sleep(TICK)

    def _heartbeat(self) -> None:
        # One heartbeat on PUB for everyone; over the ROUTER only to workers that do not hear
        # it (just joined, or their PUB connection is blocked): 1,000 idle workers cost 1,000
        # sends a second otherwise.
        self._publish(Kind.HEARTBEAT, None, b"")
        for rec in list(self._workers.values()):
            if not rec.hears_pub:
                self._send(rec.identity, Kind.HEARTBEAT, Event("heartbeat"))

    def _purge_lost(self, now: float) -> None:
        limit = self.settings.heartbeat * self.settings.liveness
        for rec in list(self._workers.values()):
            if now - rec.last_seen > limit:
                self._drop_worker(rec.identity, f"lost: silent for {now - rec.last_seen:.1f} s")

    def _drop_worker(self, identity: bytes, why: str) -> None:
        rec = self._workers.pop(identity, None)
        if rec is None:
            return
        self.stats.lost += why.startswith("lost")
        self._by_name.pop(rec.detail.name, None)
        requeued = self.board.remove_worker(rec.detail.name, why)
        self.task_manager.mark(requeued, TaskStatus.PENDING)
        logger.warning("worker '{}' {}; {} task(s) back in the queue", rec.detail.name, why,
                       len(requeued))
        self._publish_event("worker_left", name=rec.detail.name, reason=why,
                            requeued=list(requeued))
        self._pump()

    # ------------------------------------------------------------------ journal
    def _resume(self) -> None:
        assert self.journal is not None
        self.resumed = restore_state(self.journal, self.board, self.task_manager)
        if self.resumed:
            self._check_done()
            b = self.board
            logger.info("resumed from journal {}: {} task(s), {} finished, {} were running "
                        "(waiting for their workers), {} queued, {} waiting",
                        self.journal.path, len(b.records), len(b.records) - b.open, b.running,
                        len(b.scheduler), len(b.waiting))

    def _commit(self) -> None:
        """Write what changed this round to the journal, in one transaction, and the round's
        results to the --results file."""
        if self._result_lines and self._results_out is not None:
            self._results_out.write("\n".join(self._result_lines) + "\n")
            self._results_out.flush()
            self._result_lines.clear()
        if self.journal is not None:
            record_changes(self.journal, self.board)

    def _purge_orphans(self, now: float) -> None:
        """After a restart, tasks wait for the worker they were on; not for ever."""
        grace = self.settings.heartbeat * self.settings.liveness * 2
        if not self.resumed or now - self._started_at < grace:
            return
        for worker in list(self.board.orphans()):
            lost = self.board.remove_worker(worker, "did not come back after the restart")
            logger.warning("worker '{}' did not come back after the admin restarted; {} "
                           "task(s) back in the queue", worker, len(lost))
        self._settle()
        self._pump()

    def _log_progress(self) -> None:
        board = self.board
        state = (len(board.records) - board.open, board.running, len(board.scheduler))
        if state != self._last_progress and board.records:
            self._last_progress = state
            waiting = f", {len(board.waiting)} waiting on dependencies" if board.waiting else ""
            logger.info("progress: {}/{} done, {} running, {} queued{}, {} worker(s)", state[0],
                        len(board.records), state[1], state[2], waiting, len(self._workers))
            for g in self.task_manager.task_groups.values():
                if g.status == TaskStatus.RUNNING:
                    goal = f", goal '{g.goal.name}' {g.goal.status.value}" if g.goal else ""
                    logger.info("group '{}': {}/{} done{}", g.name, g.finished, g.total, goal)

    def _check_blocked(self, now: float) -> None:
        if not self._assigning or not self._workers or not len(self.board.scheduler):
            self._blocked_since = None
            return
        version = (self.board.scheduler.version, self.board.running)
        if version != self._blocked_version:  # 100,000 queued tasks: not sorted every tick
            self._blocked_version = version
            self._blocked = self.board.blocked()
        blocked = self._blocked
        for b in blocked:
            if (b.difficulty, b.role) not in self._warned_blocked:
                self._warned_blocked.add((b.difficulty, b.role))
                logger.warning(self._describe_blocked(b))
        stuck = sum(len(b.tasks) for b in blocked)
        if not stuck or self.board.running or stuck != len(self.board.scheduler):
            self._blocked_since = None
            return
        if self._blocked_since is None:
            self._blocked_since = now
            logger.warning("only unassignable tasks remain; giving up on them in {:g} s unless "
                           "a capable worker joins", self.settings.unassignable_timeout)
        elif now - self._blocked_since >= self.settings.unassignable_timeout:
            ids = [t for b in blocked for t in b.tasks]
            logger.error("giving up on {} unassignable task(s): {}", len(ids), ids)
            self.unassigned.extend(ids)
            self.board.give_up(ids)
            self._settle()
            for task_id in ids:
                waiter = self._waiters.pop(task_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(TaskFailed(f"task {task_id!r}: no worker can take it"))
            self._check_done()

    def _describe_blocked(self, b: Blocked) -> str:
        task = self.board.records[b.tasks[0]].task
        more = f" (and {len(b.tasks) - 1} more like it)" if len(b.tasks) > 1 else ""
        head = f"task {task.id!r} '{task.description}'{more}"
        if not b.has_handler:
            return f"{head} needs handler '{b.handler}'; no connected worker has it"
        if b.best_skill is None:
            return f"{head} needs role '{b.role}'; no connected worker has it"
        return f"{head} needs skill >= {b.difficulty}; best connected is {b.best_skill}"

    def _settle(self) -> None:
        """Follow up on finished tasks: groups, goals, dependents; then maybe the run's end."""
        if not self.board.finished:
            return
        while self.board.finished:
            records, self.board.finished = self.board.finished, []
            for event in self.task_manager.follow(records, self.board):
                self._group_event(event)
            for batch in self.batches.follow(records):
                self._batch_done(batch)
        self._check_done()

    def _batch_done(self, batch: Batch) -> None:
        self.board.open_gate(batch_gate(batch.id))
        logger.info("batch {} done: {}/{} succeeded", batch.id, batch.succeeded,
                    len(batch.task_ids))
        if batch.wait:
            report = self.board.report(self.unassigned, only=batch.task_ids)
            self._send(batch.client, Kind.REPORT, BatchReport(batch.id, report.to_json()))

    def _batch_progress(self) -> None:
        for b in self.batches.open.values():
            if b.wait:
                self._send(b.client, Kind.PROGRESS,
                           BatchProgress(b.id, b.done, len(b.task_ids), b.succeeded))

    def _group_event(self, e: GroupEvent) -> None:
        if e.kind == "group_progress":
            logger.debug(e.message)
        elif e.kind == "goal_failed":
            logger.warning(e.message)
        else:
            logger.info(e.message)
        self._publish_event(e.kind, group=e.group.name, message=e.message, **e.data)

    def _check_done(self) -> None:
        if self.board.records and self.board.open == 0 and not self._run_done.is_set():
            self._run_done.set()
            ran = len(self.board.finished_order)
            # Counters, not a report: this runs after every execute() and must stay O(1).
            self._publish_event("run_finished", tasks=ran, succeeded=self.board.succeeded,
                                success_rate=self.board.succeeded / ran if ran else 0.0,
                                unassigned=len(self.unassigned))


def _clip(text: str, limit: int = 64) -> str:
    """A peer's string as we quote it back (logs, REJECT reasons): bounded."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _is_loopback(bind: str) -> bool:
    return bind in ("127.0.0.1", "localhost", "::1") or bind.startswith("127.")
