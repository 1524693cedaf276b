"""Assignments to one worker go out in frames no larger than the message limit, however far
ahead the admin feeds it: fast tasks with large arguments must not be batched into a frame the
worker's socket refuses (its connection would drop, and the same batch would be sent again)."""

import asyncio
import json

import zmq
from conftest import run
from test_broadcast_repair import ScriptedAdmin
from test_handlers_and_poison import APP, APP_ENV

from ceylon_net import Worker, handler, wire
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.settings import WorkerSettings
from ceylon_net.wire import Kind


def test_fast_tasks_with_large_arguments_are_sent_in_frames_within_the_limit(tmp_path,
                                                                          tasks_file):
    # 200 tasks of 64 KiB each, run as fast as they come: 12.5 MiB in all, and the admin feeds
    # the worker hundreds ahead once it measures them, more than fits a 1 MiB message.
    blob = "x" * 65_536
    tasks = [{"id": i, "description": "echo", "difficulty": 1, "handler": "echo_later",
              "kwargs": {"value": blob, "delay": 0}} for i in range(200)]
    path = tasks_file(tasks)
    report_path = tmp_path / "report.json"

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--expect-workers", "1",
                                  "--report-json", str(report_path))
            worker = await c.worker("w", *APP, env=APP_ENV)
            code = await admin.wait(60)
            return code, admin.stderr(), await worker.wait(15), worker.stderr()

    code, admin_err, worker_code, worker_err = run(body())
    assert (code, worker_code) == (0, 0), admin_err + worker_err
    report = json.loads(report_path.read_text())
    assert report["success_rate"] == 1.0
    assert all(t["value"] == {"echo": blob} for t in report["tasks"])
    assert "registering again" not in worker_err and "never got" not in admin_err


BIG = "x" * 65_536


@handler("big_result")
def big_result(i: int) -> str:
    return BIG


class ForgetfulAdmin(ScriptedAdmin):
    """A scripted admin with ceylon-admin's 1 MiB message limit that never acknowledges a
    result, and then forgets the worker: it must register again holding them."""

    beat = 30.0  # no heartbeat falls due while the test runs

    def __init__(self) -> None:
        super().__init__()
        self.router.setsockopt(zmq.MAXMSGSIZE, wire.DEFAULT_MAX_MESSAGE_BYTES)
        self.results: list[int] = []

    def heard_from(self, env: wire.Envelope) -> None:
        if env.kind == Kind.RESULT:
            self.results += [r.task_id for r in wire.unpack_batch(TaskResult, env.payload)]

    async def assign(self, tasks: list[TaskAssignment]) -> None:
        header = wire.make_header("default", "admin", "TaskAssignment")
        await self.router.send_multipart(
            [self.peer, *wire.encode_frames(Kind.ASSIGN, header, wire.pack_batch(tasks))])


def test_a_worker_holding_more_results_than_a_message_holds_registers_again():
    async def body():
        admin = ForgetfulAdmin()
        serving = asyncio.create_task(admin.serve())
        worker = Worker("w", settings=WorkerSettings(name="w", capacity=8, port=admin.port))
        running = asyncio.create_task(worker.arun())
        try:
            await wait_until(lambda: admin.hellos, 10, "the worker's HELLO")
            tasks = [TaskAssignment(Task(i, "big", 1, handler="big_result", args=[i]), "w", 1)
                     for i in range(24)]  # 24 x 64 KiB results: 1.5 MiB
            await admin.assign(tasks)
            await wait_until(lambda: len(admin.results) == 24, 20, "24 results, never acked")
            admin.results.clear()
            await admin.router.send_multipart(
                [admin.peer, *admin.frames(Kind.REJECT, wire.Reject("who are you?"))])
            await wait_until(lambda: len(admin.hellos) == 2 and len(admin.results) >= 1, 20,
                             "the worker to register again and send what did not fit")
            await wait_until(lambda: len(admin.results) + len(admin.hellos[1].results) >= 24,
                             10, "every result again")
            return admin.hellos[1], admin.results
        finally:
            await worker.stop()
            for t in (running, serving):
                t.cancel()
            admin.close()

    hello, after = run(body())
    in_hello = [wire.from_wire(TaskResult, r).task_id for r in hello.results]
    assert 0 < len(in_hello) < 24 and sorted(in_hello + after) == list(range(24))
    assert {t for t, _ in hello.running} >= set(after)  # held, so not requeued meanwhile
