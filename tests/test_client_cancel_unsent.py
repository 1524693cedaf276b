"""What is cancelled before it was sent is dropped from the batch about to leave: a group
future as a task future (it was sent all the same, and the admin held a group the program
cancelled before it ever went, its name then taken), with what depends on it or its tasks
(left out, failing as cancelled); and a later submission that depends on it, or on what was
left out with it, even a turn later still, fails as cancelled (the admin refused it, and its
batch, for a dependency it never heard of)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import run
from test_client import _lone_admin

from ceylon_net import TaskFailed
from ceylon_net.edge import client as client_module


@pytest.mark.timeout(60)
def test_a_group_cancelled_before_its_batch_left_is_not_sent(tmp_path):
    async def body():
        async with _lone_admin(tmp_path, timeout=5) as client:
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
        async with _lone_admin(tmp_path, timeout=5) as client:
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
        async with _lone_admin(tmp_path, timeout=5) as client:
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


async def _outcome(client, fut) -> object:
    """``fut``'s exception once the admin has answered what was sent before a status."""
    await client.status()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(fut), 5)
    return fut.exception() if fut.done() else "not done"


@pytest.mark.timeout(60)
def test_what_depends_on_one_left_out_at_the_flush_fails_as_cancelled_later_too(tmp_path):
    """Found by a review: one left out as its batch left (it depended on a task cancelled
    before it was sent, in an earlier turn) was not remembered: a still later one that
    depends on it was sent, and the admin refused it for a dependency it never heard of."""
    async def body():
        async with _lone_admin(tmp_path, timeout=5) as client:
            a = client.submit("echo_later", 1, key="a")
            assert a.cancel()
            await client.status()  # (a later turn)
            b = client.submit("echo_later", 2, key="b", depends_on=["a"])
            await client.status()  # b left out as its batch went
            c = client.submit("echo_later", 3, key="c", depends_on=["b"])
            client.submit("echo_later", 4, key="alone")
            return b.exception(), await _outcome(client, c)

    b_why, c_why = run(body())
    assert isinstance(b_why, TaskFailed) and b_why.reason == "dependency 'a' was cancelled"
    assert isinstance(c_why, TaskFailed), repr(c_why)
    assert c_why.reason == "dependency 'b' was cancelled"


@pytest.mark.timeout(60)
def test_a_large_group_cancelled_unsent_is_remembered_by_its_name(tmp_path, monkeypatch):
    """Found by a review: what the client remembers is trimmed to the latest DROPPED_KEPT
    entries, oldest first; a group's own name went in first, then its tasks, and a group of
    DROPPED_KEPT tasks or more pushed it out at once: a later group that depends on it by
    name was sent, and refused for an unknown group."""
    monkeypatch.setattr(client_module, "DROPPED_KEPT", 3)  # (10,000 in use: a group as large)

    async def body():
        async with _lone_admin(tmp_path, timeout=5) as client:
            big = client.submit_group("big", [{"handler": "echo_later", "args": [i]}
                                              for i in range(3)])
            assert big.cancel()
            await client.status()  # (a later turn)
            after = client.submit_group("after", [{"handler": "echo_later", "args": [1]}],
                                        depends_on=["big"])
            return await _outcome(client, after)

    why = run(body())
    assert isinstance(why, TaskFailed), repr(why)
