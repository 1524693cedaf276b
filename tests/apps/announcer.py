"""An admin process that waits for --workers agents to connect, broadcasts --count Notes (at
most --rate a second), waits until every agent confirmed them all (the admin hears that in
their heartbeats), and ends the run. Exit 0 when all confirmed, 1 after --timeout.

    python tests/apps/announcer.py --port 8000 --workers 2 --count 2000 [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from loguru import logger
from notes import Note

from ceylon_net import Admin, AdminSettings


class Announcer(Admin):
    def __init__(self, expected: int, count: int, rate: float, **kw) -> None:
        super().__init__(settings=AdminSettings(**kw))
        self.expected, self.count, self.rate = expected, count, rate
        self.sending: asyncio.Task | None = None

    async def on_agent_connected(self, topic, agent) -> None:
        if len(self.get_connected_agents()) >= self.expected and self.sending is None:
            self.sending = asyncio.create_task(self.send_all())

    async def send_all(self) -> None:
        batch = max(1, int(self.rate / 100))  # paced in steps of 10 ms
        for i in range(self.count):
            await self.broadcast_data(Note(i))
            if (i + 1) % batch == 0:
                await asyncio.sleep(0.01)

    def all_confirmed(self) -> bool:
        workers = self.status()["workers"]
        sent = self.status()["counts"]["broadcasts"]
        return self.sending is not None and self.sending.done() and sent == self.count and \
            len(workers) >= self.expected and \
            all(w["broadcasts_delivered"] >= sent for w in workers)


async def main(args: argparse.Namespace) -> int:
    admin = Announcer(args.workers, args.count, args.rate, port=args.port, bind="0.0.0.0")
    await admin.start()
    deadline = time.monotonic() + args.timeout
    try:
        while not admin.all_confirmed():
            if time.monotonic() > deadline:
                logger.error("not all confirmed: {}", admin.status())
                return 1
            await asyncio.sleep(0.05)
        logger.info("every agent confirmed all {} broadcasts", args.count)
        return 0
    finally:
        await admin.close("all broadcasts confirmed")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    sys.exit(asyncio.run(main(args)))
