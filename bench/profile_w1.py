"""Where the admin's time goes in W1: one W1 run (in-process admin, K ``ceylon-worker``
processes) under py-spy (sampling, low overhead) or cProfile (deterministic, inflates small
calls), printing the top functions by self and by cumulative time, and the CPU seconds each
process used during the run (on a 2-core machine the admin and its workers share the cores).

    .venv/bin/python bench/profile_w1.py                       # py-spy, 100k tasks, 4 workers
    .venv/bin/python bench/profile_w1.py --tool cprofile --tasks 20000
    .venv/bin/python bench/profile_w1.py --out /tmp/prof       # keep the raw profiles
    .venv/bin/python bench/profile_w1.py --worker              # py-spy on a worker instead

py-spy: ``.venv/bin/pip install py-spy`` (root, or ptrace allowed, to attach to a process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import harness as bench  # the suite's harness: the same W1 as bench/run.py
from loguru import logger

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# On every stack: the script and asyncio's entry points say nothing about where time goes.
PLUMBING = re.compile(r"^(<module>|main|run|Runner\.run|BaseEventLoop\.run_until_complete|"
                      r"BaseEventLoop\.run_forever) \(")


def _frame_name(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def summarize_collapsed(path: Path, top: int, whose: str = "the admin process") -> str:
    """Top functions by self and by inclusive samples from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            if not PLUMBING.match(f):
                total[f] += n
    if not samples:
        return "py-spy collected no samples"
    out = [f"{samples} samples of {whose}'s Python threads (idle waits excluded)", "",
           f"top {top} by self time (the function itself was running):"]
    out += [f"  {100 * n / samples:5.1f} %  {f}" for f, n in own.most_common(top)]
    out += ["", f"top {top} by cumulative time (the function was on the stack):"]
    out += [f"  {100 * n / samples:5.1f} %  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


def summarize_pstats(prof: cProfile.Profile, top: int) -> str:
    out = []
    for key, title in (("tottime", "self"), ("cumulative", "cumulative")):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        text = buf.getvalue()
        start = text.find("   ncalls")
        out.append(f"top {top} by {title} time (cProfile):\n{text[start:].rstrip()}")
    return "\n\n".join(out)


async def profile_w1(args: argparse.Namespace, outdir: Path) -> None:
    async with bench.Cluster(workdir=outdir) as cluster:
        admin = await bench.start_admin(cluster, prefetch=args.prefetch)
        procs: list[bench.Proc] = []
        spy = None
        try:
            procs = await bench.spawn_workers(cluster, args.workers, args.window,
                                              app=args.handler != "none")
            await bench.wait_connected(admin, procs, args.workers)
            make = {"none": bench.noop, "sync": bench.sync_noop, "async": bench.async_noop}
            batch = [make[args.handler](i) for i in range(args.tasks)]
            raw = outdir / "w1.pyspy.txt"
            prof = cProfile.Profile() if args.tool == "cprofile" else None
            if args.tool == "py-spy":
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                target = procs[0].process.pid if args.worker else os.getpid()
                argv = [exe, "record", "--pid", str(target), "--rate",
                        str(args.rate), "--format", "raw", "--nolineno", "--output", str(raw)]
                if not (args.blocking or args.native):  # --native needs a paused process
                    argv.append("--nonblocking")
                if args.native:
                    argv.append("--native")
                spy = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
                bench.STARTED.append((spy.pid, True))
                await asyncio.sleep(1.0)  # attached and sampling
                if spy.returncode is not None:
                    err = (await spy.stderr.read()).decode(errors="replace")
                    raise RuntimeError(f"py-spy exited {spy.returncode}: {err.strip()}")
            pids = {"admin (this process)": os.getpid(),
                    **{p.name: p.process.pid for p in procs}}
            cpu0 = {k: bench.proc_cpu_seconds(pid) for k, pid in pids.items()}
            t0 = time.perf_counter()
            if prof is not None:
                prof.enable()
            report = await asyncio.wait_for(admin.run_tasks(batch), 60 + args.tasks / 100)
            if prof is not None:
                prof.disable()
            wall = time.perf_counter() - t0
            cpu1 = {k: bench.proc_cpu_seconds(pid) for k, pid in pids.items()}
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spy.wait(), 60)
        except BaseException:
            bench.report_logs(procs)
            raise
        finally:
            if spy is not None and spy.returncode is None:
                spy.kill()
                await spy.wait()
            await bench.close_admin(admin)
    done = sum(t.success for t in report.tasks)
    prefetch = "" if args.prefetch is None else f", --prefetch {args.prefetch}"
    print(f"W1 N={args.tasks:,} K={args.workers} concurrency {args.window}{prefetch}: "
          f"{wall:.2f} s, "
          f"{args.tasks / wall:,.0f} tasks/s ({done} succeeded) under {args.tool}")
    print(f"\nCPU seconds during the run (wall {wall:.2f} s, {os.cpu_count()} CPUs):")
    for k in pids:
        used = cpu1[k] - cpu0[k]
        print(f"  {k:<24} {used:7.2f} s  {100 * used / wall:5.1f} % of one core")
    print()
    if prof is not None:
        prof.dump_stats(outdir / "w1.pstats")
        print(summarize_pstats(prof, args.top))
    else:
        print(summarize_collapsed(raw, args.top,
                                  f"worker {procs[0].name}" if args.worker else "the admin"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", choices=("py-spy", "cprofile"), default="py-spy")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--window", type=int, default=8, help="each worker's --concurrency")
    p.add_argument("--handler", choices=("none", "sync", "async"), default="none",
                   help="the tasks' handler: none (built-in no-op), or bench/bench_handlers.py's "
                        "sync or async no-op (as W1's handler variants and the peers run)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="the admin's --prefetch (default: its default, adaptive; 0: off)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--blocking", action="store_true",
                   help="py-spy pauses the process per sample (exact, slower)")
    p.add_argument("--native", action="store_true",
                   help="py-spy also samples C frames (pyzmq, libzmq, msgpack); implies "
                        "--blocking")
    p.add_argument("--worker", action="store_true",
                   help="py-spy samples the first worker process, not the admin (py-spy only)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep the raw profile here (default: a temp dir)")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    code = 0
    with tempfile.TemporaryDirectory(prefix="ceylon-prof-") as tmp:
        outdir = args.out or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        try:
            asyncio.run(profile_w1(args, outdir))
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:
            print(f"profile failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        finally:
            bench.reap_leftovers()
        if args.out:
            print(f"\nraw profile kept in {outdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
