"""``bin/cluster up|down|status|logs``: compose.yaml's services as hosts, without Docker.

Each service becomes a host in a network namespace (:mod:`ceylon_net.netns`) named after it,
so ``--admin-peer admin`` resolves as it does under compose, and its ``command`` runs there
with its ``environment``, detached, logging to ``STATE_DIR/logs/SERVICE.log``. What ``up``
made is recorded in ``STATE_DIR/state.json`` before it is made, so ``down`` removes all of it,
also after an ``up`` that failed halfway.

Of compose.yaml it reads ``command`` (a list, or a string split like a shell would),
``environment`` (a map or ``KEY=VALUE`` list), ``depends_on`` (``service_healthy`` waits for
that service's ``healthcheck``) and ``healthcheck.test``; images, ports and restart policies
are Docker's business. ``$VARIABLE`` interpolation is refused rather than half done.
"""

from __future__ import annotations

import contextlib
import graphlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ..errors import CeylonError, ConfigError
from . import netns
from .netns import NetnsError, Network

ADMIN_PROGRAM, WORKER_PROGRAM = "ceylon-admin", "ceylon-worker"
STATE_FILE = "state.json"
HEALTH_ATTEMPT = 10.0  # seconds one healthcheck or status attempt may take
POLL_PAUSE = 0.2  # seconds between attempts, so a failing check does not spin
LOG_TAIL = 20  # lines of each service's log shown when `up` fails


class ClusterError(CeylonError):
    """A service exited, never became healthy, or its workers never joined."""


@dataclass(frozen=True)
class Service:
    """One compose service, as bin/cluster runs it."""

    name: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    depends_on: tuple[str, ...] = ()
    wait_healthy: tuple[str, ...] = ()  # the depends_on with condition service_healthy
    healthcheck: tuple[str, ...] = ()  # argv; empty: none

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name

    def option(self, flag: str, default: str | None = None) -> str | None:
        """``--flag``'s value as the CLI would see it: the command, then CEYLON_FLAG."""
        for i, arg in enumerate(self.argv):
            if arg == flag and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if arg.startswith(f"{flag}="):
                return arg.split("=", 1)[1]
        return self.environment.get("CEYLON_" + flag[2:].upper().replace("-", "_"), default)


# ---------------------------------------------------------------------------- compose.yaml

def load_compose(path: Path) -> dict[str, Service]:
    """The services of a compose file; ConfigError naming the file and service if unusable."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ConfigError(f"{path}: no 'services' map")
    services = {name: _service(path, name, spec or {}) for name, spec in doc["services"].items()}
    for s in services.values():
        unknown = set(s.depends_on) - set(services)
        if unknown:
            raise ConfigError(f"{path}: service {s.name} depends on unknown {sorted(unknown)}")
    start_order(services)  # refuses a cycle now, before anything starts
    return services


def _service(path: Path, name: str, spec: dict[str, Any]) -> Service:
    where = f"{path}: service {name}"
    command = spec.get("command")
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command or []]
    if not argv:
        raise ConfigError(f"{where}: needs a 'command' (the image's default is not known here)")
    env = _environment(where, spec.get("environment") or {})
    deps = spec.get("depends_on") or []
    healthy = [d for d, c in deps.items() if (c or {}).get("condition") == "service_healthy"
               ] if isinstance(deps, dict) else []
    for text in [*argv, *env.values()]:
        if "$" in text:
            raise ConfigError(f"{where}: bin/cluster does not interpolate variables: {text!r}")
    return Service(name, tuple(argv), env, tuple(deps), tuple(healthy),
                   _healthcheck(where, spec.get("healthcheck") or {}))


def _environment(where: str, raw: dict[str, Any] | list[str]) -> dict[str, str]:
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'environment' must be a map or a list of KEY=VALUE")
    env = {}
    for key, value in raw.items():
        if value is None:  # compose passes such a variable on from the caller's environment
            if key in os.environ:
                env[key] = os.environ[key]
        else:
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _healthcheck(where: str, spec: dict[str, Any]) -> tuple[str, ...]:
    test = spec.get("test")
    if spec.get("disable") or not test or test == ["NONE"]:
        return ()
    if isinstance(test, str):
        return ("sh", "-c", test)
    if test[0] == "CMD":
        return tuple(test[1:])
    if test[0] == "CMD-SHELL":
        return ("sh", "-c", " ".join(test[1:]))
    raise ConfigError(f"{where}: healthcheck test must start with CMD or CMD-SHELL")


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Services after the ones they depend on; ConfigError on a cycle."""
    try:
        order = graphlib.TopologicalSorter({s.name: s.depends_on for s in services.values()})
        return list(order.static_order())
    except graphlib.CycleError as exc:
        raise ConfigError(f"depends_on has a cycle: {' -> '.join(exc.args[1])}") from exc


def admin_of(services: Mapping[str, Service]) -> Service:
    admins = [s for s in services.values() if s.program == ADMIN_PROGRAM]
    if len(admins) != 1:
        raise ConfigError(f"need exactly one {ADMIN_PROGRAM} service, found {len(admins)}")
    return admins[0]


def worker_names(services: Mapping[str, Service]) -> set[str]:
    names = {s.name: s.option("--name") for s in services.values()
             if s.program == WORKER_PROGRAM}
    missing = [service for service, name in names.items() if not name]
    if missing:
        raise ConfigError(f"worker services {missing} set neither --name nor CEYLON_NAME")
    return {name for name in names.values() if name}


# ---------------------------------------------------------------------------- state

def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = state_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def service_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A service's environment: ours without CEYLON_* (compose would not pass those on), this
    venv's commands first on PATH, then the service's own variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEYLON_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    return {**env, **extra}


# ---------------------------------------------------------------------------- up

def up(compose: Path, state_dir: Path, subnet: str, timeout: float) -> dict[str, Any]:
    """Start every service in its own namespace, wait (at most ``timeout`` s) until the admin
    answers and every worker joined; the state. On any failure nothing is left behind."""
    services = load_compose(compose)
    admin = admin_of(services)
    workers = worker_names(services)
    if read_state(state_dir) is not None:
        raise ClusterError(f"a cluster is already up (state in {state_dir}); "
                           f"run `bin/cluster down` first")
    net = Network(subnet)
    net.start()  # on failure it made nothing
    state: dict[str, Any] = {"compose": str(compose.resolve()), "network": net.to_state(),
                             "services": {}}
    try:
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        _write_state(state_dir, state)  # first, so `down` can always clean up
        deadline = time.monotonic() + timeout
        procs = _start_all(net, services, state_dir, state, deadline)
        _wait_joined(net, admin, workers, procs, deadline)
    except BaseException:
        _show_log_tails(state)
        _remove(state_dir, net.prefix, services)
        raise
    return state


def _start_all(net: Network, services: Mapping[str, Service], state_dir: Path,
               state: dict[str, Any], deadline: float) -> dict[str, subprocess.Popen[bytes]]:
    for name in services:
        net.add_host(name)
        state["network"] = net.to_state()
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
        state["services"][name] = {"argv": list(service.argv),
                                   "environment": dict(service.environment),
                                   "namespace": net.hosts[name].namespace,
                                   "address": net.hosts[name].address,
                                   "pid": procs[name].pid, "log": str(log.resolve())}
        _write_state(state_dir, state)
    return procs


def _wait_healthy(net: Network, service: Service, proc: subprocess.Popen[bytes],
                  deadline: float) -> None:
    if not service.healthcheck:
        return
    while True:
        _check_running(service.name, proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            check = net.call(service.name, service.healthcheck, env=service_env(
                service.environment), timeout=_attempt_timeout(deadline))
            if check.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise ClusterError(f"{service.name} did not become healthy: "
                               f"{' '.join(service.healthcheck)}")
        time.sleep(POLL_PAUSE)


def _wait_joined(net: Network, admin: Service, workers: set[str],
                 procs: Mapping[str, subprocess.Popen[bytes]], deadline: float) -> None:
    while True:
        joined = {w["name"] for w in (ask_status(net, admin, deadline) or {}).get("workers", [])}
        if workers <= joined:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"workers {sorted(workers - joined)} did not join the admin")
        for name, proc in procs.items():
            _check_running(name, proc)
        time.sleep(POLL_PAUSE)


def ask_status(net: Network, admin: Service, deadline: float) -> dict[str, Any] | None:
    """``ceylon-status --json`` run on the admin's host; its snapshot, or None: no answer."""
    argv = ["ceylon-status", "--admin-peer", admin.name, "--port", str(admin.option(
        "--port", "8000")), "--json", "--timeout", "2"]
    try:
        done = net.call(admin.name, argv, env=service_env({}),
                        timeout=_attempt_timeout(deadline))
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


def _show_log_tails(state: dict[str, Any]) -> None:
    for name, svc in state["services"].items():
        with contextlib.suppress(OSError):
            lines = Path(svc["log"]).read_text(errors="replace").splitlines()[-LOG_TAIL:]
            typer.echo(f"--- last lines of {name}'s log:", err=True)
            typer.echo("\n".join(lines), err=True)


# ---------------------------------------------------------------------------- down

def down(state_dir: Path) -> bool:
    """Remove every process, namespace, link, /etc/netns dir, log and state file ``up``
    made; False when there was nothing to remove."""
    state = read_state(state_dir)
    if state is None:
        return False
    _remove(state_dir, state["network"]["prefix"], state["network"]["hosts"])
    return True


def _remove(state_dir: Path, prefix: str, services: Mapping[str, object]) -> None:
    netns.teardown_prefix(prefix)
    for name in services:
        _log_path(state_dir, name).unlink(missing_ok=True)
    for name in (STATE_FILE, f"{STATE_FILE}.tmp"):
        (state_dir / name).unlink(missing_ok=True)
    for folder in (state_dir / "logs", state_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: never remove what we did not write


def _log_path(state_dir: Path, service: str) -> Path:
    return state_dir / "logs" / f"{service}.log"


# ---------------------------------------------------------------------------- CLI

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  help="compose.yaml's services as hosts in network namespaces (needs root).")
StateDir = Annotated[Path, typer.Option(help="Where the state file and logs go.")]


def _need_root() -> None:
    reason = netns.unavailable_reason()
    if reason:
        typer.echo(f"error: bin/cluster: {reason}", err=True)
        raise typer.Exit(2)


def _running_state(state_dir: Path) -> dict[str, Any]:
    state = read_state(state_dir)
    if state is None:
        typer.echo(f"error: no cluster is up (no {state_dir / STATE_FILE})", err=True)
        raise typer.Exit(1)
    return state


@app.command("up", help="Start each service in its own namespace and wait until every worker "
                        "joined the admin.")
def up_command(
    compose: Annotated[Path, typer.Option(help="The compose file.")] = Path("compose.yaml"),
    state_dir: StateDir = Path(".cluster"),
    subnet: Annotated[str, typer.Option(help="Private /24 for the hosts.")]
        = netns.DEFAULT_SUBNET,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the admin's health "
                                                "and for the workers to join.")] = 60.0,
) -> None:
    _need_root()
    try:
        state = up(compose, state_dir, subnet, timeout)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (ClusterError, NetnsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, svc in state["services"].items():
        typer.echo(f"{name:<14} {svc['address']:<15} {shlex.join(svc['argv'])}")
    typer.echo(f"cluster up on {state['network']['subnet']} (namespaces "
               f"{state['network']['prefix']}-*); logs in {state_dir / 'logs'}")


@app.command("down", help="Stop and remove everything `up` made. Safe to run twice.")
def down_command(state_dir: StateDir = Path(".cluster")) -> None:
    _need_root()
    try:
        removed = down(state_dir)
    except NetnsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("cluster down" if removed else "no cluster is up: nothing to do")


@app.command("status", help="Run ceylon-status on the admin's host against the admin.")
def status_command(
    state_dir: StateDir = Path(".cluster"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
) -> None:
    _need_root()
    state = _running_state(state_dir)
    services = {n: Service(n, tuple(s["argv"]), s["environment"])
                for n, s in state["services"].items()}
    admin = admin_of(services)
    argv = ["ceylon-status", "--admin-peer", admin.name, "--port",
            str(admin.option("--port", "8000")), *(["--json"] if as_json else [])]
    net = Network.from_state(state["network"])
    try:
        code = net.run(admin.name, argv, env=service_env({})).wait(timeout=HEALTH_ATTEMPT * 2)
    except subprocess.TimeoutExpired:
        code = 1
    raise typer.Exit(code)


@app.command("logs", help="Print the services' logs (or one service's).")
def logs_command(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    state_dir: StateDir = Path(".cluster"),
) -> None:
    services = _running_state(state_dir)["services"]
    if service is not None and service not in services:
        typer.echo(f"error: no service {service!r} (services: {', '.join(services)})", err=True)
        raise typer.Exit(2)
    for name, svc in services.items():
        if service in (None, name):
            for line in Path(svc["log"]).read_text(errors="replace").splitlines():
                typer.echo(f"{name:<12} | {line}")


if __name__ == "__main__":
    app(prog_name="bin/cluster")
