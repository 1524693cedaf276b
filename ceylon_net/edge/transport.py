"""Sockets, and the only module that imports zmq.

Admin: a ROUTER (everything a worker says, and everything addressed to one worker) and a PUB
(the workspace's broadcast bus, topic = workspace + NUL + kind, so a subscriber takes only the
kinds it wants and the publisher filters for it). Worker: a DEALER to the ROUTER and a SUB to
the PUB. Sends on ROUTER and PUB never block: a full or vanished peer is reported to the caller,
which decides (requeue, drop), instead of stalling everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth
from loguru import logger
from zmq.auth.asyncio import AsyncioAuthenticator

from ..errors import ConfigError
from ..settings import bracket
from ..wire import KINDS
from ..wire import topic as workspace_topic

LINGER_MS = 1000
# A lost connection to the admin is retried every 0.1 s, doubling up to this: a live worker or
# client reconnects within it of a restarted admin's bind, well inside the admin's come-back
# window (ceylon_net.settings.COME_BACK_AT_LEAST); libzmq's 2 s could miss a short one.
RECONNECT_MAX_MS = 500
# A connection being made that hangs (its SYNs dropped: a host cut off, a firewall) is given
# up after this and made anew: once the link is back, a worker or client reaches the admin
# within about that, where the kernel's SYNs, backed off, went again 16 s or more later.
CONNECT_TIMEOUT_MS = 2000
# A CURVE handshake the admin refuses looks, from here, like no admin at all.
CURVE_HINT = (" With CURVE, a wrong --admin-key, or our key missing from the admin's "
              "--authorized-keys (its log names such a key), looks the same.")
# ... and without: an admin that wants CURVE hears nothing it can read.
PLAIN_HINT = (" An admin run with CURVE (--curve-secret) looks the same to one without "
              "--curve-secret and --admin-key.")


def curve_hint(curve: object) -> str:
    """Beside "no admin answered": the ways CURVE, or its absence, looks like no admin."""
    return CURVE_HINT if curve else PLAIN_HINT


# A subscription's frame (1 + its topic) the admin's PUB takes: a topic of ours is the
# workspace (at most 200 characters, 4 bytes each) and a kind; a longer one drops its sender
# (one of 3 MiB grew the admin by 140 MB: libzmq keeps some 85 bytes a byte of topic).
MAX_SUBSCRIPTION = 1024


class _Owned:
    """A context and the sockets one of our objects opened in it, closed at once (linger 0)
    should that object be dropped without close(). Left to the garbage collector, a context
    and its sockets go in one sweep in no set order, and a context whose sockets it can no
    longer see waits for ever for them to close (pyzmq's Context.__del__ -> term()): a
    program that forgot a client's close() froze at its next collection."""

    def __init__(self, owner: object) -> None:
        self.ctx = zmq.asyncio.Context()
        self._plain: zmq.Context[zmq.Socket[bytes]] | None = None
        self.sockets: list[zmq.Socket[Any]] = []
        self.watched: list[_Watched] = []  # (the event loop's readers of plain sockets)
        self.auth: AsyncioAuthenticator | None = None
        self.close = weakref.finalize(owner, self._close)  # (holds this, not the owner)
        self.close.atexit = False

    def socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        self.sockets.append(sock)
        return sock

    def plain_socket(self, kind: int) -> tuple[zmq.Socket[bytes], _Watched]:
        """A socket with the blocking API, for one that is only ever read and written with
        DONTWAIT, and what waits on it (none of zmq.asyncio's, whose first await would take
        its descriptor's reader over)."""
        if self._plain is None:
            self._plain = zmq.Context.shadow(self.ctx.underlying)
        sock = self._plain.socket(kind)
        self.sockets.append(sock)
        self.watched.append(_Watched(sock))
        return sock, self.watched[-1]

    def forget(self, sock: zmq.Socket[Any], watched: _Watched) -> None:
        """One of ours that its owner closes itself."""
        self.sockets.remove(sock)
        self.watched.remove(watched)

    def _close(self) -> None:
        """Closes what is still open, with no linger, and ends the context. The loop's
        readers first: one left on a closed socket's descriptor took the wake-ups of the next
        socket given that number (a forgotten client's made a new one's receive deaf)."""
        for watched in self.watched:
            watched.close()
        for sock in self.sockets:
            if not sock.closed:
                sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


# --------------------------------------------------------------------------- CURVE


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """Our keypair, and for a client the admin's public key."""

    public: bytes
    secret: bytes
    server: bytes | None = None


def create_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public: hand it out) and NAME.key_secret (keep it) into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0o077)  # the secret file is never readable by others, even for a moment
    try:
        public, secret = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(mask)
    Path(secret).chmod(0o600)
    Path(public).chmod(0o644)  # (the public one is to hand out)
    return Path(public), Path(secret)


def _load(path: str | Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path}: cannot load a key from it ({exc})") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:  # a CURVE key: 32 bytes, 40 characters of Z85
            raise ConfigError(f"{what} {path}: not a CURVE key (ceylon-keygen makes them)")
    return public, secret


def load_keys(secret_file: str | Path, admin_key_file: str | Path | None = None) -> CurveKeys:
    """Our keys from our secret key file; a client also names the admin's public key file."""
    public, secret = _load(secret_file, "--curve-secret")
    if secret is None:
        raise ConfigError(f"--curve-secret {secret_file} holds no secret key (that is the "
                          f"public .key file; give the .key_secret one)")
    _private(Path(secret_file))
    server = None
    if admin_key_file is not None:
        server, leaked = _load(admin_key_file, "--admin-key")
        if leaked is not None:  # (whoever reads it could pose as the admin)
            raise ConfigError(f"--admin-key {admin_key_file} is a secret key file: give the "
                              f"admin's public .key file (its .key_secret stays on the "
                              f"admin's host)")
    return CurveKeys(public, secret, server)


def _private(path: Path) -> None:
    """A secret key others on the host may read is said (whoever reads it can pose as us;
    ceylon-keygen writes it 0600): said, not refused, as a container's mounted secrets may
    come so (a review of security)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        logger.warning("--curve-secret {}: others on this host may read it (mode {:o}): "
                       "whoever does can pose as this program (chmod 600 {})", path, mode, path)


def _as_server(sock: zmq.Socket, keys: CurveKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def _v6(sock: zmq.Socket, endpoint: str) -> None:
    """An IPv6 address (``tcp://[::1]:port``) needs ZeroMQ's IPV6 option, off by default
    (without it ``::1`` is taken for an interface name), and so does a host name with IPv6
    addresses only (ZeroMQ would look for an IPv4 one for ever). Only then: with it on, a
    host name such as localhost may resolve to its IPv6 address, where an admin bound to
    IPv4 is not."""
    if "[" in endpoint or _ipv6_only(endpoint.removeprefix("tcp://").rpartition(":")[0]):
        sock.setsockopt(zmq.IPV6, 1)


def _ipv6_only(host: str) -> bool:
    """A host name that resolves to IPv6 addresses and no IPv4 one (now: one that resolves
    to none yet is taken for IPv4, as before)."""
    if not host or host == "*" or host.replace(".", "").isdigit():
        return False
    try:
        socket.getaddrinfo(host, None, socket.AF_INET)
        return False
    except (socket.gaierror, UnicodeError):
        pass
    try:
        return bool(socket.getaddrinfo(host, None, socket.AF_INET6))
    except (socket.gaierror, UnicodeError):
        return False


def _as_client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    if keys is not None:
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_serverkey = keys.server


def _authenticator(ctx: zmq.asyncio.Context, authorized_keys: str | None,
                   own: bytes) -> AsyncioAuthenticator:
    """ZAP checks every new connection to any socket of this context (ROUTER and PUB)
    against the public keys in the directory, and the admin's ``own`` (a client holding
    the admin's secret key, its container's healthcheck, could pose as it anyway)."""
    if authorized_keys is None or not Path(authorized_keys).is_dir():
        raise ConfigError(f"--authorized-keys {authorized_keys}: not a directory")
    # pyzmq's authenticator, given a file it cannot read, logs it and then refuses every
    # key, the good ones too, without a word per connection: refuse to start instead.
    keys = sorted(Path(authorized_keys).glob("*.key"))
    for path in keys:
        _load(path, "--authorized-keys: the key file")
    if not keys:
        logger.warning("--authorized-keys {}: holds no .key file: no worker or client can "
                       "connect", authorized_keys)
    auth = AsyncioAuthenticator(ctx, log=_ZapLog())
    auth.start()
    auth.configure_curve(domain="*", location=authorized_keys)
    auth.certs.setdefault("*", {})[own] = True
    return auth


class _ZapLog:
    """Where pyzmq's authenticator logs: a key it refuses at WARNING (once a minute per key:
    a misconfigured worker retries), the rest at DEBUG."""

    def __init__(self) -> None:
        self._said: dict[str, float] = {}

    def debug(self, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if not text.startswith("DENIED"):
            logger.debug("CURVE authentication: {}", text)
            return
        now = time.monotonic()
        if now - self._said.get(text, -60.0) < 60.0:
            return
        if len(self._said) >= 1000:  # many keys: someone tries them; keep the memory bounded
            self._said.clear()
        self._said[text] = now
        logger.warning("refused a connection: {} (that public key is not in "
                       "--authorized-keys)", text)

    def error(self, msg: str, *args: Any) -> None:
        logger.error("CURVE authentication: {}", msg % args if args else msg)

    info = warning = debug


class _Watched:
    """Waits for a socket to have a message (or room for one) through the event loop's own
    reader on its file descriptor: a wake-up costs a loop future, where zmq.asyncio's recv
    future cost its event handler, a future of its own and a callback more (an echo's round
    trip 309 -> 258 µs; the idle admin's wake-ups for 1,000 workers' heartbeats were a third
    of its Python time). ZeroMQ's descriptor is edge-like: it becomes readable when the
    socket's events may have changed, and reading the events, or a send or recv (which read
    them too), clears it. So the events are read before each wait, and whatever reads them
    while someone waits hands what it saw on: a look (``ready``), a send or a recv
    (``touched``)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock, self._fd = sock, sock.FD
        self._loop: asyncio.AbstractEventLoop | None = None  # the reader's, while registered
        self._waits: dict[int, asyncio.Future[bool]] = {}  # POLLIN or POLLOUT -> its wait

    def ready(self, event: int = zmq.POLLIN) -> bool:
        events = self._sock.get(zmq.EVENTS)
        for wanted, fut in self._waits.items():
            if events & wanted and not fut.done():
                fut.set_result(True)
        return bool(events & event)

    def waiting(self, event: int = zmq.POLLIN) -> bool:
        fut = self._waits.get(event)
        return fut is not None and not fut.done()

    async def wait(self, event: int = zmq.POLLIN, timeout: float | None = None) -> bool | None:
        """Until the socket has ``event``: True when it had to wait (the loop got a turn),
        False when it had it at once, None when ``timeout`` s passed first."""
        if self.ready(event):
            return False
        assert event not in self._waits, "one wait for an event at a time"
        loop = asyncio.get_running_loop()
        # (each time: cheap, no syscall when unchanged, and whatever else registered on the
        # descriptor meanwhile would have taken the reader over)
        try:
            loop.add_reader(self._fd, self._wake)
        except NotImplementedError:
            raise ConfigError("ceylon_net needs an event loop that watches file descriptors "
                              "(a selector loop; on Windows, set asyncio's "
                              "WindowsSelectorEventLoopPolicy before starting it)") from None
        self._loop = loop
        fut = self._waits[event] = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _settle, fut, None)
        try:
            return await fut
        except BaseException:
            if len(self._waits) == 1:  # (cancelled, the socket closed: no reader left
                self._unwatch()  # behind; but a wait for room, still on, needs it)
            raise
        finally:
            del self._waits[event]
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if not self._waits or self._sock.closed:
            # Readable while nobody waits (the reader busy with what it read): the loop
            # would call this every turn until the events are read. The next wait
            # registers again.
            self._unwatch()
        else:
            self.ready()

    def touched(self) -> None:
        """After a send or a recv on the socket (it read the events)."""
        if self._waits and not self._sock.closed:
            self.ready()

    def _unwatch(self) -> None:
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            self._loop = None

    def close(self, cancel: bool = False) -> None:
        """Before the socket closes: a wait still on ends as on its timeout (None), or is
        cancelled (``cancel``)."""
        self._unwatch()
        for fut in self._waits.values():
            if cancel:
                fut.cancel()
            else:
                _settle(fut, None)


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class AdminSockets:
    """ROUTER + PUB, bound on ``host``."""

    def __init__(self, host: str, max_message_bytes: int, workspace: str,
                 curve: CurveKeys | None = None, authorized_keys: str | None = None) -> None:
        self._owned = _Owned(self)
        self.host, self.max_message_bytes = host, max_message_bytes
        if curve is not None:
            self._owned.auth = _authenticator(self._owned.ctx, authorized_keys, curve.public)
        self.busy = False  # the last recv_batch gave the event loop no turn (see recv_batch)
        self.full = False  # ... it stopped at its limit: more may be waiting
        # Every read and send on it is one that cannot wait (DONTWAIT), and the wait for a
        # message is the event loop's reader (_Watched).
        self.router, self._watched = self._owned.plain_socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.LINGER, LINGER_MS)
        # Per peer. Sending: a worker's traffic is batched, so a few thousand messages is
        # plenty, and a non-reading peer cannot make the admin hold more than that for it.
        # Receiving: ZeroMQ reads every connection into its queue ahead of us, and a flood
        # from many short-lived connections (each a new queue) grew the admin by 290 MB at
        # 1,000; at 8 a peer that sends faster than we read is pushed back over TCP instead,
        # and honest throughput is unchanged (results travel in batches).
        self.router.setsockopt(zmq.SNDHWM, 10_000)
        self.router.setsockopt(zmq.RCVHWM, 8)
        # XPUB: a PUB that tells us what its subscribers want, so events nobody subscribed
        # to are not even packed and sent (workers subscribe to broadcasts only). Anyone may
        # subscribe (without CURVE): see MAX_SUBSCRIPTION and follow_subscriptions.
        self.pub = self._owned.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, LINGER_MS)
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        # Per subscriber: what a slow one falls further behind is repaired from the ring the
        # admin keeps (core/broadcasts.py RING, shared by all), and 1,000 slow ones must not
        # make the admin hold 100,000 messages each.
        self.pub.setsockopt(zmq.SNDHWM, 10_000)
        if curve is not None:
            _as_server(self.router, curve)
            _as_server(self.pub, curve)
        self._subscribers(workspace)

    def _subscribers(self, workspace: str) -> None:
        """What the PUB's subscribers want, as we know it."""
        self.subscriptions: set[bytes] = set()
        self._wanted: dict[bytes, bool] = {}  # kind -> does anyone subscribe to it
        # told the kinds anyone subscribes to, whenever that changes
        self.on_subscriptions: Callable[[frozenset[bytes]], None] | None = None
        self.topic = workspace_topic(workspace)
        self._topics = [self.topic + kind for kind in KINDS]

    def bind(self, port: int, pub_port: int | None) -> tuple[int, int]:
        """Bind both sockets; port 0 picks a free port. Returns (port, pub_port)."""
        if pub_port is None:
            pub_port = 0 if port == 0 else port + 1
        port = self._bind(self.router, port, "--port")
        pub_port = self._bind(self.pub, pub_port, "--pub-port")
        return port, pub_port

    def _bind(self, sock: zmq.Socket[Any], port: int, option: str) -> int:
        url = f"tcp://{bracket(self.host)}"
        _v6(sock, url)
        try:
            if port == 0:
                return sock.bind_to_random_port(url, min_port=20000, max_port=60000)
            sock.bind(f"{url}:{port}")
            return port
        except zmq.ZMQError as exc:
            hint = " (is another admin running? choose another port)" \
                if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot bind {url}:{port} for {option}: {exc.strerror}{hint}") \
                from None

    async def recv_batch(self, limit: int = 512, max_bytes: int = 4 << 20
                         ) -> list[tuple[bytes, list[bytes], str]]:
        """Wait for one message on the ROUTER, then take whatever else is already queued, up
        to ``limit`` messages or ``max_bytes`` (what stays queued is held by ZeroMQ within its
        high-water mark, not copied into Python all at once); each as its peer's identity,
        its frames, and the peer's address ('' when unknown). ``busy`` afterwards: it did not
        wait (its first message was there already) or stopped at its limit (``full``: more
        may be waiting), so the event loop got no turn, and the caller should give it one."""
        waited = await self._watched.wait()
        batch: list[tuple[bytes, list[bytes], str]] = []
        size = 0
        recv, more = self.router.recv, self.router.getsockopt
        while len(batch) < limit and size < max_bytes:
            try:  # (the identity as a frame: it carries the connection's address; the rest
                # as bytes, a third cheaper than frames: 12 against 18 µs a message)
                identity = recv(zmq.DONTWAIT, copy=False)
            except zmq.Again:
                break
            frames = []
            while more(zmq.RCVMORE):
                frames.append(recv(zmq.DONTWAIT))
            batch.append((identity.bytes, frames, peer_address(identity)))
            size += sum(map(len, frames))
        self.full = len(batch) >= limit or size >= max_bytes
        self.busy = not waited or self.full
        if not batch:  # (the events said a message, and none was there)
            return await self.recv_batch(limit, max_bytes)
        return batch

    def caught_up(self) -> bool:
        """Everything that reached the ROUTER has been read: the receive loop waits on it,
        nothing read into its wait yet, nothing queued. (A decision on a deadline waits for
        this: see ceylon_net.edge.admin's timers.)"""
        if not self._watched.waiting() or self.router.closed:
            return self.router.closed
        return not self._watched.ready()

    def send(self, identity: bytes, frames: Sequence[bytes]) -> bool:
        """Send to one worker without blocking; False when it is gone or its queue is full."""
        try:
            self.router.send_multipart([identity, *frames], flags=zmq.DONTWAIT)
        except zmq.ZMQError:  # (zmq.Again among them)
            return False
        finally:
            self._watched.touched()
        return True

    async def follow_subscriptions(self) -> None:
        """Keep ``subscriptions`` current (XPUB reports a topic's first subscribe and its
        last unsubscribe), with those that can match a topic of ours: another is not kept,
        as each new one made a scan of all held (4,000 distinct ones from a stranger took 12
        s of the admin's CPU)."""
        while True:
            frame = await self.pub.recv()
            on, topic = frame[:1], frame[1:]
            if on not in (b"\x00", b"\x01") or not any(t.startswith(topic)
                                                       for t in self._topics):
                continue  # (one that matches none of ours changes nothing)
            if on == b"\x01":
                self.subscriptions.add(topic)
            else:
                self.subscriptions.discard(topic)
            self._wanted.clear()
            if self.on_subscriptions is not None:
                self.on_subscriptions(frozenset(k for k in KINDS if self.wanted(k)))

    def wanted(self, kind: bytes) -> bool:
        """Does any subscriber want this kind of event? (Asked several times a message;
        the answer changes only when a subscription does.)"""
        known = self._wanted.get(kind)
        if known is None:
            topic = self.topic + kind
            known = self._wanted[kind] = any(topic.startswith(s) for s in self.subscriptions)
        return known

    def publish(self, kind: bytes, frames: Sequence[bytes]) -> None:
        if not self.wanted(kind):
            return
        fut = self.pub.send_multipart([self.topic + kind, *frames], flags=zmq.DONTWAIT)
        # PUB drops under pressure by design and nothing correct depends on it; reading the
        # outcome only marks it seen.
        fut.exception()

    def close(self, linger_ms: int = LINGER_MS) -> None:
        self._watched.close(cancel=True)  # (as a zmq.asyncio recv future was)
        self.router.close(linger_ms)
        self.pub.close(linger_ms)
        self._owned.close()


def peer_address(frame: zmq.Frame) -> str:
    """The remote address a frame came from, as libzmq saw it ('' when unknown)."""
    try:
        return frame.get("Peer-Address") or ""
    except (zmq.ZMQError, AttributeError):
        return ""


class WorkerSockets:
    """DEALER to the admin's ROUTER; SUB to its PUB once the welcome says where."""

    def __init__(self, name: str, endpoint: str, max_message_bytes: int,
                 curve: CurveKeys | None = None) -> None:
        self._owned = _Owned(self)
        self.endpoint = endpoint
        self.curve = curve
        # A unique identity per process: a restarted worker is a new peer to the ROUTER.
        self.identity = f"{name}/{uuid.uuid4().hex[:8]}".encode()
        self.dealer, watched = self._owned.plain_socket(zmq.DEALER)  # (as AdminSockets')
        self.link = _Link(self.dealer, watched)
        self.busy = False  # as AdminSockets.busy
        self.dealer.setsockopt(zmq.IDENTITY, self.identity)
        self.dealer.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.dealer.setsockopt(zmq.LINGER, LINGER_MS)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        self.dealer.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        _as_client(self.dealer, curve)
        _v6(self.dealer, endpoint)
        self.dealer.connect(endpoint)
        self.sub: zmq.Socket[bytes] | None = None
        self.sub_endpoint = ""
        self._sub_watched: _Watched | None = None

    def subscribe(self, host: str, pub_port: int, topics: Sequence[bytes]) -> bool:
        """Hear the admin's PUB at ``pub_port``; called again with another port (a restarted
        admin moved its PUB), the SUB moves there. True when it connected somewhere new."""
        endpoint = f"tcp://{bracket(host)}:{pub_port}"
        if self.sub is None:
            self.sub, self._sub_watched = self._owned.plain_socket(zmq.SUB)  # (as AdminSockets')
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
            _as_client(self.sub, self.curve)
            _v6(self.sub, endpoint)
            for t in topics:
                self.sub.setsockopt(zmq.SUBSCRIBE, t)
        elif endpoint == self.sub_endpoint:
            return False
        else:
            self.sub.disconnect(self.sub_endpoint)
        self.sub.connect(endpoint)
        self.sub_endpoint = endpoint
        assert self._sub_watched is not None
        self._sub_watched.touched()  # (a connect reads the socket's events too)
        return True

    def send_soon(self, frames: Sequence[bytes]) -> None:
        """Send to the admin without waiting: at once, or queued in order behind earlier sends
        while the connection is down (what does not leave is found by the heartbeats)."""
        self.link.send_soon(frames)

    async def send(self, frames: Sequence[bytes], timeout: float | None = None) -> bool:
        """Send to the admin; False when it could not leave within ``timeout`` s (no
        connection: the admin is down, or it refused our keys): it does not leave later."""
        return await self.link.send(frames, timeout)

    async def recv(self, timeout: float) -> list[bytes] | None:
        """Next message from the admin, or None after ``timeout`` seconds."""
        return await self.link.recv(timeout)

    async def recv_batch(self, timeout: float, limit: int = 512) -> list[list[bytes]]:
        """Wait up to ``timeout`` s for a message from the admin, then take whatever else is
        already queued (one wake-up for a burst). Empty on timeout."""
        batch, waited = await self.link.take(timeout, limit)
        self.busy = bool(batch) and not waited  # the event loop got no turn
        return batch

    async def recv_broadcasts(self, limit: int = 256) -> list[list[bytes]]:
        """Wait for a message on the PUB bus, then take what else is queued, up to
        ``limit``."""
        assert self.sub is not None and self._sub_watched is not None
        return (await _take(self.sub, self._sub_watched, limit, None))[0]

    def close(self, linger_ms: int = LINGER_MS) -> None:
        if self._sub_watched is not None:
            self._sub_watched.close()
        self.link.close(linger_ms)
        self._owned.close()


class _Link:
    """A DEALER to the admin, read and written without zmq.asyncio (see _Watched). What
    cannot leave at once (no connection yet, its queue full) waits in order in a backlog, each
    with the future of a send() that waits for it (None: send_soon), and a task sends it as
    room comes."""

    def __init__(self, sock: zmq.Socket[bytes], watched: _Watched) -> None:
        self.sock, self._watched = sock, watched
        self._backlog: deque[tuple[Sequence[bytes], asyncio.Future[bool] | None]] = deque()
        self._draining: asyncio.Task[None] | None = None

    def send_soon(self, frames: Sequence[bytes]) -> None:
        try:
            if not self._backlog and self._send_now(frames):
                return
        except zmq.ZMQError:
            return  # (the socket closed: nothing to send on)
        self._queue(frames, None)

    async def send(self, frames: Sequence[bytes], timeout: float | None = None) -> bool:
        """False when ``frames`` could not leave within ``timeout`` s: they do not leave
        later."""
        if not self._backlog and self._send_now(frames):
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue(frames, fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut  # (given up on, the future is cancelled: it is skipped)
        except TimeoutError:  # (... or it left in the turn the time ran out)
            return fut.done() and not fut.cancelled() and fut.exception() is None

    def _send_now(self, frames: Sequence[bytes]) -> bool:
        try:
            self.sock.send_multipart(frames, flags=zmq.DONTWAIT)
            return True
        except zmq.Again:
            return False
        finally:
            self._watched.touched()

    def _queue(self, frames: Sequence[bytes], fut: asyncio.Future[bool] | None) -> None:
        self._backlog.append((frames, fut))
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Sends the backlog in order as the socket has room."""
        backlog = self._backlog
        try:
            while backlog:
                frames, fut = backlog[0]
                if fut is not None and fut.done():  # (its send() gave up on it)
                    backlog.popleft()
                elif self._send_now(frames):
                    backlog.popleft()
                    if fut is not None:
                        fut.set_result(True)
                else:
                    await self._watched.wait(zmq.POLLOUT)
        except zmq.ZMQError as exc:  # (the socket closed)
            for _, fut in backlog:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
            backlog.clear()
        finally:
            self._draining = None

    async def take(self, timeout: float | None, limit: int) -> tuple[list[list[bytes]], bool]:
        """See _take. After close(), as on a timeout."""
        return await _take(self.sock, self._watched, limit, timeout)

    async def recv(self, timeout: float) -> list[bytes] | None:
        """The next message, or None after ``timeout`` s (or close())."""
        return await _recv(self.sock, self._watched, timeout)

    def close(self, linger_ms: int) -> None:
        """What waits to be sent is dropped (a send() waiting for it cancelled, as a
        zmq.asyncio send future was), a receive waiting returns as on its timeout."""
        self._watched.close()
        if self._draining is not None:
            self._draining.cancel()
        for _, fut in self._backlog:
            if fut is not None:
                fut.cancel()
        self._backlog.clear()
        self.sock.close(linger_ms)


async def _take(sock: zmq.Socket, watched: _Watched, limit: int,
                timeout: float | None) -> tuple[list[list[bytes]], bool]:
    """Wait up to ``timeout`` s (None: for ever) for a message on ``sock``, then take what
    else is queued, up to ``limit`` messages (empty on timeout); and whether it waited (the
    event loop had a turn)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    batch: list[list[bytes]] = []
    waited = False
    while not batch:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        woke = None if sock.closed else await watched.wait(zmq.POLLIN, left)
        if woke is None or sock.closed:  # (closed: a client renewed its link meanwhile)
            return batch, True
        waited = waited or woke
        while len(batch) < limit:
            try:
                batch.append(sock.recv_multipart(zmq.DONTWAIT))
            except zmq.Again:
                break
        watched.touched()  # (the reads read the events: a send may wait for room)
    return batch, waited


async def _recv(sock: zmq.Socket, watched: _Watched, timeout: float) -> list[bytes] | None:
    """The next message on ``sock``, or None after ``timeout`` s (see _take)."""
    batch, _ = await _take(sock, watched, 1, timeout)
    return batch[0] if batch else None


class Client:
    """A client's DEALER to the admin's ROUTER (ceylon-status, ceylon-submit, a Client's
    futures). ``identity`` keeps its name across reconnects (the admin restarted)."""

    def __init__(self, endpoint: str, max_message_bytes: int,
                 curve: CurveKeys | None = None, identity: bytes | None = None) -> None:
        self._owned = _Owned(self)
        self._args = endpoint, max_message_bytes, curve, identity
        self.link = self._link()

    def _link(self) -> _Link:
        endpoint, max_message_bytes, curve, identity = self._args
        sock, watched = self._owned.plain_socket(zmq.DEALER)  # (as AdminSockets')
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        _as_client(sock, curve)
        _v6(sock, endpoint)
        sock.connect(endpoint)
        return _Link(sock, watched)

    def renew(self) -> None:
        """A new connection in place of this one, and what waited on it to be sent (the
        admin away) dropped: requests given up on must not reach an admin that comes up
        later. A receive waiting on the old one returns None."""
        old, self.link = self.link, self._link()
        self._owned.forget(old.sock, old._watched)
        old.close(0)

    def send_soon(self, frames: Sequence[bytes]) -> None:
        """Send without waiting: at once, or queued in order while the admin is away."""
        self.link.send_soon(frames)

    async def receive(self, timeout: float) -> list[bytes] | None:
        """The next message from the admin, or None after ``timeout`` s."""
        return await self.link.recv(timeout)

    def close(self) -> None:
        self.link.close(0)
        self._owned.close()


class Subscriber:
    """A read-only view of a workspace's PUB bus (observers, tests, status tools)."""

    def __init__(self, host: str, pub_port: int, workspace: str, kinds: Sequence[bytes] = (b"",),
                 curve: CurveKeys | None = None):
        self._owned = _Owned(self)
        self.sock, self._watched = self._owned.plain_socket(zmq.SUB)  # (as AdminSockets')
        self.sock.setsockopt(zmq.LINGER, 0)
        _as_client(self.sock, curve)
        base = workspace_topic(workspace)
        for kind in kinds:
            self.sock.setsockopt(zmq.SUBSCRIBE, base + kind)
        endpoint = f"tcp://{bracket(host)}:{pub_port}"
        _v6(self.sock, endpoint)
        self.sock.connect(endpoint)

    async def recv(self, timeout: float) -> list[bytes] | None:
        return await _recv(self.sock, self._watched, timeout)

    def close(self) -> None:
        self._owned.close()


async def why_unreachable(endpoint: str, timeout: float = 2.0) -> str:
    """Said beside "no admin answered": that the endpoint's host name does not resolve, when
    it does not (ZeroMQ keeps retrying such a name without a word)."""
    return (await _lookup(endpoint, timeout))[0]


async def _lookup(endpoint: str, timeout: float) -> tuple[str, bool]:
    """What looking up the endpoint's host name says ("" when it resolves), and whether
    that settles it: it does not resolve (not merely slow to answer)."""
    host = endpoint.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().getaddrinfo(host, None)
    except socket.gaierror as exc:
        return f"; the host name {host!r} does not resolve ({exc.strerror})", True
    except (TimeoutError, OSError):
        return f"; looking up the host name {host!r} did not answer within {timeout:g} s", False
    return "", False


async def why_no_answer(endpoint: str, curve: object, question: str) -> str:
    """Said after "no admin answered at ENDPOINT within T s": that its host name does not
    resolve, when it does not (what else could be wrong does not matter then); otherwise
    ``question`` (is an admin running there?) and the CURVE hint, in parentheses, and a host
    name lookup that did not answer."""
    why, settled = await _lookup(endpoint, 2.0)
    return why if settled else f" ({question}{curve_hint(curve)}{why})"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests and the demo), taken below the range
    the kernel gives outgoing connections their ports from: one made between this check and
    the program's bind cannot take it (a port the kernel picks, bound to 0, is in that range).
    """
    low = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(max(1024, low - 12_000), low)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # (in use)
            return port
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))  # (all taken: any the kernel gives)
        return s.getsockname()[1]


def _ephemeral_low(default: int = 32_768) -> int:
    """The lowest port the kernel gives outgoing connections (Linux; else the usual)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default
    return low if low > 2_048 else default
