"""The sockets' receive loops: a receive whose message was already queued does not yield to
the event loop (awaiting a finished future does not), so it says so, and the admin's and the
worker's loops then give the loop a turn. Once only a full batch did: under steady load (W1)
the admin's acknowledgement timer waited for seconds, and its workers' heartbeats named
8,000 unacknowledged results where the credit allows about 1,000 tasks in flight."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time

import pytest
import zmq
import zmq.asyncio
from conftest import run

from ceylon_net.edge.transport import AdminSockets, Client, WorkerSockets, free_port
from ceylon_net.errors import ConfigError

# A send reads the socket's commands (the news of a message among them) only when some
# 3 million CPU cycles have passed since it last did (libzmq's throttle): a send this soon
# after the last read may leave the news where the descriptor tells of it.
THROTTLE = 0.005


def _queued(sock: zmq.Socket) -> None:
    """Until a message waits on ``sock`` (nothing read; the loop blocked meanwhile)."""
    assert sock.poll(10_000, zmq.POLLIN), "no message came"


@pytest.mark.timeout(30)
def test_an_admin_receive_that_did_not_wait_asks_for_a_turn_of_the_loop():
    """(And each message comes with its sender's address.)"""
    async def body() -> list[tuple[list[tuple[list[bytes], str]], bool]]:
        admin = AdminSockets("127.0.0.1", 1 << 20, "default")
        port, _ = admin.bind(0, 0)
        ctx = zmq.asyncio.Context()
        peer = ctx.socket(zmq.DEALER)
        peer.connect(f"tcp://127.0.0.1:{port}")
        seen = []
        try:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, peer.send, b"late")  # nothing queued yet: it waits
            batch = await asyncio.wait_for(admin.recv_batch(), 10)
            seen.append(([(frames, at) for _, frames, at in batch], admin.busy))
            await peer.send(b"early")
            _queued(admin.router)
            batch = await asyncio.wait_for(admin.recv_batch(), 10)
            seen.append(([(frames, at) for _, frames, at in batch], admin.busy))
        finally:
            peer.close(0)
            ctx.term()
            admin.close(0)
        return seen

    assert run(body()) == [([([b"late"], "127.0.0.1")], False),
                           ([([b"early"], "127.0.0.1")], True)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("took_it_in", ["a send", "a look at the events"])
def test_an_admin_waiting_hears_a_message_whose_news_something_else_took_in(took_it_in):
    """ZeroMQ's descriptor tells of a message once, and a send or a look at the socket's
    events made as it comes takes that in: the admin's receive must still hear of it (a
    timer's send while it waited, a deadline's look whether it has read everything)."""
    async def body() -> list[bytes]:
        admin = AdminSockets("127.0.0.1", 1 << 20, "default")
        admin.router.bind("inproc://admin")  # (inproc: the news is in as the send returns)
        ctx = zmq.Context.shadow(admin.router.context.underlying)
        peer = ctx.socket(zmq.DEALER)
        peer.connect("inproc://admin")
        try:
            receiving = asyncio.ensure_future(admin.recv_batch())
            for _ in range(100):  # until it waits on the descriptor
                await asyncio.sleep(0)
                if admin.caught_up():
                    break
            assert admin.caught_up(), "the receive never waited"
            peer.send(b"news")
            time.sleep(THROTTLE)
            if took_it_in == "a send":
                assert not admin.send(b"nobody", [b"x"])  # (no such peer; read the news)
            else:
                assert not admin.caught_up()
            batch = await asyncio.wait_for(receiving, 5)
        finally:
            peer.close(0)
            admin.close(0)
        return [frames[-1] for _, frames, _ in batch]

    assert run(body()) == [b"news"]


@pytest.mark.timeout(30)
def test_a_worker_receive_that_did_not_wait_asks_for_a_turn_of_the_loop():
    async def body() -> list[tuple[list[list[bytes]], bool]]:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        worker = WorkerSockets("w", f"tcp://127.0.0.1:{port}", 1 << 20)
        seen = []
        try:
            worker.send_soon([b"hello"])
            identity, _ = await router.recv_multipart()
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, router.send_multipart, [identity, b"late"])
            seen.append((await worker.recv_batch(10), worker.busy))
            await router.send_multipart([identity, b"early"])
            _queued(worker.dealer)
            seen.append((await worker.recv_batch(10), worker.busy))
        finally:
            worker.close(0)
            router.close(0)
            ctx.term()
        return seen

    assert run(body()) == [([[b"late"]], False), ([[b"early"]], True)]


@pytest.mark.timeout(30)
def test_a_worker_waiting_hears_a_message_whose_news_its_own_send_took_in():
    """As for the admin: a worker's result sent as the admin's next assignment comes in
    must not leave that assignment unheard."""
    async def body() -> list[list[bytes]]:
        worker = WorkerSockets("w", "inproc://admin-w", 1 << 20)
        ctx = zmq.Context.shadow(worker.dealer.context.underlying)
        router = ctx.socket(zmq.ROUTER)
        router.bind("inproc://admin-w")
        try:
            worker.send_soon([b"hello"])
            identity, _ = router.recv_multipart()  # (blocking: inproc, it is there)
            receiving = asyncio.ensure_future(worker.recv_batch(5))
            await asyncio.sleep(0)  # (it waits on the descriptor now)
            assert not receiving.done()
            router.send_multipart([identity, b"task"])
            time.sleep(THROTTLE)
            worker.send_soon([b"result"])  # (took in the news of the task)
            return await asyncio.wait_for(receiving, 10)
        finally:
            router.close(0)  # (first: the worker's close ends the context they share)
            worker.close(0)

    assert run(body()) == [[b"task"]]


@pytest.mark.timeout(60)
def test_what_a_worker_sends_while_its_admin_is_away_leaves_in_order_when_it_comes():
    """More than the socket's queue holds waits, in order, and goes once the admin is
    there, also after a receive was cancelled meanwhile (a worker's stop: its goodbye was
    left waiting); a send() that gave up on its wait does not leave later."""
    async def body() -> tuple[list[bytes], bool]:
        port = free_port()
        worker = WorkerSockets("w", f"tcp://127.0.0.1:{port}", 1 << 20)
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        try:
            for i in range(2500):  # (ZeroMQ queues 1,000; the rest wait with us)
                worker.send_soon([b"%d" % i])
            gave_up = await worker.send([b"given up"], 0.05)
            receiving = asyncio.ensure_future(worker.recv_batch(10))
            await asyncio.sleep(0)
            receiving.cancel()  # (a receive cancelled, as a stop does: the rest still go)
            with pytest.raises(asyncio.CancelledError):
                await receiving
            router.bind(f"tcp://127.0.0.1:{port}")
            last = await worker.send([b"last"], 10)
            got: list[bytes] = []
            while not got or got[-1] != b"last":
                _, body = await asyncio.wait_for(router.recv_multipart(), 10)
                got.append(body)
        finally:
            worker.close(0)
            router.close(0)
            ctx.term()
        return got, gave_up or not last

    got, failed = run(body())
    assert not failed
    assert got == [b"%d" % i for i in range(2500)] + [b"last"]


@pytest.mark.timeout(30)
def test_a_client_renewing_its_link_as_an_answer_comes_ends_its_receive_as_on_a_timeout():
    """The answer's news reaches the receive, and in the same loop turn the client gives up
    on the link (a request unanswered, a lost admin) and makes a new one: the receive says
    nothing came (the client asks again on the new link), where it failed on the closed
    socket and the whole client with it."""
    async def body() -> list[bytes] | None:
        client = Client("inproc://admin-c", 1 << 20)
        ctx = zmq.Context.shadow(client.link.sock.context.underlying)
        router = ctx.socket(zmq.ROUTER)
        router.bind("inproc://admin-c")
        loop = asyncio.get_running_loop()
        try:
            client.send_soon([b"hello"])
            identity, _ = router.recv_multipart()  # (blocking: inproc, it is there)
            receiving = asyncio.ensure_future(client.receive(5))
            await asyncio.sleep(0)  # (it waits on the descriptor now)
            router.send_multipart([identity, b"answer"])
            await asyncio.sleep(0)  # this turn's reader callback hands the news on ...
            loop.call_soon(client.renew)  # ... and the renew comes before the receive goes on
            return await asyncio.wait_for(receiving, 5)
        finally:
            router.close(0)
            client.close()

    assert run(body()) is None


@pytest.mark.timeout(30)
def test_an_event_loop_that_cannot_watch_descriptors_is_said_so():
    """Windows' default (proactor) loop has no add_reader: the receive says what to use."""
    class NoReaders(asyncio.SelectorEventLoop):  # (as the proactor loop: neither)
        def add_reader(self, *args: object) -> None:  # type: ignore[override]
            raise NotImplementedError

        def remove_reader(self, *args: object) -> bool:  # type: ignore[override]
            raise NotImplementedError

    async def body() -> None:
        admin = AdminSockets("127.0.0.1", 1 << 20, "default")
        admin.bind(0, 0)
        try:
            await admin.recv_batch()
        finally:
            admin.close(0)

    loop = NoReaders()
    try:
        with pytest.raises(ConfigError, match="WindowsSelectorEventLoopPolicy"):
            loop.run_until_complete(asyncio.wait_for(body(), 10))
    finally:
        loop.close()


@pytest.mark.timeout(30)
def test_a_forgotten_client_leaves_no_reader_behind_for_the_next_socket():
    """A client dropped without close() (its sockets closed by the collector) took the
    wake-ups of the next socket given its descriptor's number: that one's receive timed out
    with the answer waiting."""
    async def body() -> tuple[bool, list[bytes] | None]:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
        try:
            forgotten = Client(endpoint, 1 << 20)
            number = forgotten.link.sock.FD
            assert await forgotten.receive(0.05) is None  # (its reader stays, as after a wait)
            del forgotten
            gc.collect()
            client = Client(endpoint, 1 << 20)
            try:
                client.send_soon([b"ping"])
                identity, _ = await asyncio.wait_for(router.recv_multipart(), 10)
                await router.send_multipart([identity, b"pong"])
                return number == client.link.sock.FD, await client.receive(5)
            finally:
                client.close()
        finally:
            router.close(0)
            ctx.term()

    same_number, got = run(body())
    assert same_number, "the new socket got another descriptor: nothing was tried"
    assert got == [b"pong"]


@pytest.mark.timeout(30)
def test_a_send_that_leaves_as_its_time_runs_out_says_it_left():
    """The loop held up (a collection, a slow handler): the frames leave, and the send's
    time runs out in the same turn. It said False, and a heartbeat that went was not
    counted as gone."""
    async def body() -> bool:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        sockets = WorkerSockets("w", f"tcp://127.0.0.1:{port}", 1 << 20)
        link = sockets.link
        try:
            link._backlog.append(([b"waits"], None))  # (sends wait their turn: no room)
            link._draining = asyncio.get_running_loop().create_future()  # type: ignore
            sending = asyncio.create_task(sockets.send([b"beat"], 0.05))
            await asyncio.sleep(0)  # (it waits for its turn)
            time.sleep(0.1)  # the loop held up past the send's time ...
            _, fut = link._backlog[-1]
            assert fut is not None
            # ... and the frames leave in the turn that finds the time run out
            asyncio.get_running_loop().call_soon(fut.set_result, True)
            return await sending
        finally:
            sockets.close(0)
            router.close(0)
            ctx.term()

    assert run(body()) is True


def test_a_stop_that_comes_as_a_send_completes_is_not_lost():
    """asyncio.wait_for (3.11) returned the send's result when the task awaiting it was
    cancelled in the same loop turn as the send completed: an embedded Worker's heartbeat
    loop then never stopped, and Worker.arun() hung after the admin ended the run."""
    async def body() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        sockets = WorkerSockets("w", f"tcp://127.0.0.1:{port}", 1 << 20)
        try:
            sockets.send_soon([b"first"])
            sockets.link._backlog.append(([b"waits"], None))  # (a send queued behind it: no room)
            sending = asyncio.create_task(sockets.send([b"beat"], 1.0))
            await asyncio.sleep(0)  # (one turn: it now waits for the send)
            _, fut = sockets.link._backlog[-1]
            assert fut is not None
            fut.set_result(True)  # the send leaves ...
            sending.cancel()  # ... and the stop comes, in the same turn
            with pytest.raises(asyncio.CancelledError):
                await sending
        finally:
            sockets.close(0)
            router.close(0)
            ctx.term()

    run(body())


UNCLOSED = """
import asyncio, gc
from ceylon_net import Admin, AsyncClient, Worker
from ceylon_net.edge.transport import free_port

async def forgetful():
    port = free_port()
    admin = Admin(port=port)
    await admin.start()
    worker = Worker("w", admin_port=port)
    running = asyncio.create_task(worker.arun())
    client = AsyncClient(f"127.0.0.1:{port}")
    await client.connect()
    await asyncio.wait_for(client.status(), 10)
    return running  # and none of the three closed

asyncio.run(forgetful())
gc.collect()
print("carried on")
"""


@pytest.mark.timeout(60)
def test_a_program_that_forgets_to_close_its_admin_worker_and_client_carries_on(tmp_path):
    """Their sockets are closed when they are collected. Before, pyzmq's context, collected
    with sockets it could no longer see, waited for them for ever: the program froze."""
    script = tmp_path / "forgetful.py"
    script.write_text(UNCLOSED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "carried on\n"), done.stderr[-2000:]


def test_a_free_port_is_bindable_and_outside_the_range_outgoing_connections_take():
    """Tests and the demo pick a port, then a program binds it: a port the kernel picked
    (bound to 0) is in the range it also gives outgoing connections, so one made in between,
    by a test running beside, could take it."""
    import socket
    from pathlib import Path

    from ceylon_net.edge.transport import free_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert all(1024 <= p < low for p in ports), ports
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_only_a_name_without_an_ipv4_address_turns_zeromqs_ipv6_on():
    """localhost keeps IPv4 (with IPV6 on it may resolve to ::1, where an admin bound to
    IPv4 is not); addresses and names that do not resolve are left as they were."""
    from ceylon_net.edge.transport import _ipv6_only

    assert not any(map(_ipv6_only, ["localhost", "127.0.0.1", "*", "", "no-such-host.invalid"]))
