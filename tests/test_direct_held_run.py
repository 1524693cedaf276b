"""A registered agent whose queue at the admin is full (paused, or slow to read, not yet
taken for lost) gets, once it reads again, every direct message sent to it meanwhile, in
order, its sender told of none: they were each dropped and said undelivered at once, where
the same messages a moment later, the agent taken for lost, were held for it. Real sockets:
an in-process admin, a worker sending, and a raw DEALER as the receiver."""

from __future__ import annotations

import time

import pytest
import zmq.asyncio
from conftest import run
from kit import Said, sender_and_busy_reader

from ceylon_net import wire
from ceylon_net.wire import Kind

MOST = 20_000  # messages sent, at most: the admin's queue to a peer is 10,000
HELD = 300  # sent past what its queue (and the kernel's buffers) took


async def _read_all(b: zmq.asyncio.Socket, count: int, within: float) -> list[bytes]:
    """The payloads of the first ``count`` direct messages ``b`` reads (``within`` s)."""
    got: list[bytes] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        if await b.poll(500):
            frames = await b.recv_multipart()
            env = wire.decode_frames(frames)
            if env.kind == Kind.DIRECT:
                got.append(env.payload)
    return got


@pytest.mark.timeout(180)
def test_messages_to_a_registered_agent_whose_queue_was_full_reach_it_when_it_reads_again():
    async def body() -> tuple[list[bytes], list[bytes], list[str], int]:
        sent: list[bytes] = []
        async with sender_and_busy_reader() as (admin, a, b):
            with Said() as said:
                held_from = None
                for i in range(MOST):
                    sent.append(b"%06d" % i + b"x" * 2000)
                    await a.send("b", sent[-1])
                    if held_from is None and (admin.state.members.mailbox.count or any(
                            "not delivered" in m for m in said.lines)):  # (as it was)
                        held_from = i
                    if held_from is not None and i >= held_from + HELD:
                        break
                assert held_from is not None, "its queue at the admin never filled"
                # (held: the messages that did not fit; dropped before, each said to a)
                assert admin.state.peer_of("b") is not None  # (not taken for lost)
                got = await _read_all(b, len(sent), 60)
                told = [m for m in said.lines if "not delivered" in m]
        return sent, got, told, held_from

    sent, got, told, held_from = run(body())
    assert not told, told[:3]
    assert len(got) == len(sent), f"{len(got)} of {len(sent)} received (held from {held_from})"
    assert got == sent  # (in order, none twice)
