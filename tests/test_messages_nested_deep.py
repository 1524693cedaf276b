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
from ceylon_net.errors import LocalProtocolError, RemoteProtocolError


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
