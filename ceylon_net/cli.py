"""Command-line entry points. They parse options, build settings and call the library.

Every option can also come from a ``CEYLON_*`` environment variable (the option wins).
Exit codes: 0 done, 1 runtime failure (rejected, unreachable), 2 bad configuration or input,
3 some tasks could not be assigned to any worker.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger
from rich.console import Console
from rich.table import Table

from .admin import Admin
from .client import ask_status, cancel_tasks
from .client import submit as submit_batch
from .errors import AdminUnreachableError, ConfigError, RejectedError
from .groups import TaskGroup
from .handlers import load_app
from .progress import ProgressBarForBatch, ProgressView
from .protocol import DEFAULT_MAX_MESSAGE_BYTES
from .settings import AdminSettings, WorkerSettings
from .status import render as render_status
from .tasks import RunReport, Task, parse_file
from .transport import CurveKeys, create_keypair, load_keys
from .worker import Worker
from .workfile import load_work, parse_work

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNASSIGNED = 0, 1, 2, 3
TABLE_ROWS = 100


def _opt(help_: str, env: str, **kw):
    return typer.Option(help=help_, envvar=f"CEYLON_{env}", show_envvar=True, **kw)


LogLevel = Annotated[str, _opt("Log level: TRACE, DEBUG, INFO, WARNING, ERROR.", "LOG_LEVEL")]
LogJson = Annotated[bool, _opt("Log one JSON object per line (for log shippers).", "LOG_JSON")]
Heartbeat = Annotated[float, _opt("Seconds between heartbeats.", "HEARTBEAT")]
Liveness = Annotated[int, _opt("Missed heartbeats before a peer is declared lost.", "LIVENESS")]
Workspace = Annotated[str, _opt("Workspace id; admin and workers must agree.", "WORKSPACE")]
AdminPeer = Annotated[str, _opt("Host name or address of the admin.", "ADMIN_PEER")]
AdminPort = Annotated[int, _opt("The admin's ROUTER port.", "PORT")]
Token = Annotated[str | None, _opt("Shared secret every worker and client must present "
                                   "(checked on registration and requests).", "TOKEN")]
MaxBytes = Annotated[int, _opt("Largest message accepted, in bytes (also ZMQ MAXMSGSIZE).",
                               "MAX_MESSAGE_BYTES")]
CurveSecret = Annotated[Path | None, _opt("Our CURVE secret key file (ceylon-keygen): "
                                          "encrypts and authenticates.", "CURVE_SECRET")]
AdminKey = Annotated[Path | None, _opt("The admin's CURVE public key file (with "
                                       "--curve-secret).", "ADMIN_KEY")]


def configure_logging(level: str, as_json: bool) -> None:
    logger.remove()
    try:
        # A function sink looks sys.stderr up on every line, so a live progress display that
        # redirects stderr prints log lines above its bars instead of through them.
        logger.add(lambda line: sys.stderr.write(line), level=level.upper(), serialize=as_json,
                   format="{time:HH:mm:ss.SSS} | {level: <7} | {message}")
    except ValueError:
        logger.add(sys.stderr, level="INFO")
        _fail(EXIT_CONFIG, f"unknown --log-level {level!r}")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@dataclass(frozen=True)
class _Target:
    """Where a client (status, submit, cancel) talks to, and with what credentials."""

    endpoint: str
    token: str | None
    curve: CurveKeys | None


def _target(admin_peer: str, port: int, workspace: str, token: str | None,
            curve_secret: Path | None, admin_key: Path | None) -> _Target:
    try:
        s = WorkerSettings(name="client", admin_peer=admin_peer, port=port, workspace=workspace,
                           token=token, curve_secret=_str(curve_secret),
                           admin_key=_str(admin_key))
        curve = load_keys(curve_secret, admin_key) if curve_secret else None
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    return _Target(s.endpoint, token, curve)


def _fail(code: int, message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------------------- ceylon-admin

admin_app = typer.Typer(add_completion=True, rich_markup_mode=None)


@admin_app.command(help="Coordinate a workspace: accept workers, hand out tasks, relay "
                        "broadcasts. With --tasks, run those tasks, print the results and exit; "
                        "without, serve until SIGINT/SIGTERM.")
def admin(
    port: Annotated[int, _opt("ROUTER port workers connect to (0: any free port).", "PORT")]
        = 8000,
    pub_port: Annotated[int | None, _opt("PUB broadcast port [default: port+1].", "PUB_PORT")]
        = None,
    bind: Annotated[str, _opt("Address to bind (0.0.0.0: all interfaces).", "BIND")]
        = "0.0.0.0",
    workspace: Workspace = "default",
    name: Annotated[str, _opt("The admin's agent name.", "ADMIN_NAME")] = "admin",
    tasks: Annotated[Path | None, _opt("Tasks file (JSON or TOML) to run, then exit.", "TASKS")]
        = None,
    expect_workers: Annotated[int, _opt("Wait for this many workers before assigning "
                                        "(0: assign as workers arrive).", "EXPECT_WORKERS")] = 0,
    report_json: Annotated[Path | None, _opt("Write the run's report to this JSON file.",
                                             "REPORT_JSON")] = None,
    unassignable_timeout: Annotated[float, _opt(
        "Seconds to keep tasks no connected worker can do, once all else is done.",
        "UNASSIGNABLE_TIMEOUT")] = 10.0,
    heartbeat: Heartbeat = 1.0,
    liveness: Liveness = 3,
    max_attempts: Annotated[int, _opt("A task lost with its worker this many times fails.",
                                      "MAX_ATTEMPTS")] = 3,
    task_timeout: Annotated[float | None, _opt(
        "Seconds a task may run unless it sets its own 'timeout' [default: no limit].",
        "TASK_TIMEOUT")] = None,
    prefetch: Annotated[int, _opt(
        "Tasks each worker may hold queued beyond its --concurrency, so it starts the next "
        "without waiting for the admin (more throughput for short tasks; a lost worker's "
        "queued tasks count as lost with it).", "PREFETCH")] = 0,
    journal: Annotated[Path | None, _opt(
        "Keep task state in this SQLite file; restarted on it, the admin resumes the run.",
        "JOURNAL")] = None,
    token: Token = None,
    curve_secret: CurveSecret = None,
    authorized_keys: Annotated[Path | None, _opt(
        "Directory of public key files (ceylon-keygen) allowed in; with --curve-secret.",
        "AUTHORIZED_KEYS")] = None,
    max_message_bytes: MaxBytes = DEFAULT_MAX_MESSAGE_BYTES,
    results: Annotated[Path | None, _opt("Append every task result to this file, one JSON "
                                         "object per line.", "RESULTS")] = None,
    metrics_port: Annotated[int | None, _opt("Serve Prometheus metrics on this port "
                                             "(http://BIND:PORT/metrics).", "METRICS_PORT")]
        = None,
    log_level: LogLevel = "INFO",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    try:
        settings = AdminSettings(results_file=_str(results), metrics_port=metrics_port,
                                 name=name, workspace=workspace, bind=bind, port=port,
                                 journal=_str(journal), token=token,
                                 curve_secret=_str(curve_secret),
                                 authorized_keys=_str(authorized_keys),
                                 max_message_bytes=max_message_bytes,
                                 pub_port=pub_port, expect_workers=expect_workers,
                                 unassignable_timeout=unassignable_timeout,
                                 heartbeat=heartbeat, liveness=liveness,
                                 max_attempts=max_attempts, task_timeout=task_timeout,
                                 prefetch=prefetch)
        work = load_work(tasks) if tasks is not None else None
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    try:
        report = asyncio.run(_run_admin(settings, work))
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    if report is None:
        return
    print_report(report)
    if report_json is not None:
        report_json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if report.unassigned:
        raise typer.Exit(EXIT_UNASSIGNED)


async def _run_admin(settings: AdminSettings, work: tuple[list[Task], list[TaskGroup]] | None
                     ) -> RunReport | None:
    admin = Admin(settings=settings)
    await admin.start()
    _on_signals(admin.stop)
    try:
        if work is None:
            await admin.serve()
            return None
        if admin.resumed:
            logger.info("the journal holds this run: --tasks file not read again")
            run = asyncio.create_task(_wait_report(admin))
        else:
            run = asyncio.create_task(admin.run_tasks(*work))
        stop = asyncio.create_task(admin.serve())
        async with ProgressView.for_terminal(admin):
            await asyncio.wait([run, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not run.done():
            run.cancel()
            logger.warning("interrupted before the run finished")
            return None
        return run.result()
    finally:
        await admin.close("run over" if work is not None else "admin stopped")


async def _wait_report(admin: Admin) -> RunReport:
    await admin.wait_idle()
    return admin.report()


def _on_signals(callback) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(callback()))


def print_report(report: RunReport) -> None:
    # Wide enough for long descriptions when piped (rich assumes 80 columns off a terminal).
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title="Task results")
    for col in ("task", "description", "difficulty", "worker", "success", "seconds"):
        table.add_column(col, justify="right" if col in ("difficulty", "seconds") else "left")
    for t in report.tasks[:TABLE_ROWS]:
        table.add_row(str(t.id), t.description, str(t.difficulty), t.worker,
                      "yes" if t.success else "no", f"{t.seconds:.3f}")
    console.print(table)
    if len(report.tasks) > TABLE_ROWS:
        console.print(f"... and {len(report.tasks) - TABLE_ROWS} more (see --report-json)")
    for g in report.groups:
        goal = f"; goal '{g['goal']}' {g['goal_status']}" if g["goal"] else ""
        console.print(f"Group '{g['name']}': {g['status']}, {g['completed']}/{g['total']} "
                      f"completed, {g['failed']} failed, {g['cancelled']} cancelled{goal}")
    failed = [t for t in report.tasks if not t.success and t.error]
    for t in failed[:TABLE_ROWS // 5]:
        console.print(f"task {t.id} failed: {t.error.strip().splitlines()[-1]}")
    if report.cancelled:
        reasons = sorted(set(report.cancelled.values()))
        console.print(f"Cancelled: {len(report.cancelled)} task(s) ({'; '.join(reasons)})")
    if report.dead:
        console.print(f"Dead (lost with their workers too often): "
                      f"{', '.join(map(str, report.dead))}")
    if report.unassigned:
        console.print(f"Unassigned (no connected worker could take them): "
                      f"{', '.join(map(str, report.unassigned))}")
    console.print(f"Success rate: {report.success_rate:.2%} "
                  f"({sum(t.success for t in report.tasks)}/{len(report.tasks)} tasks)")


# ---------------------------------------------------------------------------- ceylon-worker

worker_app = typer.Typer(add_completion=True, rich_markup_mode=None)


@worker_app.command(help="Join a workspace and run the tasks the admin assigns. Exits 0 when "
                         "the admin ends the run or on SIGINT/SIGTERM.")
def worker(
    name: Annotated[str, _opt("Unique worker name in the workspace.", "NAME")],
    admin_peer: AdminPeer = "127.0.0.1",
    port: AdminPort = 8000,
    skill: Annotated[int, _opt("Skill 0-10; takes tasks of difficulty <= skill.", "SKILL")] = 10,
    role: Annotated[str, _opt("Role; 'default' takes tasks of any role.", "ROLE")] = "default",
    concurrency: Annotated[int, _opt("Tasks run at once, 1-10000 (max_concurrent_tasks).",
                                     "CONCURRENCY")] = 1,
    workspace: Workspace = "default",
    time_scale: Annotated[float, _opt("Seconds per difficulty point of the simulated task.",
                                      "TIME_SCALE")] = 1.0,
    connect_timeout: Annotated[float, _opt("Give up when no admin answers within this many "
                                           "seconds.", "CONNECT_TIMEOUT")] = 30.0,
    drain_timeout: Annotated[float, _opt("On SIGTERM/SIGINT, seconds to let running tasks "
                                         "finish before leaving.", "DRAIN_TIMEOUT")] = 30.0,
    app: Annotated[str | None, _opt("Python module to import whose @handler functions this "
                                    "worker runs (e.g. mypkg.tasks).", "APP")] = None,
    token: Token = None,
    curve_secret: CurveSecret = None,
    admin_key: AdminKey = None,
    max_message_bytes: MaxBytes = DEFAULT_MAX_MESSAGE_BYTES,
    log_level: LogLevel = "INFO",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    try:
        settings = WorkerSettings(name=name, skill=skill, role=role, capacity=concurrency,
                                  admin_peer=admin_peer, port=port, workspace=workspace,
                                  time_scale=time_scale, connect_timeout=connect_timeout,
                                  token=token, curve_secret=_str(curve_secret),
                                  admin_key=_str(admin_key),
                                  max_message_bytes=max_message_bytes)
        if app is not None:
            sys.path.insert(0, "")  # like python -m: modules of the current directory
            names = load_app(app)
            logger.info("--app {}: handlers {}", app, ", ".join(names) or "(none)")
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    try:
        asyncio.run(_run_worker(settings, drain_timeout))
    except RejectedError as exc:
        _fail(EXIT_FAILED, f"rejected by the admin: {exc}")
    except AdminUnreachableError as exc:
        _fail(EXIT_FAILED, str(exc))


async def _run_worker(settings: WorkerSettings, drain_timeout: float) -> str:
    w = Worker(settings.name, settings=settings)
    # First signal: finish running tasks, report, leave. A second one: leave now.
    _on_signals(lambda: w.drain(drain_timeout))
    return await w.arun()


# ---------------------------------------------------------------------------- ceylon-status

status_app = typer.Typer(add_completion=True, rich_markup_mode=None)


@status_app.command(help="Ask a running admin for its workers, task groups and queued tasks.")
def status(
    admin_peer: AdminPeer = "127.0.0.1",
    port: AdminPort = 8000,
    workspace: Workspace = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
    timeout: Annotated[float, _opt("Seconds to wait for the admin's answer.", "TIMEOUT")] = 5.0,
    token: Token = None,
    curve_secret: CurveSecret = None,
    admin_key: AdminKey = None,
    log_level: LogLevel = "WARNING",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    target = _target(admin_peer, port, workspace, token, curve_secret, admin_key)
    try:
        reply = asyncio.run(ask_status(target.endpoint, workspace, timeout, target.token,
                                       target.curve))
    except (AdminUnreachableError, RejectedError) as exc:
        _fail(EXIT_FAILED, str(exc))
    if as_json:
        typer.echo(json.dumps(reply, indent=2, default=str))
    else:
        Console(width=None if sys.stdout.isatty() else 120).print(render_status(reply))


# ---------------------------------------------------------------------------- ceylon-submit

submit_app = typer.Typer(add_completion=True, rich_markup_mode=None)
EXIT_NO_ADMIN = 4


@submit_app.command(help="Send tasks or groups (a tasks file) to a running admin. With --wait, "
                         "follow the batch and print its results. Exit 0: all succeeded; 1: "
                         "some failed; 2: bad file or refused; 3: some could "
                         "not be assigned; 4: no admin answered, or it was lost.")
def submit(
    file: Annotated[Path, typer.Argument(help="Tasks file (JSON or TOML), as for ceylon-admin "
                                              "--tasks.")],
    admin_peer: AdminPeer = "127.0.0.1",
    port: AdminPort = 8000,
    workspace: Workspace = "default",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the results.")]
        = False,
    sequential: Annotated[bool, typer.Option(
        "--sequential", help="Start only after the previously submitted batch finished "
                             "(default: run side by side with it).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    connect_timeout: Annotated[float, _opt("Seconds to wait for the admin to answer.",
                                           "CONNECT_TIMEOUT")] = 10.0,
    token: Token = None,
    curve_secret: CurveSecret = None,
    admin_key: AdminKey = None,
    log_level: LogLevel = "WARNING",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    target = _target(admin_peer, port, workspace, token, curve_secret, admin_key)
    try:
        doc = parse_file(file)
        parse_work(doc, str(file))  # refuse a bad file here, before anything is sent
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    if isinstance(doc, list):
        doc = {"tasks": doc}
    try:
        submitted, report = asyncio.run(_submit(target, workspace, doc, wait, sequential,
                                                connect_timeout))
    except RejectedError as exc:
        _fail(EXIT_CONFIG, f"the admin refused the batch: {exc}")
    except AdminUnreachableError as exc:
        _fail(EXIT_NO_ADMIN, str(exc))
    if report is None:
        typer.echo(f"submitted batch {submitted.batch}: {submitted.tasks} task(s)")
        return
    run = RunReport.from_json(report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(run)
    if run.unassigned:
        raise typer.Exit(EXIT_UNASSIGNED)
    if any(not t.success for t in run.tasks):
        raise typer.Exit(EXIT_FAILED)


async def _submit(target: _Target, workspace: str, doc: dict, wait: bool, sequential: bool,
                  connect_timeout: float):
    bar = ProgressBarForBatch() if wait and sys.stderr.isatty() else None
    try:
        return await submit_batch(target.endpoint, workspace, doc, wait=wait,
                                  sequential=sequential, connect_timeout=connect_timeout,
                                  on_progress=bar.update if bar else None,
                                  token=target.token, curve=target.curve)
    finally:
        if bar is not None:
            bar.close()


def admin_main() -> None:
    admin_app()


def worker_main() -> None:
    worker_app()


# ---------------------------------------------------------------------------- ceylon-cancel

cancel_app = typer.Typer(add_completion=True, rich_markup_mode=None)


@cancel_app.command(help="Cancel tasks on a running admin: queued ones at once, running ones "
                         "are stopped by their worker. Exit 0 when every id was known.")
def cancel(
    task_ids: Annotated[list[str], typer.Argument(help="Task ids (numbers are tried as "
                                                       "numbers too).")],
    admin_peer: AdminPeer = "127.0.0.1",
    port: AdminPort = 8000,
    workspace: Workspace = "default",
    reason: Annotated[str, typer.Option(help="Why; shown in the report.")]
        = "cancelled by ceylon-cancel",
    timeout: Annotated[float, _opt("Seconds to wait for the admin's answer.", "TIMEOUT")] = 5.0,
    token: Token = None,
    curve_secret: CurveSecret = None,
    admin_key: AdminKey = None,
    log_level: LogLevel = "WARNING",
    log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    target = _target(admin_peer, port, workspace, token, curve_secret, admin_key)
    ids: list[int | str] = []
    for t in task_ids:
        ids += [t, int(t)] if t.lstrip("-").isdigit() else [t]
    try:
        outcome = asyncio.run(cancel_tasks(target.endpoint, workspace, ids, reason, timeout,
                                           target.token, target.curve))
    except (AdminUnreachableError, RejectedError) as exc:
        _fail(EXIT_FAILED, str(exc))
    known = {str(t) for k in ("cancelled", "stopping", "finished") for t in outcome[k]}
    for kind, label in (("cancelled", "cancelled"), ("stopping", "stopping (running)"),
                        ("finished", "already finished")):
        for t in outcome[kind]:
            typer.echo(f"{t}: {label}")
    missing = [t for t in task_ids if t not in known]
    for t in missing:
        typer.echo(f"{t}: unknown task", err=True)
    if missing:
        raise typer.Exit(EXIT_FAILED)


# ---------------------------------------------------------------------------- ceylon-keygen

keygen_app = typer.Typer(add_completion=True, rich_markup_mode=None)


@keygen_app.command(help="Write a CURVE keypair: DIR/NAME.key (public: give it to the other "
                         "side) and DIR/NAME.key_secret (keep it; mode 600).")
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write the two files.")],
    name: Annotated[str, typer.Option(help="Base name of the files, e.g. admin or Senior.")],
) -> None:
    if not name or "/" in name or name.startswith("."):
        _fail(EXIT_CONFIG, f"--name {name!r} must be a plain file name")
    if (directory / f"{name}.key_secret").exists():
        _fail(EXIT_CONFIG, f"{directory / (name + '.key_secret')} exists; not overwriting it")
    public, secret = create_keypair(directory, name)
    typer.echo(f"public key: {public}\nsecret key: {secret}")


def keygen_main() -> None:
    keygen_app()


def cancel_main() -> None:
    cancel_app()


def status_main() -> None:
    status_app()


def submit_main() -> None:
    submit_app()
