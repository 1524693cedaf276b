"""``Client``: the :class:`~ceylon_net.edge.client.AsyncClient` for programs without asyncio.
Its event loop runs in a thread of its own; futures are ``concurrent.futures.Future`` s, so
``concurrent.futures.as_completed`` and ``wait`` work on them (``ceylon_net.as_completed``).

    from ceylon_net import Client, as_completed

    with Client("coordinator:8000") as c:
        f = c.submit("sha256", "x", 1000, difficulty=3)
        print(f.result(timeout=60))
        for done in as_completed(c.map("sha256", ["a", "b"], [10, 20])):
            print(done.result())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from loguru import logger

from .. import wire
from ..errors import ConfigError, Crashed
from .client import AsyncClient, _state

T = TypeVar("T")
as_completed = concurrent.futures.as_completed
CLOSE_WAIT = 10.0  # seconds close() waits for the connection to close before going on
THREAD_WAIT = 15.0  # ... then for the client's thread to end (a callback may hold it)


def _bounded(timeout: float | None) -> float | None:
    """A wait's timeout as threading takes it: one beyond threading.TIMEOUT_MAX (some 49
    days here; 1e10 raised OverflowError) waits as long as it can, that is for ever."""
    return None if timeout is not None and timeout > threading.TIMEOUT_MAX else timeout


def _first_failure(futures: list[concurrent.futures.Future], timeout: float | None) -> None:
    """Wait until every future is done, raising the first failure (or cancellation) as soon
    as it comes, not once the futures before it are done; TimeoutError after ``timeout``
    (None: no limit). One wake-up a future (concurrent.futures.wait again and again would
    look at every pending future each time)."""
    came: queue.SimpleQueue[concurrent.futures.Future] = queue.SimpleQueue()
    for f in futures:  # (the base class's: in whichever thread ends it, or at once)
        concurrent.futures.Future.add_done_callback(f, came.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    for left in range(len(futures), 0, -1):
        try:
            f = came.get(timeout=None if deadline is None
                         else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{left} of {len(futures)} future(s) not done within "
                               f"{timeout:g} s") from None
        if f.cancelled() or f.exception() is not None:
            f.result()  # (raises)


def _same_process(pid: int, coro: Coroutine[Any, Any, Any] | None = None) -> None:
    """ConfigError in a child forked from process ``pid``, the one that made the client
    (multiprocessing, a pre-forking server): the client's thread is not there, and its
    calls, and waits on its futures, waited for ever (``coro``: a call's, closed unrun)."""
    if os.getpid() != pid:
        if coro is not None:
            coro.close()
        raise ConfigError(FORKED)


def _shielded(fn: Callable[[Any], Any], thread: threading.Thread, what: str
              ) -> Callable[[Any], None]:
    """``fn``, a user's callback, as the client's thread runs it: whatever it raises is
    logged and the thread goes on, SystemExit and KeyboardInterrupt too (sys.exit() in a
    callback ended the thread, and every later call waited for ever). Run elsewhere (a
    future done already runs a new done callback at once, in the caller's thread), it
    raises as it would have."""

    def call(arg: Any) -> None:
        try:
            fn(arg)
        except BaseException as exc:
            if threading.current_thread() is not thread:
                raise
            logger.opt(exception=exc).error("client: {} raised {!r} (ignored: the client "
                                            "goes on)", what, exc)

    return call


class Future(concurrent.futures.Future):
    """A task's future: ``result(timeout=)``, ``exception()``, ``done()``,
    ``add_done_callback()``; ``cancel()`` cancels the task on the cluster too. ``key`` is its
    task id."""

    def __init__(self, key: Any, inner: asyncio.Future, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread, client: Client | None = None) -> None:
        super().__init__()
        self.key = key
        self._inner, self._loop, self._thread = inner, loop, thread
        self._client = client  # (kept open while this is pending: see Client)
        self._pid = os.getpid()  # (see _same_process)
        self._settle = threading.Lock()  # threads racing to cancel: told once (_cancel_here)
        self._notified = False
        inner.add_done_callback(self._copy)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} {_state(self)}>"

    def result(self, timeout: float | None = None) -> Any:
        self._not_in_callback()
        return super().result(_bounded(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._not_in_callback()
        return super().exception(_bounded(timeout))

    def add_done_callback(self, fn: Callable[[Any], Any]) -> None:
        """``fn(future)`` once the future is done, in the client's thread (at once here, if
        it is done already); what it raises is logged."""
        super().add_done_callback(_shielded(fn, self._thread, f"a done callback of {self.key!r}"))

    def _not_in_callback(self) -> None:
        """Waiting for a result in a callback would wait for ever: callbacks run in the
        client's thread, the one that receives results; so would waiting in a process forked
        from the client's (that thread is not there)."""
        if not self.done():
            _same_process(self._pid)
        if not self.done() and threading.current_thread() is self._thread:
            if self._inner.done():  # here already, its copy not made yet: take it
                self._copy(self._inner)
                return
            raise RuntimeError("waiting for a future in a callback: callbacks run in the "
                               "client's own thread, which receives the results, so it would "
                               "wait for ever; chain another add_done_callback instead")

    def _copy(self, inner: asyncio.Future) -> None:
        """The loop's outcome, copied (unless the user's cancel() came first). No lock is
        held as the user's done callbacks run: one that cancels another future, whose own
        callback cancels this one (first result wins), deadlocked the client's thread."""
        try:
            if inner.cancelled():
                self._cancel_here()
                return
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # (cancelled)
                if inner.exception() is not None:
                    self.set_exception(inner.exception())
                else:
                    self.set_result(inner.result())
        finally:
            self._client = None  # (done: it holds its client open no more)

    def _cancel_here(self) -> bool:
        """This future cancelled (its callbacks run), and wait() and as_completed() told so,
        once whichever threads race to it; False if its outcome came first."""
        if not super().cancel():  # (False once finished)
            return False
        with self._settle:  # (held for no callback)
            if not self._notified:
                self._notified = True
                self.set_running_or_notify_cancel()
        return True

    def cancel(self) -> bool:
        if self.done():
            return False
        _same_process(self._pid)
        if self._inner.done():  # its outcome is here, only not copied yet: too late
            self._copy(self._inner)
            return self.cancelled()
        if not self._cancel_here():
            return False
        self._loop.call_soon_threadsafe(self._inner.cancel)
        return True


class GroupFuture(Future):
    """A task group: resolves to its summary; ``tasks`` maps task keys to their futures."""

    def __init__(self, inner: Any, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 tasks: dict[Any, Future], client: Client | None = None) -> None:
        super().__init__(inner.name, inner, loop, thread, client)
        self.name = inner.name
        self.tasks = tasks


FORKED = ("this Client was made in another process (this one was forked from it), whose "
          "thread talks to the admin: make a new Client in this process")
CLOSED = "the client is closed (a closed client stays closed: make a new Client)"


class _Thread:
    """The client's thread and event loop, and what the client's calls share with it. It
    holds no reference to its :class:`Client`: a client dropped unclosed is collected, and
    closed (:meth:`abandon`), once nothing refers to it (a pending future refers to it)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        # Calls from other threads wait on these; close() fails those the loop will not end.
        self.lock, self.closed = threading.Lock(), False
        self.pending: set[concurrent.futures.Future[Any]] = set()
        self.crash: Crashed | None = None  # the client's thread died: why
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.serve, name="ceylon-client", daemon=True)

    def serve(self) -> None:
        """The client's thread: its loop, until stopped; then calls that came as it closed
        (they may not have run, or their answer not been passed on) are run out, against a
        closed client they end at once, and the loop is closed (the client closed as crashed
        first, should the loop stop on an error). Here, not in the thread that closes the
        client: that one may be running an event loop of its own."""
        try:
            self.loop.run_forever()
        except BaseException as exc:  # (not a user's callback's: those are shielded)
            self.died(exc)
        try:
            self.loop.run_until_complete(_settle(asyncio.all_tasks(self.loop)))
        finally:
            self.loop.close()
            if self.crash is not None:
                self.fail_pending(self.crash)

    def died(self, exc: BaseException) -> None:
        """The loop stopped on an error (a bug): say so, and close the client as when one of
        its loops dies, so that pending futures and calls, and later calls, fail with
        Crashed instead of waiting for a thread that is gone."""
        logger.opt(exception=exc).critical("the client's thread stopped on an unexpected "
                                           "error: {!r}", exc)
        crash = Crashed(f"the client's thread stopped on an unexpected error: {exc!r} (a "
                        f"bug: the log has the traceback)")
        crash.__cause__ = exc
        with self.lock:
            self.crash = crash
        self.client._crashed(crash)  # (its futures' copies are made as the loop settles)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # (closed already: its thread died)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(THREAD_WAIT)
        self.fail_pending(ConfigError(CLOSED))

    def fail_pending(self, exc: Exception) -> None:
        with self.lock:  # calls whose coroutine the stopped loop will never run
            for fut in self.pending:
                if not fut.done():
                    fut.set_exception(exc.again() if isinstance(exc, Crashed) else exc)

    def abandon(self, pid: int) -> None:
        """The client was dropped unclosed (collected: no call of it is under way, no future
        of it pending): closed in its own thread, which then ends. Called from whichever
        thread collected it, that one too, maybe holding a lock of ours: it takes none and
        waits for nothing."""
        if os.getpid() != pid or self.closed:  # (forked: the process that made it closes it)
            return
        self.closed = True

        async def close() -> None:
            try:
                await asyncio.wait_for(self.client.close(), CLOSE_WAIT)
            finally:
                self.loop.stop()

        with contextlib.suppress(RuntimeError):  # (its loop closed: its thread died)
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(close()))


class Client:
    """``Client("coordinator:8000", token=..., curve_secret=..., admin_key=...)``: submit tasks
    and groups to a running admin from any Python program and get futures back. See
    :class:`~ceylon_net.edge.client.AsyncClient` for the options. ``close()`` it (or use it
    in a ``with`` block); one dropped unclosed is closed once nothing refers to it, its
    futures included."""

    def __init__(self, address: str | None = None, **options: Any) -> None:
        self._client = AsyncClient(address, **options)  # a bad option: nothing started yet
        self._pid = os.getpid()  # (see _same_process)
        self._t = _Thread(self._client)
        self._loop, self._thread = self._t.loop, self._t.thread
        self._thread.start()
        try:
            self._run(self._client.connect())
        except BaseException:
            self._t.stop()
            raise
        weakref.finalize(self, self._t.abandon, self._pid).atexit = False

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        _same_process(self._pid, coro)
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("this Client call waits for the admin, and callbacks run in "
                               "the client's own thread: call it outside add_done_callback "
                               "and on_event callbacks (submit, map and submit_group work "
                               "there)")
        t = self._t
        with t.lock:  # (a close() in another thread either comes first, or fails it)
            if t.crash is not None or t.closed or self._loop.is_closed():
                coro.close()
                raise t.crash.again() if t.crash is not None else ConfigError(CLOSED)
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
            t.pending.add(fut)
        try:
            return fut.result(timeout)
        except ConfigError:  # (a call the dying thread ran found the client closed)
            if t.crash is not None:
                raise t.crash.again() from None
            raise
        finally:
            with t.lock:
                t.pending.discard(fut)

    def _in_loop(self, fn: Callable[[], T]) -> T:
        _same_process(self._pid)
        if threading.current_thread() is self._thread:
            return fn()  # from a callback: already in the loop

        async def call() -> T:
            return fn()

        return self._run(call())

    # ---- futures
    def submit(self, handler: str, *args: Any, **options: Any) -> Future:
        """Run ``handler(*args)`` on a worker that has it (see AsyncClient.submit)."""
        return self._in_loop(lambda: self._wrap(self._client.submit(handler, *args, **options)))

    def map(self, handler: str, *iterables: Iterable[Any], **options: Any) -> list[Future]:
        """One future per tuple of items, submitted as one batch."""
        return self._in_loop(lambda: [self._wrap(f) for f in self._client.map(
            handler, *iterables, **options)])

    def gather(self, futures: Iterable[concurrent.futures.Future],
               timeout: float | None = None) -> list[Any]:
        """The futures' results, in order; the first failure raises; ``timeout`` bounds the
        whole wait (TimeoutError)."""
        futures = list(futures)
        for f in futures:
            if not isinstance(f, concurrent.futures.Future):
                raise TypeError(f"gather() takes futures, got {type(f).__name__} {f!r}"
                                + (" (a dict's keys: its values()?)" if isinstance(f, str)
                                   else ""))
        for f in futures:
            if isinstance(f, Future):
                f._not_in_callback()  # (in the client's thread it would wait for ever)
        _first_failure(futures, _bounded(timeout))
        return [f.result() for f in futures]

    def submit_group(self, name: str, tasks: Iterable[dict[str, Any]],
                     on_event: Callable[[wire.GroupNews], Any] | None = None,
                     **options: Any) -> GroupFuture:
        """A task group with its goal (see AsyncClient.submit_group); ``on_event`` is called
        (in the client's thread) with each of the group's events."""
        if on_event is not None:
            on_event = _shielded(on_event, self._thread, f"the on_event callback of group "
                                                         f"{name!r}")

        def make() -> GroupFuture:
            inner = self._client.submit_group(name, list(tasks), on_event=on_event, **options)
            return GroupFuture(inner, self._loop, self._thread,
                               {k: self._wrap(f) for k, f in inner.tasks.items()}, self)

        return self._in_loop(make)

    def _wrap(self, inner: Any) -> Future:
        return Future(inner.key, inner, self._loop, self._thread, self)

    # ---- requests
    def status(self) -> dict[str, Any]:
        """The admin's status snapshot (what ceylon-status prints)."""
        return self._run(self._client.status())

    def cancel(self, tasks: Iterable[Any], reason: str = "cancelled by the client"
               ) -> dict[str, list[Any]]:
        """Cancel tasks (futures, group futures or keys; a group's, every one of its
        tasks); returns what happened to each task."""
        keys = [key for t in tasks for key in (
            t.tasks if isinstance(t, GroupFuture)
            else [t.key if isinstance(t, Future) else t])]
        return self._run(self._client.cancel(keys, reason))

    # ---- lifetime
    def close(self) -> None:
        """Close the connection; futures still pending fail (ConfigError), and so do calls
        other threads are making meanwhile. It waits up to CLOSE_WAIT + THREAD_WAIT s (a
        done callback that blocks holds the client's thread: said in the log)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() waits for the client's thread, and callbacks run in "
                               "it: close the client outside its callbacks")
        if os.getpid() != self._pid:  # (forked: the process that made it closes it)
            self._t.closed = True
            return
        with self._t.lock:
            closed, self._t.closed = self._t.closed, True
            if closed or not self._loop.is_running():
                return
            closing = asyncio.run_coroutine_threadsafe(self._client.close(), self._loop)
        try:
            closing.result(CLOSE_WAIT)
        except concurrent.futures.TimeoutError:  # (not a bare TimeoutError for the caller)
            logger.warning("client: closing took over {:g} s: its thread is held, by a "
                           "future's done callback that blocks, say; waiting up to {:g} s "
                           "more for it", CLOSE_WAIT, THREAD_WAIT)
        finally:
            self._t.stop()

    def __enter__(self) -> Client:
        if self._t.closed:  # (said here, not at the block's first call)
            raise ConfigError(CLOSED)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _settle(tasks: set[asyncio.Task[Any]]) -> None:
    """Let ``tasks`` end (1 s at most, then cancelled), and the answers of those that ended
    reach their callers (one loop turn)."""
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=1.0)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
