"""The admin's and the workers' garbage collections: Python never starts a full one on its
own while an admin or a worker runs, and a young one only after many more objects; their tick
does a full one when nothing is in flight or once a minute, once for the whole process, and
cyclic garbage is still freed. Python's setting is back when the last one stops."""

import asyncio
import gc
import weakref

from conftest import run

from ceylon_net import Admin, AdminSettings, Worker, WorkerSettings
from ceylon_net.dev.testing import free_port, wait_until
from ceylon_net.edge.collector import YOUNG, FullCollections


class Node:
    pass


def _old_cycle() -> weakref.ref:
    """A reference cycle in the oldest generation, then dropped: only a full collection
    frees it (the admin's task records are such old objects)."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()  # survivors of a full collection stay in the oldest generation
    return weakref.ref(a)


def test_full_collections_are_left_to_the_admin_and_python_s_setting_comes_back():
    before = gc.get_threshold()
    one, two = FullCollections(), FullCollections()
    one.install()
    two.install()
    assert gc.get_threshold()[1] == before[1]
    assert gc.get_threshold()[0] == max(before[0], YOUNG) > 700  # young ones: less often
    assert gc.get_threshold()[2] > 10**8  # never reached: no automatic full collection
    one.uninstall()
    assert gc.get_threshold()[2] > 10**8  # the other admin still runs
    two.uninstall()
    assert gc.get_threshold() == before


def test_the_tick_collects_once_a_quiet_spell_and_once_a_minute_while_busy():
    c = FullCollections(every=60.0, gap=5.0)
    c.install()
    try:
        c.last = 0.0
        assert [c.tick(t, quiet=False) for t in (1.0, 30.0, 59.0)] == [False, False, False]
        assert c.tick(61.0, quiet=False)  # busy for a minute
        assert not c.tick(62.0, quiet=True)  # quiet, but it just collected
        assert c.tick(66.0, quiet=True)  # quiet, 5 s on: once
        assert not c.tick(67.0, quiet=True)
        assert not c.tick(68.0, quiet=False)
        assert not c.tick(69.0, quiet=True)  # a trickle of work: not twice in 5 s
        assert c.tick(71.0, quiet=True)
        assert not c.tick(100.0, quiet=True)
        assert c.tick(131.0, quiet=True)  # a minute of quiet
    finally:
        c.uninstall()
    assert not c.tick(500.0, quiet=True)  # not installed: Python's own collections


def test_many_programs_in_one_process_collect_once_for_a_quiet_spell():
    """250 workers in one process (as bench/many_workers.py runs them), their ticks spread
    over each second, going quiet together: one full collection, not one each; the next
    spell gets its own."""
    programs = [FullCollections(every=60.0, gap=5.0) for _ in range(250)]
    for p in programs:
        p.install()

    def second(start: float, quiet: bool) -> int:
        return sum(p.tick(start + i / 250, quiet) for i, p in enumerate(programs))

    try:
        programs[0].last = 0.0
        assert second(1.0, quiet=False) == 0
        assert [second(t, quiet=True) for t in range(10, 40)] == [1] + [0] * 29
        assert second(41.0, quiet=False) == 0  # work again, then quiet again
        assert sum(second(t, quiet=True) for t in range(42, 80)) == 1
    finally:
        for p in programs:
            p.uninstall()


def test_a_quiet_worker_does_not_collect_while_the_admin_beside_it_is_busy():
    """An admin and its workers in one process (arun_admin): a collection covers the whole
    process, so one idle worker is not a quiet spell; the admin busy, only the minute's."""
    admin, worker = FullCollections(every=60.0, gap=5.0), FullCollections(every=60.0, gap=5.0)
    admin.install()
    worker.install()
    try:
        admin.last = 0.0
        collected = []
        for tenth in range(1, 1300):  # 130 s: the admin ticks every 0.1 s, the worker each 1 s
            now = tenth / 10
            if admin.tick(now, quiet=False):
                collected.append(now)
            if tenth % 10 == 0 and worker.tick(now, quiet=tenth % 20 == 0):
                collected.append(now)
        assert collected == [60.0, 120.0]
        assert [admin.tick(t, quiet=True) for t in (131.0, 136.0)] == [False, False]  # worker busy
        assert worker.tick(137.0, quiet=True)  # now the whole process is quiet
    finally:
        worker.uninstall()
        admin.uninstall()


def test_a_process_that_turned_automatic_collection_off_keeps_it_off():
    before = gc.get_threshold()
    gc.set_threshold(0, before[1], before[2])
    c = FullCollections()
    try:
        c.install()
        assert gc.get_threshold()[0] == 0
    finally:
        c.uninstall()
        gc.set_threshold(*before)


def test_cyclic_garbage_in_the_oldest_generation_is_freed_by_the_tick():
    c = FullCollections()
    c.install()
    try:
        ref = _old_cycle()
        gc.collect(1)  # what Python still runs on its own: the young generations
        assert ref() is not None
        c.last = 0.0
        assert c.tick(c.gap, quiet=True)
        assert ref() is None
    finally:
        c.uninstall()


def test_an_admin_installs_it_while_it_runs():
    before = gc.get_threshold()

    async def body():
        admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0))
        await admin.start()
        try:
            return gc.get_threshold()
        finally:
            await admin.close()

    assert run(body())[2] > 10**8
    assert gc.get_threshold() == before


def test_a_worker_installs_it_while_it_runs():
    """A worker holding many tasks ahead grows its heap as an admin does."""
    before = gc.get_threshold()

    async def body():
        worker = Worker("w", settings=WorkerSettings(name="w", port=free_port()))
        running = asyncio.create_task(worker.arun())  # nobody answers: it keeps trying
        try:
            await wait_until(lambda: gc.get_threshold()[2] > 10**8, 10, "the worker to start")
            return gc.get_threshold()
        finally:
            await worker.stop()
            await asyncio.wait_for(running, 10)

    assert run(body())[0] == max(before[0], YOUNG)
    assert gc.get_threshold() == before
