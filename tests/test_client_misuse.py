"""Client calls used wrongly say so at the call: a client never connected, map() given a
key, watch_batch() given the batch number as a string or no run (the admin drops such a WATCH
unread, and the call waited for ever)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import warnings

import pytest
from conftest import run
from test_client import _lone_admin

from ceylon_net import AsyncClient
from ceylon_net.dev.testing import cli, free_port
from ceylon_net.errors import AdminUnreachableError, ConfigError

CALLS = {
    "status": lambda c: c.status(),
    "cancel": lambda c: c.cancel(["t1"]),
    "submit_batch": lambda c: c.submit_batch({"tasks": []}, wait=False),
    "watch_batch": lambda c: c.watch_batch(1, "run"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", list(CALLS))
def test_a_request_of_a_client_never_connected_says_it_is_not_connected(call):
    async def body() -> None:
        client = AsyncClient("127.0.0.1:1", timeout=1)  # (nothing is contacted)
        with pytest.raises(ConfigError, match="not connected"):
            await CALLS[call](client)

    asyncio.run(body())


@pytest.mark.timeout(60)
def test_map_given_a_key_says_it_names_its_tasks_itself(tmp_path):
    async def body() -> str:
        async with _lone_admin(tmp_path) as client:
            with pytest.raises(TypeError) as exc:
                client.map("echo_later", [1, 2], key="x")
            return str(exc.value)

    assert run(body()) == "map() names each of its tasks itself: key= is submit()'s"


TASK = {"id": "b1", "handler": "echo_later", "args": [1], "description": "b1", "difficulty": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["batch as str", "run None"])
def test_a_watch_batch_of_a_badly_typed_batch_or_run_fails_at_the_call_not_waits(tmp_path, bad):
    async def body():
        async with _lone_admin(tmp_path, timeout=5) as client:
            # (no worker: this task stays queued, and the admin beats the client)
            pending = client.submit("echo_later", "waits", key="pending")
            sub, _ = await client.submit_batch({"tasks": [TASK]}, wait=False)
            batch, run_id = (str(sub.batch), sub.run) if bad == "batch as str" \
                else (sub.batch, None)
            try:
                await asyncio.wait_for(client.watch_batch(batch, run_id), 20)
            except TimeoutError:
                return "still waiting after 20 s"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            finally:
                pending.cancel()
            return "answered"

    said = run(body())
    assert said.startswith("ConfigError: watch_batch() takes a batch number (int) and a run "
                           "(str), as in BATCH@RUN; got "), said


@pytest.mark.timeout(60)
def test_a_client_connected_in_an_event_loop_that_ended_closes_from_the_next(tmp_path):
    """asyncio.run(connect()), then asyncio.run(client.close()): close() raised "Event loop is
    closed" and left the socket open (a ResourceWarning at exit; a review of the API)."""
    port = free_port()
    admin = subprocess.Popen([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(port),
                              "--pub-port", str(free_port())], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def connect() -> AsyncClient:
        for _ in range(30):  # (until the admin answers: 1 s a try)
            client = AsyncClient(f"127.0.0.1:{port}", timeout=1)
            try:
                return await client.connect()
            except AdminUnreachableError:
                continue
        raise AssertionError("the admin never answered")

    try:
        client = asyncio.run(connect())
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            asyncio.run(client.close())
            dealer, client = client._dealer, None
            gc.collect()
    finally:
        admin.terminate()
        admin.wait(30)
    assert dealer is None
    assert [str(w.message) for w in said if issubclass(w.category, ResourceWarning)] == []
