"""The admin's full garbage collections: Python never starts one on its own while an admin
runs; the admin's tick does, when nothing is in flight or once a minute, and cyclic garbage is
still freed. Python's setting is back when the last admin stops."""

import gc
import weakref

from conftest import run

from ceylon_net import Admin, AdminSettings
from ceylon_net.edge.collector import FullCollections


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
    assert gc.get_threshold()[:2] == before[:2]
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
