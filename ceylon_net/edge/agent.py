"""The surface every agent shares (admin and workers): identity, message handlers, broadcast
and direct sends. Subclasses provide the transport through :meth:`AgentBase._transmit`."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from loguru import logger

from .. import wire
from ..core.membership import clip
from ..core.tasks import DEFAULT_ROLE
from ..core.workers import AgentDetail
from ..errors import Crashed, LocalProtocolError, OutsideFailure, RemoteProtocolError
from ..wire import Header, Kind, Limits
from .loop import stop_tasks

_HANDLES = "__ceylon_handles__"
# Seconds a plain-function message handler may hold the event loop before it is said (once a
# handler): heartbeats and tasks wait meanwhile, and a long one gets its agent taken for lost.
SLOW_ON_LOOP = 0.5
_said_slow: set[tuple[str, str]] = set()  # (agent, handler) said so


def on_message(type: type | None = None) -> Callable[[Callable], Callable]:
    """Mark a method as the handler of messages of ``type`` (a registered message class).

    The handler is ``async def h(self, data)`` or ``async def h(self, data, agent_id, time)``;
    plain functions work too, on the event loop, so keep them quick (one that holds it over
    SLOW_ON_LOOP is said: make it async and ``await asyncio.to_thread(...)`` the blocking
    part). Messages with no typed handler go to ``on_message(agent_id, data, time)``, the
    raw handler, as bytes or decoded object. ``type=bytes`` takes the raw messages (sent as
    bytes). TypeError at once for any other ``type`` that is not a registered message class
    (or none given): such a handler would never be called.
    """
    if not (type is bytes or (isinstance(type, builtins.type) and wire.is_message(type))):
        what = "no type" if type is None else f"{type!r}, not a @message class"
        raise TypeError(f"@on_message(type=...) takes the @message class whose messages the "
                        f"method handles (or bytes, for raw ones); got {what} (to take every "
                        f"message no typed handler takes, override on_message(self, agent_id, "
                        f"data, time))")

    def mark(fn: Callable) -> Callable:
        setattr(fn, _HANDLES, type)
        return fn

    return mark


class AgentBase:
    """Handlers, broadcast and send. Handlers run as their own asyncio tasks, so a slow async
    handler (the tutorials sleep in theirs) never blocks heartbeats or other messages."""

    # What a handler holding the event loop costs (said with it; see _slow).
    _SLOW_LOOP_COSTS = ("heartbeats and tasks waited, and a longer wait gets this agent "
                        "taken for lost")

    def __init__(self, name: str, workspace_id: str, role: str = DEFAULT_ROLE) -> None:
        self.name = name
        self.workspace_id = workspace_id
        self.role = role
        self.id = name
        self._handler_tasks: set[asyncio.Task] = set()
        self._unknown_types: set[str] = set()  # message types received but not known here
        # type -> (bound handler, whether it also takes agent_id and time): the signature is
        # read once here, not on every message
        self._typed: dict[type, tuple[Callable[..., Any], bool]] = {}
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            handles = getattr(fn, _HANDLES, None) if callable(fn) else None
            if handles is not None:
                bound = getattr(self, attr)
                self._typed[handles] = (bound, _positional_count(bound) >= 3)

    def details(self) -> AgentDetail:
        return AgentDetail(self.id, self.name, self.role)

    # ---- sending
    async def broadcast(self, data: bytes) -> None:
        """Send raw bytes to every agent in the workspace."""
        await self._transmit(Kind.BCAST, None, data)

    async def broadcast_data(self, obj: Any) -> None:
        """Send a registered message object to every agent in the workspace."""
        await self._transmit(Kind.BCAST, None, obj)

    async def send(self, agent_id: str, data: Any) -> None:
        """Send bytes or a registered message object to one agent (by id or name)."""
        await self._transmit(Kind.DIRECT, agent_id, data)

    async def _transmit(self, kind: bytes, to: str | None, data: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _outgoing(data: Any, max_bytes: int, limits: Limits) -> tuple[str | None, bytes]:
        """(type name, payload) of a broadcast or message, refused here (LocalProtocolError)
        when it could not arrive: over the ``max_bytes`` a message may carry (the socket
        would drop it with the connection, and what was sent behind it), or a message object
        the receivers would not read back (a str in an int field, int map keys)."""
        type_, payload = wire.encode_payload(data)
        room = max_bytes - wire.FRAME_SLACK
        if len(payload) > room:
            raise LocalProtocolError(
                f"{type_ or 'a message of raw bytes'} is {len(payload):,} bytes encoded, over "
                f"the {room:,} a message may carry (--max-message-bytes): send less, or where "
                f"to find it (a path, a URL)")
        if type_ is not None:
            try:
                raw = wire.unpackb(payload, limits)
                # (deeper, a receiver at Python's default recursion limit may not decode it,
                # whatever this process's limit lets through: said here, not dropped there)
                why = wire.unfit(raw, limits)
                if why is not None:
                    raise RemoteProtocolError(f"{type_}: {why}")
                got = wire.from_wire(type(data), raw)
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"the receivers would drop this {type_}: "
                                         f"{exc}") from None
            lost = _read_otherwise(data, got, type(data).__name__)
            if lost is not None:
                raise LocalProtocolError(f"the receivers would not read this {type_} as sent: "
                                         f"{lost} (a value of another type than the field's "
                                         f"annotation?)")
        return type_, payload

    # ---- receiving
    async def on_message(self, agent_id: str, data: Any, time: float) -> None:
        """Raw handler: messages no typed handler took. Override it (seed 001 style)."""

    def _deliver(self, header: Header, payload: bytes, limits: Limits) -> None:
        """Decode a BCAST/DIRECT payload and start its handler. Bad payloads are dropped; one
        of a type this process does not know is said once a type (the admin relays workers'
        broadcasts of types it never imported: nothing is wrong with them)."""
        if header.type is not None and not wire.known_type(header.type):
            if header.type not in self._unknown_types:
                self._unknown_types.add(header.type)
                logger.info("{}: messages of type {!r} (from {} first) are not delivered "
                            "here: no @message class of that name is imported in this "
                            "process", self.name, header.type, header.sender)
            return
        try:
            data = wire.decode_payload(header, payload, limits)
        except RemoteProtocolError as exc:
            logger.warning("{}: dropped message from {}: {}", self.name, header.sender, exc)
            return
        typed = self._typed.get(type(data))
        if typed is None:
            call = (self.on_message, header.sender, data, header.ts)
        elif typed[1]:
            call = (typed[0], data, header.sender, header.ts)
        else:
            call = (typed[0], data)
        self._start(_handle(self.name, header.sender, data, call, self._SLOW_LOOP_COSTS),
                    getattr(call[0], "__qualname__", "on_message"))

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        self._start(_guard(coro, self.name, what), what)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a handler; ``name`` says which, should it not stop when cancelled."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _cancel_handlers(self) -> None:
        await stop_tasks(self._handler_tasks, f"handler(s) of {self.name}")


async def _handle(name: str, sender: str, data: Any, call: tuple[Any, ...],
                  costs: str = AgentBase._SLOW_LOOP_COSTS) -> None:
    """Run a message handler (``call`` is the function and its arguments): an exception is
    logged, never fatal. One coroutine per message, as cheap as it gets: broadcasts come by
    the thousand."""
    try:
        began = time.perf_counter()
        try:
            result = call[0](*call[1:])
        finally:
            if time.perf_counter() - began > SLOW_ON_LOOP:
                _slow(name, call[0], time.perf_counter() - began, costs)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except BaseException:  # SystemExit, KeyboardInterrupt too: the handler's, not ours
        logger.exception("{}: handler for {} from {} raised", name, type(data).__name__,
                         sender)


def _slow(name: str, fn: Callable[..., Any], took: float, costs: str) -> None:
    """Say (once a handler) that a plain handler held the event loop, and what that costs
    its agent (``costs``: its class's words)."""
    what = getattr(fn, "__qualname__", repr(fn))
    if (name, what) not in _said_slow:
        _said_slow.add((name, what))
        logger.warning("{}: message handler {} held the event loop for {:.1f} s (a plain "
                       "function runs on it): {}. Make it async def and await "
                       "asyncio.to_thread(...) for its blocking part (said once)", name, what,
                       took, costs)


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


async def _guard(coro: Awaitable[Any], name: str, what: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except BaseException:  # SystemExit, KeyboardInterrupt too: the hook's, not ours
        logger.exception("{}: {} raised", name, what)


def supervised(coro: Coroutine[Any, Any, Any], name: str,
               on_crash: Callable[[Crashed], None]) -> asyncio.Task:
    """Run one of a program's own loops as a task. If it ever raises, the traceback is logged
    and ``on_crash`` gets a :class:`Crashed` naming the loop, so the program stops with an error
    instead of living on without it (an unwatched task dies without a word)."""

    def watch(task: asyncio.Task) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            _crash(name, exc, on_crash)

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(watch)
    return task


def guarded(fn: Callable[..., None], name: str, on_crash: Callable[[Crashed], None]
            ) -> Callable[..., None]:
    """``fn`` for ``loop.call_later``: an error in it stops the program as a loop's does
    (:func:`supervised`), where asyncio would only log it and carry on."""

    def call(*args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            _crash(name, exc, on_crash)

    return call


def _crash(name: str, exc: BaseException, on_crash: Callable[[Crashed], None]) -> None:
    if isinstance(exc, OutsideFailure):  # (no bug of ours: said as it is)
        logger.critical("{} stopped: {}", name, exc)
        on_crash(Crashed.by(exc))
        return
    logger.opt(exception=exc).critical("{} stopped on an unexpected error: {!r}", name, exc)
    crash = Crashed(f"{name} stopped on an unexpected error: {exc!r} (" + (
        "out of memory" if isinstance(exc, MemoryError) else
        "a bug: the log has the traceback") + ")")
    crash.__cause__ = exc
    on_crash(crash)


async def finish_tasks(tasks: list[asyncio.Task], timeout: float) -> None:
    """Give ``tasks`` ``timeout`` seconds to end on their own, then cancel the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


_LEAVES = frozenset((str, int, float, bool, bytes, type(None)))  # (read as they are)


def _read_otherwise(sent: Any, got: Any, where: str) -> str | None:
    """Where a message would not arrive as sent, though its receivers read it, or None:
    what they read (``got``) walked beside what was sent. A message object arriving as
    another class (another @message in a field annotated with one, a registered subclass, a
    union's second member read as its first, a message in a field typed Any), or a map read
    as a message that has no field for some of its keys: the rest would be lost. Values
    read as equal ones of the field's type (0 for 0.0, a list for a tuple) are not looked
    at. (Nested no deeper than wire.MAX_DEPTH: checked before.)"""
    if wire.is_message(sent) and not isinstance(sent, type):
        if type(got) is not type(sent):
            return f"{where} would arrive as {clip(repr(got), 200)}, sent as " \
                   f"{clip(repr(sent), 200)}"
        pairs: Any = ((f.name, getattr(sent, f.name), getattr(got, f.name))
                      for f in dataclasses.fields(sent))
    elif isinstance(sent, dict) and wire.is_message(got):
        extra = sorted(set(sent) - {f.name for f in dataclasses.fields(got)}, key=str)
        return None if not extra else f"{where} would arrive as {clip(repr(got), 200)}, " \
            f"without {clip(', '.join(map(str, extra)), 100)} of the map sent"
    elif isinstance(sent, dict) and isinstance(got, dict):
        pairs = ((k, v, got[k]) for k, v in sent.items() if type(v) not in _LEAVES and k in got)
    elif isinstance(sent, list | tuple) and isinstance(got, list | tuple):
        pairs = ((i, v, w) for i, (v, w) in enumerate(zip(sent, got, strict=False))
                 if type(v) not in _LEAVES)
    else:
        return None
    for key, mine, theirs in pairs:
        at = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]"
        lost = _read_otherwise(mine, theirs, at)
        if lost is not None:
            return lost
    return None
