"""Checks every submission passes before anything is registered: unique ids, no cycles."""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UnknownDependency

if TYPE_CHECKING:
    from .tasks import Task


def refuse_duplicates(new: list[Any], existing: Container[Any], what: str) -> None:
    """ConfigError naming the first id that is in ``existing`` or twice in ``new``. Only
    ``new`` is copied: a submit costs its own size, not the admin's whole history. Looked at
    in passes at C speed first (the usual batch has no duplicate: 100,000 ids took 15-20 ms
    one at a time), then one at a time to name the culprit."""
    fresh = set(new)
    if len(fresh) == len(new) and _disjoint(fresh, existing):
        return
    seen: set[Any] = set()
    for x in new:
        if x in existing:  # (a second run of a job that names its tasks: say why)
            raise ConfigError(f"duplicate {what} {x!r} (the admin has one already, finished "
                              f"or not: it keeps finished ones up to its --keep-finished)")
        if x in seen:
            raise ConfigError(f"duplicate {what} {x!r}")
        seen.add(x)


def _disjoint(fresh: set[Any], existing: Container[Any]) -> bool:
    """No member of ``fresh`` is in ``existing``; the smaller of the two is walked when
    ``existing`` is a map or a set (an admin's known ids)."""
    if isinstance(existing, dict):
        return existing.keys().isdisjoint(fresh)
    if isinstance(existing, set | frozenset):
        return existing.isdisjoint(fresh)
    return not any(x in existing for x in fresh)


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


def refuse_bad_dependencies(tasks: Sequence[Task], known: Container[Any]) -> None:
    """ConfigError naming a task that depends on one neither in ``tasks`` nor ``known``, or
    a cycle among them."""
    dependent = [t for t in tasks if t.depends_on]
    if not dependent:
        return  # the usual batch: nothing more to look at
    new = {t.id for t in tasks}
    for t in dependent:
        unknown = next((d for d in t.depends_on if d not in new and d not in known), None)
        if unknown is not None:
            raise UnknownDependency(f"task {t.id!r} depends on unknown task {unknown!r}")
    refuse_cycles({f"task {t.id!r}": [f"task {d!r}" for d in t.depends_on]
                   for t in dependent})
