"""Handlers the tests load with ceylon-worker --app demo_handlers."""

import asyncio
import contextlib
import hashlib
import os
import time

from ceylon_net import handler


@handler("sha256")
def sha256_rounds(text: str, rounds: int) -> str:
    """CPU-bound: hash ``rounds`` times."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@handler("echo_later")
async def echo_later(value, delay: float = 0.01):
    await asyncio.sleep(delay)
    return {"echo": value}


@handler("busy")
def busy(seconds: float) -> float:
    """Blocks its thread for ``seconds`` (the event loop must keep heartbeating)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


@handler("hang")
def hang(seconds: float) -> float:
    """Blocks its thread, idle, for ``seconds`` (a hung call: a thread cannot be stopped)."""
    time.sleep(seconds)
    return seconds


@handler("hold")
def hold(flag: str, seconds: float = 60.0) -> bool:
    """Blocks its thread until the file ``flag`` exists (at most ``seconds``): a hung call
    the test ends when it chooses. True if the flag came."""
    end = time.monotonic() + seconds
    while not os.path.exists(flag) and time.monotonic() < end:
        time.sleep(0.01)
    return os.path.exists(flag)


@handler("hold_and_note")
def hold_and_note(flag: str, notes: str, key: int) -> int:
    """``hold(flag)``, then a line ``key`` added to the file ``notes``: how often each ran."""
    hold(flag)
    with open(notes, "a") as f:
        f.write(f"{key}\n")
    return key


@handler("exit_behind")
async def exit_behind(what: str) -> str:
    """Starts a background task (a library's, say) that raises SystemExit(5), or
    KeyboardInterrupt: ``what``; returns at once."""
    async def background() -> None:
        raise SystemExit(5) if what == "exit" else KeyboardInterrupt("from a background task")

    asyncio.get_running_loop().create_task(background())
    await asyncio.sleep(0.05)
    return "returned"


@handler("deaf")
async def deaf(seconds: float) -> float:
    """Sleeps ``seconds`` and will not be stopped: it catches every cancellation."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(end - time.monotonic())
    return seconds


@handler("boom")
def boom(message: str) -> None:
    raise ValueError(message)


@handler("die")
def die() -> None:
    """Kills the worker process outright: a poison task."""
    os._exit(17)


_running = 0
_peak = 0


@handler("overlap")
async def overlap(delay: float = 0.05) -> int:
    """Sleeps ``delay`` s; returns the most of these this worker has had running at once."""
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        await asyncio.sleep(delay)
    finally:
        _running -= 1
    return _peak


@handler("raw_bytes")
def raw_bytes() -> bytes:
    """Returns what msgpack carries and JSON does not."""
    return b"\x00\x01"


@handler("sized")
def sized(n: int) -> str:
    """A return value of ``n`` characters."""
    return "x" * n
