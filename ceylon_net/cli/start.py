"""Where the programs start: their console scripts call these. Loading a program takes some
0.2 s (zmq, rich, typer); a Ctrl-C meanwhile ends it quietly with exit 130, as one later does,
instead of a KeyboardInterrupt traceback from the middle of an import."""

from __future__ import annotations

# (_signal, the C module: "signal" builds its enums first, a few ms more of the window)
import _signal
import importlib
import os
from types import FrameType


def _while_loading(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)  # (nothing started yet: nothing to stop, flush or say)


# Set as this module loads, before the program's imports; a program started in the background
# ignores SIGINT: it goes on ignoring it.
_OURS = _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
if _OURS:
    _signal.signal(_signal.SIGINT, _while_loading)


def _start(module: str, function: str) -> None:
    """Import ``module`` of this package, Ctrl-C ending the program quietly meanwhile, then
    run its ``function`` with SIGINT Python's default again."""
    main = getattr(importlib.import_module(module, __package__), function)
    if _OURS and _signal.getsignal(_signal.SIGINT) is _while_loading:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    main()


def admin() -> None:
    _start(".admin", "main")


def worker() -> None:
    _start(".worker", "main")


def status() -> None:
    _start(".clients", "status_main")


def submit() -> None:
    _start(".clients", "submit_main")


def cancel() -> None:
    _start(".clients", "cancel_main")


def keygen() -> None:
    _start(".clients", "keygen_main")
