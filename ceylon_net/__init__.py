"""ceylon_net: a networked, multi-process agent runtime over ZeroMQ.

An admin coordinates a workspace; workers on any host register with it, take tasks that fit
their role, skill and free capacity, run them and report results; any agent can broadcast.

The package is layered; each layer only imports the ones above it in this list:

- ``ceylon_net.errors``, ``ceylon_net.settings``: one error hierarchy; frozen settings
- ``ceylon_net.wire``: the wire format (kinds, codec, schema, messages): the only code that
  touches frames or msgpack
- ``ceylon_net.core``: policy, pure (no sockets, no asyncio, no clock: ``now`` is an argument):
  the task model, scheduler, board, groups, batches, guard, worker life, and ``AdminState``,
  which makes every decision of the admin and returns commands
- ``ceylon_net.edge``: the network edge: sockets, the ``Admin`` shell that carries out
  ``AdminState``'s commands, the worker and its task runner, clients, the journal, metrics
- ``ceylon_net.playground``: seed 000's ``TaskPlayGround`` surface
- ``ceylon_net.cli``: the command-line programs and their rendering (tables, progress bars)
- ``ceylon_net.dev``: tooling for tests, benchmarks and demos (process harness, network
  namespaces, ``bin/cluster``, ``bin/demo``), apart from the runtime

Names are imported on first use, so ``import ceylon_net.core.admin_state`` loads neither zmq
nor asyncio.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Admin", "CoreAdmin"), "ceylon_net.edge.admin"),
    **dict.fromkeys(("AgentBase", "on_message"), "ceylon_net.edge.agent"),
    **dict.fromkeys(("Agent", "Worker"), "ceylon_net.edge.worker"),
    "handler": "ceylon_net.edge.handlers",
    **dict.fromkeys(("Client", "as_completed"), "ceylon_net.edge.sync_client"),
    "AsyncClient": "ceylon_net.edge.client",
    **dict.fromkeys(("AdminGoneError", "AdminUnreachableError", "CeylonError", "ConfigError",
                     "Crashed", "LocalProtocolError", "RejectedError", "RemoteProtocolError",
                     "TaskFailed", "TaskFileError"), "ceylon_net.errors"),
    **dict.fromkeys(("AllTasks", "AtLeast", "Fraction", "GoalStatus", "OnGoal", "TaskGroup",
                     "TaskGroupGoal", "TaskManager", "TaskMessage", "create_goal_checker"),
                    "ceylon_net.core.groups"),
    **dict.fromkeys(("TaskExecutionAgent", "TaskPlayGround"), "ceylon_net.playground"),
    **dict.fromkeys(("PROTOCOL_VERSION", "dumps", "loads", "message"), "ceylon_net.wire"),
    **dict.fromkeys(("Scheduler", "WorkerSlot", "best_fit"), "ceylon_net.core.scheduler"),
    **dict.fromkeys(("DEFAULT_PORT", "DEFAULT_WORKSPACE_ID", "AdminSettings",
                     "WorkerSettings"), "ceylon_net.settings"),
    **dict.fromkeys(("RunReport", "Task", "TaskAssignment", "TaskResult", "TaskStatus"),
                    "ceylon_net.core.tasks"),
    "load_tasks": "ceylon_net.core.workfile",
    **dict.fromkeys(("AgentDetail", "WorkerState"), "ceylon_net.core.workers"),
    **dict.fromkeys(("AdminState",), "ceylon_net.core.admin_state"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ceylon_net' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "Admin" if name == "CoreAdmin" else name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

