"""Clients of a running admin that are not workers: ask for status, submit a batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import wire
from ..errors import AdminUnreachableError, RejectedError
from ..wire import DEFAULT_MAX_MESSAGE_BYTES, BatchProgress, Kind
from .transport import Client, CurveKeys


async def ask_status(endpoint: str, workspace: str, timeout: float, token: str | None = None,
                     curve: CurveKeys | None = None) -> dict[str, Any]:
    """The admin's status snapshot. AdminUnreachableError / RejectedError otherwise."""
    client = Client(endpoint, DEFAULT_MAX_MESSAGE_BYTES, curve)
    try:
        header = wire.make_header(workspace, "ceylon-status", token=token)
        frames = await client.ask(wire.encode_frames(Kind.STATUS, header), timeout)
        env = _answer(frames, endpoint, timeout)
        return wire.unpack(wire.Status, env.payload).snapshot
    finally:
        client.close()


async def cancel_tasks(endpoint: str, workspace: str, task_ids: list[Any], reason: str,
                       timeout: float, token: str | None = None,
                       curve: CurveKeys | None = None) -> dict[str, list[Any]]:
    """Ask the admin to cancel tasks; returns {"cancelled", "stopping", "finished",
    "unknown"} lists of ids."""
    client = Client(endpoint, DEFAULT_MAX_MESSAGE_BYTES, curve)
    try:
        header = wire.make_header(workspace, "ceylon-cancel", "Cancel", token=token)
        payload = wire.pack(wire.Cancel([[t, 0] for t in task_ids], reason))
        frames = await client.ask(wire.encode_frames(Kind.CANCEL, header, payload), timeout)
        env = _answer(frames, endpoint, timeout)
        return wire.unpack(wire.Status, env.payload).snapshot["cancel"]
    finally:
        client.close()


async def submit(
    endpoint: str,
    workspace: str,
    doc: dict[str, Any],
    *,
    wait: bool,
    sequential: bool,
    connect_timeout: float,
    silence_timeout: float = 10.0,
    on_progress: Callable[[BatchProgress], None] | None = None,
    token: str | None = None,
    curve: CurveKeys | None = None,
) -> tuple[wire.Submitted, dict[str, Any] | None]:
    """Send a batch; with ``wait``, follow its progress and return its report too.

    The admin sends progress every heartbeat while the batch runs; ``silence_timeout``
    seconds without a word from it means it is gone (AdminUnreachableError).
    """
    client = Client(endpoint, DEFAULT_MAX_MESSAGE_BYTES, curve)
    try:
        header = wire.make_header(workspace, "ceylon-submit", "Submission", token=token)
        payload = wire.pack(wire.Submission(doc, wait, sequential))
        frames = await client.ask(wire.encode_frames(Kind.SUBMIT, header, payload),
                                  connect_timeout)
        env = _answer(frames, endpoint, connect_timeout)
        submitted = wire.unpack(wire.Submitted, env.payload)
        if not wait:
            return submitted, None
        what = f"lost the admin at {endpoint}: no word for {silence_timeout:g} s while " \
               f"waiting for batch {submitted.batch}"
        return submitted, await _follow(client, silence_timeout, what, on_progress)
    finally:
        client.close()


async def _follow(client: Client, silence_timeout: float, what: str,
                  on_progress: Callable[[BatchProgress], None] | None) -> dict[str, Any]:
    """A batch's progress until its report; AdminUnreachableError(what) on silence."""
    last_word = time.monotonic()
    while True:
        frames = await client.receive(1.0)
        if frames is None:
            if time.monotonic() - last_word > silence_timeout:
                raise AdminUnreachableError(what)
            continue
        last_word = time.monotonic()
        env = wire.decode_frames(frames)
        if env.kind == Kind.PROGRESS and on_progress is not None:
            on_progress(wire.unpack(BatchProgress, env.payload))
        elif env.kind == Kind.REPORT:
            return wire.unpack(wire.BatchReport, env.payload).report


def _answer(frames: list[bytes] | None, endpoint: str, timeout: float) -> wire.Envelope:
    if frames is None:
        raise AdminUnreachableError(f"no admin answered at {endpoint} within {timeout:g} s")
    env = wire.decode_frames(frames)
    if env.kind == Kind.REJECT:
        raise RejectedError(wire.unpack(wire.Reject, env.payload).reason)
    return env
