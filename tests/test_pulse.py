"""The heartbeat's pace with many workers (ceylon_net.core.pacing.Pulse): the admin takes at
most about --beats-per-second worker heartbeats a second; beyond, everyone beats slower, is
told so on the admin's heartbeat, and a lost worker is noticed in --liveness of the longer
intervals. Driven with a fake clock."""

from __future__ import annotations

import asyncio

from conftest import run
from kit import EPOCH, Sim, logs, of

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.pacing import Pulse, Silence, admin_silence, out_of_touch, watch_due
from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.edge.client import AsyncClient
from ceylon_net.wire import Kind


def test_the_heartbeat_slows_in_whole_steps_beyond_the_admin_s_beats_per_second():
    pulse = Pulse(1.0, liveness=3, per_second=200)
    assert pulse.update(200, now=0.0) is False and pulse.every == 1.0
    assert pulse.update(201, now=0.0) is True and pulse.every == 2.0
    assert pulse.update(1000, now=0.0) is True and pulse.every == 5.0
    assert pulse.silent_limit(now=0.0) == 15.0
    assert Pulse(0.5, 3, 200).update(150, 0.0) and Pulse(0.5, 3, 200).every == 0.5


def test_when_the_heartbeat_quickens_the_longer_silence_limit_holds_until_workers_heard():
    # Workers beat at the old, slower pace until the admin's next heartbeat tells them.
    pulse = Pulse(1.0, liveness=3, per_second=200)
    pulse.update(1000, now=0.0)
    assert pulse.update(10, now=100.0) and pulse.every == 1.0
    assert pulse.silent_limit(now=100.0) == 15.0
    assert pulse.silent_limit(now=119.9) == 15.0  # 4 old intervals
    assert pulse.silent_limit(now=120.1) == 3.0


def beats(cmds: list) -> list[float]:
    """The pace each of the admin's heartbeats on PUB asks for."""
    return [p.msg.data["every"] for p in of(cmds, c.Publish) if p.kind == Kind.HEARTBEAT]


def test_many_workers_are_told_to_beat_slower_and_are_lost_only_after_the_longer_silence():
    sim = Sim(beats_per_second=2.0)  # 2 workers at 1 s; 3 to 4 at 2 s
    quiet = sim.join("quiet")
    sim.join("w1")
    assert beats(sim.tick(at=1.0)) == [1.0]
    late = sim.join("late")
    (welcome,) = [s.msg for s in of(late.hello(), c.Send) if s.kind == Kind.WELCOME]
    assert welcome.heartbeat == 2.0  # it joins at the slower pace
    assert beats(sim.tick(at=2.0)) == [2.0]  # the others hear it on the next heartbeat
    assert beats(sim.tick(at=3.0)) == []  # and it comes every 2 s now
    for t in (4.0, 6.0):
        sim.now = t
        for w in sim.workers.values():
            if w is not quiet:
                w.heartbeat()
        assert not any("lost" in line for line in logs(sim.tick()))
    sim.now = 6.5  # quiet last beat at 0.0: 6 s is 3 of the 2 s intervals
    assert any("worker 'quiet' lost" in line for line in logs(sim.tick()))


def test_a_worker_that_does_not_hear_pub_is_told_the_pace_directly():
    sim = Sim(beats_per_second=1.0)
    deaf = sim.worker("deaf")
    deaf.hello()
    deaf.heartbeat(pub=False)
    sim.join("other")
    cmds = sim.tick(at=2.0)
    direct = [s.msg for s in of(cmds, c.Send) if s.peer == deaf.peer and s.kind == Kind.HEARTBEAT]
    assert direct == [wire.Event("heartbeat", {"every": 2.0, "epoch": EPOCH, "seq": 0})]


def test_worker_processes_beat_at_the_pace_the_admin_asks_and_stay_connected(tmp_path):
    # 2 heartbeats a second at most, 0.5 s apart, lost after 2: the first worker, alone, is
    # welcomed at 0.5 s; with 3, all beat every 1.5 s. Had it kept its 0.5 s pace, it would
    # take the admin's 1.5 s silences for its loss (after 1 s) and reconnect again and again.
    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--heartbeat", "0.5", "--liveness", "2",
                                  "--beats-per-second", "2")
            first = await c.worker("w0", "--log-level", "DEBUG")
            await wait_until(lambda: "registered with admin" in first.stderr(), 20,
                             "the first worker to register")
            workers = [first, await c.worker("w1"), await c.worker("w2")]
            await wait_until(lambda: "heartbeat every 1.5 s" in first.stderr(), 20,
                             "the first worker to hear the 1.5 s pace")
            await asyncio.sleep(4.5)  # what is observed: 3 of the admin's heartbeats
            async with AsyncClient(f"127.0.0.1:{c.port}") as client:
                doc = {"tasks": [{"id": "after", "description": "x", "difficulty": 1}]}
                _, report = await client.submit_batch(doc, wait=True)
                status = await client.status()
            return admin.stderr(), [w.stderr() for w in workers], report, status

    admin_err, worker_errs, report, status = run(body())
    assert report["success_rate"] == 1.0, report
    assert sorted(w["name"] for w in status["workers"]) == ["w0", "w1", "w2"]
    assert " lost: " not in admin_err and "replaced" not in admin_err
    for err in worker_errs:
        assert "admin silent" not in err and err.count("registered with admin") == 1


def test_a_worker_holds_its_queue_from_half_a_beat_before_the_admin_would_call_it_lost():
    """out_of_touch, fed times (heartbeat 1 s, liveness 3: lost at 3 s unheard): in touch
    until the earlier of its own beat and the admin's word going 2.5 s stale; a beat due at an
    older, slower pace (5 s) is not late until 7.5 s; at liveness 2, 1.5 s."""
    def ask(beat_ago: float, heard_ago: float, liveness: int = 3,
            sleeping: float = 1.0) -> tuple[str | None, float]:
        return out_of_touch(100.0, 100.0 - beat_ago, 100.0 - heard_ago, 1.0, liveness,
                            sleeping)

    assert ask(2.0, 1.0) == (None, 100.5)  # (its beat goes stale first)
    assert ask(0.2, 2.0) == (None, 100.5)  # (the admin's word does)
    why, _ = ask(2.6, 0.1)
    assert why == ("no heartbeat of ours went out for 2.6 s (was this process paused, or its "
                   "event loop blocked?)")
    assert ask(0.1, 2.6)[0] == "admin silent for 2.6 s"
    assert ask(4.0, 0.1, sleeping=5.0) == (None, 99.9 + 2.5) and ask(8.0, 0.1, sleeping=5.0)[0]
    assert ask(1.4, 1.4, liveness=2) == (None, 100.1) and ask(1.6, 0.1, liveness=2)[0]


def test_a_client_watches_again_once_a_silence_not_every_turn_of_it_and_every_rewatch():
    """watch_due, fed a client's turns (a watch every 10 s anyway): the admin silent for
    turns on end is asked once (a WATCH of every pending task each turn piled up for a
    restarting admin: a chaos trial's finding), then at the next REWATCH."""
    turns = [Silence.FINE, Silence.WATCH, Silence.WATCH, Silence.WATCH, Silence.FINE,
             Silence.WATCH] + [Silence.WATCH] * 11
    watched, asked, at = 0.0, False, []
    for now, verdict in enumerate(turns, start=1):
        if watch_due(verdict, asked, float(now), watched, 10.0):
            watched = float(now)
            at.append(now)
        asked = verdict is Silence.WATCH
    assert at == [2, 6, 17]  # (the silence from turn 6 on: asked again 10 s and more after)


def test_a_client_counts_as_the_admins_silence_only_the_time_it_was_awake_to_hear():
    """admin_silence, fed times (gone_after 30 s, asked again after 2 s): a client whose
    process was paused 35 s (``deaf``) has heard 1 s of silence on resuming, not 36, and
    reads what waits for it before judging; a silence heard past gone_after (or three beats
    of a slow admin's) is still the admin lost."""
    def ask(silent: float, deaf: float = 0.0, every: float = 1.0) -> tuple[Silence, float]:
        return admin_silence(1000.0, 1000.0 - silent, deaf, every, 30.0, 2.0)

    assert ask(1.0) == (Silence.FINE, 1.0)
    assert ask(2.5) == (Silence.WATCH, 2.5)
    assert ask(31.0) == (Silence.LOST, 31.0)
    assert ask(36.0, deaf=35.0) == (Silence.FINE, 1.0)  # paused: not the admin's silence
    assert ask(38.0, deaf=35.0) == (Silence.WATCH, 3.0)
    assert ask(66.0, deaf=35.0) == (Silence.LOST, 31.0)  # and silent since: lost
    assert ask(25.0, every=10.0) == (Silence.WATCH, 25.0)  # (within 3 beats of 10 s)
    assert ask(15.0, every=10.0) == (Silence.FINE, 15.0) and ask(31.0, every=10.0)[0] \
        is Silence.LOST
    assert ask(45.0, every=20.0)[0] is Silence.WATCH  # past gone_after, within 3 slow beats
    assert ask(61.0, every=20.0)[0] is Silence.LOST
