"""CURVE keys and workspace tokens, as a user sets them up with the CLIs."""

import asyncio
import json
import shutil
import signal
import subprocess

import pytest
from conftest import run

from ceylon_net.dev.testing import Cluster, cli, wait_until

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
    assert 'ceylon_workers{state="connected"} 4.0' in metrics.splitlines(), metrics
