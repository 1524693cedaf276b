"""The Python API the tutorials use, in one process over real loopback sockets."""

import asyncio
import re
import socket
import time

import pytest
from conftest import run

from ceylon_net import (
    Admin,
    AdminSettings,
    Task,
    TaskManager,
    TaskMessage,
    TaskResult,
    Worker,
    message,
    on_message,
)
from ceylon_net.dev.testing import free_port, wait_until
from ceylon_net.errors import LocalProtocolError


@message
class Greeting:
    text: str
    n: int = 0


def _admin(**kw):
    return Admin(settings=AdminSettings(bind="127.0.0.1", port=0, **kw))


class Listener(Worker):
    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.greetings: list[tuple[str, str]] = []
        self.raw: list[bytes] = []

    @on_message(type=Greeting)
    async def on_greeting(self, data: Greeting, agent_id: str, time: float):
        self.greetings.append((agent_id, data.text))

    async def on_message(self, agent_id, data, time):
        self.raw.append(data)


class Boss(Admin):
    def __init__(self):
        super().__init__(settings=AdminSettings(bind="127.0.0.1", port=0))
        self.greetings: list[str] = []
        self.joined: list[str] = []

    async def on_agent_connected(self, topic, agent):
        self.joined.append(agent.name)

    @on_message(type=Greeting)
    async def on_greeting(self, data: Greeting):
        self.greetings.append(data.text)
        raise RuntimeError("a failing handler must not hurt the admin")


def test_broadcast_send_and_handlers_across_agents():
    async def body():
        boss = Boss()
        a, b = Listener("a"), Listener("b")
        runner = asyncio.create_task(boss.arun_admin(b"", [a, b]))
        await wait_until(lambda: len(boss.get_connected_agents()) == 2, 10, "two workers")
        # SUB joins late: repeat the broadcast until it is seen, then check nothing else.
        for i in range(100):
            await a.broadcast_data(Greeting(f"hello {i}"))
            await asyncio.sleep(0.02)
            if b.greetings:
                break
        await b.send("a", Greeting("direct from b"))
        await boss.send("b", b"raw bytes from the boss")
        await boss.broadcast(b"raw broadcast")
        await wait_until(lambda: ("b", "direct from b") in a.greetings, 10, "direct message")
        await wait_until(lambda: b"raw bytes from the boss" in b.raw, 10, "admin direct")
        await wait_until(lambda: b"raw broadcast" in a.raw, 10, "admin broadcast")
        await wait_until(lambda: boss.greetings, 10, "admin handler")
        agents = {d.name: d for d in boss.get_connected_agents()}
        await boss.stop()
        await asyncio.wait_for(runner, 10)
        return boss, a, b, agents

    boss, a, b, agents = run(body())
    assert sorted(boss.joined) == ["a", "b"]
    assert all(sender == "a" for sender, _ in b.greetings)
    assert not any(sender == "a" for sender, _ in a.greetings)  # no echo of one's own broadcast
    assert boss.greetings[0].startswith("hello")
    assert agents["a"].host == "127.0.0.1"
    assert agents["a"].skill == 10


class Counting(Worker):
    """Counts how many of its tasks run at once."""

    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.now = 0
        self.peak = 0

    async def run_task(self, task: Task) -> TaskResult:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.01)
            return TaskResult(task.id, self.name, True)
        finally:
            self.now -= 1


def test_run_tasks_respects_capacity_and_reports_every_task_once():
    async def body():
        admin = _admin()
        workers = [Counting(f"w{i}", max_concurrent_tasks=2) for i in range(3)]
        runner = asyncio.create_task(admin.arun_admin(b"", workers))
        await wait_until(lambda: len(admin.get_connected_agents()) == 3, 10, "workers")
        report = await asyncio.wait_for(
            admin.run_tasks([Task(i, f"t{i}", 1 + i % 10) for i in range(60)]), 30)
        single = await asyncio.wait_for(admin.execute(Task("one", "single", 3)), 10)
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return report, single, workers

    report, single, workers = run(body())
    assert sorted(t.id for t in report.tasks) == list(range(60))
    assert report.success_rate == 1.0
    assert single.success and single.task_id == "one"
    assert max(w.peak for w in workers) == 2
    assert sum(w.tasks_run for w in workers) == 61


def test_a_task_no_worker_could_be_sent_is_refused_at_submission_and_nothing_is_queued():
    import pytest

    from ceylon_net.errors import ConfigError

    admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=0))
    bad = Task("bad", "a set is not on the wire", args=[{1, 2}])
    with pytest.raises(ConfigError, match=r"task 'bad' cannot be sent to a worker: .*'set'"):
        admin.submit([Task("good", "x"), bad])
    assert admin.status()["counts"]["total"] == 0  # all or nothing
    admin.submit([Task("good", "x", args=[Task("nested", "messages travel")])])
    assert admin.status()["counts"]["total"] == 1
    # Tasks without arguments are not packed to check, but an odd one still is, among many
    # plain tasks: an empty set for args, an object for a description, and values of plain
    # types that msgpack cannot carry (an int out of its range, a lone surrogate).
    plain = [Task(f"p{i}", "x") for i in range(1000)]
    for odd in (Task("empty set", "x", args=set()), Task("object", object()),  # type: ignore[arg-type]
                Task(2**64, "x"), Task(-(2**63) - 1, "x"), Task("\ud800", "x"),
                Task("surrogate", "bad \udcff name")):
        with pytest.raises(ConfigError, match=f"task {re.escape(repr(odd.id))} cannot be sent "
                                              f"to a worker"):
            admin.submit([*plain, odd])
    admin.submit([Task("ünïcode", "déscription")])  # not ASCII, but fine: packed, and taken
    assert admin.status()["counts"]["total"] == 2

    async def execute() -> None:
        await admin.execute(bad)

    with pytest.raises(ConfigError, match="task 'bad' cannot be sent"):
        run(execute())


def test_a_message_handler_that_exits_is_logged_and_the_agent_lives_on():
    """sys.exit() or KeyboardInterrupt in an @on_message handler is the handler's, as an
    exception is: logged, not the end of the process (with an admin in it, say)."""
    from ceylon_net.edge.agent import _handle

    def leaves(data):
        raise SystemExit(5)

    def interrupted(data):
        raise KeyboardInterrupt

    async def body():
        for fn in (leaves, interrupted):
            await _handle("w", "peer", "hello", (fn, "hello"))  # returns: nothing escapes

    run(body())


def test_a_hook_that_exits_is_logged_and_the_agent_lives_on():
    """As a message handler: sys.exit() in on_agent_connected (or another hook) ended
    run_admin, and asyncio said 'Task exception was never retrieved'."""
    from ceylon_net.edge.agent import _guard

    async def leaves():
        raise SystemExit(7)

    async def body():
        await _guard(leaves(), "admin", "on_agent_connected")  # returns: nothing escapes

    run(body())


@message
class Blob:
    n: int
    data: bytes = b""


def test_a_message_that_could_not_arrive_is_refused_at_send_and_the_rest_still_arrive():
    """Over --max-message-bytes the admin's socket would drop it with the connection, and
    what was sent behind it; a str where the type says int every receiver would drop. Both
    are refused at the sender, saying why, from a worker and from the admin alike."""
    from ceylon_net.errors import LocalProtocolError

    async def body():
        boss = _admin(max_message_bytes=64 * 1024)
        a, b = Listener("a"), Listener("b")
        got: list[int] = []
        b._typed[Blob] = (lambda blob: got.append(blob.n), False)
        runner = asyncio.create_task(boss.arun_admin(b"", [a, b]))
        await wait_until(lambda: len(boss.get_connected_agents()) == 2, 10, "two workers")
        refused = []
        for i in range(100):
            try:
                await a.broadcast_data(Blob(i, b"x" * (100_000 if i == 50 else 100)))
            except LocalProtocolError as exc:
                refused.append((i, str(exc)))
        await wait_until(lambda: len(got) == 99, 10, "the other 99 broadcasts")
        errors = []
        for send in (lambda: a.broadcast_data(Blob("one")), lambda: a.send("b", Blob("one")),
                     lambda: boss.broadcast(b"x" * 100_000),
                     lambda: boss.send("b", Blob(1, b"x" * 100_000)),
                     lambda: boss.broadcast_data(Blob("one"))):
            try:
                await send()
            except LocalProtocolError as exc:
                errors.append(str(exc))
        await boss.stop()
        await asyncio.wait_for(runner, 10)
        return refused, got, errors

    refused, got, errors = run(body())
    assert [i for i, _ in refused] == [50]
    assert "Blob is 100,0" in refused[0][1] and "over the 64,512 a message may carry " \
           "(--max-message-bytes)" in refused[0][1]
    assert got == [i for i in range(100) if i != 50]
    assert len(errors) == 5, errors
    assert errors[0] == errors[1] == errors[4] == \
        "the receivers would drop this Blob: Blob.n: expected int, got str"
    assert "a message of raw bytes is 100,000 bytes encoded" in errors[2]


class Verbose(Worker):
    """Fails with long error texts: a handler's traceback, and an override's own text."""

    async def run_task(self, task: Task) -> TaskResult:
        if task.id == "raised":
            raise ValueError("x" * 30_000)
        return TaskResult(task.id, self.name, False, error="é" * 20_000 + "\nthe last line")


def test_a_failure_whose_error_text_is_over_the_message_limit_is_cut_to_fit_not_lost():
    """A traceback is cut at 65,536 characters whatever --max-message-bytes is: at 16 KiB
    the result went out whole, the admin's socket dropped it with the connection, the
    worker sent it again every two heartbeats, and execute() waited for ever."""
    async def body():
        admin = _admin(max_message_bytes=16 * 1024)
        worker = Verbose("w")
        runner = asyncio.create_task(admin.arun_admin(b"", [worker]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        got = [await asyncio.wait_for(admin.execute(Task(i, "fails", 1)), 10)
               for i in ("raised", "returned")]
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return got

    raised, returned = run(body())
    for r in (raised, returned):
        assert not r.success
        assert "characters in all: cut here) ..." in r.error
        assert len(r.error.encode()) <= 8 * 1024
    assert raised.error.startswith("Traceback (most recent call last):")
    assert raised.error.splitlines()[-1].startswith("ValueError: xxx")
    assert returned.error.startswith("éé") and returned.error.endswith("\nthe last line")


def test_a_message_of_a_type_this_process_does_not_know_is_said_once_a_type_not_each_time():
    """The admin relays workers' broadcasts of their own types, which ceylon-admin never
    imports: that is normal, and a flood of 'dropped message' warnings (one per broadcast)
    said otherwise."""
    from loguru import logger

    from ceylon_net import wire

    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="DEBUG")
    try:
        admin = _admin()
        for i in range(3):
            header = wire.make_header("default", "a", "TheirOwnType")
            admin._deliver(header, wire.packb({"n": i}), admin.limits)
        admin._deliver(wire.make_header("default", "a", "AnotherOne"), b"\x80", admin.limits)
    finally:
        logger.remove(sink)
    assert said == [
        "admin: messages of type 'TheirOwnType' (from a first) are not delivered here: no "
        "@message class of that name is imported in this process",
        "admin: messages of type 'AnotherOne' (from a first) are not delivered here: no "
        "@message class of that name is imported in this process"]


def test_a_workers_message_to_an_agent_nobody_knows_is_said_to_the_sender_too():
    """The admin's own send() to an unknown name raises at once; a worker's goes through
    the admin, which drops it: the worker is told, and says so in its log."""
    from loguru import logger

    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")

    async def body():
        boss = _admin()
        a = Listener("a")
        runner = asyncio.create_task(boss.arun_admin(b"", [a]))
        await wait_until(lambda: len(boss.get_connected_agents()) == 1, 10, "the worker")
        await a.send("nobody", Greeting("hello?"))
        await wait_until(lambda: any("was not delivered" in m for m in said), 10, "the notice")
        await boss.stop()
        await asyncio.wait_for(runner, 10)

    try:
        run(body())
    finally:
        logger.remove(sink)
    assert "a: a message to 'nobody' was not delivered: no connected agent of that name" in said


def test_a_task_no_worker_could_read_is_refused_at_submit_and_the_admin_goes_on():
    """Through the Python API a Task's fields are whatever the program put there: an id of
    1.5, a difficulty of '3' or 2 MB of arguments were queued, dropped by the worker (or
    stopped the admin's tick loop), and the call, and every later one, waited for ever."""
    from ceylon_net.errors import ConfigError

    bad = [Task(1.5, "float id"), Task((1, 2), "tuple id"), Task("d", 5),
           Task("diff", "x", "3"), Task("dur", "x", duration="1"),
           Task("big", "x", handler="echo", args=["x" * 2_000_000]),
           Task("hard", "x", 11), Task("forever", "x", duration=float("inf"))]
    deep: list = []
    for _ in range(600):  # (encoding the assignment ran the admin out of stack: it stopped)
        deep = [deep]
    bad += [Task("deep", "x", handler="echo", args=deep), Task("huge", "x", duration=10**30),
            Task("wide", "x", handler="echo", args=[list(range(100_001))])]
    group = TaskManager.create_task_group("g", "", [TaskMessage("sub", "sub", "", None,
                                                                difficulty=11)])

    async def body():
        admin = _admin()
        runner = asyncio.create_task(admin.arun_admin(b"", [Counting("w")]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        refused = []
        for task in bad:
            for call in (lambda t=task: admin.submit([t]), lambda t=task: admin.execute(t)):
                try:
                    result = call()
                    if asyncio.iscoroutine(result):
                        await asyncio.wait_for(result, 5)
                except ConfigError as exc:
                    refused.append(str(exc))
        try:
            admin.submit_groups([group])  # (a group's tasks were not looked at)
        except ConfigError as exc:
            refused.append(str(exc))
        ok = await asyncio.wait_for(admin.execute(Task("ok", "fine")), 10)
        total = admin.status()["counts"]["total"]
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return refused, ok, total

    refused, ok, total = run(body())
    assert len(refused) == 2 * len(bad) + 1, refused
    assert "task 1.5 cannot be sent to a worker: Task.id: " in refused[0]
    assert "task 'diff' cannot be sent to a worker: Task.difficulty: expected int" in refused[6]
    assert "task 'big' is 2,000,0" in refused[10] and "a message may carry" in refused[10]
    # As a tasks file is held to: given up as unassignable after 10 s, or never ending.
    assert refused[12:] == ["task 'hard': difficulty must be 1-10, got 11"] * 2 + [
        "task 'forever': duration must be a number of seconds from 0 to 1e9, got inf"] * 2 + [
        "task 'deep': args nests lists and maps more than 100 deep"] * 2 + [
        f"task 'huge': duration must be a number of seconds from 0 to 1e9, got {10**30}"] * 2 + [
        "task 'wide': args has a list of 100,001 items (at most 100,000)"] * 2 + [
        "task 'sub': difficulty must be 1-10, got 11"]
    assert ok.success and total == 1  # nothing of the refused ones was queued


@pytest.mark.parametrize("bad", [
    Task(1.5, "float id"), Task((1, 2), "tuple id"), Task("d", 5), Task("diff", "x", "3"),
    Task("dur", "x", duration="1"), Task("hard", "x", 11),
    Task("forever", "x", duration=float("inf")), Task("nan", "x", timeout=float("nan")),
    Task("role", "x", required_role=3), Task("set", "x", handler="echo", args=[{1}]),
    Task("kw", "x", handler="echo", kwargs={"a": {2}}), Task("none", "x", args=None),
    Task(2**64, "too big an id"), Task("\udc80", "a lone surrogate"),
    Task("desc", "\udc80 in it"), Task("prio", "x", priority=2**70),
    Task("lowprio", "x", priority=-2**63 - 1),
    Task("intkey", "x", handler="echo", args=[{1: "a"}]),
    Task("intkw", "x", handler="echo", kwargs={1: 2})],
    ids=lambda t: repr(t.id))
def test_one_task_no_worker_could_read_in_a_large_batch_refuses_the_batch(bad):
    """A large batch is looked at in passes over it, not a task at a time: one bad task
    anywhere in it is still found and named, as in a batch of one."""
    from ceylon_net.edge.admin import check_sendable
    from ceylon_net.errors import ConfigError

    plain = [Task(i, "plain") for i in range(1000)] if type(bad.id) is not str else \
        [Task(f"t{i}", "plain") for i in range(1000)]
    check_sendable(plain, 1 << 20)  # (nothing to say)
    with pytest.raises(ConfigError) as alone:
        check_sendable([bad], 1 << 20)
    with pytest.raises(ConfigError) as among:
        check_sendable([*plain[:500], bad, *plain[500:]], 1 << 20)
    assert str(among.value) == str(alone.value)


@pytest.mark.parametrize(("field", "value"), [
    ("difficulty", 1.0), ("difficulty", True), ("priority", 0.0), ("priority", False),
    ("duration", True), ("timeout", True)])
def test_a_field_equal_to_the_others_but_of_another_type_is_found_in_a_large_batch(field,
                                                                                    value):
    """A set of the batch's fields holds 1, 1.0 and True as one: a difficulty of 1.0 among
    999 of 1 was let through, and the worker dropped the task (and its frame) each time it
    was sent, for ever (a review's finding). It is refused, named, as alone."""
    from ceylon_net.edge.admin import check_sendable
    from ceylon_net.errors import ConfigError

    def task(i: int) -> Task:
        return Task(i, "plain", difficulty=1, priority=0, duration=1, timeout=1)

    odd = task(500)
    setattr(odd, field, value)
    plain = [task(i) for i in range(1000)]
    check_sendable(plain, 1 << 20)
    with pytest.raises(ConfigError) as alone:
        check_sendable([odd], 1 << 20)
    with pytest.raises(ConfigError) as among:
        check_sendable([*plain[:500], odd, *plain[501:]], 1 << 20)
    assert str(among.value) == str(alone.value)
    assert field in str(among.value)


def test_a_priority_or_a_map_key_the_wire_cannot_carry_is_refused_at_submit():
    """Let through, a priority past 64 bits stopped the admin as the task was assigned (with
    every task it held), and a map with an int key in the arguments was dropped by each
    worker it was sent to, execute() waiting for ever (a review of the Python API)."""
    from ceylon_net.errors import ConfigError

    bad = [(Task("prio", "x", priority=2**70),
            f"task 'prio': priority must be int (64 bits), got {2**70}"),
           (Task("intkey", "x", handler="echo", args=[{1: "a"}]),
            "task 'intkey': args has a map with a key of type int (1): a map's keys on the "
            "wire are strings"),
           (Task("intkw", "x", handler="echo", kwargs={1: 2}),
            "task 'intkw': kwargs has a map with a key of type int (1): a map's keys on the "
            "wire are strings")]

    async def body():
        admin = _admin()
        runner = asyncio.create_task(admin.arun_admin(b"", [Counting("w")]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        refused = []
        for task, _ in bad:
            for call in (lambda t=task: admin.submit([t]), lambda t=task: admin.execute(t)):
                with pytest.raises(ConfigError) as exc:
                    result = call()
                    if asyncio.iscoroutine(result):
                        await asyncio.wait_for(result, 5)
                refused.append(str(exc.value))
        ok = await asyncio.wait_for(admin.execute(Task("ok", "fine")), 10)
        total, failure = admin.status()["counts"]["total"], admin.failure
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return refused, ok, total, failure

    refused, ok, total, failure = run(body())
    assert refused == [why for _, why in bad for _ in range(2)]
    assert ok.success and total == 1 and failure is None


@pytest.mark.parametrize(("priority", "why"), [
    (2**70, f"group 'g': priority must be int (64 bits), got {2**70}"),
    ("high", "group 'g': priority must be int (64 bits), got 'high'"),
    (1.5, "group 'g': priority must be int (64 bits), got 1.5")])
def test_a_group_whose_priority_the_wire_cannot_carry_is_refused_at_submit(priority, why):
    """A group's priority went unlooked at: past 64 bits it stopped the admin as its task was
    assigned, a string stopped it at the next submission, a float had every worker drop
    its task and execute() wait for ever (a review)."""
    from ceylon_net.errors import ConfigError

    async def body():
        admin = _admin()
        runner = asyncio.create_task(admin.arun_admin(b"", [Counting("w")]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        group = TaskManager.create_task_group("g", "", [TaskMessage("s1", "s1", "sub", 0.01)])
        group.priority = priority
        with pytest.raises(ConfigError) as refused:
            admin.submit_groups([group])
        ok = await asyncio.wait_for(admin.execute(Task("ok", "fine")), 10)
        total, failure = admin.status()["counts"]["total"], admin.failure
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return str(refused.value), ok, total, failure

    refused, ok, total, failure = run(body())
    assert refused == why
    assert ok.success and total == 1 and failure is None


def test_a_task_changed_after_submit_into_what_the_wire_cannot_carry_fails_alone():
    """Looked at as it was submitted, a task queued (no free slot) whose arguments the
    program then changed into what the wire cannot carry stopped the admin as it was
    assigned (LocalProtocolError in its loop), with every task it held. It fails, saying
    why; the admin and the rest go on."""
    async def body():
        admin = _admin(prefetch=0)  # (no pipelining: the second waits at the admin)
        runner = asyncio.create_task(admin.arun_admin(b"", [Worker("w")]))
        await wait_until(lambda: len(admin.get_connected_agents()) == 1, 10, "the worker")
        first = asyncio.create_task(admin.execute(Task("first", "x", duration=0.3)))
        await wait_until(lambda: admin.status()["counts"]["running"] == 1, 10, "it to run")
        changed = Task("changed", "x", args=[[1]])
        second = asyncio.create_task(admin.execute(changed))
        await wait_until(lambda: admin.status()["counts"]["queued"] == 1, 10, "it queued")
        changed.args[0] = {1, 2}  # (a set: the wire cannot carry it)
        results = await asyncio.wait_for(asyncio.gather(first, second,
                                                        return_exceptions=True), 10)
        after = await asyncio.wait_for(admin.execute(Task("after", "y")), 10)
        failure = admin.failure
        await admin.stop()
        await asyncio.wait_for(runner, 10)
        return results, after, failure

    (first, second), after, failure = run(body())
    assert failure is None and first.success and after.success
    assert not second.success and second.error == (
        "the admin could not send it to a worker: cannot encode list (at [0]['task']['args']"
        "[0]: set): can not serialize 'set' object (was the task changed after it was "
        "submitted?)"), second


def test_a_large_batch_of_plain_tasks_of_every_shape_is_let_through():
    from ceylon_net.edge.admin import check_sendable

    check_sendable([Task(i if i % 2 else f"s{i}", "mixed ids") for i in range(1000)], 1 << 20)
    check_sendable([Task(i, "héllo", duration=1.5, timeout=2, required_role="r",
                         handler="h", priority=-3) for i in range(1000)], 1 << 20)
    check_sendable([Task(i, f"own {i}", args=[i], kwargs={"k": i}) for i in range(1000)],
                   1 << 20)
    check_sendable([Task(i, "tuples", args=(i,), depends_on=()) for i in range(1000)], 1 << 20)


def test_a_closed_admin_says_so_instead_of_waiting_and_starts_only_once():
    """After close() execute(), run_tasks() and wait_idle() waited for ever and submit()
    queued; a second start() on its port failed and left the first one's sockets unclosable."""
    from ceylon_net.errors import ConfigError

    async def body():
        admin = _admin()
        await admin.start()
        with pytest.raises(ConfigError, match="was started already"):
            await admin.start()
        pending = asyncio.create_task(admin.run_tasks([Task("queued", "no worker")]))
        await asyncio.sleep(0)
        await admin.close()
        with pytest.raises(ConfigError, match="is closed"):
            await asyncio.wait_for(pending, 5)
        for call in (lambda: admin.execute(Task("x", "x")), lambda: admin.run_tasks([]),
                     admin.wait_idle):
            with pytest.raises(ConfigError, match="is closed"):
                await asyncio.wait_for(call(), 5)
        with pytest.raises(ConfigError, match="is closed"):
            admin.submit([Task("y", "y")])
        return admin.port

    port = run(body())
    with socket.socket() as s:  # the port was let go
        s.bind(("127.0.0.1", port))


def test_a_stopped_worker_runs_only_once():
    """Run again, it registered anew, and an outer timeout's cancel was taken for its stop:
    arun() returned 'stopped' instead of raising TimeoutError."""
    from ceylon_net.errors import ConfigError

    async def body():
        admin = _admin()
        await admin.start()
        try:
            worker = Worker("w", admin_port=admin.port)
            running = asyncio.create_task(worker.arun_against(admin))
            assert (await admin.execute(Task("t", "once"))).success
            await worker.stop()
            assert await asyncio.wait_for(running, 10) == "stopped"
            with pytest.raises(ConfigError, match="worker 'w' has run already"):
                await worker.arun_against(admin)
        finally:
            await admin.close()

    run(body())


def test_stop_closes_an_admin_started_by_hand_and_its_in_process_workers_end():
    """stop() only ended serve(): an admin started with start() took tasks after it, and
    its in-process worker ran on."""
    from ceylon_net.errors import ConfigError

    async def body():
        admin = _admin()
        await admin.start()
        worker = Worker("w", admin_port=admin.port)
        running = asyncio.create_task(worker.arun_against(admin))
        assert (await admin.execute(Task("t", "before"))).success
        await admin.stop()
        with pytest.raises(ConfigError, match="is closed"):
            admin.submit([Task("after", "after stop")])
        return await asyncio.wait_for(running, 10)

    assert run(body()) == "stopped"  # the worker heard the run is over: the admin's reason


def test_stop_asked_twice_at_once_and_from_the_admins_own_handler_closes_it_once():
    """close() was not re-entrant: two stop()s at once raised AttributeError, and a handler
    calling stop() was cancelled by the close it ran, which never finished its work."""
    class Stopper(Admin):
        @on_message(type=Greeting)
        async def on_greeting(self, greeting: Greeting) -> None:
            await self.stop()

    async def twice() -> int:
        admin = _admin()
        await admin.start()
        await asyncio.gather(admin.stop(), admin.stop(), admin.close())
        return admin.port

    async def from_handler() -> tuple[str, int]:
        admin = Stopper(settings=AdminSettings(bind="127.0.0.1", port=0))
        await admin.start()
        worker = Worker("w", admin_port=admin.port)
        running = asyncio.create_task(worker.arun_against(admin))
        await wait_until(lambda: admin.get_connected_agents(), 10, "the worker to connect")
        await worker.broadcast_data(Greeting("bye"))
        reason = await asyncio.wait_for(running, 10)
        await asyncio.wait_for(admin.close(), 10)  # (the close under way: waited for)
        return reason, admin.port

    ports = [run(twice())]
    reason, port = run(from_handler())
    ports.append(port)
    assert reason == "stopped"  # the worker heard the admin's goodbye: the close finished
    for port in ports:
        with socket.socket() as s:  # each admin let its port go (a listener may take it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


def test_a_worker_no_admin_answers_gives_up_at_its_connect_timeout_not_a_second_later():
    """Its HELLO, never taken, held the socket's close (and the event loop) for the linger."""
    from ceylon_net.errors import AdminUnreachableError

    async def body() -> float:
        worker = Worker("w", admin_port=free_port(), connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(AdminUnreachableError, match=r"within 0\.5 s"):
            await asyncio.wait_for(worker.arun(), 10)
        return time.monotonic() - started

    assert run(body()) < 1.2  # (1.5 s before: 0.5 s, then a second of linger)


def test_run_admin_ends_with_the_error_of_a_worker_it_cannot_run():
    """Seed 003 as written: its workers name a workspace its admin does not. The admin
    refused them (logged) and served on for ever."""
    from ceylon_net.errors import RejectedError

    async def body() -> None:
        admin = _admin()
        stray = Worker("w", workspace_id="task_management", connect_timeout=5)
        with pytest.raises(RejectedError, match="workspace 'task_management' != admin's"):
            await asyncio.wait_for(admin.arun_admin(workers=[stray]), 30)

    run(body())


@pytest.mark.parametrize("style", ["after init", "before init", "on the class", "given"])
def test_a_worker_runs_as_many_at_once_as_max_concurrent_tasks_says_however_it_was_set(style):
    """Seed 000's TaskExecutionAgent: super().__init__(name=..., role=...), then
    self.max_concurrent_tasks = n. The attribute said 2; the worker told the admin 1."""

    class Agent(Worker):
        if style == "on the class":
            max_concurrent_tasks = 2

        def __init__(self, name: str) -> None:
            if style == "before init":
                self.max_concurrent_tasks = 2
            super().__init__(name=name, role="processor",
                             **({"max_concurrent_tasks": 2} if style == "given" else {}))
            if style == "after init":
                self.max_concurrent_tasks = 2

    async def body() -> tuple[int, int]:
        admin = _admin()
        await admin.start()
        try:
            agent = Agent("w")
            running = asyncio.create_task(agent.arun_against(admin))
            await wait_until(lambda: admin.get_connected_agents(), 10, "the worker to join")
            told = admin.get_connected_agents()[0]
            await agent.stop()
            await asyncio.wait_for(running, 10)
            return told.capacity, agent.max_concurrent_tasks
        finally:
            await admin.close()

    assert run(body()) == (2, 2)


def test_run_admin_stops_an_in_process_worker_that_does_not_hear_its_end():
    """One registering again (its loop was blocked a while) missed the admin's END and
    tried on until cancelled 5 s later: a Ctrl-C took that much longer."""

    class Deaf(Worker):  # (registering, for ever, with an admin that is not there)
        async def arun_against(self, admin):
            return await self.arun()

    async def body() -> float:
        admin = _admin()
        deaf = Deaf("deaf", admin_port=free_port(), connect_timeout=60)
        running = asyncio.create_task(admin.arun_admin(workers=[deaf]))
        await wait_until(lambda: admin.port, 10, "the admin to start")
        started = time.monotonic()
        await admin.stop()
        await asyncio.wait_for(running, 30)
        return time.monotonic() - started

    assert run(body()) < 3.0  # (1 s to hear the end, then stopped; 5 s before)


@message(name="test_api.Tally")
class Tally:
    name_and_count: tuple[str, int]
    counts: tuple[int, ...] = ()


class Ear(Worker):
    """What its typed handlers got, in order: Tally messages, and raw ones (bytes)."""

    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.got: list[Tally | bytes] = []

    @on_message(type=Tally)
    async def on_tally(self, data: Tally):
        self.got.append(data)

    @on_message(type=bytes)
    async def on_raw(self, data: bytes):
        self.got.append(data)


def test_a_message_with_tuple_fields_arrives_as_it_was_sent():
    """``tuple[str, int]`` was read as ``tuple[str, ...]``: refused at send ("expected str,
    got int"); and a tuple came back a list, unequal to what was sent."""

    async def body():
        admin = _admin()
        a, b = Ear("a"), Ear("b")
        runner = asyncio.create_task(admin.arun_admin(b"", [a, b]))
        try:
            await wait_until(lambda: len(admin.get_connected_agents()) == 2, 10, "two workers")
            await a.send("b", Tally(("apples", 3), (1, 2)))
            await wait_until(lambda: b.got, 10, "b to hear")
            with pytest.raises(LocalProtocolError, match="expected 2 items, got 3"):
                await a.send("b", Tally(("apples", 3, 4)))  # type: ignore[arg-type]
            return b.got
        finally:
            await admin.stop()
            await asyncio.wait_for(runner, 10)

    assert run(body()) == [Tally(("apples", 3), (1, 2))]


class Plain:
    pass


@pytest.mark.parametrize("kind", [None, Plain, int])
def test_on_message_with_no_message_class_is_refused_where_it_is_written(kind):
    """Such a handler was never called, and nothing said so."""
    with pytest.raises(TypeError, match=r"@on_message\(type=\.\.\.\) takes the @message class"):
        on_message(kind) if kind is not None else on_message()


def test_on_message_for_raw_bytes_still_takes_what_is_sent_as_bytes():
    """Raw messages arrive as bytes, and a handler marked type=bytes took them: the check
    for a @message class refused it where it is written (a review of the check)."""
    async def body():
        admin = _admin()
        ear = Ear("ear")
        runner = asyncio.create_task(admin.arun_admin(b"", [ear]))
        try:
            await wait_until(lambda: admin.get_connected_agents(), 10, "the worker")
            await admin.send("ear", b"raw from the admin")
            await wait_until(lambda: ear.got, 10, "the raw message")
            return ear.got
        finally:
            await admin.stop()
            await asyncio.wait_for(runner, 10)

    assert run(body()) == [b"raw from the admin"]
