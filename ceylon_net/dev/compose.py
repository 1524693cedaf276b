"""What ``bin/cluster`` runs: a compose file's services, read and checked before anything starts.

Of compose.yaml it reads ``command`` (a list, or a string split like a shell would),
``environment`` (a map or ``KEY=VALUE`` list), ``depends_on`` (``service_healthy`` waits for
that service's ``healthcheck``) and ``healthcheck.test``; images, ports and restart policies
are Docker's business and skipped; any other key (``entrypoint``, ``env_file``, ``user``,
``working_dir``, ``volumes``...) would change what runs, and is refused rather than ignored, as
is ``$VARIABLE`` interpolation. A file is refused, too, without exactly one admin, with a worker
without a name or two with the same one, or with a cycle in ``depends_on``. Plain data in and
out, no processes: :mod:`.cluster` runs what this returns, and asks the admin for its status
with the credentials :func:`status_probe` finds in the admin's service.
"""

from __future__ import annotations

import graphlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

ADMIN_PROGRAM, WORKER_PROGRAM = "ceylon-admin", "ceylon-worker"
READ_KEYS = frozenset({"command", "environment", "depends_on", "healthcheck"})
DOCKER_KEYS = frozenset({"build", "image", "ports", "expose", "restart", "container_name",
                         "labels", "logging", "deploy", "stop_grace_period", "pull_policy",
                         "platform", "networks"})  # how Docker builds, wires and restarts it


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


@dataclass(frozen=True)
class Probe:
    """``ceylon-status`` run on the admin's host, with what the admin demands of a client."""

    host: str
    argv: tuple[str, ...]
    env: Mapping[str, str]  # CEYLON_WORKSPACE, CEYLON_TOKEN, CURVE keys: never on a command line


def load_compose(path: Path) -> dict[str, Service]:
    """The services of a compose file; ConfigError naming the file and service if unusable
    (no single admin, a worker name twice, a cycle: all refused before anything starts)."""
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
    try:
        start_order(services)
        admin_of(services)
        worker_names(services)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return services


def _service(path: Path, name: str, spec: dict[str, Any]) -> Service:
    where = f"{path}: service {name}"
    refused = sorted(set(spec) - READ_KEYS - DOCKER_KEYS)
    if refused:
        raise ConfigError(f"{where}: bin/cluster does not support {', '.join(refused)} (it runs "
                          f"the command as root in the checkout, no image); use docker compose")
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
    """The one service that runs the admin; ConfigError if none does, or several."""
    admins = [s for s in services.values() if s.program == ADMIN_PROGRAM]
    if len(admins) != 1:
        raise ConfigError(f"need exactly one {ADMIN_PROGRAM} service, found {len(admins)}")
    return admins[0]


def worker_names(services: Mapping[str, Service]) -> set[str]:
    """The workers' names; ConfigError for a worker without one, or a name used twice (the
    admin would turn the second away: names are unique in a workspace)."""
    names = {s.name: s.option("--name") for s in services.values()
             if s.program == WORKER_PROGRAM}
    missing = [service for service, name in names.items() if not name]
    if missing:
        raise ConfigError(f"worker services {missing} set neither --name nor CEYLON_NAME")
    first: dict[str, str] = {}
    for service, name in names.items():
        if name in first:
            raise ConfigError(f"services {first[name]} and {service} both run a worker named "
                              f"{name!r}; worker names must be unique (the admin rejects "
                              f"the second)")
        first[str(name)] = service
    return set(first)


def status_probe(services: Mapping[str, Service]) -> Probe:
    """How to ask the admin for its status so that it answers: its workspace and token, and
    with CURVE a keypair it lets in: a worker's (``--curve-secret``, ``--admin-key``: workers
    join with them), else the admin's own (let in when its public key is authorized)."""
    admin = admin_of(services)
    env = {"CEYLON_WORKSPACE": str(admin.option("--workspace", "default"))}
    token = admin.option("--token")
    if token:
        env["CEYLON_TOKEN"] = token
    secret = admin.option("--curve-secret")
    if secret:
        clients = [(s.option("--curve-secret"), s.option("--admin-key"))
                   for s in services.values() if s.program == WORKER_PROGRAM]
        mine, key = next(((m, k) for m, k in clients if m and k), (secret, secret))
        env |= {"CEYLON_CURVE_SECRET": str(mine), "CEYLON_ADMIN_KEY": str(key)}
    argv = ("ceylon-status", "--admin-peer", admin.name, "--port",
            str(admin.option("--port", "8000")))
    return Probe(admin.name, argv, env)
