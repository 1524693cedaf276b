"""One error hierarchy. Each class says whose fault it was."""

from __future__ import annotations


class CeylonError(Exception):
    """Base of every error ceylon_net raises on purpose."""


class ConfigError(CeylonError):
    """The user's configuration is wrong (bad option, bad tasks file). CLIs exit 2."""


class UnknownDependency(ConfigError):
    """Work names a task or group, as its dependency, that the admin does not know."""


class TaskFileError(ConfigError):
    """A tasks file cannot be used; the message names the file, the task and the field."""


class LocalProtocolError(CeylonError):
    """We tried to send something the protocol cannot carry (our bug or the caller's misuse)."""


class RemoteProtocolError(CeylonError):
    """A peer sent a frame that does not decode or breaks the wire. Dropped, never fatal."""


class RejectedError(CeylonError):
    """The admin refused this worker (wrong workspace, version, duplicate name...)."""


class AdminUnreachableError(CeylonError):
    """No admin answered within the connect timeout."""


class AdminGoneError(AdminUnreachableError):
    """What this client waited for is gone from the admin: it stopped, or restarted,
    without a journal, or it forgot the batch (--keep-finished). Nothing to follow again."""


class OutsideFailure(CeylonError):
    """The program cannot go on for a reason outside its code (its journal could not be
    written: a full disk): it stops as after a crash, saying why, not as a bug."""


class Crashed(CeylonError):
    """One of the program's own loops raised unexpectedly: a bug, whose traceback is in the
    log. The program stops (the CLIs exit 1) instead of hanging; whoever waits on it hears
    why: this error (``__cause__`` is the original), or TaskFailed for an awaited task."""

    @classmethod
    def by(cls, exc: OutsideFailure) -> Crashed:
        """The program stopped on ``exc``, from outside its code: said as it is."""
        crash = cls(str(exc))
        crash.__cause__ = exc
        return crash

    def again(self) -> Crashed:
        """The same error to raise once more (a fresh one: each raise would otherwise add
        its frames to this one's traceback)."""
        fresh = Crashed(*self.args)
        fresh.__cause__ = self.__cause__
        return fresh


class TaskFailed(CeylonError):
    """A task ended without a result (cancelled, a dependency cancelled, lost with its workers
    too often, no worker could take it, the admin stopped), or unsuccessfully. ``reason`` says
    why; for a failed run it is the remote error text (a traceback for an exception)."""

    def __init__(self, message: str, task_id: object = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.reason = reason


def stopped(reason: str | None) -> str:
    """'stopped (why)' in a message about an admin, without saying it twice: an admin closed
    for no other reason says "admin stopped" ("the admin stopped (admin stopped)" was what a
    client printed)."""
    why = (reason or "").strip()
    return "stopped" if why in ("", "stopped", "admin stopped") else f"stopped ({why})"
