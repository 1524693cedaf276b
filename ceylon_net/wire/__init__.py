"""The wire format, and the only code that touches raw frames or msgpack.

A message on the wire is three frames: a short **kind** (``HELLO``, ``ASSIGN``...), a msgpack
**header** (protocol version, workspace, message id, sender, timestamp, payload type, recipient)
and an opaque **payload** the admin can relay without decoding. On PUB a topic frame (the
workspace) goes first so subscribers filter by workspace.

- :mod:`.kinds`     message kinds, protocol version, decode limits, the PUB topic
- :mod:`.codec`     bounded msgpack, the header, frames, [task id, attempt] pairs
- :mod:`.schema`    ``@message`` types and their strict wire form; ``dumps``/``loads``
- :mod:`.messages`  the control messages (Hello, Welcome, Heartbeat, Ack, Cancel...)

Never pickle: :func:`dumps`/:func:`loads` are the safe replacement for the tutorials' pickle.
"""

from .codec import (
    Envelope,
    Header,
    batch_pairs,
    decode_frames,
    decode_header,
    encode_frames,
    encode_header,
    make_header,
    packb,
    task_pairs,
    unpackb,
)
from .kinds import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_MESSAGE_BYTES,
    KINDS,
    MAX_CAPACITY,
    MAX_HANDLERS,
    MAX_HELD,
    MAX_RANGES,
    MAX_WATCH,
    MSGPACK_INTS,
    PROTOCOL_VERSION,
    Kind,
    Limits,
    topic,
)
from .messages import (
    Ack,
    BatchProgress,
    BatchReport,
    Cancel,
    End,
    Event,
    GroupNews,
    Heartbeat,
    Hello,
    Reject,
    Release,
    Skip,
    Started,
    Status,
    Submission,
    Submitted,
    TaskDone,
    Watch,
    Welcome,
)
from .schema import (
    FRAME_SLACK,
    MAX_DEPTH,
    decode_payload,
    dumps,
    encode_payload,
    encoder,
    from_wire,
    is_message,
    known_type,
    loads,
    message,
    message_type,
    pack,
    pack_batch,
    packed_batches,
    to_wire,
    type_name,
    unfit,
    unpack,
    unpack_batch,
    unpack_each,
)

__all__ = [
    "DEFAULT_LIMITS", "DEFAULT_MAX_MESSAGE_BYTES", "FRAME_SLACK", "KINDS", "MAX_CAPACITY",
    "MAX_DEPTH", "MAX_HANDLERS", "MAX_HELD", "MAX_RANGES", "MAX_WATCH", "MSGPACK_INTS",
    "PROTOCOL_VERSION", "Ack",
    "BatchProgress", "BatchReport", "Cancel", "End", "Envelope", "Event", "GroupNews", "Header",
    "Heartbeat", "Hello", "Kind", "Limits", "Reject", "Release", "Skip", "Started", "Status",
    "Submission", "Submitted", "TaskDone", "Watch", "Welcome", "batch_pairs", "decode_frames",
    "decode_header", "decode_payload", "dumps", "encode_frames", "encode_header",
    "encode_payload", "encoder", "from_wire", "is_message", "known_type", "loads",
    "make_header", "message", "message_type", "pack", "pack_batch", "packb", "packed_batches",
    "task_pairs", "to_wire", "topic", "type_name", "unfit", "unpack", "unpack_batch",
    "unpack_each", "unpackb",
]
