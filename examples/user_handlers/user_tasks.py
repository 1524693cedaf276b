"""Handlers for ceylon-worker --app user_tasks: one CPU-bound, one I/O-bound.

Run a worker from this directory (or with it on PYTHONPATH):
    ceylon-worker --name cpu-1 --app user_tasks --concurrency 2 --admin-peer 127.0.0.1
"""

import asyncio
from pathlib import Path

from ceylon_net import handler


@handler("count_primes")
def count_primes(below: int) -> int:
    """CPU-bound (runs in a worker thread): how many primes are < below (a sieve)."""
    if below < 3:
        return 0
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(below**0.5) + 1):
        if sieve[n]:
            sieve[n * n::n] = bytes(len(range(n * n, below, n)))
    return sum(sieve)


@handler("word_count")
async def word_count(path: str) -> dict:
    """I/O-bound (async, on the worker's loop): words and lines of a text file."""
    text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    return {"path": Path(path).name, "words": len(text.split()), "lines": text.count("\n")}
