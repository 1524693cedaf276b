"""Direct messages to an agent taken for lost are held for it, and delivered when it is back
(Mailbox); those it does not come back for are said undelivered to their senders, counted;
a flood of messages to a name nobody has is a line a minute in each log, not a line each.
Found by a review of messaging: an agent paused 5 s lost 2,299 of 10,000 messages sent to it,
each said in two logs. Pure: the admin's state driven by simulated workers and a clock."""

from __future__ import annotations

from typing import Any

import pytest
from kit import Sim, SimWorker, logs, of, sends, ticked

from ceylon_net import wire
from ceylon_net.core import commands as c
from ceylon_net.core.guard import Tally
from ceylon_net.core.mailbox import Mailbox
from ceylon_net.wire import Kind


def _say(sim: Sim, sender: SimWorker, to: str, text: str) -> tuple[int, list[Any]]:
    """``sender`` sends ``text`` to ``to``: its msg_id, and the admin's commands."""
    header = wire.make_header("default", sender.name, None, to)
    cmds = sim.receive(sender.peer, wire.encode_frames(Kind.DIRECT, header, text.encode()))
    return header.msg_id, cmds


def _forwarded(cmds: list[Any], peer: bytes) -> list[bytes]:
    return [f.payload for f in of(cmds, c.Forward) if f.peer == peer and f.kind == Kind.DIRECT]


def _lost(sim: Sim) -> tuple[SimWorker, SimWorker]:
    """Workers "s" and "r"; "r" falls silent (paused) and is taken for lost."""
    s, r = sim.join("s"), sim.join("r")
    for at in (1.0, 2.0, 3.0, 4.0):
        sim.now = at
        s.heartbeat()
        sim.tick()
    assert "r" in sim.st.members.lost
    return s, r


def _back_with_held(sim: Sim, count: int) -> tuple[SimWorker, SimWorker, list[Any]]:
    """"s" sends ``count`` messages m0.. to "r" while it is taken for lost; "r" comes back:
    s, r back, and the admin's commands for its HELLO."""
    s, _ = _lost(sim)
    for i in range(count):
        _say(sim, s, "r", f"m{i}")
    back = sim.worker("r")
    return s, back, back.hello()


def _no_room(sim: Sim, back: SimWorker, forwards: list[Any]) -> None:
    """These held messages, sent back to ``back``, found its queue full (the edge says so)."""
    for f in forwards:
        sim.carry(sim.st.not_forwarded(back.peer, f.header, sim.now, f.payload, True))


def _pauses(cmds: list[Any]) -> list[float]:
    """How long the admin waits before the next part of held messages goes."""
    return [t.after for t in of(cmds, c.Timer) if t.key[0] == "deliver"]


def test_messages_to_an_agent_taken_for_lost_reach_it_in_order_when_it_is_back():
    sim = Sim()
    s, _ = _lost(sim)
    sent = [_say(sim, s, "r", f"m{i}") for i in range(5)]
    assert all(not sends(cmds, Kind.EVENT) and not logs(cmds, "WARNING") for _, cmds in sent)
    back = sim.worker("r")
    cmds = back.hello()
    welcome = next(i for i, x in enumerate(cmds) if isinstance(x, c.Send)
                   and x.kind == Kind.WELCOME)
    first = next(i for i, x in enumerate(cmds) if isinstance(x, c.Forward))
    assert welcome < first  # (after its WELCOME: what comes before is not taken)
    assert _forwarded(cmds, back.peer) == [f"m{i}".encode() for i in range(5)]
    assert "worker 'r' is back: delivering the 5 message(s) held for it while it was lost" \
        in logs(cmds, "INFO")
    assert _forwarded(back.hello(), back.peer) == []  # (delivered once)
    assert sim.st.members.mailbox.count == 0


def test_senders_are_told_how_many_of_their_messages_an_agent_not_back_did_not_get():
    sim = Sim(lost_wait=30.0)
    s, _ = _lost(sim)
    other = sim.join("other")
    ids = [_say(sim, s, "r", f"m{i}")[0] for i in range(3)]
    last_other = _say(sim, other, "r", "x")[0]
    cmds: list[Any] = []
    for at in range(5, 40, 1):  # (the others beat on: they are not lost)
        sim.now = float(at)
        s.heartbeat()
        other.heartbeat()
        cmds += sim.tick()
    why = "it did not come back within --lost-wait (30 s)"
    assert f"4 message(s) held for worker 'r' not delivered: {why}" \
        in logs(cmds, "WARNING")
    told = [(x.peer, x.msg.data, x.answers) for x in of(cmds, c.Send) if x.kind == Kind.EVENT]
    assert sorted(told) == sorted([
        (s.peer, {"to": "r", "reason": why, "count": 3}, ids[-1]),
        (other.peer, {"to": "r", "reason": why, "count": 1}, last_other)])
    assert sim.st.members.mailbox.count == 0


def test_a_message_finds_no_room_once_the_held_ones_are_at_their_bound():
    sim = Sim()
    s, _ = _lost(sim)
    sim.st.members.mailbox = Mailbox(most=2)
    assert not sends(_say(sim, s, "r", "a")[1], Kind.EVENT)
    assert not sends(_say(sim, s, "r", "b")[1], Kind.EVENT)
    _, cmds = _say(sim, s, "r", "c")  # (told at once, saying why)
    why = "the admin holds as many messages for agents it cannot reach now as it keeps " \
          "(2, 64 MiB)"
    assert sends(cmds, Kind.EVENT, s.peer) == [wire.Event("undelivered", {"to": "r",
                                                                          "reason": why})]
    assert logs(cmds, "WARNING") == [f"message from 's' to 'r' dropped: {why}"]


def test_no_more_are_held_for_one_agent_than_the_admin_can_queue_to_it_at_once():
    """Held for one agent past the ROUTER's queue to it (10,000), what did not fit was
    dropped as they were delivered, in the middle of the sequence (a review: 147 of 50,000);
    held up to half of it, the next are refused at once, said to their sender."""
    from ceylon_net.core.mailbox import MAX_HELD_EACH

    assert MAX_HELD_EACH <= 10_000 // 2
    sim = Sim()
    s, _ = _lost(sim)
    sim.st.members.mailbox = Mailbox(most_each=3)
    for i in range(3):
        assert not sends(_say(sim, s, "r", f"m{i}")[1], Kind.EVENT)
    _, cmds = _say(sim, s, "r", "m3")
    assert sends(cmds, Kind.EVENT, s.peer) == [wire.Event("undelivered", {
        "to": "r", "reason": "3 messages wait to go to it already (held for it)"})]
    assert _forwarded(sim.worker("r").hello(), b"r/3") == [b"m0", b"m1", b"m2"]


def test_a_flood_of_messages_to_a_name_nobody_has_is_a_line_a_minute_in_the_log():
    sim = Sim()
    s = sim.join("s")
    said: list[str] = []
    for i in range(50):
        sim.now = 10.0 + i
        _, cmds = _say(sim, s, "nobody", "x")
        assert len(sends(cmds, Kind.EVENT, s.peer)) == 1  # (each sender told of each)
        s.heartbeat()
        said += logs(cmds, "WARNING")
    sim.now = 70.0
    said += logs(_say(sim, s, "nobody", "x")[1], "WARNING")
    assert said == ["message from 's' to 'nobody' dropped: no connected agent of that name",
                    "message from 's' to 'nobody' dropped: no connected agent of that name "
                    "(49 more since it was last said)"]


def test_what_a_flood_that_stopped_left_unsaid_is_said_a_minute_on():
    """The count held back was said only with the next such message, a minute on: a flood
    that stopped never had its count said (a review: one line for some 900)."""
    sim = Sim()
    s = sim.join("s")
    said: list[str] = []
    for i in range(30):
        sim.now = 10.0 + i / 10
        said += logs(_say(sim, s, "nobody", "x")[1], "WARNING")
    for at in range(14, 75):
        sim.now = float(at)
        s.heartbeat()
        said += logs(sim.tick(), "WARNING")
    assert said == ["message from 's' to 'nobody' dropped: no connected agent of that name",
                    "29 more message(s) from 's' to 'nobody' dropped in the last minute: no "
                    "connected agent of that name"]


@pytest.mark.parametrize("counts, expected", [
    ([1, 1, 1], [1, 0, 0]), ([3, 2], [3, 0])])
def test_a_tally_says_the_first_then_how_many_came_once_its_time_is_up(counts, expected):
    tally = Tally(every=60.0)
    assert [tally.say("k", float(i), n) for i, n in enumerate(counts)] == expected
    assert tally.say("k", 61.0) == sum(counts) - counts[0] + 1
    assert tally.say("other", 61.0) == 1  # (each key its own)


def test_a_tally_says_when_due_what_it_held_back():
    tally = Tally(every=60.0)
    assert [tally.say("k", t) for t in (0.0, 1.0, 2.0)] == [1, 0, 0]
    assert tally.due(59.0) == [] and tally.due(60.0) == [("k", 2)]
    assert tally.due(200.0) == []  # (said: nothing more held back)
    assert tally.say("k", 201.0) == 1


def test_a_tally_follows_at_most_its_number_of_keys():
    tally = Tally(most=2)
    assert [tally.say(k, 0.0) for k in "abc"] == [1, 1, 1]
    assert tally.say("a", 1.0) == 1  # (forgotten, the oldest: said again, as new)
    assert tally.say("c", 1.0) == 0


def test_held_messages_its_queue_had_no_room_for_are_held_again_in_their_place():
    """A paused agent keeps its connection, and what was queued to it before it was taken
    for lost: delivered back all at once, 3,259 of 5,000 held messages found its queue full
    and were dropped, said delivered (a review). What finds no room is held again, in its
    place, and tried again shortly; a message sent meanwhile waits behind them (one order)."""
    sim = Sim()
    s, back, cmds = _back_with_held(sim, 6)
    out = [f for f in of(cmds, c.Forward) if f.peer == back.peer]
    assert [f.payload for f in out] == [f"m{i}".encode() for i in range(6)]
    # m3 finds no room in its queue; m4 and m5, in the same round, are not tried after it
    # (the edge asks forward_now: sent as room came back, they would overtake it)
    _no_room(sim, back, out[3:4])
    assert [sim.st.forward_now(f.header) for f in out[4:]] == [False, False]
    _no_room(sim, back, out[4:])
    _, cmds = _say(sim, s, "r", "m6")
    assert _forwarded(cmds, back.peer) == [] and not sends(cmds, Kind.EVENT)
    # (its queue was full: one is tried first, a longer pause after it; it goes, and the
    # rest follow at the usual pace)
    cmds = sim.fire("deliver")
    assert _forwarded(cmds, back.peer) == [b"m3"]
    assert _pauses(cmds) == [0.1]
    cmds = sim.fire("deliver")
    assert _forwarded(cmds, back.peer) == [b"m4", b"m5", b"m6"]
    assert sim.st.forward_now(out[0].header)
    assert sim.st.members.mailbox.count == 0
    assert _forwarded(_say(sim, s, "r", "m7")[1], back.peer) == [b"m7"]  # (straight on now)


def test_held_messages_go_back_a_part_at_a_time(monkeypatch):
    from ceylon_net.core import membership

    monkeypatch.setattr(membership, "DELIVER_CHUNK", 2)
    sim = Sim()
    _, back, cmds = _back_with_held(sim, 5)
    parts, pauses = [_forwarded(cmds, back.peer)], []
    while sim.st.members.mailbox.count:
        pauses += _pauses(cmds)
        cmds = sim.fire("deliver")
        parts.append(_forwarded(cmds, back.peer))
    assert parts == [[b"m0", b"m1"], [b"m2", b"m3"], [b"m4"]]
    # (the next part in the next round while its queue takes them: 0.1 s a part held new
    # messages to it behind them, past 5,000 refused, though its queue had room: a review)
    assert pauses == [0.0, 0.0]


def test_an_agent_that_does_not_read_is_tried_one_message_at_a_time_ever_more_slowly():
    """Its queue full for good (heartbeating, never reading): a part of 500 held messages
    tried every 0.1 s for ever; one now, the pause doubling up to DELIVER_SLOWEST."""
    from ceylon_net.core.mailbox import DELIVER_SLOWEST

    sim = Sim()
    _, back, cmds = _back_with_held(sim, 20)
    pauses, tried = [], []
    for _ in range(7):
        out = [f for f in of(cmds, c.Forward) if f.peer == back.peer]
        tried += [f.payload for f in out]
        _no_room(sim, back, out)
        cmds = sim.fire("deliver")
        pauses += _pauses(cmds)
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, DELIVER_SLOWEST, DELIVER_SLOWEST]
    assert tried[20:] == [b"m0"] * 6  # (after the first part: one a time, the first)
    assert sim.st.members.mailbox.count == 20 - 1  # (m0 in the last try: on its way)


def test_messages_held_for_an_agent_that_leaves_are_said_undelivered_to_their_senders():
    """Back, then gone with a goodbye before all went: they were held for ever."""
    sim = Sim()
    s, back, cmds = _back_with_held(sim, 3)
    _no_room(sim, back, [f for f in of(cmds, c.Forward) if f.peer == back.peer])  # (none fit)
    cmds = back.say(Kind.BYE)
    assert sends(cmds, Kind.EVENT, s.peer) == [wire.Event("undelivered", {
        "to": "r", "reason": "it left", "count": 3})]
    assert sim.st.members.mailbox.count == 0


def _unsent(sim: Sim, to: SimWorker, cmds: list[Any]) -> list[Any]:
    """The edge could not send these direct messages to ``to`` (its connection died, not
    noticed yet; or its queue at the admin is full): the admin's commands for it."""
    out = []
    for f in of(cmds, c.Forward):
        if f.peer == to.peer:
            out += sim.carry(sim.st.not_forwarded(to.peer, f.header, sim.now, f.payload, f.held))
    return out


def test_a_message_that_cannot_be_sent_to_an_agent_still_registered_is_held_for_it():
    """Its connection dead and not noticed yet (a crash, a host cut off), or its queue full
    (paused before it is taken for lost): the sender was told at once, where the same
    message a moment later, the agent taken for lost, would have been held. Held now, and
    tried again, one first, the rest behind it in order once that one goes."""
    sim = Sim()
    s, r = sim.join("s"), sim.join("r")
    _, cmds = _say(sim, s, "r", "m0")
    cmds = _unsent(sim, r, cmds)
    assert not sends(cmds, Kind.EVENT) and not logs(cmds, "WARNING")
    assert _pauses(cmds) == [0.1]
    for i in (1, 2):  # (sent meanwhile: behind it, not past it)
        _, cmds = _say(sim, s, "r", f"m{i}")
        assert _forwarded(cmds, r.peer) == [] and not sends(cmds, Kind.EVENT)
    cmds = sim.fire("deliver")
    assert _forwarded(cmds, r.peer) == [b"m0"]
    cmds = _unsent(sim, r, cmds)  # (no room yet)
    cmds = sim.fire("deliver")
    assert _forwarded(cmds, r.peer) == [b"m0"]  # (it goes now)
    assert _forwarded(sim.fire("deliver"), r.peer) == [b"m1", b"m2"]
    assert sim.st.members.mailbox.count == 0
    assert not sends(sim.every, Kind.EVENT)
    assert _forwarded(_say(sim, s, "r", "m3")[1], r.peer) == [b"m3"]  # (straight on again)


def test_messages_held_for_an_agent_whose_connection_died_are_said_undelivered_if_it_is_not_back():
    """Held as it crashed; it is taken for lost and does not come back within --lost-wait:
    its senders are told then, counted, as for those sent once it was taken for lost."""
    sim = Sim(lost_wait=10.0)
    s, r = sim.join("s"), sim.join("r")
    ids = []
    for i in range(3):
        msg_id, cmds = _say(sim, s, "r", f"m{i}")
        _unsent(sim, r, cmds)
        ids.append(msg_id)
    said = ticked(sim, [s], until=30.0)
    why = "it did not come back within --lost-wait (10 s)"
    assert f"3 message(s) held for worker 'r' not delivered: {why}" in said
    assert sends(sim.every, Kind.EVENT, s.peer) == [wire.Event("undelivered", {
        "to": "r", "reason": why, "count": 3})]


def test_a_message_for_an_agent_that_left_meanwhile_is_said_undelivered_at_once():
    sim = Sim()
    s, r = sim.join("s"), sim.join("r")
    _, forward = _say(sim, s, "r", "m0")
    r.say(Kind.BYE)
    cmds = _unsent(sim, r, forward)
    why = "not reachable (gone, or not reading: its queue is full)"
    assert sends(cmds, Kind.EVENT, s.peer) == [wire.Event("undelivered", {"to": "r",
                                                                          "reason": why})]
    assert sim.st.members.mailbox.count == 0


def test_a_sender_lost_itself_as_the_wait_for_its_receiver_runs_out_is_told_when_back():
    """Its notice went to registered senders only: one taken for lost then (paused too)
    never heard its messages were not delivered."""
    sim = Sim(lost_wait=10.0)
    s, _ = _lost(sim)  # ("r" lost at 4, last heard at 0)
    msg_id, _ = _say(sim, s, "r", "m0")
    said = ticked(sim, [], until=12.0)  # ("s" silent too: lost; "r" not waited for at 10)
    assert "s" in sim.st.members.lost and "r" not in sim.st.members.lost
    assert "1 message(s) held for worker 'r' not delivered: it did not come back within " \
           "--lost-wait (10 s)" in said
    back = sim.worker("s")
    cmds = back.hello()
    welcome = next(i for i, x in enumerate(cmds) if isinstance(x, c.Send)
                   and x.kind == Kind.WELCOME)
    told = [(i, x) for i, x in enumerate(cmds) if isinstance(x, c.Send)
            and x.kind == Kind.EVENT and x.peer == back.peer]
    assert [(x.msg, x.answers) for _, x in told] == [(wire.Event("undelivered", {
        "to": "r", "reason": "it did not come back within --lost-wait (10 s)", "count": 1}),
        msg_id)]
    assert told[0][0] > welcome
    assert not sends(back.hello(), Kind.EVENT)  # (told once)
    assert sim.st.members.owed == {}


def test_a_held_message_its_receiver_had_no_room_for_as_it_left_is_said_undelivered():
    """Its goodbye came in the round its held messages went back (all of them taken: none
    left to say undelivered), and they found its queue full: held again under a name
    nobody has, they waited for ever, their sender never told (a review, by reading)."""
    sim = Sim()
    s, back, cmds = _back_with_held(sim, 2)
    out = [f for f in of(cmds, c.Forward) if f.peer == back.peer]
    back.say(Kind.BYE)
    told: list[Any] = []
    for f in out:
        told += sends(sim.carry(sim.st.not_forwarded(back.peer, f.header, sim.now, f.payload,
                                                     True)), Kind.EVENT, s.peer)
    assert told == [wire.Event("undelivered", {"to": "r", "reason": "it left"})] * 2
    assert sim.st.members.mailbox.count == 0


def test_the_first_message_held_for_a_registered_agent_is_held_to_the_bounds_too():
    sim = Sim()
    s, r = sim.join("s"), sim.join("r")
    sim.st.members.mailbox = Mailbox(most_bytes=4)
    _, cmds = _say(sim, s, "r", "m0-too-big")
    cmds = _unsent(sim, r, cmds)
    why = "the admin holds as many messages for agents it cannot reach now as it keeps " \
          "(100,000, 0 MiB)"
    assert sends(cmds, Kind.EVENT, s.peer) == [wire.Event("undelivered", {"to": "r",
                                                                          "reason": why})]
    assert sim.st.members.mailbox.count == 0
