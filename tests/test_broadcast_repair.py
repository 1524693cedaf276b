"""A worker's side of broadcast repair, over real sockets, against a scripted admin (bare
pyzmq) that drops chosen broadcasts from PUB on purpose: the worker notices each gap, asks for
it in a heartbeat, takes the resend over its DEALER, skips what the admin says is gone, and
delivers everything else once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio
from conftest import REPO, run

from ceylon_net import Worker, on_message, wire
from ceylon_net.dev.testing import wait_until
from ceylon_net.wire import Kind

sys.path.insert(0, str(REPO / "tests" / "apps"))
from notes import Note  # the apps' message type


class Listener(Worker):
    def __init__(self, name: str, **kw) -> None:
        super().__init__(name, **kw)
        self.notes: list[int] = []

    @on_message(type=Note)
    async def on_note(self, note: Note) -> None:
        self.notes.append(note.n)


class ScriptedAdmin:
    """Just enough of an admin: welcomes, publishes numbered notes, answers repair asks."""

    beat = 1.0  # the heartbeat its WELCOME asks for

    def __init__(self) -> None:
        self.epoch = 7  # this admin process: its broadcasts and PUB heartbeats say so
        self.answer = True  # welcome a HELLO
        self.ctx = zmq.asyncio.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.pub_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.peer = b""
        self.hellos: list[wire.Hello] = []
        self.asked: list[list[int]] = []
        self.heard = -1
        self.delivered = 0  # the last broadcast the worker says it took, in order
        self.stranger = False  # does not know the worker: refuses what it sends, by msg id
        self.notes: list[int] = []  # the worker's own broadcasts, as they reached us
        self.bcasts: list[wire.Envelope] = []  # ... as they came

    def frames(self, kind: bytes, msg: object = None, seq: int | None = None) -> list[bytes]:
        type_, payload = (None, b"") if msg is None else wire.encode_payload(msg)
        header = wire.make_header("default", "admin", type_)
        header.seq = seq
        if kind == Kind.BCAST:
            header.epoch = self.epoch
        return wire.encode_frames(kind, header, payload)

    async def serve(self) -> None:
        while True:
            peer, *frames = await self.router.recv_multipart()
            await self.handle(peer, wire.decode_frames(frames))

    async def handle(self, peer: bytes, env: wire.Envelope) -> None:
        if env.kind == Kind.HELLO:
            self.peer = peer
            self.hellos.append(wire.unpack(wire.Hello, env.payload))
            if self.answer:
                await self.welcome()
        elif self.stranger:
            await self.refuse(peer, env.header.msg_id)
        else:
            self.heard_from(env)

    async def refuse(self, peer: bytes, msg_id: int) -> None:
        """'not registered', as ceylon-admin answers a peer it does not know: the worker
        registers again, and sends the message named again once welcomed."""
        await self.router.send_multipart([peer, *self.frames(
            Kind.REJECT, wire.Reject("not registered: send HELLO first", retry=True),
            seq=msg_id)])

    async def welcome(self) -> None:
        await self.router.send_multipart([self.peer, *self.frames(
            Kind.WELCOME, wire.Welcome("w", "admin", self.pub_port, self.beat, 3, self.epoch))])

    async def pub_beat(self, seq: int) -> None:
        """The PUB heartbeat: how many broadcasts this admin process has numbered."""
        beat = wire.Event("heartbeat", {"every": self.beat, "epoch": self.epoch})
        await self.pub.send_multipart([wire.topic("default") + Kind.HEARTBEAT,
                                       *self.frames(Kind.HEARTBEAT, beat, seq)])

    def heard_from(self, env: wire.Envelope) -> None:
        """Anything but a HELLO from the worker."""
        if env.kind == Kind.HEARTBEAT:
            beat = wire.unpack(wire.Heartbeat, env.payload)
            self.heard, self.delivered = beat.heard, beat.delivered
            self.asked += beat.missing
        elif env.kind == Kind.BCAST:
            self.notes.append(wire.unpack(Note, env.payload).n)
            self.bcasts.append(env)

    async def publish(self, seq: int, n: int | None = None) -> None:
        """Broadcast ``seq`` on PUB: the note ``n`` (``seq`` unless said)."""
        await self.pub.send_multipart([wire.topic("default") + Kind.BCAST,
                                       *self.frames(Kind.BCAST, Note(seq if n is None else n),
                                                    seq)])

    async def relay(self, env: wire.Envelope, seq: int) -> None:
        """Publish a broadcast as it came (its sender's header), numbered ``seq``."""
        header = dataclasses.replace(env.header, seq=seq, epoch=self.epoch)
        await self.pub.send_multipart([wire.topic("default") + Kind.BCAST,
                                       *wire.encode_frames(Kind.BCAST, header, env.payload)])

    async def restart(self, w: Listener, heard: bool = False) -> None:
        """A new admin process (the old one killed): it does not know the worker, which
        registers again and is welcomed (``heard``: and hears the new process's PUB)."""
        self.epoch += 1
        self.answer, self.stranger = False, True
        hellos = len(self.hellos)
        await w.broadcast_data(Note(-1))  # refused: the worker registers again
        await wait_until(lambda: len(self.hellos) > hellos, 10, "a new HELLO")
        self.stranger = False
        await self.welcome()
        if heard:
            self.heard = -1
            await hearing(self)

    def move_pub(self) -> None:
        """A new PUB on another port (the admin restarted with another --pub-port)."""
        self.pub.close(0)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub_port = self.pub.bind_to_random_port("tcp://127.0.0.1")

    async def resend(self, seq: int) -> None:
        await self.router.send_multipart([self.peer, *self.frames(Kind.BCAST, Note(seq), seq)])

    def close(self) -> None:
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()


class DeferringAdmin(ScriptedAdmin):
    """A restarted admin that reads what the worker's DEALER had queued for the old one (the
    kinds ``defers`` takes, while ``defer`` is set), and refuses it all, in order, once read
    (as ceylon-admin does, message by message, but answered in one go)."""

    def __init__(self, defers: Callable[[bytes], bool]) -> None:
        super().__init__()
        self.defers, self.defer = defers, False
        self.deferred: list[tuple[bytes, int, bytes]] = []  # (peer, msg id, kind)

    async def handle(self, peer: bytes, env: wire.Envelope) -> None:
        if self.defer and self.defers(env.kind):
            self.deferred.append((peer, env.header.msg_id, env.kind))
        else:
            await super().handle(peer, env)

    async def refuse_deferred(self) -> None:
        for peer, msg_id, _ in self.deferred:
            await self.refuse(peer, msg_id)
        self.deferred.clear()

    async def refuse_then_welcome(self) -> None:
        """Stop deferring, refuse what was read, and welcome the worker's new HELLO."""
        self.defer = False
        hellos = len(self.hellos)
        await self.refuse_deferred()
        await wait_until(lambda: len(self.hellos) > hellos, 10, "a new HELLO")
        self.stranger = False
        await self.welcome()


async def hearing(admin: ScriptedAdmin, seq: int = 0) -> None:
    """PUB heartbeats (``seq`` broadcasts so far) until the worker says it hears them."""
    async def hears() -> bool:
        await admin.pub_beat(seq)
        return admin.heard == seq

    await wait_until(hears, 10, "the worker to hear PUB", interval=0.02)


@contextlib.asynccontextmanager
async def against(admin: Any, w: Worker) -> AsyncIterator[asyncio.Task[Any]]:
    """A scripted admin serving and ``w`` running against it (its run, yielded); on the way
    out the worker is stopped and the admin closed, even when the test failed."""
    serving = asyncio.create_task(admin.serve())
    running = asyncio.create_task(w.arun())
    try:
        yield running
    finally:
        await w.stop()
        await asyncio.gather(running, return_exceptions=True)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        admin.close()


def scripted(script: Callable[[ScriptedAdmin, Listener], Awaitable[None]]) -> list[int]:
    """Run ``script`` with a scripted admin and a worker that hears its PUB; the notes the
    worker delivered, in order."""
    admin = ScriptedAdmin()
    w = Listener("w", admin_port=admin.port)

    async def body():
        async with against(admin, w):
            await hearing(admin)
            await script(admin, w)
        return w.notes

    return run(body())


def test_a_worker_whose_pub_stalls_asks_for_what_a_heartbeat_to_it_alone_says_was_sent():
    """Its PUB connection stalled (30 % loss: TCP backing off for minutes), a listener got
    57 of 3,000 broadcasts and waited for PUB for 145 s without knowing of the rest: the
    admin's heartbeats over the ROUTER did not say how many it had sent (a review)."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        for seq in (1, 2, 3):
            await admin.publish(seq)
        await wait_until(lambda: w.notes == [1, 2, 3], 10, "1-3 on PUB")
        beat = wire.Event("heartbeat", {"every": 1.0, "epoch": admin.epoch, "seq": 6})

        async def asked() -> bool:  # (after two heartbeats: PUB stays still meanwhile)
            await admin.router.send_multipart([admin.peer, *admin.frames(Kind.HEARTBEAT,
                                                                         beat)])
            return [4, 6] in admin.asked

        await wait_until(asked, 10, "the worker to ask for 4-6", interval=0.5)
        for seq in (4, 5, 6):
            await admin.resend(seq)
        await wait_until(lambda: w.notes == [1, 2, 3, 4, 5, 6], 10, "4-6 over the ROUTER")

    scripted(script)


def test_a_worker_asks_for_what_pub_dropped_takes_resends_and_skips_what_is_gone():
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        for seq in (1, 2, 3, 5, 6, 9, 10):  # 4, 7 and 8 "dropped"
            await admin.publish(seq)
        await wait_until(lambda: [4, 4] in admin.asked and [7, 8] in admin.asked, 10,
                         "the worker to ask for 4 and 7-8")
        assert w.notes == [1, 2, 3]  # held back: 5, 6, 9 and 10 wait for the gaps
        await admin.resend(4)
        await wait_until(lambda: w.notes == [1, 2, 3, 4, 5, 6], 10, "4, then 5 and 6")
        await admin.router.send_multipart([admin.peer, *admin.frames(
            Kind.SKIP, wire.Skip(7, 8))])  # gone from the admin's ring
        await wait_until(lambda: w.notes == [1, 2, 3, 4, 5, 6, 9, 10], 10, "9 and 10")
        await admin.resend(8)  # a late resend of what was skipped: not delivered twice
        await admin.publish(11)
        await wait_until(lambda: w.notes[-1] == 11, 10, "11")

    assert scripted(script) == [1, 2, 3, 4, 5, 6, 9, 10, 11]


def test_a_restarted_admins_broadcasts_are_not_taken_for_the_old_ones():
    """The admin restarts (a new process: a new epoch, numbering from 1 again). The worker's
    SUB reconnects to the new PUB before the worker is welcomed again, so it hears the new
    admin's first broadcasts and heartbeats while its inbox still counts the old one's. They
    must not be delivered in part: the new numbers 1..3 look like the old ones already
    delivered, and 4 and 5 would arrive with 1..3 silently missing."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        for seq in (1, 2, 3):  # the old admin's broadcasts
            await admin.publish(seq)
        await wait_until(lambda: w.notes == [1, 2, 3], 10, "1, 2, 3")
        # The restart: the new process does not know the worker and does not welcome it
        # yet, while it already publishes.
        admin.answer, admin.epoch = False, 8
        hellos = len(admin.hellos)
        await admin.router.send_multipart([admin.peer, *admin.frames(
            Kind.REJECT, wire.Reject("not registered: send HELLO first", retry=True))])
        await wait_until(lambda: len(admin.hellos) > hellos, 10, "a new HELLO")
        for seq in range(1, 6):
            await admin.publish(seq, 100 + seq)
        await admin.pub_beat(5)
        hellos = len(admin.hellos)
        await wait_until(lambda: len(admin.hellos) > hellos, 10, "the HELLO sent again")
        admin.answer = True
        await admin.welcome()
        admin.heard = -1
        await hearing(admin, 5)
        await admin.publish(6, 106)
        await wait_until(lambda: 106 in w.notes, 10, "106")

    # Broadcasts sent before the worker was registered are not its to receive, as for any
    # worker that joins; after that, everything, in order.
    assert scripted(script) == [1, 2, 3, 106]


def test_a_worker_follows_a_restarted_admins_pub_to_its_new_port():
    """The admin restarts on another --pub-port: the WELCOME that registers the worker again
    names it, and the worker's SUB moves there (it would hear nothing, for ever, on the old
    one)."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        await admin.publish(1)
        await wait_until(lambda: w.notes == [1], 10, "1")
        admin.answer, admin.epoch = False, 8
        admin.move_pub()
        hellos = len(admin.hellos)
        await admin.router.send_multipart([admin.peer, *admin.frames(
            Kind.REJECT, wire.Reject("not registered: send HELLO first", retry=True))])
        await wait_until(lambda: len(admin.hellos) > hellos, 10, "a new HELLO")
        await admin.welcome()
        admin.heard = -1
        await hearing(admin)
        await admin.publish(1, 101)
        await wait_until(lambda: 101 in w.notes, 10, "101")

    assert scripted(script) == [1, 101]


def test_broadcasts_a_restarted_admin_refused_are_sent_again_once_registered_in_order():
    """The admin restarts and does not know the worker: it refuses each of its broadcasts,
    naming it. The worker registers again and sends them once welcomed, with what it
    broadcast while registering, in the order it first sent them: none lost."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        await w.broadcast_data(Note(1))
        await wait_until(lambda: admin.notes == [1], 10, "1")
        admin.answer, admin.stranger = False, True  # the restart
        hellos = len(admin.hellos)
        await w.broadcast_data(Note(2))
        await w.broadcast_data(Note(3))
        await wait_until(lambda: len(admin.hellos) > hellos, 10, "a new HELLO")
        await w.broadcast_data(Note(4))  # while registering
        admin.stranger = False
        await admin.welcome()
        await wait_until(lambda: len(admin.notes) >= 4, 10, "2, 3 and 4")
        await w.broadcast_data(Note(5))
        await wait_until(lambda: admin.notes[-1] == 5, 10, "5")
        assert admin.notes == [1, 2, 3, 4, 5]

    scripted(script)


def test_broadcasts_a_killed_admin_took_and_did_not_relay_go_to_the_next_one():
    """The admin took 2 and 3 and was killed before relaying them (1 it relayed: it came
    back to the worker). The worker registers with the new admin process and sends 2 and 3
    again, in order, with what the new one refused; not 1."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        for n in (1, 2, 3):
            await w.broadcast_data(Note(n))
        await wait_until(lambda: admin.notes == [1, 2, 3], 10, "1, 2 and 3")
        await admin.relay(admin.bcasts[0], 1)
        await wait_until(lambda: admin.delivered >= 1, 10, "1 to come back to the worker")
        await admin.restart(w)
        await wait_until(lambda: len(admin.notes) >= 6, 10, "2, 3 and the refused one")
        await w.broadcast_data(Note(4))
        await wait_until(lambda: admin.notes[-1] == 4, 10, "4")
        assert admin.notes == [1, 2, 3, 2, 3, -1, 4]

    assert scripted(script) == []  # (its own are never delivered to itself)


def test_a_broadcast_relayed_again_by_a_new_admin_process_is_delivered_once():
    """Another worker's broadcast reached us from the old admin; the new one relays it again
    (sent again to it, the old one having died before its echo came back): not twice."""
    async def script(admin: ScriptedAdmin, w: Listener) -> None:
        header = wire.make_header("default", "other", "Note")
        again = wire.Envelope(Kind.BCAST, header, wire.encode_payload(Note(7))[1])
        await admin.relay(again, 1)
        await wait_until(lambda: w.notes == [7], 10, "7")
        await admin.restart(w)
        await hearing(admin)
        await admin.relay(again, 1)  # the same broadcast, in the new admin's numbers
        await admin.publish(2, 8)
        await wait_until(lambda: w.notes[-1] == 8, 10, "8")

    assert scripted(script) == [7, 8]
