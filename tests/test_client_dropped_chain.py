"""Found by a review: a submission left out as its batch leaves (_start_flush: it depends on a
task cancelled before it was sent, in an earlier turn) is not remembered in _dropped (the
flush passes a copy): a still later one that depends on it is sent, and the admin refuses it
(and its batch) for a dependency it never heard of, instead of it failing as cancelled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import run
from test_client import _connected

from ceylon_net import AsyncClient, TaskFailed
from ceylon_net.dev.testing import Cluster


@pytest.mark.timeout(60)
def test_what_depends_on_one_left_out_at_the_flush_fails_as_cancelled_later_too(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin()
            await _connected(c.port, 0)
            async with AsyncClient(f"127.0.0.1:{c.port}", timeout=5) as client:
                a = client.submit("echo_later", 1, key="a")
                assert a.cancel()
                await client.status()  # (a later turn)
                b = client.submit("echo_later", 2, key="b", depends_on=["a"])
                await client.status()  # b left out as its batch went
                c2 = client.submit("echo_later", 3, key="c", depends_on=["b"])
                alone = client.submit("echo_later", 4, key="alone")
                status = await client.status()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(c2), 5)
                return (b.exception(), c2.exception() if c2.done() else "not done",
                        status["counts"]["total"], alone.done() and alone.exception())

    b_why, c_why, _total, _alone_why = run(body())
    assert isinstance(b_why, TaskFailed) and b_why.reason == "dependency 'a' was cancelled"
    assert isinstance(c_why, TaskFailed), repr(c_why)
    assert c_why.reason == "dependency 'b' was cancelled"
