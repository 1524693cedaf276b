"""Found by a review: once a plain function returned a coroutine (handlers._AWAITS), every later
call hands what it returns to create_task (handlers.call: _own_task(context.run(fn, ...),
context)). A wrapper that returns a coroutine only sometimes (a cached value otherwise) then
fails with "TypeError: a coroutine was expected, got 'plain'", although its first call (in a
thread) took a plain value as it is."""

from __future__ import annotations

import pytest
from conftest import run

from ceylon_net.edge import handlers


async def _co() -> str:
    return "from a coroutine"


@pytest.mark.timeout(60)
def test_a_plain_function_in_awaits_that_returns_a_plain_value_answers_it(monkeypatch):
    calls: list[int] = []

    def sometimes():
        calls.append(1)
        return _co() if len(calls) == 1 else "plain"

    monkeypatch.setitem(handlers._HANDLERS, "h8.sometimes", sometimes)
    monkeypatch.setattr(handlers, "_AWAITS", set())

    async def body():
        first = await handlers.call("h8.sometimes", [], {})
        second = await handlers.call("h8.sometimes", [], {})
        return first, second

    assert run(body()) == ("from a coroutine", "plain")
