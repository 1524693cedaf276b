"""cancel() across an admin restarted on its journal: a CANCEL written to the connection
as the admin died is lost with it; cancel() asks again every ASK_AGAIN s, as status() does
(asking twice is harmless), so the new admin cancels the task. It waited its whole timeout,
then raised AdminUnreachableError though an admin was up there, the task not cancelled; a
future's cancel() said nothing of it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run
from test_client import _connected

from ceylon_net import AsyncClient
from ceylon_net.dev.testing import Cluster, wait_until


def _unread_at(port: int) -> bool:
    """Bytes wait unread in an established connection to local port ``port`` (the stopped
    admin's: only our client is connected to it)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01" \
                and int(f[4].split(":")[1], 16) > 0:
            return True
    return False


@contextlib.asynccontextmanager
async def _cancelled_as_the_admin_restarts(tmp_path, cancel: Callable[[AsyncClient, Any], Any]
                                           ) -> AsyncIterator[tuple[AsyncClient, Any, Any]]:
    """A task submitted to an admin with a journal and no worker (it waits there); the admin
    paused, ``cancel(client, its future)`` called, its CANCEL seen unread in the paused
    admin's connection; the admin killed, another started on the journal: (the client, the
    future, what ``cancel`` returned)."""
    journal = tmp_path / "state.db"
    async with Cluster(workdir=tmp_path) as c:
        admin = await c.admin("--journal", str(journal))
        await _connected(c.port, 0)
        async with AsyncClient(f"127.0.0.1:{c.port}", timeout=12, gone_after=60) as client:
            queued = client.submit("echo_later", 1, key="queued")  # (no worker: waits)
            # (taken: the admin answers in order, this status after the SUBMIT)
            assert (await client.status())["counts"]["total"] == 1
            admin.signal(signal.SIGSTOP)
            cancelling = cancel(client, queued)
            await wait_until(lambda: _unread_at(c.port), 10, "the CANCEL at the admin")
            admin.signal(signal.SIGKILL)
            await admin.wait(10)
            await c.admin("--journal", str(journal), name="admin-2")
            yield client, queued, cancelling


@pytest.mark.timeout(90)
def test_a_cancel_lost_as_the_admin_restarted_on_its_journal_is_asked_again(tmp_path):
    async def body():
        async with _cancelled_as_the_admin_restarts(
                tmp_path, lambda client, f: asyncio.ensure_future(client.cancel([f]))
        ) as (client, _, cancelling):
            try:
                outcome = await cancelling
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            counts = (await client.status())["counts"]
            return outcome, counts["cancelled"]

    outcome, cancelled = run(body())
    assert isinstance(outcome, dict) and outcome["cancelled"] == ["queued"], outcome
    assert cancelled == 1


@pytest.mark.timeout(90)
def test_a_future_cancelled_as_the_admin_restarted_has_its_task_cancelled_too(tmp_path):
    """The same through the future's cancel(): the future says cancelled at once, and its
    CANCEL, sent in the background, is asked again too: the new admin cancels the task (it
    waited on there, to run once a worker came)."""
    async def body():
        async with _cancelled_as_the_admin_restarts(
                tmp_path, lambda _, f: f.cancel()) as (client, queued, said):
            assert said  # (the future's cancel() took)

            async def counts() -> dict:
                return (await client.status())["counts"]

            async def cancelled() -> bool:
                return (await counts())["cancelled"] == 1

            with contextlib.suppress(TimeoutError):  # (the counts say what became of it)
                await wait_until(cancelled, 30, "the task cancelled at the admin",
                                 interval=0.5)
            return queued.cancelled(), await counts()

    cancelled_here, counts = run(body())
    assert cancelled_here
    assert (counts["cancelled"], counts["queued"]) == (1, 0), counts
