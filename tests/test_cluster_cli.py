"""`bin/cluster` as a user drives it, on small compose files of its own: credentials reach the
status probes, a signal or a kill during `up` leaves nothing `down` cannot remove, one `up` at
a time, `status` names services that exited, `exec` runs on a service's host, stale state after
a reboot, and the compose files, subnets and paths it refuses or resolves. Real namespaces and
processes (root); every test removes all it made, also when the code under test did not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run

from ceylon_net.dev import cluster, cluster_cli, netns
from ceylon_net.dev.compose import load_compose
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge.transport import create_keypair
from ceylon_net.errors import ConfigError

needs_netns = pytest.mark.skipif(not netns.is_available(),
                                 reason=f"needs network namespaces: {netns.unavailable_reason()}")

ADMIN = {"command": ["ceylon-admin", "--port", "8000"]}
PREFIX = re.compile(r"ceylon-[0-9a-f]{6}")


def worker(name: str, *args: str, **env: str) -> dict[str, Any]:
    return {"command": ["ceylon-worker", "--name", name, "--admin-peer", "admin", *args],
            "environment": {"CEYLON_CONNECT_TIMEOUT": "30", **env}}


# Its worker never joins (nothing listens on port 9), so `up` waits for it until stopped.
NEVER_JOINS = {"admin": ADMIN, "w": worker("W", "--port", "9")}


class Clusters:
    """Runs bin/cluster on one state dir and remembers every network it saw, to remove what
    is left of them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.prefixes: set[str] = set()
        self.started: list[subprocess.Popen[str]] = []

    def compose(self, services: dict[str, Any], name: str = "compose.yaml") -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump({"services": services}))
        return path

    def up(self, services: dict[str, Any], **run: Any) -> dict[str, Any]:
        """``up`` of these services, which must succeed: its state."""
        done = self.run("up", "--compose", str(self.compose(services)), "--timeout", "20", **run)
        assert done.returncode == 0, done.stdout + done.stderr
        state = self.state()
        assert state is not None
        return state

    def run(self, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
            timeout: float = 60, umask: int = -1) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(REPO / "bin" / "cluster"), *self._with_state(args)],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=env, stdin=subprocess.DEVNULL, umask=umask)
        self._note(done.stdout + done.stderr)
        return done

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """bin/cluster in the background, its output in files (``output(proc)``)."""
        out = (self.tmp / f"out-{len(self.started)}").open("w")
        proc = subprocess.Popen([str(REPO / "bin" / "cluster"), *self._with_state(args)],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        text = (self.tmp / f"out-{self.started.index(proc)}").read_text()
        self._note(text)
        return text

    def state(self) -> dict[str, Any] | None:
        state = cluster.read_state(self.state_dir)
        if state is not None:
            self.prefixes.add(state["network"]["prefix"])
        return state

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict:
        run(wait_until(lambda: (s := self.state()) is not None and predicate(s), 30, what))
        state = self.state()
        assert state is not None
        return state

    def left(self) -> list[str]:
        """Namespaces of ours still on the machine."""
        return [ns for ns in netns.namespaces() if ns[:13] in self.prefixes]

    def _with_state(self, args: tuple[str, ...]) -> list[str]:
        if not args or args[0] == "--help" or "--state-dir" in args:
            return list(args)
        return [args[0], "--state-dir", str(self.state_dir), *args[1:]]

    def _note(self, text: str) -> None:
        self.prefixes |= set(PREFIX.findall(text))

    def clean_up(self) -> None:
        for proc in self.started:  # with what it runs in its group (not the services)
            if proc.poll() is None:  # (not reaped: its pid is still its group's id)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            self.output(proc)
        self.state()
        for prefix in self.prefixes:
            netns.teardown_prefix(prefix)
        shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Clusters]:
    c = Clusters(tmp_path)
    try:
        yield c
    finally:
        c.clean_up()


def all_started(state: dict[str, Any]) -> bool:
    return bool(state["services"]) and all(s["pid"] for s in state["services"].values()) \
        and len(state["services"]) == len(state["network"]["hosts"]) >= 2


def pid_gone(svc: dict[str, Any]) -> Callable[[], bool]:
    return lambda: svc["pid"] not in netns.pids_in(svc["namespace"])


def wait_exit(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    return proc.wait(timeout=timeout)


# ---------------------------------------------------------------------------- 1 credentials

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_up_and_status_ask_the_admin_with_its_own_token_workspace_and_keys(
        clusters: Clusters, tmp_path: Path) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    create_keypair(keys, "admin")
    create_keypair(allowed, "w")  # only the worker's key is let in
    admin = {"command": ["ceylon-admin", "--port", "8000", "--token", "s3cret-t0ken"],
             "environment": {"CEYLON_WORKSPACE": "ws",
                             "CEYLON_CURVE_SECRET": str(keys / "admin.key_secret"),
                             "CEYLON_AUTHORIZED_KEYS": str(allowed)}}
    w = worker("W", CEYLON_WORKSPACE="ws", CEYLON_TOKEN="s3cret-t0ken",
               CEYLON_CURVE_SECRET=str(allowed / "w.key_secret"),
               CEYLON_ADMIN_KEY=str(keys / "admin.key"))
    compose = clusters.compose({"admin": admin, "w": w})

    up = clusters.run("up", "--compose", str(compose), "--timeout", "10")
    assert up.returncode == 0, up.stdout + up.stderr
    status = clusters.run("status", "--json")
    assert status.returncode == 0, status.stderr
    snapshot = json.loads(status.stdout)
    assert snapshot["workspace"] == "ws"
    assert [w["name"] for w in snapshot["workers"]] == ["W"]
    admin_log = (clusters.state_dir / "logs" / "admin.log").read_text()
    assert "refused" not in admin_log and "token" not in admin_log.lower(), admin_log
    assert clusters.run("down").returncode == 0
    assert clusters.left() == []


# ---------------------------------------------------------------------------- 2 signals, kill

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_a_signal_during_up_removes_all_it_started_and_says_what(
        clusters: Clusters, sig: signal.Signals) -> None:
    up = clusters.start("up", "--compose", str(clusters.compose(NEVER_JOINS)))
    state = clusters.wait_state(all_started, "up to start both services")
    up.send_signal(sig)
    assert wait_exit(up) == 128 + sig, clusters.output(up)
    said = clusters.output(up)
    assert f"interrupted by {sig.name}" in said
    for name, svc in state["services"].items():
        assert f"{name} (pid {svc['pid']})" in said
        assert pid_gone(svc)()
    assert f"{state['network']['prefix']}-switch" in said
    assert clusters.left() == []
    assert not clusters.state_dir.exists()


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_a_signal_as_a_service_is_still_entering_its_namespace_names_it_removed_too(
        clusters: Clusters, tmp_path: Path) -> None:
    # `ip netns exec` enters the namespace as it starts: a signal right after the last start
    # found the admin not in it yet, and "removed processes" left it out (seen once in a
    # loaded whole run). Here its `ip` waits at the door until the end.
    env, gate = gated_ip(tmp_path, held="netns exec ceylon-*-admin ceylon-admin")
    up = clusters.start("up", "--compose", str(clusters.compose(NEVER_JOINS)), env=env)
    state = clusters.wait_state(all_started, "up to start both services")
    run(wait_until(lambda: (gate / "reached").exists(), 30, "the admin's ip to be held"))
    admin = state["services"]["admin"]
    assert admin["pid"] not in netns.pids_in(admin["namespace"])
    up.send_signal(signal.SIGTERM)
    assert wait_exit(up) == 128 + signal.SIGTERM, clusters.output(up)
    said = clusters.output(up)
    for name, svc in state["services"].items():
        assert f"{name} (pid {svc['pid']})" in said
    with pytest.raises(ProcessLookupError):
        os.kill(admin["pid"], 0)
    assert clusters.left() == []


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_after_up_is_killed_status_and_up_say_so_and_down_removes_everything(
        clusters: Clusters) -> None:
    up = clusters.start("up", "--compose", str(clusters.compose(NEVER_JOINS)))
    state = clusters.wait_state(all_started, "up to start both services")
    up.kill()
    wait_exit(up)

    status = clusters.run("status")
    assert status.returncode == 1 and "not fully up" in status.stderr, status
    again = clusters.run("up", "--compose", str(clusters.compose(NEVER_JOINS)))
    assert again.returncode == 1 and "unfinished" in again.stderr, again
    down = clusters.run("down")
    assert down.returncode == 0, down.stderr
    for name, svc in state["services"].items():
        assert f"{name} (pid {svc['pid']})" in down.stdout
        assert pid_gone(svc)()
    assert clusters.left() == []
    assert not clusters.state_dir.exists()


# ---------------------------------------------------------------------------- 3 one up at a time

GATE_IP = """#!/bin/sh
# The first `ip {held}` waits until the test opens the gate; all else is ip's.
held='{held}'
case "$*" in
  $held*) if mkdir "$GATE/held" 2>/dev/null; then
      : > "$GATE/reached"; read _ < "$GATE/fifo"; fi ;;
esac
exec {ip} "$@"
"""


def gated_ip(tmp_path: Path, held: str = "netns add ceylon-*-switch"
             ) -> tuple[dict[str, str], Path]:
    """An environment whose `ip` holds its first call that starts with ``held`` (a shell
    pattern; by default, making the network) until the gate opens (or its process group
    is killed: Clusters.clean_up)."""
    gate, bindir = tmp_path / "gate", tmp_path / "bin"
    gate.mkdir(), bindir.mkdir()
    os.mkfifo(gate / "fifo")
    (bindir / "ip").write_text(GATE_IP.format(ip=shutil.which("ip"), held=held))
    (bindir / "ip").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "GATE": str(gate)}, gate


def open_gate(gate: Path) -> None:
    with contextlib.suppress(OSError):  # no one waiting (ENXIO): nothing to open
        os.close(os.open(gate / "fifo", os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_a_second_up_refuses_while_the_first_is_starting(
        clusters: Clusters, tmp_path: Path) -> None:
    compose = str(clusters.compose({"admin": ADMIN}))
    env, gate = gated_ip(tmp_path)
    first = clusters.start("up", "--compose", compose, env=env)
    run(wait_until(lambda: (gate / "reached").exists(), 30, "the first up to make its net"))
    second = clusters.run("up", "--compose", compose, env=env)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "another bin/cluster up or down is using" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    busy = clusters.run("down", env=env)
    assert busy.returncode == 1 and "another" in busy.stderr, busy
    open_gate(gate)
    assert wait_exit(first) == 0, clusters.output(first)
    down = clusters.run("down")
    assert down.returncode == 0, down.stderr
    assert clusters.left() == []


# ---------------------------------------------------------------------------- 4 status, exec

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_status_names_the_services_that_exited_and_shows_their_log(clusters: Clusters) -> None:
    state = clusters.up({"admin": ADMIN, "w": worker("W"), "v": worker("V")})
    w, admin = state["services"]["w"], state["services"]["admin"]

    os.kill(w["pid"], signal.SIGKILL)
    run(wait_until(pid_gone(w), 10, "worker w to be gone"))
    status = clusters.run("status", "--json")
    assert status.returncode == 1, status
    json.loads(status.stdout)  # the admin's snapshot (it may list w until w's heartbeats lapse)
    assert f"service w has exited (pid {w['pid']})" in status.stderr
    assert w["log"] in status.stderr and "registered with admin" in status.stderr

    os.kill(admin["pid"], signal.SIGKILL)
    run(wait_until(pid_gone(admin), 10, "the admin to be gone"))
    status = clusters.run("status")
    assert status.returncode == 1
    assert "service admin has exited" in status.stderr and admin["log"] in status.stderr
    assert "the admin (admin) has exited" in status.stderr
    assert clusters.run("down").returncode == 0


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_a_healthcheck_that_fails_says_what_its_last_check_said(clusters: Clusters) -> None:
    """It said only which command failed, not why (a CURVE setting half given, say)."""
    check = ["CMD", "ceylon-status", "--admin-peer", "admin", "--port", "8000",
             "--curve-secret", "/nonexistent.key"]
    path = clusters.compose({"admin": {**ADMIN, "healthcheck": {"test": check}},
                             "w": {**worker("W"),
                                   "depends_on": {"admin": {"condition": "service_healthy"}}}})
    done = clusters.run("up", "--compose", str(path), "--timeout", "5")
    assert done.returncode != 0
    assert "admin did not become healthy: ceylon-status --admin-peer admin --port 8000 " \
           "--curve-secret /nonexistent.key; its last check: exit 2: error: " in done.stderr, \
        done.stderr
    assert "--curve-secret and --admin-key go together" in done.stderr, done.stderr
    assert clusters.left() == []


def _up_with_token(clusters: Clusters, **run: Any) -> None:
    """``up`` of an admin and a worker W sharing the token t0k-t0k-t0k."""
    clusters.up({"admin": {**ADMIN, "environment": {"CEYLON_TOKEN": "t0k-t0k-t0k"}},
                 "w": worker("W", CEYLON_TOKEN="t0k-t0k-t0k")}, **run)


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_exec_runs_a_command_on_a_services_host_with_its_environment(
        clusters: Clusters) -> None:
    _up_with_token(clusters)
    status = clusters.run("exec", "w", "--", "ceylon-status", "--admin-peer", "admin", "--json")
    assert status.returncode == 0, status.stderr  # admin by name, the token from w's env
    assert [x["name"] for x in json.loads(status.stdout)["workers"]] == ["W"]
    code = clusters.run("exec", "admin", "sh", "-c", "echo $CEYLON_TOKEN; exit 3")
    assert (code.returncode, code.stdout) == (3, "t0k-t0k-t0k\n")
    # --state-dir after SERVICE is still the option, not the command
    for where in (["--state-dir", str(clusters.state_dir)], [f"--state-dir={clusters.state_dir}"]):
        code = clusters.run("exec", "admin", *where, "--", "sh", "-c", "exit 4")
        assert code.returncode == 4, code.stderr
    unknown = clusters.run("exec", "nope", "--", "true")
    assert unknown.returncode == 2 and "services: admin, w" in unknown.stderr
    assert clusters.run("down").returncode == 0


# ---------------------------------------------------------------------------- 7 stale state

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_state_left_by_a_reboot_is_called_stale_replaced_by_up_removed_by_down(
        clusters: Clusters) -> None:
    state = clusters.up({"admin": ADMIN})
    netns.teardown_prefix(state["network"]["prefix"])  # what a reboot does; state kept
    compose = str(clusters.compose({"admin": ADMIN}))  # (the same file, for the next up)
    status = clusters.run("status")
    assert status.returncode == 1 and "is gone" in status.stderr, status
    assert "Cannot open network namespace" not in status.stderr
    up = clusters.run("up", "--compose", compose, "--timeout", "20")
    assert up.returncode == 0 and "stale" in up.stderr, up
    assert clusters.run("status").returncode == 0

    netns.teardown_prefix(cluster.read_state(clusters.state_dir)["network"]["prefix"])
    down = clusters.run("down")
    assert down.returncode == 0 and "stale" in down.stdout, down
    assert not clusters.state_dir.exists()


# ---------------------------------------------------------------------------- 10 state file

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_the_state_file_holding_the_services_tokens_is_readable_by_its_owner_only(
        clusters: Clusters) -> None:
    _up_with_token(clusters, umask=0o022)
    state_file = clusters.state_dir / cluster.STATE_FILE
    assert "t0k-t0k-t0k" in state_file.read_text()  # why it must be private
    assert stat.S_IMODE(clusters.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert clusters.run("down").returncode == 0


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(90)
def test_down_leaves_alone_a_process_that_took_over_a_dead_services_pid(
        clusters: Clusters) -> None:
    state = clusters.up({"admin": ADMIN})
    admin = state["services"]["admin"]
    os.kill(admin["pid"], signal.SIGKILL)
    run(wait_until(pid_gone(admin), 10, "the admin to be gone"))
    stranger = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    try:  # the pid's next owner: a process outside the cluster's namespaces
        admin["pid"] = stranger.pid
        (clusters.state_dir / cluster.STATE_FILE).write_text(json.dumps(state))
        down = clusters.run("down")
        assert down.returncode == 0, down.stderr
        assert "removed processes: none" in down.stdout
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)
    assert clusters.left() == []


# ---------------------------------------------------------------------------- 5, 6, 8, 9

@pytest.mark.parametrize(("services", "says"), [
    ({"admin": ADMIN, "a": worker("Same"), "b": worker("Same")},
     "services a and b both run a worker named 'Same'"),
    ({"admin": {**ADMIN, "entrypoint": ["sh"]}}, "does not support entrypoint"),
    ({"admin": {**ADMIN, "env_file": ".env", "user": "ceylon"}}, "env_file, user"),
    ({"admin": {**ADMIN, "working_dir": "/app", "restart": "always"}}, "working_dir ("),
])
def test_compose_files_bin_cluster_cannot_run_as_written_are_refused(
        tmp_path: Path, services: dict[str, Any], says: str) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump({"services": services}))
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_compose(path)


@pytest.mark.parametrize("subnet", ["banana", "10.213.7.5/24", "10.213.7.0/30", "10.0.0.0/16",
                                    "8.8.8.0/24", "127.0.0.0/24", "fd00::/120"])
def test_anything_but_a_private_slash_24_subnet_exits_2_and_says_why(
        tmp_path: Path, subnet: str) -> None:
    from typer.testing import CliRunner

    # The compose file is valid for the malformed ones, missing for the others, so a version
    # that took the subnet could not start a cluster either.
    malformed = subnet in ("banana", "10.213.7.5/24")
    compose = tmp_path / "compose.yaml"
    if malformed:
        compose.write_text(yaml.safe_dump({"services": {"admin": ADMIN}}))
    result = CliRunner().invoke(cluster_cli.app, ["up", "--subnet", subnet, "--compose",
                                              str(compose), "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "--subnet" in result.output and "private /24" in result.output
    assert not (tmp_path / "s").exists()


def test_relative_paths_are_from_the_callers_working_directory(tmp_path: Path) -> None:
    mine = tmp_path / "mine-compose.yaml"
    mine.write_text(yaml.safe_dump({"services": {"admin": {**ADMIN, "user": "x"}}}))
    up = subprocess.run([str(REPO / "bin" / "cluster"), "up", "--compose", mine.name,
                         "--state-dir", "st"], capture_output=True, text=True, timeout=60,
                        cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert up.returncode == 2 and f"{mine}: service admin" in up.stderr, up.stderr
    logs = subprocess.run([str(REPO / "bin" / "cluster"), "logs", "--state-dir", "st"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert logs.returncode == 1 and str(tmp_path / "st" / "state.json") in logs.stderr
    assert not (REPO / "st").exists()


def test_compose_yaml_publishes_the_admins_ports_on_loopback_only() -> None:
    """Its admin has no token: publishing on every interface would let anyone who reaches
    the machine join, submit and read (the comment there says how to open them up)."""
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published), published


def test_what_removes_a_cluster_names_its_state_dir_unless_it_is_the_default():
    """A new user's trial: `up --state-dir /tmp/nu/cluster` twice said "run `bin/cluster down`
    first", which looks in .cluster, finds nothing, and leaves that cluster up."""
    assert cluster.how_to_remove(Path(".cluster")) == "bin/cluster down"
    assert cluster.how_to_remove(Path("/tmp/nu/cluster")) == \
        "bin/cluster down --state-dir /tmp/nu/cluster"
    assert "`bin/cluster down --state-dir /tmp/nu/cluster` removes the stale state" in \
        cluster.gone_message(Path("/tmp/nu/cluster"))
