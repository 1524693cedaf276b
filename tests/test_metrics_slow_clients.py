"""The metrics endpoint against slow clients ("slowloris"): it serves MAX_SCRAPES connections
at once and closes more, and its socket timeout is per read, so clients that sent half a
request line and then a byte now and then held every place for as long as they liked, and
every real scrape was closed at once (a review). Each connection now has a deadline for its
whole exchange, after which it is cut and its place freed."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import pytest

from ceylon_net.core.admin_state import AdminState
from ceylon_net.core.snapshot import metrics
from ceylon_net.edge import metrics as metrics_edge
from ceylon_net.settings import AdminSettings

PLACES = 2
DRIBBLE_EVERY = 0.2  # seconds between the attackers' bytes: the attack itself
ATTACK_SECONDS = 15  # how long the attackers keep dribbling, at most
T = TypeVar("T")


def _slow_client(port: int, opened: list[socket.socket]) -> socket.socket:
    """A connection that has sent half a request line (kept in ``opened``, to be closed)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    opened.append(conn)
    conn.sendall(b"GET /metr")
    return conn


def _dribble(port: int, conns: list[socket.socket | None], stop: threading.Event,
             opened: list[socket.socket]) -> None:
    """A byte on each of ``conns`` every DRIBBLE_EVERY s, until ``stop`` or ATTACK_SECONDS;
    a connection the server cut is opened again, so that the places are asked for all
    along."""
    until = time.monotonic() + ATTACK_SECONDS
    while not stop.wait(DRIBBLE_EVERY) and time.monotonic() < until:
        for i, conn in enumerate(conns):
            try:
                conns[i] = conn = conn or _slow_client(port, opened)
                conn.sendall(b"i")
            except OSError:  # (cut by the server: come again)
                conns[i] = None


def _scrape(port: int) -> tuple[int, str] | None:
    """GET /metrics, or None when the server closed the connection unanswered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return r.status, r.read().decode()
    except OSError:  # (closed at once: no place free)
        return None


def _within(seconds: float, attempt: Callable[[], T | None]) -> T | None:
    """``attempt()`` again and again until it gives something, for ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (got := attempt()) is not None:
            return got
    return None


@pytest.mark.timeout(60)
def test_a_scrape_is_answered_while_slow_clients_dribble(monkeypatch):
    monkeypatch.setattr(metrics_edge, "MAX_SCRAPES", PLACES)
    # (raising=False: before the fix there was no deadline to shorten, and the test fails on
    # what it asserts rather than on the name)
    monkeypatch.setattr(metrics_edge, "EXCHANGE_SECONDS", 1.0, raising=False)
    state = AdminState(AdminSettings(port=0), now=0.0)
    server = metrics_edge.MetricsServer(lambda: metrics(state), "127.0.0.1", 0)
    stop, opened, conns = threading.Event(), [], []
    attack = threading.Thread(target=_dribble, args=(server.port, conns, stop, opened),
                              daemon=True)
    try:
        # (connected before any scrape: the server takes connections in turn, so these have
        # the places first)
        conns += [_slow_client(server.port, opened) for _ in range(PLACES)]
        attack.start()
        answer = _within(5, lambda: _scrape(server.port))
        assert answer is not None, "no scrape answered in 5 s while slow clients dribbled"
        status, body = answer
        assert status == 200
        assert "ceylon_workers_connected" in body
    finally:
        stop.set()
        if attack.is_alive():
            attack.join(ATTACK_SECONDS)
        for conn in opened:
            conn.close()
        server.close()


@pytest.mark.timeout(30)
def test_a_connection_reset_is_said_at_debug_not_as_a_traceback_on_stderr(capfd):
    """socketserver printed "Exception occurred during processing of request" and a
    traceback on stderr for each client that reset its connection or timed out: raw lines
    in a --log-json stream, as many as a client liked (a review)."""
    import struct

    from kit import Said

    state = AdminState(AdminSettings(port=0), now=0.0)
    server = metrics_edge.MetricsServer(lambda: metrics(state), "127.0.0.1", 0)
    try:
        with Said("DEBUG") as said:
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            conn.sendall(b"GET /metr")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # (a reset: SO_LINGER 0)
            assert _within(10, lambda: any("ended in error" in m for m in said.lines)
                           or None), said.lines
    finally:
        server.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
