"""What ZeroMQ's own buffers cost a process for many connected peers, with no ceylon_net code:
a bare pyzmq process binds a ROUTER and an XPUB (as the admin binds its ROUTER and PUB), and
``--agents`` peers in ``--procs`` processes each connect a DEALER (saying hello once) and a
SUB. It prints the bare process's RSS before and with every peer connected, and the
difference: a floor under W4's admin RSS with that many agents beside it (libzmq keeps
buffers and pipes for each connection, whoever holds the sockets).

    .venv/bin/python bench/zmq_connections.py --agents 1000 --procs 4
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


def serve(agents: int, procs: int, timeout: float) -> tuple[float, float]:
    """Bind, start the peers' processes, wait for every DEALER's hello and every SUB's
    subscription; the RSS before and after (MiB)."""
    ctx = zmq.Context()
    router, xpub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message per SUB
    port = router.bind_to_random_port("tcp://127.0.0.1")
    pub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
    time.sleep(0.5)  # (the bare process's own threads settle)
    before = rss_mib()
    share = [agents // procs + (i < agents % procs) for i in range(procs)]
    children = [subprocess.Popen([sys.executable, __file__, "--peers", str(n), "--port",
                                  str(port), "--pub-port", str(pub_port), "--max-seconds",
                                  str(timeout + 30)]) for n in share]
    try:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
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
        time.sleep(1.0)  # (connections' last allocations)
        after = rss_mib()
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


def peers(n: int, port: int, pub_port: int, max_seconds: float) -> None:
    """``n`` DEALER+SUB pairs; each DEALER says hello once; they stay until terminated."""
    from many_workers import raise_fd_limit  # (not in the measured process: it imports ceylon_net)

    raise_fd_limit()
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * n + 64)
    socks = []
    for _ in range(n):
        dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{pub_port}")
        dealer.send(b"hello")
        socks += [dealer, sub]
    time.sleep(max_seconds)


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
    p.add_argument("--peers", type=int, help=argparse.SUPPRESS)  # (a peers' process)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pub-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--max-seconds", type=float, default=150, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peers is not None:
        peers(args.peers, args.port, args.pub_port, args.max_seconds)
        return
    before, after = serve(args.agents, args.procs, args.timeout)
    print(f"{args.agents:,} DEALER+SUB peers in {args.procs} processes: a bare pyzmq "
          f"ROUTER+XPUB process went from {before:.1f} to {after:.1f} MiB RSS "
          f"(+{after - before:.1f} MiB, {(after - before) * 1024 / args.agents:.1f} KiB a peer)")
    print(f"{before:.2f} {after:.2f}")


if __name__ == "__main__":
    main()
