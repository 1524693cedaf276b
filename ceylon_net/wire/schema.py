"""Typed messages: dataclasses registered by name with :func:`message`, their strict wire
form, and :func:`dumps`/:func:`loads`, the safe replacement for the tutorials' pickle.

They travel as msgpack maps of their fields; decoding is strict about field types, ignores
unknown fields and fills missing ones from defaults (so a new field with a default never breaks
an older peer). Only registered types can ever come out of a decode.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import reprlib
import sys
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import LocalProtocolError, RemoteProtocolError
from .codec import Header, packb, unpackb
from .kinds import DEFAULT_LIMITS, MSGPACK_INTS, Limits

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
_SCHEMAS: dict[type, list[tuple[str, Callable[[Any], Any], bool]]] = {}
T = TypeVar("T")


def _dotted(c: type) -> str:
    return f"{c.__module__}.{c.__qualname__}"


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
        if old is not None and old is not c \
                and not _one_module(old.__module__, c.__module__):
            # (one module imported under two names is this too: it is not refused)
            warnings.warn(f"message name {key!r} is registered again, by {_dotted(c)} (it was "
                          f"{_dotted(old)}'s): messages of that name are read as the later "
                          f"class from now on, and handlers of the other get none. Two "
                          f"different messages? Name one apart: @message(name=...)",
                          RuntimeWarning, stacklevel=3)
        _REGISTRY[key] = c
        _NAMES[c] = key
        _SCHEMAS.pop(c, None)
        _DEFAULTS.pop(c, None)
        _ENCODERS.pop(c, None)
        _DECODERS.pop(c, None)
        _prepare(c)
        return c

    return register(cls) if cls is not None else register


_MAIN = ("__main__", "__mp_main__")  # a script run, and multiprocessing's import of it


def _one_module(a: str, b: str) -> bool:
    """The same module, perhaps under two names: a script run as ``__main__`` that is also
    imported by its own name (``--app script``), or reloaded. Not a script's class taking a
    name of another module's (``class TaskResult`` of a tutorial, over ceylon_net's)."""
    if a == b:
        return True
    if a not in _MAIN and b not in _MAIN:
        return False
    files = [getattr(sys.modules.get(m), "__file__", None) for m in (a, b)]
    return files[0] is not None and files[0] == files[1]


def message_type(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RemoteProtocolError(f"unknown message type {name!r}") from None


def known_type(name: str) -> bool:
    """Is a message class of this name registered in this process?"""
    return name in _REGISTRY


def type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    try:
        return _NAMES[cls]
    except KeyError:
        said = "; broadcast() and send() take bytes as they are (a str: encode it)" \
            if cls in (str, bytearray, memoryview) else ""
        raise LocalProtocolError(
            f"{cls.__name__} is not a registered message type; decorate it with @message{said}"
        ) from None


def is_message(obj: Any) -> bool:
    return (obj if isinstance(obj, type) else type(obj)) in _NAMES


_PLAIN = frozenset((str, int, float, bool, bytes, type(None)))
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
    encode = _ENCODERS.get(cls)
    if encode is not None:
        return encode(obj)
    if cls is list:  # exactly a list or a map (a task's args, say): first, and cheap to tell
        return [v if type(v) in _PLAIN else to_wire(v) for v in obj]
    if cls is dict:
        return {k: v if type(v) in _PLAIN else to_wire(v) for k, v in obj.items()}
    if cls in _NAMES:
        return _encoder(cls)(obj)
    if cls in _PLAIN:
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):  # tuples and subclasses (after enums: a tuple enum)
        return [v if type(v) in _PLAIN else to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        raise LocalProtocolError(f"{cls.__name__} is not a registered message type")
    return obj


def encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """The compiled encoder of a registered message type: :func:`to_wire` of an object of
    exactly that type, without looking its type up (for a caller that encodes many)."""
    if cls not in _NAMES:
        raise LocalProtocolError(f"{cls.__name__} is not a registered message type")
    return _ENCODERS.get(cls) or _encoder(cls)


def from_wire(cls: type[T], data: Any) -> T:
    """Build ``cls`` from its wire form, checking every field's type strictly. A message
    nested deeper than this process's stack decodes (a recursive type: a tree) is
    RemoteProtocolError: the receiver drops it (it stopped the admin's receive loop)."""
    try:
        decode = _DECODERS.get(cls) or _decoder(cls)
        return decode(data)
    except RecursionError:
        raise _too_deep_to_decode(cls) from None


def _too_deep_to_decode(cls: type) -> RemoteProtocolError:
    return RemoteProtocolError(f"{cls.__name__}: nested too deeply to decode here (about "
                               f"{sys.getrecursionlimit() // 4} levels or more)")


def _from_wire_slowly(cls: type[T], data: Any) -> T:
    """What the compiled decoders do, field by field (the reference they are tested on)."""
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


MAX_DEPTH = 100  # lists and maps in a task's arguments, nested at most this deep


# Leaves the wire carries, for unfit(plain=True) (bool is an int). Not _PLAIN above, which
# to_wire's fast path looks types up in: named alike, this one replaced it, and a task's
# encoding for the journal went the slow way (W5 8 % slower).
_CARRIED = (str, int, float, bytes, type(None))


def unfit(value: Any, limits: Limits = DEFAULT_LIMITS, depth: int = MAX_DEPTH,
          plain: bool = False) -> str | None:
    """Why ``value`` (a task's arguments) cannot go on the wire, or None: it nests lists,
    tuples or maps deeper than ``depth`` (encoding it would run out of Python's stack, in the
    admin too), has a list or a map longer than a peer decodes (``limits``), or an integer
    msgpack has no room for; with ``plain``, a value other than a string, number, boolean,
    bytes or None (a TOML date, say). Looked at without recursion."""
    nested = (list, tuple, dict)
    level, todo = 0, [value] if isinstance(value, nested) else []
    while todo:
        level += 1
        if level > depth:
            return f"nests lists and maps more than {depth} deep"
        deeper = []
        for item in todo:
            if isinstance(item, dict):
                if len(item) > limits.max_map_len:
                    return f"has a map of {len(item):,} keys (at most {limits.max_map_len:,})"
                if (key := _odd_key(item)) is not None:  # (encoded, a peer refuses it)
                    return (f"has a map with a key of type {type(key).__name__} ({key!r:.40}): "
                            f"a map's keys on the wire are strings")
                items: Any = (*item, *item.values())
            elif len(item) > limits.max_array_len:
                return f"has a list of {len(item):,} items (at most {limits.max_array_len:,})"
            else:
                items = item
            for v in items:
                if isinstance(v, nested):
                    deeper.append(v)
                elif type(v) is int and v not in MSGPACK_INTS:
                    return (f"has an integer of {v.bit_length()} bits (the wire carries "
                            f"-2**63 to 2**64 - 1)")
                elif plain and not isinstance(v, _CARRIED):
                    return (f"has a {type(v).__name__} ({v!s:.40}), which the wire does not carry "
                            f"(strings, numbers, booleans, null, lists and maps): give it as "
                            f"a string")
        todo = deeper
    return None


def _odd_key(mapping: dict[Any, Any]) -> Any:
    """A key of ``mapping`` a peer would not read (it decodes maps with string or bytes keys
    only, msgpack's strict_map_key), or None."""
    for key in mapping:
        if not isinstance(key, str | bytes):
            return key
    return None


def _too_deep_error(obj: Any) -> LocalProtocolError:
    return LocalProtocolError(f"cannot encode {type(obj).__name__}: nested too deeply (about "
                              f"{sys.getrecursionlimit() // 2} levels or more)")


def pack(obj: Any) -> bytes:
    try:
        return packb(to_wire(obj))
    except RecursionError:  # (to_wire follows nested lists and maps down, two calls a level)
        raise _too_deep_error(obj) from None


def unpack(cls: type[T], payload: bytes, limits: Limits = DEFAULT_LIMITS) -> T:
    return from_wire(cls, unpackb(payload, limits))


def pack_batch(objs: Sequence[Any]) -> bytes:
    if not isinstance(objs, list | tuple):
        objs = list(objs)  # any iterable, as before
    if not objs:
        return packb([])
    cls = type(objs[0])  # a batch is of one type: its encoder looked up once
    encode = _ENCODERS.get(cls) or (_encoder(cls) if cls in _NAMES else to_wire)
    try:
        return packb([encode(o) if type(o) is cls else to_wire(o) for o in objs])
    except RecursionError:
        raise _too_deep_error(objs[0]) from None


FRAME_SLACK = 1024  # bytes of a frame's limit kept free for what goes around a payload


def packed_batches(objs: Sequence[Any], limit: int,
                   pack: Callable[[Sequence[Any]], bytes] = pack_batch
                   ) -> Iterator[tuple[Sequence[Any], bytes]]:
    """``objs`` as ``pack`` payloads of at most ``limit`` bytes each, in order: (the part,
    its payload). Halved until they fit: a receiver's socket drops a connection that sends
    more than its --max-message-bytes. One message over the limit still goes alone.
    ``pack``: of messages, pack_batch; of plain values, packb."""
    payload = pack(objs)
    if len(payload) <= limit or len(objs) <= 1:
        yield objs, payload
        return
    half = len(objs) // 2
    yield from packed_batches(objs[:half], limit, pack)
    yield from packed_batches(objs[half:], limit, pack)


def _raw_batch(cls: type, payload: bytes, limits: Limits) -> list[Any]:
    """A batch's items as msgpack gave them."""
    raw = unpackb(payload, limits)
    if not isinstance(raw, list):
        raise RemoteProtocolError(f"{cls.__name__} batch: expected an array")
    return raw


def unpack_batch(cls: type[T], payload: bytes, limits: Limits = DEFAULT_LIMITS) -> list[T]:
    raw = _raw_batch(cls, payload, limits)
    if not raw:
        return []
    decode = _DECODERS.get(cls) or _decoder(cls)
    try:
        return [decode(item) for item in raw]
    except RecursionError:
        raise _too_deep_to_decode(cls) from None


def unpack_each(cls: type[T], payload: bytes, limits: Limits = DEFAULT_LIMITS
                ) -> tuple[list[T], list[tuple[Any, RemoteProtocolError]]]:
    """A batch :func:`unpack_batch` refused, item by item: those that decode, and each
    that does not, as it came (msgpack's form) with why. RemoteProtocolError when the batch
    itself is not one (not msgpack, not an array, nested too deep)."""
    raw = _raw_batch(cls, payload, limits)
    decode = _DECODERS.get(cls) or _decoder(cls)
    good: list[T] = []
    bad: list[tuple[Any, RemoteProtocolError]] = []
    for item in raw:
        try:
            good.append(decode(item))
        except RemoteProtocolError as exc:
            bad.append((item, exc))
        except RecursionError:
            bad.append((None, _too_deep_to_decode(cls)))
    return good, bad


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


# --------------------------------------------------------------------------- compiled codecs
# Every task crosses the wire twice (its assignment, its result): each registered type gets an
# encoder and a decoder of its own, generated once, with one line per field instead of a loop
# over field descriptions (what dataclasses does for __init__). They do exactly what the
# descriptions say: the slow path stays as the reference (_from_wire_slowly).

_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}
_DECODERS: dict[type, Callable[[Any], Any]] = {}
_MISSING = object()


_BUILDING: set[tuple[str, type]] = set()  # codecs being generated now
_GENERATING = threading.Lock()  # (one thread at a time: see _prepare)


def _prepare(cls: type) -> None:
    """Generate a newly registered type's codecs now, in the thread that defines it (an
    import). Generated on first use, in a client's or worker's own thread while another
    thread compiles code (an import, pytest rewriting a test module), they can meet CPython
    3.11's AST recursion-depth bug: a SystemError in that other thread's compile. A type whose
    annotations do not resolve yet (one named before it is defined) is left to first use."""
    try:
        typing.get_type_hints(cls)
        _encoder(cls)
        _decoder(cls)
    except Exception:
        _ENCODERS.pop(cls, None)
        _DECODERS.pop(cls, None)


def _nested(cls: type, what: str) -> dict[str, type]:
    """Fields declared as another registered message (a TaskAssignment's task): their
    compiled codec (``what``: encoder or decoder) is called directly, without looking it up
    for every value. A type that holds itself, or one being built (types that hold each
    other), is left to the lookup."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here (NameError, ...)
        return {}  # encoding never needed them: every field by the lookup, as before
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if hints.get(f.name) in _NAMES and hints[f.name] is not cls
            and (what, hints[f.name]) not in _BUILDING}


def _codecs_of(cls: type, what: str, build: Callable[[type], Any]) -> dict[str, Any]:
    """{field: the nested type's compiled ``what``} for :func:`_nested`'s fields whose codec
    can be built; one that cannot (its own annotations do not resolve) keeps the lookup."""
    out = {}
    for name, tp in _building(what, cls, lambda: _nested(cls, what)).items():
        try:
            out[name] = _building(what, cls, lambda tp=tp: build(tp))
        except Exception:  # the lookup raises it when such a value comes
            continue
    return out


def _building(what: str, cls: type, build: Callable[[], Any]) -> Any:
    _BUILDING.add((what, cls))
    try:
        return build()
    finally:
        _BUILDING.discard((what, cls))


def _encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    env: dict[str, Any] = {"_PLAIN": _PLAIN, "to_wire": to_wire}
    lines = ["def encode(obj):", "    out = {}"]
    nested = _codecs_of(cls, "encoder", lambda tp: (tp, _ENCODERS.get(tp) or _encoder(tp)))
    for i, (name, default) in enumerate(_DEFAULTS.get(cls) or _fields_and_defaults(cls)):
        lines.append(f"    v = obj.{name}")
        put = f"out[{name!r}] = v if type(v) in _PLAIN else to_wire(v)"
        if name in nested:
            env[f"t{i}"], env[f"e{i}"] = nested[name]
            put = f"out[{name!r}] = e{i}(v) if type(v) is t{i} else to_wire(v)"
        if default is _NO_DEFAULT:
            lines.append(f"    {put}")
            continue
        env[f"d{i}"] = default
        lines.append(f"    if {_differs(default, f'd{i}')}:")
        lines.append(f"        {put}")
    lines.append("    return out")
    with _GENERATING:
        exec("\n".join(lines), env)
    _ENCODERS[cls] = env["encode"]
    return env["encode"]


def _differs(default: Any, name: str) -> str:
    """An expression true of ``v`` when it is not the field's default (equal and of the same
    type), spelled for the default at hand: a message has many fields, most of them left at
    their defaults, and each is looked at on every send."""
    kind = type(default)
    if default is None:
        return "v is not None"
    if kind in (list, dict) and not default:
        return f"v or type(v) is not {kind.__name__}"  # an empty one, exactly
    if kind in (bool, int, str) or (kind is float and math.isfinite(default)):
        return f"v != {default!r} or type(v) is not {kind.__name__}"
    return f"not (v is {name} or (v == {name} and type(v) is type({name})))"


def _fast_check(tp: Any, v: str = "v") -> str | None:
    """An expression true of variable ``v`` when it needs no conversion (the usual case),
    or None."""
    if tp is Any or tp is object:
        return "True"
    if tp in (str, int, float, bool, bytes):
        return f"type({v}) is {tp.__name__}"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        plain = [a for a in args if a is not type(None)]
        if all(a in (str, int, float, bool, bytes) for a in plain):
            checks = [f"type({v}) is {a.__name__}" for a in plain]
            if type(None) in args:
                checks.insert(0, f"{v} is None")
            return " or ".join(checks)
    return None


def _decoder(cls: type) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # Every field passed by position, a missing one as its default: no keyword map to build
    # and unpack (a third of a result's decoding). A class whose __init__ does not take
    # exactly its fields, in order, by position (kw_only, init=False, an InitVar, its own
    # __init__) gets the keywords.
    positional = _takes_fields_in_order(cls, list(fields))
    env: dict[str, Any] = {"cls": cls, "_MISSING": _MISSING, "_convert": _convert,
                           "RemoteProtocolError": RemoteProtocolError}
    label = cls.__name__
    lines = ["def decode(data):",
             "    if not isinstance(data, dict):",
             f"        raise RemoteProtocolError(f'{label}: expected a map, got "
             "{type(data).__name__}')",
             "    get = data.get"] + ([] if positional else ["    kwargs = {}"])
    names = []
    nested = {name: dec for name, dec in
              _codecs_of(cls, "decoder", lambda tp: _DECODERS.get(tp) or _decoder(tp)).items()
              if not fields[name].metadata.get("max_items")}
    for i, (name, convert, required) in enumerate(_SCHEMAS.get(cls) or _compile(cls)):
        env[f"c{i}"] = nested.get(name, convert)
        fast = _DIRECT if name in nested else None if fields[name].metadata.get("max_items") \
            else _fast_check(hints.get(name, Any), f"v{i}")
        lines += _field_lines(i, fields[name], fast, required, positional, label, env)
        names.append(f"v{i}")
    call = f"cls({', '.join(names)})" if positional else "cls(**kwargs)"
    lines += ["    try:",
              f"        return {call}",
              "    except (TypeError, ValueError) as exc:",
              f"        raise RemoteProtocolError(f'{label}: {{exc}}') from None"]
    with _GENERATING:
        exec("\n".join(lines), env)
    _DECODERS[cls] = env["decode"]
    return env["decode"]


# A nested message's own decoder, called as it is: it raises RemoteProtocolError itself, with
# its own type's name, as the lookup through _convert did.
_DIRECT = "direct"


def _field_lines(i: int, field: dataclasses.Field, fast: str | None, required: bool,
                 positional: bool, label: str, env: dict[str, Any]) -> list[str]:
    """The decoder's lines for field ``i``: into ``v{i}``, converted if it needs it; missing,
    an error, or its default (positional) or left out (keywords)."""
    name = field.name
    where = label + "." + name
    present = [] if fast == "True" else \
        [f"v{i} = c{i}(v{i})"] if fast is _DIRECT else \
        [f"v{i} = _convert(c{i}, v{i}, {where!r})"] if fast is None else \
        [f"if not ({fast}):", f"    v{i} = _convert(c{i}, v{i}, {where!r})"]
    if not positional:
        present.append(f"kwargs[{name!r}] = v{i}")
    absent = []
    if required:
        absent = [f"raise RemoteProtocolError({label + ': missing field ' + repr(name)!r})"]
    elif positional and field.default is not dataclasses.MISSING:
        env[f"d{i}"] = field.default
        absent = [f"v{i} = d{i}"]
    elif positional:
        env[f"f{i}"] = field.default_factory
        absent = [f"v{i} = f{i}()"]
    lines = [f"    v{i} = get({name!r}, _MISSING)"]
    if present:
        lines += [f"    if v{i} is not _MISSING:", *(" " * 8 + x for x in present)]
        lines += ["    else:", *(" " * 8 + x for x in absent)] if absent else []
    elif absent:
        lines += [f"    if v{i} is _MISSING:", *(" " * 8 + x for x in absent)]
    return lines


def _takes_fields_in_order(cls: type, names: list[str]) -> bool:
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # no self
    except (TypeError, ValueError):
        return False
    return [p.name for p in params] == names and \
        all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)


def _convert(convert: Callable[[Any], Any], v: Any, where: str) -> Any:
    try:
        return convert(v)
    except _Mismatch as exc:
        raise RemoteProtocolError(f"{where}: {exc}") from None


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
    if origin is tuple or tp is tuple:
        return _tuple_converter(args)
    if origin in (list, Sequence) or tp is list:
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


def _tuple_converter(args: tuple[Any, ...]) -> Callable[[Any], Any]:
    """A tuple back from its array: ``tuple[X, ...]`` of any length, each item an X;
    ``tuple[X, Y]`` of that length, each item its own type (a bare ``tuple``: any items)."""
    array = _expect(list, "array")
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = _converter(args[0]) if args else _identity
        return lambda v: tuple(map(item, array(v)))
    items = [_converter(a) for a in args]

    def convert(v: Any) -> tuple[Any, ...]:
        v = array(v)
        if len(v) != len(items):
            raise _Mismatch(f"expected {len(items)} items, got {len(v)}")
        return tuple(f(x) for f, x in zip(items, v, strict=True))

    return convert


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
