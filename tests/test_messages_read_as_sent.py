"""A message whose field holds an object of another class than its annotation is refused
where it is sent. Before (a review of the agents' API), send() and broadcast_data() took it
and the receivers read it as the annotation's class from whichever keys matched, the rest
lost without a word: Other(5, secret="important") in a Leaf field arrived as Leaf(v=5)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from ceylon_net import Worker, message, wire
from ceylon_net.errors import LocalProtocolError


@message(name="tests.sent.Leaf")
@dataclass
class Leaf:
    v: int = 0
    note: str = ""


@message(name="tests.sent.Other")
@dataclass
class Other:
    v: int = 0
    secret: str = "unset"


@message(name="tests.sent.Holder")
@dataclass
class Holder:
    leaf: Leaf | None = None
    leaves: list[Leaf] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


@message(name="tests.sent.Sprout")
@dataclass
class Sprout(Leaf):  # (a subclass: its own field would be lost)
    extra: int = 1


def _sent(msg: Holder) -> Holder:
    _, payload = Worker._outgoing(msg, 1 << 20, wire.DEFAULT_LIMITS)
    return wire.unpack(Holder, payload)


@pytest.mark.parametrize(("sent", "field_", "arrives"), [
    (Holder(leaf=Other(5, "important")), "leaf", "Leaf(v=5, note='')"),  # type: ignore[arg-type]
    (Holder(leaves=[Leaf(1), Other(7, "important")]), "leaves",  # type: ignore[list-item]
     "[Leaf(v=1, note=''), Leaf(v=7, note='')]"),
    (Holder(leaf=Holder(leaf=Leaf(1, "inner"))), "leaf", "Leaf(v=0, note='')"),  # type: ignore
    (Holder(leaf=Sprout(2, "x", 9)), "leaf", "Leaf(v=2, note='x')"),
], ids=["other-in-a-field", "other-in-a-list", "holder-in-a-field", "subclass"])
def test_an_object_of_another_class_in_a_typed_field_is_refused_when_sent(sent, field_, arrives):
    with pytest.raises(LocalProtocolError, match=re.escape(
            f"the receivers would not read this tests.sent.Holder as sent: its field "
            f"{field_!r} would arrive as {arrives}, sent as ")):
        _sent(sent)


def test_messages_of_the_declared_types_arrive_as_sent():
    for msg in (Holder(), Holder(Leaf(1, "a"), [Leaf(2), Leaf(3, "c")], {"a": 1.5}),
                Holder(scores={"nan": float("nan"), "one": 1.0})):
        got = _sent(msg)
        assert repr(got) == repr(msg)  # (nan != nan)
