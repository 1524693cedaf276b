"""Broadcast throughput: messages a second delivered to K subscriber processes, ours beside the
raw pyzmq PUB ceiling, in the same run.

    .venv/bin/python bench/broadcast.py [--count 50000] [--subscribers 4] [--runs 3]

Ceiling: a bare pyzmq PUB (blocking sends, no high-water mark, so nothing is dropped) and K
bare SUB processes that count. The other design, for the trade: a bare ROUTER sending each
message once per subscriber (K DEALER processes), which is what delivering broadcasts over
ROUTER->DEALER would cost at best. Ours: an in-process Admin calling ``broadcast_data(Note(i))``
as fast as it can, and K worker processes whose ``@on_message(type=Note)`` handler counts: every
broadcast numbered, kept for repairs, delivered once and in order. Both: from the first send
to the moment the last subscriber has all of them (each subscriber notes that moment on the
system-wide monotonic clock). Delivered/s = K x count / that time. Medians of --runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq
from harness import STARTED, kill_group, raise_fd_limit
from loguru import logger

from ceylon_net import Admin, AdminSettings, Worker, message, on_message
from ceylon_net.dev.testing import free_port, wait_until

PAYLOAD = "x" * 32  # a short text per message, as a small user message would carry


@message(name="bench.Note")
class Note:
    n: int
    text: str = ""


# ---------------------------------------------------------------------------- subscribers


def report_done(out: str, got: int) -> None:
    """When this subscriber had them all (written whole: the bench polls for the file)."""
    tmp = Path(out + ".tmp")
    tmp.write_text(json.dumps({"done": time.monotonic(), "got": got}))
    tmp.rename(out)


def raw_subscriber(port: int, count: int, out: str, kind: int = zmq.SUB) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(kind)
    sub.setsockopt(zmq.RCVHWM, 0)
    if kind == zmq.SUB:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    if kind == zmq.DEALER:
        sub.send(b"hello")  # the ROUTER learns our identity
    got = 0
    while True:
        frames = sub.recv_multipart()
        if frames[0] == b"probe":
            Path(out + ".ready").touch()
            continue
        got += 1
        if got == count:
            report_done(out, got)
            return


class Counter(Worker):
    def __init__(self, name: str, count: int, out: str, **kw) -> None:
        super().__init__(name, **kw)
        self.count, self.out, self.got = count, out, 0

    @on_message(type=Note)
    async def on_note(self, note: Note) -> None:
        self.got += 1
        if self.got == self.count:
            report_done(self.out, self.got)


def ceylon_subscriber(port: int, count: int, out: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    asyncio.run(Counter(Path(out).stem, count, out, admin_port=port).arun())


def spawn(role: str, port: int, count: int, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, role, str(port), str(count), str(out)],
                            start_new_session=True)
    STARTED.append((proc.pid, True))
    return proc


def finished(outs: list[Path]) -> float | None:
    """When the last subscriber had them all, or None while one has not."""
    if not all(o.exists() for o in outs):
        return None
    return max(json.loads(o.read_text())["done"] for o in outs)


# ---------------------------------------------------------------------------- the two runs


def run_raw(count: int, k: int, workdir: Path, fan_out: bool = False) -> float:
    """The raw ceiling: PUB to K SUBs, or (``fan_out``) ROUTER sending to K DEALERs."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER if fan_out else zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    role = "raw-router" if fan_out else "raw"
    outs = [workdir / f"{role}-{i}.json" for i in range(k)]
    procs = [spawn(role, port, count, o) for o in outs]
    try:
        peers = [sock.recv_multipart()[0] for _ in range(k)] if fan_out else [b""]
        deadline = time.monotonic() + 30
        while not all(Path(f"{o}.ready").exists() for o in outs):  # the slow joiners
            for peer in peers:
                sock.send_multipart([peer, b"probe"] if fan_out else [b"probe"])
            time.sleep(0.01)
            if time.monotonic() > deadline:
                raise TimeoutError("raw subscribers did not join")
        payload = msgpack.packb([0, PAYLOAD])
        t0 = time.monotonic()
        for _ in range(count):
            for peer in peers:
                sock.send_multipart([peer, b"note", payload] if fan_out else [b"note", payload])
        while (done := finished(outs)) is None:
            if time.monotonic() > t0 + 120:
                raise TimeoutError("raw subscribers did not get everything")
            time.sleep(0.005)
        return k * count / (done - t0)
    finally:
        for p in procs:
            kill_group(p.pid)
            p.wait()
        sock.close(0)
        ctx.term()


async def run_ours(count: int, k: int, workdir: Path) -> float:
    admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=free_port()))
    await admin.start()
    outs = [workdir / f"ceylon-{i}.json" for i in range(k)]
    procs = [spawn("ceylon", admin.port, count, o) for o in outs]
    try:
        await wait_until(lambda: len(admin.get_connected_agents()) == k, 30, "subscribers")
        t0 = time.monotonic()
        for i in range(count):
            await admin.broadcast_data(Note(i, PAYLOAD))
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the admin's own loops breathe
        await wait_until(lambda: finished(outs) is not None, 120, "every subscriber",
                         interval=0.005)
        return k * count / (finished(outs) - t0)
    finally:
        await admin.close("benchmark over")
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                kill_group(p.pid)
                p.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=50_000, help="broadcasts per run")
    p.add_argument("--subscribers", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    raise_fd_limit()
    ceiling, fan_out, ours = [], [], []
    with tempfile.TemporaryDirectory(prefix="ceylon-bcast-") as tmp:
        for run in range(1, args.runs + 1):
            workdir = Path(tmp) / f"run{run}"
            workdir.mkdir()
            ceiling.append(run_raw(args.count, args.subscribers, workdir))
            fan_out.append(run_raw(args.count, args.subscribers, workdir, fan_out=True))
            ours.append(asyncio.run(run_ours(args.count, args.subscribers, workdir)))
            print(f"[run {run}/{args.runs}] delivered/s: raw PUB {ceiling[-1]:,.0f}, raw ROUTER "
                  f"fan-out {fan_out[-1]:,.0f}, ceylon_net {ours[-1]:,.0f} "
                  f"({ours[-1] / ceiling[-1]:.3f} of raw PUB)", flush=True)
    ratios = [o / c for o, c in zip(ours, ceiling, strict=True)]
    med = statistics.median
    print(f"\n{args.count:,} broadcasts to {args.subscribers} subscriber processes, medians of "
          f"{args.runs}, delivered/s:\n"
          f"  raw pyzmq PUB (ceiling)                     {med(ceiling):>12,.0f}\n"
          f"  raw pyzmq ROUTER, one send per subscriber   {med(fan_out):>12,.0f}\n"
          f"  ceylon_net broadcast_data (PUB + repairs)   {med(ours):>12,.0f}\n"
          f"  ceylon_net / raw PUB, per run               {med(ratios):>12.3f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("raw", "raw-router", "ceylon"):
        role, port, count, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        if role == "ceylon":
            ceylon_subscriber(port, count, out)
        else:
            raw_subscriber(port, count, out, zmq.SUB if role == "raw" else zmq.DEALER)
        sys.exit(0)
    sys.exit(main())
