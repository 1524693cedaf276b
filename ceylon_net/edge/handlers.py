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
import collections
import contextlib
import contextvars
import functools
import importlib
import inspect
import math
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from loguru import logger

from .. import wire
from ..errors import ConfigError

_HANDLERS: dict[str, Callable[..., Any]] = {}

# A thread cannot be stopped: a sync handler whose task was cancelled or ran out of time runs
# on. Its runner (ceylon_net.edge.runner) keeps the slot until the thread ends, or the worker
# would run more at once than its --concurrency; here is where the runner hears of it.
THREADS_LEFT: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar(
    "ceylon_net_threads_left", default=None)

# Sync handlers run on threads of our own, not the event loop's default pool: asyncio waits
# for the default pool's threads when the loop closes, so one hung handler would keep a worker
# that has drained and left from ever exiting (ceylon-worker then exits without it, see
# running()). Threads are made as calls find none to wake, up to MAX_THREADS (more calls
# wait for a busy one to be free).
MAX_THREADS = 1024
# A thread made that dies before it comes to the queue (out of memory as it starts: a
# review's worker, "Exception ignored in: Thread._bootstrap ... MemoryError") left the calls
# waiting for it for ever, the worker's slots held: looked at this often (s) while one is on
# its way, by the loops whose calls wait; one found dead is counted no more.
STARTING = 1.0
_running = 0  # sync handler calls whose thread has not returned
_counting = threading.Lock()

# A sync handler whose recent calls were all shorter than QUICK is *quick*: a worker then runs
# several of its queued tasks one after another in one thread call (:class:`Batch`), not
# one thread call each. A thread call costs a wake-up each way, and a worker whose slots each
# waited for one ran a no-op handler at half the tasks/s of an async one. ``_slowest`` keeps
# each sync handler's slowest recent call: one slow call makes it slow for some 70 calls.
QUICK = 0.0005  # seconds
SLOW_DECAY = 0.9  # per call, of the slowest recent call's weight
_slowest: dict[str, float] = {}
_AWAITS: set[str] = set()  # plain functions found to return a coroutine: awaited on the loop


def quick(name: str | None) -> bool:
    """Is ``name`` a sync handler whose recent calls were all quick (it ran in a thread
    here before, and lately no call took QUICK or more)?"""
    return name is not None and _slowest.get(name, QUICK) < QUICK and name not in _AWAITS


def _took(name: str, seconds: float) -> None:
    """A call of sync handler ``name`` took ``seconds`` (from a thread: a lost update of a
    race between two threads only makes the figure a call older)."""
    _slowest[name] = max(seconds, _slowest.get(name, 0.0) * SLOW_DECAY)


def running() -> int:
    """Sync handler calls still running in their threads (a thread cannot be stopped)."""
    return _running


def _count(step: int) -> None:
    global _running
    with _counting:
        _running += step


class _Job:
    """A sync handler call on its way to a thread and back. ``future`` is what the caller
    awaits; when its task is cancelled while the thread runs on, the caller puts a new one
    here, which the thread's end resolves (a cancelled future cannot be). This instead of
    ``asyncio.shield``, which cost a future and a loop turn more per call (a quarter of a
    no-op call's time). ``todo`` holds the function until a thread takes it, or the caller,
    cancelled first, takes it back: ``list.pop`` is one step for Python's threads, so only
    one of them gets it."""

    __slots__ = ("back", "delivered", "future", "name", "todo")

    def __init__(self, fn: Callable[[], Any], back: _Back, future: asyncio.Future[Any],
                 name: str | None = None) -> None:
        self.todo = [fn]
        self.back, self.future, self.delivered = back, future, False
        self.name = name  # the sync handler it calls, timed (None: not timed, a batch)

    def take(self) -> Callable[[], Any] | None:
        """The function, to whoever asks first (a thread to run it, or its cancelled
        caller, so that it never runs); None after."""
        try:
            return self.todo.pop()
        except IndexError:
            return None


class _Back:
    """Where a loop's calls come back: results wait in a queue, and the loop is woken once
    for all that came in meanwhile (a wake-up, a write to the loop's pipe, is the dearest
    part of a short call: run_in_executor pays one, and a future more, per call)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._done: collections.deque[tuple[_Job, bool, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._woken = False

    def put(self, job: _Job, ok: bool, value: Any) -> None:
        """From a thread: a call ended (its return value, or what it raised)."""
        self._done.append((job, ok, value))
        with self._lock:
            if self._woken:
                return  # (the loop empties the queue after this append)
            self._woken = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("its loop is gone")
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits for these calls any more
            with self._lock:  # (kept, their futures would keep the closed loop alive)
                self._woken = False
                self._done.clear()

    def watch(self, threads: _Threads) -> None:
        """From a thread that made another: this loop looks at it (see _Threads._watch)."""
        loop = self._loop()
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # (closed: its calls wait no more)
                loop.call_soon_threadsafe(threads.watch_from, loop)

    def _deliver(self) -> None:
        with self._lock:
            self._woken = False  # (before emptying: what comes after wakes the loop again)
        done = self._done
        while done:
            job, ok, value = done.popleft()
            job.delivered, future = True, job.future
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(_failure(value))


def _failure(exc: BaseException) -> BaseException:
    """What a handler raised, as its task's failure: a StopIteration, which a future
    refuses (it would hang) and a coroutine turns into a RuntimeError of its own, and a
    GeneratorExit, which thrown into the awaiting coroutines closes them (it ended the
    worker's slot), as a RuntimeError saying so."""
    if not isinstance(exc, StopIteration | GeneratorExit):
        return exc
    try:
        said = repr(exc)
    except Exception:  # (its argument's repr raised)
        said = type(exc).__name__
    error = RuntimeError(f"the handler raised {said}")
    error.__cause__ = exc
    return error


class _Threads:
    """The threads sync handlers run on. Calls wait in one queue; a thread takes the next when
    it is free. A call wakes a sleeping thread (or makes one) only when no thread is on its way
    to the queue already; a thread that takes a call and sees more waiting wakes one more. So
    short calls that come together run back to back on few threads, with fewer wake-ups than
    calls (one per call: W1 with a sync no-op handler ran 7-10 % slower on 2 cores), while
    calls that block still get a thread each, one wake-up after another."""

    def __init__(self) -> None:
        self._calls: collections.deque[_Job] = collections.deque()
        self._lock = threading.Lock()
        self._sleeping: list[threading.Lock] = []  # a sleeping thread waits on its own lock
        self._waking = 0  # threads woken (or made) that have not yet looked at the queue
        self._made = 0
        self._starting: dict[threading.Thread, None] = {}  # made, not yet at the queue
        self._watching: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._backs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Back] = \
            weakref.WeakKeyDictionary()

    def call(self, fn: Callable[[], Any], name: str | None = None) -> _Job:
        """Run ``fn()`` on a thread; its ``future`` (of the running loop) is what it
        returns. ``name``: the sync handler ``fn`` calls (its time is kept, see QUICK)."""
        loop = asyncio.get_running_loop()
        back = getattr(loop, _BACK, None) or self._backs.get(loop) or self._back_for(loop)
        job = _Job(fn, back, loop.create_future(), name)
        with self._lock:
            if self._waking <= 0:
                self._wake()  # (first: a thread that cannot be made leaves no call behind)
            self._calls.append(job)
            self._watch(loop)
        return job

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """While a thread made is on its way to the queue, ``loop`` (whose calls wait) looks
        at it STARTING from now, unless it looks already. Called with the lock held."""
        if self._starting and loop not in self._watching and not loop.is_closed():
            self._watching.add(loop)
            loop.call_later(STARTING, self._recheck, loop)

    def watch_from(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._watch(loop)

    def _recheck(self, loop: asyncio.AbstractEventLoop) -> None:
        """Threads made that died before they came to the queue are counted no more, and
        what waits gets another (one slow to come, the GIL held by a handler, is alive)."""
        with self._lock:
            self._watching.discard(loop)
            dead = [t for t in self._starting if not t.is_alive()]
            for t in dead:
                del self._starting[t]
            self._made, self._waking = self._made - len(dead), self._waking - len(dead)
            if dead:
                logger.warning("{} thread(s) made for sync handlers died as they started (out "
                               "of memory?): {} call(s) waiting", len(dead), len(self._calls))
                if self._calls and self._waking <= 0:
                    try:
                        self._wake()
                    except Exception as exc:
                        logger.warning("{} sync handler call(s) wait for a thread: no more "
                                       "could be made ({})", len(self._calls), exc)
            self._watch(loop)

    def forget(self, job: _Job) -> None:
        """A call taken back before any thread took it: out of the queue (it would keep its
        loop referenced until a thread came to it)."""
        with self._lock, contextlib.suppress(ValueError):
            self._calls.remove(job)

    def _back_for(self, loop: asyncio.AbstractEventLoop) -> _Back:
        """Kept on the loop itself where it takes attributes: the answers it holds refer to
        the loop, so a loop that closed with one still undelivered is garbage with it (held in
        a mapping of loops, it would keep the loop alive for ever)."""
        back = _Back(loop)
        try:
            setattr(loop, _BACK, back)
        except AttributeError:  # a loop that takes none (a bare uvloop.loop.Loop): such a
            self._backs[loop] = back  # loop, closed with an answer undelivered, stays alive
        return back

    def _wake(self) -> None:
        """A thread to look at the queue: a sleeping one, else a new one (none past
        MAX_THREADS: the call waits for a busy one). Called with the lock held (held while a
        thread starts: another loop's call must not count on a thread whose start fails)."""
        if self._sleeping:
            self._sleeping.pop().release()  # (the one that slept last: its memory is warm)
            self._waking += 1
        elif self._made < MAX_THREADS:
            self._made += 1
            self._waking += 1  # (a new thread looks at the queue first)
            thread = threading.Thread(target=self._work, name=f"ceylon-handler-{self._made}",
                                      daemon=True)
            self._starting[thread] = None
            try:
                thread.start()
            except Exception:  # (no thread made: the call fails, saying so; a
                self._made -= 1  # KeyboardInterrupt as it started left one running)
                self._waking -= 1
                del self._starting[thread]
                raise

    def _next(self, woken: bool, bell: threading.Lock) -> _Job | None:
        """The next call for this thread; None: it sleeps (``bell`` wakes it)."""
        with self._lock:
            self._waking -= woken
            if not self._calls:
                self._sleeping.append(bell)
                return None
            job = self._calls.popleft()
            if self._calls and self._waking <= 0:
                try:
                    self._wake()
                except Exception as exc:  # they wait for a busy thread, or the next call
                    logger.warning("{} sync handler call(s) wait for a thread: no more could "
                                   "be made ({})", len(self._calls), exc)
                else:  # (made here, in a thread: the loop of a call that waits looks at it;
                    if self._starting:  # a wake-up each call otherwise, a review)
                        self._calls[0].back.watch(self)
            return job

    def _work(self) -> None:
        bell, woken = threading.Lock(), True
        bell.acquire()  # (held: acquiring it again sleeps until a wake releases it)
        with self._lock:
            self._starting.pop(threading.current_thread(), None)  # (at the queue now)
        while True:
            job = self._next(woken, bell)
            if job is None:
                bell.acquire()
                woken = True
                continue
            woken = False
            fn = job.take()
            if fn is None:  # cancelled before it started: it never will
                del job  # (an idle thread holds nothing of it: its future holds its loop)
                continue
            began = time.perf_counter()
            try:
                ok, value = True, fn()
            except BaseException as exc:  # SystemExit too: the task's failure, not ours
                ok, value = False, exc
            if job.name is not None:
                if ok and inspect.iscoroutine(value):  # (marked before _took finds it quick:
                    _AWAITS.add(job.name)  # never batched, as call() awaits it from now on)
                _took(job.name, time.perf_counter() - began)
            _count(-1)  # (before its future is done: whoever awaits it counts it ended)
            job.back.put(job, ok, value)
            del fn, job, value  # (an idle thread holds nothing of the last call)


_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # ceylon_net/
_BACK = "_ceylon_net_answers"  # the attribute of a loop that holds its _Back
_THREADS = _Threads()


def handler(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the handler of tasks naming ``name``."""
    if callable(name):  # (@handler with no name: it was given the function)
        raise ConfigError(f"@handler needs the name tasks call it by: @handler(\"name\") above "
                          f"{getattr(name, '__name__', 'the function')}")
    if not name or not isinstance(name, str):
        raise ConfigError("a handler needs a non-empty name")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _refuse_uncallable(name, fn)
        old = _HANDLERS.get(name)
        # (the same function again: its module imported twice, as __main__ and by name)
        if old is not None and old is not fn and _origin(old) != _origin(fn):
            raise ConfigError(f"handler {name!r} is registered twice: by {_where(old)} and "
                              f"by {_where(fn)}")
        _HANDLERS[name] = fn
        return fn

    return register


def _refuse_uncallable(name: str, fn: Any) -> None:
    """What a task could never run, refused as the module loads (ConfigError), not failed
    at every task (its name was advertised to the admin all the same)."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(f"handler {name!r}: {_where(fn)} is a generator function (it "
                          f"yields): its result would be a generator, which no message "
                          f"carries, and its body would never run; return a list")
    if not callable(fn):
        raise ConfigError(f"handler {name!r}: {type(fn).__name__} {fn!r:.60} cannot be "
                          f"called (a method: put @handler above @staticmethod, or register "
                          f"a plain function)")


def _origin(fn: Callable[..., Any]) -> tuple[str, str, int]:
    """Where a function was defined: the same again is its module imported twice (as
    __main__ and by name); two functions of one name in one file are two."""
    code = getattr(fn, "__code__", None)
    return (code.co_filename if code is not None else getattr(fn, "__module__", "?"),
            getattr(fn, "__qualname__", repr(fn)),
            code.co_firstlineno if code is not None else 0)


def _where(fn: Callable[..., Any]) -> str:
    """'process (mypkg/tasks.py, line 12)'."""
    code = getattr(fn, "__code__", None)
    place = f" ({code.co_filename}, line {code.co_firstlineno})" if code is not None else ""
    return f"{getattr(fn, '__qualname__', repr(fn))}{place}"


def registered() -> dict[str, Callable[..., Any]]:
    return dict(_HANDLERS)


def load_app(module: str) -> list[str]:
    """Import ``module`` (its @handler functions register themselves); returns the names."""
    if "/" in module or "\\" in module or (module.endswith(".py") and os.path.isfile(module)):
        name = module.removesuffix(".py").replace("\\", "/").rsplit("/", 1)[-1]
        raise ConfigError(f"--app {module}: give a module name, not a file: --app {name}, "
                          f"run from its directory (or with it on PYTHONPATH)")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"--app {module}: cannot import it: {exc}") from None
    except SystemExit as exc:  # (not the worker's exit: it would end it silently, code and all)
        raise ConfigError(f"--app {module}: importing it called sys.exit({exc.code!r}): a "
                          f"module to run handlers from must not exit") from None
    except KeyboardInterrupt:
        raise  # (Ctrl-C as it imports: the worker stops, 130)
    except BaseException as exc:  # the module itself raised (a bug in it, a SyntaxError;
        # a CancelledError of an asyncio.run() it made)
        raise ConfigError(_import_raised(module, exc)) from None
    return sorted(_HANDLERS)


def _import_raised(module: str, exc: BaseException) -> str:
    """What importing ``module`` raised, and the user's line last run (not ours: @handler
    raising on a name used twice); a SyntaxError says where itself."""
    where = [] if isinstance(exc, SyntaxError) else \
        [f for f in traceback.extract_tb(exc.__traceback__)
         if not f.filename.startswith(_OURS)][-1:]
    at = f" ({where[0].filename}, line {where[0].lineno})" if where else ""
    try:
        said = str(exc)
    except Exception as broken:  # (its own __str__ raised: a bug in the exception class)
        said = f"(its message cannot be shown: str() of it raised {type(broken).__name__})"
    at = "" if at[1:] in said else at  # (the error says it already)
    return f"--app {module}: importing it raised {type(exc).__name__}: {said}{at}"


async def call(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run handler ``name``: async ones on the loop, sync ones in a thread so the loop keeps
    its heartbeats going."""
    fn = _HANDLERS.get(name)
    if fn is None:
        raise LookupError(f"no handler {name!r} on this worker")
    # (called in the context its coroutine runs in: a plain function that returns one may
    # set some before it)
    context, looped = contextvars.copy_context(), on_loop(name)
    if looped:
        value = context.run(fn, *args, **kwargs)
    else:
        value = await outcome(_in_thread(functools.partial(context.run, _returned, fn, args,
                                                           kwargs), name))
    if inspect.iscoroutine(value):  # (a plain function that returns one: awaited, and on
        return snapshot(await _own_task(value, context))  # the loop from now on: _AWAITS)
    if inspect.isawaitable(value):  # (an object's __call__ that returns a future, say)
        value = await value
    return snapshot(value) if looped else value  # (a thread's value is its copy already)


def is_plain(name: str) -> bool:
    """Is ``name`` a registered handler that runs in a thread (a plain function)?"""
    return name in _HANDLERS and not on_loop(name)


async def _own_task(coro: Any, context: contextvars.Context | None = None) -> Any:
    """A handler's coroutine, run as an asyncio task of its own (in a copy of the caller's
    context, as any task is): what it does to "its" task (cancel itself; a cancel scope that
    leaves the task's cancel count raised, as anyio 3 does) and the context variables it
    sets end with it. Run in the slot's own task, they were carried to the slot's next
    tasks: the next cancel read as the worker stopping, the slot gone without a word. A
    cancel of the caller (the task cancelled, its time limit, the worker stopping) cancels
    it."""
    return await asyncio.get_running_loop().create_task(coro, context=context)


_PLAIN = frozenset((type(None), bool, int, float, str, bytes))


def snapshot(value: Any) -> Any:
    """A handler's return value as it is now, as the admin will read it: a copy, so that
    what the handler goes on changing (a list it keeps, a cache) is not what its task
    reports when its result leaves, a moment later. What the wire cannot carry is left as
    it is: the worker says why (see Worker._unsendable)."""
    if type(value) in _PLAIN:
        return value
    try:
        packed = wire.pack(value)
        # (our own bytes, read back whatever their size: the worker's limits, which may be
        # larger than the wire's defaults, are its own to check, see Worker._unsendable)
        size = len(packed)
        return wire.unpackb(packed, wire.Limits(size, size, size, size))
    except Exception:  # (LocalProtocolError, RemoteProtocolError, RecursionError)
        return value


def _returned(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """In a thread: call ``fn``, and take its value as it is when the call returns."""
    return snapshot(fn(*args, **kwargs))


def on_loop(name: str) -> bool:
    """Does handler ``name`` run on the event loop (async def, an object's async __call__,
    a plain function found to return a coroutine), where a blocking call stops everything
    else, the worker's heartbeats too?"""
    fn = _HANDLERS.get(name)
    return fn is not None and (name in _AWAITS or inspect.iscoroutinefunction(fn)
                               or inspect.iscoroutinefunction(type(fn).__call__))


def _in_thread(fn: Callable[[], Any], name: str | None) -> _Job:
    _count(1)
    try:
        return _THREADS.call(fn, name)
    except BaseException:
        _count(-1)
        raise


async def outcome(job: _Job) -> Any:
    """What the thread call ``job`` returns (or raises). Cancelled before a thread took it,
    it never runs; cancelled as it runs, the task's runner hears of the thread left running
    (THREADS_LEFT)."""
    try:
        return await job.future
    except asyncio.CancelledError:
        if _withdraw(job):  # no thread had it yet: it will not run at all
            raise
        left = THREADS_LEFT.get()
        if left is not None and not job.delivered:  # its thread runs on: the slot waits
            job.future = asyncio.get_running_loop().create_future()
            left.append(job.future)
        raise


def _withdraw(job: _Job) -> bool:
    """Take back a thread call no thread took yet (it never runs): True if so."""
    if job.take() is None:
        return False
    _THREADS.forget(job)
    _count(-1)
    return True


class Claim:
    """One call of a :class:`Batch`. ``take()`` gives its arguments to whoever asks first:
    the batch's thread, to run it, or the worker's loop, taking it back (the task was
    cancelled, given back, or waits too long behind a slow call) so it never runs here.
    Once run: ``ok`` and ``value`` (the return value, or what it raised), ``seconds``."""

    __slots__ = ("context", "fn", "name", "ok", "ran", "seconds", "todo", "value")

    def __init__(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.name, self.fn, self.todo = name, _HANDLERS[name], [(args, kwargs)]
        self.ran, self.ok, self.value, self.seconds = False, False, None, 0.0
        self.context = contextvars.copy_context()  # (each call its own, as to_thread's)

    def take(self) -> tuple[list[Any], dict[str, Any]] | None:
        try:
            return self.todo.pop()  # (one step for Python's threads: one taker gets it)
        except IndexError:
            return None

    def run(self) -> None:
        """In the batch's thread: run the call unless it was taken back."""
        call = self.take()
        if call is None:
            return
        began = time.perf_counter()
        try:
            self.ok, self.value = True, snapshot(self.context.run(self.fn, *call[0],
                                                                  **call[1]))
        except BaseException as exc:  # SystemExit too: the task's failure, not ours
            self.value = _failure(exc)
        finally:
            self.seconds = time.perf_counter() - began
            self.ran = True  # (last: the loop reads the outcome once it sees this)
        _took(self.name, self.seconds)


class Batch:
    """Calls of quick sync handlers run one after another in one thread call: ``claims``,
    in order; ``job``, the thread call (its future is done when all ran or were taken
    back)."""

    def __init__(self, calls: list[tuple[str, list[Any], dict[str, Any]]],
                 budget: float, start_by: float = math.inf) -> None:
        self.claims = [Claim(name, args, kwargs) for name, args, kwargs in calls]
        self.job = _in_thread(functools.partial(self._run, budget, start_by), None)

    def _run(self, budget: float, start_by: float) -> None:
        """The calls one after another; none started once ``budget`` seconds have gone by
        since the first started (it turned out slow), nor after ``start_by`` (monotonic: the
        time its worker knew itself in touch with the admin until; the process was paused,
        SIGSTOP, a VM frozen, and the admin may have given them to another worker): the rest
        go back to the worker's queue, whose next moves it decides with what it hears."""
        until = time.monotonic() + budget
        for claim in self.claims:
            if time.monotonic() > start_by:
                return
            claim.run()
            if time.monotonic() > until:
                return

    def drop(self) -> None:
        """Nothing more of it is to run (its runner stops): what no thread took is not run."""
        for claim in self.claims:
            claim.take()
        _withdraw(self.job)
