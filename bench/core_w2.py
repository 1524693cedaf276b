"""The admin's own cost of a one-task round, as in W2 (one ``execute()`` at a time), without
sockets: AdminState driven by simulated workers in this process (one, unless --workers),
timing the submit (with encoding the assignment) and the receive of the result (with
encoding the acknowledgement).
Full garbage collections are held off as the running admin holds them off
(``ceylon_net/edge/collector.py``).

    .venv/bin/python bench/core_w2.py                  # 5 runs of 5,000 rounds
    .venv/bin/python bench/core_w2.py --rounds 20000 --runs 3
    .venv/bin/python bench/core_w2.py --workers 1000 --rounds 1000   # among many workers
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core_w1 import carry_out, frames, registered

from ceylon_net import wire
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.edge.collector import FullCollections
from ceylon_net.wire import Kind


def one_run(rounds: int, workers: int = 1) -> tuple[float, float]:
    """Seconds a round spent in (submit, receive), averaged over ``rounds``; ``workers``
    idle workers of one slot connected, the task going to whichever the admin picks."""
    st, _ = registered(workers, 1)
    now = 0.0
    submit = receive = 0.0
    for i in range(rounds):
        now += 0.0005
        t0 = time.perf_counter()
        sent, _ = carry_out(st.submit([Task(i, "noop", 1)], now=now, forgettable=True))
        submit += time.perf_counter() - t0
        if not sent:
            raise RuntimeError(f"round {i}: the task was not assigned")
        peer = sent[0][0]
        got = wire.unpack_batch(TaskAssignment, sent[0][1])[0]  # the worker (not timed)
        result = frames(Kind.RESULT, [TaskResult(got.task.id, got.worker, True, 0.00002,
                                                 attempt=got.attempt)], got.worker)
        now += 0.0005
        t0 = time.perf_counter()
        carry_out(st.receive_many([(peer, result, "")], now))
        receive += time.perf_counter() - t0
    return submit / rounds, receive / rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workers", type=int, default=1, help="idle workers connected (default 1)")
    args = p.parse_args()
    collections = FullCollections()
    collections.install()
    try:
        runs = [one_run(args.rounds, args.workers) for _ in range(args.runs)]
    finally:
        collections.uninstall()
        gc.collect()
    subs = [s * 1e6 for s, _ in runs]
    recs = [r * 1e6 for _, r in runs]
    both = [s + r for s, r in zip(subs, recs, strict=True)]
    print(f"admin core, one task a round, {args.workers:,} worker(s): median "
          f"{statistics.median(both):.1f} µs a round "
          f"(submit {statistics.median(subs):.1f}, receive {statistics.median(recs):.1f}); "
          f"runs: {', '.join(f'{x:.1f}' for x in both)}")


if __name__ == "__main__":
    main()
