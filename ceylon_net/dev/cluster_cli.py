"""``bin/cluster``'s command line: up, down, status, exec, logs (the cluster's lifecycle is
:mod:`.cluster`, the compose file :mod:`.compose`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import fail
from ..errors import ConfigError
from . import netns
from .cluster import (
    CALLER_CWD,
    EXITED_TAIL,
    HEALTH_ATTEMPT,
    STATE_FILE,
    ClusterError,
    Interrupted,
    down,
    exited,
    gone_message,
    how_to_remove,
    is_gone,
    log_tail,
    parse_subnet,
    read_state,
    service_env,
    up,
)
from .compose import Service, status_probe
from .netns import NetnsError, Network

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True, help=(
    "compose.yaml's services as hosts in network namespaces (needs root). Each runs its "
    "command with its environment, as root, in the checkout; the admin is reachable only "
    "from inside: `bin/cluster exec SERVICE -- CMD` runs a command on a service's host."))
StateDir = Annotated[Path | None, typer.Option(help=(
    "Where the state file and logs go; a relative path is from your working directory "
    "[default: the checkout's .cluster]."), show_default=False)]


def _from_caller(path: Path | None, default: str) -> Path:
    """A path the user gave, from their working directory (bin/cluster runs in the
    checkout), or ``default`` in the checkout."""
    if path is None:
        return Path(default)
    return Path(os.environ.get(CALLER_CWD) or os.getcwd(), path)


def _need_root() -> None:
    reason = netns.unavailable_reason()
    if reason:
        fail(2, f"bin/cluster: {reason}")


def _recorded_state(state_dir: Path) -> dict[str, Any]:
    state = read_state(state_dir)
    if state is None:
        fail(1, f"no cluster is up (no {state_dir / STATE_FILE})")
    return state


def _live_state(state_dir: Path) -> dict[str, Any]:
    """The state of a cluster that is fully up; exit 1 saying why not otherwise."""
    state = _recorded_state(state_dir)
    if is_gone(state):
        fail(1, gone_message(state_dir))
    if not state.get("complete", True):
        fail(1, f"the cluster in {state_dir} is not fully up: `bin/cluster up` (pid "
                       f"{state.get('up_pid')}) is still starting it, or was killed before "
                       f"it finished (then `{how_to_remove(state_dir)}` removes it)")
    return state


def _subnet(text: str) -> str:
    try:
        return parse_subnet(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("up", help="Start each service in its own namespace and wait until every worker "
                        "joined the admin. Ctrl-C, SIGTERM or SIGHUP meanwhile removes "
                        "what it started.")
def up_command(
    compose: Annotated[Path | None, typer.Option(
        help="The compose file; a relative path is from your working directory "
             "[default: the checkout's compose.yaml].", show_default=False)] = None,
    state_dir: StateDir = None,
    subnet: Annotated[str, typer.Option(help="The hosts' network: a private (RFC 1918) /24.",
                                        callback=_subnet)] = netns.DEFAULT_SUBNET,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the admin's health "
                                                "and for the workers to join.")] = 60.0,
) -> None:
    _need_root()
    state_dir = _from_caller(state_dir, ".cluster")
    try:
        state = up(_from_caller(compose, "compose.yaml"), state_dir, subnet, timeout)
    except Interrupted as exc:
        fail(128 + exc.signum, f"interrupted by {exc}: the cluster is not up")
    except ConfigError as exc:
        fail(2, str(exc))
    except (ClusterError, NetnsError) as exc:
        fail(1, str(exc))
    for name, svc in state["services"].items():
        typer.echo(f"{name:<14} {svc['address']:<15} {shlex.join(svc['argv'])}")
    typer.echo(f"cluster up on {state['network']['subnet']} (namespaces "
               f"{state['network']['prefix']}-*); logs in {state_dir / 'logs'}")


@app.command("down", help="Stop and remove everything `up` made (also stale state left by a "
                          "reboot). Safe to run twice.")
def down_command(state_dir: StateDir = None) -> None:
    _need_root()
    try:
        removed = down(_from_caller(state_dir, ".cluster"))
    except (ClusterError, NetnsError) as exc:
        fail(1, str(exc))
    typer.echo(f"{removed}\ncluster down" if removed else "no cluster is up: nothing to do")


@app.command("status", help="Run ceylon-status on the admin's host (with the admin's "
                            "workspace, token and keys) and name services that have exited; "
                            "exit 1 if any has.")
def status_command(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
) -> None:
    _need_root()
    state = _live_state(_from_caller(state_dir, ".cluster"))
    gone = exited(state)
    for name in gone:
        svc = state["services"][name]
        typer.echo(f"service {name} has exited (pid {svc['pid']}); the end of its log "
                   f"{svc['log']}:", err=True)
        typer.echo("".join(f"  | {line}\n" for line in log_tail(svc, EXITED_TAIL)), err=True,
                   nl=False)
    services = {n: Service(n, tuple(s["argv"]), s["environment"])
                for n, s in state["services"].items()}
    probe = status_probe(services)
    if probe.host in gone:
        fail(1, f"the admin ({probe.host}) has exited: no status")
    argv = [*probe.argv, *(["--json"] if as_json else [])]
    net = Network.from_state(state["network"])
    try:
        code = net.run(probe.host, argv, env=service_env(probe.env)).wait(
            timeout=HEALTH_ATTEMPT * 2)
    except subprocess.TimeoutExpired:
        code = 1
    raise typer.Exit(code or (1 if gone else 0))


@app.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False},
             help="Run CMD on SERVICE's host: in its namespace (other services by name, the "
                  "admin as `admin`), with its environment, in the checkout; exit with CMD's "
                  "status. E.g. bin/cluster exec admin -- ceylon-submit "
                  "examples/seed_tasks.json --admin-peer admin --wait")
def exec_command(
    service: Annotated[str, typer.Argument(help="The service whose host runs CMD.",
                                           metavar="SERVICE")],
    command: Annotated[list[str], typer.Argument(help="CMD and its arguments.",
                                                 metavar="CMD...")],
    state_dir: StateDir = None,
) -> None:
    _need_root()
    command = list(command)
    while command[:1] and command[0].split("=")[0] == "--state-dir":  # (given after SERVICE)
        option = command.pop(0)
        if "=" not in option and not command:
            fail(2, "--state-dir needs a directory")
        state_dir = Path(option.split("=", 1)[1] if "=" in option else command.pop(0))
    command = command[1:] if command[:1] == ["--"] else command  # (left in after SERVICE)
    if not command:
        fail(2, "no command: bin/cluster exec SERVICE -- CMD...")
    state = _live_state(_from_caller(state_dir, ".cluster"))
    if service not in state["services"]:
        fail(2, f"no service {service!r} (services: {', '.join(state['services'])})")
    env = service_env(state["services"][service]["environment"])
    Network.from_state(state["network"]).exec(service, command, env)


@app.command("logs", help="Print the services' logs (or one service's).")
def logs_command(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    state_dir: StateDir = None,
) -> None:
    services = _recorded_state(_from_caller(state_dir, ".cluster"))["services"]
    if service is not None and service not in services:
        fail(2, f"no service {service!r} (services: {', '.join(services)})")
    for name, svc in services.items():
        if service in (None, name):
            for line in log_tail(svc, sys.maxsize):
                typer.echo(f"{name:<12} | {line}")


if __name__ == "__main__":
    app(prog_name="bin/cluster")
