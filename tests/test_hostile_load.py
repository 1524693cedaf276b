"""Issue 5, acceptance 3: a live admin under 10,000 hostile frames still runs an honest batch.

A ``ceylon-admin`` runs 200 tasks on three honest ``ceylon-worker`` processes (tasks that only
sleep TASK_SECONDS, so that the run outlasts the flood). Meanwhile several
DEALER sockets send it random and mutated frames (truncated, oversized, wrong types in every
field, deep nesting, huge declared lengths, unknown kinds, garbage payloads, absurd HELLOs), and
raw TCP sockets send bytes that are not ZMTP at all. The run must complete with every task
exactly once, the admin must keep answering STATUS, and its RSS must stay within 50 MB of its
value right after start.

The frames come from ``random.Random(SEED)``: a failure reproduces with the same seed. Each
DEALER takes a fresh identity every ``FRAMES_PER_IDENTITY`` frames, so that a per-peer ban
(correctly) dropping a noisy identity's frames unread does not spare the decoder the rest.
Frames that an unauthenticated peer may legitimately send to change the run (a valid HELLO, a
valid SUBMIT, a CANCEL naming a real task) are never sent: they would be an impostor, not noise.

After it: single frames that once stopped the admin, refusals that would quote a huge string,
and a garbage flood from one peer, each against an idle admin.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from conftest import run

from ceylon_net import wire
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.core.workfile import parse_work
from ceylon_net.dev.testing import Cluster, EventLog, Proc, wait_until
from ceylon_net.errors import ConfigError, RemoteProtocolError
from ceylon_net.wire import (
    KINDS,
    Ack,
    BatchProgress,
    BatchReport,
    Cancel,
    End,
    Event,
    GroupNews,
    Heartbeat,
    Hello,
    Kind,
    Reject,
    Release,
    Skip,
    Started,
    Submission,
    TaskDone,
    Watch,
    Welcome,
)

SEED = 20_050_003  # issue 5, acceptance 3
FRAMES = 10_000
DEALERS = 5
FRAMES_PER_IDENTITY = 80
MiB = 1 << 20
TASKS = 200
TASK_SECONDS = 0.15  # 200 x 0.15 s over 3 workers: the run outlasts the flood
RSS_SLACK = 50_000_000  # bytes
STATUS_TIMEOUT = 10.0  # seconds the admin may take to answer STATUS, however busy
FLOOD_TIMEOUT = 40.0  # seconds for all frames to be handed to the sockets
RUN_TIMEOUT = 60.0  # seconds for the honest run to end
HONEST_IDS = [f"honest-{i:03d}" for i in range(TASKS)]
WORKSPACE = "default"


# --------------------------------------------------------------------------- hostile frames

# Values of every msgpack type, for fields that expect some other one.
WRONG: list[Any] = [
    None, True, False, 0, -1, 11, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, math.nan, math.inf,
    -math.inf, "", "x" * 300, "\x00\n\x1b[2J\u202e", b"", b"\xff" * 40, [], [None], [[1, 2]],
    [[[1]]], [[{"a": 1}, 1]], [["nope", math.inf]], {}, {"a": {"b": []}}, {"": None},
    "y" * 70_000, list(range(5000)), {str(i): i for i in range(2000)},
]
_deep: Any = None
for _ in range(300):
    _deep = [_deep]
WRONG.append(_deep)  # a value nested 300 deep
HUGE_HEADERS = [
    b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xda\xff\xff", b"\xc5\xff\xff", b"\xdc\xff\xff", b"\xde\xff\xff",  # 16-bit lengths
    b"\xd9\xff",  # str8
]


def wire_templates() -> dict[bytes, tuple[str | None, Any]]:
    """For every kind, the (payload type, wire form) a well-behaved peer would send."""
    result = TaskResult("honest-001", "intruder", True, 0.25)
    task = Task("hostile", "x", 1)
    return {
        Kind.HELLO: ("Hello", wire.to_wire(Hello(
            "intruder", "default", 5, 2, [["honest-001", 1]], [wire.to_wire(result)],
            ["handler"]))),
        Kind.HEARTBEAT: ("Heartbeat", wire.to_wire(Heartbeat([["honest-002", 1]]))),
        Kind.RESULT: ("TaskResult", [wire.to_wire(result)]),
        Kind.CANCEL: ("Cancel", wire.to_wire(Cancel([["no-such-task", 0]], "hostile"))),
        Kind.SUBMIT: ("Submission", wire.to_wire(Submission(
            {"tasks": [{"id": "hostile", "description": "x", "difficulty": 1}]}))),
        Kind.STATUS: (None, b""),
        Kind.BCAST: ("Event", wire.to_wire(Event("e", {"a": [1, 2]}))),
        Kind.DIRECT: ("Event", wire.to_wire(Event("e", {"a": 1}))),
        Kind.BYE: ("End", wire.to_wire(End("bye"))),
        Kind.DRAIN: ("End", wire.to_wire(End("draining"))),
        Kind.WELCOME: ("Welcome", wire.to_wire(Welcome("a", "admin", 1, 1.0, 3))),
        Kind.REJECT: ("Reject", wire.to_wire(Reject("no"))),
        Kind.ASSIGN: ("TaskAssignment", [wire.to_wire(TaskAssignment(task, "w"))]),
        Kind.END: ("End", wire.to_wire(End("over"))),
        Kind.EVENT: ("Event", wire.to_wire(Event("e"))),
        Kind.PROGRESS: ("BatchProgress", wire.to_wire(BatchProgress(1, 1, 2, 1))),
        Kind.REPORT: ("BatchReport", wire.to_wire(BatchReport(1, {"tasks": []}))),
        Kind.ACK: ("Ack", wire.to_wire(Ack([["honest-003", 1]]))),
        Kind.SKIP: ("Skip", wire.to_wire(Skip(1, 2))),
        Kind.WATCH: ("Watch", wire.to_wire(Watch(["honest-004", "no-such-task"]))),
        Kind.DONE: ("TaskDone", wire.to_wire(TaskDone("honest-005", "completed",
                                                       wire.to_wire(result)))),
        Kind.STARTED: ("Started", wire.to_wire(Started([["honest-006", 1]], [["honest-007", 1]]))),
        Kind.RELEASE: ("Release", wire.to_wire(Release([["honest-008", 1]]))),
        Kind.GROUP: ("GroupNews", wire.to_wire(GroupNews("g", "group_progress", "1/2 done",
                                                         {"done": 1}))),
    }


TEMPLATES = wire_templates()
ALL_KINDS = sorted(KINDS)


def test_every_kind_of_frame_has_a_well_behaved_template():
    assert sorted(TEMPLATES) == ALL_KINDS  # a new kind gets a template, so the flood uses it


def header_fields(type_: str | None) -> list[Any]:
    return [wire.PROTOCOL_VERSION, WORKSPACE, 7, "hostile", 1.7e9, type_, None]


def encode(kind: bytes, type_: str | None, form: Any) -> list[bytes]:
    payload = form if isinstance(form, bytes) else wire.packb(form)
    return [kind, wire.packb(header_fields(type_)), payload]


def valid_frames(rng: random.Random) -> list[bytes]:
    kind = rng.choice(ALL_KINDS)
    return encode(kind, *TEMPLATES[kind])


def replace_somewhere(rng: random.Random, value: Any) -> Any:
    """A copy of ``value`` with one node, maybe deep inside, swapped for a WRONG value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        if rng.random() < 0.1:
            return {k: v for k, v in value.items() if k != key}  # a missing field
        return {**value, key: replace_somewhere(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.8:
        copy = list(value)
        i = rng.randrange(len(copy))
        copy[i] = replace_somewhere(rng, copy[i])
        return copy
    return rng.choice(WRONG)


def noise(rng: random.Random) -> list[bytes]:
    return [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 5))]


def unknown_kind(rng: random.Random) -> list[bytes]:
    kind = rng.choice([b"", b"hello", b"HELLO\0", b"HELL", b"\x00", b"K" * 255,
                       rng.randbytes(rng.randint(1, 32))])
    frames = valid_frames(rng)
    return [kind if kind not in KINDS else b"?" + kind, *frames[1:]]


def truncated(rng: random.Random) -> list[bytes]:
    frames = valid_frames(rng)
    how = rng.randrange(3)
    if how == 0:  # a frame cut short
        i = rng.randrange(3)
        frames[i] = frames[i][:rng.randrange(len(frames[i]) + 1)]
        return frames
    if how == 1:  # frames missing
        return frames[:rng.randint(1, 2)]
    return [*frames, *frames[:rng.randint(1, 3)]]  # frames too many


def mutated(rng: random.Random) -> list[bytes]:
    frames = valid_frames(rng)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(1, 3)
        data = bytearray(frames[i])
        at = rng.randrange(len(data) + 1)
        how = rng.randrange(3)
        if how == 0 and data:
            data[min(at, len(data) - 1)] ^= rng.randint(1, 255)
        elif how == 1:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            del data[at:at + rng.randint(1, 8)]
        frames[i] = bytes(data)
    return frames


def wrong_header_field(rng: random.Random) -> list[bytes]:
    kind = rng.choice(ALL_KINDS)
    type_, form = TEMPLATES[kind]
    fields = header_fields(type_)
    how = rng.randrange(4)
    if how <= 1:
        fields[rng.randrange(len(fields))] = rng.choice(WRONG)
        header: Any = fields
    elif how == 2:
        header = fields[:rng.randrange(len(fields))] if rng.random() < 0.5 else \
            [*fields, *rng.sample(WRONG, 5)]
    else:
        header = rng.choice(WRONG)  # not an array at all
    payload = form if isinstance(form, bytes) else wire.packb(form)
    return [kind, wire.packb(header), payload]


def wrong_payload_field(rng: random.Random) -> list[bytes]:
    kind = rng.choice(ALL_KINDS)
    type_, form = TEMPLATES[kind]
    if isinstance(form, bytes):
        form = {}
    return encode(kind, type_, replace_somewhere(rng, form))


def garbage_payload(rng: random.Random) -> list[bytes]:
    kind = rng.choice(ALL_KINDS)
    type_ = rng.choice([TEMPLATES[kind][0], None, "NoSuchType", "os.system", "Task"])
    junk = rng.randbytes(rng.randint(0, 4096))
    if rng.random() < 0.3:  # msgpack-looking garbage: a valid prefix, then noise
        junk = rng.choice([b"\x84", b"\x93", b"\xde\x00\x10", b"\xdc\x01\x00"]) + junk
    return [kind, wire.packb(header_fields(type_)), junk]


def deep_nesting(rng: random.Random) -> list[bytes]:
    depth = rng.choice([100, 1000, 1023, 1024, 1025, 10_000, 100_000])
    layer = rng.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\x92\xc0"])
    data = layer * depth + b"\xc0"
    kind = rng.choice(ALL_KINDS)
    where = rng.randrange(3)
    if where == 0:
        return [kind, data, b""]
    if where == 1:
        return [kind, wire.packb(header_fields(TEMPLATES[kind][0])), data]
    return [kind, b"\x97\x01" + data + wire.packb(header_fields(None))[3:], b""]


def huge_lengths(rng: random.Random) -> list[bytes]:
    claim = rng.choice(HUGE_HEADERS) + rng.randbytes(rng.randint(0, 64))
    kind = rng.choice(ALL_KINDS)
    header = wire.packb(header_fields(TEMPLATES[kind][0]))
    where = rng.randrange(4)
    if where == 0:
        return [kind, claim, b""]
    if where == 1:
        return [kind, header, claim]
    if where == 2:  # inside a header that starts out fine
        return [kind, b"\x97\x01" + claim, b""]
    return [kind, header, b"\x84\xa4name" + claim]  # inside a map that starts out fine


ABSURD_HELLO_FIELDS: list[dict[str, Any]] = [
    {"skill": -(2**63)}, {"skill": 2**63 - 1}, {"skill": 11}, {"capacity": 0}, {"capacity": -1},
    {"capacity": 2**64 - 1}, {"capacity": 100_001}, {"name": ""}, {"name": "admin"},
    {"name": "x" * 100_000, "skill": 99}, {"name": "\x00\n\x1b[2J", "capacity": 0},
    {"role": "r" * 100_000, "skill": -1},
    {"running": [[i, i] for i in range(20_000)], "skill": 12},
    {"running": [["honest-001", math.inf]], "capacity": 0},
    {"results": [{"task_id": i} for i in range(5000)], "capacity": 0},
    {"handlers": ["h"] * 50_000, "skill": 11},
]


def absurd_hello(rng: random.Random) -> list[bytes]:
    fields = wire.to_wire(Hello(f"intruder-{rng.randrange(10**6)}", "default", 5, 1))
    fields.update(rng.choice(ABSURD_HELLO_FIELDS))
    header = header_fields("Hello")
    if rng.random() < 0.2:
        header[rng.choice([0, 1])] = rng.choice([2**63 - 1, -1, "w" * 50_000, "prod"])
    return [Kind.HELLO, wire.packb(header), wire.packb(fields)]


def oversized(rng: random.Random) -> list[bytes]:
    """One frame just under or just over 1 MiB (the default --max-message-bytes)."""
    size = MiB + rng.choice([-4096, -64, -17, -1, 1, 64, 4096])
    kind = rng.choice(ALL_KINDS)
    header = wire.packb(header_fields(TEMPLATES[kind][0]))
    style = rng.randrange(4)
    if style == 0:
        return [kind, header, rng.randbytes(size)]
    if style == 1:  # a header whose workspace string fills the frame
        fields = header_fields("Hello")
        fields[1] = "w" * (size - 40)
        return [Kind.HELLO, wire.packb(fields), b""]
    if style == 2:  # a payload that is one big string
        return [kind, header, wire.packb("s" * (size - 5))]
    return [kind, header, wire.packb({"name": "n" * (size - 60), "skill": 99})]


CATEGORIES: list[tuple[Callable[[random.Random], list[bytes]], int]] = [
    (noise, 16), (unknown_kind, 5), (truncated, 11), (mutated, 12), (wrong_header_field, 10),
    (wrong_payload_field, 18), (garbage_payload, 10), (deep_nesting, 5), (huge_lengths, 6),
    (absurd_hello, 6), (oversized, 1),
]


def would_change_the_run(frames: list[bytes]) -> bool:
    """True for what an unauthenticated peer may legitimately do to the run: register as a
    worker, submit tasks, or cancel one of them. Those are impostors, not hostile noise."""
    try:
        env = wire.decode_frames(frames)
    except RemoteProtocolError:
        return False
    if env.header.workspace != WORKSPACE or env.header.version != wire.PROTOCOL_VERSION:
        return False
    try:
        if env.kind == Kind.HELLO:
            raw = wire.unpackb(env.payload)
            if not (isinstance(raw, dict) and _within(raw.get("skill"), 0, 10)
                    and _within(raw.get("capacity"), 1, 100_000)):
                return False  # refused whatever else it says
            wire.unpack(Hello, env.payload)
            return True
        if env.kind == Kind.SUBMIT:
            parse_work(wire.unpack(Submission, env.payload).doc, "hostile")
            return True
        if env.kind == Kind.CANCEL:
            ids = [t[0] for t in wire.unpack(Cancel, env.payload).tasks if t]
            return any(_names_honest_task(i) for i in ids)
    except (RemoteProtocolError, ConfigError):
        return False
    return False


def _within(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _names_honest_task(task_id: Any) -> bool:
    try:
        return task_id in HONEST_IDS
    except TypeError:  # unhashable: names nothing; the admin must drop it as a bad frame
        return False


def hostile_frames(seed: int, count: int):
    """``count`` frames, the same ones for the same seed."""
    rng = random.Random(seed)
    makers = [m for m, _ in CATEGORIES]
    weights = [w for _, w in CATEGORIES]
    for _ in range(count):
        frames = rng.choices(makers, weights)[0](rng)
        yield noise(rng) if would_change_the_run(frames) else frames


# --------------------------------------------------------------------------- the attackers


ZMTP_GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + \
    b"\0" + b"\0" * 31


@dataclass
class Flood:
    """Sends the hostile frames from several DEALERs, round robin, in a thread of its own.

    The frames are made beforehand, so the flood goes as fast as the sockets take them. Sends
    block while the admin pushes back (allowed: that is how a bounded receive queue looks
    from outside); the flood ends when every frame is out, at ``stop``, or after
    FLOOD_TIMEOUT."""

    port: int
    frames: list[list[bytes]]
    seed: int = SEED
    sent: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        deadline = started + FLOOD_TIMEOUT
        ctx = zmq.Context()
        sockets: list[zmq.Socket] = []
        slow = self._raw_tcp(b"\x16\x03\x01")  # stays open, mid-greeting, all along
        try:
            for i, frames in enumerate(self.frames):
                if i % (len(self.frames) // 3) == 0:
                    self._not_zmtp(random.Random(self.seed + i))
                lane, turn = i % DEALERS, i // DEALERS
                if turn % FRAMES_PER_IDENTITY == 0:
                    if len(sockets) > lane:
                        sockets[lane].close()
                        sockets[lane] = self._dealer(ctx, b"hostile-%d-%d" % (lane, turn))
                    else:
                        sockets.append(self._dealer(ctx, b"hostile-%d-%d" % (lane, turn)))
                if not self._send(sockets[lane], frames, deadline):
                    break
                self.sent += 1
        finally:
            for s in sockets:
                s.close(linger=500)
            ctx.term()
            if slow is not None:
                slow.close()
            self.seconds = time.monotonic() - started

    def _send(self, sock: zmq.Socket, frames: list[bytes], deadline: float) -> bool:
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                sock.send_multipart(frames)
                return True
            except zmq.Again:
                continue
        return False

    def _dealer(self, ctx: zmq.Context, identity: bytes) -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, identity)
        s.setsockopt(zmq.SNDTIMEO, 200)  # to look at ``stop`` now and then
        s.setsockopt(zmq.RCVHWM, 10)  # never reads: the admin's replies back up
        s.setsockopt(zmq.LINGER, 500)
        s.connect(f"tcp://127.0.0.1:{self.port}")
        return s

    def _raw_tcp(self, first: bytes) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.sendall(first)
            return s
        except OSError:
            return None

    def _not_zmtp(self, rng: random.Random) -> None:
        """Bytes that are not ZMTP, and a greeting followed by nonsense."""
        for first in (rng.randbytes(65_536), ZMTP_GREETING + b"\x04\xff" + rng.randbytes(4096)):
            s = self._raw_tcp(first)
            if s is not None:
                s.close()


# --------------------------------------------------------------------------- watching the admin


def memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process in bytes; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values["VmHWM"]


@dataclass
class MemoryWatch:
    """The admin's RSS right after start, and the highest it reached since (VmHWM)."""

    pid: int
    start: int = 0
    peak: int = 0

    @classmethod
    def begin(cls, admin: Proc) -> MemoryWatch:
        now = memory(admin.process.pid)
        assert now is not None, admin.stderr()
        return cls(admin.process.pid, now[0], now[0])

    async def follow(self) -> None:
        while (m := memory(self.pid)) is not None:
            self.peak = max(self.peak, *m)
            await asyncio.sleep(0.05)

    @property
    def grown(self) -> int:
        return self.peak - self.start

    def describe(self) -> str:
        return (f"admin RSS grew by {self.grown / 1e6:.1f} MB (from {self.start / 1e6:.1f} MB "
                f"to a peak of {self.peak / 1e6:.1f} MB)")


async def keep_asking_status(port: int, admin: Proc, interval: float = 1.0) -> int:
    """Ask STATUS every ``interval`` s while the admin runs; AssertionError when an answer
    takes longer than STATUS_TIMEOUT. Returns how many answers came."""
    ctx = zmq.asyncio.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    answers = 0
    try:
        while admin.returncode is None:
            header = wire.make_header(WORKSPACE, "status-probe")
            await s.send_multipart(wire.encode_frames(Kind.STATUS, header))
            asked = time.monotonic()
            while not await s.poll(100):
                if admin.returncode is not None:
                    return answers
                if time.monotonic() - asked > STATUS_TIMEOUT:
                    raise AssertionError(f"the admin did not answer STATUS within "
                                         f"{STATUS_TIMEOUT:g} s (after {answers} answers)")
            while await s.poll(0):
                env = wire.decode_frames(await s.recv_multipart())
                assert env.kind == Kind.STATUS, env.kind
                answers += 1
            await asyncio.sleep(interval)
    finally:
        s.close()
        ctx.term()
    return answers


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


async def serving_admin(c: Cluster, *args: str) -> Proc:
    admin = await c.admin(*args)
    await wait_until(lambda: "serving workspace" in admin.stderr(), 15, "the admin to serve")
    return admin


# --------------------------------------------------------------------------- the load test


def write_tasks(path: Path) -> Path:
    tasks = [{"id": i, "description": "no-op", "difficulty": 1, "duration": TASK_SECONDS}
             for i in HONEST_IDS]
    path.write_text(json.dumps({"tasks": tasks}))
    return path


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    memory: MemoryWatch
    flood: Flood
    results_when_flood_ended: int
    status_answers: int
    worker_codes: list[int]


async def hostile_run(tmp_path: Path) -> Outcome:
    tasks = write_tasks(tmp_path / "tasks.json")
    frames = list(hostile_frames(SEED, FRAMES))
    async with Cluster(workdir=tmp_path) as c:
        admin = await serving_admin(c, "--tasks", str(tasks), "--expect-workers", "3",
                                    "--report-json", str(tmp_path / "report.json"))
        watch = MemoryWatch.begin(admin)
        watching = asyncio.create_task(watch.follow())
        async with EventLog("127.0.0.1", c.pub_port) as log:
            await log.wait_subscribed()
            workers = [await c.worker(f"honest-{i}", "--time-scale", "0") for i in range(3)]
            await wait_until(lambda: log.of(Kind.ASSIGN), 30, "the first assignment")
            flood = Flood(c.port, frames)
            exited = asyncio.create_task(admin.wait(RUN_TIMEOUT))
            exited.add_done_callback(lambda _: flood.stop.set())
            flooding = asyncio.create_task(asyncio.to_thread(flood.run))
            asking = asyncio.create_task(keep_asking_status(c.port, admin))
            try:
                await flooding
                results = len(log.of(Kind.RESULT))
                await asyncio.wait([exited, asking], return_when=asyncio.FIRST_COMPLETED)
                if asking.done():
                    asking.result()  # AssertionError when the admin stopped answering
                code = await exited
                answers = await asking
            finally:
                flood.stop.set()
                for task in (flooding, exited, asking):
                    task.cancel()
                await asyncio.gather(flooding, exited, asking, return_exceptions=True)
            worker_codes = [await w.wait(15) for w in workers]
        await watching
    return Outcome(code, admin.stdout(), admin.stderr(), watch, flood, results, answers,
                   worker_codes)


@pytest.mark.timeout(150)
def test_admin_runs_the_honest_batch_through_10000_hostile_frames(tmp_path):
    out = run(hostile_run(tmp_path))

    assert out.flood.sent == FRAMES, (
        f"only {out.flood.sent} of {FRAMES} frames went out in {out.flood.seconds:.1f} s")
    assert out.results_when_flood_ended < TASKS, (
        "the run was over before the flood: lengthen TASK_SECONDS")
    assert out.code == 0, tail(out.stderr)
    assert f"Success rate: 100.00% ({TASKS}/{TASKS} tasks)" in out.stdout, tail(out.stdout)
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(t["id"] for t in report["tasks"]) == HONEST_IDS  # every task, exactly once
    assert all(t["success"] for t in report["tasks"])
    assert report["success_rate"] == 1.0
    assert (report["unassigned"], report["cancelled"], report["dead"]) == ([], [], [])
    assert out.worker_codes == [0, 0, 0]
    assert out.status_answers > 0
    assert out.memory.grown <= RSS_SLACK, out.memory.describe()


# --------------------------------------------------------------------------- single frames
# Frames the flood may or may not get through (an identity gets banned, a HELLO is rate
# limited), sent alone to an idle admin.


def _send_alone(port: int, frame_lists: list[list[bytes]], identity: bytes,
                rate: float = 5.0, reads: bool = True) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, identity)
    s.setsockopt(zmq.LINGER, 2000)
    if not reads:  # the admin's answers back up on its side
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.RCVBUF, 4096)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        for frames in frame_lists:
            s.send_multipart(frames)
            time.sleep(1 / rate)
            while reads and s.poll(0):
                s.recv_multipart()
    finally:
        s.close()
        ctx.term()


def _status_answered(port: int, timeout: float = 5.0) -> bool:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.send_multipart(wire.encode_frames(Kind.STATUS,
                                                wire.make_header(WORKSPACE, "probe")))
        if not s.poll(int(timeout * 1000)):
            return False
        return wire.decode_frames(s.recv_multipart()).kind == Kind.STATUS
    finally:
        s.close()
        ctx.term()


def _hello(name: str, running: list[list[Any]]) -> list[bytes]:
    return encode(Kind.HELLO, "Hello", wire.to_wire(Hello(name, "default", 5, 1, running)))


def _heartbeat(holding: list[list[Any]]) -> list[bytes]:
    return encode(Kind.HEARTBEAT, "Heartbeat", wire.to_wire(Heartbeat(holding)))


# Each of these once stopped the admin's receive loop (an exception other than
# RemoteProtocolError escaped Admin._handle).
POISON = {
    "cancel-list-id": [encode(Kind.CANCEL, "Cancel", {"tasks": [[[1]]], "reason": "x"})],
    "cancel-map-id": [encode(Kind.CANCEL, "Cancel", {"tasks": [[{"a": 1}, 0]]})],
    "hello-infinite-attempt": [_hello("intruder-1", [["t", math.inf]])],
    "heartbeat-infinite-attempt": [_hello("intruder-2", []), _heartbeat([["t", math.inf]])],
}


@pytest.mark.timeout(60)
def test_poisoned_frames_are_dropped_and_the_admin_keeps_serving(tmp_path):
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await serving_admin(c)
            answered = {}
            for name, frames in POISON.items():
                await asyncio.to_thread(_send_alone, c.port, frames, name.encode())
                answered[name] = await asyncio.to_thread(_status_answered, c.port)
            return answered, admin.stderr()

    answered, err = run(body())
    assert answered == dict.fromkeys(POISON, True), tail(err)


def _quoting(kind: bytes, size: int) -> list[bytes]:
    """A request whose refusal would quote a ``size``-character string of the peer's."""
    header = header_fields("Hello" if kind == Kind.HELLO else None)
    if kind == Kind.HELLO and size < 0:  # the name, not the workspace
        hello = Hello("n" * -size, "default", 99, 1)
        return [kind, wire.packb(header), wire.packb(wire.to_wire(hello))]
    header[1] = "w" * size
    hello = Hello("intruder", "default", 5, 1)
    payload = wire.packb(wire.to_wire(hello)) if kind == Kind.HELLO else b""
    return [kind, wire.packb(header), payload]


def _refusals(port: int, requests: list[list[bytes]]) -> list[int]:
    """Send each request and read its REJECT; the sizes of the REJECT frames."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    sizes = []
    try:
        for frames in requests:
            s.send_multipart(frames)
            assert s.poll(10_000), "no answer from the admin"
            reply = s.recv_multipart()
            assert wire.decode_frames(reply).kind == Kind.REJECT
            sizes.append(sum(len(f) for f in reply))
    finally:
        s.close()
        ctx.term()
    return sizes


@pytest.mark.timeout(60)
def test_refusals_quote_a_peers_huge_strings_only_in_part(tmp_path):
    # Quoted in full, each refusal wrote a 1 MiB log line and sent a 1 MiB REJECT, which
    # piled up in the admin for a peer that does not read: 100 such HELLOs grew it by
    # ~145 MB of RSS and ~105 MB of log.
    huge = MiB - 200
    requests = [_quoting(Kind.HELLO, huge), _quoting(Kind.HELLO, -huge),
                _quoting(Kind.STATUS, huge), _quoting(Kind.SUBMIT, huge)]

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await serving_admin(c)
            before = admin.stderr_path.stat().st_size
            sizes = await asyncio.to_thread(_refusals, c.port, requests)
            return sizes, admin.stderr_path.stat().st_size - before

    sizes, logged = run(body())
    assert max(sizes) < 4096, sizes
    assert logged < 16_384, f"{logged} bytes of log for {len(requests)} refusals"


# --------------------------------------------------------------------------- starving the rest

GARBAGE_FLOOD = """
import sys, time, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.send_multipart([b"NOPE", b"x", b""])  # an unknown kind: the cheapest frame to refuse
s.close()
ctx.term()
"""


# The admin's receive loop once never yielded while frames kept coming (awaiting a zmq recv
# that is already complete does not yield): one peer's garbage stopped all its timers.
@pytest.mark.timeout(60)
def test_a_garbage_flood_from_one_peer_does_not_stop_the_admins_heartbeats(tmp_path):
    flood_seconds = 6.0

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await serving_admin(c)
            async with EventLog("127.0.0.1", c.pub_port) as log:
                await log.wait_subscribed()
                started = time.monotonic()
                flood = await c.spawn("flood", [sys.executable, "-c", GARBAGE_FLOOD,
                                                str(c.port), str(flood_seconds)])
                await flood.wait(flood_seconds + 15)
                await asyncio.sleep(1.5)
                ended = time.monotonic()
                beats = [e.at for e in log.events if e.kind == Kind.HEARTBEAT]
        return [started, *sorted(b for b in beats if started < b < ended), ended]

    points = run(body())
    gap = max(later - earlier for earlier, later in itertools.pairwise(points))
    assert gap < 3.0, f"{gap:.1f} s without a heartbeat on the PUB bus during the flood"


# --------------------------------------------------------------------------- stalled reader


def _stalled_reader(port: int, stop: threading.Event) -> None:
    """Register with the largest capacity, never read, keep sending empty heartbeats: a worker
    whose reading side is stuck, or a peer out to swallow the queue."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, b"stalled")
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.send_multipart(encode(Kind.HELLO, "Hello", wire.to_wire(
            Hello("stalled", "default", 10, wire.MAX_CAPACITY))))
        while not stop.wait(0.3):
            s.send_multipart(_heartbeat([]))
    finally:
        s.close()
        ctx.term()


@pytest.mark.timeout(90)
def test_a_worker_that_registers_and_never_reads_does_not_hold_the_run(tmp_path):
    tasks = [{"id": i, "description": "no-op", "difficulty": 1, "duration": 0}
             for i in range(30)]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": tasks}))

    async def body():
        stop = threading.Event()
        async with Cluster(workdir=tmp_path) as c:
            admin = await serving_admin(c, "--tasks", str(path), "--expect-workers", "2",
                                        "--report-json", str(tmp_path / "report.json"))
            stalled = asyncio.create_task(asyncio.to_thread(_stalled_reader, c.port, stop))
            try:
                await wait_until(lambda: "worker 'stalled' joined" in admin.stderr(), 15,
                                 "the stalled reader to register")
                # As skilled, so the stalled reader, far less loaded by its claimed capacity,
                # is where the tasks would go.
                await c.worker("honest", "--skill", "10", "--time-scale", "0")
                code = await admin.wait(60)
            finally:
                stop.set()
                await stalled
            return code, admin.stdout(), admin.stderr()

    code, out, err = run(body())
    assert code == 0, tail(err)
    assert "Success rate: 100.00% (30/30 tasks)" in out, tail(out)
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(t["id"] for t in report["tasks"]) == list(range(30))
    assert {t["worker"] for t in report["tasks"]} == {"honest"}
    assert re.search(r"worker 'stalled' did not confirm task\(s\) \[\d+\] within 1 s .*: "
                     r"1 task\(s\) back in the queue; it gets no more until it answers", err), \
        tail(err)
