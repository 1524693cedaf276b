"""Frozen settings for the admin and the worker.

Precedence is CLI option > ``CEYLON_*`` environment variable > default. The CLIs get that from
typer's ``envvar``; Python code gets it from :func:`env_default` for the connection settings
a tutorial program leaves out (so ``Admin(port=None)`` honours ``CEYLON_PORT``).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from .core.tasks import DEFAULT_ROLE
from .errors import ConfigError
from .wire import DEFAULT_MAX_MESSAGE_BYTES, MAX_CAPACITY

DEFAULT_WORKSPACE_ID = "default"
DEFAULT_PORT = 8000
MAX_HEARTBEAT = 3600.0  # seconds: longer would leave a lost worker unnoticed for hours
# Seconds: at 0.05 a loaded host's short pauses already read as an admin gone, and workers
# register again; the suite's fastest is 0.2.
MIN_HEARTBEAT = 0.1
MAX_LIVENESS = 1000  # heartbeats a worker may miss before it is lost
MAX_EXPECT_WORKERS = 1_000_000
# A worker heartbeat a second at least: fewer slow every heartbeat (Pulse) so far that a lost
# worker is never noticed (1e-6: one worker beat every 11 days).
MIN_BEATS_PER_SECOND = 1.0
# Seconds a restarted admin waits for the workers and clients of its last process at least,
# whatever --heartbeat and --liveness say: theirs retry a lost connection every 0.5 s
# (ceylon_net.edge.transport.RECONNECT_MAX_MS); a worker beats the new process at once (it
# hears it on PUB), a client asks again once the admin was silent for 2 s, looking once a
# second (SILENCE, WATCHDOG_TURN).
COME_BACK_AT_LEAST = 4.0
SILENCE = 2.0  # seconds without a word from the admin before a client asks again
WATCHDOG_TURN = 1.0  # seconds between two looks of a client at the admin's silence
# ... and every REWATCH s anyway: a DONE the admin could not route (the client's connection
# was being re-made, or its queue was full) is lost, and heartbeats would hide it.
REWATCH = 10.0
# What its clients wait for, a restarted admin keeps at least this long: a client asks once
# as the silence begins, then REWATCH s later; the first lost with an admin killed again
# before it answered (a chaos trial's finding), the second comes in time.
CLIENTS_COME_BACK_AT_LEAST = REWATCH + 2 * WATCHDOG_TURN


def env_default(name: str, default, cast=str):
    """Value of ``CEYLON_<NAME>`` cast with ``cast``, else ``default``."""
    raw = os.environ.get(f"CEYLON_{name}")
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ConfigError(f"CEYLON_{name}={raw!r} is not a valid {cast.__name__}") from None


@dataclass(frozen=True, slots=True)
class AdminSettings:
    name: str = "admin"
    workspace: str = DEFAULT_WORKSPACE_ID
    bind: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    pub_port: int | None = None  # None: port + 1 (or random when port is 0)
    expect_workers: int = 0
    unassignable_timeout: float = 10.0
    # Seconds tasks only a lost worker could take wait for it to come back before they
    # count as unassignable (ceylon_net.core.unassignable).
    lost_wait: float = 60.0
    heartbeat: float = 1.0
    liveness: int = 3
    # Worker heartbeats a second the admin takes at most: with more workers than this times
    # the heartbeat, everyone's heartbeat slows in proportion (ceylon_net.core.pacing.Pulse).
    beats_per_second: float = 200.0
    max_attempts: int = 3
    task_timeout: float | None = None
    # Tasks a worker may hold queued beyond its concurrency; None: as many as cover a round
    # trip at its measured pace (ceylon_net.core.pacing); 0: none (no pipelining).
    prefetch: int | None = None
    journal: str | None = None
    # Tasks of finished client batches (ceylon-submit) a serving admin keeps: beyond, it
    # forgets the oldest batches whole (their reports went out); execute()'s tasks the same
    # way. None: keeps every one.
    keep_finished: int | None = 100_000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    token: str | None = None
    curve_secret: str | None = None  # the admin's secret key file (ceylon-keygen)
    authorized_keys: str | None = None  # directory of the public key files let in
    bad_frame_limit: int = 100  # bad frames from one peer within bad_frame_window ...
    bad_frame_window: float = 10.0  # ... get it disconnected (its frames dropped) ...
    ban_seconds: float = 60.0  # ... for this long
    hello_rate: float = 100.0  # registrations per second accepted from one address
    results_file: str | None = None  # append every result as one JSON line
    metrics_port: int | None = None  # serve Prometheus metrics on bind:metrics_port
    dashboard_port: int | None = None  # serve the web dashboard on bind:dashboard_port

    def _check_ports(self) -> None:
        """The PUB, dashboard and metrics ports: valid, and none the ROUTER's or PUB's."""
        if self.pub_port is not None:
            _check_port("pub-port", self.pub_port)
            if self.pub_port != 0 and self.pub_port == self.port:
                raise ConfigError(f"--pub-port {self.pub_port} must differ from --port")
        if self.port == 65535 and self.pub_port is None:
            raise ConfigError("--port 65535 leaves no room for the default --pub-port (port+1)")
        pub = self.pub_port if self.pub_port is not None else self.port + 1 if self.port else 0
        for label, port in (("metrics-port", self.metrics_port),
                            ("dashboard-port", self.dashboard_port)):
            if port is not None:
                _check_port(label, port)
            if port and port in (self.port, pub):
                whose = "ROUTER port (--port)" if port == self.port else \
                    "PUB port (--pub-port, else --port + 1)"
                raise ConfigError(f"--{label} {port} is the admin's own {whose}: give another")
        if self.metrics_port and self.metrics_port == self.dashboard_port:
            raise ConfigError(f"--metrics-port and --dashboard-port are both {self.metrics_port}: "
                              f"give them different ports")

    def __post_init__(self) -> None:
        if self.bind == "":  # (every interface, as 0.0.0.0: said so, not "tcp://:8000")
            object.__setattr__(self, "bind", "0.0.0.0")
        _check_port("port", self.port)
        _check_security(self.token, self.max_message_bytes)
        if (self.curve_secret is None) != (self.authorized_keys is None):
            raise ConfigError("--curve-secret and --authorized-keys go together")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.prefetch is not None and not 0 <= self.prefetch <= MAX_CAPACITY:
            raise ConfigError(f"--prefetch must be 0-{MAX_CAPACITY}, got {self.prefetch}")
        if self.task_timeout is not None:
            _check_positive("task-timeout", self.task_timeout)
        if self.keep_finished is not None and self.keep_finished < 0:
            raise ConfigError(f"--keep-finished must be >= 0, got {self.keep_finished}")
        self._check_ports()
        self._check_pace()
        if self.liveness < 2:
            raise ConfigError(f"--liveness must be at least 2, got {self.liveness} (a worker "
                              f"beats once a --heartbeat: at 1, one beat a little late would "
                              f"call it lost)")
        if self.liveness > MAX_LIVENESS:  # (and a figure the wire carries: 64 bits)
            raise ConfigError(f"--liveness must be at most {MAX_LIVENESS}, got {self.liveness}")
        if not 0 <= self.expect_workers <= MAX_EXPECT_WORKERS:
            raise ConfigError(f"--expect-workers must be 0-{MAX_EXPECT_WORKERS:,}, got "
                              f"{self.expect_workers}")
        if not self.unassignable_timeout >= 0:  # also refuses NaN
            raise ConfigError("--unassignable-timeout must be >= 0")
        if not self.lost_wait >= 0:
            raise ConfigError("--lost-wait must be >= 0")
        if not 1 <= self.hello_rate < math.inf:  # (at less than 1 a second, none would pass)
            raise ConfigError(f"--hello-rate must be a number from 1 up (registrations a second "
                              f"from one address), got {self.hello_rate:g}")
        _check_name("workspace", self.workspace)
        _check_name("name", self.name)

    def _check_pace(self) -> None:
        """--heartbeat and --beats-per-second within what keeps a lost worker noticed and a
        live one registered."""
        if not self.heartbeat >= MIN_HEARTBEAT:  # also refuses NaN
            raise ConfigError(f"--heartbeat must be at least {MIN_HEARTBEAT:g} s, got "
                              f"{self.heartbeat} (faster, a short pause reads as a peer lost: "
                              f"workers would register again and again)")
        if self.heartbeat > MAX_HEARTBEAT:  # (inf would turn off noticing a lost worker)
            raise ConfigError(f"--heartbeat must be at most {MAX_HEARTBEAT:g} s, got "
                              f"{self.heartbeat}")
        if not self.beats_per_second >= MIN_BEATS_PER_SECOND:
            raise ConfigError(f"--beats-per-second must be at least {MIN_BEATS_PER_SECOND:g}, "
                              f"got {self.beats_per_second} (fewer slow every heartbeat so "
                              f"far that a lost worker goes unnoticed)")

    @property
    def come_back(self) -> float:
        """Seconds after a restart the admin waits for the workers and clients of its last
        process to come back: 2 x heartbeat x liveness, at least COME_BACK_AT_LEAST."""
        return max(2 * self.heartbeat * self.liveness, COME_BACK_AT_LEAST)

    @property
    def clients_come_back(self) -> float:
        """Seconds after a restart the admin keeps the batches clients of its last process
        waited for, until they ask for them again: come_back, at least
        CLIENTS_COME_BACK_AT_LEAST."""
        return max(self.come_back, CLIENTS_COME_BACK_AT_LEAST)

    @property
    def endpoint_host(self) -> str:
        return "*" if every_interface(self.bind) else self.bind

    @property
    def exposure(self) -> str | None:
        """What a stranger could do to an admin bound this way, when it is not loopback and
        not encrypted (said once at start)."""
        loopback = self.bind in ("127.0.0.1", "localhost", "::1") or self.bind.startswith("127.")
        if loopback:
            return None
        said = []
        if self.curve_secret is None:
            said.append(
                f"running open on {self.bind}: no CURVE keys{'' if self.token else ' and no token'}"
                f", so anyone who can reach these ports can "
                + ("read the traffic, and subscribe to the PUB port (every assignment, result "
                   "and broadcast) without the token" if self.token else "join, submit and read"))
        if self.dashboard_port is not None and not self.token:
            said.append("the dashboard (--dashboard-port) is open to anyone who can reach it "
                        "(CURVE does not cover it; --token does)")
        if self.metrics_port is not None:
            said.append("the metrics endpoint (--metrics-port) takes no token: anyone who can "
                        "reach it reads the counts")
        return "; ".join(said) + " (see the README's Security section)" if said else None

    @classmethod
    def of(cls, name: str, port: int | None, workspace: str | None,
           options: dict[str, Any]) -> AdminSettings:
        """Settings for ``Admin(name, port, workspace_id, **options)``: what a tutorial leaves
        out comes from ``CEYLON_*`` variables, then the defaults."""
        return cls(name=name, workspace=workspace or env_default("WORKSPACE",
                                                                 DEFAULT_WORKSPACE_ID),
                   port=env_default("PORT", DEFAULT_PORT, int) if port is None else port,
                   **{"pub_port": env_default("PUB_PORT", None, int),
                      "bind": env_default("BIND", "0.0.0.0"), **options})


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    name: str
    skill: int = 10
    role: str = DEFAULT_ROLE
    capacity: int = 1
    admin_peer: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workspace: str = DEFAULT_WORKSPACE_ID
    time_scale: float = 1.0
    connect_timeout: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    token: str | None = None
    curve_secret: str | None = None  # this worker's secret key file (ceylon-keygen)
    admin_key: str | None = None  # the admin's public key file

    def __post_init__(self) -> None:
        # (a worker's ZeroMQ identity is its name and 9 bytes more: at most 255 bytes)
        _check_name("name", self.name, max_bytes=200)
        _check_security(self.token, self.max_message_bytes)
        if (self.curve_secret is None) != (self.admin_key is None):
            raise ConfigError("--curve-secret and --admin-key go together")
        _check_name("workspace", self.workspace)
        _check_name("role", self.role)
        if not 0 <= self.skill <= 10:
            raise ConfigError(f"--skill must be 0-10, got {self.skill}")
        if not 1 <= self.capacity <= MAX_CAPACITY:
            raise ConfigError(f"--concurrency must be 1-{MAX_CAPACITY}, got {self.capacity}")
        _check_port("port", self.port)
        if self.port == 0:
            raise ConfigError("--port 0 is not a port to connect to (an admin given --port 0 "
                              "takes a free one and logs it: give that one)")
        if not self.time_scale >= 0:  # also refuses NaN
            raise ConfigError("--time-scale must be >= 0")
        _check_positive("connect-timeout", self.connect_timeout)
        check_host(self.admin_peer)

    @property
    def endpoint(self) -> str:
        return f"tcp://{bracket(self.admin_peer)}:{self.port}"

    @classmethod
    def of(cls, name: str, workspace: str | None, admin_peer: str | None, port: int | None,
           role: str | None, skill: int | None, capacity: int | None,
           options: dict[str, Any]) -> WorkerSettings:
        """Settings for ``Worker(name, workspace_id, admin_peer, admin_port, ...)``: what a
        tutorial leaves out comes from ``CEYLON_*`` variables, then the defaults."""
        return cls(name=name,
                   workspace=workspace or env_default("WORKSPACE", DEFAULT_WORKSPACE_ID),
                   # ("": the tutorials' default, as None; the CLI refuses an empty one)
                   admin_peer=admin_peer or env_default("ADMIN_PEER", "127.0.0.1"),
                   port=port or env_default("PORT", DEFAULT_PORT, int),
                   role=role or DEFAULT_ROLE, skill=10 if skill is None else skill,
                   capacity=capacity or 1, **options)


def client_settings(address: str | None, workspace: str | None, token: str | None,
                    curve_secret: str | None, admin_key: str | None) -> WorkerSettings:
    """Where a Client talks to and how: ``address`` is ``host:port`` (``[v6]:port``; no port:
    8000); what is left out comes from ``CEYLON_*`` variables as for the CLIs, then defaults."""
    if address is None:  # (an IPv6 CEYLON_ADMIN_PEER in brackets: its colons are not a port's)
        peer = env_default("ADMIN_PEER", "127.0.0.1")
        check_host(peer, "CEYLON_ADMIN_PEER", "the port goes in CEYLON_PORT")
        address = f"{bracket(peer)}:{env_default('PORT', DEFAULT_PORT)}"
    said = f"client address {address!r}"
    if "://" in address:
        raise ConfigError(f"{said}: give host:port, without a scheme (e.g. '127.0.0.1:8000')")
    if address.startswith("["):  # [v6] or [v6]:port
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    elif address.count(":") == 1:  # host:port
        host, _, port = address.partition(":")
    else:  # a host, or a bare IPv6 address
        host, port = address, ""
    try:
        number = int(port) if port else env_default("PORT", DEFAULT_PORT, int)
    except ValueError:
        raise ConfigError(f"{said}: the port must be a number") from None
    if not 0 <= number <= 65535:  # (0: WorkerSettings says what to give instead)
        raise ConfigError(f"{said}: the port must be 1-65535, got {number}")
    check_host(host, f"{said}: its host", "give host:port, as in '127.0.0.1:8000'")
    return WorkerSettings(name="client", admin_peer=host, port=number,
                          workspace=_given(workspace, "WORKSPACE", DEFAULT_WORKSPACE_ID),
                          token=_given(token, "TOKEN", None),
                          curve_secret=_given(curve_secret, "CURVE_SECRET", None),
                          admin_key=_given(admin_key, "ADMIN_KEY", None))


def _given(value: str | None, env: str, default: str | None) -> str | None:
    """An option as given (an empty one too: refused as such, not replaced by CEYLON_<env>),
    else the environment's, else ``default``."""
    return value if value is not None else env_default(env, default)


def _check_security(token: str | None, max_message_bytes: int) -> None:
    if token is not None and not 8 <= len(token) <= 1024:
        raise ConfigError(f"the token (--token, CEYLON_TOKEN, token=) must be 8 to 1024 "
                          f"characters, got {len(token)} (use a long random string)")
    if not 1024 <= max_message_bytes <= 1 << 30:
        raise ConfigError(f"--max-message-bytes must be 1 KiB to 1 GiB, got {max_message_bytes}")


def every_interface(bind: str) -> bool:
    """Does a service bound on ``bind`` listen on every interface?"""
    return bind in ("0.0.0.0", "*", "")


def local_url(bind: str, port: int, path: str) -> str:
    """Where to open, from this host, an HTTP service bound on ``bind``:``port``."""
    return f"http://{'127.0.0.1' if every_interface(bind) else bracket(bind)}:{port}{path}"


def bracket(host: str) -> str:
    """An IPv6 address as a URL holds it: ``[::1]``."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_host(host: str, what: str = "--admin-peer",
               port_hint: str = "the port goes in --port") -> None:
    """A host name, an IPv4 address or an IPv6 one (bracketed or not); the port is not part
    of it (``--admin-peer host:8000`` would be taken for an IPv6 address). ``what`` names
    where the user gave it."""
    if not host:
        raise ConfigError(f"{what} is empty: give the admin's host name or address")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
            return
        except ValueError:
            pass
    elif _HOST.fullmatch(bare):
        return
    raise ConfigError(f"{what} {host!r} is not a host name or address ({port_hint})")


_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")


def _check_port(label: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--{label} must be 0-65535, got {port}")


def _check_positive(label: str, value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ConfigError(f"--{label} must be > 0, got {value}")


def _check_name(label: str, value: str, max_bytes: int | None = None) -> None:
    if not value or len(value) > 200 or not value.isprintable():
        raise ConfigError(f"{label} {value!r} must be 1-200 printable characters")
    if max_bytes is not None and len(value.encode()) > max_bytes:
        raise ConfigError(f"{label} {value!r} is {len(value.encode())} bytes in UTF-8, over the "
                          f"{max_bytes} it may be (fewer characters, or plainer ones)")
