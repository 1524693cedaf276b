"""The checks every submission passes (ceylon_net/core/checks.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ceylon_net.core.checks import refuse_duplicates
from ceylon_net.errors import ConfigError

ids = st.one_of(st.integers(-5, 30), st.sampled_from(["a", "b", "c", "d"]))


def first_duplicate(new: list[Any], existing: Any) -> Any:
    """The id the check must name: the first in ``new`` that is known or seen before it."""
    seen: set[Any] = set()
    for x in new:
        if x in seen or x in existing:
            return x
        seen.add(x)
    return None


@given(st.lists(ids, max_size=40), st.lists(ids, max_size=40),
       st.sampled_from([dict.fromkeys, set, frozenset, tuple]))
def test_a_duplicate_id_is_named_as_the_first_one_met_and_a_batch_without_one_passes(
        new: list[Any], known: list[Any], container: Any) -> None:
    existing = container(known)
    culprit = first_duplicate(new, existing)
    if culprit is None:
        refuse_duplicates(new, existing, "task id")
        return
    with pytest.raises(ConfigError) as err:
        refuse_duplicates(new, existing, "task id")
    known_why = " (the admin has one already, finished or not: it keeps finished ones " \
        "up to its --keep-finished)" if culprit in existing else ""
    assert str(err.value) == f"duplicate task id {culprit!r}{known_why}"


def test_an_id_twice_in_a_large_batch_is_found_among_many_known():
    known = dict.fromkeys(range(100_000, 300_000))
    new = [*range(50_000), 49_999]
    with pytest.raises(ConfigError, match="duplicate task id 49999"):
        refuse_duplicates(new, known, "task id")
    with pytest.raises(ConfigError, match="duplicate task id 100000"):
        refuse_duplicates([*range(50_000), 100_000], known, "task id")
    refuse_duplicates(list(range(50_000)), known, "task id")
