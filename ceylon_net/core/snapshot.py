"""What the admin shows of itself, as plain msgpack/JSON-able data read off its state:
``ceylon-status``'s snapshot, the metrics endpoint's figures, the progress display's counts."""

from __future__ import annotations

from typing import Any, Protocol

from .board import TaskBoard
from .broadcasts import BroadcastLog
from .groups import TaskManager
from .membership import Membership
from .stats import AdminStats
from .tasks import TaskId, TaskStatus
from .workers import WorkerRecord, WorkerState

QUEUED_SHOWN = 100
GROUPS_SHOWN = 200  # groups listed in a status: those under way first, then the latest


class AdminState(Protocol):
    """What these views read (ceylon_net.core.admin_state.AdminState has it)."""

    name: str
    workspace: str
    port: int
    board: TaskBoard
    members: Membership
    task_manager: TaskManager
    stats: AdminStats
    unassigned: dict[TaskId, str]
    broadcasts: BroadcastLog


def counts(st: AdminState) -> dict[str, int]:
    board, s = st.board, st.stats
    # Running: on a worker, within its slots; queued: in the admin's queue or a worker's.
    held = board.queued_on_workers
    running = board.running - held
    total, done = board.total, board.total - board.open
    # Done: succeeded, failed (a failed run, or lost with its workers too often), cancelled,
    # unassigned (given up: no worker could take it): each done task in one of them.
    failed = board.failed_runs  # (the dead among them)
    unassigned = len(st.unassigned) + board.forgotten.unassigned
    return {"total": total, "done": done, "forgotten": board.forgotten.tasks,
            "succeeded": board.succeeded, "failed": failed,
            "cancelled": done - board.succeeded - failed - unassigned, "running": running,
            "queued": len(board.scheduler) + held, "queued_on_workers": held,
            "waiting": len(board.waiting), "unassigned": unassigned,
            "broadcasts": st.broadcasts.seq,
            "broadcasts_lost": s.broadcasts_lost,
            "broadcasts_unconfirmed": s.broadcasts_unconfirmed, "stolen": s.stolen,
            "awaiting_workers": st.awaited}


def _worker(st: AdminState, rec: WorkerRecord) -> dict[str, Any]:
    """A worker as status and dashboard show it: who it is, what it runs (as many of its
    tasks as it has slots, first sent first), what waits in its queue (pipelining), its
    slots held by handlers past their tasks, its state, whether it runs a task alone or is
    held for one (ceylon_net.core.scheduler)."""
    d = rec.detail
    slot = st.board.scheduler.workers.get(d.name)
    queued = slot.queued if slot is not None else 0
    return {"name": d.name, "role": d.role, "skill": d.skill, "host": d.host,
            "running": slot.running - queued if slot is not None else 0, "queued": queued,
            "capacity": d.capacity, "stuck": rec.stuck,
            "state": slot.state.value if slot is not None else WorkerState.GONE.value,
            # runs a task on its last attempt alone; held (drains) for one waiting to
            "alone": slot is not None and slot.alone,
            "held": d.name in st.board.scheduler.held}


def snapshot(st: AdminState) -> dict[str, Any]:
    """Workers, groups, queued tasks and counts (what ceylon-status prints)."""
    board = st.board
    workers = []
    for rec in st.members.registry.by_peer.values():
        workers.append({**_worker(st, rec), "hears_broadcasts": rec.heard is not None,
                        "broadcasts_delivered": rec.delivered})
    queued = []
    for task_id in board.queued()[:QUEUED_SHOWN]:
        t = board.records[task_id].task
        queued.append({"id": t.id, "description": t.description, "difficulty": t.difficulty,
                       "role": t.required_role, "priority": t.priority})
    return {"admin": st.name, "workspace": st.workspace,
            "ports": {"router": st.port, "pub": st.members.pub_port},
            "heartbeat": st.settings.heartbeat,
            "epoch": st.members.epoch,  # (this admin process: a client tells a restart by it)
            # (what it tells a client of a task names the submission it came in: see
            # wire.Submission.sid; one that says nothing of a task of a client's is not)
            "names_submissions": True,
            # (a client sizes what it submits by it: the admin drops a larger message unread)
            "max_message_bytes": st.settings.max_message_bytes,
            "workers": workers, "groups": st.task_manager.summaries(GROUPS_SHOWN),
            "groups_total": len(st.task_manager.task_groups), "queued": queued,
            "counts": counts(st)}


def metrics(st: AdminState) -> dict[str, Any]:
    """Figures for the Prometheus endpoint. Each task in one state of ``tasks``, each worker
    in one of ``workers`` (their sums are the totals)."""
    board, s = st.board, st.stats
    tasks = dict.fromkeys((status.value for status in TaskStatus), 0)
    for rec in board.records.values():
        tasks[rec.status.value] += 1
    gone = board.forgotten  # (finished batches forgotten: counted still)
    tasks["completed"] += gone.completed
    tasks["failed"] += gone.failed
    tasks["cancelled"] += gone.cancelled
    held = board.queued_on_workers  # sent ahead (pipelining): they wait, not run, there
    waiting, dead = len(board.waiting), len(board.dead) + gone.dead
    unassigned = len(st.unassigned) + gone.unassigned
    tasks["running"] -= held
    tasks["pending"] -= waiting  # (of the pending: waiting on dependencies; of the failed:
    tasks["failed"] -= dead  # lost too often; of the cancelled: given up, unassigned)
    tasks["cancelled"] -= unassigned
    tasks |= {"queued_on_workers": held, "waiting_on_dependencies": waiting, "dead": dead,
              "unassigned": unassigned}
    slots = list(board.scheduler.workers.values())
    workers = {state.value: sum(1 for w in slots if w.state is state)
               for state in WorkerState if state is not WorkerState.GONE}
    counters = {"assignments": s.assignments, "results": s.results,
                "bad_frames": s.bad_frames, "dropped_hellos": s.dropped_hellos,
                "reconnects": s.reconnects, "workers_lost": s.lost,
                "broadcasts": st.broadcasts.seq, "broadcasts_lost": s.broadcasts_lost,
                "broadcasts_unconfirmed": s.broadcasts_unconfirmed}
    return {"tasks": tasks, "workers": workers, "connected": len(st.members.registry),
            "busy": sum(1 for w in slots if w.running > 0), "counters": counters,
            "histograms": {"task_seconds": s.run_seconds, "queue_wait_seconds": s.wait_seconds}}


def totals(st: AdminState) -> tuple[int, float]:
    """Results so far and their seconds of task time: the dashboard's charts sample these."""
    return st.stats.results, st.stats.run_seconds.total


def pulse(st: AdminState) -> tuple[int, ...]:
    """Changes whenever what the dashboard shows of tasks and workers changes; O(1), so an
    open page can watch it often and redraw only then."""
    board = st.board
    return (board.total, board.open, board.running, st.stats.assignments,
            len(st.members.registry.by_peer))


def dashboard(st: AdminState, now: float) -> dict[str, Any]:
    """What the web dashboard shows: workers with their last heartbeat, groups, counts,
    totals, the latest failures."""
    board, s = st.board, st.stats
    workers = []
    for rec in st.members.registry.by_peer.values():
        workers.append({**_worker(st, rec), "seen": round(max(0.0, now - rec.last_seen), 1)})
    workers.sort(key=lambda w: w["name"])
    return {"admin": st.name, "workspace": st.workspace, "workers": workers,
            "groups": st.task_manager.summaries(GROUPS_SHOWN),
            "groups_total": len(st.task_manager.task_groups), "counts": counts(st),
            # failed: from the board, so an admin restarted on its journal counts them too
            "totals": {"results": s.results, "failed": board.failed_runs},
            "failures": [{"task": t, "worker": w, "error": e, "ago": round(now - at, 1)}
                         for t, w, e, at in reversed(s.recent_failures)]}
