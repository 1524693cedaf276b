"""Driving a running admin from any Python program: :class:`AsyncClient` (asyncio) submits
tasks and groups and returns futures, asks for status, cancels; the sync ``Client``
(:mod:`ceylon_net.edge.sync_client`) wraps it. The one-shot helpers at the end serve the CLIs.

Over the admin's ROUTER, with the same token and CURVE keys as any client: a SUBMIT with
``follow`` gets one DONE per task as it ends; a WATCH picks tasks up again after the admin
restarted on its journal (its heartbeats carry an epoch that changes then); and when the
admin stays silent for ``gone_after`` seconds, every pending future fails with
AdminUnreachableError instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .. import wire
from ..core.tasks import TaskResult
from ..errors import AdminUnreachableError, ConfigError, RejectedError, TaskFailed
from ..settings import client_settings
from ..wire import DEFAULT_MAX_MESSAGE_BYTES, Kind
from .transport import Client as Dealer
from .transport import CurveKeys, load_keys

SILENCE = 2.0  # seconds without a word from the admin before pending tasks are watched again
TASK_OPTIONS = ("difficulty", "role", "priority", "timeout", "description", "duration")


class TaskFuture(asyncio.Future):
    """The result of one task on the cluster: its handler's return value, or TaskFailed with
    the remote traceback; ``cancel()`` cancels the task on the cluster too."""

    def __init__(self, key: Any, client: AsyncClient) -> None:
        super().__init__(loop=client.loop)
        self.key = key
        self._client = client

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self._client.cancel_soon([self.key])
        return super().cancel(msg)


class GroupFuture(asyncio.Future):
    """A task group on the cluster: resolves to its summary (status, counts, goal status) once
    every task ended; ``tasks`` maps each task's key to its future; ``on_event`` hears each
    of the group's events (goal achieved or failed, progress)."""

    def __init__(self, name: str, client: AsyncClient,
                 on_event: Callable[[wire.GroupNews], Any] | None) -> None:
        super().__init__(loop=client.loop)
        self.name = name
        self.tasks: dict[Any, TaskFuture] = {}
        self.events: list[wire.GroupNews] = []
        self._on_event = on_event

    def news(self, news: wire.GroupNews) -> None:
        self.events.append(news)
        if self._on_event is not None:
            self._on_event(news)
        if news.event == "group_finished" and not self.done():
            self.set_result(news.data)


class AsyncClient:
    """``async with AsyncClient("coordinator:8000") as c: f = c.submit("sha256", "x", 1000)``.

    ``address`` is ``host:port``; ``workspace``, ``token`` and CURVE keys (``curve_secret``,
    ``admin_key``) as for the CLIs, and like them taken from ``CEYLON_ADMIN_PEER``,
    ``CEYLON_PORT``, ``CEYLON_WORKSPACE``, ``CEYLON_TOKEN``, ... when left out; ``timeout``
    bounds each request; ``gone_after`` is how long the admin may stay silent (restarting, say)
    before pending futures fail with AdminUnreachableError."""

    def __init__(self, address: str | None = None, *, workspace: str | None = None,
                 token: str | None = None, curve_secret: str | None = None,
                 admin_key: str | None = None, timeout: float = 10.0,
                 gone_after: float = 30.0) -> None:
        s = client_settings(address, workspace, token, curve_secret, admin_key)
        self.endpoint, self.workspace, self.token = s.endpoint, s.workspace, s.token
        self.curve: CurveKeys | None = load_keys(s.curve_secret, s.admin_key) \
            if s.curve_secret else None
        self.timeout, self.gone_after = timeout, gone_after
        self.loop: asyncio.AbstractEventLoop | None = None
        self.identity = f"client/{uuid.uuid4().hex[:12]}".encode()
        self._dealer: Dealer | None = None
        self._requests: deque[asyncio.Future[wire.Envelope]] = deque()
        self._futures: dict[Any, TaskFuture] = {}
        self._groups: dict[str, GroupFuture] = {}
        self._batches: dict[int, tuple[asyncio.Future[dict[str, Any]],
                                       Callable[[wire.BatchProgress], None] | None]] = {}
        self._queued: list[dict[str, Any]] = []  # tasks submitted this loop turn
        self._queued_groups: list[tuple[dict[str, Any], GroupFuture]] = []
        self._last_word = 0.0
        self._epoch: int | None = None
        self._loops: list[asyncio.Task] = []

    # ------------------------------------------------------------------ connection
    async def connect(self) -> AsyncClient:
        """Open the connection; AdminUnreachableError or RejectedError when the admin does
        not answer (within ``timeout``) or refuses us."""
        self.loop = asyncio.get_running_loop()
        self._dealer = Dealer(self.endpoint, DEFAULT_MAX_MESSAGE_BYTES, self.curve,
                              self.identity)
        self._loops = [asyncio.create_task(self._read(), name="client-read"),
                       asyncio.create_task(self._watchdog(), name="client-watchdog")]
        try:
            await self.status()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        self._fail_all(ConfigError("the client was closed"))
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests
    def _send(self, kind: bytes, msg: Any = None) -> None:
        if self._dealer is None:
            raise ConfigError("the client is not connected (use `async with` or connect())")
        type_, payload = (None, b"") if msg is None else (wire.type_name(msg), wire.pack(msg))
        header = wire.make_header(self.workspace, "client", type_, token=self.token)
        self._dealer.send_soon(wire.encode_frames(kind, header, payload))

    async def _ask(self, kind: bytes, msg: Any = None) -> wire.Envelope:
        """A request and its answer (the admin answers in order); RejectedError on REJECT."""
        assert self.loop is not None
        answer: asyncio.Future[wire.Envelope] = self.loop.create_future()
        self._requests.append(answer)
        self._send(kind, msg)
        try:
            env = await asyncio.wait_for(asyncio.shield(answer), self.timeout)
        except TimeoutError:
            raise AdminUnreachableError(f"no admin answered at {self.endpoint} within "
                                        f"{self.timeout:g} s") from None
        if env.kind == Kind.REJECT:
            raise RejectedError(wire.unpack(wire.Reject, env.payload).reason)
        return env

    async def status(self) -> dict[str, Any]:
        """The admin's status snapshot (what ceylon-status prints)."""
        return wire.unpack(wire.Status, (await self._ask(Kind.STATUS)).payload).snapshot

    async def cancel(self, tasks: Iterable[Any], reason: str = "cancelled by the client"
                     ) -> dict[str, list[Any]]:
        """Cancel tasks (futures or ids): queued ones at once, running ones by their worker.
        Returns what happened to each (cancelled, stopping, finished, unknown)."""
        ids = [t.key if isinstance(t, TaskFuture) else t for t in tasks]
        env = await self._ask(Kind.CANCEL, wire.Cancel([[t, 0] for t in ids], reason))
        return wire.unpack(wire.Status, env.payload).snapshot["cancel"]

    def cancel_soon(self, ids: list[Any]) -> None:
        assert self.loop is not None
        task = self.loop.create_task(self.cancel(ids))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def submit_batch(self, doc: dict[str, Any], *, wait: bool, sequential: bool = False,
                           on_progress: Callable[[wire.BatchProgress], None] | None = None
                           ) -> tuple[wire.Submitted, dict[str, Any] | None]:
        """A tasks document as ceylon-submit sends it; with ``wait``, its progress and then
        its report (RejectedError for a batch the admin refuses)."""
        env = await self._ask(Kind.SUBMIT, wire.Submission(doc, wait, sequential))
        submitted = wire.unpack(wire.Submitted, env.payload)
        if not wait:
            return submitted, None
        assert self.loop is not None
        report: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._batches[submitted.batch] = (report, on_progress)
        try:
            return submitted, await report
        finally:
            del self._batches[submitted.batch]

    # ------------------------------------------------------------------ futures
    def submit(self, handler: str, *args: Any, key: Any = None, depends_on: Iterable[Any] = (),
               kwargs: dict[str, Any] | None = None, **options: Any) -> TaskFuture:
        """Run ``handler(*args, **kwargs)`` on a worker that has it; a future of its return
        value. ``key`` names the task (default: handler and a random suffix); options:
        difficulty, role, priority, timeout, description, duration; ``depends_on``: futures
        or keys that must complete first."""
        task = _task_doc(handler, args, kwargs, key, depends_on, options)
        fut = self._future(task["id"])
        self._queued.append(task)
        self._flush_soon()
        return fut

    def map(self, handler: str, *iterables: Iterable[Any], **options: Any) -> list[TaskFuture]:
        """``submit(handler, *items)`` for each tuple of items, in one batch."""
        return [self.submit(handler, *items, **options) for items in zip(*iterables,
                                                                           strict=True)]

    async def gather(self, futures: Iterable[asyncio.Future]) -> list[Any]:
        """The futures' results, in order (the first failure raises)."""
        return list(await asyncio.gather(*futures))

    def submit_group(self, name: str, tasks: Iterable[dict[str, Any]], *,
                     goal: dict[str, Any] | None = None, on_goal: str = "continue",
                     depends_on: Iterable[str] = (), priority: int = 1,
                     description: str = "", on_event: Callable[[wire.GroupNews], Any] | None
                     = None) -> GroupFuture:
        """A task group (seed 000) as in a tasks file: ``tasks`` are task mappings (handler,
        args, duration, role...), ``goal`` e.g. ``{"kind": "at_least", "count": 5}``."""
        assert self.loop is not None, "connect() first"
        group = GroupFuture(name, self, on_event)
        items = []
        for i, item in enumerate(tasks):
            item = {"id": f"{name}/{i}", "description": f"{name} #{i}", "difficulty": 1, **item}
            group.tasks[item["id"]] = self._future(item["id"])
            items.append(item)
        doc = {"name": name, "description": description or name, "priority": priority,
               "depends_on": list(depends_on), "on_goal": on_goal, "tasks": items,
               **({"goal": goal} if goal is not None else {})}
        self._groups[name] = group
        self._queued_groups.append((doc, group))
        self._flush_soon()
        return group

    def _future(self, key: Any) -> TaskFuture:
        if key in self._futures:
            raise ConfigError(f"duplicate task id {key!r}")
        fut = self._futures[key] = TaskFuture(key, self)
        return fut

    def _flush_soon(self) -> None:
        """Submissions of this loop turn leave together, right after it."""
        assert self.loop is not None, "connect() first"
        if len(self._queued) + len(self._queued_groups) == 1:
            self.loop.call_soon(self._start_flush)

    def _start_flush(self) -> None:
        assert self.loop is not None
        self._loops.append(self.loop.create_task(self._flush()))
        self._loops = [t for t in self._loops if not t.done()]

    async def _flush(self) -> None:
        """Everything submitted this loop turn, as one batch."""
        tasks, self._queued = self._queued, []
        groups, self._queued_groups = self._queued_groups, []
        if not tasks and not groups:
            return
        doc = {"tasks": tasks, "groups": [g for g, _ in groups]}
        try:
            await self._ask(Kind.SUBMIT, wire.Submission(doc, wait=False, follow=True))
        except (RejectedError, AdminUnreachableError) as exc:
            err = exc if isinstance(exc, AdminUnreachableError) else \
                ConfigError(f"the admin refused the batch: {exc}")
            keys = [t["id"] for t in tasks] + [k for _, g in groups for k in g.tasks]
            for key in keys:
                self._resolve_error(key, err)
            for _, group in groups:
                _fail(group, err)

    # ------------------------------------------------------------------ what comes in
    async def _read(self) -> None:
        assert self._dealer is not None
        while True:
            frames = await self._dealer.receive(3600.0)
            if frames is None:
                continue
            self._last_word = time.monotonic()
            try:
                self._on_message(wire.decode_frames(frames))
            except Exception as exc:  # a bad frame must not stop the client
                _log_dropped(exc)

    def _on_message(self, env: wire.Envelope) -> None:
        kind = env.kind
        if kind in (Kind.STATUS, Kind.SUBMIT, Kind.REJECT):
            if self._requests:
                answer = self._requests.popleft()
                if not answer.done():
                    answer.set_result(env)
        elif kind == Kind.DONE:
            self._done(wire.unpack(wire.TaskDone, env.payload))
        elif kind == Kind.GROUP:
            news = wire.unpack(wire.GroupNews, env.payload)
            group = self._groups.get(news.group)
            if group is not None:
                group.news(news)
        elif kind == Kind.HEARTBEAT:
            self._heartbeat(wire.unpack(wire.Event, env.payload))
        elif kind == Kind.PROGRESS:
            progress = wire.unpack(wire.BatchProgress, env.payload)
            report, on_progress = self._batches.get(progress.batch, (None, None))
            if on_progress is not None:
                on_progress(progress)
        elif kind == Kind.REPORT:
            done = wire.unpack(wire.BatchReport, env.payload)
            report, _ = self._batches.get(done.batch, (None, None))
            if report is not None and not report.done():
                report.set_result(done.report)

    def _done(self, done: wire.TaskDone) -> None:
        fut = self._futures.pop(done.task_id, None)
        if fut is None or fut.done():
            return
        result = None if done.result is None else wire.from_wire(TaskResult, done.result)
        if done.status == "completed" and result is not None:
            fut.set_result(result.value)
            return
        reason = result.error if result is not None else done.reason
        where = f" on worker '{result.worker}'" if result is not None else ""
        last = (reason or "").strip().splitlines()[-1:] or [done.status]
        fut.set_exception(TaskFailed(f"task {done.task_id!r} {done.status}{where}: {last[0]}",
                                     done.task_id, reason))

    def _heartbeat(self, beat: wire.Event) -> None:
        epoch = beat.data.get("epoch")
        if self._epoch is not None and epoch != self._epoch:
            self._watch_again()  # the admin restarted: it knows our tasks from its journal
        self._epoch = epoch

    async def _watchdog(self) -> None:
        """Silence: watch pending tasks again now and then (the admin may be restarting);
        too long: fail them, saying the admin is gone."""
        while True:
            await asyncio.sleep(1.0)
            if not self._futures and not self._groups and not self._batches:
                self._last_word = time.monotonic()
                continue
            silent = time.monotonic() - self._last_word
            if silent > self.gone_after:
                self._fail_all(AdminUnreachableError(
                    f"lost the admin at {self.endpoint}: no word for {silent:.0f} s"))
            elif silent > SILENCE:
                self._watch_again()

    def _watch_again(self) -> None:
        if self._futures:
            self._send(Kind.WATCH, wire.Watch(list(self._futures)))

    def _resolve_error(self, key: Any, exc: BaseException) -> None:
        fut = self._futures.pop(key, None)
        if fut is not None:
            _fail(fut, exc)

    def _fail_all(self, exc: BaseException) -> None:
        for key in list(self._futures):
            self._resolve_error(key, exc)
        for group in self._groups.values():
            _fail(group, exc)
        self._groups.clear()
        for report, _ in self._batches.values():
            _fail(report, exc)
        while self._requests:
            _fail(self._requests.popleft(), exc)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _task_doc(handler: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, key: Any,
              depends_on: Iterable[Any], options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; options: {', '.join(TASK_OPTIONS)} "
                        f"(handler keyword arguments go in kwargs=)")
    task = {"id": key if key is not None else f"{handler}-{uuid.uuid4().hex[:16]}",
            "description": options.pop("description", handler), "handler": handler,
            "args": list(args), "kwargs": dict(kwargs or {}),
            "difficulty": options.pop("difficulty", 1),
            "depends_on": [d.key if isinstance(d, TaskFuture) else d for d in depends_on]}
    if "role" in options:
        task["required_role"] = options.pop("role")
    return {**task, **{k: v for k, v in options.items() if v is not None}}


def _log_dropped(exc: Exception) -> None:
    from loguru import logger

    logger.warning("client: dropped a message from the admin: {}: {}", type(exc).__name__, exc)
