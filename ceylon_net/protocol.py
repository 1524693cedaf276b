"""The wire format, and the only module that touches raw frames or msgpack.

A message on the wire is three frames: a short **kind** (``HELLO``, ``ASSIGN``...), a msgpack
**header** (protocol version, workspace, message id, sender, timestamp, payload type, recipient)
and an opaque **payload** the admin can relay without decoding. On PUB a topic frame (the
workspace) goes first so subscribers filter by workspace.

Typed payloads are dataclasses registered by name with :func:`message`. They travel as msgpack
maps of their fields; decoding is strict about field types, ignores unknown fields and fills
missing ones from defaults (so a new field with a default never breaks an older peer).
Never pickle: :func:`dumps`/:func:`loads` are the safe replacement for the tutorials' pickle.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import reprlib
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class Kind:
    """Frame kinds. A worker says HELLO, HEARTBEAT, RESULT, BCAST, DIRECT, BYE; the admin
    answers WELCOME or REJECT and sends ASSIGN, DIRECT, HEARTBEAT, END. EVENT is PUB-only.
    STATUS and SUBMIT come from clients over the ROUTER (no registration needed): the admin
    answers STATUS with a Status, SUBMIT with a SUBMIT (Submitted) or a REJECT, then, when the
    client waits, PROGRESS now and then and one REPORT when the batch is done."""

    HELLO = b"HELLO"
    WELCOME = b"WELCOME"
    REJECT = b"REJECT"
    ASSIGN = b"ASSIGN"
    RESULT = b"RESULT"
    BCAST = b"BCAST"
    DIRECT = b"DIRECT"
    HEARTBEAT = b"HB"
    BYE = b"BYE"
    END = b"END"
    EVENT = b"EVENT"
    STATUS = b"STATUS"
    SUBMIT = b"SUBMIT"
    PROGRESS = b"PROGRESS"
    REPORT = b"REPORT"
    ACK = b"ACK"
    CANCEL = b"CANCEL"
    DRAIN = b"DRAIN"


KINDS = frozenset(v for k, v in vars(Kind).items() if k.isupper())


MAX_CAPACITY = 10_000  # tasks one worker may run at once (its --concurrency)
MAX_HELD = MAX_CAPACITY  # tasks a worker can hold, running or with results unacknowledged
MAX_HANDLERS = 1_000  # task handler names one worker can announce


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to every msgpack decode of data that came from the network."""

    max_str_len: int = 1 << 20
    max_bin_len: int = 1 << 20
    max_array_len: int = 100_000
    max_map_len: int = 10_000


DEFAULT_LIMITS = Limits()


def _reject_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed")


def unpackb(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode msgpack from the network within ``limits``; any failure is RemoteProtocolError."""
    # No container can hold more items than the data has bytes: capping the limits there
    # stops a header that claims 100,000 items from pre-allocating them.
    size = len(data)
    if _has_long_containers(data):
        _check_complete(data, size)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_str_len=min(limits.max_str_len, size),
            max_bin_len=min(limits.max_bin_len, size),
            max_array_len=min(limits.max_array_len, size),
            max_map_len=min(limits.max_map_len, size // 2),
            max_ext_len=0,
        )
    except RemoteProtocolError:
        raise
    except Exception as exc:  # msgpack raises ValueError, TypeError, FormatError, StackError...
        raise RemoteProtocolError(f"undecodable msgpack: {type(exc).__name__}: {exc}") from None


def _has_long_containers(data: bytes) -> bool:
    """Could ``data`` hold an array or map header of more than 15 items (array 16/32, map
    16/32)? Shorter ones, even nested to msgpack's depth limit, pre-allocate little."""
    return b"\xdc" in data or b"\xdd" in data or b"\xde" in data or b"\xdf" in data


def _check_complete(data: bytes, size: int) -> None:
    """msgpack allocates each container at its header's claimed length before reading the
    items. Nested headers that each claim nearly the whole input would together allocate many
    times its size (900 headers claiming 2,304 items in 2.7 KB: 16.8 MB) before the decoder
    finds the items missing. Skipping the data first, which builds no objects, proves every
    claimed item is present, so the decode that follows allocates in proportion to the
    input."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(size, 1), max_ext_len=0)
    unpacker.feed(data)
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        raise RemoteProtocolError("undecodable msgpack: truncated (a container claims more "
                                  "items than the data holds)") from None
    except Exception as exc:
        raise RemoteProtocolError(f"undecodable msgpack: {type(exc).__name__}: {exc}") from None
    if unpacker.tell() != size:
        raise RemoteProtocolError(f"undecodable msgpack: {size - unpacker.tell()} byte(s) of "
                                  "extra data after the value")


def packb(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except Exception as exc:
        raise LocalProtocolError(f"cannot encode {type(obj).__name__}: {exc}") from None


# --------------------------------------------------------------------------- header / frames


@dataclass(slots=True)
class Header:
    """Who sent what, when. ``type`` names the payload's registered message type (None: raw
    bytes); ``to`` is the recipient agent id of a DIRECT message."""

    workspace: str
    sender: str
    msg_id: int = 0
    ts: float = 0.0
    type: str | None = None
    to: str | None = None
    version: int = PROTOCOL_VERSION
    token: str | None = None  # the workspace token, on HELLO and client requests only


@dataclass(slots=True)
class Envelope:
    kind: bytes
    header: Header
    payload: bytes


_msg_ids = itertools.count(1)


def make_header(
    workspace: str, sender: str, type: str | None = None, to: str | None = None,
    token: str | None = None,
) -> Header:
    return Header(workspace, sender, next(_msg_ids), time.time(), type, to, token=token)


def encode_header(h: Header) -> bytes:
    fields = [h.version, h.workspace, h.msg_id, h.sender, h.ts, h.type, h.to]
    return packb(fields if h.token is None else [*fields, h.token])


def decode_header(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Header:
    raw = unpackb(data, limits)
    # Protocol version first, so a future peer with a longer header still gets a clear answer.
    if not isinstance(raw, list) or len(raw) < 7:
        raise RemoteProtocolError("header is not a 7-element array")
    version, workspace, msg_id, sender, ts, type_, to = raw[:7]
    if not isinstance(version, int) or isinstance(version, bool):
        raise RemoteProtocolError("header version is not an int")
    if not isinstance(workspace, str) or not isinstance(sender, str):
        raise RemoteProtocolError("header workspace/sender must be strings")
    if isinstance(msg_id, bool) or isinstance(ts, bool) or not isinstance(msg_id, int) \
            or not isinstance(ts, int | float):
        raise RemoteProtocolError("header msg_id/ts must be numbers")
    if not (type_ is None or isinstance(type_, str)) or not (to is None or isinstance(to, str)):
        raise RemoteProtocolError("header type/to must be strings or nil")
    token = raw[7] if len(raw) > 7 else None
    if not (token is None or isinstance(token, str)):
        raise RemoteProtocolError("header token must be a string or nil")
    return Header(workspace, sender, msg_id, float(ts), type_, to, version, token)


def encode_frames(kind: bytes, header: Header, payload: bytes = b"") -> list[bytes]:
    return [kind, encode_header(header), payload]


def decode_frames(frames: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse [kind, header, payload]. Raises RemoteProtocolError for anything else."""
    if len(frames) != 3:
        raise RemoteProtocolError(f"expected 3 frames, got {len(frames)}")
    kind, header, payload = frames
    if kind not in KINDS:
        raise RemoteProtocolError(f"unknown kind {bytes(kind[:16])!r}")
    return Envelope(bytes(kind), decode_header(header, limits), payload)


def task_pairs(raw: Any, what: str) -> dict[int | str, int]:
    """{task id: attempt} from [[task id, attempt], ...] as peers send them; a task id is an
    int or a string and an attempt an int, anything else is the peer's error."""
    out: dict[int | str, int] = {}
    for pair in raw if isinstance(raw, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RemoteProtocolError(f"{what}: expected [task id, attempt] pairs")
        task_id, attempt = pair
        if isinstance(task_id, bool) or not isinstance(task_id, int | str):
            raise RemoteProtocolError(f"{what}: a task id must be an int or a string")
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise RemoteProtocolError(f"{what}: an attempt must be an int")
        out[task_id] = attempt
    return out


def topic(workspace: str) -> bytes:
    """PUB topic of a workspace; the NUL keeps 'prod' from matching 'production'."""
    return workspace.encode() + b"\0"


# --------------------------------------------------------------------------- typed messages

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
_SCHEMAS: dict[type, list[tuple[str, Callable[[Any], Any], bool]]] = {}
T = TypeVar("T")


def message(cls: type[T] | None = None, *, name: str | None = None) -> Any:
    """Register a dataclass as a message type (making it a dataclass if it is not one).

    ``@message`` or ``@message(name="v2.Order")``. The name is what crosses the wire, so two
    processes agree on a type by name, not by Python identity.
    """

    def register(c: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(c):
            c = dataclass(c)
        key = name or c.__name__
        old = _REGISTRY.get(key)
        if old is not None and old is not c and old.__qualname__ != c.__qualname__:
            raise LocalProtocolError(f"message name {key!r} already registered by {old!r}")
        _REGISTRY[key] = c
        _NAMES[c] = key
        _SCHEMAS.pop(c, None)
        _DEFAULTS.pop(c, None)
        return c

    return register(cls) if cls is not None else register


def message_type(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RemoteProtocolError(f"unknown message type {name!r}") from None


def type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    try:
        return _NAMES[cls]
    except KeyError:
        raise LocalProtocolError(
            f"{cls.__name__} is not a registered message type; decorate it with @message"
        ) from None


def is_message(obj: Any) -> bool:
    return (obj if isinstance(obj, type) else type(obj)) in _NAMES


_PLAIN = (str, int, float, bool, bytes, type(None))
_DEFAULTS: dict[type, list[tuple[str, Any]]] = {}
_NO_DEFAULT = object()


def _fields_and_defaults(cls: type) -> list[tuple[str, Any]]:
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = _NO_DEFAULT
        out.append((f.name, default))
    _DEFAULTS[cls] = out
    return out


def to_wire(obj: Any) -> Any:
    """Plain msgpack-able form of a message (nested messages become maps, enums values).
    Fields equal to their default are left out: the receiver fills them in again, which
    keeps frames small (most tasks use few of their optional fields)."""
    cls = type(obj)
    if cls in _NAMES:
        out = {}
        for name, default in _DEFAULTS.get(cls) or _fields_and_defaults(cls):
            value = getattr(obj, name)
            if value is default or (default is not _NO_DEFAULT and value == default
                                    and type(value) is type(default)):
                continue
            out[name] = value if type(value) in _PLAIN else to_wire(value)
        return out
    if cls in _PLAIN:
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        raise LocalProtocolError(f"{cls.__name__} is not a registered message type")
    return obj


def from_wire(cls: type[T], data: Any) -> T:
    """Build ``cls`` from its wire form, checking every field's type strictly."""
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{cls.__name__}: expected a map, got {type(data).__name__}")
    schema = _SCHEMAS.get(cls) or _compile(cls)
    kwargs = {}
    for fname, convert, required in schema:
        if fname in data:
            try:
                kwargs[fname] = convert(data[fname])
            except _Mismatch as exc:
                raise RemoteProtocolError(f"{cls.__name__}.{fname}: {exc}") from None
        elif required:
            raise RemoteProtocolError(f"{cls.__name__}: missing field {fname!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"{cls.__name__}: {exc}") from None


def pack(obj: Any) -> bytes:
    return packb(to_wire(obj))


def unpack(cls: type[T], payload: bytes, limits: Limits = DEFAULT_LIMITS) -> T:
    return from_wire(cls, unpackb(payload, limits))


def pack_batch(objs: Sequence[Any]) -> bytes:
    return packb([to_wire(o) for o in objs])


def unpack_batch(cls: type[T], payload: bytes, limits: Limits = DEFAULT_LIMITS) -> list[T]:
    raw = unpackb(payload, limits)
    if not isinstance(raw, list):
        raise RemoteProtocolError(f"{cls.__name__} batch: expected an array")
    return [from_wire(cls, item) for item in raw]


def dumps(obj: Any) -> bytes:
    """Self-describing bytes for a registered message: the safe stand-in for pickle.dumps."""
    return packb([type_name(obj), to_wire(obj)])


def loads(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Inverse of :func:`dumps`; only registered types can come out, never arbitrary code."""
    raw = unpackb(data, limits)
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str)):
        raise RemoteProtocolError("not a ceylon_net message (expected [type, fields])")
    return from_wire(message_type(raw[0]), raw[1])


def decode_payload(header: Header, payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """A BCAST/DIRECT payload as the receiver sees it: a message object, or raw bytes."""
    if header.type is None:
        return bytes(payload)
    return unpack(message_type(header.type), payload, limits)


def encode_payload(data: Any) -> tuple[str | None, bytes]:
    """(type name, payload) for raw bytes or a registered message."""
    if isinstance(data, bytes | bytearray | memoryview):
        return None, bytes(data)
    return type_name(data), pack(data)


# --------------------------------------------------------------------------- field converters


class _Mismatch(Exception):
    pass


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60


def _compile(cls: type) -> list[tuple[str, Callable[[Any], Any], bool]]:
    hints = typing.get_type_hints(cls)
    schema = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        convert = _converter(hints.get(f.name, Any))
        most = f.metadata.get("max_items")
        if most is not None:
            convert = _at_most(most, convert)
        schema.append((f.name, convert, required))
    _SCHEMAS[cls] = schema
    return schema


def _expect(kind: type | tuple[type, ...], label: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise _Mismatch(f"expected {label}, got bool")
        if not isinstance(v, kind):
            raise _Mismatch(f"expected {label}, got {type(v).__name__}")
        return v

    return check


def _to_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Mismatch(f"expected float, got {type(v).__name__}")
    return float(v)


def _at_most(most: int, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A field's declared bound, checked before any of its items is converted."""
    def check(v: Any) -> Any:
        if isinstance(v, list | dict) and len(v) > most:
            raise _Mismatch(f"{len(v)} items, more than the {most} allowed")
        return convert(v)

    return check


def _identity(v: Any) -> Any:
    return v


def _converter(tp: Any) -> Callable[[Any], Any]:
    if tp is Any or tp is object:
        return _identity
    if tp is float:
        return _to_float
    if tp in (int, str, bool, bytes):
        return _expect(tp, tp.__name__)
    if isinstance(tp, type) and tp in _NAMES:
        return lambda v: from_wire(tp, v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_converter(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_converter(a) for a in args if a is not type(None)]
        return _union_converter(options, type(None) in args)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        item = _converter(args[0]) if args else _identity
        if item is _identity:
            return _expect(list, "array")  # decoded lists are fresh: nothing to copy
        return lambda v: [item(x) for x in _expect(list, "array")(v)]
    if origin is dict or tp is dict:
        value = _converter(args[1]) if len(args) == 2 else _identity
        if value is _identity:
            return _expect(dict, "map")  # decoded maps are fresh: nothing to copy
        return lambda v: {k: value(x) for k, x in _expect(dict, "map")(v).items()}
    return _identity


def _enum_converter(tp: type[enum.Enum]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise _Mismatch(f"a {type(v).__name__} is not a {tp.__name__}")
        try:
            return tp(v)
        except (ValueError, TypeError):
            # A bounded repr: a deeply nested value must not blow the recursion limit.
            raise _Mismatch(f"{_SHORT.repr(v)} is not a {tp.__name__}") from None

    return convert


def _union_converter(options: list[Callable[[Any], Any]], optional: bool) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if v is None and optional:
            return None
        for option in options:
            try:
                return option(v)
            except (_Mismatch, RemoteProtocolError):
                continue
        raise _Mismatch(f"unexpected {type(v).__name__}")

    return convert


# --------------------------------------------------------------------------- control messages


@message
@dataclass(slots=True)
class Hello:
    """Worker -> admin: who I am. Protocol version and workspace travel in the header."""

    name: str
    role: str
    skill: int
    capacity: int
    # On registering again (after the admin went silent or restarted): what this worker is
    # still running, as [task id, attempt], and the results the admin never acknowledged.
    # A worker holds at most its capacity of tasks, so these are bounded before conversion.
    running: list[list[Any]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": MAX_HELD})
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list,
                                                      metadata={"max_items": MAX_HELD})
    handlers: list[str] = dataclasses.field(default_factory=list,  # task handlers it has
                                            metadata={"max_items": MAX_HANDLERS})


@message
@dataclass(slots=True)
class Heartbeat:
    """Worker -> admin, every heartbeat: the tasks it holds and the results it has not had
    acknowledged, as [task id, attempt]. An assignment the admin believes delivered but the
    worker never got (a connection replaced mid-flight) is found this way and requeued."""

    holding: list[list[Any]] = dataclasses.field(default_factory=list,
                                                 metadata={"max_items": 2 * MAX_HELD})
    # The worker hears the admin's heartbeats on PUB: the admin need not send it its own.
    pub: bool = False


@message
@dataclass(slots=True)
class Ack:
    """Admin -> worker: these results ([task id, attempt]) are recorded (or were stale);
    the worker may forget them."""

    results: list[list[Any]]


@message
@dataclass(slots=True)
class Cancel:
    """Stop these tasks ([task id, attempt]); a worker reports each as a cancelled result."""

    tasks: list[list[Any]]
    reason: str = ""


@message
@dataclass(slots=True)
class Welcome:
    """Admin -> worker: you are in; where the PUB bus is; how often we both heartbeat."""

    agent_id: str
    admin: str
    pub_port: int
    heartbeat: float
    liveness: int


@message
@dataclass(slots=True)
class Reject:
    reason: str
    # True: "I do not know you (I restarted, or declared you lost): say HELLO again", not a
    # refusal. A worker that gets it while registering ignores it.
    retry: bool = False


@message
@dataclass(slots=True)
class End:
    """Admin -> workers: the run is over (or the admin is shutting down); exit cleanly."""

    reason: str


@message
@dataclass(slots=True)
class Event:
    """A status event on the PUB bus: ``worker_joined``, ``worker_lost``, ``run_finished``..."""

    event: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@message
@dataclass(slots=True)
class Status:
    """The admin's answer to STATUS: see ceylon_net.status.snapshot for the fields."""

    snapshot: dict[str, Any]


@message
@dataclass(slots=True)
class Submission:
    """A client's batch: ``doc`` is a tasks/groups document as in a tasks file."""

    doc: dict[str, Any]
    wait: bool = True
    sequential: bool = False


@message
@dataclass(slots=True)
class Submitted:
    batch: int
    tasks: int


@message
@dataclass(slots=True)
class BatchProgress:
    batch: int
    done: int
    total: int
    succeeded: int


@message
@dataclass(slots=True)
class BatchReport:
    """The batch's run report, in the --report-json form."""

    batch: int
    report: dict[str, Any]
