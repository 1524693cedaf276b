"""Client.gather: "the futures' results, in order; the first failure raises", as soon as
it comes, as AsyncClient.gather's does: not once the futures before it are done (it waited on
each in turn, and a failure behind a slow future came out as a TimeoutError)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
from conftest import run
from test_client import _cluster

from ceylon_net import AsyncClient, Client, TaskFailed
from ceylon_net.dev.testing import Cluster
from ceylon_net.edge.sync_client import Future


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


def _gather(futures, timeout=None):
    # gather uses nothing of its client: called unbound, no cluster needed
    return Client.gather(object.__new__(Client), futures, timeout)


@pytest.mark.timeout(30)
def test_a_cancelled_future_raises_at_once_not_once_a_slow_one_ended():
    """(A future that never ends: waiting for it, the test times out.)"""
    cancelled, slow, failed = (concurrent.futures.Future() for _ in range(3))
    assert cancelled.cancel() and cancelled.set_running_or_notify_cancel() is False
    with pytest.raises(concurrent.futures.CancelledError):
        _gather([slow, cancelled])
    failed.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        _gather([slow, failed])
    with pytest.raises(TimeoutError, match=r"^1 of 2 future\(s\) not done within 0.1 s$"):
        _gather([slow, _done(1)], timeout=0.1)
    assert _gather([_done(1), _done(2), _done(1)], timeout=0) == [1, 2, 1]
    assert _gather([]) == []


def _done(value):
    f = concurrent.futures.Future()
    f.set_result(value)
    return f


@pytest.mark.timeout(30)
def test_a_timeout_beyond_threading_s_maximum_waits_as_result_does():
    """Future.result() bounds its timeout (_bounded: 1e10 raised OverflowError); gather's
    concurrent.futures.wait does not."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        inner = asyncio.run_coroutine_threadsafe(_make_future(), loop).result(5)
        fut = Future("t", inner, loop, thread)
        loop.call_soon_threadsafe(lambda: loop.call_later(0.2, inner.set_result, "ok"))
        assert _gather([fut], timeout=1e10) == ["ok"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _make_future():
    return asyncio.get_running_loop().create_future()
