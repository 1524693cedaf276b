"""What is cancelled before it was sent is dropped from the batch about to leave: a group
future as a task future (it was sent all the same, and the admin held a group the program
cancelled before it ever went, its name then taken), with what depends on it or its tasks
(left out, failing as cancelled); and a later submission that depends on it fails as
cancelled (the admin refused it for a dependency it never heard of)."""

from __future__ import annotations

import pytest
from conftest import run
from test_client import _connected

from ceylon_net import AsyncClient, TaskFailed
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


@pytest.mark.timeout(60)
def test_what_depends_on_a_group_s_tasks_is_left_out_with_the_group(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin()
            await _connected(c.port, 0)
            async with AsyncClient(f"127.0.0.1:{c.port}", timeout=5) as client:
                alone = client.submit("echo_later", 1, key="alone")  # depends on nothing
                group = client.submit_group("g", [{"handler": "echo_later", "args": [1]}])
                dep = client.submit("echo_later", 2, key="dep", depends_on=["g/0"])
                assert group.cancel()
                status = await client.status()  # (after the batch, were it sent)
                return status["counts"]["total"], alone.done(), dep.exception()

    total, alone_done, why = run(body())
    # (the admin refused the whole batch, 'alone' with it: 'dep' depended on an unknown task)
    assert isinstance(why, TaskFailed) and why.reason == "dependency 'g/0' was cancelled"
    assert (total, alone_done) == (1, False)


@pytest.mark.timeout(60)
def test_a_later_submission_that_depends_on_one_cancelled_before_it_went_fails_as_cancelled(
        tmp_path):
    """Not refused by the admin for a dependency it never heard of (ConfigError): the client
    remembers what it dropped, and what was left out with it; a key given again is new."""
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await c.admin()
            await _connected(c.port, 0)
            async with AsyncClient(f"127.0.0.1:{c.port}", timeout=5) as client:
                a = client.submit("echo_later", 1, key="a")
                b = client.submit("echo_later", 1, key="b", depends_on=[a])
                assert a.cancel()
                assert isinstance(b.exception(), TaskFailed)  # (left out with it)
                await client.status()  # (a later loop turn: another batch)
                later = [client.submit("echo_later", 2, key="on-a", depends_on=["a"]),
                         client.submit("echo_later", 2, key="on-b", depends_on=[b]),
                         client.submit_group("g", [{"handler": "echo_later", "args": [1],
                                                    "depends_on": ["a"]}])]
                alone = client.submit("echo_later", 3, key="alone")
                status = await client.status()
                again = client.submit("echo_later", 4, key="a")  # a new task of that key
                waits = client.submit("echo_later", 5, key="on-new-a", depends_on=["a"])
                after = await client.status()
                return ([f.exception() for f in later[:2]], later[2].done(),
                        status["counts"]["total"], after["counts"]["total"],
                        again.done(), waits.done(), alone.done())

    failed, group_done, total, after, *pending = run(body())
    assert [e.reason for e in failed] == ["dependency 'a' was cancelled",
                                          "dependency 'b' was cancelled"]
    assert group_done  # (its task depended on 'a')
    assert (total, after, pending) == (1, 3, [False, False, False])
