"""HELLOs from a hostile or broken peer cost the admin's log and its other peers little: a
refused one is logged once a minute per sender, a malformed one is a bad frame (counted,
logged once, its sender cut off past the limit), and a role or handler name is bounded as a
worker's name is. Each failed on the code before (a review of hostile peers: 78-139 log
lines a second from one peer's refused HELLOs, none counted; a 1 MB role in a log line)."""

from __future__ import annotations

from kit import Sim, frames, of, sends

from ceylon_net.core import commands as c
from ceylon_net.core.membership import MAX_NAME
from ceylon_net.wire import PROTOCOL_VERSION, Hello, Kind

PEER = b"hostile/1"


def _logged(cmds: list) -> list[str]:
    return [x.message for x in of(cmds, c.Log) if x.level == "WARNING"]


def test_hellos_refused_again_and_again_are_logged_once_a_minute_per_sender():
    sim = Sim()
    said = []
    for i in range(200):
        sim.now = i / 100
        cmds = sim.receive(PEER, frames(Kind.HELLO, Hello("w", "default", 11, 1), "w"))
        assert [r.reason for r in sends(cmds, Kind.REJECT, PEER)] == [
            "worker 'w' rejected: skill must be 0-10 and capacity 1-10000"]
        said += _logged(cmds)
    assert said == [f"rejected {PEER!r}: worker 'w' rejected: skill must be 0-10 and "
                    f"capacity 1-10000 (more refusals of it within a minute: not logged)"]
    sim.now = 61.0  # (a minute on: said again)
    assert len(_logged(sim.receive(PEER, frames(Kind.HELLO, Hello("w", "default", 11, 1),
                                                "w")))) == 1


def test_a_malformed_hello_is_a_bad_frame_counted_and_its_sender_cut_off():
    sim = Sim()
    bad = frames(Kind.HELLO, None, "w")  # (no payload: not a HELLO)
    said = []
    for i in range(150):
        sim.now = i / 100
        said += _logged(sim.receive(PEER, bad))
    assert sim.st.stats.bad_frames == 150
    assert said[0].startswith(f"dropped a bad frame from {PEER!r} (127.0.0.1): bad HELLO: ")
    assert any("bad frames in 10 s: disconnected" in line for line in said), said
    assert len(said) == 2, said


def test_a_workers_role_and_handler_names_are_bounded_as_its_name_is():
    sim = Sim()
    for role, handlers in (("r" * (MAX_NAME + 1), []), ("default", ["h" * (MAX_NAME + 1)])):
        cmds = sim.receive(PEER, frames(Kind.HELLO, Hello("w", role, 5, 1, handlers=handlers), "w"))
        assert [r.reason for r in sends(cmds, Kind.REJECT, PEER)] == [
            f"worker 'w': its role and handler names must be at most {MAX_NAME} characters"]
        assert all(len(line) < 400 for line in _logged(cmds))
    assert sim.st.members.registry.get(PEER) is None


def test_a_client_request_of_another_protocol_version_is_refused_saying_so():
    """Only HELLO looked at the version: a STATUS of protocol 2**64-1 was answered (a review
    of hostile peers; a client of another version would misread the answer)."""
    sim = Sim()
    cmds = sim.receive(b"client", frames(Kind.STATUS, None, "client", version=2**64 - 1))
    assert sends(cmds, Kind.STATUS, b"client") == []
    assert [r.reason for r in sends(cmds, Kind.REJECT, b"client")] == [
        f"protocol version {2**64 - 1} != admin's {PROTOCOL_VERSION}"]
