"""Checks every submission passes before anything is registered: unique ids, no cycles."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from ..errors import ConfigError


def refuse_duplicates(new: list[Any], existing: Container[Any], what: str) -> None:
    """ConfigError naming the first id that is in ``existing`` or twice in ``new``. Only
    ``new`` is copied: a submit costs its own size, not the admin's whole history."""
    seen: set[Any] = set()
    for x in new:
        if x in seen or x in existing:
            raise ConfigError(f"duplicate {what} {x!r}")
        seen.add(x)


def refuse_cycles(graph: dict[str, list[str]]) -> None:
    """ConfigError naming a cycle: "dependency cycle: group 'a' -> group 'b' -> group 'a'".
    Nodes outside ``graph`` (registered earlier) cannot lead back into it."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(graph[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                node = path.pop()
                done.add(node)
                on_path.discard(node)
                continue
            if nxt in on_path:
                cycle = [*path[path.index(nxt):], nxt]
                raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}")
            if nxt in graph and nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(graph[nxt]))
