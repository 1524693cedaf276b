"""CLI surface: help texts, environment configuration, JSON logs, port conflicts."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run
from kit import said_once

from ceylon_net.dev.testing import Cluster, cli, free_port, wait_until


def test_help_texts_name_every_option_and_its_environment_variable():
    admin = subprocess.run([*cli("ceylon-admin"), "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"})
    worker = subprocess.run([*cli("ceylon-worker"), "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert admin.returncode == worker.returncode == 0
    for opt in ("--port", "--pub-port", "--bind", "--workspace", "--tasks", "--expect-workers",
                "--report-json", "--unassignable-timeout", "--log-level", "--log-json",
                "CEYLON_PORT"):
        assert opt in admin.stdout, opt
    for opt in ("--name", "--skill", "--role", "--concurrency", "--admin-peer", "--port",
                "--workspace", "--time-scale", "--connect-timeout", "CEYLON_ADMIN_PEER"):
        assert opt in worker.stdout, opt


def test_worker_configured_only_through_environment_joins(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            env = {"CEYLON_NAME": "EnvWorker", "CEYLON_SKILL": "7", "CEYLON_ROLE": "etl",
                   "CEYLON_CONCURRENCY": "3", "CEYLON_PORT": str(c.port),
                   "CEYLON_ADMIN_PEER": "localhost", "CEYLON_LOG_JSON": "1"}
            w = await c.spawn("env-worker", cli("ceylon-worker"), env=env)
            await wait_until(lambda: "worker 'EnvWorker' joined" in admin.stderr(), 15, "join")
            # The worker logs its side once the admin's WELCOME reaches it, a moment after the
            # admin logged the join: wait for that line too before reading its log.
            await wait_until(lambda: "registered with admin" in w.stderr(), 15, "welcome")
            return admin.stderr(), w

    err, w = run(body())
    assert "(role etl, skill 7, capacity 3)" in err
    lines = [json.loads(line) for line in w.stderr().splitlines() if line.strip()]
    assert any("registered with admin" in rec["text"] for rec in lines)


def test_port_in_use_is_a_clear_config_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"cannot bind tcp://127.0.0.1:{port} for --port: Address already in use" in proc.stderr


def test_with_log_json_the_error_a_command_stops_on_is_a_json_line_too(tmp_path):
    """What a log shipper most needs: it came as plain "error: ..." text among the JSON."""
    tasks = tmp_path / "t.json"
    tasks.write_text(json.dumps({"tasks": [{"id": 1, "description": "x", "difficulty": 1}]}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        admin = subprocess.run([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(port),
                                "--log-json"], capture_output=True, text=True, timeout=30)
    submit = subprocess.run([*cli("ceylon-submit"), str(tasks), "--port", str(free_port()),
                             "--connect-timeout", "0.5", "--log-json"],
                            capture_output=True, text=True, timeout=30)
    for proc, code, says in ((admin, 2, f"cannot bind tcp://127.0.0.1:{port} for --port"),
                             (submit, 4, "no admin answered")):
        assert proc.returncode == code, proc.stderr
        lines = [json.loads(line)["record"] for line in proc.stderr.splitlines() if line]
        assert lines[-1]["level"]["name"] == "ERROR" and says in lines[-1]["message"], lines


def test_a_busy_metrics_or_dashboard_port_is_a_clear_config_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        procs = {opt: subprocess.run([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", "0",
                                      opt, str(port)], capture_output=True, text=True, timeout=30)
                 for opt in ("--metrics-port", "--dashboard-port")}
    for opt, proc in procs.items():
        assert proc.returncode == 2, proc.stderr
        assert f"error: {opt} {port}: Address already in use" in proc.stderr


def test_metrics_on_any_free_port_says_which_and_answers_scrapes_that_come_together(tmp_path):
    """--metrics-port 0 logged port 0; 60 scrapes at once took 4.4 s (a backlog of 5), and
    every path answered the metrics."""
    import re
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def scrape(url: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--metrics-port", "0")
            await wait_until(lambda: "metrics on http://" in admin.stderr(), 15, "metrics")
            port = int(re.search(r"metrics on http://[^:]+:(\d+)/metrics",
                                 admin.stderr()).group(1))
            url = f"http://127.0.0.1:{port}"
            with ThreadPoolExecutor(60) as pool:
                many = list(pool.map(scrape, [f"{url}/metrics"] * 60))
            return port, many, scrape(f"{url}/foo")

    port, many, other = run(body())
    assert port != 0
    assert all(code == 200 and b"ceylon_tasks" in text for code, text in many)
    assert other == (404, b"not found: the metrics are at /metrics\n")


@pytest.mark.parametrize(("command", "args", "message"), [
    ("ceylon-worker", ["--skill", "11"], "--skill must be 0-10, got 11"),
    ("ceylon-worker", ["--admin-peer", "bad host"],
     "--admin-peer 'bad host' is not a host name or address (the port goes in --port)"),
    ("ceylon-worker", ["--admin-peer", "127.0.0.1:8000"],
     "--admin-peer '127.0.0.1:8000' is not a host name or address"),
    ("ceylon-worker", ["--time-scale", "nan"], "--time-scale must be >= 0"),
    ("ceylon-worker", ["--drain-timeout", "-1"], "--drain-timeout must be >= 0, got -1.0"),
    ("ceylon-status", ["--admin-peer", "bad host"], "is not a host name or address"),
    ("ceylon-status", ["--timeout", "nan"], "error: --timeout must be > 0, got nan"),
    ("ceylon-cancel", ["1", "--timeout", "0"], "error: --timeout must be > 0, got 0.0"),
    ("ceylon-submit", ["f.json", "--connect-timeout", "0"],
     "error: --connect-timeout must be > 0, got 0.0"),
    ("ceylon-status", ["--port", "0"], "error: --port 0 is not a port to connect to"),
    ("ceylon-status", ["--port", "99999"], "error: --port must be 1-65535, got 99999"),
    ("ceylon-worker", ["--admin-peer", ""], "--admin-peer is empty: give the admin's host name"),
    ("ceylon-submit", ["f.json", "--admin-peer", ""], "error: --admin-peer is empty"),
    ("ceylon-admin", ["--beats-per-second", "0"], "error: --beats-per-second must be at least 1"),
    ("ceylon-admin", ["--beats-per-second", "1e-6"],
     "error: --beats-per-second must be at least 1, got 1e-06"),
    ("ceylon-admin", ["--heartbeat", "1e-9"], "error: --heartbeat must be at least 0.1 s, got "
     "1e-09 (faster, a short pause reads as a peer lost: workers would register again"),
    ("ceylon-admin", ["--port", "7210", "--dashboard-port", "7211"], "error: --dashboard-port "
     "7211 is the admin's own PUB port (--pub-port, else --port + 1): give another"),
    ("ceylon-admin", ["--port", "7210", "--metrics-port", "7210"], "error: --metrics-port 7210 "
     "is the admin's own ROUTER port (--port): give another"),
    ("ceylon-admin", ["--hello-rate", "0.5"], "error: --hello-rate must be a number from 1 up "
     "(registrations a second from one address), got 0.5"),
    ("ceylon-admin", ["--hello-rate", "inf"], "error: --hello-rate must be a number from 1 up "
     "(registrations a second from one address), got inf"),
    ("ceylon-admin", ["--heartbeat", "inf"], "error: --heartbeat must be at most 3600 s"),
    ("ceylon-admin", ["--token", "t" * 16, "--dashboard-port", "7300", "--metrics-port", "7300"],
     "error: --metrics-port and --dashboard-port are both 7300: give them different ports"),
    # (the report or results written over the journal destroyed it)
    ("ceylon-admin", ["--journal", "never.db", "--results", "./never.db"],
     "error: --journal and --results are the same file (never.db): give each its own"),
    ("ceylon-admin", ["--tasks", "never.json", "--report-json", "never.json"],
     "error: --tasks and --report-json are the same file (never.json): give each its own"),
    # (a ZeroMQ traceback: its identity, the name and 9 bytes, is at most 255 bytes)
    ("ceylon-worker", ["--name", "é" * 124], "is 248 bytes in UTF-8, over the 200 it may be"),
    # (accepted, then the admin died as "a bug" encoding them for a status or a worker)
    ("ceylon-admin", ["--expect-workers", str(10**20)],
     "error: --expect-workers must be 0-1,000,000, got 100000000000000000000"),
    ("ceylon-admin", ["--liveness", str(10**20)], "error: --liveness must be at most 1000"),
    ("ceylon-keygen", ["/tmp", "--name", "a" * 300], "File name too long"),  # (a traceback)
    ("ceylon-keygen", ["/nonexistent-dir", "--name", "a\nb"], "must be a plain file name"),
    # (replaced by CEYLON_WORKSPACE, else 'default', silently)
    ("ceylon-status", ["--port", "1", "--workspace", ""],
     "error: workspace '' must be 1-200 printable characters"),
    ("ceylon-worker", ["--app", "./mypkg/handlers.py"],
     "--app ./mypkg/handlers.py: give a module name, not a file: --app handlers, run from its "
     "directory (or with it on PYTHONPATH)"),
])
def test_bad_option_values_exit_2_with_the_option_named(command, args, message):
    name = ["--name", "x"] if command == "ceylon-worker" else []
    proc = subprocess.run([*cli(command), *name, *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("source", "message"), [
    ('raise RuntimeError("boom at import")\n',
     "--app badapp: importing it raised RuntimeError: boom at import ("),
    ("def broken(:\n", "--app badapp: importing it raised SyntaxError: invalid syntax"),
    # (it made the worker exit 3 with nothing said)
    ("import sys\nsys.exit(3)\n", "--app badapp: importing it called sys.exit(3)"),
])
def test_a_worker_app_that_raises_on_import_is_a_clear_config_error(tmp_path, source,
                                                                    message):
    (tmp_path / "badapp.py").write_text(source)
    proc = subprocess.run([*cli("ceylon-worker"), "--name", "x", "--app", "badapp"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_worker_app_that_registers_no_handler_is_warned_of(tmp_path):
    """Its tasks would wait unassigned, the worker saying only 'handlers (none)' at INFO."""
    (tmp_path / "emptyapp.py").write_text("import json\n")
    proc = subprocess.run([*cli("ceylon-worker"), "--name", "x", "--app", "emptyapp",
                           "--port", str(free_port()), "--connect-timeout", "0.5"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert "WARNING | --app emptyapp: no handler registered (decorate its functions with " \
           "@handler(\"name\"), from ceylon_net)" in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "no admin answered" in proc.stderr


ENV_REFUSALS = [
    ("ceylon-worker", ["--name", "w"], "CEYLON_SKILL", "11",
     "error: CEYLON_SKILL (--skill) must be 0-10, got 11"),
    ("ceylon-worker", ["--name", "w"], "CEYLON_ADMIN_PEER", "127.0.0.1:8000",
     "error: CEYLON_ADMIN_PEER (--admin-peer) '127.0.0.1:8000' is not a host name or address "
     "(the port goes in --port)"),
    ("ceylon-admin", ["--port", "0"], "CEYLON_HEARTBEAT", "0",
     "error: CEYLON_HEARTBEAT (--heartbeat) must be at least 0.1 s, got 0.0"),
    ("ceylon-status", [], "CEYLON_TIMEOUT", "-1",
     "error: CEYLON_TIMEOUT (--timeout) must be > 0, got -1.0"),
    ("ceylon-admin", ["--port", "0"], "CEYLON_LOG_LEVEL", "bogus",
     "error: unknown CEYLON_LOG_LEVEL (--log-level) 'bogus'"),
    # (named already: said once, as it was; a review found it twice)
    ("ceylon-admin", ["--port", "0"], "CEYLON_TOKEN", "short",
     "error: the token (--token, CEYLON_TOKEN, token=) must be 8 to 1024 characters"),
]


@pytest.mark.parametrize(("program", "args", "var", "value", "said"), ENV_REFUSALS,
                         ids=[case[2] for case in ENV_REFUSALS])
def test_a_value_refused_that_came_from_a_variable_is_named_as_that_variable(
        program, args, var, value, said):
    """The user typed no --skill: a shell profile set CEYLON_SKILL (the error named the
    option only; click's own errors and the Python API name the variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEYLON_")}
    proc = subprocess.run([*cli(program), *args], capture_output=True, text=True, timeout=30,
                          env={**env, var: value})
    assert (proc.returncode, proc.stderr.splitlines()[0][:len(said)]) == (2, said), \
        proc.stderr
    if var == "CEYLON_SKILL":  # (given as the option, it is said as the option)
        given = subprocess.run([*cli(program), *args, "--skill", "11"], capture_output=True,
                               text=True, timeout=30, env={**env, var: "3"})
        assert given.stderr.startswith("error: --skill must be 0-10, got 11"), given.stderr


def test_parsing_the_options_loads_no_validation_framework():
    # typer 0.29 builds a pydantic validator for every option: 8 MiB more in every admin and
    # worker process and 50 ms more to start each. typer is pinned below it (pyproject.toml);
    # this fails if a newer pin brings that back.
    proc = subprocess.run([*cli("ceylon-worker"), "--name", "x", "--skill", "11",
                           "--concurrency", "2", "--time-scale", "0.5"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 2 and "--skill must be 0-10" in proc.stderr
    assert "| typer" in proc.stderr  # the import list is there
    assert "pydantic" not in proc.stderr


def test_sigterm_on_a_serving_admin_ends_the_workers_cleanly(tmp_path):
    import signal

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            w = await c.worker("Senior")
            await wait_until(lambda: "worker 'Senior' joined" in admin.stderr(), 15, "join")
            admin.signal(signal.SIGTERM)
            return await admin.wait(15), await w.wait(15), w.stderr()

    admin_code, worker_code, err = run(body())
    assert (admin_code, worker_code) == (0, 0)
    assert "admin ended the run: admin stopped" in err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_tasks_run_stopped_by_a_signal_exits_128_plus_it_with_the_report_so_far(
        tmp_path, tasks_file, sig):
    """So that 'ceylon-admin --tasks nightly.json && publish' does not publish a run cut
    short (it exited 0, said 'run over' and wrote no report)."""
    import signal

    number = getattr(signal, sig)
    path = tasks_file([{"id": i, "description": "t", "difficulty": 1, "duration": 0.3 * i}
                       for i in range(1, 4)] + [{"id": 9, "description": "long",
                                                 "difficulty": 1, "duration": 60}])
    report = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report))
            w = await c.worker("w", "--concurrency", "4")
            await wait_until(lambda: "progress: 3/4 done" in admin.stderr(), 30, "3 tasks")
            admin.signal(number)
            return await admin.wait(20), admin.stdout(), admin.stderr(), await w.wait(15)

    code, out, err, worker_code = run(body())
    assert code == 128 + number, err
    assert f"interrupted before the run finished by {sig}: the report so far follows" in err
    data = json.loads(report.read_text())
    assert sorted(t["id"] for t in data["tasks"]) == [1, 2, 3]
    # The one still running is said, not left out (before: in no list of the report).
    assert data["unfinished"] == [9] and data["unassigned"] == [] and data["cancelled"] == []
    assert "(3/3 tasks)" in out and "Not finished (the run was stopped first): 9" in out
    assert worker_code == 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_right_after_a_tasks_run_ended_leaves_its_report_and_exit_0(
        tmp_path, tasks_file, sig):
    """The run over ('run over' said), a signal as the admin wound down (compose or a CI
    timeout stopping everything): it died of it (-15, -2) or exited 130, its table cut off or
    missing, in most tries (found by a reviewing helper, 16 of 16 tries)."""
    import signal

    path = tasks_file([{"id": i, "description": "t", "difficulty": 1, "duration": 0}
                       for i in range(1, 4)])
    report = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json", str(report))
            await c.worker("w")
            await wait_until(lambda: "run over" in admin.stderr(), 30, "the run's end")
            admin.signal(getattr(signal, sig))
            return await admin.wait(20), admin.stdout(), admin.stderr()

    code, out, err = run(body())
    assert code == 0, err
    assert "Success rate: 100.00% (3/3 tasks)" in out, out
    assert len(json.loads(report.read_text())["tasks"]) == 3


def test_sighup_drains_a_worker_as_sigterm_does(tmp_path, tasks_file):
    """A closed terminal or SSH session: the worker finishes its task and says goodbye,
    instead of dying on the spot (exit 129) and being found lost later."""
    import signal

    path = tasks_file([{"id": "t", "description": "3 s", "difficulty": 1, "duration": 3}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1")
            w = await c.worker("w")
            await wait_until(lambda: "progress: 0/1 done, 1 running" in admin.stderr(), 30,
                             "the task to run")
            w.signal(signal.SIGHUP)
            return await w.wait(20), w.stderr(), await admin.wait(30), admin.stderr()

    worker_code, werr, admin_code, aerr = run(body())
    assert worker_code == 0, werr
    assert "drain" in werr, werr
    assert admin_code == 0 and " lost: " not in aerr, aerr


def test_a_worker_drained_while_its_admin_is_down_says_which_results_it_could_not_deliver(
        tmp_path, tasks_file):
    """Its admin killed, the worker stopped: it ran its tasks to their end, waited for the
    acknowledgements that could not come, and left with exit 0 and not a word of the results
    it dropped (found by a reviewing helper)."""
    import signal

    path = tasks_file([{"id": f"t{i}", "description": "1 s", "difficulty": 1, "duration": 1}
                       for i in range(3)])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1")
            w = await c.worker("w", "--concurrency", "3", "--log-level", "DEBUG")
            await wait_until(lambda: all(f"running task 't{i}'" in w.stderr() for i in range(3)),
                             30, "the tasks to run")
            admin.signal(signal.SIGKILL)
            await admin.wait(10)
            w.signal(signal.SIGTERM)
            return await w.wait(30), w.stderr()

    code, err = run(body())
    assert code == 0, err
    said = said_once(err, "not delivered")
    head, _, ids = said.rpartition(": ")
    assert head.endswith("w: 3 result(s) not delivered: the admin did not acknowledge them "
                         "within 5 s (it is stopped, or out of reach); it runs their task(s) "
                         "again if it still has them"), said
    assert sorted(ids.split(", ")) == ["'t0'", "'t1'", "'t2'"], said

def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_the_programs_work_over_ipv6(tmp_path, tasks_file):
    """The options took IPv6 addresses, but ZeroMQ's IPV6 option was never set: the admin
    failed to bind ('No such device') and a worker never tried to connect."""
    path = tasks_file([{"id": 1, "description": "over v6", "difficulty": 1, "duration": 0}])
    port, pub_port = free_port(), free_port()

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.spawn("admin", [*cli("ceylon-admin"), "--bind", "::1", "--port",
                                            str(port), "--pub-port", str(pub_port), "--tasks",
                                            str(path), "--expect-workers", "1"])
            await wait_until(lambda: "serving workspace" in admin.stderr(), 20, "the admin")
            status = await c.spawn("status", [*cli("ceylon-status"), "--admin-peer", "::1",
                                              "--port", str(port)])
            status_code = await status.wait(20)
            worker = await c.spawn("worker", [*cli("ceylon-worker"), "--name", "v6",
                                              "--admin-peer", "::1", "--port", str(port)])
            return (status_code, status.stdout(), await admin.wait(30), admin.stdout(),
                    admin.stderr(), await worker.wait(15))

    status_code, status_out, code, out, err, worker_code = run(body())
    assert status_code == 0 and "admin" in status_out
    assert code == 0 and worker_code == 0, err
    assert "Success rate: 100.00% (1/1 tasks)" in out and "v6" in out


def test_submit_wait_keeps_waiting_on_an_admin_with_a_slow_heartbeat(tmp_path, tasks_file):
    """An admin with --heartbeat 3 says how the batch goes once a beat, more seldom than
    ceylon-submit asks again (2 s of silence) and than its --connect-timeout 2: --wait sees the
    batch through (once gave up after 10 s at --heartbeat 12). How long a silence may last
    (three beats, or gone_after when longer): test_pulse's admin_silence test."""
    path = tasks_file([{"id": "long", "description": "long", "difficulty": 1,
                        "duration": 5}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--heartbeat", "3")
            await c.worker("w0")
            await wait_until(lambda: "joined from" in admin.stderr(), 30, "the worker")
            p = await c.spawn("submit", [*cli("ceylon-submit"), str(path), "--wait",
                                         "--port", str(c.port), "--connect-timeout", "2"])
            return await p.wait(90), p.stderr()

    code, err = run(body())
    assert code == 0, err.strip().splitlines()[-1:]


def test_a_client_address_without_a_port_takes_ceylon_port(monkeypatch):
    """As the CLIs do: what the address leaves out comes from CEYLON_*."""
    from ceylon_net.settings import client_settings

    monkeypatch.setenv("CEYLON_PORT", "9123")
    assert client_settings("coordinator", None, None, None, None).endpoint == \
        "tcp://coordinator:9123"
    assert client_settings("coordinator:7000", None, None, None, None).endpoint == \
        "tcp://coordinator:7000"
    assert client_settings("[::1]", None, None, None, None).endpoint == "tcp://[::1]:9123"


@pytest.mark.parametrize("peer, endpoint", [
    ("::1", "tcp://[::1]:55951"), ("[::1]", "tcp://[::1]:55951"),
    ("fe80::1", "tcp://[fe80::1]:55951"), ("coordinator", "tcp://coordinator:55951"),
])
def test_a_client_without_an_address_takes_an_ipv6_ceylon_admin_peer(monkeypatch, peer,
                                                                     endpoint):
    """As the CLIs do; it was glued to CEYLON_PORT unbracketed: '::1:55951' was refused, and
    '::1:8000' read as one IPv6 address (tcp://[::1:8000]:8000)."""
    from ceylon_net.settings import client_settings

    monkeypatch.setenv("CEYLON_ADMIN_PEER", peer)
    monkeypatch.setenv("CEYLON_PORT", "55951")
    assert client_settings(None, None, None, None, None).endpoint == endpoint


def test_a_client_without_an_address_says_a_port_in_ceylon_admin_peer_goes_in_ceylon_port(
        monkeypatch):
    """It said "client address '[127.0.0.1:55177]:8000': its host ... is not a host name",
    an address nobody typed."""
    from ceylon_net.errors import ConfigError
    from ceylon_net.settings import client_settings

    monkeypatch.setenv("CEYLON_ADMIN_PEER", "127.0.0.1:55177")
    with pytest.raises(ConfigError) as refused:
        client_settings(None, None, None, None, None)
    assert str(refused.value) == ("CEYLON_ADMIN_PEER '127.0.0.1:55177' is not a host name or "
                                  "address (the port goes in CEYLON_PORT)")


def test_a_handler_decorator_without_its_name_and_a_handler_given_as_a_function_say_so():
    """@handler with no name said 'a handler needs a non-empty name'; submit(add, ...) as in
    Dask, 'cannot encode dict (at ['description']: function)'."""
    from ceylon_net import AsyncClient, handler
    from ceylon_net.errors import ConfigError

    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ConfigError, match=r'^@handler needs the name tasks call it by: '
                                          r'@handler\("name"\) above add$'):
        handler(add)  # (as @handler with no name above it calls it)

    async def body():
        client = AsyncClient("127.0.0.1:1")
        client.loop, client._dealer = asyncio.get_running_loop(), object()  # as if connected
        for call in (lambda: client.submit(add, 1, 2), lambda: client.map(add, [1], [2])):
            with pytest.raises(TypeError) as refused:
                call()
            assert str(refused.value).startswith(
                'the handler is named, not given: the name a worker registered it under '
                '(@handler("add") on its --app module: submit("add", ...)), not function <')
        return client._futures, client._queued

    assert run(body()) == ({}, [])


@pytest.mark.parametrize("address, said", [
    ("tcp://127.0.0.1:5000", "client address 'tcp://127.0.0.1:5000': give host:port, without a "
                             "scheme (e.g. '127.0.0.1:8000')"),
    ("127.0.0.1:99999", "client address '127.0.0.1:99999': the port must be 1-65535, got 99999"),
    ("bad host:80", "client address 'bad host:80': its host 'bad host' is not a host name or "
                    "address (give host:port, as in '127.0.0.1:8000')"),
    (":80", "client address ':80': its host is empty: give the admin's host name or address"),
])
def test_a_client_address_that_cannot_be_is_refused_in_the_clients_words(address, said):
    """Not in the CLIs' (--admin-peer, --port), which a program's author never typed."""
    from ceylon_net import Client
    from ceylon_net.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        Client(address)
    assert str(refused.value) == said


def test_a_report_of_a_run_where_no_task_ran_says_so_not_a_rate_of_0_percent(capsys):
    from ceylon_net.cli.render import print_report
    from ceylon_net.core.tasks import RunReport

    print_report(RunReport(unassigned=[1]))
    out = capsys.readouterr().out
    assert "Success rate: none ran (0 tasks)" in out and "0.00%" not in out
    assert "Task results" not in out  # (a table of no rows: a review found it said nothing)


def test_a_report_of_very_many_cancelled_dead_unassigned_tasks_and_groups_stays_short(capsys):
    """A chain of 30,000 tasks whose first failed printed 958 KB of reasons; 50,000 tasks no
    worker could take, 594 KB of ids."""
    from ceylon_net.cli.render import print_report
    from ceylon_net.core.tasks import RunReport

    n = 30_000
    group = {"name": "g", "status": "completed", "completed": 1, "total": 1, "failed": 0,
             "cancelled": 0, "goal": None, "goal_status": None}
    print_report(RunReport(
        cancelled={0: "dependency 'x' failed",
                   **{i: f"dependency {i - 1} was cancelled" for i in range(1, n)}},
        dead=list(range(n)), unassigned=[f"u{i}" for i in range(n)],
        groups=[{**group, "name": f"g{i}", "status": "failed" if i % 2 else "completed"}
                for i in range(5_000)]))
    out = capsys.readouterr().out
    assert len(out) < 10_000, len(out)
    text = " ".join(out.split())  # (long lines wrap at the terminal's width)
    assert "Cancelled: 30,000 task(s) (dependency 'x' failed; dependency 0 was cancelled; " \
           "dependency 1 was cancelled; dependency 2 was cancelled; dependency 3 was " \
           "cancelled; 29,995 other(s))" in text
    assert "Dead (lost with their workers too often): 0, 1, 2, 3," in text
    assert "Unassigned (no connected worker could take them): u0, u1, u2," in text
    assert text.count("98, 99 and 29,900 more") == 1 and "u99 and 29,900 more" in text
    assert text.count("Group 'g") == 20
    assert "... and 4,980 more group(s): completed (2,490), failed (2,490)" in text


def test_status_says_how_many_queued_tasks_its_table_leaves_out_and_where_they_are():
    from rich.console import Console

    from ceylon_net.cli.render import render

    def shown(queued: int, rows: int, on_workers: int, said: int | None = None) -> str:
        """``said``: the admin's own count of tasks queued on workers (an older admin's
        status has none: the worker rows' are added up)."""
        data = {"admin": "a", "workspace": "w", "groups": [],
                "workers": [{"name": "w1", "role": "default", "skill": 5, "host": "h",
                             "running": 1, "capacity": 1, "queued": on_workers}],
                "queued": [{"id": i, "description": "d", "difficulty": 1, "role": None,
                            "priority": 0} for i in range(rows)],
                "counts": {"total": queued + 1, "done": 0, "succeeded": 0, "running": 1,
                           "queued": queued, "waiting": 0, "unassigned": 0,
                           **({} if said is None else {"queued_on_workers": said})}}
        console = Console(width=200, record=True)
        console.print(render(data))
        return " ".join(console.export_text().split())  # (the caption wraps at the table)

    assert "... and 14900 more in the admin's queue; 3 queued on workers (in their rows" \
        in shown(15_003, 100, 3)
    assert "more in the admin's queue" not in shown(5, 5, 0)
    # A worker gone with tasks it held: its row is gone, the admin's count is not.
    assert "... and 14900 more in the admin's queue; 3 queued on workers" \
        in shown(15_003, 100, 0, said=3)
    assert "queued on workers" not in shown(5, 5, 0)
    # What a worker does for a task lost with other workers, on its last attempt:
    for flag, said in (("held", "(drains for a task to run alone)"),
                       ("alone", "(runs a task on its last attempt alone)")):
        data = {"admin": "a", "workspace": "w", "groups": [], "queued": [],
                "workers": [{"name": "w1", "role": "default", "skill": 5, "host": "h",
                             "running": 1, "capacity": 4, flag: True}],
                "counts": {"total": 1, "done": 0, "succeeded": 0, "running": 1, "queued": 0,
                           "waiting": 0, "unassigned": 0}}
        console = Console(width=200, record=True)
        console.print(render(data))
        assert said in console.export_text(), console.export_text()


def test_status_leaves_out_a_table_with_nothing_in_it():
    """An idle admin's status printed an empty "Task groups" table and an empty "Queued
    tasks" table under its workers (found by a new-user trial); no worker is said."""
    from rich.console import Console

    from ceylon_net.cli.render import render

    counts = {"total": 0, "done": 0, "succeeded": 0, "running": 0, "queued": 0, "waiting": 0,
              "unassigned": 0}
    data = {"admin": "a", "workspace": "w", "groups": [], "queued": [], "workers": [],
            "counts": counts}
    console = Console(width=200, record=True)
    console.print(render(data))
    text = console.export_text()
    assert "Workers of admin 'a' (workspace 'w'): no worker connected" in text, text
    assert "┃ name" not in text, text  # (no table header with no rows under it)
    assert "Task groups" not in text and "Queued tasks" not in text, text
    assert "tasks: 0/0 done (0 succeeded), 0 running, 0 queued" in text, text


def test_control_characters_a_client_sent_are_shown_escaped_not_sent_to_the_terminal(capsys):
    """An ESC in a group name or a task description (anyone with the token can submit one)
    cleared or recoloured the screen of whoever ran ceylon-status or ceylon-submit --watch."""
    from rich.console import Console

    from ceylon_net.cli.render import print_report, render
    from ceylon_net.core.tasks import RunReport, TaskOutcome

    evil = "\x1b[2Jgone\x1b]0;title\x07\r\x9b31m"
    counts = {"total": 1, "done": 0, "succeeded": 0, "running": 0, "queued": 1, "waiting": 0,
              "unassigned": 0}
    group = {"name": evil, "status": "running", "completed": 0, "failed": 0, "cancelled": 0,
             "total": 1, "goal": None, "goal_status": None}
    data = {"admin": evil, "workspace": "w", "workers": [], "groups": [group],
            "queued": [{"id": evil, "description": evil, "difficulty": 1, "role": None,
                        "priority": 0}], "counts": counts}
    console = Console(width=300, record=True, force_terminal=True)
    console.print(render(data))
    print_report(RunReport(tasks=[TaskOutcome(evil, evil, 1, evil, False, 0.1, "boom " + evil)],
                           groups=[{**group, "status": "failed"}]))
    for out in (console.export_text(styles=True), capsys.readouterr().out):
        assert "\x1b[2J" not in out and "\x07" not in out and "\r" not in out \
            and "\x9b" not in out
        assert "\\x1b[2Jgone\\x1b]0;title\\x07\\x0d\\x9b31m" in out.replace("\n", "")


def test_report_json_holds_what_json_cannot_as_its_repr_keys_and_nan_too():
    """A handler's {b"k": 1} stopped an admin writing --results (a key default= never sees);
    NaN came out as NaN, which strict parsers (jq) refuse."""
    from ceylon_net.core.tasks import json_text

    text = json_text({"value": {b"k": 1, 2: float("nan"), "l": [b"\x00", float("-inf")]}})
    assert text == '{"value": {"b\'k\'": 1, "2": "nan", "l": ["b\'\\\\x00\'", "-inf"]}}'
    json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


def test_two_handlers_of_one_name_are_refused_naming_both_places(tmp_path):
    """Functions of one name in two modules replaced each other without a word; of two
    names, the error named the framework's own file."""
    handler = 'from ceylon_net import handler\n\n\n@handler("x")\ndef process():\n    return 1\n'
    (tmp_path / "one.py").write_text(handler)
    (tmp_path / "two.py").write_text(handler)
    (tmp_path / "both.py").write_text("import one  # noqa\nimport two  # noqa\n")
    proc = subprocess.run([*cli("ceylon-worker"), "--name", "w", "--app", "both"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"handler 'x' is registered twice: by process ({tmp_path / 'one.py'}, line 4) and " \
           f"by process ({tmp_path / 'two.py'}, line 4)\n" in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv", [["ceylon-admin"], ["ceylon-worker", "--name", "x"],
                                  ["ceylon-status"], ["ceylon-submit", "f.json"],
                                  ["ceylon-cancel", "1"], ["ceylon-keygen", ".", "--name", "k"]])
def test_with_log_json_a_bad_log_level_is_said_as_a_json_line_too(argv):
    """Said as a plain text log line by every program, --log-json or not."""
    proc = subprocess.run([*cli(argv[0]), *argv[1:], "--log-json", "--log-level", "bogus"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    records = [json.loads(line)["record"] for line in proc.stderr.splitlines() if line]
    assert [(r["level"]["name"], r["message"]) for r in records] == [
        ("ERROR", "unknown --log-level 'bogus'")], proc.stderr


def test_with_log_json_ceylon_cancel_says_an_unknown_id_as_a_json_line(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "the admin")
            p = await c.spawn("cancel", [*cli("ceylon-cancel"), "777", "--port", str(c.port),
                                         "--log-json"])
            return await p.wait(20), p.stderr()

    code, err = run(body())
    assert code == 1, err
    records = [json.loads(line)["record"] for line in err.splitlines() if line]
    assert [(r["level"]["name"], r["message"]) for r in records] == [
        ("WARNING", "777: unknown task")], err


def _read_all(fd: int) -> bytes:
    """What comes out of a pseudo-terminal's master side until its other side is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every holder of the other side closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def _stderr_on_a_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with its stderr on a pseudo-terminal, as from a shell: its exit code and
    what it wrote there."""
    import asyncio
    import pty

    master, slave = pty.openpty()
    try:
        p = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
            env={**os.environ, "TERM": "xterm-256color"})
    finally:
        os.close(slave)
    reading = asyncio.get_running_loop().run_in_executor(None, _read_all, master)
    try:
        code = await asyncio.wait_for(p.wait(), timeout)
        return code, (await asyncio.wait_for(reading, 10)).decode(errors="replace")
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
        await asyncio.wait_for(reading, 10)
        os.close(master)


def test_with_log_json_no_progress_bars_are_drawn_on_a_terminal(tmp_path):
    """A terminal on stderr got the admin's and ceylon-submit --wait's bars with --log-json
    too: escape codes among (and inside) the JSON lines."""
    seed = str(tmp_path / "seed.json")
    with open(seed, "w") as f:
        json.dump([{"id": i, "description": "t", "difficulty": 1} for i in range(4)], f)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            await c.worker("w", "--time-scale", "0.05", "--concurrency", "2")
            await wait_until(lambda: "joined from" in admin.stderr(), 20, "the worker")
            submit = await _stderr_on_a_terminal(
                [*cli("ceylon-submit"), seed, "--wait", "--port", str(c.port), "--log-json",
                 "--log-level", "INFO"], 60)
        async with Cluster(workdir=tmp_path) as c:
            await c.worker("w", "--time-scale", "0.05", "--concurrency", "2")
            ran = await _stderr_on_a_terminal(
                [*cli("ceylon-admin"), "--port", str(c.port), "--pub-port", str(c.pub_port),
                 "--bind", "127.0.0.1", "--tasks", seed, "--log-json"], 60)
        return submit, ran

    for code, err in run(body()):
        assert code == 0, err
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        assert lines and all(line.startswith("{") and line.endswith("}") for line in lines), \
            [line for line in lines if not line.startswith("{") or not line.endswith("}")][:3]
        for line in lines:
            json.loads(line)


async def _stdout_unread(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with stdout a pipe nobody reads any more (``| head -1`` done): its exit
    code and stderr."""
    import asyncio

    gone, stdout = os.pipe()
    os.close(gone)
    try:
        p = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                 stdout=stdout, stderr=subprocess.PIPE)
    finally:
        os.close(stdout)
    try:
        _, err = await asyncio.wait_for(p.communicate(), timeout)
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    return p.returncode, err.decode(errors="replace")


def test_a_reader_gone_from_stdout_does_not_turn_a_run_into_a_failure(tmp_path, tasks_file):
    """'ceylon-admin --tasks f.json | head -1' exited 1 ("some failed"), silently, every task
    done: click's and rich's answer to a broken pipe. Now the run's own code."""
    path = tasks_file([{"id": i, "description": "t", "difficulty": 1} for i in range(3)])
    unassigned = tasks_file([{"id": "hard", "description": "x", "difficulty": 10}],
                            name="hard.json")

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            await c.worker("w", "--skill", "5", "--time-scale", "0.01")
            await wait_until(lambda: "joined from" in admin.stderr(), 20, "the worker")
            submitted = await _stdout_unread([*cli("ceylon-submit"), str(path), "--wait",
                                              "--port", str(c.port)])
            status = await _stdout_unread([*cli("ceylon-status"), "--port", str(c.port)])
        async with Cluster(workdir=tmp_path) as c:
            await c.worker("w", "--skill", "5", "--time-scale", "0.01")
            ran = await _stdout_unread([*cli("ceylon-admin"), "--port", str(c.port),
                                        "--pub-port", str(c.pub_port), "--bind", "127.0.0.1",
                                        "--tasks", str(unassigned),
                                        "--unassignable-timeout", "0.5"])
        return submitted, status, ran

    submitted, status, ran = run(body())
    for (code, err), want in ((submitted, 0), (status, 0), (ran, 3)):  # (3: unassigned)
        assert code == want, err
        assert "Traceback" not in err and "Exception ignored" not in err, err


def test_a_traceback_in_a_program_s_log_shows_no_local_variables_values(tmp_path):
    """loguru's default 'diagnose' printed every local variable of every frame beside a
    logged traceback (a user's callback that raised, say): a token or a key in one went to
    the log, and a large one filled it."""
    code = ("import os\n"
            "from loguru import logger\n"
            "from ceylon_net.cli.common import configure_logging\n"
            "configure_logging('INFO', False)\n"
            "def handler(token):\n"
            "    return 1 / (len(token) - len(token))\n"
            "try:\n"
            "    handler(os.environ['TOKEN'])\n"
            "except ZeroDivisionError:\n"
            "    logger.exception('a callback raised')\n")
    program = tmp_path / "program.py"  # (a file: its lines are what diagnose annotates)
    program.write_text(code)
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TOKEN": "s3cret-t0ken"})
    assert "a callback raised" in done.stderr and "ZeroDivisionError" in done.stderr
    assert "s3cret-t0ken" not in done.stderr, done.stderr


def test_tasks_cancelled_for_one_reason_are_counted_once(capsys):
    """A new user's trial: 'Cancelled: 2 task(s) (cancelled by ceylon-cancel (2))'."""
    from ceylon_net.cli.render import print_report
    from ceylon_net.core.tasks import RunReport

    print_report(RunReport(cancelled=dict.fromkeys((1, 2), "cancelled by ceylon-cancel")))
    assert "Cancelled: 2 task(s) (cancelled by ceylon-cancel)\n" in capsys.readouterr().out


def test_the_admin_takes_open_files_up_to_the_hard_limit(tmp_path):
    """Two connections a worker: at systemd's soft limit of 1,024 files an admin took 500
    workers at most, and stalled handshakes from anyone reaching its port locked everyone
    out sooner, libzmq spinning without a word (a review of hostile peers)."""
    import resource
    import signal

    soft, hard = 256, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    proc = subprocess.Popen(
        [*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(free_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    try:
        for line in proc.stderr:  # (serving: the limit was raised before it bound)
            if "serving workspace" in line:
                break
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    (files,) = [line.split()[3:5] for line in limits.splitlines()
                if line.startswith("Max open files")]
    assert files == [str(hard), str(hard)], limits


def _a_run_with_a_silent_worker(tmp_path, interrupt: bool) -> tuple[int, str, str]:
    """A --tasks run at --heartbeat 10 whose second worker registered and says nothing more
    (as if paused): once the first has heard the run is over (exit 0), the admin waits for
    the silent one; ``interrupt``: a SIGINT then. The admin's exit code, stdout, stderr
    (within 5 s of the run's end)."""
    import signal

    import zmq
    from kit import frames

    from ceylon_net.wire import Hello, Kind

    port = free_port()
    tasks = tmp_path / "t.json"
    tasks.write_text(json.dumps({"tasks": [{"id": 1, "description": "a", "difficulty": 1}]}))
    admin = subprocess.Popen([*cli("ceylon-admin"), "--bind", "127.0.0.1", "--port", str(port),
                              "--pub-port", str(free_port()), "--tasks", str(tasks),
                              "--expect-workers", "2", "--heartbeat", "10"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    silent = ctx.socket(zmq.DEALER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.connect(f"tcp://127.0.0.1:{port}")
    silent.send_multipart(frames(Kind.HELLO, Hello("silent", "default", 0, 1), "silent"))
    worker = subprocess.Popen([*cli("ceylon-worker"), "--name", "w1", "--port", str(port),
                               "--time-scale", "0.1"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert worker.wait(30) == 0  # (it heard the END: the admin now waits for 'silent')
        if interrupt:
            admin.send_signal(signal.SIGINT)
        out, err = admin.communicate(timeout=5)
    finally:
        for proc in (admin, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        silent.close()
        ctx.term()
    return admin.returncode, out, err


def test_a_signal_cuts_short_the_admins_wait_for_its_workers_to_hear_the_run_is_over(
        tmp_path):
    """At its end a --tasks run waits for each worker to say it heard (a silent one: as long
    as it takes to be lost, here 30 s at --heartbeat 10); no signal cut that wait short (a
    review of it: 'admin still running 5.0 s after a second SIGINT')."""
    code, out, err = _a_run_with_a_silent_worker(tmp_path, interrupt=True)
    assert code == 0 and "Success rate: 100.00% (1/1 tasks)" in out, err


def test_a_silent_worker_holds_a_finished_runs_report_two_seconds_at_most(tmp_path):
    """The wait for workers to hear the run is over came before the report: a paused worker
    held the table, --report-json and the exit as long as it took to be lost, 30 s at
    --heartbeat 10 (a review of the wait). The wait: 2 s at most."""
    code, out, err = _a_run_with_a_silent_worker(tmp_path, interrupt=False)
    assert code == 0 and "Success rate: 100.00% (1/1 tasks)" in out, err


@pytest.mark.timeout(60)
@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
def test_an_admin_that_may_open_few_files_says_how_many_workers_can_connect(tmp_path):
    """At a hard limit of 64 open files, 48 of 150 workers joined and the rest, and
    ceylon-status, waited in silence, libzmq retrying the next connection at full speed (a
    review). It says so as it starts."""

    async def body() -> str:
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.spawn("admin", ["prlimit", "--nofile=64:64", *cli("ceylon-admin"),
                                            "--bind", "127.0.0.1", "--port", "0",
                                            "--pub-port", "0"])
            await wait_until(lambda: "serving workspace" in admin.stderr(), 30, "the admin")
            return admin.stderr()

    err = run(body())
    assert "this process may open 64 files (its hard limit, ulimit -Hn): about 16 workers " \
           "can connect" in err, err


def test_a_report_goes_whole_to_a_file_keeping_its_mode_and_link_and_in_place_to_a_pipe(
        tmp_path):
    """--report-json written beside and then put in place (whole or not at all) replaced
    what it should have written into: /dev/stdout into a pipe could not be written, a file
    lost its mode (a review)."""
    from ceylon_net.cli.admin import _write_whole

    report, link = tmp_path / "report.json", tmp_path / "link.json"
    report.write_text("old")
    os.chmod(report, 0o640)
    link.symlink_to(report)
    _write_whole(link, '{"new": 1}\n')
    assert link.is_symlink() and report.read_text() == '{"new": 1}\n'
    assert report.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "report.json"]
    piped = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from ceylon_net.cli.admin import "
         "_write_whole; _write_whole(Path('/dev/stdout'), 'to the pipe\\n')"],
        capture_output=True, text=True, timeout=30)
    assert (piped.returncode, piped.stdout) == (0, "to the pipe\n"), piped.stderr


def test_a_report_path_that_is_a_dangling_link_stays_a_link(tmp_path):
    """The check that --report-json can be written made the link's file, then removed the
    link, leaving an empty file and the report written where the link was (a review)."""
    from ceylon_net.cli.admin import _can_write, _write_whole

    link = tmp_path / "report.json"
    link.symlink_to(tmp_path / "target.json")
    _can_write(link, "--report-json")
    assert link.is_symlink() and not (tmp_path / "target.json").exists()
    _write_whole(link, "{}\n")
    assert link.is_symlink() and (tmp_path / "target.json").read_text() == "{}\n"
