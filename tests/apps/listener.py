"""A worker process that records every Note broadcast it receives, in order, and writes the
numbers to --out as JSON when the run ends (or on SIGTERM).

    python tests/apps/listener.py --name L1 --port 8000 [--admin-peer HOST] --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from loguru import logger
from notes import Note

from ceylon_net import Worker, on_message


class Listener(Worker):
    def __init__(self, name: str, stall: float = 0.0, **kw) -> None:
        super().__init__(name, **kw)
        self.notes: list[int] = []
        self.stall = stall

    @on_message(type=Note)
    async def on_note(self, note: Note) -> None:
        self.notes.append(note.n)
        if self.stall:
            time.sleep(self.stall)  # blocks the loop once, on purpose: its queues overflow
            self.stall = 0.0


async def main(args: argparse.Namespace) -> int:
    w = Listener(args.name, args.stall, admin_peer=args.admin_peer, admin_port=args.port,
                 workspace_id=args.workspace, connect_timeout=args.connect_timeout)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(w.stop()))
    try:
        await w.arun()
    finally:
        Path(args.out).write_text(json.dumps(w.notes))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin-peer", default="127.0.0.1")
    p.add_argument("--workspace", default="default")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--out", required=True)
    p.add_argument("--stall", type=float, default=0.0,
                   help="seconds the first note blocks the worker (its queues overflow)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    sys.exit(asyncio.run(main(args)))
