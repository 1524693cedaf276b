"""The tutorials' broadcast pattern over real sockets: an admin that broadcasts from
``on_agent_connected`` reaches every agent, once, in order; a worker that joins while the
admin broadcasts 10,000 messages a second gets everything sent after its
``on_agent_connected``; a worker behind 10 % packet loss gets everything."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time

import pytest
from conftest import REPO, run

from ceylon_net import Admin, AdminSettings, Worker, on_message
from ceylon_net.dev import netns
from ceylon_net.dev.testing import Cluster, Proc, wait_until

sys.path.insert(0, str(REPO / "tests" / "apps"))
from notes import Note  # the apps' message type, shared with their processes

LISTENER = str(REPO / "tests" / "apps" / "listener.py")
ANNOUNCER = str(REPO / "tests" / "apps" / "announcer.py")


class Listener(Worker):
    def __init__(self, name: str, **kw) -> None:
        super().__init__(name, **kw)
        self.notes: list[int] = []

    @on_message(type=Note)
    async def on_note(self, note: Note) -> None:
        self.notes.append(note.n)


class Announcer(Admin):
    """Broadcasts ``count`` notes from on_agent_connected once ``expected`` agents joined."""

    def __init__(self, expected: int, count: int, first: int = 0,
                 heartbeat: float = 1.0) -> None:
        super().__init__(settings=AdminSettings(bind="127.0.0.1", port=0,
                                                heartbeat=heartbeat))
        self.expected, self.count, self.first = expected, count, first
        self.sent = False

    async def on_agent_connected(self, topic, agent) -> None:
        if len(self.get_connected_agents()) == self.expected and not self.sent:
            self.sent = True
            for i in range(self.first, self.first + self.count):
                await self.broadcast_data(Note(i))


async def _listeners(c: Cluster, port: int, names: list[str], **kw) -> list[Proc]:
    return [await c.spawn(n, [sys.executable, LISTENER, "--name", n, "--port", str(port),
                              "--out", str(c.workdir / f"{n}.json"), *_flags(kw)])
            for n in names]


def _flags(kw: dict) -> list[str]:
    return [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _notes(c: Cluster, name: str) -> list[int]:
    return json.loads((c.workdir / f"{name}.json").read_text())


async def _one_round(tmp_path, r: int, count: int) -> dict[str, list[int]]:
    first = r * count
    # (workers confirm broadcasts with their heartbeat: a quick one keeps 50 rounds short)
    admin = Announcer(8, count, first, heartbeat=0.25)
    inproc = [Listener(f"in-{i}") for i in range(4)]
    async with Cluster(workdir=tmp_path / f"round-{r}") as c:
        c.workdir.mkdir(exist_ok=True)
        serving = asyncio.create_task(admin.arun_admin(b"", inproc))
        await wait_until(lambda: admin.port != 0, 10, "the admin to bind")
        procs = await _listeners(c, admin.port, [f"proc-{i}" for i in range(4)])
        want = list(range(first, first + count))
        await wait_until(lambda: admin.sent and all(w.notes == want for w in inproc) and all(
            s["broadcasts_delivered"] >= count for s in admin.status()["workers"]), 30,
            f"round {r}: every agent to confirm the broadcasts")
        await admin.stop()
        await asyncio.wait_for(serving, 10)
        for p in procs:
            assert await p.wait(10) == 0, p.stderr()
        got = {w.name: w.notes for w in inproc}
        got |= {p.name: _notes(c, p.name) for p in procs}
    return got


@pytest.mark.timeout(300)
def test_broadcasts_from_on_agent_connected_reach_4_inprocess_and_4_process_workers_50_times(
        tmp_path):
    count = 10

    async def body():
        rounds = []
        for r in range(50):
            rounds.append(await _one_round(tmp_path, r, count))
        return rounds

    for r, got in enumerate(run(body())):
        want = list(range(r * count, (r + 1) * count))
        assert got == dict.fromkeys(got, want), f"round {r}: {got}"
        assert len(got) == 8


class Streamer(Admin):
    """Broadcasts numbered notes at ``rate`` a second until told to stop; remembers how many
    it had sent when each agent connected."""

    def __init__(self, rate: int) -> None:
        super().__init__(settings=AdminSettings(bind="127.0.0.1", port=0))
        self.rate, self.sent, self.running = rate, 0, True
        self.connected_at: dict[str, int] = {}

    async def on_agent_connected(self, topic, agent) -> None:
        self.connected_at[agent.name] = self.sent

    async def stream(self) -> None:
        per_step = self.rate // 100  # every 10 ms
        t0 = time.monotonic()
        while self.running:
            for _ in range(per_step):
                await self.broadcast_data(Note(self.sent))
                self.sent += 1
            # paced against the clock, so 10,000 a second is what goes out
            await asyncio.sleep(max(0.0, t0 + self.sent / self.rate - time.monotonic()))


@pytest.mark.timeout(120)
def test_a_worker_joining_mid_stream_gets_every_broadcast_after_it_connected_once_in_order(
        tmp_path):
    admin = Streamer(rate=10_000)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await admin.start()
            stream = asyncio.create_task(admin.stream())
            try:
                await wait_until(lambda: admin.sent >= 5_000, 10, "the stream to be going")
                (late,) = await _listeners(c, admin.port, ["late"])
                await wait_until(lambda: "late" in admin.connected_at, 20, "the joiner")
                mark = admin.sent + 10_000  # then two more seconds of broadcasts
                await wait_until(lambda: admin.sent >= mark, 20, "10,000 more broadcasts")
                admin.running = False
                await stream
                total = admin.sent
                await wait_until(lambda: any(
                    s["name"] == "late" and s["broadcasts_delivered"] >= total
                    for s in admin.status()["workers"]), 20, "the joiner to confirm them all")
            finally:
                admin.running = False
                await admin.close("stream over")
            assert await late.wait(10) == 0, late.stderr()
            return _notes(c, "late"), admin.connected_at["late"], total, admin.status

    notes, connected_at, total, _ = run(body())
    assert notes == sorted(set(notes)), "out of order or twice"
    assert set(range(connected_at, total)) <= set(notes), (
        f"missing {sorted(set(range(connected_at, total)) - set(notes))[:20]}")
    assert total - connected_at >= 10_000


@pytest.mark.timeout(120)
def test_a_worker_stalled_for_4_s_under_50000_broadcasts_gets_them_all_once_in_order(tmp_path):
    """A worker whose handler blocks its loop for 4 s on the first of 50,000 notes sent at
    once: everything arrives, once, in order, and nothing is counted lost."""
    count = 50_000
    admin = Announcer(1, count)

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            await admin.start()
            try:
                (slow,) = await _listeners(c, admin.port, ["slow"], stall=4.0,
                                           log_level="DEBUG")
                await wait_until(lambda: admin.sent, 20, "the broadcasts")
                await wait_until(lambda: any(s["broadcasts_delivered"] >= count
                                             for s in admin.status()["workers"]), 60,
                                 "the slow worker to confirm them all")
            finally:
                await admin.close("done")
            assert await slow.wait(10) == 0, slow.stderr()
            return _notes(c, "slow"), admin.status()["counts"], slow.stderr()

    notes, counts, _ = run(body())
    assert notes == list(range(count))
    assert counts["broadcasts_lost"] == 0


needs_netns = pytest.mark.skipif(not netns.is_available(),
                                 reason=f"needs network namespaces: {netns.unavailable_reason()}")
needs_iptables = pytest.mark.skipif(shutil.which("iptables") is None,
                                    reason="iptables is not installed (bin/test installs it "
                                           "as root on Debian)")


@pytest.mark.netns
@needs_netns
@needs_iptables
@pytest.mark.timeout(180)
def test_a_worker_behind_10_percent_packet_loss_receives_every_broadcast(tmp_path):
    count, port = 3_000, 8000
    with netns.network(hosts=["admin", "lossy", "clean"]) as net:
        for chain, iface in (("INPUT", "-i"), ("OUTPUT", "-o")):
            net.iptables("lossy", ["-A", chain, "!", iface, "lo", "-m", "statistic", "--mode",
                                   "random", "--probability", "0.1", "-j", "DROP"])
        admin = net.run("admin", [sys.executable, ANNOUNCER, "--port", str(port), "--workers",
                                  "2", "--count", str(count), "--rate", "1000"],
                        stdout=tmp_path / "admin.out", stderr=tmp_path / "admin.err")
        workers = [net.run(h, [sys.executable, LISTENER, "--name", h, "--port", str(port),
                               "--admin-peer", "admin", "--out", str(tmp_path / f"{h}.json")],
                           stderr=tmp_path / f"{h}.err") for h in ("lossy", "clean")]
        assert admin.wait(150) == 0, (tmp_path / "admin.err").read_text()[-3000:]
        for w in workers:
            assert w.wait(20) == 0
        drops = net.call("lossy", ["iptables", "-L", "INPUT", "-v", "-n", "-x"], timeout=10)
    for h in ("lossy", "clean"):
        assert json.loads((tmp_path / f"{h}.json").read_text()) == list(range(count)), h
    dropped = [int(line.split()[0]) for line in drops.stdout.splitlines() if "statistic" in line]
    assert dropped and dropped[0] > 0, drops.stdout  # the loss was real
