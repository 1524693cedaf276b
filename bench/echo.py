"""The floor under W2 on this stack: a bare asyncio round trip, asyncio on both sides (a
ROUTER in this process, a DEALER in another), with frames the size of a task's assignment and
result, and nothing else: no scheduling, no bookkeeping. Each side waits for its socket as our
admin and workers do (``ceylon_net.edge.transport._Watched``, written again here in a few
lines): plain pyzmq sockets read with DONTWAIT, woken by the event loop's reader on the
socket's descriptor. Beside it, the same echo through zmq.asyncio's futures (what our sockets
used until 2026-12-07), and the time a send takes inside the worker. Compare W2's p50 with the
first, measured in the same minute.

    .venv/bin/python bench/echo.py                  # 3 runs of 3,000 round trips
    .venv/bin/python bench/echo.py --count 10000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ceylon_net.edge.transport import free_port

ASSIGNMENT = [b"\x02", b"h" * 60, b"a" * 80]  # kind, header, payload: about W2's sizes
RESULT = [b"\x01", b"h" * 60, b"r" * 80]
WARM_UP = 300


class Reader:
    """recv_multipart on a plain socket, waiting on the event loop's reader of its
    descriptor (ZeroMQ's descriptor is edge-like: the events are read before each wait)."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self.sock = sock
        self.fut: asyncio.Future[None] | None = None
        asyncio.get_running_loop().add_reader(sock.FD, self._wake)

    def _wake(self) -> None:
        if self.fut is not None and not self.fut.done() and self.sock.get(zmq.EVENTS) & zmq.POLLIN:
            self.fut.set_result(None)

    async def recv_multipart(self) -> list[bytes]:
        while not self.sock.get(zmq.EVENTS) & zmq.POLLIN:
            self.fut = asyncio.get_running_loop().create_future()
            await self.fut
        return self.sock.recv_multipart(zmq.DONTWAIT)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.FD)
        self.sock.close(0)


def _worker(port: int, count: int, futures: bool, sends: mp.Queue) -> None:
    async def serve() -> None:
        ctx = zmq.asyncio.Context() if futures else zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{port}")
        dealer: Any = sock if futures else Reader(sock)
        sock.send(b"ready")
        took = []
        for _ in range(count):
            await dealer.recv_multipart()
            t0 = time.perf_counter()
            sock.send_multipart(RESULT, flags=zmq.DONTWAIT)  # (a DEALER's send does not wait)
            took.append(time.perf_counter() - t0)
        sends.put(statistics.median(took[WARM_UP:]))
        dealer.close(0) if futures else dealer.close()
        ctx.term()

    asyncio.run(serve())


async def one_run(count: int, futures: bool) -> tuple[float, float]:
    """(round trip p50, the worker's send p50), seconds; ``futures``: through zmq.asyncio."""
    ctx = zmq.asyncio.Context() if futures else zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = free_port()
    sock.bind(f"tcp://127.0.0.1:{port}")
    router: Any = sock if futures else Reader(sock)
    sends: mp.Queue = mp.Queue()
    proc = mp.Process(target=_worker, args=(port, count, futures, sends))
    proc.start()
    try:
        ident = (await asyncio.wait_for(router.recv_multipart(), 30))[0]
        rtt = []
        for _ in range(count):
            t0 = time.perf_counter()
            sock.send_multipart([ident, *ASSIGNMENT], flags=zmq.DONTWAIT)
            await asyncio.wait_for(router.recv_multipart(), 30)
            rtt.append(time.perf_counter() - t0)
        send = sends.get(timeout=30)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        router.close(0) if futures else router.close()
        ctx.term()
    return statistics.median(rtt[WARM_UP:]), send


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3000, help="round trips a run (first 300 "
                                                               "are warm-up)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if args.count <= WARM_UP:
        p.error(f"--count must exceed the {WARM_UP} warm-up round trips")
    runs = [(asyncio.run(one_run(args.count, False)), asyncio.run(one_run(args.count, True)))
            for _ in range(args.runs)]
    rtts = [r * 1e6 for (r, _), _ in runs]
    futs = [r * 1e6 for _, (r, _) in runs]
    sends = [s * 1e6 for (_, s), _ in runs]
    print(f"bare asyncio echo, the loop's reader: round trip p50 {statistics.median(rtts):.0f} "
          f"µs (runs: {', '.join(f'{x:.0f}' for x in rtts)}); through zmq.asyncio's futures "
          f"{statistics.median(futs):.0f} µs; the worker's send p50 "
          f"{statistics.median(sends):.1f} µs; rtt_p50_us={statistics.median(rtts):.1f} "
          f"futures_p50_us={statistics.median(futs):.1f}")


if __name__ == "__main__":
    main()
