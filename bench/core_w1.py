"""The admin's own cost per task in W1, without sockets or other processes: AdminState driven
by simulated workers in this process (frames in, commands out), timing only what the admin
process does (its state's decisions, and encoding what it sends). Steadier than W1 on a noisy
machine, so changes to the hot path can be compared run against run.

    .venv/bin/python bench/core_w1.py                  # 100k tasks, 4 workers x 8, 5 runs
    .venv/bin/python bench/core_w1.py --tasks 20000 --workers 1 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.admin_state import AdminState
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.settings import AdminSettings
from ceylon_net.wire import Hello, Kind


def frames(kind: bytes, msg, sender: str) -> list[bytes]:
    type_, payload = wire.encode_payload(msg) if not isinstance(msg, list) else (
        "TaskResult", wire.pack_batch(msg))
    return wire.encode_frames(kind, wire.make_header("default", sender, type_), payload)


def registered(workers: int, window: int, prefetch: int | None = None
               ) -> tuple[AdminState, dict[str, bytes]]:
    """An admin state with ``workers`` simulated workers of concurrency ``window`` registered
    and heard from: the state, and each worker's peer by name."""
    st = AdminState(AdminSettings(port=0, prefetch=prefetch), 0.0)
    st.started(0.0, 8000, 8001)
    peers = {f"w{i}": f"w{i}".encode() for i in range(workers)}
    for name, peer in peers.items():
        st.receive(peer, frames(Kind.HELLO, Hello(name, "default", 10, window), name), "", 0.0)
        st.receive(peer, frames(Kind.HEARTBEAT, wire.Heartbeat([], True, 0, 0, []), name), "",
                   0.0)
    return st, peers


def carry_out(cmds: list[c.Command]) -> tuple[list[tuple[bytes, bytes]], int]:
    """What the edge does with the admin's commands that costs it: encode the assignments
    (as sent) and acknowledgements. Returns the assignments sent, as (peer, payload), and
    how many tasks finished."""
    sent, finished = [], 0
    for cmd in cmds:
        if type(cmd) is c.Assign:
            payload = wire.pack_batch(cmd.assignments)
            wire.encode_frames(Kind.ASSIGN, wire.make_header("default", "admin",
                                                             "TaskAssignment"), payload)
            sent.append((cmd.peer, payload))
        elif type(cmd) is c.Acknowledge:
            wire.pack(wire.Ack(cmd.results))
        elif type(cmd) is c.Finished:
            finished += 1
    return sent, finished


def with_ahead(st: AdminState, cmds: list[c.Command], now: float) -> list[c.Command]:
    """The round's commands and, when it asks for it, the round that queues tasks ahead
    (a timer of no time: the edge runs it straight after)."""
    if any(type(cmd) is c.Timer and cmd.key == ("ahead",) for cmd in cmds):
        cmds = [*cmds, *st.timer(("ahead",), now)]
    return cmds


def one_run(tasks: int, workers: int, window: int, prefetch: int | None) -> float:
    """Seconds the admin spent on ``tasks`` no-op tasks, from submit to the last result."""
    st, _ = registered(workers, window, prefetch)
    now = 0.0
    batch = [Task(i, "noop", 1) for i in range(tasks)]
    spent = 0.0
    t0 = time.perf_counter()
    cmds = with_ahead(st, st.submit(batch, now=now), now)
    spent += time.perf_counter() - t0
    inbox: list[tuple[bytes, list[bytes], str]] = []
    done = 0
    while done < tasks:
        t0 = time.perf_counter()
        sent, finished = carry_out(cmds)
        done += finished
        spent += time.perf_counter() - t0
        for peer, payload in sent:  # the workers (not timed): run them, report
            got = wire.unpack_batch(TaskAssignment, payload)
            name = got[0].worker
            results = [TaskResult(a.task.id, name, True, 0.00002, attempt=a.attempt)
                       for a in got]
            inbox.append((peer, frames(Kind.RESULT, results, name), ""))
        now += 0.001
        t0 = time.perf_counter()
        cmds = st.receive_many(inbox, now)
        spent += time.perf_counter() - t0
        inbox = []
        if not cmds and done < tasks:
            raise RuntimeError(f"stuck at {done}/{tasks}")
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--window", type=int, default=8, help="each worker's concurrency")
    p.add_argument("--prefetch", type=int, default=None, help="default: adaptive")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    each = [one_run(args.tasks, args.workers, args.window, args.prefetch)
            for _ in range(args.runs)]
    per_task = [s * 1e6 / args.tasks for s in each]
    print(f"admin core, W1 N={args.tasks:,} K={args.workers} x {args.window}: median "
          f"{statistics.median(per_task):.2f} µs/task ({args.tasks / statistics.median(each):,.0f}"
          f" tasks/s if nothing else ran); runs: {', '.join(f'{x:.2f}' for x in per_task)}")


if __name__ == "__main__":
    main()
