"""A group future cancelled in the loop turn it was submitted in is dropped from the batch
about to leave, as a task future is: it was sent all the same, and the admin held a group the
program cancelled before it ever went (its name then taken)."""

from __future__ import annotations

import pytest
from conftest import run
from test_client import _connected

from ceylon_net import AsyncClient
from ceylon_net.dev.testing import Cluster


@pytest.mark.timeout(60)
def test_a_group_cancelled_before_its_batch_left_is_not_sent(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin()
            await _connected(c.port, 0)
            async with AsyncClient(f"127.0.0.1:{c.port}", timeout=5) as client:
                task = client.submit("echo_later", 1, key="t")
                group = client.submit_group("g", [{"handler": "echo_later", "args": [1]}])
                assert task.cancel() and group.cancel()
                status = await client.status()  # (after what was queued, were it sent)
                return status["counts"]["total"], [g["name"] for g in status["groups"]]

    total, groups = run(body())
    assert (total, groups) == (0, []), "the admin holds the group cancelled before it went"
