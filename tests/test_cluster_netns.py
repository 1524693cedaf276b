"""The compose cluster as separate hosts: `bin/cluster up` runs compose.yaml's services each in
its own network namespace; a fifth host on the same bridge sees three workers at three
addresses; `bin/cluster down` leaves nothing behind. Needs root and iproute2 (CI has both)."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run

from ceylon_net.dev import cluster, cluster_cli, netns
from ceylon_net.dev.compose import admin_of, load_compose, start_order, worker_names
from ceylon_net.dev.testing import cli, wait_until

needs_netns = pytest.mark.skipif(not netns.is_available(),
                                 reason=f"needs network namespaces: {netns.unavailable_reason()}")

COMPOSE = REPO / "compose.yaml"
ROUTER_PORT = 8000
UP_TIMEOUT = 60.0


def compose_services() -> dict[str, dict[str, Any]]:
    """compose.yaml as a user reads it: plain YAML, no code of ours in between."""
    return yaml.safe_load(COMPOSE.read_text())["services"]


def bin_cluster(*args: str, timeout: float = UP_TIMEOUT + 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "bin" / "cluster"), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class ClusterRun:
    """One `bin/cluster up` with its own state dir, so it never meets a developer's cluster."""

    state_dir: Path
    state: dict[str, Any] | None = None
    root_links_before: set[str] | None = None

    def up(self) -> None:
        self.root_links_before = root_links()
        done = bin_cluster("up", "--state-dir", str(self.state_dir),
                           "--timeout", str(UP_TIMEOUT))
        assert done.returncode == 0, done.stdout + done.stderr
        self.state = cluster.read_state(self.state_dir)

    def down(self) -> subprocess.CompletedProcess[str]:
        return bin_cluster("down", "--state-dir", str(self.state_dir), timeout=60)

    def logs(self, lines: int = 40) -> str:
        """The last lines of every service's log: what a failed assertion shows."""
        assert self.state is not None
        return "".join(f"\n--- {name}:\n" + "\n".join(cluster.log_tail(svc, lines))
                       for name, svc in self.state["services"].items())

    @property
    def prefix(self) -> str:
        assert self.state is not None
        return self.state["network"]["prefix"]

    def network(self) -> netns.Network:
        """The cluster's network, to add hosts to (never torn down through this object)."""
        assert self.state is not None
        return netns.Network.from_state(self.state["network"])


@pytest.fixture
def compose_cluster(tmp_path: Path) -> Iterator[ClusterRun]:
    c = ClusterRun(tmp_path / "cluster")
    try:
        c.up()
        yield c
    finally:
        c.down()
        if c.state is not None:  # in case `down` itself failed: the test must not leak
            netns.teardown_prefix(c.prefix)


def ours(prefix: str) -> dict[str, list[str]]:
    """What of ours is still on the machine: namespaces and /etc/netns dirs."""
    return {"namespaces": [n for n in netns.namespaces() if n.startswith(prefix)],
            "etc": [str(p) for p in netns.ETC_NETNS.glob(f"{prefix}*")]}


def root_links() -> set[str]:
    """Interface names in the root namespace (ours never appear there)."""
    return {line.split(":")[1].strip().split("@")[0]
            for line in netns.ip("-o", "link").splitlines()}


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Until no pid is running (zombies included: their parent must reap them too)."""
    run(wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout,
                   f"processes {pids} to be gone"))


def seed_plus_generated(path: Path) -> Path:
    """The seed's three tasks (short) plus 50 generated ones of difficulty 1-9."""
    seed = json.loads((REPO / "examples" / "seed_tasks.json").read_text())["tasks"]
    tasks = [{**t, "duration": 0.3} for t in seed]
    tasks += [{"id": f"gen-{i}", "description": f"generated {i}", "difficulty": 1 + i % 9,
               "duration": 0.05} for i in range(50)]
    path.write_text(json.dumps({"tasks": tasks}))
    return path


def python_in(net: netns.Network, host: str, code: str, timeout: float = 15.0
              ) -> subprocess.CompletedProcess[str]:
    return net.call(host, [sys.executable, "-c", code], timeout=timeout)


# ---------------------------------------------------------------------------- (a)

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(180)
def test_cluster_up_shows_three_workers_at_three_addresses_then_down_leaves_nothing(
        compose_cluster: ClusterRun) -> None:
    state = compose_cluster.state
    assert state is not None
    assert set(state["services"]) == set(compose_services())
    ports = {h["port"] for h in state["network"]["hosts"].values()}
    assert not ports & root_links()  # the root namespace is untouched

    net = compose_cluster.network()
    client = net.add_host("client")  # a fifth host on the same bridge, not a service
    try:
        admin_address = state["services"]["admin"]["address"]
        done = net.call(client, [*cli("ceylon-status"), "--admin-peer", admin_address,
                                 "--port", str(ROUTER_PORT), "--json"], timeout=30)
        assert done.returncode == 0, done.stderr
        snapshot = json.loads(done.stdout)
        tasks = seed_plus_generated(compose_cluster.state_dir.parent / "tasks.json")
        submitted = net.call(client, [*cli("ceylon-submit"), str(tasks), "--admin-peer",
                                      "admin", "--port", str(ROUTER_PORT), "--wait", "--json"],
                             timeout=120)
    finally:
        net.remove_host("client")
    assert submitted.returncode == 0, submitted.stderr + compose_cluster.logs()
    report = json.loads(submitted.stdout)
    assert len(report["tasks"]) == 53 and report["unassigned"] == []
    skill = {"Junior": 3, "Intermediate": 6, "Senior": 9}
    assert report["success_rate"] == 1.0  # every difficulty is <= 9: the skills cover all
    assert all(skill[t["worker"]] >= t["difficulty"] for t in report["tasks"])
    seed = {t["id"]: t["worker"] for t in report["tasks"] if t["id"] in (1, 2, 3)}
    assert seed == {1: "Junior", 2: "Intermediate", 3: "Senior"}

    workers = {w["name"]: w["host"] for w in snapshot["workers"]}
    assert set(workers) == {"Junior", "Intermediate", "Senior"}
    addresses = {state["services"][s]["address"] for s in ("junior", "intermediate", "senior")}
    assert set(workers.values()) == addresses
    assert len(addresses) == 3
    assert client.address not in addresses | {admin_address}

    pids = [s["pid"] for s in state["services"].values()]
    first, second = compose_cluster.down(), compose_cluster.down()
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0 and "nothing to do" in second.stdout, second.stderr
    wait_gone(pids)
    assert ours(compose_cluster.prefix) == {"namespaces": [], "etc": []}
    assert root_links() <= (compose_cluster.root_links_before or set())
    assert not compose_cluster.state_dir.exists()


# ---------------------------------------------------------------------------- (b)

@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(180)
def test_the_cluster_ran_exactly_the_compose_files_commands(
        compose_cluster: ClusterRun) -> None:
    state = compose_cluster.state
    assert state is not None
    services = compose_services()
    for name, spec in services.items():
        assert isinstance(spec["command"], list), f"{name}: keep command a YAML list"
        ran = state["services"][name]
        assert ran["argv"] == spec["command"], name
        # The process itself: `ip netns exec` exec'd the console script, so its command line
        # is [python, .../SCRIPT, ARGS...], it runs in the service's namespace, with its env.
        cmdline = Path(f"/proc/{ran['pid']}/cmdline").read_bytes().decode().split("\0")[:-1]
        assert [Path(cmdline[1]).name, *cmdline[2:]] == spec["command"], name
        environ = dict(line.split("=", 1) for line in Path(f"/proc/{ran['pid']}/environ")
                       .read_bytes().decode().split("\0") if "=" in line)
        for key, value in (spec.get("environment") or {}).items():
            assert environ.get(key) == str(value), (name, key)
        assert netns.ip("netns", "identify", str(ran["pid"])).strip() == ran["namespace"]
    hosts = {n for n in netns.namespaces() if n.startswith(compose_cluster.prefix)}
    assert hosts == {f"{compose_cluster.prefix}-{n}" for n in [*services, netns.SWITCH]}


# ---------------------------------------------------------------------------- (c)

SERVER = """
import socket, sys
s = socket.create_server(("0.0.0.0", 9100))
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b"hello from " + socket.gethostname().encode())
    conn.close()
"""

CONNECT = """
import socket, sys
with socket.create_connection(("beta", 9100), timeout=float(sys.argv[1])) as c:
    print(c.recv(100).decode())
"""


@pytest.mark.netns
@needs_netns
@pytest.mark.timeout(60)
def test_hosts_reach_each_other_by_name_until_unplugged(tmp_path: Path) -> None:
    before = root_links()
    with netns.network(subnet="10.213.99.0/24", hosts=["alpha", "beta"]) as net:
        log = tmp_path / "server.log"
        server = net.run("beta", [sys.executable, "-c", SERVER], stdout=log, stderr=log)
        run(wait_until(lambda: "listening" in log.read_text(), 15, "the server in beta"))

        ok = net.call("alpha", [sys.executable, "-c", CONNECT, "2"], timeout=15)
        assert ok.returncode == 0, ok.stderr
        assert "hello from" in ok.stdout
        assert net.hosts["alpha"].address.startswith("10.213.99.")

        net.link_down("beta")
        started = time.monotonic()
        cut = net.call("alpha", [sys.executable, "-c", CONNECT, "1"], timeout=15)
        assert cut.returncode != 0
        assert "timed out" in cut.stderr or "unreachable" in cut.stderr, cut.stderr
        assert time.monotonic() - started < 10

        net.link_up("beta")
        run(wait_until(lambda: net.call("alpha", [sys.executable, "-c", CONNECT, "1"],
                                        timeout=15).returncode == 0, 20, "beta plugged back"))
        prefix = net.prefix
    assert server.poll() is not None
    assert ours(prefix) == {"namespaces": [], "etc": []}
    assert root_links() <= before


@pytest.mark.netns
@needs_netns
@pytest.mark.skipif(shutil.which("iptables") is None, reason="iptables is not installed")
@pytest.mark.timeout(60)
def test_iptables_rules_apply_inside_one_host_only(tmp_path: Path) -> None:
    with netns.network(subnet="10.213.98.0/24", hosts=["alpha", "beta"]) as net:
        log = tmp_path / "server.log"
        net.run("beta", [sys.executable, "-c", SERVER], stdout=log, stderr=log)
        run(wait_until(lambda: "listening" in log.read_text(), 15, "the server in beta"))
        net.iptables("beta", ["-A", "INPUT", "-p", "tcp", "--dport", "9100", "-j", "DROP"])
        assert "9100" in net.iptables("beta", ["-S", "INPUT"])
        dropped = net.call("alpha", [sys.executable, "-c", CONNECT, "1"], timeout=15)
        assert dropped.returncode != 0 and "timed out" in dropped.stderr, dropped.stderr
        assert "9100" not in subprocess.run(["iptables", "-S"], capture_output=True,
                                            text=True, timeout=10).stdout  # root untouched
        net.iptables("beta", ["-D", "INPUT", "-p", "tcp", "--dport", "9100", "-j", "DROP"])
        ok = net.call("alpha", [sys.executable, "-c", CONNECT, "2"], timeout=15)
        assert ok.returncode == 0, ok.stderr


def test_without_root_bin_cluster_says_so_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    monkeypatch.setattr(netns, "unavailable_reason", lambda: "network namespaces need root")
    result = CliRunner().invoke(cluster_cli.app, ["up"])
    assert result.exit_code == 2
    assert "need root" in result.output


def test_compose_start_order_and_healthcheck_are_read_as_compose_means_them() -> None:
    services = load_compose(COMPOSE)
    order = start_order(services)
    assert order[0] == "admin"
    assert admin_of(services).healthcheck[0] == "ceylon-status"
    assert worker_names(services) == {"Junior", "Intermediate", "Senior"}
    for name in ("junior", "intermediate", "senior"):
        assert services[name].wait_healthy == ("admin",)

