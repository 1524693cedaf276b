"""The wire format: what round-trips, and what a peer's bad bytes get.

A peer can send anything. Whatever it sends, decoding either returns a value or raises
RemoteProtocolError ("the peer did it"); sending something the protocol cannot carry raises
LocalProtocolError ("we did it").
"""

from __future__ import annotations

import collections
import contextlib
import enum
import math
import pickle
from dataclasses import InitVar, dataclass, field

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceylon_net import wire
from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.errors import LocalProtocolError, RemoteProtocolError
from ceylon_net.wire import (
    KINDS,
    End,
    Envelope,
    Event,
    Header,
    Hello,
    Kind,
    Limits,
    Reject,
    Welcome,
    message,
    schema,
)

PROPERTY = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------- test messages
# Registered under test-only names so they cannot collide with anyone else's.


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@message(name="test_protocol.Point")
@dataclass(slots=True)
class Point:
    x: float
    y: float


@message(name="test_protocol.Shape")
@dataclass(slots=True)
class Shape:
    name: str
    points: list[Point]
    colour: Colour = Colour.RED
    level: Level = Level.LOW
    label: str | None = None
    tags: dict[str, int] = field(default_factory=dict)
    blob: bytes = b""
    centre: Point | None = None


@message(name="test_protocol.Plain")
class Plain:
    """Not a dataclass: @message makes it one."""

    a: int
    b: str = "b"


@dataclass
class Unregistered:
    a: int = 1


def header(**changes) -> Header:
    h = Header("default", "Senior", msg_id=7, ts=1700000000.5, type="TaskResult")
    for name, value in changes.items():
        setattr(h, name, value)
    return h


def raw_header(*fields) -> bytes:
    return wire.packb(list(fields))


GOOD_HEADER = [1, "default", 7, "Senior", 1700000000.5, None, None]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_frames_round_trip_for_every_kind(kind):
    h = wire.make_header("default", "Senior", "TaskResult", to="Junior")
    frames = wire.encode_frames(kind, h, b"payload")

    assert len(frames) == 3
    assert wire.decode_frames(frames) == Envelope(kind, h, b"payload")


def test_make_header_numbers_messages_and_stamps_the_time():
    first = wire.make_header("default", "Senior")
    second = wire.make_header("default", "Senior")

    assert second.msg_id > first.msg_id
    assert first.ts > 0
    assert (first.type, first.to, first.version) == (None, None, wire.PROTOCOL_VERSION)


headers = st.builds(
    Header,
    workspace=st.text(),
    sender=st.text(),
    msg_id=st.integers(0, 2**64 - 1),
    ts=st.floats(allow_nan=False),
    type=st.none() | st.text(),
    to=st.none() | st.text(),
    version=st.integers(-(2**63), 2**63 - 1),
    token=st.none() | st.text(),
    seq=st.none() | st.integers(0, 2**64 - 1),
    epoch=st.none() | st.integers(0, 2**64 - 1),
)


@PROPERTY
@given(kind=st.sampled_from(sorted(KINDS)), h=headers, payload=st.binary())
def test_any_header_round_trips(kind, h, payload):
    assert wire.decode_frames(wire.encode_frames(kind, h, payload)) == Envelope(
        kind, h, payload
    )


def test_header_with_extra_trailing_fields_still_decodes():
    # A future peer may append header fields; the first ten still mean the same.
    data = raw_header(*GOOD_HEADER, "the-token", 12, 3, "future", 42)

    assert wire.decode_header(data) == Header("default", "Senior", 7, 1700000000.5,
                                              version=1, token="the-token", seq=12, epoch=3)


def test_a_broadcast_number_travels_in_the_header_and_must_be_a_count():
    numbered = wire.make_header("default", "w")
    numbered.seq = 5
    assert wire.decode_header(wire.encode_header(numbered)).seq == 5
    for bad in ("5", -1, 1.5, True):
        with pytest.raises(RemoteProtocolError, match="header seq"):
            wire.decode_header(raw_header(*GOOD_HEADER, None, bad))


def test_an_admin_epoch_travels_in_the_header_and_must_be_a_count():
    numbered = wire.make_header("default", "w")
    numbered.seq, numbered.epoch = 5, 2**63 - 1
    decoded = wire.decode_header(wire.encode_header(numbered))
    assert (decoded.seq, decoded.epoch) == (5, 2**63 - 1)
    for bad in ("5", -1, 1.5, True):
        with pytest.raises(RemoteProtocolError, match="header epoch"):
            wire.decode_header(raw_header(*GOOD_HEADER, None, 5, bad))


def test_the_token_travels_in_the_header_only_when_set():
    with_token = wire.make_header("default", "w", token="s3cret")
    without = wire.make_header("default", "w")

    assert wire.decode_header(wire.encode_header(with_token)).token == "s3cret"
    assert wire.decode_header(wire.encode_header(without)).token is None
    assert len(wire.unpackb(wire.encode_header(without))) == 7


def test_integer_timestamp_decodes_as_float():
    h = wire.decode_header(raw_header(1, "default", 7, "Senior", 12, None, None))

    assert h.ts == 12.0
    assert isinstance(h.ts, float)


def test_topic_keeps_prod_from_matching_production():
    assert wire.topic("prod") == b"prod\0"
    assert not wire.topic("production").startswith(wire.topic("prod"))


task = Task(7, "Data analysis", difficulty=5, required_role="analyst", priority=3, duration=0.5)
CONTROL_MESSAGES = [
    Hello("Senior", "analyst", 9, 4),
    Welcome("Senior-1", "admin", 8001, 1.0, 3),
    Reject("workspace 'prod' != admin's 'default'"),
    End("run finished"),
    Event("worker_joined", {"name": "Senior", "skill": 9, "nested": {"a": [1, 2]}}),
    Event("run_finished"),
    task,
    Task("t-1", "Simple calculation"),
    TaskAssignment(task, "Senior", 2),
    TaskResult(7, "Senior", True, 1.25),
    TaskResult("t-1", "Junior", False, 0.0, "Traceback: boom", attempt=3),
    Shape(
        "triangle",
        [Point(0.0, 0.0), Point(1.0, 0.5), Point(-2.0, 3.25)],
        Colour.BLUE,
        Level.HIGH,
        label="tri",
        tags={"a": 1, "b": 2},
        blob=b"\x00\xff",
        centre=Point(0.5, 0.5),
    ),
    Shape("empty", []),
    Plain(1),
]


@pytest.mark.parametrize("msg", CONTROL_MESSAGES, ids=lambda m: type(m).__name__)
def test_registered_message_round_trips_with_pack(msg):
    back = wire.unpack(type(msg), wire.pack(msg))

    assert back == msg
    assert type(back) is type(msg)


@pytest.mark.parametrize("msg", CONTROL_MESSAGES, ids=lambda m: type(m).__name__)
def test_registered_message_round_trips_with_dumps_and_loads(msg):
    back = wire.loads(wire.dumps(msg))

    assert back == msg
    assert type(back) is type(msg)


def test_enums_travel_as_their_values_and_come_back_as_members():
    shape = Shape("s", [Point(1.0, 2.0)], Colour.BLUE, Level.HIGH)
    form = wire.to_wire(shape)

    assert form["colour"] == "blue"
    assert form["level"] == 2
    assert form["points"] == [{"x": 1.0, "y": 2.0}]
    back = wire.unpack(Shape, wire.pack(shape))
    assert back.colour is Colour.BLUE
    assert back.level is Level.HIGH
    assert type(back.points[0]) is Point


def test_message_names_cross_the_wire_not_python_identity():
    assert wire.type_name(Shape) == "test_protocol.Shape"
    assert wire.type_name(Task("x", "y")) == "ceylon_net.Task"
    assert wire.message_type("test_protocol.Shape") is Shape
    assert wire.is_message(Shape) and wire.is_message(task)
    assert not wire.is_message(Unregistered) and not wire.is_message(b"raw")


def test_message_makes_a_plain_class_a_dataclass():
    assert Plain(5) == Plain(5, "b")
    assert wire.loads(wire.dumps(Plain(5, "x"))) == Plain(5, "x")


def test_float_field_accepts_an_int_and_returns_a_float():
    data = wire.packb({"agent_id": "a", "admin": "b", "pub_port": 1, "heartbeat": 2,
                           "liveness": 3})
    welcome = wire.unpack(Welcome, data)

    assert welcome.heartbeat == 2.0
    assert isinstance(welcome.heartbeat, float)


def test_batch_round_trip():
    results = [TaskResult(i, f"w{i}", i % 2 == 0, i / 4, None if i else "err", i + 1)
               for i in range(5)]

    assert wire.unpack_batch(TaskResult, wire.pack_batch(results)) == results
    assert wire.unpack_batch(TaskResult, wire.pack_batch([])) == []


def test_assignment_batch_round_trip():
    batch = [TaskAssignment(task, "Senior", 1), TaskAssignment(Task("b", "other"), "Junior")]

    assert wire.unpack_batch(TaskAssignment, wire.pack_batch(batch)) == batch


def test_payload_is_raw_bytes_or_a_registered_message():
    assert wire.encode_payload(b"hi") == (None, b"hi")
    assert wire.encode_payload(bytearray(b"hi")) == (None, b"hi")
    assert wire.encode_payload(memoryview(b"hi")) == (None, b"hi")
    assert wire.decode_payload(header(type=None), b"hi") == b"hi"

    type_, payload = wire.encode_payload(task)
    assert type_ == "ceylon_net.Task"
    assert wire.decode_payload(header(type=type_), payload) == task


ids = st.integers(-(2**63), 2**64 - 1) | st.text()
tasks = st.builds(
    Task,
    id=ids,
    description=st.text(),
    difficulty=st.integers(-(2**63), 2**63 - 1),
    required_role=st.none() | st.text(),
    priority=st.integers(-(2**63), 2**63 - 1),
    duration=st.none() | st.floats(allow_nan=False),
)
results = st.builds(
    TaskResult,
    task_id=ids,
    worker=st.text(),
    success=st.booleans(),
    seconds=st.floats(allow_nan=False),
    error=st.none() | st.text(),
    attempt=st.integers(0, 2**32),
)


@PROPERTY
@given(t=tasks, worker=st.text(), attempt=st.integers(1, 2**32))
def test_any_task_round_trips(t, worker, attempt):
    assert wire.loads(wire.dumps(t)) == t
    assignment = TaskAssignment(t, worker, attempt)
    assert wire.unpack(TaskAssignment, wire.pack(assignment)) == assignment


@PROPERTY
@given(batch=st.lists(results, max_size=5))
def test_any_result_batch_round_trips(batch):
    assert wire.unpack_batch(TaskResult, wire.pack_batch(batch)) == batch


# --------------------------------------------------------------------------- strict field types


MISSING = object()


def hello_wire(**changes) -> bytes:
    fields = {"name": "Senior", "role": "default", "skill": 9, "capacity": 2}
    fields.update(changes)
    return wire.packb({k: v for k, v in fields.items() if v is not MISSING})


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"skill": "9"}, "Hello.skill: expected int, got str"),
        ({"skill": True}, "Hello.skill: expected int, got bool"),
        ({"capacity": False}, "Hello.capacity: expected int, got bool"),
        ({"skill": 9.0}, "Hello.skill: expected int, got float"),
        ({"skill": None}, "Hello.skill: expected int, got NoneType"),
        ({"name": 5}, "Hello.name: expected str, got int"),
        ({"name": b"Senior"}, "Hello.name: expected str, got bytes"),
        ({"role": ["a"]}, "Hello.role: expected str, got list"),
        ({"capacity": MISSING}, "Hello: missing field 'capacity'"),
        ({"name": MISSING}, "Hello: missing field 'name'"),
    ],
)
def test_hello_fields_are_strictly_typed(changes, error):
    with pytest.raises(RemoteProtocolError) as exc:
        wire.unpack(Hello, hello_wire(**changes))

    assert str(exc.value) == error


@pytest.mark.parametrize(
    ("cls", "fields", "error"),
    [
        (Welcome, {"agent_id": "a", "admin": "b", "pub_port": 1, "heartbeat": True,
                   "liveness": 3}, "Welcome.heartbeat: expected float, got bool"),
        (Welcome, {"agent_id": "a", "admin": "b", "pub_port": 1, "heartbeat": "1",
                   "liveness": 3}, "Welcome.heartbeat: expected float, got str"),
        (Task, {"id": True, "description": "d"}, "Task.id: unexpected bool"),
        (Task, {"id": 1.5, "description": "d"}, "Task.id: unexpected float"),
        (Task, {"id": None, "description": "d"}, "Task.id: unexpected NoneType"),
        (Task, {"id": 1, "description": "d", "required_role": 3},
         "Task.required_role: unexpected int"),
        (Task, {"id": 1, "description": "d", "duration": "5s"}, "Task.duration: unexpected str"),
        (Task, {"id": 1, "description": "d", "difficulty": "5"},
         "Task.difficulty: expected int, got str"),
        (TaskResult, {"task_id": 1, "worker": "w", "success": 1},
         "TaskResult.success: expected bool, got int"),
        (TaskResult, {"task_id": 1, "worker": "w", "success": True, "attempt": True},
         "TaskResult.attempt: expected int, got bool"),
        (TaskResult, {"task_id": 1, "worker": "w"}, "TaskResult: missing field 'success'"),
        (TaskAssignment, {"worker": "w"}, "TaskAssignment: missing field 'task'"),
        (TaskAssignment, {"task": {"id": 1}}, "Task: missing field 'description'"),
        (TaskAssignment, {"task": {"id": 1, "description": 2}},
         "Task.description: expected str, got int"),
        (TaskAssignment, {"task": "t"}, "Task: expected a map, got str"),
        (Event, {"event": "e", "data": [1]}, "Event.data: expected map, got list"),
        (Shape, {"name": "s", "points": {"x": 1.0}}, "Shape.points: expected array, got dict"),
        (Shape, {"name": "s", "points": [{"x": "a", "y": 1}]},
         "Point.x: expected float, got str"),
        (Shape, {"name": "s", "points": [], "colour": "green"},
         "Shape.colour: 'green' is not a Colour"),
        (Shape, {"name": "s", "points": [], "level": 3}, "Shape.level: 3 is not a Level"),
        (Shape, {"name": "s", "points": [], "colour": ["red"]},
         "Shape.colour: a list is not a Colour"),
        (Shape, {"name": "s", "points": [], "tags": {"a": "1"}},
         "Shape.tags: expected int, got str"),
        (Shape, {"name": "s", "points": [], "blob": "text"}, "Shape.blob: expected bytes, got str"),
        (Shape, {"name": "s", "points": [], "centre": 5}, "Shape.centre: unexpected int"),
    ],
)
def test_message_fields_are_strictly_typed(cls, fields, error):
    with pytest.raises(RemoteProtocolError) as exc:
        wire.unpack(cls, wire.packb(fields))

    assert str(exc.value) == error


@pytest.mark.parametrize("data", [[1, 2], "Senior", 5, None, b"x"])
def test_a_message_must_be_a_map(data):
    with pytest.raises(RemoteProtocolError, match=r"^Hello: expected a map, got \w+$"):
        wire.unpack(Hello, wire.packb(data))


def test_unknown_fields_are_ignored():
    assert wire.unpack(Hello, hello_wire(zone="eu", version=2)) == Hello(
        "Senior", "default", 9, 2
    )


def test_missing_fields_with_defaults_are_filled_in():
    result = wire.unpack(TaskResult, wire.packb({"task_id": 1, "worker": "w",
                                                          "success": True}))

    assert result == TaskResult(1, "w", True, seconds=0.0, error=None, attempt=1)
    first = wire.unpack(Event, wire.packb({"event": "e"}))
    second = wire.unpack(Event, wire.packb({"event": "e"}))
    assert first.data == {}
    assert first.data is not second.data


def test_optional_fields_accept_nil():
    shape = wire.unpack(Shape, wire.packb({"name": "s", "points": [], "label": None,
                                                   "centre": None}))

    assert shape.label is None and shape.centre is None


def test_one_bad_item_spoils_a_batch_and_names_the_field():
    batch = [wire.to_wire(TaskResult(1, "w", True)), {"task_id": 2, "worker": 3,
                                                          "success": True}]

    with pytest.raises(RemoteProtocolError, match=r"^TaskResult.worker: expected str, got int$"):
        wire.unpack_batch(TaskResult, wire.packb(batch))


@pytest.mark.parametrize("data", [{"task_id": 1}, "x", 1, None])
def test_a_batch_must_be_an_array(data):
    with pytest.raises(RemoteProtocolError, match=r"^TaskResult batch: expected an array$"):
        wire.unpack_batch(TaskResult, wire.packb(data))


# --------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize("count", [0, 1, 2, 4, 5])
def test_wrong_frame_count(count):
    frames = [Kind.HELLO, raw_header(*GOOD_HEADER), b"", b"extra", b"more"][:count]

    with pytest.raises(RemoteProtocolError, match=rf"^expected 3 frames, got {count}$"):
        wire.decode_frames(frames)


@pytest.mark.parametrize("kind", [b"NOPE", b"", b"hello", b"HELLO ", b"prod\0"])
def test_unknown_kind(kind):
    with pytest.raises(RemoteProtocolError) as exc:
        wire.decode_frames([kind, raw_header(*GOOD_HEADER), b""])

    assert str(exc.value) == f"unknown kind {kind!r}"


def test_unknown_kind_is_quoted_briefly():
    with pytest.raises(RemoteProtocolError) as exc:
        wire.decode_frames([b"X" * 1000, raw_header(*GOOD_HEADER), b""])

    assert str(exc.value) == f"unknown kind {b'X' * 16!r}"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "undecodable msgpack"),
        (b"\xc1", "undecodable msgpack"),
        (wire.packb({"version": 1}), "header is not a 7-element array"),
        (raw_header(*GOOD_HEADER[:6]), "header is not a 7-element array"),
        (raw_header(), "header is not a 7-element array"),
        (raw_header("1", *GOOD_HEADER[1:]), "header version is not an int"),
        (raw_header(True, *GOOD_HEADER[1:]), "header version is not an int"),
        (raw_header(1.0, *GOOD_HEADER[1:]), "header version is not an int"),
        (raw_header(1, None, *GOOD_HEADER[2:]), "header workspace/sender must be strings"),
        (raw_header(1, "default", 7, b"Senior", *GOOD_HEADER[4:]),
         "header workspace/sender must be strings"),
        (raw_header(1, "default", "7", *GOOD_HEADER[3:]), "header msg_id/ts must be numbers"),
        (raw_header(1, "default", 7, "Senior", "now", None, None),
         "header msg_id/ts must be numbers"),
        (raw_header(*GOOD_HEADER[:5], 5, None), "header type/to must be strings or nil"),
        (raw_header(*GOOD_HEADER[:6], [b"x"]), "header type/to must be strings or nil"),
    ],
)
def test_bad_header(data, error):
    with pytest.raises(RemoteProtocolError) as exc:
        wire.decode_frames([Kind.RESULT, data, b""])

    assert str(exc.value).startswith(error)


@pytest.mark.parametrize(
    "fields",
    [
        [1, "default", True, "Senior", 1.0, None, None],
        [1, "default", 7, "Senior", False, None, None],
    ],
)
def test_bool_is_not_a_number_in_the_header(fields):
    with pytest.raises(RemoteProtocolError, match="header msg_id/ts must be numbers"):
        wire.decode_header(raw_header(*fields))


def test_unknown_message_type():
    with pytest.raises(RemoteProtocolError, match=r"^unknown message type 'Nope'$"):
        wire.loads(wire.packb(["Nope", {}]))
    with pytest.raises(RemoteProtocolError, match=r"^unknown message type 'Nope'$"):
        wire.decode_payload(header(type="Nope"), wire.packb({}))
    with pytest.raises(RemoteProtocolError, match=r"^unknown message type 'Nope'$"):
        wire.message_type("Nope")


@pytest.mark.parametrize(
    "data", [{"type": "Task"}, ["Task"], ["Task", {}, "extra"], [1, {}], [b"Task", {}], "Task"]
)
def test_loads_wants_a_type_name_and_fields(data):
    with pytest.raises(RemoteProtocolError, match=r"^not a ceylon_net message"):
        wire.loads(wire.packb(data))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        # Zero-length extension data reaches the hook that names the type...
        (msgpack.packb(msgpack.ExtType(5, b"")), "msgpack extension type 5 is not allowed"),
        # [1, {"a": ext8 of type -7, no data}], spelled out: msgpack.ExtType refuses codes < 0.
        (b"\x92\x01\x81\xa1a\xc7\x00\xf9", "msgpack extension type -7 is not allowed"),
        # ...anything longer is refused before it is even read.
        (msgpack.packb(msgpack.ExtType(5, b"x")), "undecodable msgpack"),
        (msgpack.packb(msgpack.ExtType(42, b"x" * 100)), "undecodable msgpack"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "undecodable msgpack"),
        (msgpack.packb({"created": msgpack.Timestamp(1, 0)}), "undecodable msgpack"),
    ],
)
def test_msgpack_extension_types_are_refused(data, error):
    with pytest.raises(RemoteProtocolError) as exc:
        wire.unpackb(data)

    assert str(exc.value).startswith(error)


def test_extension_types_are_refused_inside_messages_and_headers():
    ext = msgpack.ExtType(1, b"")
    with pytest.raises(RemoteProtocolError, match="extension type 1"):
        wire.loads(msgpack.packb(["Event", {"event": "e", "data": {"x": ext}}]))
    with pytest.raises(RemoteProtocolError, match="extension type 1"):
        wire.decode_frames([Kind.HELLO, msgpack.packb([1, ext, 1, "s", 0, None, None]), b""])


@pytest.mark.parametrize(
    "data",
    [
        wire.packb({1: "int key"}),
        wire.packb(1) + wire.packb(2),  # trailing bytes
        b"\x91" * 100_000 + b"\xc0",  # nested too deep
        b"\xdd\xff\xff\xff\xff",  # array of 4 billion items, not sent
        b"\xdb\xff\xff\xff\xff",  # string of 4 GiB, not sent
    ],
)
def test_malformed_msgpack(data):
    with pytest.raises(RemoteProtocolError, match=r"^undecodable msgpack: "):
        wire.unpackb(data)


SMALL = Limits(max_str_len=8, max_bin_len=8, max_array_len=4, max_map_len=4)


@pytest.mark.parametrize(
    ("fits", "too_big", "limit"),
    [
        ("x" * 8, "x" * 9, "max_str_len"),
        ("é" * 4, "é" * 5, "max_str_len"),  # bytes, not characters
        (b"x" * 8, b"x" * 9, "max_bin_len"),
        ([0] * 4, [0] * 5, "max_array_len"),
        ({str(i): i for i in range(4)}, {str(i): i for i in range(5)}, "max_map_len"),
        ([["x" * 8]], [["x" * 9]], "max_str_len"),
    ],
)
def test_limits(fits, too_big, limit):
    assert wire.unpackb(wire.packb(fits), SMALL) == fits
    with pytest.raises(RemoteProtocolError, match=f"exceeds {limit}"):
        wire.unpackb(wire.packb(too_big), SMALL)


def test_limits_apply_to_headers_messages_and_batches():
    long_header = wire.encode_header(Header("workspace-name", "Senior"))
    with pytest.raises(RemoteProtocolError, match="exceeds max_str_len"):
        wire.decode_frames([Kind.HELLO, long_header, b""], Limits(max_str_len=8))
    with pytest.raises(RemoteProtocolError, match="exceeds max_str_len"):
        wire.unpack(Reject, wire.pack(Reject("a long reason")), SMALL)
    with pytest.raises(RemoteProtocolError, match="exceeds max_str_len"):
        wire.loads(wire.dumps(Reject("a long reason")), SMALL)
    batch = wire.pack_batch([TaskResult(i, "w", True) for i in range(5)])
    with pytest.raises(RemoteProtocolError, match="exceeds max_array_len"):
        wire.unpack_batch(TaskResult, batch, SMALL)
    assert len(wire.unpack_batch(TaskResult, batch)) == 5


# --------------------------------------------------------------------------- local misuse


def test_a_str_given_as_a_message_is_told_to_be_encoded():
    with pytest.raises(LocalProtocolError, match=r"^str is not a registered message type; "
                                                 r"decorate it with @message; broadcast\(\) and "
                                                 r"send\(\) take bytes as they are \(a str: "
                                                 r"encode it\)$"):
        wire.encode_payload("hello")


def test_unregistered_dataclass_cannot_be_sent():
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message "
                                                 r"type; decorate it with @message$"):
        wire.dumps(Unregistered())
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message"):
        wire.encode_payload(Unregistered())
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message"):
        wire.pack(Unregistered())
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message"):
        wire.type_name(Unregistered)


def test_unregistered_dataclass_nested_in_a_message_cannot_be_sent():
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message"):
        wire.pack(Event("e", {"x": Unregistered()}))
    with pytest.raises(LocalProtocolError, match=r"^Unregistered is not a registered message"):
        wire.pack_batch([TaskResult(1, "w", True), Unregistered()])


def test_where_a_value_msgpack_cannot_carry_is_said_briefly_and_never_raises_else():
    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    for value, shown in (({"k" * 2_000_000: {1, 2}}, "(at ['kkkkkkkkkkkkkkkkk...kkkkkkkkkk"),
                         ({NoRepr(): 1}, "(at key <NoRepr instance at 0x"),
                         (collections.defaultdict(list, {"r": {1}}), "(at ['r']: set)")):
        with pytest.raises(LocalProtocolError) as err:
            wire.packb(value)
        assert shown in str(err.value) and len(str(err.value)) < 300, str(err.value)[:300]


@pytest.mark.parametrize(
    ("value", "name"), [({1, 2}, "set"), (2**64, "int"), (object(), "object")]
)
def test_values_msgpack_cannot_carry(value, name):
    with pytest.raises(LocalProtocolError, match=f"^cannot encode {name}: "):
        wire.packb(value)
    where = rf"\(at \['data'\]\['x'\]: {name}\)"  # where in the message it is
    with pytest.raises(LocalProtocolError, match=rf"^cannot encode dict {where}: "):
        wire.pack(Event("e", {"x": value}))


def test_a_message_name_cannot_be_taken_by_another_class():
    class Impostor:
        id: int

    with pytest.raises(LocalProtocolError,
                       match=r"^message name 'ceylon_net.Task' already registered"):
        message(Impostor, name="ceylon_net.Task")
    assert wire.message_type("ceylon_net.Task") is Task


def test_a_program_s_classes_named_as_ceylon_net_s_own_messages_take_no_name_of_theirs():
    """ceylon_net's own messages were registered under their bare class names: a program's
    `@message class Event` (or Hello, Status, Task...) was warned about as taking the name,
    and ceylon_net's Event broadcasts then decoded as the program's class. They are named
    apart now (TaskAssignment and TaskResult keep theirs: the PUB channel carries them)."""
    import warnings

    from ceylon_net.core.tasks import TaskAssignment, TaskResult

    taken = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a warning fails the test)
        for name in ("Event", "Hello", "Status", "Task", "Heartbeat", "AgentDetail"):
            taken[name] = message(type(name, (), {"__annotations__": {"x": int}}))
    try:
        event = wire.Event("joined", {"agent": "w1"})
        type_, payload = wire.encode_payload(event)
        assert (type_, wire.decode_payload(header(type=type_), payload)) == \
            ("ceylon_net.Event", event)
        assert [wire.type_name(c) for c in (TaskAssignment, TaskResult)] == \
            ["TaskAssignment", "TaskResult"]
    finally:
        for name in taken:
            wire.schema._REGISTRY.pop(name, None)


def test_a_message_name_taken_again_by_a_class_of_another_module_is_warned_about():
    """Two modules each with a `@message class Result`: the later took the name silently,
    and the earlier's handlers never got a message again (two test modules' `Blob` did
    that to each other). It is said; a class of the same module again (a reload) is not."""
    import warnings

    def made(module: str) -> type:
        cls = type("Twice", (), {"__annotations__": {"n": int}, "__module__": module})
        cls.__qualname__ = "Twice"
        return cls

    first = message(made("one.place"))
    with pytest.warns(RuntimeWarning, match=r"^message name 'Twice' is registered again, by "
                                           r"another\.place\.Twice \(it was one\.place\.Twice's\)"):
        later = message(made("another.place"))
    assert wire.message_type("Twice") is later is not first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message(made("another.place"))  # (the same module again: a reload)


_SCRIPT = """
import dataclasses, sys, warnings
warnings.simplefilter("error", RuntimeWarning)
from ceylon_net import message, dumps, loads, TaskResult as Builtin

@message
@dataclasses.dataclass
class TaskResult:  # a tutorial's own TaskResult
    s: str = ""

if __name__ == "__main__" and sys.argv[1:] == ["import-me"]:
    sys.path.insert(0, sys.argv[0].rpartition("/")[0])
    import script  # (itself again, under its own name: --app script)
    print("imported")
"""


def test_a_script_s_class_that_takes_a_name_of_ceylon_nets_is_warned_about(tmp_path):
    """A script (run as __main__) with its own `class TaskResult` took ceylon_net's name
    silently: its bytes then read as the script's class, their fields dropped. The script
    imported again under its own name (``--app script``) is one module: not warned."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 1
    assert "RuntimeWarning: message name 'TaskResult' is registered again, by " \
           "__main__.TaskResult (it was ceylon_net.core.tasks.TaskResult's)" in ran.stderr
    script.write_text(_SCRIPT.replace("class TaskResult:", "class Mine:"))
    ran = subprocess.run([sys.executable, str(script), "import-me"], capture_output=True,
                         text=True, timeout=60)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "imported\n", "")


# --------------------------------------------------------------------------- never runs code

ran: list[str] = []


def _side_effect() -> list[str]:
    ran.append("pwned")
    return ran


class Exploit:
    def __reduce__(self):
        return (_side_effect, ())


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_refuses_pickles_without_running_them(proto):
    data = pickle.dumps(Exploit(), protocol=proto)

    with pytest.raises(RemoteProtocolError):
        wire.loads(data)
    assert ran == []


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "Exploit"])
def test_loads_only_builds_registered_types(name):
    with pytest.raises(RemoteProtocolError, match=f"^unknown message type {name!r}$"):
        wire.loads(wire.packb([name, {"args": ["touch", "/tmp/pwned"]}]))
    assert ran == []


# --------------------------------------------------------------------------- any bytes at all


def returns_or_rejects(read, *args) -> None:
    """``read(*args)`` may return or raise RemoteProtocolError; anything else fails the test."""
    with contextlib.suppress(RemoteProtocolError):
        read(*args)


def read_all(data: bytes) -> None:
    returns_or_rejects(wire.unpackb, data)
    returns_or_rejects(wire.unpackb, data, SMALL)
    returns_or_rejects(wire.loads, data)
    returns_or_rejects(wire.unpack_batch, TaskResult, data)
    returns_or_rejects(wire.unpack_batch, TaskAssignment, data)
    returns_or_rejects(wire.decode_header, data)
    for kind in (Kind.HELLO, Kind.RESULT):
        returns_or_rejects(wire.decode_frames, [kind, data, data])


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_remote_protocol_error(data):
    read_all(data)


@PROPERTY
@given(st.lists(st.binary(max_size=64) | st.sampled_from(sorted(KINDS)), max_size=5))
def test_any_frames_decode_or_raise_remote_protocol_error(frames):
    returns_or_rejects(wire.decode_frames, frames)
    returns_or_rejects(wire.decode_frames, frames, SMALL)


# Well-formed msgpack of the wrong shape gets much further into the decoders than noise does.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.sampled_from(["red", "blue", 1, 2, "Task", "TaskResult"])
)
field_names = st.sampled_from(
    ["id", "description", "difficulty", "required_role", "priority", "duration", "task",
     "worker", "attempt", "task_id", "success", "seconds", "error", "name", "role", "skill",
     "capacity", "event", "data", "points", "colour", "level", "label", "tags", "blob",
     "centre", "x", "y", "a", "b"]
) | st.text(max_size=5)
wire_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(field_names, inner, max_size=6),
    max_leaves=12,
)
# Every registered type, including ones added later, plus names nobody registered.
type_names = st.sampled_from(sorted(schema._REGISTRY)) | st.text(max_size=8)


@PROPERTY
@given(name=type_names, fields=wire_values, batch=st.lists(wire_values, max_size=3))
def test_any_well_formed_msgpack_decodes_or_raises_remote_protocol_error(name, fields, batch):
    returns_or_rejects(wire.loads, wire.packb([name, fields]))
    returns_or_rejects(wire.unpack_batch, TaskResult, wire.packb(batch))
    returns_or_rejects(wire.unpack_batch, TaskAssignment, wire.packb(batch))
    returns_or_rejects(wire.decode_header, wire.packb(batch))
    returns_or_rejects(wire.decode_header, wire.packb([*GOOD_HEADER[:6], fields]))


@PROPERTY
@given(
    base=st.sampled_from(CONTROL_MESSAGES),
    changes=st.dictionaries(field_names, wire_values, max_size=3),
    drop=st.sets(field_names, max_size=2),
    name=type_names,
)
def test_damaged_messages_decode_or_raise_remote_protocol_error(base, changes, drop, name):
    # Start from a valid message so the damage reaches every field's converter.
    fields = wire.to_wire(base)
    fields.update(changes)
    for key in drop:
        fields.pop(key, None)

    returns_or_rejects(wire.loads, wire.packb([wire.type_name(base), fields]))
    returns_or_rejects(wire.loads, wire.packb([name, fields]))
    returns_or_rejects(wire.unpack_batch, TaskResult, wire.packb([fields, fields]))
    returns_or_rejects(wire.unpack_batch, TaskAssignment, wire.packb([{"task": fields}]))


def valid_frames(batch: list[TaskResult]) -> list[bytes]:
    h = wire.make_header("default", "Senior", "TaskResult")
    return wire.encode_frames(Kind.RESULT, h, wire.pack_batch(batch))


def mutate(data: bytes, how: str, at: int, value: int) -> bytes:
    at = at % (len(data) + 1)
    if how == "truncate":
        return data[:at]
    if how == "flip" and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ (value or 1)]) + data[at + 1:]
    return data + bytes([value]) * (at % 8 + 1)


mutations = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["truncate", "flip", "append"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


@PROPERTY
@given(batch=st.lists(results, max_size=3), changes=mutations)
def test_mutated_frames_only_raise_remote_protocol_error(batch, changes):
    frames = valid_frames(batch)
    for index, how, at, value in changes:
        frames[index] = mutate(frames[index], how, at, value)

    try:
        env = wire.decode_frames(frames)
        wire.unpack_batch(TaskResult, env.payload)
        wire.decode_payload(env.header, env.payload)
    except RemoteProtocolError:
        pass


@PROPERTY
@given(t=tasks, changes=mutations)
def test_mutated_dumps_only_raise_remote_protocol_error(t, changes):
    data = wire.dumps(TaskAssignment(t, "Senior"))
    for _, how, at, value in changes:
        data = mutate(data, how, at, value)

    returns_or_rejects(wire.loads, data)


def test_floats_survive_exactly():
    for value in (0.1, -0.0, math.inf, 1e308, 5e-324):
        assert wire.unpack(TaskResult, wire.pack(TaskResult(1, "w", True, value))) \
            .seconds == value


# A value of any shape msgpack can carry, for the decoders below.
_ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=6)


def _decoded(decode, cls, raw):
    """What a decoder makes of ``raw``: the object, or the error it says."""
    try:
        return decode(cls, raw)
    except RemoteProtocolError as exc:
        return f"error: {exc}"


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(n for n in wire.schema._REGISTRY
                                   if not n.startswith("test"))),
       data=st.data())
def test_the_compiled_decoders_do_exactly_what_the_field_descriptions_say(name, data):
    """Each message type's generated decoder against the field-by-field reference: the same
    object, or the same error, for well-formed and malformed maps alike."""
    cls = wire.message_type(name)
    fields = [f.name for f in wire.schema.dataclasses.fields(cls)]
    raw = data.draw(st.one_of(
        _ANY_VALUE,
        st.fixed_dictionaries({}, optional={f: _ANY_VALUE for f in fields}),
        st.builds(wire.to_wire, {"Task": tasks, "TaskResult": results}.get(name, st.nothing())),
        st.builds(lambda t, w: wire.to_wire(TaskAssignment(t, w)), tasks, st.text())
        if name == "TaskAssignment" else st.nothing()))

    assert _decoded(wire.from_wire, cls, raw) == _decoded(wire.schema._from_wire_slowly, cls, raw)


@message(name="test_protocol.Listed")
@dataclass
class Listed:
    n: int
    items: list[int] = field(default_factory=list)


@message(name="test_protocol.Keyworded")
@dataclass
class Keyworded:
    n: int
    label: str = field(default="x", kw_only=True)
    derived: int = field(default=0, init=False)


@message(name="test_protocol.Scaled")
@dataclass
class Scaled:
    n: int
    scale: InitVar[int] = 1
    items: list[int] = field(default_factory=list)

    def __post_init__(self, scale: int) -> None:
        self.n *= scale


@message(name="test_protocol.Reordered")
@dataclass(init=False)
class Reordered:
    n: int
    items: list[int] = field(default_factory=list)

    def __init__(self, items: list[int] | None = None, n: int = 0) -> None:
        self.n, self.items = n, items or []


@pytest.mark.parametrize("raw", [{}, {"n": 1}, {"n": 1, "items": [2, 3]}, {"n": "1"},
                                 {"n": 1, "label": "y"}, {"n": 1, "label": 2},
                                 {"n": 1, "derived": 5}, {"items": []}])
@pytest.mark.parametrize("cls", [Listed, Keyworded, Scaled, Reordered])
def test_decoders_pass_fields_by_position_only_where_init_takes_them_so(cls, raw):
    """Fields go to __init__ by position (faster), except for a class whose __init__ does
    not take exactly them, in order (keyword-only, init=False, an InitVar, its own
    __init__): the same outcome as the reference either way, and a missing field's default
    made fresh each time."""

    assert _decoded(wire.from_wire, cls, raw) == _decoded(wire.schema._from_wire_slowly, cls, raw)
    if cls is Listed and raw == {"n": 1}:
        assert wire.from_wire(Listed, raw).items is not wire.from_wire(Listed, raw).items


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(min_value=64, max_value=4000))
def test_batches_are_split_into_frames_within_the_limit_in_order(blobs, limit):
    parts = list(wire.packed_batches(blobs, limit))
    assert [b for part, _ in parts for b in part] == blobs  # nothing lost, nothing reordered
    for part, payload in parts:
        assert wire.unpackb(payload) == list(part)
        assert len(payload) <= limit or len(part) == 1  # one over the limit goes alone


def test_a_field_is_left_out_only_when_it_is_its_default_in_the_defaults_type():
    plain = wire.to_wire(Task(1, "t"))
    assert plain == {"id": 1, "description": "t"}
    # Equal to the default but of another type: sent, so the receiver can refuse it.
    odd = wire.to_wire(Task(1, "t", difficulty=True, priority=0.0, depends_on=(),  # type: ignore[arg-type]
                            kwargs={}, args=[]))
    assert odd == {"id": 1, "description": "t", "difficulty": True, "priority": 0.0,
                   "depends_on": []}
    shape = wire.to_wire(Shape("s", [Point(0.0, 1.0)], blob=b"", label=None, tags={"a": 1}))
    assert shape == {"name": "s", "points": [{"x": 0.0, "y": 1.0}], "tags": {"a": 1}}
    assert wire.to_wire(Shape("s", [], colour=Colour.BLUE, centre=Point(1, 2))) == {
        "name": "s", "points": [], "colour": Colour.BLUE.value, "centre": {"x": 1, "y": 2}}


@pytest.mark.parametrize("raw, error", [
    ({"1": 1}, r"expected \[task id, attempt\] pairs"),
    ([[1, 1], [2]], r"expected \[task id, attempt\] pairs"),
    ([[1, 1, 1]], r"expected \[task id, attempt\] pairs"),
    ([(1, 1)], r"expected \[task id, attempt\] pairs"),
    ([[True, 1]], "a task id must be an int or a string"),
    ([[1.5, 1]], "a task id must be an int or a string"),
    ([[None, 1]], "a task id must be an int or a string"),
    ([[1, True]], "an attempt must be an int"),
    ([["a", "1"]], "an attempt must be an int"),
])
def test_task_pairs_from_a_peer_are_refused_saying_what_is_wrong(raw, error):
    with pytest.raises(RemoteProtocolError, match=f"ACK: {error}"):
        wire.task_pairs(raw, "ACK")


def test_task_pairs_from_a_peer_come_out_as_a_map():
    assert wire.task_pairs([[1, 2], ["b", 1], [3, 0]], "ACK") == {1: 2, "b": 1, 3: 0}
    assert wire.task_pairs([], "ACK") == {}


def test_a_message_whose_annotations_do_not_resolve_here_still_travels():
    """A sender need not resolve a type's annotations (one imported under TYPE_CHECKING, a
    class local to a function): its fields go by the lookup, as before nested codecs."""
    @message(name="test_protocol.Unresolved")
    class Unresolved:
        amount: int
        note: NotDefinedAnywhere | None = None  # type: ignore[name-defined]  # noqa: F821

    @message(name="test_protocol.HoldsUnresolved")
    class Holds:
        inner: Unresolved
        n: int = 1

    assert wire.to_wire(Unresolved(3)) == {"amount": 3}
    assert wire.to_wire(Holds(Unresolved(3))) == {"inner": {"amount": 3}}
    assert wire.unpackb(wire.pack_batch([Holds(Unresolved(1), 2)])) == \
        [{"inner": {"amount": 1}, "n": 2}]


@message(name="test_protocol.Ping")
class Ping:
    pong: Pong | None = None
    n: int = 0


@message(name="test_protocol.Pong")
class Pong:
    ping: Ping
    back: Pong | None = None


def test_types_that_hold_each_other_or_themselves_go_and_come_back():
    value = Pong(Ping(Pong(Ping(None, 2)), 1), Pong(Ping()))
    assert wire.unpack(Pong, wire.pack(value)) == value
    assert wire.unpack_batch(Ping, wire.pack_batch([value.ping, Ping()])) == [value.ping, Ping()]
    bad = wire.to_wire(value)
    bad["ping"]["n"] = "two"  # through a field of the type itself (an optional one says less)
    with pytest.raises(RemoteProtocolError, match=r"Ping\.n: expected int, got str"):
        wire.from_wire(Pong, bad)


def test_batches_take_any_iterable_and_an_empty_one_needs_no_type():
    points = (Point(i, i) for i in range(3))
    assert wire.unpack_batch(Point, wire.pack_batch(points)) == [Point(i, i) for i in range(3)]
    assert wire.pack_batch(iter(())) == wire.packb([])
    assert wire.unpack_batch(int, wire.packb([])) == []


def test_the_encoders_fast_path_knows_every_plain_type_bool_included():
    """The generated encoders and to_wire pass values of these types through as they are; a
    second module-level _PLAIN (a tuple without bool, for unfit) once replaced the set, and
    every bool took the slow way: the journal (W5) was 8 % slower, with nothing else
    showing it."""
    assert frozenset((str, int, float, bool, bytes, type(None))) == schema._PLAIN
    result = TaskResult("t", "w", True, 0.5, None, 2, value=[1, "x"])
    assert wire.to_wire(result) == {"task_id": "t", "worker": "w", "success": True,
                                    "seconds": 0.5, "attempt": 2, "value": [1, "x"]}


def test_out_of_memory_while_encoding_or_decoding_is_said_as_it_is(monkeypatch):
    """msgpack's MemoryError was taken for what the data held: "cannot encode list: " on the
    way out, "undecodable msgpack" (a bad sender) on the way in (a review under prlimit
    --as). It goes on as what it is."""
    from ceylon_net.wire import codec

    def no_memory(*args, **kw):
        raise MemoryError

    monkeypatch.setattr(msgpack, "packb", no_memory)
    with pytest.raises(MemoryError):
        codec.packb([1, 2, 3])
    monkeypatch.setattr(msgpack, "unpackb", no_memory)
    with pytest.raises(MemoryError):
        codec.unpackb(b"\x93\x01\x02\x03")
