"""Handlers for the tests of a worker whose event loop is held by user code."""

import time

from ceylon_net import handler


@handler("stall")
async def stall(seconds: float) -> float:
    """An async handler that blocks (a plain sleep): the event loop stops meanwhile."""
    time.sleep(seconds)
    return seconds


@handler("nap")
def nap(seconds: float) -> float:
    """A plain one that sleeps as long: in a thread, the loop goes on."""
    time.sleep(seconds)
    return seconds
