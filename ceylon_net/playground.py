"""Seed 000's surface: a playground that runs an admin with in-process workers, and the
worker agent with a role and a concurrency limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .core.groups import TaskGroup, TaskManager
from .edge.admin import Admin
from .edge.agent import finish_tasks
from .edge.worker import Worker


class TaskExecutionAgent(Worker):
    """A worker of one role that never runs more than ``max_concurrent_tasks`` at once; it has
    its own ``task_queue`` and ``active_tasks`` (see :class:`Worker`)."""

    def __init__(self, name: str, worker_role: str = "default", max_concurrent_tasks: int = 3,
                 **options: Any) -> None:
        super().__init__(name, role=worker_role, max_concurrent_tasks=max_concurrent_tasks,
                         **options)
        self.worker_role = worker_role


class TaskPlayGround:
    """``async with TaskPlayGround().play(workers=[...]) as pg:`` starts an admin and the given
    workers (over real loopback sockets), ``await pg.assign_task_groups([...])`` runs groups,
    and ``pg.task_manager.task_groups[group.id]`` shows their live status. Leaving the block
    stops everything."""

    def __init__(self, name: str = "playground", port: int | None = None,
                 workspace_id: str | None = None, **options: Any) -> None:
        self.admin = Admin(name, port, workspace_id, **options)

    @property
    def task_manager(self) -> TaskManager:
        return self.admin.task_manager

    @contextlib.asynccontextmanager
    async def play(self, workers: Sequence[Worker] = (), connect_timeout: float = 30.0
                   ) -> AsyncIterator[TaskPlayGround]:
        await self.admin.start()
        runs = [asyncio.create_task(w.arun_against(self.admin), name=f"worker-{w.name}")
                for w in workers]
        try:
            await self._await_workers(workers, runs, connect_timeout)
            yield self
        finally:
            await self.admin.close("playground closed")
            await finish_tasks(runs, timeout=5.0)

    async def _await_workers(self, workers: Sequence[Worker], runs: list[asyncio.Task],
                             timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.admin.get_connected_agents()) < len(runs):
            failed = next((r for r in runs if r.done()), None)
            if failed is not None:
                failed.result()  # raises the worker's error (rejected, unreachable)
                raise RuntimeError(f"{failed.get_name()} stopped before joining")
            if time.monotonic() > deadline:
                why = "; ".join(f"{w.name}: {w.refusal}" for w in workers
                                if w.refusal is not None)  # (a name taken, say)
                raise TimeoutError(f"only {len(self.admin.get_connected_agents())} of "
                                   f"{len(runs)} workers joined within {timeout:g} s"
                                   + (f" (the admin refuses {why})" if why else ""))
            await asyncio.sleep(0.01)

    async def assign_task_groups(self, groups: Sequence[TaskGroup]) -> None:
        """Queue the groups; their tasks go out as dependencies and capacity allow."""
        self.admin.submit_groups(groups)

    async def wait_for_completion(self) -> None:
        """Wait until every task of every assigned group finished or was cancelled."""
        await self.admin.wait_idle()
