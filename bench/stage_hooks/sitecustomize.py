"""Loaded by the ``ceylon-worker`` processes that bench/stages.py starts (this directory is put
on their PYTHONPATH, with CEYLON_BENCH_TRACE naming a directory): the worker's Python side,
timed. Each receive of a batch of frames, each task's start and end and each send is noted
with ``time.monotonic_ns()`` (one clock for every process of the machine) and written to
CEYLON_BENCH_TRACE/PID.txt at exit."""

import atexit
import os
import time

_DIR = os.environ.get("CEYLON_BENCH_TRACE")
if _DIR:
    import ceylon_net.edge.transport as _transport
    import ceylon_net.edge.worker as _worker

    _log: list[tuple[str, int]] = []
    _clock = time.monotonic_ns
    _run_task, _recv_batch = _worker.Worker.run_task, _transport.WorkerSockets.recv_batch
    _send_soon, _send = _transport.WorkerSockets.send_soon, _transport.WorkerSockets.send

    async def run_task(self, task):
        _log.append(("start", _clock()))
        result = await _run_task(self, task)
        _log.append(("end", _clock()))
        return result

    async def recv_batch(self, *args, **kwargs):
        batch = await _recv_batch(self, *args, **kwargs)
        _log.append(("recv", _clock()))
        return batch

    def send_soon(self, *args, **kwargs):
        _log.append(("send", _clock()))
        return _send_soon(self, *args, **kwargs)

    async def send(self, *args, **kwargs):
        _log.append(("send", _clock()))
        return await _send(self, *args, **kwargs)

    _worker.Worker.run_task = run_task
    _transport.WorkerSockets.recv_batch = recv_batch
    _transport.WorkerSockets.send_soon = send_soon
    _transport.WorkerSockets.send = send

    @atexit.register
    def _dump() -> None:
        with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "w") as f:
            f.writelines(f"{kind} {t}\n" for kind, t in _log)
