"""What a running admin reports to ``ceylon-status``: a plain snapshot, and its tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

if TYPE_CHECKING:
    from .admin import Admin

QUEUED_SHOWN = 100


def snapshot(admin: Admin) -> dict[str, Any]:
    """Workers, groups, queued tasks and counts, as plain msgpack/JSON-able data."""
    board = admin.board
    workers = []
    for d in admin.get_connected_agents():
        slot = board.scheduler.workers.get(d.name)
        workers.append({"name": d.name, "role": d.role, "skill": d.skill, "host": d.host,
                        "running": slot.running if slot else 0, "capacity": d.capacity})
    queued = []
    for task_id in board.queued()[:QUEUED_SHOWN]:
        t = board.records[task_id].task
        queued.append({"id": t.id, "description": t.description, "difficulty": t.difficulty,
                       "role": t.required_role, "priority": t.priority})
    return {
        "admin": admin.name,
        "workspace": admin.workspace_id,
        "ports": {"router": admin.port, "pub": admin.pub_port},
        "workers": workers,
        "groups": admin.task_manager.summaries(),
        "queued": queued,
        "counts": {"total": len(board.records), "done": len(board.records) - board.open,
                   "succeeded": board.succeeded, "running": board.running,
                   "queued": len(board.scheduler), "waiting": len(board.waiting),
                   "unassigned": len(admin.unassigned)},
    }


def render(data: dict[str, Any]) -> Group:
    """Rich tables for a snapshot (ceylon-status prints them)."""
    c = data["counts"]
    workers = Table(title=f"Workers of admin '{data['admin']}' (workspace '{data['workspace']}')")
    for col in ("name", "role", "skill", "host", "running/capacity"):
        workers.add_column(col)
    for w in data["workers"]:
        workers.add_row(w["name"], w["role"], str(w["skill"]), w["host"] or "?",
                        f"{w['running']}/{w['capacity']}")
    groups = Table(title="Task groups")
    for col in ("group", "progress", "status", "goal", "goal status"):
        groups.add_column(col)
    for g in data["groups"]:
        groups.add_row(g["name"], f"{g['completed'] + g['failed'] + g['cancelled']}/{g['total']}",
                       g["status"], g["goal"] or "-", g["goal_status"] or "-")
    queued = Table(title=f"Queued tasks ({c['queued']} queued, {c['waiting']} waiting on "
                         f"dependencies)")
    for col in ("task", "description", "difficulty", "role", "priority"):
        queued.add_column(col)
    for q in data["queued"]:
        queued.add_row(str(q["id"]), q["description"], str(q["difficulty"]), q["role"] or "-",
                       str(q["priority"]))
    summary = (f"tasks: {c['done']}/{c['total']} done ({c['succeeded']} succeeded), "
               f"{c['running']} running, {c['queued']} queued, {c['waiting']} waiting, "
               f"{c['unassigned']} unassigned")
    return Group(workers, groups, queued, summary)
