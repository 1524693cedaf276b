"""The dashboard's admission policy (ceylon_net.core.places), fed events with a fake clock:
a burst waits for places, idle connections give theirs up, the waiting room is bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ceylon_net.core.places import Places, Verdict


def places(n: int = 2, waiting: int = 2) -> Places:
    return Places(n, waiting, grace=0.1, patience=10.0)


def test_a_burst_beyond_the_places_waits_and_each_gets_a_freed_place_in_turn():
    p = places()
    assert p.ask("a", 0.0) == Verdict(served=True)
    assert p.ask("b", 0.0) == Verdict(served=True)
    p.read("a")
    p.read("b")  # (both sent their request: answering)
    assert p.ask("c", 0.0) == Verdict(until=10.0)  # no reader to evict: until its patience
    assert p.leave("a") is True  # answered: a place frees
    assert p.ask("c", 0.01) == Verdict(served=True)
    assert p.leave("c") is True and p.leave("c") is False  # (ended once)


def test_a_freed_place_goes_to_one_waiting_before_a_newcomer():
    p = places(n=1)
    p.ask("a", 0.0)
    p.read("a")
    assert p.ask("w", 0.0) == Verdict(until=10.0)
    p.leave("a")  # (its place frees: "w" is woken, and has not asked yet)
    assert p.ask("newcomer", 0.01) == Verdict(until=10.01)
    assert p.ask("w", 0.02) == Verdict(served=True)


def test_a_connection_that_sends_no_request_gives_its_place_up_after_the_grace_only():
    p = places(n=1)
    p.ask("idle", 0.0)
    assert p.ask("real", 0.05) == Verdict(until=0.1)  # wakes when idle's grace ends
    assert p.ask("real", 0.1) == Verdict(served=True, evict=("idle",))
    assert p.leave("idle") is False  # (its place went to "real" already)
    p.read("real")
    assert p.ask("late", 5.0) == Verdict(until=15.0)  # a request read: never evicted


def test_the_longest_waiting_gives_way_to_a_newcomer_when_the_room_is_full():
    p = places(n=1, waiting=2)
    p.ask("served", 0.0)
    p.read("served")
    p.ask("w1", 0.0)
    p.ask("w2", 0.1)
    assert p.ask("w3", 0.2) == Verdict(until=10.2, bumped="w1")
    assert p.ask("w1", 0.2) == Verdict(refused=True)  # woken, it is told 503
    assert list(p.waiters) == ["w2", "w3"]


def test_without_a_waiting_room_a_newcomer_beyond_the_places_is_refused():
    p = places(n=1, waiting=0)
    p.ask("served", 0.0)
    assert p.ask("next", 0.0) == Verdict(refused=True)


def test_idle_connections_past_their_grace_make_room_for_those_waiting_and_a_newcomer():
    """Three places held by connections that sent nothing, one waiting: a newcomer once
    their grace is over evicts two, one place for the one waiting, one for itself (it was
    told to wait until the grace had ended, a time already gone: hypothesis found it)."""
    p = places(n=3, waiting=2)
    for key in ("a", "b", "c"):
        p.ask(key, 0.0)
    assert p.ask("w", 0.0) == Verdict(until=0.1)
    assert p.ask("new", 0.25) == Verdict(served=True, evict=("a", "b"))
    assert p.ask("w", 0.25) == Verdict(served=True)


def test_a_waiter_out_of_patience_is_refused():
    p = places(n=1)
    p.ask("served", 0.0)
    p.read("served")
    assert p.ask("w", 1.0) == Verdict(until=11.0)
    assert p.ask("w", 11.0) == Verdict(refused=True)
    assert not p.waiters


@given(st.lists(st.tuples(st.sampled_from(["ask", "read", "leave"]), st.integers(0, 7),
                          st.floats(0, 0.3)), max_size=60))
def test_places_and_waiting_room_are_never_exceeded_and_each_key_is_in_one_of_them(events):
    p, now = places(n=3, waiting=2), 0.0
    for op, key, step in events:
        now += step
        if op == "ask":
            newcomer = key not in p.waiters and key not in p.served
            verdict = p.ask(key, now)
            if verdict.served and newcomer:  # (no one waiting was passed over)
                assert len(p.served) + len(p.waiters) <= 3
            assert not (verdict.served and verdict.refused)
            assert verdict.served or verdict.refused or verdict.until > now  # (no busy loop)
            assert key not in verdict.evict and verdict.bumped != key
        elif op == "read":
            p.read(key)
        else:
            p.leave(key)
        assert len(p.served) <= 3 and len(p.waiters) <= 2
        assert not set(p.served) & set(p.waiters)
        assert set(p.reading) <= p.served  # (only one that has a place may be evicted)
        assert p.bumped.isdisjoint(p.waiters)
