"""What bad input gets: clear errors, non-zero exits, and an admin that keeps serving."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import zmq
from conftest import run
from kit import said_once

from ceylon_net import wire
from ceylon_net.dev.testing import Cluster, cli, free_port, wait_until
from ceylon_net.wire import Hello, Kind, Reject

SEED = [
    {"id": 1, "description": "Simple calculation", "difficulty": 2},
    {"id": 2, "description": "Data analysis", "difficulty": 5},
]


async def _serving_admin(c, *args):
    admin = await c.admin(*args)
    await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "the admin to serve")
    return admin


def test_wrong_workspace_is_rejected_with_the_reason(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving_admin(c)
            w = await c.worker("Senior", "--workspace", "prod")
            return await w.wait(20), w.stderr()

    code, err = run(body())
    assert code == 1
    assert "rejected by the admin: worker 'Senior' rejected: workspace 'prod' != admin's " \
           "'default'" in err


@pytest.mark.parametrize("admin_args, worker_args", [
    ((), ("--max-message-bytes", "65536")),  # the worker's lowered
    (("--max-message-bytes", "10000000"), ()),  # the admin's raised (for a large file)
])
def test_a_worker_that_takes_smaller_messages_than_the_admin_sends_is_told_and_exits(
        tmp_path, admin_args, worker_args):
    """Before, the admin's first large batch of tasks broke the worker's connection, the
    admin called it lost, and the run waited for ever without an error on either side."""
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving_admin(c, *admin_args)
            w = await c.worker("w", *worker_args)
            return await w.wait(20), w.stderr(), admin.stderr()

    code, err, admin_err = run(body())
    limit = 65536 if worker_args else 1 << 20
    ours = 1 << 20 if worker_args else 10_000_000
    said = (f"worker 'w' takes messages of at most {limit:,} bytes and this admin sends up "
            f"to {ours:,} (--max-message-bytes): give the worker at least the admin's value")
    assert code == 1 and f"rejected by the admin: {said}" in err, err
    assert said in admin_err


@pytest.mark.timeout(60)
def test_a_worker_refused_then_unanswered_says_the_refusal_when_it_gives_up(tmp_path):
    """Its name taken, a worker asks again until its --connect-timeout; the refusal of its
    last HELLO coming after that attempt's window (a link slow to carry it, queued HELLOs
    answered at once), it gave up saying the admin was silent ("lost the admin ... stopped, or
    the link to it is down") though it had answered (a review of network faults)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # (an admin that refuses the first HELLO, then is slow)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    worker = subprocess.Popen([*cli("ceylon-worker"), "--name", "w", "--port", str(port),
                               "--connect-timeout", "2"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert router.poll(20_000)
        peer, *frames = router.recv_multipart()
        hello = wire.decode_frames(frames)
        reason = "worker name 'w' is already connected (from 10.0.0.9); choose another --name"
        header = wire.make_header("default", "admin", "ceylon_net.Reject")
        header.seq = hello.header.msg_id  # (the HELLO it answers)
        router.send_multipart([peer, *wire.encode_frames(Kind.REJECT, header, wire.pack(
            Reject(reason, retry=True)))])
        err = worker.communicate(timeout=30)[1]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        router.close()
        ctx.term()
    assert worker.returncode == 1, err
    assert f"rejected by the admin: {reason} (still after 2 s)" in err, err


def test_duplicate_worker_name_is_rejected(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving_admin(c)
            first = await c.worker("Senior")
            await wait_until(lambda: "worker 'Senior' joined" in admin.stderr(), 15, "join")
            # It may be the first one restarted (taken once that one is lost): it asks
            # again until its --connect-timeout, then says why it gave up.
            second = await c.worker("Senior", "--connect-timeout", "3", label="Senior-2")
            return await second.wait(20), second.stderr(), first.returncode

    code, err, first_code = run(body())
    assert code == 1
    assert "worker name 'Senior' is already connected (from 127.0.0.1" in err
    assert "(still after 3 s)" in err
    # While it asks again it says why, not 'waiting for the admin' (which answers it).
    assert "Senior: the admin refuses us for now: worker name 'Senior' is already " \
           "connected" in err and "waiting for the admin" not in err, err
    assert first_code is None  # the first one is unharmed


def test_a_worker_says_at_once_that_the_admins_host_name_does_not_resolve():
    """It said 'waiting for the admin' for the whole --connect-timeout (30 s by default) and
    the reason only when it gave up."""
    import subprocess

    from ceylon_net.dev.testing import cli

    proc = subprocess.run([*cli("ceylon-worker"), "--name", "w", "--admin-peer",
                           "no-such-host.invalid", "--port", "9", "--connect-timeout", "3"],
                          capture_output=True, text=True, timeout=30)
    first = next(line for line in proc.stderr.splitlines() if "attempt 1," in line)
    assert "WARNING" in first and "the host name 'no-such-host.invalid' does not resolve" \
        in first, proc.stderr
    assert proc.returncode == 1
    # Its last word names the cause alone: it was "(is ceylon-admin running there, on that
    # --port? An admin run with CURVE ... and --admin-key.; the host name ... does not resolve".
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: no admin answered at tcp://no-such-host\.invalid:9 within 3 s; "
                        r"the host name 'no-such-host\.invalid' does not resolve \(.+\)", last), \
        proc.stderr


def test_protocol_version_mismatch_is_rejected(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await _serving_admin(c)
            return _raw_hello(c.port, version=99)

    assert run(body()) == f"protocol version 99 != admin's {wire.PROTOCOL_VERSION}"


def _raw_hello(port, version):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        header = wire.make_header("default", "old-worker", "Hello")
        header.version = version
        hello = wire.pack(Hello("old-worker", "default", 5, 1))
        s.send_multipart(wire.encode_frames(Kind.HELLO, header, hello))
        assert s.poll(10_000), "no answer from the admin"
        env = wire.decode_frames(s.recv_multipart())
        assert env.kind == Kind.REJECT
        return wire.unpack(Reject, env.payload).reason
    finally:
        s.close()
        ctx.term()


def test_unreachable_admin_gives_up_after_connect_timeout(tmp_path):
    port = free_port()

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            c.port = port  # nothing listens there
            started = time.monotonic()
            w = await c.worker("Lonely", "--connect-timeout", "2")
            code = await w.wait(20)
            return code, time.monotonic() - started, w.stderr()

    code, took, err = run(body())
    assert code == 1
    assert took < 10
    assert f"waiting for the admin at tcp://127.0.0.1:{port}" in err
    assert f"no admin answered at tcp://127.0.0.1:{port} within 2 s" in err


def test_a_worker_that_lost_its_admin_says_so_not_that_none_answered(tmp_path):
    """Registered, then its admin killed: it gave up with the words for a wrong address
    ('is ceylon-admin running there, on that --port?', a CURVE hint)."""
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin()
            w = await c.worker("left", "--connect-timeout", "2")
            await wait_until(lambda: "registered with admin" in w.stderr(), 20, "it to join")
            admin.signal(signal.SIGKILL)
            return await w.wait(30), w.stderr()

    code, err = run(body())
    assert code == 1, err
    assert "lost the admin at tcp://127.0.0.1:" in err and "no answer for 2 s " \
           "(--connect-timeout) since it went silent" in err, err
    assert "no admin answered" not in err and "--curve-secret" not in err, err


def test_a_worker_that_gives_up_on_its_admin_says_which_results_it_drops(tmp_path, tasks_file):
    """It ran its task to the end after the admin went, and left after --connect-timeout
    without a word of the result it dropped, where a drain names them (a review across
    hosts: a worker cut off 2 minutes)."""
    path = tasks_file([{"id": "t", "description": "1 s", "difficulty": 1, "duration": 1},
                       {"id": "long", "description": "60 s", "difficulty": 1, "duration": 60}])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1")
            w = await c.worker("w", "--connect-timeout", "3", "--log-level", "DEBUG",
                               "--concurrency", "2")
            await wait_until(lambda: "running task 't'" in w.stderr()
                             and "running task 'long'" in w.stderr(), 20, "the tasks to run")
            admin.signal(signal.SIGKILL)
            return await w.wait(30), w.stderr()

    code, err = run(body())
    assert code == 1, err
    said = said_once(err, "not delivered")
    assert said.endswith("w: 1 result(s) not delivered: we give up on the admin; it runs "
                         "their task(s) again if it still has them: 't'"), said
    assert "w: 1 running task(s) cut off as we give up on the admin (it runs them again if it " \
           "still has them): 'long'" in err, err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"tasks": [', "invalid JSON at line 1 column 12"),
        (json.dumps([{"id": 1, "description": "x"}]),
         "task #1 (id 1): missing field 'difficulty'"),
        (json.dumps([{"id": 1, "description": "x", "difficulty": 11}]),
         "task #1 (id 1): field 'difficulty' must be int 1-10, got 11"),
        (json.dumps([{"id": 1, "description": "x", "difficulty": 0}]),
         "field 'difficulty' must be int 1-10, got 0"),
        (json.dumps([{"id": 7, "description": "a", "difficulty": 1},
                     {"id": 7, "description": "b", "difficulty": 2}]),
         "duplicate task id 7"),
        (json.dumps([{"id": 1, "description": 5, "difficulty": 1}]),
         "field 'description' must be string, got 5"),
        (json.dumps({"tasks": [{"id": 1, "description": "x", "difficulty": 1}],
                     "group": [{"name": "g", "tasks": [{"description": "y"}]}]}),
         "unknown top-level key 'group'; allowed: tasks, groups"),
    ],
)
def test_malformed_tasks_file_exits_2_and_starts_nothing(tmp_path, tasks_file, content, expected):
    path = tasks_file(content)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path))
            return await admin.wait(20), admin.stderr(), c.port

    code, err, port = run(body())
    assert code == 2
    assert f"error: {path}: " in err
    assert expected in err
    assert "serving workspace" not in err
    _assert_port_free(port)


def test_a_toml_date_in_a_tasks_arguments_exits_2_and_starts_nothing(tmp_path):
    path = tmp_path / "date.toml"
    path.write_text('[[tasks]]\nid = 1\ndescription = "x"\ndifficulty = 2\nhandler = "h"\n'
                    'args = [1979-05-27T07:32:00Z]\n')

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path))
            return await admin.wait(20), admin.stderr(), c.port

    code, err, port = run(body())
    assert code == 2, err
    assert f"error: {path}: task #1 (id 1): field 'args' has a datetime (1979-05-27 " \
           f"07:32:00+00:00), which the wire does not carry" in err, err
    assert "serving workspace" not in err
    _assert_port_free(port)


def _assert_port_free(port):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises if the admin had bound it


def test_missing_tasks_file_exits_2(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(tmp_path / "nope.json"))
            return await admin.wait(20), admin.stderr()

    code, err = run(body())
    assert code == 2
    assert "nope.json: cannot read: No such file or directory" in err


def test_garbage_frames_are_dropped_logged_once_and_the_admin_keeps_serving(tmp_path, tasks_file):
    path = tasks_file(SEED)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await _serving_admin(c, "--tasks", str(path), "--expect-workers", "1")
            _send_garbage(c.port, count=50)
            await wait_until(lambda: "dropped a bad frame" in admin.stderr(), 15, "the log")
            w = await c.worker("Senior", "--skill", "9", "--time-scale", "0.01")
            code = await admin.wait(30)
            await w.wait(15)
            return code, admin.stdout(), admin.stderr()

    code, out, err = run(body())
    assert code == 0, err
    assert "Success rate: 100.00% (2/2 tasks)" in out
    assert err.count("dropped a bad frame from b'garbage-sender' (127.0.0.1)") == 1


def _send_garbage(port, count):
    import socket

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, b"garbage-sender")
    s.setsockopt(zmq.LINGER, 2000)
    s.connect(f"tcp://127.0.0.1:{port}")
    junk = [[os.urandom(n)] for n in range(1, count - 3)] + [
        [b"ASSIGN", b"\xc1", b""],               # invalid msgpack header
        [b"RESULT", wire.packb([1, 2]), b""],  # short header
        [b"HELLO"] * 5,                           # wrong frame count
    ]
    for frames in junk:
        s.send_multipart(frames)
    s.close()
    ctx.term()
    with socket.create_connection(("127.0.0.1", port)) as raw:  # not even ZMTP
        raw.sendall(os.urandom(4096))


def test_unassignable_task_is_reported_and_the_admin_exits_3(tmp_path, tasks_file):
    # A description is the user's text, not markup for the tables: "[/]" once crashed the
    # report (and lost --report-json), and "items[i]" lost its "[i]".
    path = tasks_file([*SEED, {"id": 3, "description": "ML training", "difficulty": 8},
                       {"id": 4, "description": "fix [/] in items[i]", "difficulty": 1}])
    report = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--unassignable-timeout", "1",
                                  "--report-json", str(report))
            w = await c.worker("Intermediate", "--skill", "6", "--time-scale", "0.01")
            code = await admin.wait(30)
            return code, admin.stdout(), admin.stderr(), await w.wait(15)

    code, out, err, worker_code = run(body())
    assert code == 3
    assert worker_code == 0
    assert err.count("task 3 'ML training' needs skill >= 8; best connected is 6") == 1
    data = json.loads(report.read_text())
    assert data["unassigned"] == [3]
    # Why, in the report too (it was in the log only: a remote ceylon-submit never saw it).
    assert data["unassigned_why"] == [{"id": 3, "reason": "needs skill >= 8; best connected "
                                                          "is 6"}]
    assert sorted(t["id"] for t in data["tasks"]) == [1, 2, 4]
    assert "Unassigned (no connected worker could take them): 3 (needs skill >= 8; best " \
           "connected is 6)" in out
    assert "fix [/] in items[i]" in out


def test_a_report_json_that_cannot_be_written_is_refused_before_the_run(tmp_path, tasks_file):
    path = tasks_file(SEED)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json",
                                  str(tmp_path / "no" / "such" / "dir" / "r.json"))
            return await admin.wait(15), admin.stderr()

    code, err = run(body())
    assert code == 2
    assert "--report-json" in err and "Traceback" not in err


def test_a_report_json_root_cannot_write_either_is_refused_before_the_run(tmp_path, tasks_file):
    """os.access grants root everything: /sys passed the check, and the run failed at its end
    (exit 1, the report lost). A file the check made is not left behind."""
    path = tasks_file(SEED)
    mine = tmp_path / "r.json"
    bad_tasks = tasks_file([{"id": 1, "description": "x", "difficulty": 11}], name="bad.json")

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--report-json",
                                  "/sys/kernel/report.json")
            checked = await c.admin("--tasks", str(bad_tasks), "--report-json", str(mine),
                                    name="checked")
            return await admin.wait(15), admin.stderr(), await checked.wait(15)

    code, err, checked_code = run(body())
    assert code == 2, err
    assert "error: --report-json /sys/kernel/report.json: not writable" in err
    assert checked_code == 2 and not mine.exists()


def test_a_serving_admin_refuses_report_json_it_would_never_write(tmp_path):
    proc = subprocess.run([*cli("ceylon-admin"), "--port", "0", "--bind", "127.0.0.1",
                           "--report-json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode == 2, proc.stderr
    assert "error: --report-json FILE is the report of a --tasks run; a serving admin has " \
           "none" in proc.stderr
    assert not (tmp_path / "r.json").exists()
