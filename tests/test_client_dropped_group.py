"""Found by a review: the client's memory of what was cancelled before it went (_dropped) is
trimmed to the latest DROPPED_KEPT entries, oldest first; a group cancelled unsent puts its
own name first and then each of its tasks: a group of DROPPED_KEPT tasks or more pushes its
own name out at once, and a later group that depends on it by name is sent, and refused by
the admin for an unknown group, instead of failing as cancelled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import run
from test_client import _connected

from ceylon_net import AsyncClient, TaskFailed
from ceylon_net.dev.testing import Cluster
from ceylon_net.edge import client as client_module


@pytest.mark.timeout(60)
def test_a_large_group_cancelled_unsent_is_remembered_by_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "DROPPED_KEPT", 3)  # (10,000 in use: a group as large)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin()
            await _connected(c.port, 0)
            async with AsyncClient(f"127.0.0.1:{c.port}", timeout=5) as client:
                big = client.submit_group("big", [{"handler": "echo_later", "args": [i]}
                                                  for i in range(3)])
                assert big.cancel()
                await client.status()  # (a later turn)
                after = client.submit_group("after", [{"handler": "echo_later", "args": [1]}],
                                            depends_on=["big"])
                await client.status()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(after), 5)
                return after.exception() if after.done() else "not done"

    why = run(body())
    assert isinstance(why, TaskFailed), repr(why)
