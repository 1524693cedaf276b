"""What every command-line program shares: option types, logging, signals, exit codes, and
where a client talks to. Every option can also come from a ``CEYLON_*`` environment variable
(the option wins)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from loguru import logger

from ..edge.client import AsyncClient
from ..edge.loop import SIGNALS, wind_down
from ..errors import ConfigError
from ..settings import bracket, check_host

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNASSIGNED, EXIT_NO_ADMIN = 0, 1, 2, 3, 4


def opt(help_: str, env: str, **kw: Any) -> Any:
    return typer.Option(help=help_, envvar=f"CEYLON_{env}", show_envvar=True, **kw)


LogLevel = Annotated[str, opt("Log level: TRACE, DEBUG, INFO, WARNING, ERROR.", "LOG_LEVEL")]
LogJson = Annotated[bool, opt("Log one JSON object per line (for log shippers).", "LOG_JSON")]
Heartbeat = Annotated[float, opt("Seconds between heartbeats (0.1 to 3600).", "HEARTBEAT")]
Liveness = Annotated[int, opt("Missed heartbeats before a peer is declared lost (at least 2).",
                                  "LIVENESS")]
Workspace = Annotated[str, opt("Workspace id; admin and workers must agree.", "WORKSPACE")]
AdminPeer = Annotated[str, opt("Host name or address of the admin.", "ADMIN_PEER")]
AdminPort = Annotated[int, opt("The admin's ROUTER port.", "PORT")]
Token = Annotated[str | None, opt("Shared secret every worker and client must present "
                                  "(checked on registration and requests).", "TOKEN")]
MaxBytes = Annotated[int, opt("Largest message accepted, in bytes (also ZMQ MAXMSGSIZE).",
                              "MAX_MESSAGE_BYTES")]
CurveSecret = Annotated[Path | None, opt("Our CURVE secret key file (ceylon-keygen): "
                                         "encrypts and authenticates.", "CURVE_SECRET")]
AdminKey = Annotated[Path | None, opt("The admin's CURVE public key file (with "
                                      "--curve-secret).", "ADMIN_KEY")]
Timeout = Annotated[float, opt("Seconds to wait for the admin's answer.", "TIMEOUT")]


def app() -> typer.Typer:
    """A one-command program."""
    return typer.Typer(add_completion=True, rich_markup_mode=None)


def configure_logging(level: str, as_json: bool) -> None:
    """Our log lines on stderr, at ``level``, as text or one JSON object a line; what Python
    itself or a library logs with the standard ``logging`` module (asyncio's warnings, say)
    goes the same way, so ``--log-json`` output stays JSON."""
    logger.remove()
    Said.as_json = as_json
    try:
        _to_stderr(level.upper(), as_json)
    except ValueError:  # (said as the level asked for would be: JSON with --log-json)
        _to_stderr("INFO", as_json)
        fail(EXIT_CONFIG, f"unknown --log-level {level!r}")
    logging.basicConfig(handlers=[_ToLoguru()], level=logger.level(level.upper()).no,
                        force=True)
    logging.captureWarnings(True)


def _to_stderr(level: str, as_json: bool) -> None:
    """Log lines at ``level`` and above to stderr; ValueError for a level loguru lacks."""
    # A function sink looks sys.stderr up on every line, so a live progress display that
    # redirects stderr prints log lines above its bars instead of through them.
    # diagnose off: a traceback in the log (a user's callback or handler that raised) shows
    # no local variables' values, which may hold tokens or keys, and may be huge.
    logger.add(lambda line: sys.stderr.write(line), level=level, serialize=as_json,
               format="{time:HH:mm:ss.SSS} | {level: <7} | {message}", diagnose=False)


def live_display() -> bool:
    """Whether to draw live progress bars: stderr is a terminal, and no --log-json (whose
    lines a log shipper reads: escape codes among them are no JSON)."""
    return sys.stderr.isatty() and not Said.as_json


class _ToLoguru(logging.Handler):
    """A standard-library log record, passed on to loguru at its own level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, "{}: {}", record.name,
                                                  record.getMessage())


class Said:
    """How lines for the user go to stderr: with --log-json, as log records (one JSON
    object a line, as everything else there), else as text."""

    as_json = False


def say_error(message: str) -> None:
    """Why the program stops, on stderr: "error: ..." (a record at ERROR with --log-json)."""
    message = named_as_set(message)
    if Said.as_json:
        logger.error(message)
        logger.complete()
    else:
        typer.echo(f"error: {message}", err=True)


def say(message: str, level: str = "INFO") -> None:
    """A line for the user on stderr (a record at ``level`` with --log-json)."""
    if Said.as_json:
        logger.log(level, message)
    else:
        typer.echo(message, err=True)


try:  # (typer 0.28 carries its own click)
    from typer._click.globals import get_current_context as _current_context
except ImportError:  # pragma: no cover (a typer on click)
    from click import get_current_context as _current_context


def named_as_set(message: str) -> str:
    """``message`` with each option whose value came from its ``CEYLON_*`` variable named as
    that variable too ("CEYLON_SKILL (--skill) must be 0-10, got 11"): the user typed no
    --skill, a shell profile set it (click's own errors say so; ours said the option
    only)."""
    ctx = _current_context(silent=True)
    if ctx is None:
        return message
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if not param.envvar or getattr(source, "name", None) != "ENVIRONMENT":
            continue
        var = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
        if var in message:  # (it says so already: "--token / CEYLON_TOKEN")
            continue
        for opt in param.opts:
            message = re.sub(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", f"{var} ({opt})",
                             message)
    return message


def fail(code: int, message: str) -> NoReturn:
    say_error(message)
    raise typer.Exit(code)


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """What the block prints on stdout may find its reader gone (``| head -1``): the rest is
    dropped, quietly, and the program goes on to exit as its run did (click would exit 1, as
    if the run had failed)."""
    try:
        yield
    except BrokenPipeError:
        # (stdout's buffer, flushed at exit, goes nowhere instead of failing again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        logger.debug("stdout's reader went away: the rest of the output is dropped")


def path_str(path: Path | None) -> str | None:
    return None if path is None else str(path)



class Caught:
    """The last stop signal :func:`on_signals` caught (None: none)."""

    signal: int | None = None


@contextlib.asynccontextmanager
async def on_signals(callback: Callable[[], Awaitable[Any]]) -> AsyncIterator[Caught]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP (unless ignored, as under nohup) run
    ``callback`` on the event loop.
    When it ends, a callback still running is cancelled and awaited (none is left pending
    when the loop closes), and from then to the program's exit a signal stops nothing more
    (see :func:`~ceylon_net.edge.loop.wind_down`: the first is ignored, so a run's report
    comes out whole; a second, or any once a signal began the stop, ends it at once).
    Yields what it caught."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[Any]] = set()
    caught = Caught()
    # A program started under nohup (SIGHUP ignored) is meant to outlive its terminal.
    signals = [s for s in SIGNALS
               if s != signal.SIGHUP or signal.getsignal(s) is not signal.SIG_IGN]

    def run_callback(sig: int) -> None:
        caught.signal = sig
        task = loop.create_task(callback())
        running.add(task)
        task.add_done_callback(running.discard)

    for sig in signals:
        loop.add_signal_handler(sig, run_callback, sig)
    try:
        yield caught
    finally:
        wind_down(signals, stopping=caught.signal is not None)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def client(admin_peer: str, port: int, workspace: str, token: str | None,
           curve_secret: Path | None, admin_key: Path | None, timeout: float,
           gone_after: float = 30.0, timeout_option: str = "--timeout") -> AsyncClient:
    """A client of the admin at ADMIN_PEER:PORT with these credentials; a bad option (or
    key file) is exit 2. ``timeout_option``: the option ``timeout`` came from."""
    if not timeout > 0:  # (said here with the option's name; also refuses NaN)
        fail(EXIT_CONFIG, f"{timeout_option} must be > 0, got {timeout}")
    try:
        check_host(admin_peer)  # (the options' names, before they become an address)
        if not 0 <= port <= 65535:  # (0: the settings say what to give instead)
            raise ConfigError(f"--port must be 1-65535, got {port}")
        return AsyncClient(f"{bracket(admin_peer)}:{port}", workspace=workspace, token=token,
                           curve_secret=path_str(curve_secret), admin_key=path_str(admin_key),
                           timeout=timeout, gone_after=gone_after)
    except ConfigError as exc:
        fail(EXIT_CONFIG, str(exc))
