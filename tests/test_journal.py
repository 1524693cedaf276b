"""The journal on its own: what goes in comes back after a crash (no sockets)."""

from ceylon_net import AtLeast, GoalStatus, Task, TaskGroupGoal, TaskManager, TaskMessage
from ceylon_net.core.board import TaskBoard
from ceylon_net.core.restore import restore
from ceylon_net.core.scheduler import WorkerSlot
from ceylon_net.core.tasks import TaskResult, TaskStatus
from ceylon_net.edge.journal import Journal, record_added, record_changes


def _groups():
    first = TaskManager.create_task_group(
        "first", "", [TaskMessage(f"a{i}", f"a{i}", "", 0.0) for i in range(3)],
        goal=TaskGroupGoal("two of three", "", AtLeast(2), "ok", "no"), task_id="first")
    second = TaskManager.create_task_group(
        "second", "", [TaskMessage("b0", "b0", "", 0.0)], depends_on=["first"],
        task_id="second")
    return [first, second]


def _live(path):
    journal = Journal(path, "default")
    board, manager = TaskBoard(), TaskManager()
    board.add_worker(WorkerSlot("w", 10, capacity=10))
    groups = _groups()
    plain = [Task("p0", "plain"), Task("p1", "plain after p0", depends_on=["p0"])]
    group_tasks, gates = manager.register(groups)
    everything = [*plain, *group_tasks]
    board.add(everything, gates)
    record_added(journal, board, manager, everything, groups)
    return journal, board, manager


def test_a_crash_mid_run_comes_back_as_it_was(tmp_path):
    path = tmp_path / "state.db"
    journal, board, manager = _live(path)
    plan = board.plan()
    assert sorted(a.task.id for a in plan["w"]) == ["a0", "a1", "a2", "p0"]
    for tid in ("a0", "a1", "p0"):
        board.record(TaskResult(tid, "w", True, attempt=1))
    manager.settle(board)
    record_changes(journal, board)
    journal.db.close()  # the crash: no close(), nothing else written

    journal2 = Journal(path, "default")
    board2, manager2 = TaskBoard(), TaskManager()
    assert restore(board2, manager2, journal2.tasks(), journal2.groups())
    status = {t: r.status for t, r in board2.records.items()}
    assert status == {"p0": TaskStatus.COMPLETED, "p1": TaskStatus.PENDING,
                      "a0": TaskStatus.COMPLETED, "a1": TaskStatus.COMPLETED,
                      "a2": TaskStatus.RUNNING, "b0": TaskStatus.PENDING}
    assert board2.queued() == ["p1"]  # its dependency had completed
    assert board2.orphans() == {"w": {"a2"}}  # waits for its worker
    first = manager2.task_groups["first"]
    assert (first.completed, first.goal.status) == (2, GoalStatus.ACHIEVED)
    assert "b0" in board2.waiting  # 'second' still waits for 'first' to finish
    board2.add_worker(WorkerSlot("w", 10, capacity=10))
    board2.reclaim("w", {"a2": 1})
    board2.record(TaskResult("a2", "w", True, attempt=1))
    manager2.settle(board2)
    assert "b0" in board2.queued()  # 'first' completed: 'second' goes
    assert board2.report().success_rate == 1.0
