"""Client.gather: "the futures' results, in order; the first failure raises", as soon as
it comes, as AsyncClient.gather's does: not once the futures before it are done (it waited on
each in turn, and a failure behind a slow future came out as a TimeoutError)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import run
from test_client import _cluster

from ceylon_net import AsyncClient, Client, TaskFailed
from ceylon_net.dev.testing import Cluster


@pytest.mark.timeout(90)
def test_gather_raises_a_failure_that_came_while_an_earlier_future_still_runs(tmp_path):
    def sync_body(port: int) -> str:
        with Client(f"127.0.0.1:{port}") as client:
            slow = client.submit("echo_later", "slow", 40.0, key="slow")
            boom = client.submit("boom", "bad news", key="boom")
            boom.exception(timeout=20)  # (its failure is here)
            try:
                client.gather([slow, boom], timeout=8)
            except Exception as exc:
                return type(exc).__name__
            finally:
                slow.cancel()
            return "no error"

    async def async_body(port: int) -> str:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            slow = client.submit("echo_later", "slow2", 40.0, key="slow2")
            boom = client.submit("boom", "bad news", key="boom2")
            try:
                await asyncio.wait_for(client.gather([slow, boom]), 8)
            except TaskFailed:
                return "TaskFailed"
            except TimeoutError:
                return "TimeoutError"
            finally:
                slow.cancel()
            return "no error"

    async def main():
        async with Cluster(workdir=tmp_path) as c:
            await _cluster(c, workers=1)
            return await async_body(c.port), await asyncio.to_thread(sync_body, c.port)

    from_async, from_sync = run(main())
    assert from_async == "TaskFailed"
    assert from_sync == "TaskFailed", f"Client.gather: {from_sync}"
