"""User task handlers: functions registered by name, imported on a worker with ``--app``.

    from ceylon_net import handler

    @handler("resize")
    def resize(path: str, width: int) -> dict: ...        # sync: runs in a thread

    @handler("fetch")
    async def fetch(url: str) -> str: ...                  # async: runs on the event loop

A task names its handler and carries msgpack-able ``args``/``kwargs``; the return value comes
back in ``TaskResult.value``; an exception becomes a failed result with its traceback text.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

from ..errors import ConfigError

_HANDLERS: dict[str, Callable[..., Any]] = {}

# A thread cannot be stopped: a sync handler whose task was cancelled or ran out of time runs
# on. Its runner (ceylon_net.edge.runner) keeps the slot until the thread ends, or the worker
# would run more at once than its --concurrency; here is where the runner hears of it.
THREADS_LEFT: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar(
    "ceylon_net_threads_left", default=None)

# Sync handlers run on a pool of our own, not the event loop's default one: asyncio waits for
# the default pool's threads when the loop closes, so one hung handler would keep a worker
# that has drained and left from ever exiting (ceylon-worker then exits without it, see
# running()). Threads are made as calls come, up to many more than any --concurrency.
_POOL: ThreadPoolExecutor | None = None
_running = 0  # sync handler calls whose thread has not returned
_counting = threading.Lock()


def running() -> int:
    """Sync handler calls still running in their threads (a thread cannot be stopped)."""
    return _running


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1024, thread_name_prefix="ceylon-handler")
    return _POOL


def _count(step: int) -> None:
    global _running
    with _counting:
        _running += step


def _in_thread(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    finally:
        _count(-1)


def handler(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the handler of tasks naming ``name``."""
    if not name or not isinstance(name, str):
        raise ConfigError("a handler needs a non-empty name")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        old = _HANDLERS.get(name)
        if old is not None and old is not fn and old.__qualname__ != fn.__qualname__:
            raise ConfigError(f"handler {name!r} is already registered by {old.__qualname__}")
        _HANDLERS[name] = fn
        return fn

    return register


def registered() -> dict[str, Callable[..., Any]]:
    return dict(_HANDLERS)


def load_app(module: str) -> list[str]:
    """Import ``module`` (its @handler functions register themselves); returns the names."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"--app {module}: cannot import it: {exc}") from None
    except Exception as exc:  # the module itself raised (a bug in it, a SyntaxError)
        where = [] if isinstance(exc, SyntaxError) else \
            traceback.extract_tb(exc.__traceback__)[-1:]  # (a SyntaxError says where)
        at = f" ({where[0].filename}, line {where[0].lineno})" if where else ""
        raise ConfigError(f"--app {module}: importing it raised {type(exc).__name__}: "
                          f"{exc}{at}") from None
    return sorted(_HANDLERS)


async def call(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run handler ``name``: async ones on the loop, sync ones in a thread so the loop keeps
    its heartbeats going."""
    fn = _HANDLERS.get(name)
    if fn is None:
        raise LookupError(f"no handler {name!r} on this worker")
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    _count(1)
    try:
        thread = asyncio.get_running_loop().run_in_executor(
            _pool(), _in_thread, functools.partial(fn, *args, **kwargs))
    except BaseException:
        _count(-1)
        raise
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        left = THREADS_LEFT.get()
        if left is not None and not thread.done():
            left.append(thread)
        raise
