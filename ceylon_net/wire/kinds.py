"""Message kinds, protocol version and the bounds every decoder applies. No code, only facts
both sides agree on."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 4  # 2: numbered broadcasts, with repairs; 3: STARTED and RELEASE (pipelining);
# 4: the admin's heartbeat sets the pace (slower with many workers)
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class Kind:
    """Frame kinds. A worker says HELLO, HEARTBEAT, RESULT, BCAST, DIRECT, BYE; the admin
    answers WELCOME or REJECT and sends ASSIGN, DIRECT, HEARTBEAT, END. EVENT is PUB-only.
    BCAST goes out numbered on PUB; a broadcast an agent missed comes again over its DEALER,
    or a SKIP says the admin no longer has it. A client (futures) submits with ``follow``, or
    sends WATCH for tasks it waits on (again after the admin restarted), and gets one DONE per
    task as it ends, and GROUP news of the groups it submitted.
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
    SKIP = b"SKIP"
    WATCH = b"WATCH"
    DONE = b"DONE"
    GROUP = b"GROUP"
    # Pipelining: a worker says which queued tasks started (only those can be lost with it),
    # and the admin may ask for queued ones back (RELEASE: work stealing); the worker gives
    # back those not started yet, in a STARTED's ``released``.
    STARTED = b"STARTED"
    RELEASE = b"RELEASE"


KINDS = frozenset(v for k, v in vars(Kind).items() if k.isupper())


MAX_CAPACITY = 10_000  # tasks one worker may run at once (its --concurrency)
# The integers msgpack carries (`v in MSGPACK_INTS` is O(1) for an int, but walks the range
# for a subclass of int: ask with int(v)); any other cannot be sent.
MSGPACK_INTS = range(-(2**63), 2**64)
MAX_HELD = MAX_CAPACITY  # tasks a worker can hold, running or with results unacknowledged
MAX_HANDLERS = 1_000  # task handler names one worker can announce
MAX_RANGES = 32  # ranges of missed broadcasts one heartbeat may name
MAX_WATCH = 100_000  # task ids one WATCH may name


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to every msgpack decode of data that came from the network."""

    max_str_len: int = 1 << 20
    max_bin_len: int = 1 << 20
    max_array_len: int = 100_000
    max_map_len: int = 10_000


DEFAULT_LIMITS = Limits()


def topic(workspace: str) -> bytes:
    """PUB topic of a workspace; the NUL keeps 'prod' from matching 'production'."""
    return workspace.encode() + b"\0"
