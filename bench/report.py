"""The report: ratios taken within each run, the targets checked on the medians, the table,
and the JSON file."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Results, Sizes, fmt_num, fmt_one, fmt_pct, fmt_ratio
from workloads import w1_key

PEERS = (("dask", "Dask"), ("celery", "Celery"), ("ray", "Ray"))  # (figure key, name)


def peer_size(sz: Sizes) -> int:
    """The W1 size compared with the peers: theirs, when W1 measures it."""
    return sz.peer_tasks if sz.peer_tasks in sz.w1_tasks else max(sz.w1_tasks)


def add_ratios(sz: Sizes, res: Results) -> None:
    n = max(sz.w1_tasks)
    ours = w1_key(n, 4)
    sec = f"Ratios (ours / theirs, per run; W1 = N={n:,}, 4 worker processes)"
    res.ratio("r.ceiling", ours, "ceiling.async", sec, "W1 / ceiling asyncio 1 task/message")
    res.ratio("r.ceiling_1w", w1_key(n, 1), "ceiling.async1", sec,
              "W1 with 1 worker / ceiling asyncio 1 task/message with 1 worker")
    res.ratio("r.ceiling_sync", ours, "ceiling.sync", sec,
              "W1 / ceiling blocking 1 task/message")
    res.ratio("r.ceiling_batch", ours, "ceiling.batch16", sec, "W1 / ceiling 16 tasks/message")
    pn = peer_size(sz)
    for peer, name in PEERS:
        res.ratio(f"r.{peer}", w1_key(pn, 4), f"{peer}.w1", sec,
                  f"W1 N={pn:,} / {name} ({name} at N={sz.peer_tasks:,})")
        for kind in ("sync", "async"):
            res.ratio(f"r.{peer}_{kind}", f"w1h.{kind}", f"{peer}.w1", sec,
                      f"W1 N={sz.peer_tasks:,}, {kind} handler / {name}")
    res.ratio("r.w2_ceiling", "w2.p50", "ceiling.rtt", sec,
              "W2 p50 / ceiling round trip (its mean) (lower is better)")
    res.ratio("r.echo_ceiling", "echo.rtt", "ceiling.rtt", sec,
              "floor under W2 (bare asyncio echo, p50) / ceiling round trip (its mean)")
    res.ratio("r.w2_echo", "w2.p50", "echo.rtt", sec,
              "W2 p50 / bare asyncio echo p50 (lower is better)")
    for peer, name in PEERS:
        res.ratio(f"r.w2_{peer}", "w2.p50", f"{peer}.p50", sec,
                  f"W2 p50 / {name} p50 (lower is better)")


@dataclass
class Target:
    text: str
    value: float | None
    ok: bool | None  # None: not measured
    shown: str
    floor: str = ""  # the floor under it measured in the same run, where the suite has one


def targets(sz: Sizes, res: Results) -> list[Target]:
    """Issue 15's targets, checked on this run's medians (ratios taken within each run)."""
    n = max(sz.w1_tasks)
    out: list[Target] = []

    def check(text: str, key: str, op: str, limit: float | None,
              fmt: Callable[[float], str] = fmt_ratio, floor: str | None = None) -> None:
        v = res.median(key)
        if v is None or limit is None:
            out.append(Target(text, None, None, "not measured"))
            return
        ok = v >= limit if op == ">=" else v <= limit
        under = None if floor is None else res.median(floor)
        out.append(Target(text, v, ok, fmt(v), "" if under is None else fmt(under)))

    defaults = sz.prefetch is None and sz.window == Sizes.window
    settings = "default settings" if defaults else \
        f"concurrency {sz.window}, --prefetch {'adaptive' if sz.prefetch is None else sz.prefetch}"
    w1 = f"W1 N={n:,}, 4 workers, {settings}"
    check(f"{w1} >= 3 x ceiling (asyncio, 1 task/message)", "r.ceiling", ">=", 3)
    check(f"{w1} >= 0.3 x batched ceiling (16 tasks/message)", "r.ceiling_batch", ">=", 0.3)
    check(f"W1 N={n:,}, 1 worker >= 2 x ceiling (asyncio, 1 task/message)", "r.ceiling_1w",
          ">=", 2)
    check("W2 p50 <= 1.2 x ceiling round trip (its mean)", "r.w2_ceiling", "<=", 1.2,
          floor="r.echo_ceiling")
    check("W2 p99 <= 2,000 µs", "w2.p99", "<=", 2000, fmt_num)
    check(f"W3 {sz.w3_tasks} x {sz.w3_seconds * 1000:g} ms wall <= 1.15 x ideal", "w3.ratio",
          "<=", 1.15, floor="w3.floor_ratio")
    check(f"W3b {sz.w3b_long} x {sz.w3b_long_seconds:g} s then {sz.w3b_short} x "
          f"{sz.w3_seconds * 1000:g} ms wall <= 1.2 x ideal", "w3b.ratio", "<=", 1.2)
    check(f"W4 idle admin CPU <= 5 % of a core, {sz.w4_workers:,} agents", "w4.idle_cpu",
          "<=", 5, fmt_pct)
    check(f"W4 admin RSS <= 120 MiB, {sz.w4_queued:,} queued (no agents)", "w4.rss_alone",
          "<=", 120, fmt_one)
    check(f"W4 admin RSS <= 120 MiB, {sz.w4_queued:,} queued, {sz.w4_workers:,} agents "
          f"beside", "w4.rss_queued", "<=", 120, fmt_one, floor="w4.floor_beside")
    check(f"W4 a queued task <= 1 KiB of admin RSS ({sz.w4_workers:,} agents beside)",
          "w4.per_task", "<=", 1.0)
    check("W5 journal >= 0.7 x W1", "w5.ratio", ">=", 0.7)
    pn = peer_size(sz)
    for peer, name in PEERS:
        check(f"W1 N={pn:,}, 4 workers, {settings} >= 20 x {name}", f"r.{peer}", ">=", 20)
    # Not the issue's W1 (no-op tasks, no user code): the same work per task as the peers'
    # scripts, a call of a function returning its argument.
    for kind in ("sync", "async"):
        for peer, name in PEERS:
            check(f"W1 N={sz.peer_tasks:,}, {kind} handler (as the peers run) >= 20 x {name}",
                  f"r.{peer}_{kind}", ">=", 20)
    return out


def print_table(res: Results, tgts: list[Target]) -> None:
    if not res.figures:
        print("\nno figures measured")
        for note in res.notes:
            print(f"note: {note}")
        return
    rows: list[tuple[str, str, str]] = []
    section = None
    runs_seen = sorted({r for f in res.figures.values() for r in f.runs})
    for fig in res.figures.values():
        if fig.section != section:
            section = fig.section
            rows.append((section, "", ""))
        each = ", ".join(fig.fmt(fig.runs[r]) if r in fig.runs else "-" for r in runs_seen)
        median = fig.median
        rows.append((f"  {fig.label}", "" if median is None else fig.fmt(median), each))
    header = ("figure", "median", f"each run ({', '.join(map(str, runs_seen))})")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    line = "-" * (widths[0] + widths[1] + 40)
    print()
    print(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]}")
    print(line)
    for name, median, each in rows:
        if not median and not each:
            print(name)
        else:
            print(f"{name:<{widths[0]}}  {median:>{widths[1]}}  {each}")
    print(line)
    if tgts:
        print()
        w = max(len(t.text) for t in tgts)
        v = max(len(t.shown) for t in tgts)
        f = max(len("floor"), *(len(t.floor) for t in tgts))
        print(f"{'target (issue 15), on the medians':<{w}}  {'median':>{v}}  verdict  "
              f"{'floor':>{f}}")
        print("-" * (w + v + f + 13))
        for t in tgts:
            verdict = "n/a" if t.ok is None else ("PASS" if t.ok else "MISS")
            print(f"{t.text:<{w}}  {t.shown:>{v}}  {verdict:<7}  {t.floor:>{f}}".rstrip())
        print("-" * (w + v + f + 13))
        print("floor, measured in the same run: W2, a bare asyncio echo on the loop's reader "
              "(no code of ours);\nW3, 7 rounds of the tasks' own run time (no schedule does "
              "better); W4, our admin "
              "with the queue alone, plus what\nlibzmq alone keeps for the agents' connections "
              "as they join (bench/zmq_connections.py); that grows\nas their heartbeats go "
              "round its pipes: 122.7 MiB for 1,000 agents and nothing else after 14 minutes\n"
              "(bench/zmq_connections.py --pace 5 --hold 1260, measured 2026-12-05)")
    for note in res.notes:
        print(f"note: {note}")


def write_json(path: str, args: argparse.Namespace, sz: Sizes, res: Results,
               tgts: list[Target], info: dict[str, Any]) -> None:
    doc = {
        "machine": info,
        "runs": args.runs,
        "quick": args.quick,
        "sizes": {k: getattr(sz, k) for k in sz.__dataclass_fields__},
        "figures": {f.key: {"section": f.section, "label": f.label, "median": f.median,
                            "runs": [f.runs.get(r) for r in range(1, args.runs + 1)]}
                    for f in res.figures.values()},
        "targets": [{"target": t.text, "median": t.value,
                     "verdict": None if t.ok is None else ("PASS" if t.ok else "MISS"),
                     **({"floor": t.floor} if t.floor else {})}
                    for t in tgts],
        "notes": res.notes,
        "foreign_load": res.foreign_load,
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
