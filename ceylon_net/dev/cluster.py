"""``bin/cluster up|down|status|logs|exec``: compose.yaml's services as hosts, without Docker.

Each service becomes a host in a network namespace (:mod:`.netns`) named after it, so
``--admin-peer admin`` resolves as it does under compose, and its ``command`` runs there with
its ``environment``, detached, logging to ``STATE_DIR/logs/SERVICE.log``. What ``up`` makes
is recorded in ``STATE_DIR/state.json`` before it is made (every namespace carries the
network's prefix, written first; each service's pid as soon as it runs), so ``down`` removes
all of it, also after an ``up`` that failed halfway or was killed. It stops the processes it
finds in those namespaces, never a recorded pid as such (by then it may be another process's).
The state holds the services' environments, tokens too: the state dir is its owner's only.
One ``up`` or ``down`` at a time holds the state dir (an flock, which dies with its holder);
SIGINT, SIGTERM and SIGHUP during ``up`` remove what it made. State whose namespaces are gone
(a reboot) is stale: ``status`` says so, ``up`` replaces it, ``down`` removes it.

What runs comes from :mod:`.compose`, which reads and checks the compose file; this module
holds the cluster's lifecycle: its state file and lock, its namespaces and processes; the
``bin/cluster`` commands over them are :mod:`.cluster_cli`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from ..errors import CeylonError, ConfigError
from . import netns
from .compose import Probe, Service, load_compose, start_order, status_probe, worker_names
from .netns import Network

STATE_FILE = "state.json"
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600  # the state holds each service's environment: tokens
HEALTH_ATTEMPT = 10.0  # seconds one healthcheck or status attempt may take
POLL_PAUSE = 0.2  # seconds between attempts, so a failing check does not spin
LOG_TAIL = 20  # lines of each service's log shown when `up` fails
EXITED_TAIL = 5  # lines of an exited service's log shown by `status`
CALLER_CWD = "BIN_CLUSTER_CALLER_CWD"  # bin/cluster cds to the checkout; where the user was
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n)
                       for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ClusterError(CeylonError):
    """A service exited, never became healthy, its workers never joined, or the state dir is
    in use or left by another cluster."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived while ``up`` was starting the cluster."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------------------- the network

def parse_subnet(text: str) -> str:
    """``text`` if it is a private (RFC 1918) IPv4 /24 with a zero host part, like
    10.213.7.0/24; ConfigError saying what is wrong otherwise."""
    want = f"give a private /24 like {netns.DEFAULT_SUBNET}"
    try:
        net = ipaddress.ip_network(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a network ({exc}); {want}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 24 or not any(
            net.subnet_of(r) for r in PRIVATE_RANGES):
        raise ConfigError(f"{text!r} is not a private /24 (10.x.y.0, 172.16-31.y.0 or "
                          f"192.168.y.0 /24); {want}")
    return str(net)


# ---------------------------------------------------------------------------- state

def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one step (readers see the old one or the new one), readable
    by its owner only."""
    tmp = state_dir / f"{STATE_FILE}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "w") as out:
        os.fchmod(out.fileno(), PRIVATE_FILE)  # O_CREAT keeps the mode of a .tmp left behind
        out.write(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir`` (made if missing, its owner's only) for one ``up`` or ``down`` at a
    time; ClusterError at once if another holds it. An flock on the directory: the kernel
    drops it with its holder, so even a kill -9 leaves no stale lock."""
    fd = _lock(state_dir)
    try:
        yield
    finally:
        os.close(fd)


def _lock(state_dir: Path) -> int:
    for _ in range(3):
        state_dir.mkdir(PRIVATE_DIR, parents=True, exist_ok=True)
        try:
            fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # its holder removed it as we came: make it again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(state_dir)):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise ClusterError(f"another bin/cluster up or down is using {state_dir} right "
                               f"now{_holder(state_dir)}; wait for it, or stop it (it "
                               f"removes what it made)") from None
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the one we locked: lock the one there now
    raise ClusterError(f"{state_dir} keeps being removed and made again; try again")


def _holder(state_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError):  # being replaced or removed: say nothing
        state = read_state(state_dir) or {}
        if state.get("complete") is False:
            return f" (bin/cluster up, pid {state.get('up_pid')}, is starting a cluster)"
    return ""


def is_gone(state: Mapping[str, Any]) -> bool:
    """No namespace of the recorded network exists any more (a reboot removes them all): the
    state is stale, nothing of that cluster can be reached or stopped through it."""
    prefix = state["network"]["prefix"]
    return not any(ns.startswith(f"{prefix}-") for ns in netns.namespaces())


def how_to_remove(state_dir: Path) -> str:
    """What removes the cluster in ``state_dir``: with its --state-dir unless the default
    (a plain `down` would find nothing there, and leave this one up)."""
    return "bin/cluster down" + ("" if state_dir == Path(".cluster") else
                                 f" --state-dir {shlex.quote(str(state_dir))}")


def gone_message(state_dir: Path) -> str:
    return (f"the cluster recorded in {state_dir} is gone: its namespaces no longer exist "
            f"(a reboot?). `{how_to_remove(state_dir)}` removes the stale state; `bin/cluster "
            f"up` replaces it")


def exited(state: Mapping[str, Any]) -> list[str]:
    """The services whose recorded process no longer runs in their namespace."""
    return [name for name, svc in state["services"].items() if not _alive(svc)]


def _alive(svc: Mapping[str, Any]) -> bool:
    return svc.get("pid") is not None and svc["pid"] in netns.pids_in(svc["namespace"])


def service_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A service's environment: ours without CEYLON_* (compose would not pass those on), this
    venv's commands first on PATH, then the service's own variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CEYLON_") and k != CALLER_CWD}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    return {**env, **extra}


# ---------------------------------------------------------------------------- up

def up(compose: Path, state_dir: Path, subnet: str, timeout: float) -> dict[str, Any]:
    """Start every service in its own namespace, wait (at most ``timeout`` s) until the admin
    answers and every worker joined; the state. On any failure, and on SIGINT, SIGTERM or
    SIGHUP (then Interrupted), it removes what it made and says what that was."""
    services = load_compose(compose)
    with _interrupts_raise(), state_lock(state_dir):
        _clear_stale(state_dir)
        return _bring_up(services, compose, state_dir, parse_subnet(subnet), timeout)


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        _ignore_interrupts()  # the first one starts the clean-up; later ones wait for it
        raise Interrupted(signum)

    before = {sig: signal.signal(sig, interrupt) for sig in INTERRUPTS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _ignore_interrupts() -> None:
    for sig in INTERRUPTS:
        signal.signal(sig, signal.SIG_IGN)


def _clear_stale(state_dir: Path) -> None:
    state = read_state(state_dir)
    if state is None:
        return
    if not is_gone(state):
        what = "a cluster is already up" if state.get("complete", True) else (
            f"an unfinished `up` (pid {state.get('up_pid')}, killed?) left a cluster")
        raise ClusterError(f"{what} (state in {state_dir}); run `{how_to_remove(state_dir)}` "
                           f"first")
    typer.echo(f"removing the stale state in {state_dir}: its namespaces "
               f"{state['network']['prefix']}-* are gone (a reboot?)", err=True)
    _remove_files(state_dir, state["services"])


def _bring_up(services: Mapping[str, Service], compose: Path, state_dir: Path, subnet: str,
              timeout: float) -> dict[str, Any]:
    net = Network(subnet)
    state: dict[str, Any] = {"compose": str(compose.resolve()), "up_pid": os.getpid(),
                             "complete": False, "network": net.to_state(), "services": {}}
    try:
        (state_dir / "logs").mkdir(PRIVATE_DIR, parents=True, exist_ok=True)
        _write_state(state_dir, state)  # first: all `up` makes is named after its prefix
        net.start()
        deadline = time.monotonic() + timeout
        procs = _start_all(net, services, state_dir, state, deadline)
        _wait_joined(net, status_probe(services), worker_names(services), procs, deadline)
        state["complete"] = True
        _write_state(state_dir, state)
        return state
    except BaseException as exc:
        _ignore_interrupts()  # restored on leaving up(); the clean-up must run to its end
        if not isinstance(exc, KeyboardInterrupt):
            _show_log_tails(state)
        typer.echo(_remove(state_dir, state, net), err=True)
        raise


def _start_all(net: Network, services: Mapping[str, Service], state_dir: Path,
               state: dict[str, Any], deadline: float) -> dict[str, subprocess.Popen[bytes]]:
    for name, service in services.items():
        host = net.add_host(name)
        state["network"] = net.to_state()
        state["services"][name] = {"argv": list(service.argv),
                                   "environment": dict(service.environment),
                                   "namespace": host.namespace, "address": host.address,
                                   "pid": None, "log": str(_log_path(state_dir, name).resolve())}
        _write_state(state_dir, state)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    healthy: set[str] = set()
    for name in start_order(services):
        service = services[name]
        for dep in service.wait_healthy:
            if dep not in healthy:
                _wait_healthy(net, services[dep], procs[dep], deadline)
                healthy.add(dep)
        log = _log_path(state_dir, name)
        log.unlink(missing_ok=True)
        procs[name] = net.run(name, service.argv, service_env(service.environment),
                              stdout=log, stderr=log)
        state["services"][name]["pid"] = procs[name].pid
        _write_state(state_dir, state)
    return procs


def _wait_healthy(net: Network, service: Service, proc: subprocess.Popen[bytes],
                  deadline: float) -> None:
    if not service.healthcheck:
        return
    said = "it did not answer in time"  # what the last check said, for the error
    while True:
        _check_running(service.name, proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            check = net.call(service.name, service.healthcheck, env=service_env(
                service.environment), timeout=_attempt_timeout(deadline))
            if check.returncode == 0:
                return
            lines = (check.stderr or check.stdout or "").strip().splitlines()
            said = f"exit {check.returncode}" + (f": {lines[-1][:500]}" if lines else "")
        if time.monotonic() > deadline:
            raise ClusterError(f"{service.name} did not become healthy: "
                               f"{' '.join(service.healthcheck)}; its last check: {said}")
        time.sleep(POLL_PAUSE)


def _wait_joined(net: Network, probe: Probe, workers: set[str],
                 procs: Mapping[str, subprocess.Popen[bytes]], deadline: float) -> None:
    while True:
        joined = {w["name"] for w in (ask_status(net, probe, deadline) or {}).get("workers", [])}
        if workers <= joined:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"workers {sorted(workers - joined)} did not join the admin")
        for name, proc in procs.items():
            _check_running(name, proc)
        time.sleep(POLL_PAUSE)


def ask_status(net: Network, probe: Probe, deadline: float) -> dict[str, Any] | None:
    """The admin's status snapshot (``ceylon-status --json``), or None: no answer."""
    try:
        done = net.call(probe.host, [*probe.argv, "--json", "--timeout", "2"],
                        env=service_env(probe.env), timeout=_attempt_timeout(deadline))
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout)
    except ValueError:
        return None  # not a snapshot: treat like no answer, the deadline bounds it


def _check_running(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise ClusterError(f"service {name} exited with {proc.returncode}")


def _attempt_timeout(deadline: float) -> float:
    return max(1.0, min(HEALTH_ATTEMPT, deadline - time.monotonic()))


def log_tail(svc: Mapping[str, Any], lines: int) -> list[str]:
    try:
        return Path(svc["log"]).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _show_log_tails(state: dict[str, Any]) -> None:
    for name, svc in state["services"].items():
        if Path(svc["log"]).exists():
            typer.echo(f"--- last lines of {name}'s log:", err=True)
            typer.echo("\n".join(log_tail(svc, LOG_TAIL)), err=True)


# ---------------------------------------------------------------------------- down

def down(state_dir: Path) -> str | None:
    """Remove every process, namespace, link, /etc/netns dir, log and state file ``up``
    made; what was removed, in words, or None when there was nothing to remove."""
    if read_state(state_dir) is None:
        return None
    with state_lock(state_dir):
        state = read_state(state_dir)
        if state is None:  # another `down` was first
            _remove_files(state_dir, {})
            return None
        stale = "stale state (its namespaces were gone already); " if is_gone(state) else ""
        return stale + _remove(state_dir, state)


def _remove(state_dir: Path, state: Mapping[str, Any], net: Network | None = None) -> str:
    """Stop and delete what ``state`` records (``net``: the Network that made it, whose
    children are stopped too); what that was, in words."""
    prefix = state["network"]["prefix"]
    # (what ``net`` started is known to it, in its namespace yet or not: a signal that
    # comes right after the last start finds a service still entering it)
    alive = _alive if net is None else lambda s: s.get("pid") is not None and net.running(
        s["pid"])
    running = [f"{n} (pid {s['pid']})" for n, s in state["services"].items() if alive(s)]
    spaces = sorted(ns for ns in netns.namespaces() if ns.startswith(f"{prefix}-"))
    if net is None:
        netns.teardown_prefix(prefix)
    else:
        net.teardown()
    _remove_files(state_dir, state["services"])
    return (f"removed processes: {', '.join(running) or 'none'}; namespaces: "
            f"{', '.join(spaces) or 'none'}; state and logs in {state_dir}")


def _remove_files(state_dir: Path, services: Mapping[str, object]) -> None:
    for name in services:
        _log_path(state_dir, name).unlink(missing_ok=True)
    for name in (STATE_FILE, f"{STATE_FILE}.tmp"):
        (state_dir / name).unlink(missing_ok=True)
    for folder in (state_dir / "logs", state_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: never remove what we did not write


def _log_path(state_dir: Path, service: str) -> Path:
    return state_dir / "logs" / f"{service}.log"
