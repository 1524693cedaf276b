"""Handlers for the tests of a worker whose event loop is held by user code."""

import asyncio
import time

from ceylon_net import handler


@handler("stall")
async def stall(seconds: float) -> float:
    """An async handler that blocks (a plain sleep): the event loop stops meanwhile."""
    time.sleep(seconds)
    return seconds


@handler("doze")
async def doze(seconds: float) -> float:
    """An async handler that holds nothing: it awaits."""
    await asyncio.sleep(seconds)
    return seconds


@handler("nap")
def nap(seconds: float) -> float:
    """A plain one that sleeps as long: in a thread, the loop goes on."""
    time.sleep(seconds)
    return seconds


@handler("gil_hold")
def gil_hold(seconds: float) -> int:
    """A plain one whose last call into C holds the GIL for ``seconds`` or more (big-integer
    arithmetic, grown until one call takes that long): the loop stops meanwhile, thread or
    not. The exponent it got to."""
    n = 1 << 14
    while True:
        began = time.monotonic()
        (3 ** n).bit_length()
        took = time.monotonic() - began
        if took >= seconds:
            return n
        n *= 4 if took < seconds / 8 else 2
