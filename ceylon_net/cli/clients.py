"""The client programs of a running admin: ``ceylon-status``, ``ceylon-submit``,
``ceylon-cancel``; and ``ceylon-keygen`` for CURVE keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .. import wire
from ..core.tasks import RunReport, json_text
from ..core.workfile import parse_file, parse_work
from ..edge.client import AsyncClient
from ..edge.loop import Stopped, until_stopped
from ..edge.transport import create_keypair
from ..errors import (
    AdminGoneError,
    AdminUnreachableError,
    ConfigError,
    LocalProtocolError,
    RejectedError,
)
from ..wire import Submitted
from .common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_NO_ADMIN,
    EXIT_UNASSIGNED,
    AdminKey,
    AdminPeer,
    AdminPort,
    CurveSecret,
    LogJson,
    LogLevel,
    Timeout,
    Token,
    Workspace,
    app,
    client,
    configure_logging,
    fail,
    live_display,
    opt,
    reader_may_leave,
    say,
)
from .progress import ProgressBarForBatch
from .render import print_report, stdout_console
from .render import render as render_status

StatusJson = Annotated[bool, typer.Option("--json", help="Print the status as JSON (workers, "
                                                        "groups, queued tasks, counts).")]
SubmitJson = Annotated[bool, typer.Option("--json", help=(
    "Print JSON: {\"batch\": N, \"tasks\": M, \"watch\": \"BATCH@RUN\"} once submitted; "
    "with --wait, the batch's report (its tasks' outcomes and groups) instead."))]
File = Annotated[Path | None, typer.Argument(help="Tasks file (JSON or TOML), as for "
                                                  "ceylon-admin --tasks (none with --watch).")]
WatchBatch = Annotated[str | None, typer.Option(
    "--watch", metavar="BATCH@RUN", help="Instead of sending a file, follow a batch sent "
    "earlier, as ceylon-submit named it when sending it (BATCH@RUN): its progress, then its "
    "report, as with --wait.")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the results.")]
Sequential = Annotated[bool, typer.Option(
    "--sequential", help="Start only after the previously submitted batch finished (default: "
                         "run side by side with it).")]
ConnectTimeout = Annotated[float, opt("Seconds to wait for the admin to answer.",
                                      "CONNECT_TIMEOUT")]
TaskIds = Annotated[list[str], typer.Argument(help="Task ids, as typed; one that is no "
                                                   "task's but reads as a number is tried as "
                                                   "that number.")]
Reason = Annotated[str, typer.Option(help="Why; shown in the report.")]

T = TypeVar("T")
status_app, submit_app, cancel_app, keygen_app = app(), app(), app(), app()


@status_app.command(help="Ask a running admin for its workers, task groups and queued tasks. "
                         "Exit 0, or 1 when no admin answered within --timeout.")
def status(
    admin_peer: AdminPeer = "127.0.0.1", port: AdminPort = 8000,
    workspace: Workspace = "default", as_json: StatusJson = False, timeout: Timeout = 5.0,
    token: Token = None, curve_secret: CurveSecret = None, admin_key: AdminKey = None,
    log_level: LogLevel = "WARNING", log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    c = client(admin_peer, port, workspace, token, curve_secret, admin_key, timeout)
    try:
        reply = asyncio.run(_ask(c, lambda: c.status()))
    except (AdminUnreachableError, RejectedError) as exc:
        fail(EXIT_FAILED, str(exc))
    with reader_may_leave():
        if as_json:
            typer.echo(json.dumps(reply, indent=2, default=str))
        else:
            stdout_console().print(render_status(reply))


@submit_app.command(help="Send tasks or groups (a tasks file) to a running admin. With --wait, "
                         "follow the batch and print its results (across an admin restarted "
                         "on its --journal); --watch follows one sent earlier. Exit 0: all "
                         "succeeded; 1: some failed; 2: bad file or refused; 3: some could not "
                         "be assigned (3 over 1 when both); 4: no admin answered, it was "
                         "lost, or it restarted without the batch; 128 + signal (130, 143, "
                         "129): stopped by Ctrl-C, SIGTERM or SIGHUP (the batch runs on).")
def submit(
    file: File = None, admin_peer: AdminPeer = "127.0.0.1", port: AdminPort = 8000,
    workspace: Workspace = "default", wait: Wait = False, sequential: Sequential = False,
    watch: WatchBatch = None, as_json: SubmitJson = False, connect_timeout: ConnectTimeout = 10.0,
    token: Token = None, curve_secret: CurveSecret = None, admin_key: AdminKey = None,
    log_level: LogLevel = "WARNING", log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    if (file is None) == (watch is None):
        fail(EXIT_CONFIG, "give a tasks FILE to send, or --watch BATCH@RUN to follow a batch "
                          "sent earlier (one of the two)")
    if watch is not None and sequential:
        fail(EXIT_CONFIG, "--sequential is for a batch being sent, not one followed (--watch)")
    c = client(admin_peer, port, workspace, token, curve_secret, admin_key, connect_timeout,
               gone_after=30.0, timeout_option="--connect-timeout")
    if watch is not None:
        _print_batch(_follow(c, watch), as_json, watch)
    else:
        assert file is not None
        _send(c, file, wait, sequential, as_json)


def _send(c: AsyncClient, file: Path, wait: bool, sequential: bool, as_json: bool) -> None:
    """Send the file's batch; with ``wait``, follow it to its report."""
    doc = _load(file)
    taken: list[Submitted] = []  # (said when interrupted: how to follow it again)
    sending: list[bool] = []  # (an admin answered, and the batch is on its way)

    def took(sub: Submitted) -> None:
        taken.append(sub)
        if wait:  # (what to give --watch, should this program stop before the report)
            say(f"batch {_token(sub)} ({sub.tasks} task(s)) taken: waiting for its report")

    try:
        submitted, report = asyncio.run(_submit(c, doc, wait, sequential, took, sending))
    except RejectedError as exc:
        fail(EXIT_CONFIG, f"the admin refused the batch: {exc}")
    except AdminUnreachableError as exc:  # (a batch taken may run on: how to follow it;
        # not when the admin stopped without a journal: the batch is gone with it)
        fail(EXIT_NO_ADMIN, f"{exc}" + (
            f"; batch {taken[0].batch} may run on at the admin (follow it again once it is "
            f"back in reach: ceylon-submit --watch {_token(taken[0])})"
            if taken and not isinstance(exc, AdminGoneError) else ""))
    except ConfigError as exc:  # too big to send
        fail(EXIT_CONFIG, f"{file}: {exc}")
    except (KeyboardInterrupt, Stopped) as exc:  # (this program stops, not the batch)
        fail(_stop_code(exc), "interrupted: " + (
            f"batch {taken[0].batch} runs on at the admin (follow it again: ceylon-submit "
            f"--watch {_token(taken[0])}; ceylon-cancel stops its tasks)" if taken else
            "the batch may have reached the admin (ceylon-status shows its tasks)" if sending
            else "no admin had answered yet: nothing was sent"))
    if report is None:
        with reader_may_leave():
            typer.echo(json.dumps({"batch": submitted.batch, "tasks": submitted.tasks,
                                   "watch": _token(submitted)}) if as_json
                       else f"submitted batch {submitted.batch}: {submitted.tasks} task(s) "
                            f"(follow it: ceylon-submit --watch {_token(submitted)})")
        return
    _print_batch(report, as_json, _token(submitted))


def _load(file: Path) -> dict[str, Any]:
    """The tasks document in ``file``, refused here (exit 2) when bad, before anything is
    sent; what it depends on may be on the admin already (an earlier batch's groups and
    tasks): the admin checks that."""
    try:
        doc = parse_file(file)
        parse_work(doc, str(file), standalone=False)
        wire.pack(doc)  # (what the wire cannot carry: an int over 64 bits, too deep a nesting)
    except ConfigError as exc:
        fail(EXIT_CONFIG, str(exc))
    except LocalProtocolError as exc:
        fail(EXIT_CONFIG, f"{file}: cannot be sent: {exc}")
    return doc if isinstance(doc, dict) else {"tasks": doc}


def _token(submitted: Submitted) -> str:
    """How ceylon-submit --watch names a batch: its number and the admin's run (a number
    alone could be another run's batch, after an admin restarted without its journal)."""
    return f"{submitted.batch}@{submitted.run}"


def _follow(c: AsyncClient, token: str) -> dict[str, Any]:
    """--watch BATCH@RUN: the batch's report, once it is done."""
    # (a number the wire carries; the run may be empty: an older admin names none)
    m = re.fullmatch(r"([0-9]{1,18})@([0-9a-f]*)", token)
    if m is None:
        fail(EXIT_CONFIG, f"--watch {token!r}: give BATCH@RUN as ceylon-submit named the batch "
                          f"when sending it (e.g. 3@5f0c2a9e41b7d613)")
    asked: list[bool] = []  # (an admin answered: the batch is asked after)
    try:
        with _progress(True) as on_progress:
            return asyncio.run(until_stopped(_ask(c, lambda: c.watch_batch(
                int(m.group(1)), m.group(2), on_progress), asked)))
    except AdminUnreachableError as exc:
        fail(EXIT_NO_ADMIN, str(exc))
    except RejectedError as exc:  # (another workspace, a wrong token)
        fail(EXIT_CONFIG, f"the admin refused: {exc}")
    except (KeyboardInterrupt, Stopped) as exc:
        fail(_stop_code(exc), f"interrupted: batch {m.group(1)} runs on at the admin (follow "
                              f"it again: ceylon-submit --watch {token}; ceylon-cancel stops "
                              f"its tasks)" if asked
             else "interrupted: no admin had answered yet")


def _print_batch(report: dict[str, Any], as_json: bool, token: str) -> None:
    """The batch's report (``token``: BATCH@RUN, named first in the JSON as ``batch``, a
    number, and ``watch``)."""
    run = RunReport.from_json(report)
    with reader_may_leave():
        if as_json:
            named = {"batch": int(token.partition("@")[0]), "watch": token, **report}
            typer.echo(json_text(named, indent=2))
        else:
            print_report(run, whole="--json")
    if run.unassigned:
        raise typer.Exit(EXIT_UNASSIGNED)
    if any(not t.success for t in run.tasks) or run.after_failure:
        raise typer.Exit(EXIT_FAILED)


async def _submit(c: AsyncClient, doc: dict[str, Any], wait: bool, sequential: bool,
                  on_submitted: Callable[[Submitted], None], sending: list[bool]
                  ) -> tuple[Submitted, dict[str, Any] | None]:
    """``sending``: see _ask (an admin answered: the batch goes out)."""
    with _progress(wait) as on_progress:
        return await until_stopped(_ask(c, lambda: c.submit_batch(
            doc, wait=wait, sequential=sequential, on_progress=on_progress,
            on_submitted=on_submitted), sending))


def _stop_code(exc: BaseException) -> int:
    """128 + the signal that stopped the program (Ctrl-C: KeyboardInterrupt, 130)."""
    return 128 + (exc.signal if isinstance(exc, Stopped) else signal.SIGINT)


@contextlib.contextmanager
def _progress(wanted: bool) -> Iterator[Callable[[wire.BatchProgress], None] | None]:
    """A batch's progress bar on a terminal (stderr), while the block runs: what feeds it
    (None: no bar, not wanted, not a terminal, or --log-json)."""
    bar = ProgressBarForBatch() if wanted and live_display() else None
    try:
        yield bar.update if bar is not None else None
    finally:
        if bar is not None:
            bar.close()


async def _ask(c: AsyncClient, request: Callable[[], Awaitable[T]],
               answered: list[bool] | None = None) -> T:
    """Connect, make one request, close. ``answered`` is told (True appended) once an admin
    answered, as the request goes out: a program stopped before then sent nothing."""
    async with c:
        if answered is not None:
            answered.append(True)
        return await request()


async def _cancel(c: AsyncClient, typed: list[str], reason: str) -> dict[str, list[Any]]:
    """Each id as typed first; one no task has that reads as a number ("7", "007") then as
    that number: one id never cancels two tasks (a file may hold both 7 and "7")."""
    outcome = await c.cancel(typed, reason)
    numbers: dict[int, list[str]] = {}  # (7 and 007 are one number, asked once)
    for t in outcome["unknown"]:
        # (not str.isdigit: "²" is a digit int() refuses; past 64 bits, no task's id)
        if re.fullmatch(r"-?[0-9]+", t) and int(t) in wire.MSGPACK_INTS:
            numbers.setdefault(int(t), []).append(t)
    if numbers:
        more = await c.cancel(list(numbers), reason)
        for kind in ("cancelled", "stopping", "finished", "was_cancelled"):  # (as typed: "007")
            outcome.setdefault(kind, [])
            outcome[kind] += [t for n in more.get(kind, ()) for t in numbers.get(n, [n])]
        asked = {t for each in numbers.values() for t in each}
        still = {t for n in more["unknown"] for t in numbers[n]}
        outcome["unknown"] = [t for t in outcome["unknown"] if t not in asked or t in still]
    return outcome


@cancel_app.command(help="Cancel tasks on a running admin: queued ones at once, running ones "
                         "are stopped by their worker. Exit 0 when every id was known; 1 when "
                         "one was not (the others are cancelled all the same) or no admin "
                         "answered within --timeout.")
def cancel(
    task_ids: TaskIds, admin_peer: AdminPeer = "127.0.0.1", port: AdminPort = 8000,
    workspace: Workspace = "default", reason: Reason = "cancelled by ceylon-cancel",
    timeout: Timeout = 5.0, token: Token = None, curve_secret: CurveSecret = None,
    admin_key: AdminKey = None, log_level: LogLevel = "WARNING", log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    c = client(admin_peer, port, workspace, token, curve_secret, admin_key, timeout)
    try:
        outcome = asyncio.run(_ask(c, lambda: _cancel(c, task_ids, reason)))
    except (AdminUnreachableError, RejectedError) as exc:
        fail(EXIT_FAILED, str(exc))
    said: dict[str, str] = {}
    for kind, label in (("cancelled", "cancelled"),
                        ("stopping", "stopping (on its worker: queued there or running)"),
                        ("finished", "already finished"),
                        # (before, or just now with a task it depended on)
                        ("was_cancelled", "already cancelled")):
        for t in outcome.get(kind, ()):
            said.setdefault(str(t), label)
    missing = {str(t) for t in outcome["unknown"]}
    maybe = {str(t) for t in outcome.get("maybe_forgotten", ())}
    for t in dict.fromkeys(task_ids):  # in the order typed (each once)
        if t in said:
            with reader_may_leave():
                typer.echo(f"{t}: {said[t]}")
        elif t in missing:
            say(f"{t}: unknown task" + (" (or one the admin forgot with its finished batch: "
                                        "--keep-finished)" if t in maybe else ""),
                level="WARNING")
    if missing:
        raise typer.Exit(EXIT_FAILED)


@keygen_app.command(help="Write a CURVE keypair: DIR/NAME.key (public: give it to the other "
                         "side) and DIR/NAME.key_secret (keep it; mode 600).")
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write the two files.")],
    name: Annotated[str, typer.Option(help="Base name of the files, e.g. admin or Senior.")],
    log_level: LogLevel = "WARNING", log_json: LogJson = False,
) -> None:
    configure_logging(log_level, log_json)
    if not name or "/" in name or name.startswith(".") or not name.isprintable():
        fail(EXIT_CONFIG, f"--name {name!r} must be a plain file name")
    try:
        if (directory / f"{name}.key_secret").exists():
            fail(EXIT_CONFIG, f"{directory / (name + '.key_secret')} exists; not overwriting it")
        public, secret = create_keypair(directory, name)
    except OSError as exc:  # a file where the directory should be, a read-only place...
        fail(EXIT_CONFIG, f"{exc.filename or directory}: {exc.strerror or exc}")
    with reader_may_leave():
        typer.echo(f"public key: {public}\nsecret key: {secret}")


def status_main() -> None:
    status_app()


def submit_main() -> None:
    submit_app()


def cancel_main() -> None:
    cancel_app()


def keygen_main() -> None:
    keygen_app()
