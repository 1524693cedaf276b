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
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..errors import ConfigError

_HANDLERS: dict[str, Callable[..., Any]] = {}

# A thread cannot be stopped: a sync handler whose task was cancelled or ran out of time runs
# on. Its runner (ceylon_net.edge.runner) keeps the slot until the thread ends, or the worker
# would run more at once than its --concurrency; here is where the runner hears of it.
THREADS_LEFT: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar(
    "ceylon_net_threads_left", default=None)


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
    return sorted(_HANDLERS)


async def call(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run handler ``name``: async ones on the loop, sync ones in a thread so the loop keeps
    its heartbeats going."""
    fn = _HANDLERS.get(name)
    if fn is None:
        raise LookupError(f"no handler {name!r} on this worker")
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    thread = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        left = THREADS_LEFT.get()
        if left is not None and not thread.done():
            left.append(thread)
        raise
