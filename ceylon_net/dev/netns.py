"""Hosts as Linux network namespaces, for multi-host tests and ``bin/cluster``.

A :class:`Network` is one private LAN: a *switch* namespace holding a Linux bridge, and one
namespace per host, wired to the bridge by a veth pair, with its own address from ``subnet``,
loopback up, and ``/etc/netns/<namespace>/hosts`` so hosts find each other by name, as compose
services do. Nothing is added to the root namespace, so the machine's own networking is
untouched, and hosts have no default route: their traffic stays on this LAN.

Every name starts with a random per-network prefix (``ceylon-3fa91c-admin``), so concurrent
networks never collide, even with the same subnet (each has its own bridge), and
:func:`teardown_prefix` can remove a network another process made. Needs root and iproute2.

    with Network() as net:
        net.add_host("admin"), net.add_host("worker")
        net.run("admin", ["ceylon-admin", "--port", "8000"], stdout=log, stderr=log)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from loguru import logger

from ..errors import CeylonError

DEFAULT_SUBNET = "10.213.7.0/24"
ETC_NETNS = Path("/etc/netns")
SWITCH = "switch"  # the switch namespace's suffix; no host may take this name
BRIDGE = "br0"
HOST_IFACE = "eth0"
IP_TIMEOUT = 10.0  # seconds for one `ip` command
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
PREFIX = re.compile(r"^[a-z][a-z0-9]*-[0-9a-f]{6}$")

_Output = Path | IO[Any] | int | None


class NetnsError(CeylonError):
    """Network namespaces cannot be used here, or an ``ip`` command failed."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or with sudo)"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (apt-get install iproute2)"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    return None


def is_available() -> bool:
    return unavailable_reason() is None


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout, or NetnsError with what ``ip`` said."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def namespaces() -> list[str]:
    """Every network namespace ``ip netns`` knows, by name."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def pids_in(namespace: str) -> list[int]:
    """Processes whose network namespace is ``namespace``."""
    try:
        return [int(p) for p in ip("netns", "pids", namespace).split()]
    except NetnsError:
        return []  # the namespace is already gone


@dataclass(frozen=True)
class Host:
    """One host: ``name`` is what the others call it, ``port`` its veth end on the switch."""

    name: str
    namespace: str
    address: str
    port: str


@dataclass
class Network:
    """A bridge in a switch namespace and a namespace per host. ``with Network() as net:``
    starts it and tears everything down on exit, also when the body raised."""

    subnet: str = DEFAULT_SUBNET
    prefix: str = field(default_factory=lambda: f"ceylon-{secrets.token_hex(3)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        try:
            self._network = ipaddress.ip_network(self.subnet)
        except ValueError as exc:
            raise NetnsError(f"subnet {self.subnet}: {exc}") from None
        if self._network.version != 4 or not self._network.is_private:
            raise NetnsError(f"subnet {self.subnet} must be a private IPv4 network")
        if not PREFIX.match(self.prefix):
            raise NetnsError(f"bad network prefix {self.prefix!r}: like 'ceylon-3fa91c'")

    @property
    def switch(self) -> str:
        return f"{self.prefix}-{SWITCH}"

    def __enter__(self) -> Network:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # ------------------------------------------------------------------ building

    def start(self) -> None:
        """Make the switch namespace and its bridge (or nothing, and raise NetnsError)."""
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        if any(ns.startswith(f"{self.prefix}-") for ns in namespaces()):
            raise NetnsError(f"namespaces named {self.prefix}-* exist already")
        try:
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            ip("-n", self.switch, "link", "set", BRIDGE, "up")
        except BaseException:
            self.teardown()
            raise

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge with the next free address; every host's
        /etc/hosts then lists it."""
        if not HOST_NAME.match(name) or name == SWITCH:
            raise NetnsError(f"bad host name {name!r}: letters, digits, '_.-', at most 40, "
                             f"not {SWITCH!r}")
        if name in self.hosts:
            raise NetnsError(f"host {name!r} already exists in {self.prefix}")
        host = Host(name, f"{self.prefix}-{name}", self._free_address(), self._free_port(name))
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ip("-n", self.switch, "link", "add", host.port, "type", "veth",
           "peer", "name", HOST_IFACE, "netns", host.namespace)
        ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE, "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/{self._network.prefixlen}",
           "dev", HOST_IFACE)
        ip("-n", host.namespace, "link", "set", HOST_IFACE, "up")
        self._write_etc_files()
        return host

    def remove_host(self, name: str) -> None:
        """Stop the host's processes and delete its namespace, link and /etc/netns dir."""
        host = self.hosts.pop(name)
        _stop_processes([host.namespace])
        self._reap_children(timeout=0)
        ip("netns", "del", host.namespace)  # its veth pair goes with it
        shutil.rmtree(ETC_NETNS / host.namespace, ignore_errors=True)
        self._write_etc_files()

    def _free_address(self) -> str:
        taken = {h.address for h in self.hosts.values()}
        for address in self._network.hosts():
            if str(address) not in taken:
                return str(address)
        raise NetnsError(f"subnet {self.subnet} is full")

    def _free_port(self, name: str) -> str:
        taken = {int(h.port[1:].split("-")[0]) for h in self.hosts.values()}
        index = min(set(range(len(taken) + 1)) - taken)
        return f"p{index}-{name}"[:15]  # interface names are at most 15 bytes

    def _write_etc_files(self) -> None:
        lines = ["# written by ceylon_net.netns for network " + self.prefix,
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts.values()]
        for host in self.hosts.values():
            etc = ETC_NETNS / host.namespace
            _makedirs(etc)
            # Rewritten in place, never replaced: `ip netns exec` bind-mounts this inode over
            # /etc/hosts, so processes already running see hosts added after them.
            (etc / "hosts").write_text("\n".join(lines) + "\n")
            # No nameserver: a name not in hosts fails fast instead of querying the machine's DNS.
            (etc / "resolv.conf").write_text("# no DNS on this test network: see hosts\n")

    # ------------------------------------------------------------------ using

    def host(self, name: str | Host) -> Host:
        if isinstance(name, Host):
            return name
        try:
            return self.hosts[name]
        except KeyError:
            raise NetnsError(f"no host {name!r} in {self.prefix} (hosts: "
                             f"{', '.join(self.hosts) or 'none'})") from None

    def run(self, host: str | Host, argv: Sequence[str], env: Mapping[str, str] | None = None,
            stdout: _Output = None, stderr: _Output = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` (with ``ip netns exec``, which execs it, so the
        Popen's pid is the command's) in a session of its own. ``env`` is its whole
        environment (default: ours); ``stdout``/``stderr`` a file object or a Path to
        append to. :meth:`teardown` stops it if it is still running."""
        ns = self.host(host).namespace
        with contextlib.ExitStack() as files:
            out, err = (files.enter_context(o.open("ab")) if isinstance(o, Path) else o
                        for o in (stdout, stderr))
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=env, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self._children.append(proc)
        return proc

    def running(self, pid: int) -> bool:
        """Is ``pid`` a process :meth:`run` started that has not ended? (In its namespace or
        not yet: ``ip netns exec`` enters it as it starts, so ``ip netns pids`` misses a
        process that just started.)"""
        return any(p.pid == pid and p.poll() is None for p in self._children)

    def call(self, host: str | Host, argv: Sequence[str], timeout: float,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` to completion and capture its output (text). Killed,
        and subprocess.TimeoutExpired raised, after ``timeout`` seconds."""
        ns = self.host(host).namespace
        return subprocess.run(["ip", "netns", "exec", ns, *argv], env=env, timeout=timeout,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def exec(self, host: str | Host, argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
        """Replace this process with ``argv`` run inside ``host``, so its terminal, signals
        and exit status are the caller's. ``env`` is its whole environment."""
        os.execvpe("ip", ["ip", "netns", "exec", self.host(host).namespace, *argv], env)

    def link_down(self, host: str | Host) -> None:
        """Unplug the host from the switch: it keeps its address and routes, but nothing it
        sends arrives and nothing reaches it, so peers see timeouts, not refusals."""
        ip("-n", self.switch, "link", "set", self.host(host).port, "down")

    def link_up(self, host: str | Host) -> None:
        """Plug the host back in."""
        ip("-n", self.switch, "link", "set", self.host(host).port, "up")

    def iptables(self, host: str | Host, args: Sequence[str]) -> str:
        """Run ``iptables ARGS`` inside ``host`` (e.g. ``["-A", "INPUT", "-p", "tcp",
        "--dport", "8001", "-j", "DROP"]``); its stdout. The rules die with the namespace."""
        if shutil.which("iptables") is None:
            raise NetnsError("iptables is not installed (apt-get install iptables)")
        done = self.call(host, ["iptables", *args], timeout=IP_TIMEOUT)
        if done.returncode != 0:
            raise NetnsError(f"iptables {' '.join(args)} in {host}: {done.stderr.strip()}")
        return done.stdout

    # ------------------------------------------------------------------ state and teardown

    def to_state(self) -> dict[str, Any]:
        """Plain data for a state file; :meth:`from_state` attaches to the same network."""
        return {"subnet": self.subnet, "prefix": self.prefix,
                "hosts": {name: asdict(h) for name, h in self.hosts.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Network:
        hosts = {name: Host(**h) for name, h in state["hosts"].items()}
        return cls(subnet=state["subnet"], prefix=state["prefix"], hosts=hosts)

    def teardown(self) -> None:
        """Stop every process in this network's namespaces and delete the namespaces, their
        links and /etc/netns dirs. Safe to call twice, and on a network half made."""
        try:
            teardown_prefix(self.prefix)
        finally:
            for proc in self._children:  # one started as its namespace was emptied, not yet in it
                if proc.poll() is None:
                    proc.kill()
            self._reap_children(timeout=STOP_GRACE)
            self.hosts.clear()

    def _reap_children(self, timeout: float) -> None:
        """Collect the exit status of processes we started that have ended (no zombies)."""
        for proc in self._children:
            if not timeout:
                proc.poll()
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        self._children = [p for p in self._children if p.returncode is None]


def teardown_prefix(prefix: str) -> None:
    """Remove every namespace and /etc/netns dir named ``PREFIX-*``, processes first."""
    if not PREFIX.match(prefix):
        raise NetnsError(f"refusing to tear down {prefix!r}: not a network prefix")
    ours = [ns for ns in namespaces() if ns.startswith(f"{prefix}-")]
    left = _stop_processes(ours)
    for ns in sorted(ours, key=lambda ns: ns.endswith(f"-{SWITCH}")):  # the switch last
        with contextlib.suppress(NetnsError):
            ip("netns", "del", ns)
    for etc in ETC_NETNS.glob(f"{prefix}-*"):
        shutil.rmtree(etc, ignore_errors=True)
    with contextlib.suppress(OSError):
        ETC_NETNS.rmdir()  # only when empty: other networks may be using it
    still = [ns for ns in namespaces() if ns.startswith(f"{prefix}-")]
    if left or still:
        raise NetnsError(f"teardown of {prefix} left processes {left} and namespaces {still}")


def _stop_processes(names: Sequence[str]) -> list[int]:
    """SIGTERM every process in the namespaces, SIGKILL what is left after a grace period;
    the pids still running after that (none, normally)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in (p for ns in names for p in pids_in(ns)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE
        while (left := [p for ns in names for p in pids_in(ns)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left:
            return []
        logger.warning("processes {} ignored {}", left, sig.name)
    return left


def _makedirs(path: Path) -> None:
    # A concurrent teardown may rmdir an empty /etc/netns between our mkdirs: try again.
    for _ in range(3):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def network(subnet: str = DEFAULT_SUBNET, hosts: Sequence[str] = ()) -> Iterator[Network]:
    """``with network(hosts=["a", "b"]) as net:`` a started Network with those hosts, torn
    down on exit (for pytest: ``yield`` from a fixture inside it)."""
    with Network(subnet) as net:
        for name in hosts:
            net.add_host(name)
        yield net
