"""What ZeroMQ's own buffers cost a process for many connected peers, with no ceylon_net code:
a bare pyzmq process binds a ROUTER and an XPUB (as the admin binds its ROUTER and PUB), and
``--agents`` peers in ``--procs`` processes each connect a DEALER (saying hello once) and a
SUB. It prints the bare process's RSS before and with every peer connected, and the
difference: a floor under W4's admin RSS with that many agents beside it (libzmq keeps
buffers and pipes for each connection, whoever holds the sockets).

With ``--pace S --hold T`` the connections then carry heartbeats for T seconds as the admin's
do with that many agents: every S seconds each DEALER sends one (3 frames, as our messages
are) and the process publishes one to every SUB; the RSS is printed every 30 s. libzmq's
pipes hold messages in chunks of 256 frames, kept once touched: what a connection costs grows
as its traffic goes round them.

    .venv/bin/python bench/zmq_connections.py --agents 1000 --procs 4
    .venv/bin/python bench/zmq_connections.py --agents 1000 --pace 5 --hold 1200
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import zmq


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def serve(agents: int, procs: int, timeout: float, pace: float = 0.0,
          hold: float = 0.0) -> tuple[float, float]:
    """Bind, start the peers' processes, wait for every DEALER's hello and every SUB's
    subscription; the RSS before and after (MiB). With ``pace``, then ``hold`` seconds of
    heartbeats both ways (the RSS printed every 30 s; "after" is the last)."""
    ctx = zmq.Context()
    router, xpub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message per SUB
    port = router.bind_to_random_port("tcp://127.0.0.1")
    pub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
    time.sleep(0.5)  # (the bare process's own threads settle)
    before = rss_mib()
    share = [agents // procs + (i < agents % procs) for i in range(procs)]
    children = [subprocess.Popen([sys.executable, __file__, "--peers", str(n), "--port",
                                  str(port), "--pub-port", str(pub_port), "--pace", str(pace),
                                  "--max-seconds", str(timeout + hold + 30)]) for n in share]
    try:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        _wait_joined(router, xpub, poller, agents, timeout)
        time.sleep(1.0)  # (connections' last allocations)
        after = rss_mib()
        if pace:
            after = _beat(router, xpub, poller, pace, hold, before)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        router.close(0)
        xpub.close(0)
        ctx.term()
    return before, after


def _wait_joined(router: zmq.Socket, xpub: zmq.Socket, poller: zmq.Poller, agents: int,
                 timeout: float) -> None:
    hellos = subs = 0
    deadline = time.monotonic() + timeout
    while hellos < agents or subs < agents:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{hellos} hellos and {subs} subscriptions of {agents} "
                               f"in {timeout:g} s")
        for sock, _ in poller.poll(1000):
            if sock is router:
                router.recv_multipart()
                hellos += 1
            else:
                subs += xpub.recv()[:1] == b"\x01"


def _beat(router: zmq.Socket, xpub: zmq.Socket, poller: zmq.Poller, pace: float,
          hold: float, before: float) -> float:
    """Heartbeats for ``hold`` seconds: one published every ``pace`` s, the DEALERs' read."""
    start = time.monotonic()
    next_pub = next_print = start
    beats = 0
    while (now := time.monotonic()) < start + hold:
        if now >= next_pub:
            xpub.send_multipart([b"hb", b"h" * 24, b"p" * 40])
            next_pub += pace
        if now >= next_print:
            print(f"{now - start:6.0f} s: {rss_mib():7.1f} MiB (+{rss_mib() - before:.1f}), "
                  f"{beats:,} heartbeats in", flush=True)
            next_print += 30
        for sock, _ in poller.poll(100):
            if sock is router:
                router.recv_multipart()
                beats += 1
            else:
                xpub.recv()
    return rss_mib()


def peers(n: int, port: int, pub_port: int, pace: float, max_seconds: float) -> None:
    """``n`` DEALER+SUB pairs; each DEALER says hello once, then (``pace``) a heartbeat every
    ``pace`` s, spread over the interval, and each SUB reads what is published; they stay
    until terminated."""
    from many_workers import raise_fd_limit  # (not in the measured process: it imports ceylon_net)

    raise_fd_limit()
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * n + 64)
    dealers, subs = [], []
    for _ in range(n):
        dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{pub_port}")
        dealer.send(b"hello")
        dealers.append(dealer)
        subs.append(sub)
    end = time.monotonic() + max_seconds
    if not pace:
        time.sleep(max_seconds)
        return
    poller = zmq.Poller()
    for sub in subs:
        poller.register(sub, zmq.POLLIN)
    turn = 0
    while time.monotonic() < end:
        dealers[turn % n].send_multipart([b"hb", b"h" * 24, b"p" * 40])
        turn += 1
        for sock, _ in poller.poll(pace * 1000 / n):
            sock.recv_multipart()


def connection_cost(agents: int, procs: int, timeout: float = 120) -> tuple[float, float]:
    """Run the measurement in a fresh process: (RSS before, RSS with the peers), MiB."""
    out = subprocess.run([sys.executable, __file__, "--agents", str(agents), "--procs",
                          str(procs), "--timeout", str(timeout)], capture_output=True, text=True,
                         timeout=timeout + 60, check=True)
    before, after = out.stdout.split()[-2:]
    return float(before), float(after)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000, help="peers (default 1000)")
    p.add_argument("--procs", type=int, default=4, help="their processes (default 4)")
    p.add_argument("--timeout", type=float, default=120, help="seconds for all to connect")
    p.add_argument("--pace", type=float, default=0.0,
                   help="then a heartbeat every PACE s each way (default: none)")
    p.add_argument("--hold", type=float, default=0.0,
                   help="... for HOLD seconds, the RSS printed every 30 s")
    p.add_argument("--peers", type=int, help=argparse.SUPPRESS)  # (a peers' process)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pub-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--max-seconds", type=float, default=150, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peers is not None:
        peers(args.peers, args.port, args.pub_port, args.pace, args.max_seconds)
        return
    before, after = serve(args.agents, args.procs, args.timeout, args.pace, args.hold)
    print(f"{args.agents:,} DEALER+SUB peers in {args.procs} processes: a bare pyzmq "
          f"ROUTER+XPUB process went from {before:.1f} to {after:.1f} MiB RSS "
          f"(+{after - before:.1f} MiB, {(after - before) * 1024 / args.agents:.1f} KiB a peer)")
    print(f"{before:.2f} {after:.2f}")


if __name__ == "__main__":
    main()
