"""What the CLIs print: the run report's table, and ``ceylon-status``'s tables."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..core.tasks import RunReport, listed

TABLE_ROWS = 100
GROUPS_SHOWN = 20  # a report's group lines; the rest are counted by status


class _Stdout(Console):
    """The console for stdout: a reader gone away (``| head -1``) is a BrokenPipeError for
    the program to take (:func:`.common.reader_may_leave`), not rich's exit 1, which reads as
    a failed run."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # (nothing more to write)
        raise BrokenPipeError


def stdout_console() -> Console:
    """A console on stdout, wide enough for long descriptions when piped (rich assumes 80
    columns off a terminal)."""
    return _Stdout(width=None if sys.stdout.isatty() else 120)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text a client sent (a name, a description, an error) as a terminal shows it: its
    control characters escaped, as the admin's log shows them (an ESC in a group name
    cleared or recoloured the screen of whoever ran ceylon-status or --watch)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _row(table: Table, *cells: Any) -> None:
    """Cells as they are: a description like "fix [/] in items[i]" is text, not markup."""
    table.add_row(*(Text(printable(str(c))) for c in cells))


def print_report(report: RunReport, whole: str = "--report-json") -> None:
    """The results table, then groups, failures, cancellations and the success rate.
    ``whole``: the option that gives every row (the table shows the first ones)."""
    console = stdout_console()
    table = Table(title="Task results")
    for col in ("task", "description", "difficulty", "worker", "success", "seconds"):
        table.add_column(col, justify="right" if col in ("difficulty", "seconds") else "left")
    for t in report.tasks[:TABLE_ROWS]:
        _row(table, t.id, t.description, t.difficulty, t.worker, "yes" if t.success else "no",
             f"{t.seconds:.3f}")
    if report.tasks:  # (none ran: a table of no rows said nothing the last line does not)
        console.print(table)
    if len(report.tasks) > TABLE_ROWS:
        console.print(f"... and {len(report.tasks) - TABLE_ROWS} more (see {whole})")
    for line in _report_notes(report):
        console.print(printable(line), markup=False, highlight=False)
    console.print(f"Success rate: {report.success_rate:.2%} "
                  f"({sum(t.success for t in report.tasks)}/{len(report.tasks)} tasks)"
                  if report.tasks else "Success rate: none ran (0 tasks)")


def _report_notes(report: RunReport) -> list[str]:
    """What the table does not say: groups, failures, and the tasks that did not run to a
    result. Each list is cut short (a chain of 30,000 cancelled tasks is one line)."""
    lines = []
    for g in report.groups[:GROUPS_SHOWN]:
        goal = f"; goal '{g['goal']}' {g['goal_status']}" if g["goal"] else ""
        lines.append(f"Group '{g['name']}': {g['status']}, {g['completed']}/{g['total']} "
                     f"completed, {g['failed']} failed, {g['cancelled']} cancelled"
                     + (f", {g['unassigned']} unassigned" if g.get("unassigned") else "")
                     + goal)
    if len(report.groups) > GROUPS_SHOWN:
        lines.append(f"... and {len(report.groups) - GROUPS_SHOWN:,} more group(s): "
                     f"{_tally(g['status'] for g in report.groups[GROUPS_SHOWN:])}")
    failed = [t for t in report.tasks if not t.success and t.error]
    lines += [f"task {t.id} failed: {t.error.strip().splitlines()[-1]}"
              for t in failed[:TABLE_ROWS // 5] if t.error]
    if report.cancelled:
        reasons = set(report.cancelled.values())  # (one: said without its count again)
        lines.append(f"Cancelled: {len(report.cancelled):,} task(s) ("
                     + (next(iter(reasons)) if len(reasons) == 1 else
                        _tally(report.cancelled.values(), sep="; ")) + ")"
                     + (f"; {len(report.after_failure):,} of them for a failure upstream"
                        if report.after_failure else ""))
    for title, ids, why in (
            ("Dead (lost with their workers too often)", report.dead, {}),
            ("Unassigned (no connected worker could take them)", report.unassigned,
             report.unassigned_why),
            ("Not finished (the run was stopped first)", report.unfinished, {})):
        if ids:
            lines.append(f"{title}: {_by_reason(ids, why)}")
    return lines


def _by_reason(ids: list[Any], why: dict[Any, str]) -> str:
    """'h1, h2 (needs handler 'x'; no connected worker has it); hard (needs skill >= 10;
    best connected is 9)': the tasks of each reason together (those of none first; with no
    reasons, the ids listed)."""
    groups: dict[str, list[Any]] = {}
    for t in ids:
        groups.setdefault(why.get(t, ""), []).append(t)
    return "; ".join(listed(tasks, TABLE_ROWS) + (f" ({reason})" if reason else "")
                     for reason, tasks in sorted(groups.items(), key=lambda kv: kv[0] != ""))


def _ended(group: dict[str, Any]) -> int:
    """How many of a group's tasks ended, however they ended."""
    return sum(group.get(k, 0) for k in ("completed", "failed", "cancelled", "unassigned"))


def _tally(values: Iterable[Any], sep: str = ", ", shown: int = 5) -> str:
    """The most common values first, each with its count: 'dependency 0 failed (3); x'."""
    counts = Counter(values).most_common()
    said = [f"{v} ({n:,})" if n > 1 else str(v) for v, n in counts[:shown]]
    if len(counts) > shown:
        said.append(f"{len(counts) - shown:,} other(s)")
    return sep.join(said)


def render(data: dict[str, Any]) -> Group:
    """Rich tables for a snapshot (ceylon-status prints them)."""
    c = data["counts"]
    workers = Table(title=Text(printable(f"Workers of admin '{data['admin']}' (workspace "
                                         f"'{data['workspace']}')")))
    for col in ("name", "role", "skill", "host", "running/capacity"):
        workers.add_column(col)
    for w in data["workers"]:
        _row(workers, w["name"], w["role"], w["skill"], w["host"] or "?",
             f"{w['running']}/{w['capacity']}"
             + (f" (+{w['queued']} queued)" if w.get("queued") else "")
             + (f" ({w['stuck']} held by a handler past its task)" if w.get("stuck") else "")
             + (" (runs a task on its last attempt alone)" if w.get("alone") else "")
             + (" (drains for a task to run alone)" if w.get("held") else ""))
    shown, total = len(data["groups"]), data.get("groups_total", len(data["groups"]))
    groups = Table(title="Task groups" + (f" ({shown} of {total}: those under way, then the "
                                          f"latest)" if total > shown else ""))
    for col in ("group", "progress", "status", "goal", "goal status"):
        groups.add_column(col)
    for g in data["groups"]:
        _row(groups, g["name"], f"{_ended(g)}/{g['total']}",
             g["status"], g["goal"] or "-", g["goal_status"] or "-")
    queued = _queued(data)
    ended = "".join(f", {c[k]} {k}" for k in ("failed", "cancelled") if c.get(k))
    summary = (f"tasks: {c['done']}/{c['total']} done ({c['succeeded']} succeeded{ended}), "
               f"{c['running']} running, {c['queued']} queued, {c['waiting']} waiting, "
               f"{c['unassigned']} unassigned"
               + (f" ({c['forgotten']:,} of the done forgotten with their batches: "
                  f"--keep-finished)" if c.get("forgotten") else "")
               + (f" (none assigned until {c['awaiting_workers']} more worker(s) connect: "
                  f"--expect-workers)" if c.get("awaiting_workers") else "") + "\n"
               f"broadcasts: {c.get('broadcasts', 0)} sent, {c.get('broadcasts_lost', 0)} "
               f"lost to an agent that fell too far behind, "
               f"{c.get('broadcasts_unconfirmed', 0)} unconfirmed by agents that left")
    # (a table with no rows says nothing the summary line does not: left out)
    shown_parts = [_or_none(workers, data), *([groups] if data["groups"] else []),
                   *([queued] if data["queued"] or queued.caption else [])]
    return Group(*shown_parts, Text(summary))


def _or_none(workers: Table, data: dict[str, Any]) -> Table | Text:
    """The workers' table; with none, its title saying so (a header with no row under it
    was printed)."""
    return workers if data["workers"] else Text(printable(
        f"Workers of admin '{data['admin']}' (workspace '{data['workspace']}'): no worker "
        f"connected"))


def _queued(data: dict[str, Any]) -> Table:
    """The queued tasks first in line, and how many more there are, and where."""
    c = data["counts"]
    queued = Table(title=f"Queued tasks ({c['queued']} queued, {c['waiting']} waiting on "
                         f"dependencies)")
    for col in ("task", "description", "difficulty", "role", "priority"):
        queued.add_column(col)
    for q in data["queued"]:
        _row(queued, q["id"], q["description"], q["difficulty"], q["role"] or "-",
             q["priority"])
    on_workers = c.get("queued_on_workers",  # (an older admin's: from the worker rows)
                       sum(w.get("queued", 0) for w in data["workers"]))
    more = c["queued"] - on_workers - len(data["queued"])  # (the rows are the first in line)
    queued.caption = "; ".join(
        ([f"... and {more} more in the admin's queue"] if more > 0 else [])
        + ([f"{on_workers} queued on workers (in their rows above)"] if on_workers else [])
    ) or None
    return queued
