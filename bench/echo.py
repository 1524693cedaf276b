"""The floor under W2 on this stack: a bare zmq.asyncio round trip, asyncio on both sides (a
ROUTER in this process, a DEALER in another), with frames the size of a task's assignment and
result, and nothing else: no scheduling, no bookkeeping. Beside it, the time a send takes
inside the worker. Compare W2's p50 with this, measured in the same minute.

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

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ceylon_net.edge.transport import free_port

ASSIGNMENT = [b"\x02", b"h" * 60, b"a" * 80]  # kind, header, payload: about W2's sizes
RESULT = [b"\x01", b"h" * 60, b"r" * 80]
WARM_UP = 300


def _worker(port: int, count: int, sends: mp.Queue) -> None:
    async def serve() -> None:
        ctx = zmq.asyncio.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        await dealer.send(b"ready")
        took = []
        for _ in range(count):
            await dealer.recv_multipart()
            t0 = time.perf_counter()
            dealer.send_multipart(RESULT)  # done at once: a DEALER's send does not wait
            took.append(time.perf_counter() - t0)
        sends.put(statistics.median(took[WARM_UP:]))
        dealer.close(0)
        ctx.term()

    asyncio.run(serve())


async def one_run(count: int) -> tuple[float, float]:
    """(round trip p50, the worker's send p50), seconds."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    port = free_port()
    router.bind(f"tcp://127.0.0.1:{port}")
    sends: mp.Queue = mp.Queue()
    proc = mp.Process(target=_worker, args=(port, count, sends))
    proc.start()
    try:
        ident = (await asyncio.wait_for(router.recv_multipart(), 30))[0]
        rtt = []
        for _ in range(count):
            t0 = time.perf_counter()
            await router.send_multipart([ident, *ASSIGNMENT])
            await asyncio.wait_for(router.recv_multipart(), 30)
            rtt.append(time.perf_counter() - t0)
        send = sends.get(timeout=30)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        router.close(0)
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
    runs = [asyncio.run(one_run(args.count)) for _ in range(args.runs)]
    rtts = [r * 1e6 for r, _ in runs]
    sends = [s * 1e6 for _, s in runs]
    print(f"bare zmq.asyncio echo: round trip p50 {statistics.median(rtts):.0f} µs (runs: "
          f"{', '.join(f'{x:.0f}' for x in rtts)}); the worker's send p50 "
          f"{statistics.median(sends):.1f} µs; rtt_p50_us={statistics.median(rtts):.1f}")


if __name__ == "__main__":
    main()
