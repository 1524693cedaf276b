"""Driving a running admin from any Python program: :class:`AsyncClient` (asyncio) submits
tasks and groups and returns futures, asks for status, cancels; the sync ``Client``
(:mod:`ceylon_net.edge.sync_client`) wraps it. The one-shot helpers at the end serve the CLIs.

Over the admin's ROUTER, with the same token and CURVE keys as any client: a SUBMIT with
``follow`` gets one DONE per task as it ends; a WATCH picks tasks up again after the admin
restarted on its journal (its heartbeats carry an epoch that changes then), and a batch
waited for too (by its number and the admin run it went to); and when the
admin stays silent for ``gone_after`` seconds, every pending future fails with
AdminUnreachableError instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from .. import wire
from ..core.pacing import Silence, admin_silence, watch_due
from ..core.tasks import TaskResult
from ..core.workfile import TASK_FIELDS, valid_field
from ..errors import (
    AdminGoneError,
    AdminUnreachableError,
    ConfigError,
    Crashed,
    LocalProtocolError,
    RejectedError,
    RemoteProtocolError,
    TaskFailed,
    stopped,
)
from ..settings import MAX_HEARTBEAT, REWATCH, SILENCE, WATCHDOG_TURN, client_settings
from ..wire import DEFAULT_MAX_MESSAGE_BYTES, MAX_WATCH, Kind
from .agent import supervised
from .transport import Client as Dealer
from .transport import CurveKeys, load_keys, why_no_answer

DROPPED_KEPT = 10_000  # tasks and groups cancelled before they were sent, remembered
ASK_AGAIN = 5.0  # seconds: a status or cancel unanswered this long is asked again (_ask_again)
SEND_TRIES = 3  # times a batch the admin says it does not have is sent, at most
LEFT_OUT = "was left out as its batch went again (it depends on one cancelled)"
# Finished batches' reports a client keeps (their REPORTs' bytes, at most this many in all),
# for a second watch of one.
REPORTS_KEPT = 8 * 1024 * 1024
# What the client takes from its admin, which it trusts: a large batch's report, the status
# of a long-lived admin, a result as large as the admin's own limit allows. (At the default
# 1 MiB, a report of 20,000 tasks was dropped with the connection, and then sent again.)
INBOUND_BYTES = 1 << 30
INBOUND_LIMITS = wire.Limits(max_str_len=INBOUND_BYTES, max_bin_len=INBOUND_BYTES,
                             max_array_len=10_000_000, max_map_len=1_000_000)
TASK_OPTIONS = ("difficulty", "role", "priority", "timeout", "description", "duration")


# An AsyncClient's sockets and futures belong to the event loop it connected in.
_OTHER_LOOP = ("this client was connected in another event loop: use it there, or make one "
               "per event loop (from threads, the sync Client)")

class TaskFuture(asyncio.Future):
    """The result of one task on the cluster: its handler's return value, or TaskFailed with
    the remote traceback; ``cancel()`` cancels the task on the cluster too."""

    def __init__(self, key: Any, client: AsyncClient) -> None:
        super().__init__(loop=client.loop)
        self.key = key
        self._client = client
        self._sent: _Sent | None = None  # its SUBMIT, until the admin answers it
        self._sid = 0  # the name of the submission it went in (see wire.Submission.sid)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} {_state(self)}>"

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
        self._client = client
        self._done_said = -1  # tasks done by the latest progress heard
        self._goal_said = False
        self._sent: _Sent | None = None  # its SUBMIT, until the admin answers it (see _done)
        self._sid = 0  # the name of the submission it went in (see wire.Submission.sid)

    def __repr__(self) -> str:
        return f"<GroupFuture {self.name!r} {_state(self)}, {len(self.tasks)} task(s)>"

    def news(self, news: wire.GroupNews) -> None:
        if self._heard(news):
            return
        self.events.append(news)
        if not self.done():
            if news.event == "group_finished":
                self.set_result(news.data)
            elif news.event == "group_unknown":
                self.set_exception(TaskFailed(news.message, self.name, news.message))
        if self._on_event is not None:
            try:
                self._on_event(news)
            except Exception:
                logger.exception("client: the on_event callback of group '{}' failed",
                                 self.name)

    def _heard(self, news: wire.GroupNews) -> bool:
        """Said before: an admin restarted on its journal tells a client that watches a
        group again how its goal went and how far it got, which the client may know."""
        if news.event in ("goal_achieved", "goal_failed"):
            said, self._goal_said = self._goal_said, True
            return said
        if news.event == "group_progress" and isinstance(news.data, dict):
            done = sum(v for k in ("completed", "failed", "cancelled", "unassigned")
                       if type(v := news.data.get(k)) is int)
            said, self._done_said = done <= self._done_said, max(done, self._done_said)
            return said
        return False

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the group's tasks that have not ended, on the cluster too."""
        if self.done():
            return False
        pending = [f for f in self.tasks.values() if not f.done()]
        if pending:
            self._client.cancel_group_soon(self)
        for fut in pending:
            asyncio.Future.cancel(fut, msg)
        return super().cancel(msg)


@dataclass(slots=True)
class _Waited:
    """A batch a client waits for (``ceylon-submit --wait``, ``--watch``), and the admin run
    it went to; those awaiting it share its report."""

    report: asyncio.Future[dict[str, Any]]
    run: str
    on_progress: list[Callable[[wire.BatchProgress], None]] = field(default_factory=list)
    waiters: int = 0
    payload: bytes = b""  # the REPORT's, once it came (kept: a later watch reads it anew)


@dataclass
class _Sent:
    """A SUBMIT the admin has not answered yet: what to send again should it be lost."""

    items: list[tuple[dict[str, Any], int, GroupFuture | None]]
    keys: list[Any]  # its tasks (a group's too)
    names: list[str]  # its groups
    was: RejectedError | None  # (see _send_batch)
    at: float  # sent then (time.monotonic())
    sid: int  # its name (wire.Submission.sid): the same when it goes again, lost
    msg_id: int  # the SUBMIT's (its key in AsyncClient._unanswered)
    tries: int = 1  # sent this many times (see _sent_again)
    watched: bool = False  # asked the admin whether it has it (see _watch_unanswered)
    probe: Any = None  # ... by this task of it
    refused: bool = False  # its REJECT read (what follows it of its keys is not of them)


class _SentAgain(Exception):
    """A SUBMIT's answer will not come: it was lost, and its batch sent again."""


@dataclass
class _Claim:
    """A batch to wait for once the admin answers its SUBMIT (``submit_batch(wait=True)``)."""

    on_progress: Callable[[wire.BatchProgress], None] | None
    waited: _Waited | None = None
    batch: int = 0  # (the waited one's number)
    error: ConfigError | None = None


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
        for label, value in (("timeout", timeout), ("gone_after", gone_after)):
            if not value > 0:  # also refuses NaN
                raise ConfigError(f"{label} must be > 0 seconds, got {value}")
        s = client_settings(address, workspace, token, curve_secret, admin_key)
        self.endpoint, self.workspace, self.token = s.endpoint, s.workspace, s.token
        self.curve: CurveKeys | None = load_keys(s.curve_secret, s.admin_key) \
            if s.curve_secret else None
        self.timeout, self.gone_after = timeout, gone_after
        self._every = 0.0  # how often the admin says it beats (0: not heard yet)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.identity = f"client/{uuid.uuid4().hex[:12]}".encode()
        self._dealer: Dealer | None = None
        self._requests: dict[int, asyncio.Future[wire.Envelope]] = {}  # by the request's msg_id
        self._futures: dict[Any, TaskFuture] = {}
        self._groups: dict[str, GroupFuture] = {}
        # Tasks and groups cancelled before they were sent, and what was left out with them
        # (the latest DROPPED_KEPT): a later submission that depends on one fails as on a
        # task the admin cancelled, not refused by it for an unknown dependency.
        self._dropped: dict[tuple[str, Any], str] = {}
        self._batches: dict[int, _Waited] = {}  # batches waited for, by number
        self._claims: dict[int, _Claim] = {}  # by msg_id: a SUBMIT whose batch is waited for
        self._reports: dict[tuple[int, str], bytes] = {}  # finished ones' REPORTs (some)
        # submitted this loop turn: (task or group document, its size encoded, the group's
        # future for a group)
        self._queued: list[tuple[dict[str, Any], int, GroupFuture | None]] = []
        self._unanswered: dict[int, _Sent] = {}  # SUBMITs not answered yet, by msg_id
        self._probing: dict[Any, int] = {}  # ... asked about, by the task asked about
        self._last_word = 0.0
        self._heard_at = 0.0  # the admin's last word (the watchdog moves _last_word too)
        self._ended: str | None = None  # the admin said it stopped (no journal): why
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES  # the admin's: its status says
        self._epoch: int | None = None
        self._names = False  # the admin names submissions in what it tells (see _named)
        self._loops: list[asyncio.Task] = []

    @property
    def admin_limits(self) -> wire.Limits:
        """What the admin's decoder takes (its strings and bytes: up to its limit)."""
        return wire.Limits(max_str_len=self.max_message_bytes,
                           max_bin_len=self.max_message_bytes)

    @property
    def batch_bytes(self) -> int:
        """The most one SUBMIT or WATCH carries: half what the admin takes in a message."""
        return self.max_message_bytes // 2

    @property
    def _group_bytes(self) -> int:
        """The most one group carries: a message (it cannot be sent in parts), as a batch
        from ceylon-submit; it goes in a SUBMIT of its own when over batch_bytes."""
        return self.max_message_bytes - wire.FRAME_SLACK

    @property
    def _group_rule(self) -> str:
        most = self.max_message_bytes
        return (f"a group goes to the admin whole, in one message of at most "
                f"{self._group_bytes:,} bytes (its --max-message-bytes, {most:,}, less "
                f"{wire.FRAME_SLACK:,}): split its tasks into several groups (depends_on "
                f"orders them), or raise --max-message-bytes on the admin and its workers")

    # ------------------------------------------------------------------ connection
    async def connect(self) -> AsyncClient:
        """Open the connection; AdminUnreachableError or RejectedError when the admin does
        not answer (within ``timeout``) or refuses us."""
        if self._dealer is not None:
            raise ConfigError("the client is connected already" if asyncio.get_running_loop()
                              is self.loop else _OTHER_LOOP)
        self.loop = asyncio.get_running_loop()
        self._dealer = Dealer(self.endpoint, INBOUND_BYTES, self.curve, self.identity)
        self._loops = [supervised(self._read(), "the client's receive loop", self._crashed),
                       supervised(self._watchdog(), "the client's watchdog", self._crashed)]
        try:
            status = await self.status()
            self._heard_every(status.get("heartbeat"))
            if type(status.get("epoch")) is int:  # (an older admin's status does not say)
                self._epoch = status["epoch"]
            self._names = status.get("names_submissions") is True  # (see _named)
            limit = status.get("max_message_bytes")
            if type(limit) is int and limit > 0:  # (said by newer admins; small ones too)
                self.max_message_bytes = limit
        except BaseException:
            await self.close()
            raise
        logger.debug("client: connected to admin '{}' at {}", status.get("admin"),
                     self.endpoint)
        return self

    async def close(self) -> None:
        """Close the connection; what waits fails with ConfigError. From another event loop
        than the one it was connected in: ConfigError while that one runs; once it has
        ended (an ``asyncio.run`` before this one), what was left of it goes with it, and
        the socket is closed here (it raised "Event loop is closed" and left the socket
        open)."""
        if self.loop is not None and self.loop is not asyncio.get_running_loop():
            if not self.loop.is_closed():
                raise ConfigError(_OTHER_LOOP)
            self._loops = []
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self.loop is None or not self.loop.is_closed():
            self._fail_all(ConfigError("the client was closed"))
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None

    def _crashed(self, crash: Crashed) -> None:
        """A loop of ours died: whoever waits hears why now, and the client is closed."""
        self._fail_all(crash)
        for task in self._loops:
            task.cancel()
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests
    def _send(self, kind: bytes, msg: Any = None) -> int:
        """Send a request; its msg_id (the admin's answer names it)."""
        self._connected()
        assert self._dealer is not None
        type_, payload = (None, b"") if msg is None else (wire.type_name(msg), wire.pack(msg))
        header = wire.make_header(self.workspace, "client", type_, token=self.token)
        self._dealer.send_soon(wire.encode_frames(kind, header, payload))
        return header.msg_id

    def _connected(self) -> None:
        if self._dealer is None:
            raise ConfigError("the client is not connected (use `async with` or connect(); "
                              "a closed client stays closed)")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise ConfigError(_OTHER_LOOP)

    def _request(self, kind: bytes, msg: Any = None) -> int:
        """Send a request now, after what was submitted and not sent yet (they would leave at
        the end of this loop turn: a cancel of a task just submitted, a batch depending on
        one, or a status, would reach the admin before it); its msg_id, under which its
        answer will wait."""
        self._connected()
        assert self.loop is not None
        if self._queued:
            self._start_flush()
        msg_id = self._send(kind, msg)
        self._requests[msg_id] = self.loop.create_future()
        return msg_id

    async def _ask(self, kind: bytes, msg: Any = None, timeout: float | None = None
                   ) -> wire.Envelope:
        """A request and its answer; RejectedError on REJECT."""
        return await self._answer(self._request(kind, msg), timeout or self.timeout)

    async def _answer(self, msg_id: int, timeout: float) -> wire.Envelope:
        """The answer to request ``msg_id`` (AdminUnreachableError after ``timeout``)."""
        try:
            async with asyncio.timeout(timeout):
                env = await self._requests[msg_id]
        except TimeoutError:
            raise await self._unanswered_after(timeout) from None
        finally:
            self._requests.pop(msg_id, None)
        return _accepted_answer(env)

    async def _unanswered_after(self, timeout: float) -> AdminUnreachableError:
        """What to raise: no admin answered a request within ``timeout``. Not heard at all
        meanwhile, the connection is made anew (what it holds back, the admin away, is
        dropped): what is given up on here must not reach an admin that comes up later
        (a task said failed would run; a batch still wanted goes again, see _sent_again)."""
        if self._dealer is not None and time.monotonic() - self._heard_at >= timeout:
            self._dealer.renew()
        hint = await why_no_answer(self.endpoint, self.curve, "is ceylon-admin running "
                                   "there, on that port (its own --port, not its PUB port, "
                                   "the one after it)?") if self._ended is None else \
            f" (it said it {stopped(self._ended)}, and none answered since)"
        return AdminUnreachableError(f"no admin answered at {self.endpoint} within "
                                     f"{timeout:g} s{hint}")

    async def status(self) -> dict[str, Any]:
        """The admin's status snapshot (what ceylon-status prints)."""
        env = await self._ask_again(Kind.STATUS)
        return wire.unpack(wire.Status, env.payload, INBOUND_LIMITS).snapshot

    async def _ask_again(self, kind: bytes, msg: Any = None) -> wire.Envelope:
        """A request that may be made twice (a status, a cancel), and its answer: asked again
        every ASK_AGAIN s while unanswered (a request written to a connection as the admin
        died is lost with it: connect() through a restart waited its whole timeout, a cancel
        was never made), the first answer tells. AdminUnreachableError after the timeout."""
        self._connected()
        assert self.loop is not None
        deadline = self.loop.time() + self.timeout
        asked: list[int] = []
        try:
            while not (answered := [m for m in asked if self._requests[m].done()]):
                left = deadline - self.loop.time()
                if left <= 0:
                    raise await self._unanswered_after(self.timeout)
                asked.append(self._request(kind, msg))
                await asyncio.wait([self._requests[m] for m in asked],
                                   timeout=min(ASK_AGAIN, left),
                                   return_when=asyncio.FIRST_COMPLETED)
            return _accepted_answer(self._requests[answered[0]].result())
        finally:
            for msg_id in asked:
                self._requests.pop(msg_id, None)

    async def cancel(self, tasks: Iterable[Any], reason: str = "cancelled by the client"
                     ) -> dict[str, list[Any]]:
        """Cancel tasks (futures, group futures or ids): queued ones at once, running ones
        by their worker; a group's, every one of its tasks. Returns what happened to each
        task (cancelled, stopping, finished, was_cancelled: ended cancelled before, unknown).
        Many ids go in several requests, each within what the admin takes in a message."""
        ids = [key for t in tasks for key in (
            t.tasks if isinstance(t, GroupFuture) else [getattr(t, "key", t)])]
        outcome: dict[str, list[Any]] = {}
        # (an id longer than a batch to this admin could carry is no task's)
        most = max(self.max_message_bytes - wire.FRAME_SLACK, self.batch_bytes) \
            - len(wire.packb(reason))
        for chunk in list(_by_size([[t, 0] for t in ids], self.batch_bytes)) or [[]]:
            if len(chunk) == 1 and len(wire.packb(chunk)) > most:
                outcome.setdefault("unknown", []).append(chunk[0][0])  # no task's id is as long
                continue
            env = await self._ask_again(Kind.CANCEL, wire.Cancel(chunk, reason))
            answer = wire.unpack(wire.Status, env.payload, INBOUND_LIMITS).snapshot["cancel"]
            for kind, said in answer.items():
                outcome.setdefault(kind, []).extend(said)
        return outcome

    def cancel_soon(self, ids: list[Any]) -> None:
        """Cancel these tasks (their futures are being cancelled here): those not sent yet are
        dropped from the batch, the others cancelled on the cluster in the background."""
        assert self.loop is not None
        for key in ids:
            self._futures.pop(key, None)
        unsent = {d["id"] for d, _, g in self._queued if g is None} & set(ids)
        if unsent:
            self._queued = self._without(unsent)
        sent = [k for k in ids if k not in unsent]
        if sent and self._dealer is not None:
            self.loop.create_task(self.cancel(sent)).add_done_callback(_cancel_said)

    def cancel_group_soon(self, group: GroupFuture) -> None:
        """A group future is being cancelled: not sent yet, the group is dropped from the
        batch (what depends on it fails); else its unended tasks are cancelled on the
        cluster (cancel_soon)."""
        if not any(g is group for _, _, g in self._queued):
            self.cancel_soon([f.key for f in group.tasks.values() if not f.done()])
            return
        for key in group.tasks:
            self._futures.pop(key, None)
        self._queued = self._drop([q for q in self._queued if q[2] is not group],
                                  dict.fromkeys(_names({"name": group.name}, group),
                                                "was cancelled"))

    def _without(self, cancelled: set[Any]) -> list[tuple[dict[str, Any], int,
                                                           GroupFuture | None]]:
        """What is queued to go, but the ``cancelled`` tasks and what depends on them: those
        fail as the admin fails a task whose dependency was cancelled (sent without it, the
        admin refused them for a dependency it never heard of)."""
        kept = [q for q in self._queued if q[2] is not None or q[0]["id"] not in cancelled]
        return self._drop(kept, dict.fromkeys((("task", k) for k in cancelled),
                                              "was cancelled"))

    def _drop(self, items: list[tuple[dict[str, Any], int, GroupFuture | None]],
              gone: dict[tuple[str, Any], str]
              ) -> list[tuple[dict[str, Any], int, GroupFuture | None]]:
        """``items`` but what depends on the ``gone`` (never sent): remembered, with what
        was left out for them, for later submissions that depend on them."""
        kept = self._without_dependents(items, gone, _cancelled_dependency)
        dropped = self._dropped
        # (what is new to it: tasks first, groups last, a large group's own name the last
        # to go)
        dropped.update(sorted(((k, why) for k, why in gone.items() if k not in dropped),
                              key=lambda kv: kv[0][0] == "group"))
        while len(dropped) > DROPPED_KEPT:
            del dropped[next(iter(dropped))]
        return kept

    def _without_dependents(self, items: list[tuple[dict[str, Any], int, GroupFuture | None]],
                            gone: dict[tuple[str, Any], str],
                            failure: Callable[[dict[str, Any], GroupFuture | None,
                                               tuple[str, Any], str], Exception]
                            ) -> list[tuple[dict[str, Any], int, GroupFuture | None]]:
        """``items`` but those that depend on what is ``gone`` (task or group name -> why),
        directly or through one another, in either order: each left out fails with
        ``failure(doc, group, the dependency, why it is gone)``."""
        kept, failing = list(items), bool(gone)
        while failing:  # (until none left depends on what is gone)
            failing = False
            for item in list(kept):
                doc, _, group = item
                dep = next((d for d in _needs(doc) if d in gone), None)
                if dep is None:
                    continue
                kept.remove(item)
                gone.update(dict.fromkeys(_names(doc, group), LEFT_OUT))
                failing = True
                self._batch_failed([doc["id"]] if group is None else list(group.tasks),
                                   [(doc, group)] if group is not None else [],
                                   failure(doc, group, dep, gone[dep]))
        return kept

    async def submit_batch(self, doc: dict[str, Any], *, wait: bool, sequential: bool = False,
                           on_progress: Callable[[wire.BatchProgress], None] | None = None,
                           on_submitted: Callable[[wire.Submitted], None] | None = None
                           ) -> tuple[wire.Submitted, dict[str, Any] | None]:
        """A tasks document as ceylon-submit sends it; with ``wait``, its progress and then
        its report (RejectedError for a batch the admin refuses; ConfigError for one over
        the admin's --max-message-bytes, which it would drop unread).
        ``on_submitted``: told the batch as soon as the admin took it."""
        size = len(wire.packb(doc))
        if size > self.max_message_bytes - wire.FRAME_SLACK:
            raise ConfigError(self._too_big(size))
        msg_id = self._request(Kind.SUBMIT, wire.Submission(doc, wait, sequential))
        if wait:  # (claimed as its answer comes: the REPORT of a quick one may come with it)
            self._claims[msg_id] = claim = _Claim(on_progress)
        try:
            env = await self._answer(msg_id, self.timeout)
        except BaseException:  # (cancelled, say, after the batch was claimed for it)
            if wait and claim.waited is not None:
                self._release(claim.batch, claim.waited, on_progress)
            raise
        finally:
            self._claims.pop(msg_id, None)
        submitted = wire.unpack(wire.Submitted, env.payload, INBOUND_LIMITS)
        if not wait:
            if on_submitted is not None:
                on_submitted(submitted)
            return submitted, None
        if claim.error is not None:
            raise claim.error
        assert claim.waited is not None  # (claimed before the answer was handed over)
        try:
            if on_submitted is not None:
                on_submitted(submitted)
        except BaseException:
            self._release(submitted.batch, claim.waited, on_progress)
            raise
        return submitted, await self._await_batch(submitted.batch, claim.waited, on_progress)

    def _too_big(self, size: int) -> str:
        """Why a batch of ``size`` bytes encoded cannot go to this admin, and what to do."""
        most, limit = self.max_message_bytes, self.max_message_bytes - wire.FRAME_SLACK
        if limit <= 0:
            return (f"the admin's --max-message-bytes {most:,} leaves no room for a batch "
                    f"({wire.FRAME_SLACK:,} bytes of a message go around it): raise it on the "
                    f"admin")
        return (f"the batch is {size:,} bytes encoded, over the {limit:,} a message may carry: "
                f"split it into several files (or raise the admin's --max-message-bytes, "
                f"{most:,} now)")

    async def watch_batch(self, batch: int, run: str,
                          on_progress: Callable[[wire.BatchProgress], None] | None = None
                          ) -> dict[str, Any]:
        """The report of batch ``batch`` of the admin's run ``run`` (what ceylon-submit says
        when it submits, ``BATCH@RUN``), submitted earlier by any client: its progress from
        now on, then its report, at once if it is done (one this client saw finish, from the
        report it has: it does not change). AdminUnreachableError when the admin has no such
        batch (a wrong number, or another run: restarted without its journal)."""
        if type(batch) is not int or batch < 1 or not isinstance(run, str):
            raise ConfigError(f"watch_batch() takes a batch number (int) and a run (str), as "
                              f"in BATCH@RUN; got {batch!r} and {run!r}")
        self._connected()
        known = self._reports.get((batch, run))
        if known:  # (a finished batch's report does not change: not asked again)
            return wire.unpack(wire.BatchReport, known, INBOUND_LIMITS).report
        waited = self._claim_batch(batch, run, on_progress)  # (refused before asking)
        self._send(Kind.WATCH, wire.Watch([], [], [[batch, run]]))
        return await self._await_batch(batch, waited, on_progress)

    def _claim_batch(self, batch: int, run: str,
                     on_progress: Callable[[wire.BatchProgress], None] | None) -> _Waited:
        """Count one more waiter of the batch (ConfigError: this client waits for a batch of
        that number of another run: the admin's answers name only the number)."""
        assert self.loop is not None
        waited = self._batches.get(batch)
        if waited is None or waited.report.done():
            waited = self._batches[batch] = _Waited(self.loop.create_future(), run)
        elif waited.run != run:
            raise ConfigError(f"this client waits already for a batch {batch} of another "
                              f"run ({waited.run}, not {run})")
        if on_progress is not None:
            waited.on_progress.append(on_progress)
        waited.waiters += 1
        return waited

    async def _await_batch(self, batch: int, waited: _Waited,
                           on_progress: Callable[[wire.BatchProgress], None] | None
                           ) -> dict[str, Any]:
        """The batch's report; several may wait for one batch (they share it)."""
        try:
            report = await asyncio.shield(waited.report)
        finally:
            self._release(batch, waited, on_progress)
        self._keep_report(batch, waited)
        return report

    def _release(self, batch: int, waited: _Waited,
                 on_progress: Callable[[wire.BatchProgress], None] | None) -> None:
        """One waiter of the batch less (see _claim_batch)."""
        waited.waiters -= 1
        if on_progress is not None:
            waited.on_progress.remove(on_progress)
        if not waited.waiters and self._batches.get(batch) is waited:
            del self._batches[batch]

    def _keep_report(self, batch: int, waited: _Waited) -> None:
        """The admin answers one client's watches of a batch once a heartbeat: a report this
        client has is kept (the last ones, within REPORTS_KEPT bytes) for a second watch."""
        kept, payload = self._reports, waited.payload
        if not payload or len(payload) > REPORTS_KEPT:
            return
        kept[batch, waited.run] = payload
        while sum(map(len, kept.values())) > REPORTS_KEPT:
            del kept[next(iter(kept))]

    # ------------------------------------------------------------------ futures
    def submit(self, handler: str, *args: Any, key: Any = None, depends_on: Iterable[Any] = (),
               kwargs: dict[str, Any] | None = None, **options: Any) -> TaskFuture:
        """Run ``handler(*args, **kwargs)`` on a worker that has it; a future of its return
        value. ``key`` names the task (default: handler and a random suffix); options:
        difficulty, role, priority, timeout, description, duration; ``depends_on``: futures
        or keys that must complete first."""
        self._connected()
        _check_options(options, key)
        return self._queue_tasks([_task_doc(handler, args, kwargs, key, depends_on, options)])[0]

    def map(self, handler: str, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
            depends_on: Iterable[Any] = (), **options: Any) -> list[TaskFuture]:
        """``submit(handler, *items)`` for each tuple of items, in one batch: all or none (an
        item that cannot be sent raises here, and nothing is submitted)."""
        self._connected()
        if "key" in options:
            raise TypeError("map() names each of its tasks itself: key= is submit()'s")
        _check_options(options)
        depends_on = list(depends_on)
        try:
            rows = list(zip(*iterables, strict=True))
        except ValueError as exc:
            if not str(exc).startswith("zip() argument"):
                raise  # (an iterable's own)
            said = str(exc).removeprefix("zip() ")
            raise ValueError(f"map({handler!r}, ...): its iterables are not all as long "
                             f"({said}): each task takes one item of each") from None
        return self._queue_tasks([_task_doc(handler, items, kwargs, None, depends_on,
                                            dict(options)) for items in rows])

    def _queue_tasks(self, docs: list[dict[str, Any]]) -> list[TaskFuture]:
        """Queue these task documents, all or none: each is checked (it can be sent, it
        fits, its id is new) before any future is registered."""
        sizes = [_encoded_size(t, f"task {t['id']!r}", self.batch_bytes, self.admin_limits)
                 for t in docs]
        futures = self._new_futures([t["id"] for t in docs])
        self._queued.extend((t, size, None) for t, size in zip(docs, sizes, strict=True))
        if docs:
            self._flush_soon(len(docs))
        return futures

    async def gather(self, futures: Iterable[asyncio.Future]) -> list[Any]:
        """The futures' results, in order (the first failure raises)."""
        return list(await asyncio.gather(*futures))

    def submit_group(self, name: str, tasks: Iterable[dict[str, Any]], *,
                     goal: dict[str, Any] | None = None, on_goal: str = "continue",
                     depends_on: Iterable[str] = (), priority: int = 1,
                     description: str = "", on_event: Callable[[wire.GroupNews], Any] | None
                     = None) -> GroupFuture:
        """A task group (seed 000) as in a tasks file: ``tasks`` are task mappings with a
        tasks file's fields (handler, args, duration, required_role...), ``goal`` e.g.
        ``{"kind": "at_least", "count": 5}``. A group goes to the admin whole, in one
        message, as in a file sent by ceylon-submit (ConfigError at the call when it is
        larger)."""
        self._connected()
        assert self.loop is not None
        if name in self._groups:
            raise ConfigError(f"duplicate group name {name!r}")
        items = [{"id": f"{name}/{i}", "description": f"{name} #{i}", "difficulty": 1, **item}
                 for i, item in enumerate(tasks)]
        doc = {"name": name, "description": description or name, "priority": priority,
               "depends_on": list(depends_on), "on_goal": on_goal, "tasks": items,
               **({"goal": goal} if goal is not None else {})}
        size = _encoded_size(doc, f"group {name!r}", self._group_bytes, self.admin_limits,
                             self._group_rule)
        group = GroupFuture(name, self, on_event)
        keys = [item["id"] for item in items]
        group.tasks.update(zip(keys, self._new_futures(keys), strict=True))
        self._groups[name] = group
        self._dropped.pop(("group", name), None)
        group.add_done_callback(lambda g: self._groups.pop(name, None))
        self._queued.append((doc, size, group))
        self._flush_soon()
        return group

    def _new_futures(self, keys: list[Any]) -> list[TaskFuture]:
        """A future for each key, all or none: a key this client waits on already, or one
        given twice, raises and nothing is registered."""
        seen: set[Any] = set()
        for key in keys:
            if key in self._futures or key in seen:
                raise ConfigError(f"duplicate task id {key!r}")
            seen.add(key)
        futures = [TaskFuture(key, self) for key in keys]
        if self._dropped:  # (a key given again is a new task's)
            for key in keys:
                self._dropped.pop(("task", key), None)
        self._futures.update(zip(keys, futures, strict=True))
        return futures

    def _flush_soon(self, added: int = 1) -> None:
        """Submissions of this loop turn leave together, right after it (``added``: how many
        were just queued)."""
        assert self.loop is not None, "connect() first"
        if len(self._queued) == added:
            self.loop.call_soon(self._start_flush)

    def _start_flush(self) -> None:
        """Send what was submitted this loop turn, in batches of at most batch_bytes, now (so
        a cancel that follows reaches the admin after them)."""
        queued, self._queued = self._queued, []
        if self._dropped and any(_needs(doc) for doc, _, _ in queued):
            # (what depends on one cancelled before it went fails here)
            queued = self._drop(queued, dict(self._dropped))
        batch: list[tuple[dict[str, Any], int, GroupFuture | None]] = []
        size = 0
        for item in queued:
            if batch and size + item[1] > self.batch_bytes:
                self._send_batch(batch)
                batch, size = [], 0
            batch.append(item)
            size += item[1]
        if batch:
            self._send_batch(batch)

    def _send_batch(self, items: list[tuple[dict[str, Any], int, GroupFuture | None]],
                    was: RejectedError | None = None, tries: int = 1, sid: int = 0) -> None:
        """One SUBMIT; the admin's word on it is awaited in the background. ``was``: why the
        batch these items were part of was refused (they go again in parts: _in_parts);
        ``sid``: the name of the submission it is, sent again (a new one's otherwise)."""
        tasks = [d for d, _, g in items if g is None]
        groups = [(d, g) for d, _, g in items if g is not None]
        doc = {"tasks": tasks, "groups": [d for d, _ in groups]}
        keys = [t["id"] for t in tasks] + [k for _, g in groups for k in g.tasks]
        sid = sid or secrets.randbits(62) + 1
        try:
            msg_id = self._request(Kind.SUBMIT, wire.Submission(doc, wait=False, follow=True,
                                                                sid=sid))
        except Exception as exc:  # not connected any more, or cannot be encoded
            self._batch_failed(keys, groups, exc)
            return
        assert self.loop is not None
        sent = self._unanswered[msg_id] = _Sent(items, keys, [d["name"] for d, _ in groups],
                                                was, time.monotonic(), sid, msg_id, tries)
        for fut in self._futures_of(sent):
            fut._sent, fut._sid = sent, sid
        self._loops = [t for t in self._loops if not t.done()]
        self._loops.append(self.loop.create_task(self._accepted(msg_id, sent, keys, groups,
                                                                was)))

    async def _accepted(self, msg_id: int, sent: _Sent,
                        keys: list[Any], groups: list[tuple[dict[str, Any], GroupFuture]],
                        was: RejectedError | None = None) -> None:
        """The admin's word on a batch: its futures fail if it refused it. It is waited for
        as long as the admin is heard (a busy one may answer a large map() late; the
        watchdog fails what waits once it is silent too long), and through a restart: a
        batch sent meanwhile is queued, not lost, and one lost with the old admin is sent
        again (see _sent_again). The admin takes a batch whole or not at all, and a batch is
        only what was submitted in one loop turn: refused, it goes again in parts (see
        _in_parts); a part refused fails whole."""
        try:
            try:
                # (one that said it stopped had no journal: no restart to wait for)
                await self._answer(msg_id, None if self._ended is None else self.timeout)
            finally:
                self._forget_sent(msg_id)
        except _SentAgain:
            return
        except RejectedError as exc:
            self._refused(sent, keys, groups, exc, was)
        except Exception as exc:
            self._batch_failed(keys, groups, exc, sent)

    def _refused(self, sent: _Sent, keys: list[Any],
                 groups: list[tuple[dict[str, Any], GroupFuture]], exc: RejectedError,
                 was: RejectedError | None) -> None:
        """The admin refused a batch (``was``: the batch it is a part of was refused too)."""
        if was is None and sent.tries < SEND_TRIES and self._needs_unanswered(sent):
            # (it depends on a task of ours the admin has not taken yet: a refused batch's
            # part going again, sent after this one was; it goes again after it, but what
            # was cancelled meanwhile)
            wanted = self._still_wanted(sent.items, sent)
            if wanted:
                self._send_batch(wanted, None, sent.tries + 1)
            return
        parts = _in_parts(sent.items) if was is None else [sent.items]
        if len(parts) == 1:
            if was is not None and not _same_reason(str(exc), str(was)):
                # (alone it may be refused for another reason: a dependency of its own
                # batch, a cycle, is unknown to the admin; the batch's says why)
                exc = RejectedError(f"{exc} (sent with the rest of its batch: {was})")
            self._batch_failed(keys, groups, exc, sent)
            return
        for part in parts:  # (in order: one depending on an earlier one finds it)
            wanted = self._still_wanted(part, sent)
            if wanted:
                self._send_batch(wanted, exc)

    def _needs_unanswered(self, sent: _Sent) -> bool:
        """Does a submission of ``sent`` depend on a task or group of another SUBMIT of ours
        the admin has not answered yet?"""
        others = [other for other in self._unanswered.values() if other is not sent]
        if not others:
            return False
        given = {("task", k) for other in others for k in other.keys} \
            | {("group", n) for other in others for n in other.names}
        return any(dep in given for doc, _, _ in sent.items for dep in _needs(doc))

    def _still_wanted(self, part: list[tuple[dict[str, Any], int, GroupFuture | None]],
                      sent: _Sent) -> list[tuple[dict[str, Any], int, GroupFuture | None]]:
        """A batch to go again (a refused one's part, see _in_parts; or one lost), ``sent``
        in that SUBMIT, but what was cancelled meanwhile (its key may be another task's now),
        and what depends on that (failed: sent without it, it could find a task of that id
        given earlier by another program, and run after that one)."""
        gone: dict[tuple[str, Any], str] = {}  # left out: why
        wanted = []
        for item in part:
            doc, _, group = item
            if self._owns(sent, doc["id"]) if group is None else not group.done():
                wanted.append(item)
            else:
                gone.update(dict.fromkeys(_names(doc, group), "was cancelled before its batch "
                                                              "went again"))
        return self._without_dependents(
            wanted, gone, lambda doc, group, dep, why: ConfigError(
                f"{dep[0]} {dep[1]!r}, which it depends on, {why}"))

    def _owns(self, sent: _Sent, key: Any) -> bool:
        """Is task ``key``'s future one sent in ``sent`` (not a newer task's, the one sent
        there cancelled)? (A future's SUBMIT is unanswered until it is taken or failed.)"""
        fut = self._futures.get(key)
        return fut is not None and fut._sent is sent

    def _batch_failed(self, keys: list[Any], groups: list[tuple[dict[str, Any], GroupFuture]],
                      exc: Exception, sent: _Sent | None = None) -> None:
        """``keys`` fail, those of ``sent`` only when it is given (see _owns)."""
        if isinstance(exc, RejectedError):
            exc = ConfigError(f"the admin refused the batch: {exc}")
        for key in keys:
            if sent is None or self._owns(sent, key):
                self._resolve_error(key, exc)
        for _, group in groups:
            _fail(group, exc)

    # ------------------------------------------------------------------ what comes in
    async def _read(self) -> None:
        assert self._dealer is not None
        while True:
            frames = await self._dealer.receive(3600.0)
            if frames is None:
                continue
            self._last_word = self._heard_at = time.monotonic()
            try:
                self._on_message(wire.decode_frames(frames))
            except Exception as exc:  # a bad frame must not stop the client
                _log_dropped(exc)

    def _on_message(self, env: wire.Envelope) -> None:
        kind = env.kind
        self._ended = None  # (an admin speaks: one started since, if that one stopped)
        if kind in (Kind.STATUS, Kind.SUBMIT, Kind.REJECT):
            # The admin names the request it answers; an answer to a request given up on
            # (timed out) finds nobody waiting and is dropped.
            answer = self._requests.get(env.header.seq) if env.header.seq is not None else None
            if answer is not None and not answer.done():
                if kind == Kind.SUBMIT:
                    self._answered(self._unanswered.get(env.header.seq))
                    if env.header.seq in self._claims:
                        self._claim_answered(self._claims[env.header.seq], env)
                elif kind == Kind.REJECT and env.header.seq in self._unanswered:
                    self._unanswered[env.header.seq].refused = True
                answer.set_result(env)
        elif kind == Kind.DONE:
            self._done(wire.unpack(wire.TaskDone, env.payload, INBOUND_LIMITS))
        elif kind == Kind.END:  # it stopped without a journal: nothing we wait for will come
            reason = self._ended = wire.unpack(wire.End, env.payload, INBOUND_LIMITS).reason
            self._fail_all(AdminGoneError(
                f"the admin at {self.endpoint} {stopped(reason)} without a journal: what "
                f"it was running for us is gone"))
        elif kind == Kind.GROUP:
            self._group_news(wire.unpack(wire.GroupNews, env.payload, INBOUND_LIMITS))
        elif kind == Kind.HEARTBEAT:
            self._heartbeat(wire.unpack(wire.Event, env.payload, INBOUND_LIMITS))
        elif kind == Kind.PROGRESS:
            progress = wire.unpack(wire.BatchProgress, env.payload, INBOUND_LIMITS)
            waited = self._batches.get(progress.batch)
            for told in list(waited.on_progress) if waited is not None else ():
                try:  # (one waiter's failing callback keeps the others' progress)
                    told(progress)
                except Exception:
                    logger.exception("client: a progress callback of batch {} failed",
                                     progress.batch)
        elif kind == Kind.REPORT:
            self._report(wire.unpack(wire.BatchReport, env.payload, INBOUND_LIMITS), env.payload)

    def _answered(self, sent: _Sent | None) -> None:
        """A SUBMIT was answered: what the admin tells of its tasks is of them from now on
        (before that, of older tasks of their keys: see _told_of). Done as the answer is
        read, before what follows it in the same burst."""
        for fut in self._futures_of(sent) if sent is not None else ():
            if fut._sent is sent:
                fut._sent = None

    def _futures_of(self, sent: _Sent) -> list[TaskFuture | GroupFuture]:
        """The futures of a SUBMIT's tasks and groups, those still waited on by key."""
        return [*(f for f in map(self._futures.get, sent.keys) if f is not None),
                *(g for _, _, g in sent.items if g is not None)]

    def _told_of(self, fut: TaskFuture | GroupFuture, key: Any) -> bool:
        """Is what the admin tells of this task's (or group's) key of it? Not while its
        SUBMIT is unanswered: the admin answers in order and takes a batch before it tells of
        its tasks, so that is of an older task of that key (a late answer to a watch sent as
        that one ran). Unless that SUBMIT was asked about (see _watch_unanswered): its answer
        may have been lost (a restart; a send to us the admin's socket dropped), and what
        the admin says of the key is taken (then the others were not: see _has_batch). A
        check on the epoch instead (taken only after a restart) left a future waiting for
        ever when the answer was lost otherwise, or the restart went unheard: an older
        task's end taken there (a key given again, the admin slow or restarted) is the
        lesser harm."""
        sent = fut._sent
        if sent is None:
            return True
        if not sent.watched or sent.refused:  # (refused: the key is another task's)
            return False
        self._has_batch(sent, key)
        return True

    def _named(self, fut: TaskFuture | GroupFuture, sid: int, key: Any) -> bool:
        """Is what the admin tells of task ``key`` (None: of a group), which names the
        submission it came in (0: none, a task of a tasks file or of ceylon-submit, from an
        admin that names those of clients), of ``fut``'s? An older task's (group's) of its
        key (name), else: a late answer to a watch sent as that one ran; or its SUBMIT was
        lost, the key another's at the admin: the submission goes again, under its name, to
        be taken or refused (see _sent_again; a group's tasks are asked about, not the
        group). Its SUBMIT is known to be taken when it is."""
        sent = fut._sent
        if sid != fut._sid or not sid:  # (0: not a client's; or the future is not sent yet)
            if sent is not None and key is not None:
                self._sent_again(key, sent)
            return False
        if sent is not None and sent.watched:  # (its answer lost: the rest asked about now)
            self._has_batch(sent, key)
        elif sent is not None:
            self._answered(sent)
        return True

    def _has_batch(self, sent: _Sent, told: Any) -> None:
        """A SUBMIT asked about (see _watch_unanswered) is known to the admin, its answer
        lost (in a restart, or dropped): what it told of the other tasks and groups
        meanwhile was not taken (see _told_of), so they are asked about now."""
        self._answered(sent)
        rest = [k for k in sent.keys if k in self._futures and k != told]
        for keys in _by_size(rest, self.batch_bytes):
            self._send(Kind.WATCH, wire.Watch(keys, []))
        names = [n for n in sent.names if n in self._groups]
        for part in _by_size(names, self.batch_bytes):
            self._send(Kind.WATCH, wire.Watch([], part))

    def _claim_answered(self, claim: _Claim, env: wire.Envelope) -> None:
        """A batch waited for was taken: waited for from now on, before what follows its
        answer in the same burst is read (its REPORT, were it done at once, was dropped:
        found after the next watch, 2 s or more later)."""
        submitted = wire.unpack(wire.Submitted, env.payload, INBOUND_LIMITS)
        try:
            claim.waited = self._claim_batch(submitted.batch, submitted.run, claim.on_progress)
            claim.batch = submitted.batch
        except ConfigError as exc:
            claim.error = exc

    def _done(self, done: wire.TaskDone) -> None:
        if done.status == "unknown" and self._unanswered and self._sent_again(done.task_id):
            return
        fut = self._futures.get(done.task_id)
        if fut is None or not (self._named(fut, done.sid, done.task_id)
                               if done.sid or (self._names and done.status != "unknown")
                               else self._told_of(fut, done.task_id)):
            return
        del self._futures[done.task_id]
        if fut.done():
            return
        try:
            result = None if done.result is None else wire.from_wire(TaskResult, done.result)
        except Exception as exc:  # (its future taken out: failed here, not left waiting)
            fut.set_exception(TaskFailed(f"task {done.task_id!r} {done.status}, but its result "
                                         f"could not be read: {exc}", done.task_id, str(exc)))
            return
        if done.status == "completed" and result is not None:
            fut.set_result(result.value)
            return
        reason = result.error if result is not None else done.reason
        where = f" on worker '{result.worker}'" if result is not None else ""
        last = ((reason or "").strip().splitlines()[-1:] or [done.status])[0]
        last = last.removeprefix(f"{done.status}: ")  # (not 'cancelled: cancelled: why')
        fut.set_exception(TaskFailed(f"task {done.task_id!r} {done.status}{where}: {last}",
                                     done.task_id, reason))

    def _group_news(self, news: wire.GroupNews) -> None:
        group = self._groups.get(news.group)
        if group is not None and (self._named(group, news.sid, None)
                                  if news.sid or (self._names and news.event != "group_unknown")
                                  else self._told_of(group, None)):
            group.news(news)

    def _report(self, done: wire.BatchReport, payload: bytes) -> None:
        waited = self._batches.get(done.batch)
        if waited is None or waited.report.done():
            return
        if done.error is not None:  # (it has no such batch, or forgot it: nothing to follow)
            waited.report.set_exception(AdminGoneError(
                f"batch {done.batch} at {self.endpoint}: {done.error}"))
        else:
            waited.payload = payload
            waited.report.set_result(done.report)

    def _heartbeat(self, beat: wire.Event) -> None:
        self._heard_every(beat.data.get("every"))
        epoch = beat.data.get("epoch")
        if self._epoch is not None and epoch != self._epoch:
            for sent in self._unanswered.values():  # (asked of the old admin: ask this one)
                sent.watched, sent.at = False, 0.0
            self._watch_again()  # the admin restarted: it knows our tasks from its journal
        self._epoch = epoch

    def _heard_every(self, every: Any) -> None:
        """How often the admin beats: a silence of a few beats is no sign of trouble."""
        if type(every) in (int, float) and 0 < every <= MAX_HEARTBEAT:
            self._every = every

    async def _watchdog(self) -> None:
        """Silence: watch pending tasks again now and then (the admin may be restarting);
        too long: fail them, saying the admin is gone (:func:`admin_silence` decides). A turn
        that slept longer than it asked (this process was paused) was deaf meanwhile: that
        time is not the admin's silence, and what it said then is read before judging."""
        watched, deaf = time.monotonic(), 0.0  # deaf: since the admin's last word
        asked = False  # its silence so far was asked about
        while True:
            turn = time.monotonic()
            await asyncio.sleep(WATCHDOG_TURN)
            now = time.monotonic()
            overslept = max(0.0, now - turn - WATCHDOG_TURN)
            deaf = overslept + (0.0 if self._last_word >= turn else deaf)
            if not self._futures and not self._groups and not self._batches:
                self._last_word = watched = now
                deaf = 0.0
                continue
            verdict, silent = admin_silence(now, self._last_word, deaf, self._every,
                                            self.gone_after, SILENCE)
            if verdict is Silence.LOST:
                self._fail_all(AdminUnreachableError(
                    f"lost the admin at {self.endpoint}: no word for {silent:.0f} s"))
                if self._dealer is not None:  # (nothing failed may reach a later admin)
                    self._dealer.renew()
            elif watch_due(verdict, asked, now, watched, REWATCH):
                self._watch_again()
                watched = now
            elif verdict is Silence.WATCH:
                self._watch_unanswered()  # (a SUBMIT sent since: asked about once, as due)
            asked = verdict is Silence.WATCH

    def _watch_again(self) -> None:
        """Ask again for every task and group we wait on, in WATCHes of at most batch_bytes
        (however long the keys); the groups after the tasks, so that a group's news never
        comes before its tasks' (the admin answers in order)."""
        if self._queued:  # (what is about to leave goes first: else 'unknown' to the admin)
            self._start_flush()
        # A SUBMIT not answered yet: its tasks are not asked about (its answer will tell)
        # until it was itself (_watch_unanswered): the admin has it then, or it went again.
        limit, unanswered = self.batch_bytes, self._unanswered.values()
        # (a future whose SUBMIT was found taken, see _named, is its own: watched as any)
        keys_sent = {k for sent in unanswered if not sent.watched for k in sent.keys
                     if self._owns(sent, k)}
        names_sent = {n for sent in unanswered if not sent.watched for n in sent.names
                      if (g := self._groups.get(n)) is not None and g._sent is sent}
        for keys in _by_size((k for k in self._futures if k not in keys_sent), limit):
            self._send(Kind.WATCH, wire.Watch(keys, []))
        for names in _by_size((n for n, g in self._groups.items()
                               if not g.done() and n not in names_sent), limit):
            self._send(Kind.WATCH, wire.Watch([], names))
        self._watch_unanswered()
        for batches in _by_size(([n, w.run] for n, w in self._batches.items()
                                 if not w.report.done()), limit):
            self._send(Kind.WATCH, wire.Watch([], [], batches))

    def _watch_unanswered(self) -> None:
        """A SUBMIT unanswered for SILENCE: is it lost (written to the old admin's connection
        as it died)? Watched by its first task: the admin takes a batch whole or not at all,
        and reads our messages in order, so one that does not know that task never had the
        batch, and it is sent again (see _sent_again); one that knows it answers later."""
        now = time.monotonic()
        for msg_id, sent in list(self._unanswered.items()):
            if not any(k in self._futures for k in sent.keys) \
                    and not any(n in self._groups for n in sent.names):
                self._give_up_answer(msg_id)  # (all ended: its answer was lost, or is moot)
        overdue = [(msg_id, sent) for msg_id, sent in self._unanswered.items()
                   if sent.keys and not sent.watched and now - sent.at > SILENCE]
        for msg_id, sent in overdue:  # (by a task still its own: not one cancelled since,
            # whose key's news, another task's, would find no future and tell nothing of it)
            sent.probe = next((k for k in sent.keys if self._owns(sent, k)), None)
            sent.watched = sent.probe is not None
            if sent.watched:
                self._probing[sent.probe] = msg_id
        for keys in _by_size((sent.probe for _, sent in overdue if sent.watched),
                             self.batch_bytes):
            self._send(Kind.WATCH, wire.Watch(keys, []))

    def _sent_again(self, key: Any, sent: _Sent | None = None) -> bool:
        """The admin does not know task ``key`` (or knows it as another submission's, see
        _named): not the last word while a SUBMIT of it is unanswered (True). If that SUBMIT
        was watched (see _watch_unanswered), it was lost: its batch goes again (what was not
        cancelled meanwhile; under its name, so an admin that had it after all, its answer
        slow, takes it once)."""
        msg_id = self._unanswered_of(key, sent)
        if msg_id is None:
            return False
        sent, answer = self._unanswered[msg_id], self._requests.get(msg_id)
        if not sent.watched or key != sent.probe or answer is None or answer.done():
            # (an older watch's answer, or its SUBMIT's answer came first, read in the same
            # burst: that one tells)
            return True
        self._give_up_answer(msg_id)
        if sent.tries >= SEND_TRIES:  # (an admin that drops it: not sent for ever)
            self._batch_failed(list(sent.keys), [(d, g) for d, _, g in sent.items if g],
                               AdminUnreachableError(
                                   f"the admin at {self.endpoint} never took a batch sent "
                                   f"{sent.tries} times (each time it did not know it): lost "
                                   f"with connections as it restarted, again and again, or it "
                                   f"drops our messages (its log says which)"), sent)
            return True
        logger.info("client: the admin at {} does not have a batch we sent (lost as it "
                    "restarted?): sending it again", self.endpoint)
        items = self._still_wanted(sent.items, sent)
        if items:  # (under its name: should the admin have it after all, it takes it once)
            self._send_batch(items, sent.was, sent.tries + 1, sent.sid)
        return True

    def _unanswered_of(self, key: Any, sent: _Sent | None) -> int | None:
        """The unanswered SUBMIT (its msg_id) ``sent``, or else one that asked about task
        ``key`` (see _watch_unanswered), or else the one of ``key``'s future; None when
        there is none. (By key, not a look through every SUBMIT's keys: each of 30,000
        'unknown' DONEs after a restart did that, and the client spent minutes on it.)"""
        if sent is None:
            probing = self._probing.get(key)
            if probing is not None and probing in self._unanswered:
                return probing
            fut = self._futures.get(key)
            sent = fut._sent if fut is not None else None
        return None if sent is None or self._unanswered.get(sent.msg_id) is not sent \
            else sent.msg_id

    def _forget_sent(self, msg_id: int) -> None:
        sent = self._unanswered.pop(msg_id, None)
        if sent is not None and self._probing.get(sent.probe) == msg_id:
            del self._probing[sent.probe]

    def _give_up_answer(self, msg_id: int) -> None:
        """A SUBMIT's answer is waited for no more (see _accepted)."""
        self._forget_sent(msg_id)
        answer = self._requests.get(msg_id)
        if answer is not None:
            _fail(answer, _SentAgain())

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
        for waited in self._batches.values():
            _fail(waited.report, exc)
        for answer in self._requests.values():
            _fail(answer, exc)  # whoever awaits it takes it out


def _state(fut: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> str:
    """A future's state, as its repr says it (not its outcome: looking must not count as
    having seen a failure)."""
    return "cancelled" if fut.cancelled() else "done" if fut.done() else "pending"


def _in_parts(items: list[tuple[dict[str, Any], int, GroupFuture | None]]
              ) -> list[list[tuple[dict[str, Any], int, GroupFuture | None]]]:
    """A refused batch's submissions, to go again apart: each with those it is linked to by
    dependencies among them (in submission order; the parts in the order of their first),
    so that only those at fault fail, with what depends on them. Sent alone, one whose
    dependency of the same batch was refused could find a task of that id given earlier
    (by another program), and run after that one, silently."""
    part_of: dict[tuple[str, Any], int] = {}  # a task or a group -> its item
    root = list(range(len(items)))  # (union-find)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, (doc, _, group) in enumerate(items):
        for name in _names(doc, group):
            part_of[name] = i
    for i, (doc, _, _) in enumerate(items):
        for dep in _needs(doc):
            if dep in part_of:
                root[find(part_of[dep])] = find(i)
    parts: dict[int, list[tuple[dict[str, Any], int, GroupFuture | None]]] = {}
    for i, item in enumerate(items):
        parts.setdefault(find(i), []).append(item)
    return list(parts.values())


def _cancelled_dependency(doc: dict[str, Any], group: GroupFuture | None,
                          dep: tuple[str, Any], _: str) -> Exception:
    """How a submission left out for a dependency cancelled before it was sent fails: as the
    admin fails a task whose dependency was cancelled."""
    why = f"dependency {'' if dep[0] == 'task' else 'group '}{dep[1]!r} was cancelled"
    what = f"task {doc['id']!r}" if group is None else f"group {doc['name']!r}"
    return TaskFailed(f"{what} cancelled: {why}", doc["id"] if group is None else None, why)


def _cancel_said(task: asyncio.Task[Any]) -> None:
    """A future's cancel made on the cluster in the background: one that could not be made
    is said (the task may run on)."""
    if task.cancelled() or task.exception() is None:
        return
    logger.warning("a cancel of task(s) could not be made: {} (they may run on; "
                   "cancel them again once the admin answers)", task.exception())


def _names(doc: dict[str, Any], group: GroupFuture | None) -> list[tuple[str, Any]]:
    """What a submission gives: its task; or its group and the group's tasks (a task and a
    group may share a name)."""
    if group is None:
        return [("task", doc["id"])]
    return [("group", doc["name"]), *(("task", k) for k in group.tasks)]


def _needs(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """What a submission depends on: a task's tasks; a group's groups, and its tasks'."""
    if "name" not in doc:
        return [("task", d) for d in _ids(doc.get("depends_on"))]
    return [*(("group", d) for d in _ids(doc.get("depends_on"))),
            *(("task", d) for t in doc.get("tasks", ()) if isinstance(t, dict)
              for d in _ids(t.get("depends_on")))]


def _ids(depends_on: Any) -> list[Any]:
    """A document's dependencies that can name one (the admin refuses the others: a batch
    refused for them must not stop the client's receive loop)."""
    return [d for d in depends_on if isinstance(d, int | str)] \
        if isinstance(depends_on, list) else []


def _by_size(items: Iterable[Any], limit: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``limit`` bytes encoded and MAX_WATCH long."""
    chunk, size = [], 0
    for item in items:
        n = len(wire.packb(item))
        if chunk and (size + n > limit or len(chunk) == MAX_WATCH):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


def _accepted_answer(env: wire.Envelope) -> wire.Envelope:
    """An answer to a request: RejectedError for a REJECT."""
    if env.kind == Kind.REJECT:
        raise RejectedError(wire.unpack(wire.Reject, env.payload, INBOUND_LIMITS).reason)
    return env


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # whoever looks gets it; one nobody looks at is not logged at exit


def _task_doc(handler: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, key: Any,
              depends_on: Iterable[Any], options: dict[str, Any]) -> dict[str, Any]:
    if handler is not None and not isinstance(handler, str):  # (None: a simulated task)
        raise TypeError(f"the handler is named, not given: the name a worker registered it "
                        f"under (@handler(\"add\") on its --app module: submit(\"add\", ...)), "
                        f"not {type(handler).__name__} {handler!r}")
    if handler == "":
        raise ConfigError("the handler's name is empty")
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; options: key, depends_on, "
                        f"{', '.join(TASK_OPTIONS)} (handler keyword arguments go in kwargs=)")
    key = key if key is not None else f"{handler or 'task'}-{uuid.uuid4().hex[:16]}"
    description, difficulty = options.pop("description", None), options.pop("difficulty", None)
    task = {"id": key, "handler": handler,  # (an option given None: its default)
            "description": description if description is not None else handler or str(key),
            "args": list(args), "kwargs": dict(kwargs or {}),
            "difficulty": difficulty if difficulty is not None else 1,
            "depends_on": [_dependency(d) for d in depends_on]}
    if "role" in options:
        task["required_role"] = options.pop("role")
    return {**task, **{k: v for k, v in options.items() if v is not None}}


def _dependency(d: Any) -> Any:
    """A task's key, from its future or as given; a group's future is refused: its name is
    no task's key (a task of that key would be waited on instead, and a group's tasks may be
    cancelled once its goal is met, which cancels what waits on them)."""
    group = d if isinstance(d, GroupFuture) else getattr(d, "_inner", None)
    if isinstance(group, GroupFuture):
        raise TypeError(f"depends_on takes tasks (their futures or keys), and {group.name!r} "
                        f"is a group: to run after it, submit_group(..., depends_on="
                        f"[{group.name!r}])")
    return getattr(d, "key", d)


_OPTION_FIELDS = {"difficulty": "difficulty", "role": "required_role", "priority": "priority",
                  "timeout": "timeout", "description": "description", "duration": "duration"}


def _check_options(options: dict[str, Any], key: Any = None) -> None:
    """A task's options (and its key) as the admin takes them, checked at the call: else the
    future failed a round trip later, the admin refusing the batch."""
    if key is not None and not valid_field("id", key):
        raise ConfigError(f"key must be {TASK_FIELDS['id']}, got {key!r}")
    for option, value in options.items():
        field = _OPTION_FIELDS.get(option)
        if field is not None and value is not None and not valid_field(field, value):
            raise ConfigError(f"{option} must be {TASK_FIELDS[field]}, got {value!r}")


def _encoded_size(doc: dict[str, Any], what: str, limit: int, limits: wire.Limits,
                  rule: str | None = None) -> int:
    """Bytes of ``doc`` (a task, or a group with its tasks) encoded: LocalProtocolError (here,
    at the call) for what cannot be sent, ConfigError for what would not fit in ``limit``
    (``rule`` says it and what to do; by default, the rule of a task)."""
    for task in doc.get("tasks", [doc]):
        _check_args(task, what)
    packed = wire.packb(doc)
    size = len(packed)
    if size > limit:  # (first: a string too long to read back is too large, said as such)
        raise ConfigError(f"{what} is {size} bytes encoded; " + (rule or (
            f"a submission may be at most {limit} (half the admin's --max-message-bytes; "
            f"pass large data by reference: a path, a URL)")))
    try:  # as the admin will read it (msgpack packs more than it reads back: int map keys)
        wire.unpackb(packed, limits)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"{what} cannot be sent: the admin would not read it back "
                                 f"({exc})") from None
    return size


def _check_args(task: dict[str, Any], what: str) -> None:
    """A task's arguments the admin would refuse (nested past wire.MAX_DEPTH, a list longer
    than it reads): LocalProtocolError here, at the call, as for what cannot be encoded.
    Sent, its batch was refused, and the future failed only later."""
    for name in ("args", "kwargs"):
        if (why := wire.unfit(task.get(name))) is not None:
            where = "" if task.get("id") is None or what.endswith(repr(task["id"])) \
                else f" (task {task['id']!r})"
            raise LocalProtocolError(f"{what}{where} cannot be sent: its {name} {why}")


def _same_reason(alone: str, in_batch: str) -> bool:
    """The admin's reasons for refusing a task alone and in its batch are the same but for
    the task's place in the SUBMIT ("task #3", then "task #1" alone), which the user never
    saw."""
    return _PLACE.sub("task ", alone) == _PLACE.sub("task ", in_batch)


_PLACE = re.compile(r"\btask #\d+ ")


def _log_dropped(exc: Exception) -> None:
    logger.warning("client: dropped a message from the admin: {}: {}", type(exc).__name__, exc)
