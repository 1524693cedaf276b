"""Which cancelled tasks did not run because of a failure upstream (ceylon_net.core.upstream):
what tells ``ceylon-submit --wait`` that a batch whose tasks were all cancelled for a task of an
earlier batch that failed did not succeed. Driven on the admin's pure state."""

from __future__ import annotations

import pytest
from kit import Sim, noop

from ceylon_net import AtLeast, OnGoal, TaskGroupGoal, TaskManager, TaskMessage

pytestmark = pytest.mark.timeout(30)


def group(name: str, n: int, **kw) -> object:
    tasks = [TaskMessage(f"{name}{i}", f"{name} {i}", f"task {i}", 0.0) for i in range(n)]
    return TaskManager.create_task_group(name, "", tasks, **kw)


def test_tasks_cancelled_for_a_failed_dependency_through_a_chain_are_after_a_failure():
    sim = Sim()
    w = sim.join("w", capacity=4)
    sim.submit(noop("a"), noop("x"))
    sim.submit(noop("b", depends_on=["a"]), noop("c", depends_on=["b"]),  # a later batch
               noop("y", depends_on=["x"]), noop("z", depends_on=["y"]))
    sim.cancel("x")  # the user's own: y and z are cancelled for it, no failure
    w.finish("a", success=False)
    report = sim.st.report()
    assert report.cancelled == {"x": "cancelled by request", "y": "dependency 'x' was cancelled",
                                "z": "dependency 'y' was cancelled",
                                "b": "dependency 'a' failed",
                                "c": "dependency 'b' was cancelled (for a failure upstream)"}
    assert report.after_failure == ["b", "c"]
    assert sim.st.report(only=["c", "z"]).after_failure == ["c"]  # (a batch's report)
    assert report.to_json()["after_failure"] == ["b", "c"]
    assert type(report).from_json(report.to_json()).after_failure == ["b", "c"]


def test_a_user_s_cancel_of_a_task_whose_dependency_failed_later_is_no_failure_of_it():
    sim = Sim()
    w = sim.join("w", capacity=4)
    sim.submit(noop("a"), noop("b", depends_on=["a"]))
    sim.cancel("b", reason="not wanted")
    w.finish("a", success=False)
    assert sim.st.report().after_failure == []


def test_groups_cancelled_behind_a_failed_group_are_after_a_failure_not_behind_a_goal():
    sim = Sim()
    w = sim.join("w", capacity=1)  # (one at a time: the rest of a group waits here)
    first, second = group("first", 1), group("second", 1, depends_on=["first"])
    third = group("third", 1, depends_on=["second"])
    sim.carry(sim.st.submit((), [first, second, third], now=sim.now))
    w.finish("first0", success=False)  # first fails: second and third are cancelled
    enough = group("enough", 3, goal=TaskGroupGoal("one", "", AtLeast(1), "", ""),
                   on_goal=OnGoal.CANCEL_REST)
    sim.carry(sim.st.submit((), [enough], now=sim.now))
    w.finish("enough0")  # its goal met: the rest cancelled, for no failure
    report = sim.st.report()
    assert set(report.cancelled) == {"second0", "third0", "enough1", "enough2"}
    assert report.after_failure == ["second0", "third0"]
