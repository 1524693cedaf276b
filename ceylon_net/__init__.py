"""ceylon_net: a networked, multi-process agent runtime over ZeroMQ.

An admin coordinates a workspace; workers on any host register with it, take tasks that fit
their role, skill and free capacity, run them and report results; any agent can broadcast.
"""

from .admin import Admin
from .agent import AgentBase, AgentDetail, on_message
from .errors import (
    AdminUnreachableError,
    CeylonError,
    ConfigError,
    LocalProtocolError,
    RejectedError,
    RemoteProtocolError,
    TaskFailed,
    TaskFileError,
)
from .groups import (
    AllTasks,
    AtLeast,
    Fraction,
    GoalStatus,
    OnGoal,
    TaskGroup,
    TaskGroupGoal,
    TaskManager,
    TaskMessage,
    create_goal_checker,
)
from .handlers import handler
from .playground import TaskExecutionAgent, TaskPlayGround
from .protocol import PROTOCOL_VERSION, dumps, loads, message
from .scheduler import Scheduler, WorkerSlot, best_fit
from .settings import DEFAULT_PORT, DEFAULT_WORKSPACE_ID, AdminSettings, WorkerSettings
from .tasks import RunReport, Task, TaskAssignment, TaskResult, TaskStatus, load_tasks
from .worker import Agent, Worker

CoreAdmin = Admin
"""The tutorials' ``CoreAdmin``: the same admin."""

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_WORKSPACE_ID",
    "PROTOCOL_VERSION",
    "Admin",
    "AdminSettings",
    "AdminUnreachableError",
    "Agent",
    "AgentBase",
    "AgentDetail",
    "AllTasks",
    "AtLeast",
    "CeylonError",
    "ConfigError",
    "CoreAdmin",
    "Fraction",
    "GoalStatus",
    "LocalProtocolError",
    "OnGoal",
    "RejectedError",
    "RemoteProtocolError",
    "RunReport",
    "Scheduler",
    "Task",
    "TaskAssignment",
    "TaskExecutionAgent",
    "TaskFailed",
    "TaskFileError",
    "TaskGroup",
    "TaskGroupGoal",
    "TaskManager",
    "TaskMessage",
    "TaskPlayGround",
    "TaskResult",
    "TaskStatus",
    "Worker",
    "WorkerSettings",
    "WorkerSlot",
    "best_fit",
    "create_goal_checker",
    "dumps",
    "handler",
    "load_tasks",
    "loads",
    "message",
    "on_message",
]
