"""Bytes on the wire: bounded msgpack, the header, the three frames of a message, and the
[task id, attempt] pairs peers send. Anything malformed is a RemoteProtocolError."""

from __future__ import annotations

import itertools
import reprlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError
from .kinds import DEFAULT_LIMITS, KINDS, PROTOCOL_VERSION, Limits


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
    except (RemoteProtocolError, MemoryError):  # (out of memory: not the sender's fault)
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
    except MemoryError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"undecodable msgpack: {type(exc).__name__}: {exc}") from None
    if unpacker.tell() != size:
        raise RemoteProtocolError(f"undecodable msgpack: {size - unpacker.tell()} byte(s) of "
                                  "extra data after the value")


def packb(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except MemoryError:  # (said as it is: "cannot encode list: " hid it)
        raise
    except Exception as exc:
        where, bad = _culprit(obj)
        at = f" (at {where}: {type(bad).__name__})" if where else ""
        raise LocalProtocolError(f"cannot encode {type(obj).__name__}{at}: {exc}") from None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40


def _culprit(obj: Any, where: str = "", depth: int = 0) -> tuple[str, Any]:
    """Where in ``obj`` the first thing msgpack cannot carry is (``[1]['x']``; a dict's key
    as ``key 'k'``), and that thing: what an error names, so a user finds it (only called
    once packing failed)."""
    if depth >= 32 or not isinstance(obj, (list, tuple, dict)):
        return where, obj
    pairs = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in pairs:
        shown = _REPR.repr(key)  # (short, and never raising: a user's key may)
        for part, item in (((f"{where and ' '}key {shown}", key),) if isinstance(obj, dict)
                           else ()) + \
                ((f"[{shown}]", value),):
            try:
                msgpack.packb(item, use_bin_type=True)
            except Exception:
                return _culprit(item, where + part, depth + 1)
    return where, obj


# --------------------------------------------------------------------------- header / frames


@dataclass(slots=True)
class Header:
    """Who sent what, when. ``type`` names the payload's registered message type (None: raw
    bytes); ``to`` is the recipient agent id of a DIRECT message; ``seq`` numbers a broadcast
    (the admin's sequence) and, on the admin's PUB heartbeat, says how many there were; on the
    admin's answer to a client request (STATUS, SUBMIT, REJECT) it is that request's msg_id,
    so a client matches answers to requests even when one went unanswered. ``epoch`` names
    the admin process a broadcast's number counts in: a restarted admin numbers from 1
    again, and its broadcasts must not be taken for the old one's."""

    workspace: str
    sender: str
    msg_id: int = 0
    ts: float = 0.0
    type: str | None = None
    to: str | None = None
    version: int = PROTOCOL_VERSION
    token: str | None = None  # the workspace token, on HELLO and client requests only
    seq: int | None = None  # a broadcast's number, or the msg_id an answer answers
    epoch: int | None = None  # on a broadcast: the admin process that numbered it


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
    if h.epoch is not None:
        return packb([*fields, h.token, h.seq, h.epoch])
    if h.seq is not None:
        return packb([*fields, h.token, h.seq])
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
    seq = raw[8] if len(raw) > 8 else None
    if not (seq is None or (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0)):
        raise RemoteProtocolError("header seq must be an int >= 0 or nil")
    epoch = raw[9] if len(raw) > 9 else None
    if not (epoch is None or (type(epoch) is int and epoch >= 0)):
        raise RemoteProtocolError("header epoch must be an int >= 0 or nil")
    return Header(workspace, sender, msg_id, float(ts), type_, to, version, token, seq, epoch)


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
    # Exact types (what msgpack decodes to): a bool is not an int here. One test for the
    # usual pair, the reasons only for a bad one (an ACK holds a pair per result).
    for pair in raw if type(raw) is list else [None]:
        if type(pair) is list and len(pair) == 2 and type(pair[0]) in _TASK_IDS \
                and type(pair[1]) is int:
            out[pair[0]] = pair[1]
            continue
        if not (type(pair) is list and len(pair) == 2):
            raise RemoteProtocolError(f"{what}: expected [task id, attempt] pairs")
        if type(pair[0]) not in _TASK_IDS:
            raise RemoteProtocolError(f"{what}: a task id must be an int or a string")
        raise RemoteProtocolError(f"{what}: an attempt must be an int")  # all that is left
    return out


_TASK_IDS = (int, str)


def batch_pairs(raw: Any) -> list[tuple[int, str]]:
    """[(batch, run)] from [[batch, run], ...] as a client's WATCH names its batches."""
    out = []
    for pair in raw if type(raw) is list else [None]:
        if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is int
                and type(pair[1]) is str):
            raise RemoteProtocolError("WATCH batches: expected [batch number, run] pairs")
        out.append((pair[0], pair[1]))
    return out
