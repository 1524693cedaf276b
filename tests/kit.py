"""Driving AdminState without sockets, as the edge would: frames in, commands out.

``Sim`` holds the state and a fake clock; ``SimWorker`` is a worker as the admin sees it over
the wire: it registers, holds what it is sent, answers, heartbeats. Nothing sleeps.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.admin_state import AdminState
from ceylon_net.core.tasks import Task, TaskResult
from ceylon_net.settings import AdminSettings
from ceylon_net.wire import Hello, Kind

WORKSPACE = "default"
EPOCH = 7  # the simulated admin process's broadcast epoch
BEAT = wire.Event("heartbeat", {"every": 1.0, "epoch": EPOCH})  # at the default pace


def frames(kind: bytes, msg: Any = None, sender: str = "peer", workspace: str = WORKSPACE,
           token: str | None = None, version: int | None = None) -> list[bytes]:
    """A message as a peer puts it on the wire."""
    if isinstance(msg, list):
        type_, payload = wire.type_name(msg[0]) if msg else None, wire.pack_batch(msg)
    elif msg is None:
        type_, payload = None, b""
    else:
        type_, payload = wire.type_name(msg), wire.pack(msg)
    header = wire.make_header(workspace, sender, type_, token=token)
    if version is not None:
        header.version = version
    return wire.encode_frames(kind, header, payload)


def of(cmds: list[Any], kind: type) -> list[Any]:
    return [x for x in cmds if isinstance(x, kind)]


def sends(cmds: list[Any], kind: bytes, peer: bytes | None = None) -> list[Any]:
    """The messages of the Send commands of ``kind`` (to ``peer``)."""
    return [x.msg for x in of(cmds, c.Send) if x.kind == kind and peer in (None, x.peer)]


def assigned(cmds: list[Any]) -> dict[str, list[Any]]:
    """{worker: [task id, ...]} of the Assign commands."""
    out: dict[str, list[Any]] = {}
    for a in of(cmds, c.Assign):
        out.setdefault(a.worker, []).extend(x.task.id for x in a.assignments)
    return out


def logs(cmds: list[Any], level: str | None = None) -> list[str]:
    return [x.message for x in of(cmds, c.Log) if level in (None, x.level)]


def noop(i: Any, difficulty: int = 1, **kw: Any) -> Task:
    return Task(i, f"task {i}", difficulty, **kw)


@dataclass
class SimWorker:
    """A worker process as the admin knows it: what it was sent, what it answered."""

    sim: Sim
    name: str
    peer: bytes
    skill: int = 10
    role: str = "default"
    capacity: int = 1
    held: dict[Any, int] = field(default_factory=dict)  # task -> attempt
    unacked: dict[tuple[Any, int], TaskResult] = field(default_factory=dict)
    heard: int = -1  # broadcasts: hearing after this number (-1: not hearing PUB yet)
    delivered: int = 0
    missing: list[list[int]] = field(default_factory=list)
    lost: int = -1  # broadcasts it skipped, as it says (-1: it does not say)
    stuck: int = -1  # slots held by threads that outlived their tasks (-1: not said)
    handlers: list[str] = field(default_factory=list)  # task handlers it has
    answers_unheld: bool = False  # it answers a RELEASE of a task it never got (Hello)

    def say(self, kind: bytes, msg: Any = None, **kw: Any) -> list[Any]:
        return self.sim.receive(self.peer, frames(kind, msg, sender=self.name, **kw))

    def hello(self, limit: int = 0, released: dict[Any, int] | None = None,
              welcomed: bool = True, **kw: Any) -> list[Any]:
        """``limit``: the --max-message-bytes it says (0: says none, an older worker);
        ``released``: queued tasks it gave back as it registers again ({task: attempt});
        ``welcomed``: its WELCOME reaches it at once, as on a perfect network, and it
        answers (a real worker beats at once: the admin takes it as answered, without that
        beat's round); False: its WELCOME is held up on the way (a link just back)."""
        hello = Hello(self.name, self.role, self.skill, self.capacity,
                      [[t, a] for t, a in self.held.items()],
                      [wire.to_wire(r) for r in self.unacked.values()],
                      max_message_bytes=limit, handlers=self.handlers,
                      answers_unheld=self.answers_unheld,
                      released=[[t, a] for t, a in (released or {}).items()])
        cmds = self.say(Kind.HELLO, hello, **kw)
        if welcomed and (rec := self.sim.st.members.registry.get(self.peer)) is not None:
            self.sim.st.members.registry.answers(rec, True, self.sim.now)
        return cmds

    def heartbeat(self, pub: bool = True) -> list[Any]:
        holding = [[t, a] for t, a in self.held.items()] + [[t, a] for t, a in self.unacked]
        return self.say(Kind.HEARTBEAT, wire.Heartbeat(holding, pub, self.heard,
                                                       max(self.delivered, self.heard),
                                                       self.missing, self.lost, self.stuck))

    def finish(self, task_id: Any, success: bool = True, seconds: float = 0.001,
               **kw: Any) -> list[Any]:
        """Report a held task's result (it stays unacknowledged until an ACK)."""
        attempt = self.held.pop(task_id)
        result = TaskResult(task_id, self.name, success, seconds, attempt=attempt, **kw)
        self.unacked[(task_id, attempt)] = result
        return self.say(Kind.RESULT, [result])

    def start(self, *task_ids: Any) -> list[Any]:
        """Say these held tasks started."""
        return self.say(Kind.STARTED, wire.Started([[t, self.held[t]] for t in task_ids]))

    def give_back(self, *task_ids: Any) -> list[Any]:
        """Answer a RELEASE: these held tasks had not started; they are given back."""
        pairs = [[t, self.held.pop(t)] for t in task_ids]
        return self.say(Kind.STARTED, wire.Started([], pairs))

    def finish_all(self) -> list[Any]:
        """Finish every held task; one the admin asks back meanwhile (a result frees a slot
        that a better task is placed in) is given back, not finished."""
        out: list[Any] = []
        for task_id in list(self.held):
            if task_id in self.held:
                out += self.finish(task_id)
        return out


class Sim:
    """An AdminState, a fake clock, and the workers it talks to. Commands are carried out as
    a perfect network would: assignments reach their worker, acknowledgements too (a CANCEL is
    the test's to answer); ``every`` keeps all commands seen."""

    def __init__(self, **settings: Any) -> None:
        self.now = 0.0
        # No pipelining unless asked (prefetch=None: adaptive): most tests count exactly
        # what goes to whom.
        self.st = AdminState(AdminSettings(**{"port": 0, "prefetch": 0, **settings}), self.now)
        self.st.started(self.now, 8000, 8001, EPOCH)
        self.workers: dict[bytes, SimWorker] = {}
        self.every: list[Any] = []
        self.timers: list[c.Timer] = []  # asked for, not run yet
        # The round that queues tasks ahead on workers after new work filled free slots
        # (a timer of no time) follows at once, as the edge runs it before the next message.
        self.ahead_at_once = True
        self._peers = 0

    def worker(self, name: str, **kw: Any) -> SimWorker:
        self._peers += 1
        w = SimWorker(self, name, f"{name}/{self._peers}".encode(), **kw)
        self.workers[w.peer] = w
        return w

    def join(self, name: str, **kw: Any) -> SimWorker:
        """A worker that registers, hears the admin's PUB heartbeat and heartbeats at once
        (so it is connected, and confirms the probation task it got, if there was one to give,
        and is trusted)."""
        w = self.worker(name, **kw)
        w.hello()
        w.heard = self.st.broadcasts.seq
        w.heartbeat()
        return w

    def receive(self, peer: bytes, msg: list[bytes], address: str = "127.0.0.1") -> list[Any]:
        return self.carry(self.st.receive(peer, msg, address, self.now))

    def tick(self, at: float | None = None) -> list[Any]:
        if at is not None:
            self.now = at
        return self.carry(self.st.tick(self.now))

    def submit(self, *tasks: Task, **kw: Any) -> list[Any]:
        return self.carry(self.st.submit(list(tasks), now=self.now, **kw))

    def cancel(self, *ids: Any, reason: str = "cancelled by request") -> list[Any]:
        _, cmds = self.st.cancel(list(ids), reason, self.now)
        return self.carry(cmds)

    def fire(self, timer: c.Timer | str | None = None) -> list[Any]:
        """Run a timer the state asked for, at the current time: the oldest, or the oldest of
        a kind ("probation", "sync")."""
        if not isinstance(timer, c.Timer):
            timer = next(x for x in self.timers if timer in (None, x.key[0]))
        self.timers.remove(timer)
        return self.carry(self.st.timer(timer.key, self.now))

    def carry(self, cmds: list[Any]) -> list[Any]:
        self.every += cmds
        self.timers += of(cmds, c.Timer)
        cmds = self._carried(cmds)
        ahead = next((t for t in self.timers if t.key == ("ahead",)), None)
        if ahead is not None and self.ahead_at_once:
            cmds = [*cmds, *self.fire(ahead)]
        return cmds

    def _carried(self, cmds: list[Any]) -> list[Any]:
        for cmd in cmds:
            w = self.workers.get(getattr(cmd, "peer", None) or b"")
            if w is None:
                continue
            if isinstance(cmd, c.Assign):
                for a in cmd.assignments:
                    w.held[a.task.id] = max(a.attempt, w.held.get(a.task.id, 0))
            elif isinstance(cmd, c.Acknowledge):
                for t, a in cmd.results:
                    w.unacked.pop((t, a), None)
        return cmds

    def finished(self) -> dict[Any, c.Finished]:
        out: dict[Any, c.Finished] = {}
        for f in of(self.every, c.Finished):
            assert f.task_id not in out, f"task {f.task_id!r} finished twice"
            out[f.task_id] = f
        return out


class JSim(Sim):
    """A Sim whose every round goes into a real journal first, as Admin._apply does;
    ``restart()`` is a kill (nothing more is written) and a new admin state from the file."""

    def __init__(self, path: Any, **settings: Any) -> None:
        from ceylon_net.edge.journal import Journal, resume

        super().__init__(**settings)
        self.path, self.settings = path, settings
        self.journal = Journal(path, "default")
        resume(self.journal, self.st, self.now)

    def carry(self, cmds: list[Any]) -> list[Any]:
        from ceylon_net.edge.journal import record_round

        record_round(self.journal, self.st, cmds)
        return super().carry(cmds)

    def restart(self) -> JSim:
        self.journal.db.close()
        return JSim(self.path, **self.settings)


def one_of_two_group(sim: Sim) -> tuple[Any, SimWorker, SimWorker]:
    """Group "g" of t0 and t1 whose goal (one completed) cancels the rest, submitted to new
    workers w1 and w2 (one task each): (group, w1, w2)."""
    from ceylon_net import TaskGroupGoal, TaskManager, TaskMessage, create_goal_checker

    group = TaskManager.create_task_group(
        "g", "", [TaskMessage(f"t{i}", f"t{i}", "", 0.0) for i in range(2)],
        goal=TaskGroupGoal("one", "", create_goal_checker(1), "ok", "no"),
        on_goal="cancel_rest")
    w1, w2 = sim.join("w1"), sim.join("w2")
    sim.carry(sim.st.submit([], groups=[group], now=sim.now))
    return group, w1, w2


def given_elsewhere(sim: Sim, first: str = "w1", second: str = "w2"
                    ) -> tuple[SimWorker, SimWorker]:
    """Task "t" goes to ``first``, which goes silent and is called lost at 3.5 s; "t" goes to
    ``second``, which has not said it started it: (first as it was, second). ``first`` may
    come back holding "t", attempt 1."""
    sim.submit(noop("t"))
    w1 = sim.join(first)
    w2 = sim.join(second)
    sim.now = 2.0
    w2.heartbeat()
    assert assigned(sim.tick(at=3.5)) == {second: ["t"]}  # first lost
    return w1, w2


def taken_over(sim: Sim) -> tuple[SimWorker, SimWorker]:
    """Task "t" starts on w1; w1 goes silent and is called lost at 3.5 s, and "t" goes to
    w2 (trusted: it ran a warm-up), which starts it: (w1 as it was, w2). w1 may come back
    holding "t", attempt 1."""
    sim.submit(noop("t"))
    w1 = sim.join("w1")
    w1.start("t")
    sim.submit(noop("warm-up"))
    w2 = sim.join("w2")
    w2.finish("warm-up")
    sim.now = 2.0
    w2.heartbeat()
    assert assigned(sim.tick(at=3.5)) == {"w2": ["t"]}  # w1 lost
    w2.start("t")
    return w1, w2


def taken_back(sim: Sim, name: str) -> tuple[SimWorker, SimWorker]:
    """A trusted worker busy with "busy"; ``name`` joins, on probation, and gets "t", which
    is taken back when its time to confirm it runs out (it stays silent): (the trusted
    worker, ``name``'s worker, still holding "t", attempt 1)."""
    sim.submit(noop("busy"))
    trusted = sim.join("trusted")
    sim.fire("probation")
    slow = sim.worker(name)
    slow.hello()
    assert assigned(sim.submit(noop("t"))) == {name: ["t"]}
    sim.fire("probation")  # not confirmed in time: taken back
    return trusted, slow


def said_once(err: str, text: str) -> str:
    """The one line of a process's log holding ``text``, a WARNING (said once, not per item
    or per retry)."""
    said = [line for line in err.splitlines() if text in line]
    assert len(said) == 1 and "WARNING" in said[0], err
    return said[0]


def ticked(sim: Sim, keep: list[SimWorker], until: float, step: float = 1.0) -> list[str]:
    """Tick every ``step`` s to ``until``, the workers in ``keep`` heartbeating before each
    tick: the WARNING and ERROR lines said."""
    said = []
    while sim.now < until:
        sim.now += step
        for w in keep:
            w.heartbeat()
        cmds = sim.tick()
        said += logs(cmds, "WARNING") + logs(cmds, "ERROR")
    return said


def killed_as_its_run_ended(path: Any) -> None:
    """A journal at ``path`` of a run whose one task (1) ended on worker 'w', its admin
    killed before it told 'w' the run was over."""
    sim = JSim(path)
    w = sim.join("w")
    sim.submit(Task(1, "x"))
    w.finish(1)
    sim.journal.db.close()


class Said:
    """Log lines said (by loguru) while the block runs, at ``level`` and above: each its
    message, and the exception it carries, if any, as `` [ValueError(...)]``."""

    def __init__(self, level: str = "WARNING") -> None:
        self.level = level
        self.lines: list[str] = []

    def __enter__(self) -> Said:
        from loguru import logger

        def said(m: Any) -> None:
            exc = m.record["exception"]
            self.lines.append(m.record["message"] + (f" [{exc.value!r}]" if exc else ""))

        self._sink = logger.add(said, level=self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        from loguru import logger

        logger.remove(self._sink)


def restarted_with(path: Any, *names: str) -> JSim:
    """A journal at ``path`` naming ``names`` (each running a task, all registered from one
    address at the HELLO rate), its admin killed and restarted: the new admin process, in
    its come-back window."""
    sim = JSim(path, heartbeat=0.2, liveness=3)
    workers = []
    for i, name in enumerate(names):
        sim.now = i / 100  # (at the HELLO rate: one address)
        workers.append(sim.join(name))
    sim.submit(*[noop(i) for i in range(len(names))])  # (one each)
    for w in workers:
        w.heartbeat()
    return sim.restart()


def http_exchange(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    """What a local HTTP server (the dashboard) answers to ``data`` sent as it is, to the end
    of the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@contextlib.asynccontextmanager
async def sender_and_busy_reader() -> AsyncIterator[tuple[Any, Any, Any]]:
    """An admin on a free port, worker "a" registered with it, and "b": a raw DEALER
    registered and beating that reads nothing (its loop busy: RCVHWM 1 and a small kernel
    buffer), so that what "a" sends it fills its queue at the admin soon. (admin, a, b); all
    stopped and closed on the way out."""
    import asyncio

    import zmq
    import zmq.asyncio

    from ceylon_net import Admin, Worker
    from ceylon_net.dev.testing import wait_until

    admin = Admin("admin", 0)
    await admin.start()
    ctx = zmq.asyncio.Context()
    b = ctx.socket(zmq.DEALER)
    b.setsockopt(zmq.RCVHWM, 1)
    b.setsockopt(zmq.RCVBUF, 4096)
    b.setsockopt(zmq.LINGER, 0)
    b.connect(f"tcp://127.0.0.1:{admin.port}")

    def said(kind: bytes, msg: Any) -> list[bytes]:
        header = wire.make_header(admin.workspace_id, "b", wire.type_name(msg))
        return wire.encode_frames(kind, header, wire.pack(msg))

    async def beat() -> None:
        while True:
            await b.send_multipart(said(Kind.HEARTBEAT, wire.Heartbeat()))
            await asyncio.sleep(0.2)  # (its pace: it is alive, not a synchronisation)

    a, beating, running = Worker("a"), None, None
    try:
        await b.send_multipart(said(Kind.HELLO, Hello("b", "default", 5, 1)))
        welcome = wire.decode_frames(await asyncio.wait_for(b.recv_multipart(), 10))
        assert welcome.kind == Kind.WELCOME
        beating = asyncio.create_task(beat())
        running = asyncio.create_task(a.arun_against(admin))
        await wait_until(lambda: a._welcome is not None, 20, "a registered")
        yield admin, a, b
    finally:
        if beating is not None:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        await a.stop()
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        await admin.close()
        b.close(0)
        ctx.term()
