"""``ceylon-admin``: coordinate a workspace; with ``--tasks``, run a file's tasks and exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import stat
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from .. import wire
from ..core.groups import TaskGroup
from ..core.tasks import RunReport, Task, json_text
from ..core.workfile import load_work
from ..edge import loop
from ..edge.admin import Admin
from ..edge.journal import Journal, JournalError
from ..errors import ConfigError, Crashed
from ..settings import AdminSettings
from ..wire import DEFAULT_MAX_MESSAGE_BYTES
from .common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_UNASSIGNED,
    CurveSecret,
    Heartbeat,
    Liveness,
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
    reader_may_leave,
)

Port = Annotated[int, opt("ROUTER port workers connect to (0: any free port).", "PORT")]
PubPort = Annotated[int | None, opt("PUB broadcast port [default: port+1].", "PUB_PORT")]
Bind = Annotated[str, opt("Address to bind (0.0.0.0: all interfaces).", "BIND")]
Name = Annotated[str, opt("The admin's agent name.", "ADMIN_NAME")]
Tasks = Annotated[Path | None, opt("Tasks file (JSON or TOML) to run, then exit.", "TASKS")]
Expect = Annotated[int, opt("Wait for this many workers before assigning (0: assign as "
                            "workers arrive).", "EXPECT_WORKERS")]
ReportJson = Annotated[Path | None, opt("With --tasks: write the run's report to this JSON file.",
                                        "REPORT_JSON")]
Unassignable = Annotated[float, opt("Seconds to keep tasks no connected worker can do, once "
                                    "all else is done (see --lost-wait).",
                                    "UNASSIGNABLE_TIMEOUT")]
LostWait = Annotated[float, opt("Seconds tasks only a lost worker could do (it crashed, or its "
                                "host was cut off) wait for it to come back before they count "
                                "as unassignable; 0: not at all.", "LOST_WAIT")]
MaxAttempts = Annotated[int, opt("A task lost with its worker this many times fails.",
                                 "MAX_ATTEMPTS")]
TaskTimeout = Annotated[float | None, opt("Seconds a task may run unless it sets its own "
                                          "'timeout' [default: no limit].", "TASK_TIMEOUT")]
BeatsPerSecond = Annotated[float, opt(
    "Worker heartbeats a second the admin takes at most: with more workers than this times "
    "--heartbeat, every heartbeat slows in proportion (in whole steps of --heartbeat), so "
    "1,000 workers beat every 5 s by default and a lost one is noticed in --liveness of "
    "those (at least 1).", "BEATS_PER_SECOND")]
Prefetch = Annotated[int | None, opt(
    "Tasks each worker may hold queued beyond its --concurrency, so it starts the next without "
    "waiting for the admin; 0 turns this pipelining off [default: adaptive, enough to cover a "
    "round trip at each worker's measured pace; queued tasks go to idle workers when one is "
    "free, and only started ones count as lost with a worker].", "PREFETCH")]
KeepFinished = Annotated[int, opt(
    "Tasks of finished batches (ceylon-submit) a serving admin keeps for statuses, --watch "
    "and dependencies: beyond, it forgets the oldest batches whole, their reports sent "
    "(counts go on including them; 0: each batch once its report is sent). About 0.85 KiB a "
    "task plus its arguments and result.", "KEEP_FINISHED")]
JournalPath = Annotated[Path | None, opt("Keep task state in this SQLite file; restarted on "
                                         "it, the admin resumes the run.", "JOURNAL")]
AuthorizedKeys = Annotated[Path | None, opt("Directory of public key files (ceylon-keygen) "
                                            "allowed in; with --curve-secret.",
                                            "AUTHORIZED_KEYS")]
Results = Annotated[Path | None, opt("Append every task result to this file, one JSON object "
                                     "per line (a task lost with its workers --max-attempts "
                                     "times too: a failure; cancelled ones have none).",
                                     "RESULTS")]
MetricsPort = Annotated[int | None, opt("Serve Prometheus metrics on this port "
                                        "(http://BIND:PORT/metrics).", "METRICS_PORT")]
HelloRate = Annotated[float, opt(
    "Registrations a second the admin takes from one address (a token bucket holding a "
    "second's worth): more are dropped unread, and their workers retry. Raise it for many "
    "workers behind one address (a NAT, one big host) that start at once.", "HELLO_RATE")]
DashboardPort = Annotated[int | None, opt(
    "Serve the live web dashboard on this port (http://BIND:PORT/, read-only; with --token "
    "it wants ?token=...) [default: off].", "DASHBOARD_PORT")]

admin_app = app()


@admin_app.command(help="Coordinate a workspace: accept workers, hand out tasks, relay "
                        "broadcasts. With --tasks, run those tasks, print the results and exit; "
                        "without, serve until SIGINT, SIGTERM or SIGHUP (the workers are told "
                        "the run is over). Exit 0: the run is done (failed tasks included), or "
                        "served until a signal; 1: a bug stopped one of its own loops; 2: bad "
                        "option or tasks file, a journal refused, or port in use; 3: some "
                        "tasks could not be assigned (no connected worker has the skill, role "
                        "or handler); 128 + signal (130, 143, 129): a --tasks run stopped "
                        "before it finished.")
def admin(
    port: Port = 8000, pub_port: PubPort = None, bind: Bind = "0.0.0.0",
    workspace: Workspace = "default", name: Name = "admin", tasks: Tasks = None,
    expect_workers: Expect = 0, report_json: ReportJson = None,
    unassignable_timeout: Unassignable = 10.0, lost_wait: LostWait = 60.0,
    heartbeat: Heartbeat = 1.0, liveness: Liveness = 3, beats_per_second: BeatsPerSecond = 200.0,
    max_attempts: MaxAttempts = 3, task_timeout: TaskTimeout = None, prefetch: Prefetch = None,
    journal: JournalPath = None, keep_finished: KeepFinished = 100_000, token: Token = None,
    curve_secret: CurveSecret = None, authorized_keys: AuthorizedKeys = None,
    max_message_bytes: MaxBytes = DEFAULT_MAX_MESSAGE_BYTES, results: Results = None,
    metrics_port: MetricsPort = None, dashboard_port: DashboardPort = None,
    hello_rate: HelloRate = 100.0, log_level: LogLevel = "INFO", log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    try:
        settings = AdminSettings(
            name=name, workspace=workspace, bind=bind, port=port, pub_port=pub_port,
            expect_workers=expect_workers, unassignable_timeout=unassignable_timeout,
            lost_wait=lost_wait, heartbeat=heartbeat, liveness=liveness,
            beats_per_second=beats_per_second,
            max_attempts=max_attempts, task_timeout=task_timeout, prefetch=prefetch,
            journal=path_str(journal), keep_finished=keep_finished, token=token,
            curve_secret=path_str(curve_secret), authorized_keys=path_str(authorized_keys),
            max_message_bytes=max_message_bytes, results_file=path_str(results),
            metrics_port=metrics_port, dashboard_port=dashboard_port, hello_rate=hello_rate)
        _distinct_files(tasks=tasks, journal=journal, report_json=report_json, results=results)
        _few_files(expect_workers)
        _can_report(report_json, tasks)
        work = load_work(tasks) if tasks is not None else None
        if work is not None and settings.journal is not None:
            _same_run(Path(settings.journal), settings.workspace, work, tasks)
        report = loop.run(_run_admin(settings, work))
    except ConfigError as exc:
        fail(EXIT_CONFIG, str(exc))
    except Crashed as exc:
        fail(EXIT_FAILED, str(exc))
    except Interrupted as stop:  # (a script's "ceylon-admin --tasks ... && publish" stops)
        _finish(stop.report, report_json, 128 + stop.signal)
    if report is not None:
        _finish(report, report_json)


class Interrupted(Exception):
    """A signal stopped a --tasks run before it finished: the report so far."""

    def __init__(self, report: RunReport, sig: int) -> None:
        super().__init__(f"interrupted by signal {sig}")
        self.report, self.signal = report, sig


def _finish(report: RunReport, report_json: Path | None, code: int | None = None) -> None:
    """The run is over (or was stopped: ``code``): the JSON report first (nothing printed
    may stand in its way), the table, the exit code."""
    unwritten = None
    if report_json is not None:
        try:
            _write_whole(report_json, json_text(report.to_json(), indent=2) + "\n")
        except OSError as exc:
            unwritten = f"--report-json {report_json}: {exc.strerror or exc}"
    from .render import print_report  # (rich: imported by a run that prints a report)

    with reader_may_leave():
        print_report(report)
    if unwritten is not None:
        fail(EXIT_FAILED, unwritten)
    if code is not None:
        raise typer.Exit(code)
    if report.unassigned:
        raise typer.Exit(EXIT_UNASSIGNED)


def _write_whole(path: Path, text: str) -> None:
    """Whole or not at all, where the file is one of its own: a disk that filled as it was
    written left an empty file (a review), which a reader takes for a report. So it goes to
    a file beside it, with its mode, that then replaces it (a link's file, the link kept).
    Written in place: a device or a pipe (/dev/stdout), or where nothing can be made beside
    it (a file of ours in a directory that is not)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if str(path).startswith(("/dev/", "/proc/")) or (st is not None
                                                      and not stat.S_ISREG(st.st_mode)):
        path.write_text(text)
        return
    target = path.resolve()
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except PermissionError:
        path.write_text(text)
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if st is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))  # (not the umask's)
            f.write(text)
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise


def _can_report(report_json: Path | None, tasks: Path | None) -> None:
    """--report-json: only with --tasks, and a file the run's end can write."""
    if report_json is None:
        return
    if tasks is None:  # (a serving admin's batches have reports of their own)
        raise ConfigError("--report-json FILE is the report of a --tasks run; a serving admin "
                          "has none (each batch has its own: ceylon-submit --wait --json)")
    _can_write(report_json, "--report-json")


def _can_write(path: Path, option: str) -> None:
    """Refuse, before the run, a file the run's end could not write: opened for writing here
    (not os.access, which grants root everything, a read-only file system and /sys included),
    left as it was (appended nothing), removed when this made it."""
    where = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory")
    if not where.is_dir():
        raise ConfigError(f"{option} {path}: no such directory {where}")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: not writable ({exc.strerror or exc})") from None
    if not existed:  # (a dangling link's file, not the link: the link is the user's)
        path.resolve().unlink(missing_ok=True)


OPEN_MAX = 10_240  # macOS's open files a process may have, where the hard limit is infinite


FILES_OF_OUR_OWN = 32  # (the admin's own files: its sockets' internals, a journal, logs)
FEW_WORKERS = 100  # said when fewer workers than this (or than --expect-workers) can connect


def _more_files() -> None:
    """Open files (connections) up to the hard limit: each worker holds two connections to
    the admin, so at a soft limit of 1,024 (systemd's default) 500 workers were the most it
    took, and stalled handshakes from anyone reaching the port locked everyone out sooner
    (libzmq spins on a full table, saying nothing: a review of hostile peers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (soft >= hard != resource.RLIM_INFINITY):
        return
    for want in (hard, OPEN_MAX):  # (macOS refuses an infinite one: its OPEN_MAX then)
        if want != resource.RLIM_INFINITY and want <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            logger.debug("open files: soft limit {} -> {} refused ({})", soft, want, exc)
            continue
        logger.debug("open files: soft limit {} -> {}", soft, want)
        return


def _few_files(expected: int) -> None:
    """Said when this process may not open files (connections) for as many workers as
    expected, or for a hundred: past the limit libzmq retries the next connection again and
    again, burning a core, and says nothing (a review at ulimit -n 64: 48 of 150 joined,
    the rest and ceylon-status waiting in silence)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return
    most = max(0, (soft - FILES_OF_OUR_OWN) // 2)
    if most < max(expected, FEW_WORKERS):
        logger.warning("this process may open {:,} files (its hard limit, ulimit -Hn): about "
                       "{:,} workers can connect (two connections each, and clients one); "
                       "past that, connections wait unanswered and nothing more is said "
                       "(raise it: ulimit -n, or LimitNOFILE= under systemd)", soft, most)


async def _run_admin(settings: AdminSettings, work: tuple[list[Task], list[TaskGroup]] | None
                     ) -> RunReport | None:
    admin = Admin(settings=settings)
    await admin.start()
    ended = "run over" if work is not None else "admin stopped"
    async with on_signals(admin.stop) as caught:
        try:
            if work is None:
                await admin.serve()
                return None
            if admin.resumed:
                logger.info("the journal holds this run: resuming it (the --tasks file's "
                            "tasks are in it already)")
                run = asyncio.create_task(_wait_report(admin))
            else:
                run = asyncio.create_task(admin.run_tasks(*work))
            stop = asyncio.create_task(admin.serve())
            from .progress import ProgressView

            async with ProgressView.for_terminal(admin):
                await asyncio.wait([run, stop], return_when=asyncio.FIRST_COMPLETED)
            if admin.failure is not None:
                run.cancel()
                await asyncio.gather(run, stop, return_exceptions=True)
                raise admin.failure.again()
            stop.cancel()
            if not run.done() and admin.state.finished:  # (stopped as it waited for workers
                run.cancel()  # or clients to come back: the run itself is over)
                await asyncio.gather(run, return_exceptions=True)
                return admin.report()
            if not run.done():
                run.cancel()
                ended = "interrupted before the run finished"
                sig = caught.signal or signal.SIGINT
                logger.warning("{} by {}: the report so far follows", ended,
                               signal.Signals(sig).name)
                raise Interrupted(admin.report(), sig)
            return run.result()
        finally:
            await admin.close(ended)


def _distinct_files(**paths: Path | None) -> None:
    """No two of the files an admin reads and writes are one: the report or the results
    written over the journal destroyed it (and results lines went into the SQLite file)."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise ConfigError(f"--{seen[key]} and --{option.replace('_', '-')} are the same "
                              f"file ({path}): give each its own")
        seen[key] = option.replace("_", "-")


def _same_run(path: Path, workspace: str, work: tuple[list[Task], list[TaskGroup]],
              tasks: Path | None) -> None:
    """A journal holding a run, with --tasks, must hold every task of that file, as the file
    gives it: one left from another job would run and report its own tasks instead,
    silently (ids 1, 2, 3 are in most files: the ids alone let another job's through).
    Checked before anything starts, the file left as it was."""
    if not path.exists() or path.stat().st_size == 0:
        return
    journal = Journal(path, workspace)
    try:
        held = journal.task_specs()
    finally:
        journal.close()
    if not held:
        return
    given = [*work[0], *(t.as_task(0) for g in work[1] for t in g.subtasks)]
    missing = [t.id for t in given if t.id not in held]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise JournalError(
            f"journal {path} holds another run: {len(missing)} of the {len(given)} task(s) in "
            f"--tasks {tasks} are not in it ({shown}). Resume a run with the --tasks file it "
            f"started with; to start a new run, remove the journal or name another one")
    for task in given:
        field = _changed(task, held[task.id])
        if field is not None:
            raise JournalError(
                f"journal {path} holds another run: task {task.id!r} has another {field} in "
                f"--tasks {tasks} than in the journal. Resume a run with the --tasks file it "
                f"started with; to start a new run, remove the journal or name another one")


_COMPARED = ("description", "difficulty", "duration", "handler", "args", "kwargs",
             "depends_on", "timeout")


def _changed(task: Task, held: dict[str, object]) -> str | None:
    """The first field a journal's task (its msgpack map) gives otherwise than ``task``,
    compared encoded (a NaN in the arguments is one). A time limit the file does not give is
    not compared (the journal holds the --task-timeout it was given)."""
    mine = wire.to_wire(task)
    return next((f for f in _COMPARED if (f != "timeout" or task.timeout is not None)
                 and wire.packb(mine.get(f)) != wire.packb(held.get(f))), None)


async def _wait_report(admin: Admin) -> RunReport:
    await admin.wait_idle()
    return admin.report()


def main() -> None:
    _more_files()
    admin_app()
