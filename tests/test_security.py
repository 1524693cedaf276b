"""CURVE keys and workspace tokens, as a user sets them up with the CLIs."""

import asyncio
import json
import os
import shutil
import signal
import struct
import subprocess

import pytest
from conftest import REPO, run

from ceylon_net.dev.testing import Cluster, cli, wait_until
from ceylon_net.wire import topic

SECRET = "TOP-SECRET-DESCRIPTION-7f3a"


def _keys(tmp_path, *names):
    for name in names:
        subprocess.run([*cli("ceylon-keygen"), str(tmp_path / "keys"), "--name", name],
                       check=True, capture_output=True)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    return tmp_path / "keys", authorized


def _secret_tasks(tasks_file):
    return tasks_file([{"id": i, "description": f"{SECRET} {i}", "difficulty": 1,
                        "duration": 0.05} for i in range(3)])


class Capture:
    """tcpdump on loopback for two ports, while the body runs."""

    def __init__(self, path, ports):
        self.path, self.ports = path, ports

    async def __aenter__(self):
        flt = " or ".join(f"tcp port {p}" for p in self.ports)
        self.proc = await asyncio.create_subprocess_exec(
            "tcpdump", "--immediate-mode", "-i", "lo", "-U", "-s", "0", "-w", str(self.path), flt,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stderr.readline(), 10)
        assert b"listening on" in line, line
        return self

    async def __aexit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.proc.wait(), 10)

    def bytes(self):
        return self.path.read_bytes()


needs_capture = pytest.mark.skipif(shutil.which("tcpdump") is None,
                                   reason="needs tcpdump (bin/test installs it as root)")


@needs_capture
def test_curve_admin_lets_in_only_authorized_keys_and_encrypts(tmp_path, tasks_file):
    keys, authorized = _keys(tmp_path, "admin", "good", "bad")
    shutil.copy(keys / "good.key", authorized / "good.key")
    tasks = _secret_tasks(tasks_file)
    admin_secret, admin_public = keys / "admin.key_secret", keys / "admin.key"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            async with Capture(tmp_path / "curve.pcap", [c.port, c.pub_port]) as cap:
                admin = await c.admin("--tasks", str(tasks), "--expect-workers", "1",
                                      "--curve-secret", str(admin_secret),
                                      "--authorized-keys", str(authorized))
                await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "admin")
                bad = await c.worker("Bad", "--curve-secret", str(keys / "bad.key_secret"),
                                     "--admin-key", str(admin_public), "--connect-timeout", "3")
                plain = await c.worker("Plain", "--connect-timeout", "3")
                status = await c.spawn("status", [*cli("ceylon-status"), "--port", str(c.port),
                                                  "--timeout", "3"])
                refused = [await p.wait(20) for p in (bad, plain, status)]
                good = await c.worker("Good", "--curve-secret", str(keys / "good.key_secret"),
                                      "--admin-key", str(admin_public))
                code = await admin.wait(30)
                await good.wait(15)
            return refused, code, admin, bad, plain, status, cap.bytes()

    refused, code, admin, bad, plain, status, captured = run(body())
    assert refused == [1, 1, 1]
    for p in (bad, plain):
        assert "no admin answered" in p.stderr()
    assert "With CURVE, a wrong --admin-key, or our key missing" in bad.stderr()
    for p in (plain, status):  # (they could not know the admin wants CURVE: said as likely)
        assert "An admin run with CURVE (--curve-secret) looks the same to one without " \
               "--curve-secret and --admin-key." in p.stderr(), p.stderr()
    # The admin names the key it refused, once (the worker retried several times).
    assert admin.stderr().count("refused a connection: DENIED (CURVE) domain=* client_key=") == 1
    assert "no admin answered" in status.stderr()
    assert code == 0, admin.stderr()
    assert "Success rate: 100.00% (3/3 tasks)" in admin.stdout()
    assert "worker 'Good' joined" in admin.stderr()
    assert "'Bad'" not in admin.stderr() and "'Plain'" not in admin.stderr()
    assert len(captured) > 1000  # the capture saw the traffic ...
    assert SECRET.encode() not in captured  # ... and none of it in clear


@needs_capture
def test_without_curve_the_same_capture_does_show_the_descriptions(tmp_path, tasks_file):
    tasks = _secret_tasks(tasks_file)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            async with Capture(tmp_path / "plain.pcap", [c.port, c.pub_port]) as cap:
                admin = await c.admin("--tasks", str(tasks), "--expect-workers", "1")
                await c.worker("Plain")
                assert await admin.wait(30) == 0
            return cap.bytes()

    assert SECRET.encode() in run(body())  # so the test above can fail


def test_token_lets_in_the_right_workers_and_clients_only(tmp_path, tasks_file):
    tasks = tasks_file([{"id": 1, "description": "x", "difficulty": 1, "duration": 0.05}])
    token = "correct-horse-battery-staple"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(tasks), "--expect-workers", "1",
                                  "--token", token)
            await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "admin")
            wrong = await c.worker("Wrong", "--token", "not-the-token")
            none = await c.worker("NoToken")
            status = await c.spawn("status", [*cli("ceylon-status"), "--port", str(c.port),
                                              "--json"])
            refused = [await p.wait(20) for p in (wrong, none, status)]
            good_status = await c.spawn("status-ok", [*cli("ceylon-status"), "--port",
                                                      str(c.port), "--json"],
                                        env={"CEYLON_TOKEN": token})
            ok_status = await good_status.wait(20)
            right = await c.worker("Right", "--token", token)
            code = await admin.wait(30)
            await right.wait(15)
            return refused, ok_status, code, admin.stderr(), wrong, good_status

    refused, ok_status, code, err, wrong, good_status = run(body())
    assert refused == [1, 1, 1]
    assert "rejected by the admin: wrong or missing token" in wrong.stderr()
    assert err.count("wrong or missing token") == 3
    assert "refused HELLO from b'Wrong/" in err and "(127.0.0.1)" in err
    assert ok_status == 0 and json.loads(good_status.stdout())["admin"] == "admin"
    assert code == 0


def test_keygen_refuses_to_overwrite_a_secret_key(tmp_path):
    args = [*cli("ceylon-keygen"), str(tmp_path), "--name", "admin"]
    first = subprocess.run(args, capture_output=True, text=True)
    second = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 0 and "secret key:" in first.stdout
    assert (tmp_path / "admin.key_secret").stat().st_mode & 0o777 == 0o600
    assert second.returncode == 2 and "not overwriting it" in second.stderr
    (tmp_path / "afile").write_text("")  # where the keys' directory would go
    third = subprocess.run([*cli("ceylon-keygen"), str(tmp_path / "afile"), "--name", "x"],
                           capture_output=True, text=True)
    assert third.returncode == 2, third.stderr
    assert f"error: {tmp_path / 'afile'}: File exists" in third.stderr
    assert "Traceback" not in third.stderr


def test_keygen_takes_the_log_options_every_program_has(tmp_path):
    """It refused them as no such option (exit 2), though the README says every program
    has them; with --log-json, what it says on stderr is JSON too."""
    args = [*cli("ceylon-keygen"), str(tmp_path), "--name", "k", "--log-level", "INFO"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=30)
    second = subprocess.run([*args, "--log-json"], capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert "public key:" in first.stdout and (tmp_path / "k.key_secret").exists()
    assert second.returncode == 2, second.stderr
    said = [json.loads(line)["record"] for line in second.stderr.splitlines() if line]
    assert [r["level"]["name"] for r in said] == ["ERROR"], second.stderr
    assert "not overwriting it" in said[0]["message"]


def test_key_files_found_wanting_are_refused_at_start_exit_2_whichever_program(tmp_path):
    """A junk .key among the authorized ones made the admin refuse every key, the good ones
    too, silently (pyzmq logs the file once, then denies all); a malformed key value was a
    ZMQError traceback; ceylon-worker showed a traceback, exit 1, for a missing --admin-key
    or a public file given as its secret."""
    from ceylon_net.dev.testing import free_port

    keys, authorized = _keys(tmp_path, "admin", "w")
    shutil.copy(keys / "w.key", authorized)
    (authorized / "junk.key").write_text("garbage\n")
    short = tmp_path / "short.key_secret"
    short.write_text((keys / "admin.key_secret").read_text().replace(
        (keys / "admin.key_secret").read_text().split('secret-key = "')[1].split('"')[0],
        "tooshort"))
    port = str(free_port())
    runs = {
        "junk authorized": [*cli("ceylon-admin"), "--port", port, "--curve-secret",
                            str(keys / "admin.key_secret"), "--authorized-keys", str(authorized)],
        "short secret": [*cli("ceylon-admin"), "--port", port, "--curve-secret", str(short),
                         "--authorized-keys", str(keys)],
        "worker, no admin key": [*cli("ceylon-worker"), "--name", "w", "--port", port,
                                 "--curve-secret", str(keys / "w.key_secret"),
                                 "--admin-key", str(tmp_path / "nope")],
        "worker, public as secret": [*cli("ceylon-worker"), "--name", "w", "--port", port,
                                     "--curve-secret", str(keys / "w.key"),
                                     "--admin-key", str(keys / "admin.key")],
    }
    out = {what: subprocess.run(argv, capture_output=True, text=True, timeout=30)
           for what, argv in runs.items()}
    for what, p in out.items():
        assert p.returncode == 2 and "Traceback" not in p.stderr, (what, p.stderr[-2000:])
    assert f"--authorized-keys: the key file {authorized / 'junk.key'}: cannot load a key" \
        in out["junk authorized"].stderr
    assert "not a CURVE key" in out["short secret"].stderr
    assert "--admin-key" in out["worker, no admin key"].stderr
    assert "that is the public .key file" in out["worker, public as secret"].stderr


def test_the_admin_says_at_start_what_is_open_to_anyone_who_can_reach_it():
    """A token keeps strangers from joining, not from subscribing to the PUB port; CURVE
    covers the ZeroMQ ports, not the dashboard or the metrics endpoint (which takes no
    token). An operator was told nothing of either."""
    from ceylon_net.settings import AdminSettings

    token_only = AdminSettings(port=1, bind="0.0.0.0", token="t" * 20).exposure
    curve_http = AdminSettings(port=1, bind="0.0.0.0", curve_secret="k", authorized_keys="d",
                               dashboard_port=5, metrics_port=6).exposure
    assert token_only is not None and "subscribe to the PUB port (every assignment, result " \
        "and broadcast) without the token" in token_only
    assert curve_http is not None and "the dashboard (--dashboard-port) is open" in curve_http
    assert "the metrics endpoint (--metrics-port) takes no token" in curve_http
    assert AdminSettings(port=1, bind="127.0.0.1", metrics_port=3).exposure is None


@pytest.mark.timeout(90)
def test_workers_past_their_addresss_hello_rate_are_dropped_counted_and_all_join_on_retry(
        tmp_path):
    """--hello-rate 1: four workers start at once on one address; the admin takes one
    registration a second from it, drops the rest unread and counts them (its metrics say
    how many), and the workers retry until every one has joined."""
    import re
    import urllib.request

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--hello-rate", "1", "--metrics-port", "0")
            for i in range(4):
                await c.worker(f"w{i}", "--connect-timeout", "60")
            await wait_until(lambda: admin.stderr().count("joined from 127.0.0.1") == 4, 60,
                             "all four workers to join")
            port = re.search(r"metrics on http://[^:]+:(\d+)/metrics", admin.stderr())
            assert port is not None, admin.stderr()
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics",
                                        timeout=10) as r:
                return r.read().decode()

    metrics = run(body())
    dropped = re.search(r"^ceylon_dropped_hellos(?:_total)? (\S+)$", metrics, re.M)
    assert dropped is not None and float(dropped.group(1)) >= 1, metrics
    assert 'ceylon_workers_connected 4.0' in metrics.splitlines(), metrics


# ---- a security review's findings (helper): what a stranger could make the admin do
# through its PUB port, which anyone reaches without CURVE

PUB_TOKEN = "correct-horse-battery-staple"


class RawSubscriber:
    """A SUB peer on the admin's PUB port, ZMTP 3.0 with the NULL mechanism, by hand."""

    def __init__(self, port):
        self.port = port
        self.closed = False  # the admin closed the connection
        self.frames = []  # messages' frames the admin published to us

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0")
                    + b"\x00" + b"\0" * 31)
        self.writer.write(greeting)
        name, value = b"Socket-Type", b"SUB"
        ready = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
        self.writer.write(self._frame(ready, command=True))
        await self.writer.drain()
        await self.reader.readexactly(64)  # the admin's greeting
        self._reading = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        self._reading.cancel()
        self.writer.close()

    @staticmethod
    def _frame(body, command=False, more=False):
        flags = (0x04 if command else 0) | (0x01 if more else 0)
        if len(body) > 255:
            return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
        return bytes([flags, len(body)]) + body

    async def _read(self):
        try:
            while True:
                flags = (await self.reader.readexactly(1))[0]
                size = (struct.unpack(">Q", await self.reader.readexactly(8))[0]
                        if flags & 0x02 else (await self.reader.readexactly(1))[0])
                body = await self.reader.readexactly(size)
                if not flags & 0x04:
                    self.frames.append(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = True

    async def subscribe(self, *topics):
        try:
            for t in topics:
                self.writer.write(self._frame(b"\x01" + t))
            await self.writer.drain()
        except ConnectionError:  # the admin dropped us while we sent
            self.closed = True


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(90)
def test_a_stranger_cannot_make_the_admin_allocate_without_bound_through_the_pub_port(tmp_path):
    """The PUB (XPUB) socket has no ZMQ_MAXMSGSIZE, and libzmq keeps every subscription in a
    trie of about 85 bytes per byte of topic: one 3 MiB "subscription" from a peer with no
    token grows the admin by some 250 MB (4 MiB: 340 MB), and distinct ones add up. A topic
    the admin needs is its workspace and a kind (a few dozen bytes): a longer one should cost
    the sender its connection, as an oversized frame on the ROUTER does."""

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--token", PUB_TOKEN)
            await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "the admin")
            before = _rss_kb(admin.process.pid)
            async with RawSubscriber(c.pub_port) as stranger:
                await stranger.subscribe(b"A" * (3 << 20))
                # The admin drops the connection (fixed), or holds what it was sent (now).
                await wait_until(lambda: stranger.closed
                                 or _rss_kb(admin.process.pid) - before > 128 << 10, 30,
                                 "the admin to drop the connection or take the subscription")
                grown = _rss_kb(admin.process.pid) - before
            return grown, admin.returncode

    grown, code = run(body())
    assert code is None, "the admin died"
    assert grown < 64 << 10, f"one subscription from a stranger grew the admin by {grown:,} kB"


@pytest.mark.timeout(120)
def test_a_strangers_subscriptions_cost_the_admin_time_in_proportion_to_their_number(tmp_path):
    """Each subscription the XPUB reports makes the admin ask, for each of ~24 kinds, whether
    any subscription it holds is a prefix of that kind's topic (AdminSockets.
    follow_subscriptions -> wanted(): a scan of every subscription), and it holds all of
    them, the stranger's too: N distinct subscriptions cost O(24 N^2). 4,000 of 15 bytes
    (60 kB from a peer with no token) cost the admin some 10 s of CPU, 40,000 some 15 min,
    its event loop taken for a growing slice of every turn. Only prefixes of the workspace's
    topics can ever matter; the rest need not be kept or scanned."""
    n = 4_000

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--token", PUB_TOKEN)
            await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "the admin")
            async with RawSubscriber(c.pub_port) as stranger:
                cpu = _cpu_seconds(admin.process.pid)
                await stranger.subscribe(*(b"junk-%010d" % i for i in range(n)))
                # Last, in the same connection: the admin's PUB heartbeats. The first that
                # comes says every subscription before it was handled.
                await stranger.subscribe(topic("default") + b"HB")
                await wait_until(lambda: any(f.startswith(topic("default") + b"HB")
                                             for f in stranger.frames), 100,
                                 "the admin's heartbeat on PUB")
                spent = _cpu_seconds(admin.process.pid) - cpu
            return spent, admin.returncode

    spent, code = run(body())
    assert code is None, "the admin died"
    assert spent < 3.0, f"{n:,} subscriptions from a stranger cost the admin {spent:.1f} s of CPU"


@pytest.mark.timeout(90)
def test_connections_to_the_metrics_port_that_send_nothing_cannot_pile_up_threads(tmp_path):
    """The metrics endpoint takes no token and served each connection in a thread of its
    own, which waits up to 10 s for a request: 300 connections that send nothing held 300
    threads in the admin (a security review's note). At most 32 are served at once; the
    rest are closed at once, and once those have gone a scrape is answered."""
    import re
    import socket
    import urllib.request

    def threads(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--metrics-port", "0", "--bind", "127.0.0.1")
            await wait_until(lambda: "metrics on http://" in admin.stderr(), 15, "metrics")
            port = int(re.search(r"metrics on http://[^:]+:(\d+)/metrics",
                                 admin.stderr()).group(1))
            before = threads(admin.process.pid)
            idle = [socket.create_connection(("127.0.0.1", port), timeout=10)
                    for _ in range(300)]
            for s in idle:
                s.setblocking(False)

            def closed(s: socket.socket) -> bool:
                try:
                    return s.recv(1) == b""
                except BlockingIOError:
                    return False

            try:  # (each is taken in turn: closed by the admin, or held by a thread)
                await wait_until(lambda: sum(map(closed, idle)) >= 300 - 40
                                 or threads(admin.process.pid) - before > 40, 30,
                                 "the connections to be taken")
                peak = threads(admin.process.pid)
            finally:
                for s in idle:
                    s.close()
            answered: list[int] = []

            def scraped() -> bool:  # (the places free as their threads see the closes)
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=20) as r:
                        answered.append(r.status)
                except (ConnectionError, OSError):  # (a place not free yet: closed)
                    return False
                return True

            await wait_until(lambda: asyncio.to_thread(scraped), 20, "a scrape answered")
            return before, peak, answered[0]

    before, peak, status = run(body())
    assert peak - before <= 40, f"{peak - before} threads more for connections that send nothing"
    assert status == 200


def test_the_compose_healthcheck_passes_with_curve_in_the_admins_environment(tmp_path):
    """compose.yaml's healthcheck runs ceylon-status with the admin's CEYLON_* variables:
    with CURVE there, it had the admin's secret key and no admin key ("--curve-secret and
    --admin-key go together"), and given CEYLON_ADMIN_KEY too, the admin refused its own key:
    unhealthy for ever, the workers never started. The admin lets its own key in. And the
    admin's secret key file given as --admin-key (copied to every worker host: whoever reads
    it could pose as the admin) is refused, as a public file given as --curve-secret is.
    (A review.)"""
    import yaml

    keys, authorized = _keys(tmp_path, "admin", "w")
    shutil.copy(keys / "w.key", authorized / "w.key")
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["admin"]
    check = service["healthcheck"]["test"][1:]  # (after "CMD")
    curve_env = {"CEYLON_CURVE_SECRET": str(keys / "admin.key_secret"),
                 "CEYLON_AUTHORIZED_KEYS": str(authorized),
                 "CEYLON_ADMIN_KEY": str(keys / "admin.key")}

    async def body():
        async with Cluster(workdir=tmp_path, env=curve_env) as c:  # (as in compose: the
            admin = await c.admin()  # admin takes the variables it knows, ignores the rest)
            await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "admin")
            argv = [*cli(check[0]), *check[1:]]
            argv[argv.index("--port") + 1] = str(c.port)
            health = await c.spawn("health", argv)
            leaked = await c.worker("w", "--curve-secret", str(keys / "w.key_secret"),
                                    "--admin-key", str(keys / "admin.key_secret"))
            return await health.wait(20), health.stderr(), await leaked.wait(20), \
                leaked.stderr()

    code, err, leaked_code, leaked_err = run(body())
    assert code == 0, err
    assert leaked_code == 2, leaked_err
    assert f"--admin-key {keys / 'admin.key_secret'} is a secret key file: give the admin's " \
           f"public .key file" in leaked_err


def test_a_secret_key_others_may_read_is_said_as_it_is_loaded(tmp_path):
    """A .key_secret of mode 0644 was taken without a word (whoever reads it can pose as its
    program; ceylon-keygen writes 0600: a review of hostile peers). Said, not refused: a
    container's mounted secrets may come so."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from kit import Said

    from ceylon_net.edge.transport import create_keypair, load_keys

    _, secret = create_keypair(tmp_path, "w")
    with Said() as quiet:
        load_keys(secret)
    secret.chmod(0o644)
    with Said() as said:
        load_keys(secret)
    assert quiet.lines == [] and said.lines == [
        f"--curve-secret {secret}: others on this host may read it (mode 644): whoever does "
        f"can pose as this program (chmod 600 {secret})"], said.lines
