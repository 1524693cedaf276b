"""``ceylon-worker``: join a workspace and run the tasks the admin assigns."""

from __future__ import annotations

import os
import sys
from typing import Annotated

from loguru import logger

from ..edge import handlers, loop
from ..edge.handlers import load_app
from ..edge.worker import Worker
from ..errors import AdminUnreachableError, ConfigError, Crashed, RejectedError
from ..settings import WorkerSettings
from ..wire import DEFAULT_MAX_MESSAGE_BYTES
from .common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    AdminKey,
    AdminPeer,
    AdminPort,
    CurveSecret,
    LogJson,
    LogLevel,
    MaxBytes,
    Token,
    Workspace,
    app,
    configure_logging,
    fail,
    on_signals,
    opt,
    path_str,
    say_error,
)

Name = Annotated[str, opt("Unique worker name in the workspace.", "NAME")]
Skill = Annotated[int, opt("Skill 0-10; takes tasks of difficulty <= skill.", "SKILL")]
Role = Annotated[str, opt("Role; 'default' takes tasks of any role.", "ROLE")]
Concurrency = Annotated[int, opt("Tasks run at once, 1-10000 (max_concurrent_tasks).",
                                 "CONCURRENCY")]
TimeScale = Annotated[float, opt("Seconds per difficulty point of the simulated task.",
                                 "TIME_SCALE")]
ConnectTimeout = Annotated[float, opt("Give up when no admin answers within this many seconds.",
                                      "CONNECT_TIMEOUT")]
DrainTimeout = Annotated[float, opt("On SIGTERM/SIGINT, seconds to let running tasks finish "
                                    "before leaving.", "DRAIN_TIMEOUT")]
App = Annotated[str | None, opt("Python module to import whose @handler functions this worker "
                                "runs (e.g. mypkg.tasks).", "APP")]

worker_app = app()


@worker_app.command(help="Join a workspace and run the tasks the admin assigns. SIGINT, SIGTERM "
                         "or SIGHUP drain it (running tasks finish, their results go out; a "
                         "second signal leaves at once). Exit 0 when the admin ends the run or "
                         "on those signals; 1 when no admin answered within --connect-timeout, "
                         "the admin rejected it, or one of its own loops failed; 2 for a bad "
                         "option.")
def worker(
    name: Name, admin_peer: AdminPeer = "127.0.0.1", port: AdminPort = 8000, skill: Skill = 10,
    role: Role = "default", concurrency: Concurrency = 1, workspace: Workspace = "default",
    time_scale: TimeScale = 1.0, connect_timeout: ConnectTimeout = 30.0,
    drain_timeout: DrainTimeout = 30.0, app: App = None, token: Token = None,
    curve_secret: CurveSecret = None, admin_key: AdminKey = None,
    max_message_bytes: MaxBytes = DEFAULT_MAX_MESSAGE_BYTES, log_level: LogLevel = "INFO",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    try:
        settings = WorkerSettings(
            name=name, skill=skill, role=role, capacity=concurrency, admin_peer=admin_peer,
            port=port, workspace=workspace, time_scale=time_scale,
            connect_timeout=connect_timeout, token=token, curve_secret=path_str(curve_secret),
            admin_key=path_str(admin_key), max_message_bytes=max_message_bytes)
        if not drain_timeout >= 0:  # also refuses NaN
            raise ConfigError(f"--drain-timeout must be >= 0, got {drain_timeout}")
        if app is not None:
            sys.path.insert(0, "")  # like python -m: modules of the current directory
            names = load_app(app)
            if names:
                logger.info("--app {}: handlers {}", app, ", ".join(names))
            else:  # (its tasks would wait unassigned: say why now)
                logger.warning("--app {}: no handler registered (decorate its functions with "
                               "@handler(\"name\"), from ceylon_net)", app)
    except ConfigError as exc:
        fail(EXIT_CONFIG, str(exc))
    try:
        loop.run(_run_worker(settings, drain_timeout), contain=f"worker {settings.name!r}")
    except RejectedError as exc:
        _leave(EXIT_FAILED, f"rejected by the admin: {exc}")
    except (AdminUnreachableError, Crashed) as exc:
        _leave(EXIT_FAILED, str(exc))
    except ConfigError as exc:  # a key file found wanting as the worker starts
        _leave(EXIT_CONFIG, str(exc))
    _leave(EXIT_OK)


def _leave(code: int, error: str | None = None) -> None:
    """Exit with ``code`` (and ``error`` said). A sync handler still running in its thread
    (it hung, and outlived its task's time limit or the drain) cannot be stopped, and Python
    would wait for it at exit for ever: the worker has said goodbye, so it exits without it."""
    if handlers.running() or loop.executor_threads_left():
        logger.warning("{} still running (a thread cannot be stopped): exiting without "
                       "waiting for them", f"{handlers.running()} handler thread(s)"
                       if handlers.running() else "a thread of asyncio.to_thread")
        if error is not None:
            say_error(error)
        logger.complete()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if error is not None:
        fail(code, error)


async def _run_worker(settings: WorkerSettings, drain_timeout: float) -> str:
    w = Worker(settings.name, settings=settings)
    # First signal: finish running tasks, report, leave. A second one: leave now.
    async with on_signals(lambda: w.drain(drain_timeout)):
        reason = await w.arun()
    logger.info("{}: ran {} task(s), at most {} at once (--concurrency {})", w.name,
                w.tasks_run, w.runner.peak, settings.capacity)
    return reason


def main() -> None:
    worker_app()
