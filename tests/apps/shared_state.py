"""Handlers for tests/test_review_handlers.py: one that returns a module-level list it goes
on appending to (a running tally, a cache: a reference to state the handler keeps)."""

from ceylon_net import handler

SEEN: list[int] = []


@handler("seen_so_far")
def seen_so_far(x: int) -> list[int]:
    SEEN.append(x)
    return SEEN  # (what it held when this call returned: that is this task's value)


NOTES: dict[str, object] = {}


@handler("note")
def note(key: str, as_set: bool = False) -> dict[str, object]:
    NOTES[key] = {key} if as_set else key  # (a set: msgpack cannot carry it)
    return NOTES
