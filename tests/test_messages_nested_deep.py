"""A message of a recursive type (a tree) nested deeper than a receiver's stack decodes is
dropped there, said, and refused where it is sent. Before (a review of the agents' API):
decoding raised RecursionError, which nothing caught; one such broadcast, from a worker
whose process had raised sys.setrecursionlimit (its own check passed), stopped the admin's
receive loop ("the admin's receive loop stopped on an unexpected error") and every worker
that had the type registered exited 1. A crafted frame did the same."""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack
import pytest
from kit import Said

from ceylon_net import Worker, message, on_message, wire
from ceylon_net.core.tasks import Task, TaskResult
from ceylon_net.errors import LocalProtocolError, RemoteProtocolError
from ceylon_net.wire import Kind


@message(name="tests.deep.Node")
@dataclass
class Node:
    v: int
    children: list[Node] = field(default_factory=list)


def _tree(depth: int) -> Node:
    node = Node(0)
    for i in range(depth):
        node = Node(i + 1, [node])
    return node


DEEP = 250  # nodes (500 lists and maps): msgpack's own limit is 511

@contextlib.contextmanager
def _stack(frames: int) -> Iterator[None]:
    """Python's recursion limit this many frames above where the caller is."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _raw_tree(depth: int) -> bytes:
    """Its wire form built without ceylon_net (as a peer with a higher limit sends it)."""
    node: dict = {"v": 0}
    for i in range(depth):
        node = {"v": i + 1, "children": [node]}
    return msgpack.packb(node)


class _Hears(Worker):
    @on_message(type=Node)
    async def on_node(self, data: Node) -> None:
        pass


def test_a_tree_deeper_than_this_process_decodes_is_a_protocol_error():
    payload = _raw_tree(DEEP)
    with _stack(300), pytest.raises(RemoteProtocolError,
                                    match="Node: nested too deeply to decode here"):
        wire.unpack(Node, payload)
    assert wire.unpack(Node, _raw_tree(40)) == _tree(40)


def test_a_worker_drops_such_a_broadcast_with_a_word_and_goes_on():
    worker = _Hears("hears", admin_peer="127.0.0.1", admin_port=9)
    header = wire.make_header("default", "deep-sender", "tests.deep.Node")
    with Said() as said, _stack(300):
        worker._deliver(header, _raw_tree(DEEP), wire.DEFAULT_LIMITS)
    assert len(said.lines) == 1 and said.lines[0].startswith(
        "hears: dropped message from deep-sender: Node: nested too deeply to decode here"), \
        said.lines


def test_the_sender_is_told_before_it_sends_whatever_its_own_recursion_limit():
    """Its own stack deep enough, its check (read back as the receivers will) passed: the
    receivers, at Python's default limit, could not decode it."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        with pytest.raises(LocalProtocolError, match=re.escape(
                "the receivers would drop this tests.deep.Node: tests.deep.Node: nests lists "
                "and maps more than 100 deep")):
            Worker._outgoing(_tree(300), 1 << 24, wire.DEFAULT_LIMITS)
    finally:
        sys.setrecursionlimit(limit)
    type_, payload = Worker._outgoing(_tree(40), 1 << 24, wire.DEFAULT_LIMITS)
    assert (type_, wire.unpack(Node, payload)) == ("tests.deep.Node", _tree(40))


def _raw_result(task_id: str, worker: str, depth: int) -> bytes:
    """A RESULT payload whose value is a list nested ``depth`` deep, as bytes (msgpack's own
    packer stops at 511)."""
    head = msgpack.packb([{"task_id": task_id, "worker": worker, "success": True,
                           "attempt": 1, "value": None}])
    return head[:-1] + b"\x91" * depth + b"\xc0"  # (the value, None, last: nested instead)


def test_a_result_whose_value_nests_too_deep_fails_its_task_and_the_admin_goes_on(tmp_path):
    """A task's return value is Any: never decoded deeply, but encoded again by the admin for
    the clients following the task and the journal. From a worker that had raised its own
    recursion limit (or a crafted frame), a value 600 deep stopped the admin's receive loop
    (RecursionError; a review of fcee324)."""
    from kit import JSim, frames

    sim = JSim(tmp_path / "j.db")
    w = sim.join("w")
    sim.submit(Task("deep", "x", 1))
    sim.receive(b"client", frames(Kind.WATCH, wire.Watch(["deep"], [])))
    header = wire.make_header("default", "w", "TaskResult")
    sim.receive(w.peer, wire.encode_frames(Kind.RESULT, header, _raw_result("deep", "w", 600)))
    result = sim.finished()["deep"].result
    assert (result.success, result.value, result.error) == (
        False, None, "its return value nests lists and maps more than 100 deep: the admin "
                     "does not take it (return less, or where to find it)")


def test_a_worker_refuses_a_return_value_nested_deeper_than_the_admin_takes():
    """Its own check (packed and read back at its stack's depth) passed up to ~480 levels;
    its batch of results, packed deeper in the stack, raised, uncaught: the worker left,
    and the task took the next worker down with it (a review of fcee324)."""
    worker = _Hears("w", admin_peer="127.0.0.1", admin_port=9)
    value: list = []
    for _ in range(150):
        value = [value]
    said = worker._unsendable(TaskResult("t", "w", True, value=value))
    assert said == "its return value cannot be sent to the admin: it nests lists and maps " \
                   "more than 100 deep", said
    assert worker._unsendable(TaskResult("t", "w", True, value=[[[1]]])) is None
