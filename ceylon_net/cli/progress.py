"""Live progress bars for ``ceylon-admin --tasks`` on a terminal: one for the whole run and
one per task group, with each group's goal status. Off a terminal, or with --log-json (whose
lines must stay JSON), the admin's periodic log lines say the same, so this draws nothing
there."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from ..core.snapshot import counts
from .common import live_display
from .render import printable

if TYPE_CHECKING:
    from ..edge.admin import Admin

REFRESH = 0.1


class ProgressView:
    def __init__(self, admin: Admin, console: Console) -> None:
        self.admin = admin
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[note]}"),
            console=console, redirect_stderr=True, redirect_stdout=False)
        self._bars: dict[str, TaskID] = {}
        self._task: asyncio.Task | None = None

    @classmethod
    def for_terminal(cls, admin: Admin) -> contextlib.AbstractAsyncContextManager[Any]:
        if not live_display():
            return contextlib.nullcontext()
        return cls(admin, Console(stderr=True))

    async def __aenter__(self) -> ProgressView:
        self.progress.start()
        self._task = asyncio.create_task(self._refresh_forever())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.update()
        self.progress.stop()

    async def _refresh_forever(self) -> None:
        while True:
            self.update()
            await asyncio.sleep(REFRESH)

    def update(self) -> None:
        n = counts(self.admin.state)
        self._bar("all", "all tasks", n["total"], n["done"],
                  f"{n['running']} running, {n['queued']} queued")
        for g in self.admin.task_manager.task_groups.values():
            goal = f"goal {g.goal.status.value}" if g.goal else ""
            self._bar(g.id, printable(f"group '{g.name}'"), g.total, g.finished,
                      f"{g.status.value}; {goal}" if goal else g.status.value)

    def _bar(self, key: str, label: str, total: int, done: int, note: str) -> None:
        if key not in self._bars:
            self._bars[key] = self.progress.add_task(label, total=max(total, 1), note=note)
        self.progress.update(self._bars[key], total=max(total, 1), completed=done, note=note)


class ProgressBarForBatch:
    """ceylon-submit --wait on a terminal: one bar for the batch, fed by the admin's PROGRESS."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("batch {task.fields[batch]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 console=Console(stderr=True), transient=True)
        self._bar: TaskID | None = None
        self.progress.start()

    def update(self, p: Any) -> None:
        if self._bar is None:
            self._bar = self.progress.add_task("batch", total=p.total, batch=p.batch)
        self.progress.update(self._bar, completed=p.done, total=p.total)

    def close(self) -> None:
        self.progress.stop()
