"""A `ceylon-submit --wait` client gets its report across two quick kills of the admin (a
reviewing helper's chaos trial). Its WATCH, sent during the first outage, reached the second
admin process, killed before it said a word back; the client, still in the same silence,
WATCHes again REWATCH (10 s) after its last one, while the third admin process kept the
journaled --wait batch for it only 2 x heartbeat x liveness (6 s) and, with --keep-finished
0, forgot it: exit 4, "the admin forgot batch 1". (tests/test_journal.py has the same
without sockets.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess

import pytest

from ceylon_net.dev.testing import Cluster, cli, wait_until


def connected(pid: int, port: int) -> bool:
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return f"pid={pid}," in out


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to see the client "
                    "connected to the second admin")
@pytest.mark.timeout(120)
def test_wait_client_gets_its_report_across_two_quick_admin_kills(tmp_path):
    async def body() -> tuple[int, str, str]:
        async with Cluster(workdir=tmp_path) as c:
            args = ("--journal", str(tmp_path / "j.db"), "--keep-finished", "0")
            a = await c.admin(*args, name="admin0")
            await wait_until(lambda: "serving" in a.stderr(), 20, "admin0 serving")
            await c.worker("w", "--connect-timeout", "60")
            await wait_until(lambda: "joined" in a.stderr(), 20, "the worker joined")
            f = tmp_path / "t.json"
            f.write_text(json.dumps({"tasks": [
                {"id": "t1", "description": "x", "difficulty": 1, "duration": 8}]}))
            client = await c.spawn("client", [
                *cli("ceylon-submit"), str(f), "--admin-peer", "127.0.0.1",
                "--port", str(c.port), "--wait", "--json"])
            await wait_until(lambda: "taken" in client.stderr(), 20, "the batch taken")
            await asyncio.sleep(0.5)
            a.signal(signal.SIGKILL)
            await a.wait(10)
            await asyncio.sleep(3.5)  # the client, silent past 2 s, WATCHes its batch again
            a = await c.admin(*args, name="admin1")
            # killed once the client is connected to it (its WATCH, queued, goes through),
            # before its first heartbeat to the client (one a second)
            await wait_until(lambda: connected(client.process.pid, c.port), 20,
                             "the client connected to admin1", interval=0.01)
            await asyncio.sleep(0.15)
            a.signal(signal.SIGKILL)
            await a.wait(10)
            await c.admin(*args, name="admin2")
            rc = await client.wait(60)
            return rc, client.stdout(), client.stderr()

    rc, out, err = asyncio.run(body())
    assert rc == 0, f"ceylon-submit --wait exit {rc}: {err.strip().splitlines()[-1]}"
    report = json.loads(out)
    assert [t["success"] for t in report["tasks"]] == [True]
