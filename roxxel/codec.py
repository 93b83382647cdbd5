"""The roxxel wire codec: pure functions between frames (events) and bytes.

No socket is imported here (the h11 "sans-IO" split): the client and the
collector decide where bytes go. Every frame is one msgpack array::

    [PROTO_VERSION, kind, sender_id, seq, body]

and a ZeroMQ message carries one or more frames (a client sends everything
it may send at once as one message).

``kind`` is one of ``hello``, ``batch``, ``bye`` (client to collector) and
``ack`` and ``refusal`` (collector to client: its records are not taken,
``{"reason": ...}``); a tool asks a collector with ``query`` (body
a map, e.g. ``{"what": "status"}``) and it replies with ``answer`` (a map),
the same ``seq`` in both. ``sender_id`` is 16 random bytes per client.
In a ``batch``, ``seq`` counts the sender's batches from 1; a ``hello``
carries there the highest seq the client has seen acked (its body: host,
rank, pid, process count, prefix, the client's version, and ``starts`` on a
Logger's own first hello), a ``bye`` the last
seq it sent, an ``ack`` the highest contiguous seq the collector has written
(and, answering a hello, where the run's files are: a map of ``host``,
``system_log``, ``metrics_csv`` and ``metrics_jsonl``; ``nil`` otherwise).

The records inside a batch body are :mod:`roxxel.schema`' to define.

:func:`decode` never raises anything but :class:`CodecError`, whatever the
bytes; it uses msgpack's explicit size limits and refuses ext types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "PROTO_VERSION",
    "SENDER_ID_LEN",
    "MAX_FRAME_BYTES",
    "MESSAGE_BYTES",
    "MAX_MESSAGE_BYTES",
    "CodecError",
    "BatchError",
    "Hello",
    "Batch",
    "Bye",
    "Ack",
    "Where",
    "Query",
    "Answer",
    "Refusal",
    "Frame",
    "encode",
    "encode_batch",
    "encode_records",
    "batch_frame",
    "decode",
    "decode_envelope",
    "Envelope",
    "wire_repr",
]

PROTO_VERSION = 1
SENDER_ID_LEN = 16

# Limits a decoder applies before it allocates anything. A client never
# builds a frame past them: batches are cut at MAX_BATCH_RECORDS records.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# What a client puts in one ZeroMQ message (frames past it go in the next),
# unless one frame alone is larger; a collector drops larger messages unread.
MESSAGE_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES + 64 * 1024
# The longest text a client sends whole (a message is cut to fit it; see
# roxxel.schema.MAX_TEXT_CHARS).
MAX_STR_LEN = 1024 * 1024
MAX_BIN_LEN = 1024
MAX_ARRAY_LEN = 65536
MAX_MAP_LEN = 4096
MAX_BATCH_RECORDS = 4096
# A hello's host and prefix (DNS names have at most 253 characters), and its
# rank, pid and process count (below 2**32, as pids and ranks are).
MAX_NAME_LEN = 255
MAX_PROCESSES = 2**32

# Version, kind, 16-byte id and a 64-bit seq take at most 37 bytes.
_MAX_ENVELOPE = 64

_BATCH_HEAD = b"\x95"


class CodecError(ValueError):
    """Bytes that are not a valid roxxel frame, or a frame that cannot be encoded."""


class BatchError(CodecError):
    """A batch whose envelope is valid (sender, seq) but whose body is not.

    The collector acknowledges such a batch once and quarantines it, so the
    client does not resend it forever.
    """

    def __init__(self, message: str, sender_id: bytes, seq: int):
        super().__init__(message)
        self.sender_id = sender_id
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Hello:
    """A client introduces itself; ``acked`` is the highest seq it has seen acked."""

    sender_id: bytes
    host: str
    rank: int
    pid: int
    process_count: int
    prefix: str
    acked: int = 0
    # The client's roxxel version ("" from a client older than the field).
    version: str = ""
    # A Logger's own first sender: its run starts (not a fork's, a watcher's,
    # a replay's, nor a hello said again).
    starts: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    """A numbered list of records from one sender."""

    sender_id: bytes
    seq: int
    records: list


@dataclass(frozen=True, slots=True)
class Bye:
    """The client is closing; ``seq`` is the last batch it sent."""

    sender_id: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Where:
    """Where a collector writes a run's files: paths on ``host``, its machine
    (``None`` for a metrics file it does not write)."""

    host: str
    system_log: str
    metrics_csv: str | None
    metrics_jsonl: str | None


_WHERE_FIELDS = ("host", "system_log", "metrics_csv", "metrics_jsonl")
_MAX_PATH_LEN = 4096


@dataclass(frozen=True, slots=True)
class Ack:
    """Every batch of ``sender_id`` up to and including ``seq`` is written.

    The answer to a hello also says ``where`` the run's files are (an older
    collector does not: ``None``).
    """

    sender_id: bytes
    seq: int
    # Not part of what an ack means (equal acks acknowledge the same batches).
    where: Where | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Query:
    """A tool asks the collector something (``body["what"]``); ``seq`` pairs the answer."""

    sender_id: bytes
    seq: int
    body: dict


@dataclass(frozen=True, slots=True)
class Answer:
    """The collector's reply to the :class:`Query` with the same ``seq``."""

    sender_id: bytes
    seq: int
    body: dict


@dataclass(frozen=True, slots=True)
class Refusal:
    """The collector will not take this sender's records; ``body["reason"]`` says why.

    The client keeps its records (they end in its undelivered file) and says so once.
    """

    sender_id: bytes
    seq: int
    body: dict


Frame = Hello | Batch | Bye | Ack | Query | Answer | Refusal

_HELLO_FIELDS = ("host", "rank", "pid", "process_count", "prefix")
_KINDS = ("hello", "batch", "bye", "ack", "query", "answer", "refusal")
_MAPPED = {Query: "query", Answer: "answer", Refusal: "refusal"}
_MAPPED_KINDS = {kind: cls for cls, kind in _MAPPED.items()}


def encode(frame: Frame) -> bytes:
    """Encode one frame. Raises :class:`CodecError` for a malformed frame."""
    if not isinstance(frame, (Hello, Batch, Bye, Ack, Query, Answer, Refusal)):
        raise CodecError(f"not a roxxel frame: {type(frame).__name__}")
    if isinstance(frame, (Query, Answer, Refusal)):
        _check_sender_and_seq(frame.sender_id, frame.seq)
        if not isinstance(frame.body, dict):
            raise CodecError(f"a {_MAPPED[type(frame)]} body is a map")
        return _pack([PROTO_VERSION, _MAPPED[type(frame)], frame.sender_id, frame.seq, frame.body])
    if isinstance(frame, Batch):
        return encode_batch(frame.sender_id, frame.seq, frame.records)
    if isinstance(frame, Hello):
        _check_sender_and_seq(frame.sender_id, frame.acked)
        _check_hello_fields(frame.host, frame.prefix, frame.rank, frame.pid, frame.process_count)
        _check_version(frame.version)
        body = {name: getattr(frame, name) for name in _HELLO_FIELDS}
        if frame.version:
            body["version"] = frame.version
        if frame.starts:
            body["starts"] = True
        return _pack([PROTO_VERSION, "hello", frame.sender_id, frame.acked, body])
    _check_sender_and_seq(frame.sender_id, frame.seq)
    if isinstance(frame, Bye):
        return _pack([PROTO_VERSION, "bye", frame.sender_id, frame.seq, None])
    where = None
    if frame.where is not None:
        where = {name: getattr(frame.where, name) for name in _WHERE_FIELDS}
        if _where_of(where) is None:
            raise CodecError(
                f"where holds {', '.join(_WHERE_FIELDS)}: strings, not empty (the metrics "
                "files' may be nil)"
            )
    return _pack([PROTO_VERSION, "ack", frame.sender_id, frame.seq, where])


def encode_batch(
    sender_id: bytes,
    seq: int,
    records: Sequence[Sequence[Any]],
    default: Callable[[Any], Any] | None = None,
) -> bytes:
    """Encode a batch. ``default`` converts values msgpack does not know
    (NumPy/JAX scalars); it runs here, on the thread that encodes."""
    return batch_frame(sender_id, seq, encode_records(records, default))


def encode_records(
    records: Sequence[Sequence[Any]], default: Callable[[Any], Any] | None = None
) -> bytes:
    """Encode the body of a batch on its own, before it has a seq.

    A client numbers a batch only when it first sends it, so that batches
    it never sent can still be dropped without leaving a gap.
    """
    if len(records) > MAX_ARRAY_LEN:
        raise CodecError(f"a batch holds at most {MAX_ARRAY_LEN} records")
    body = _pack(records, default)
    if len(body) > MAX_FRAME_BYTES - _MAX_ENVELOPE:
        raise CodecError(f"a batch body of {len(body)} bytes leaves no room for its envelope")
    return body


def batch_frame(sender_id: bytes, seq: int, body: bytes) -> bytes:
    """A batch frame around a body from :func:`encode_records`."""
    _check_sender_and_seq(sender_id, seq)
    if seq < 1:
        raise CodecError("batch seq starts at 1")
    # A msgpack array of 5 is its header byte followed by the 5 items' bytes.
    return _BATCH_HEAD + _pack([PROTO_VERSION, "batch", sender_id, seq])[1:] + body


@dataclass(frozen=True, slots=True)
class Envelope:
    """The first four items of a frame: enough to route it without its body."""

    kind: str
    sender_id: bytes
    seq: int


def decode_envelope(data: bytes) -> Envelope:
    """Read only the envelope, so a duplicate batch is recognised without decoding it."""
    envelope, _ = _open_frame(data)
    return envelope


def decode(data: bytes) -> Frame:
    """Decode one frame; anything wrong raises :class:`CodecError`.

    A batch whose envelope is valid but whose body is not raises
    :class:`BatchError`, which names the sender and seq.
    """
    envelope, unpacker = _open_frame(data)
    kind, sender_id, seq = envelope.kind, envelope.sender_id, envelope.seq
    try:
        body = unpacker.unpack()
        if unpacker.tell() != len(data):
            raise ValueError(f"{len(data) - unpacker.tell()} bytes after the frame")
    except Exception as exc:  # msgpack raises many types for bad input
        problem = f"bad {kind} body: {type(exc).__name__}: {exc}"
        if kind == "batch":
            raise BatchError(problem, sender_id, seq) from None
        raise CodecError(problem) from None
    if kind == "batch":
        if not isinstance(body, list):
            raise BatchError("batch body is not an array of records", sender_id, seq)
        return Batch(sender_id, seq, body)
    if kind == "hello":
        return _decode_hello(sender_id, seq, body)
    if kind == "bye":
        return Bye(sender_id, seq)
    if kind in _MAPPED_KINDS:
        if not isinstance(body, dict):
            raise CodecError(f"{kind} body is a map")
        return _MAPPED_KINDS[kind](sender_id, seq, body)
    return Ack(sender_id, seq, _where_of(body))


def _open_frame(data: bytes) -> tuple[Envelope, msgpack.Unpacker]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_FRAME_BYTES:
        raise CodecError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    unpacker = msgpack.Unpacker(
        raw=False,
        # Non-text metric keys are the collector's to report, key by key.
        strict_map_key=False,
        max_buffer_size=max(len(data), 1),
        # A text is bounded by the frame: one longer than MAX_STR_LEN (a
        # metric's text value) is the collector's to cut, not a reason to
        # refuse the batch around it.
        max_str_len=MAX_FRAME_BYTES,
        max_bin_len=MAX_BIN_LEN,
        max_array_len=MAX_ARRAY_LEN,
        max_map_len=MAX_MAP_LEN,
        max_ext_len=0,
        ext_hook=_refuse_ext,
    )
    try:
        unpacker.feed(data)
        if unpacker.read_array_header() != 5:
            raise ValueError("not an array of 5 items")
        version, kind, sender_id, seq = (unpacker.unpack() for _ in range(4))
    except Exception as exc:  # msgpack raises many types for bad input
        raise CodecError(f"not a roxxel frame: {type(exc).__name__}: {exc}") from None
    if version != PROTO_VERSION or type(version) is not int:
        raise CodecError(f"unsupported protocol version {wire_repr(version)}")
    if kind not in _KINDS:
        raise CodecError(f"unknown frame kind {wire_repr(kind)}")
    _check_sender_and_seq(sender_id, seq)
    if kind == "batch" and seq < 1:
        raise CodecError("batch seq starts at 1")
    return Envelope(kind, sender_id, seq), unpacker


def _decode_hello(sender_id: bytes, acked: int, body: Any) -> Hello:
    if not isinstance(body, dict):
        raise CodecError("hello body is a map")
    try:
        host, rank, pid, count, prefix = (
            body["host"],
            body["rank"],
            body["pid"],
            body["process_count"],
            body["prefix"],
        )
    except KeyError as exc:
        raise CodecError(f"hello lacks {exc.args[0]!r}") from None
    _check_hello_fields(host, prefix, rank, pid, count)
    version = body.get("version", "")
    _check_version(version)
    return Hello(
        sender_id, host, rank, pid, count, prefix, acked, version, body.get("starts") is True
    )


def _check_version(version: Any) -> None:
    # Written into the run's log as it is: short and printable.
    if not isinstance(version, str) or len(version) > 64 or not version.isprintable():
        raise CodecError("hello version is a printable string of at most 64 characters")


def _where_of(body: Any) -> Where | None:
    """The ``where`` of an ack, or ``None`` for anything else: an ack stays an ack.

    Paths may hold any character a file name can (whoever prints them
    escapes control characters)."""
    if not isinstance(body, dict):
        return None
    values = [body.get(name) for name in _WHERE_FIELDS]
    if not all(_is_path(v) for v in values[:2]) or not all(
        v is None or _is_path(v) for v in values[2:]
    ):
        return None
    return Where(*values)


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_PATH_LEN


def _check_hello_fields(host: Any, prefix: Any, rank: Any, pid: Any, count: Any) -> None:
    if not isinstance(host, str) or not isinstance(prefix, str):
        raise CodecError("hello host and prefix are strings")
    if len(host) > MAX_NAME_LEN or len(prefix) > MAX_NAME_LEN:
        # Written into every JSONL row and kept per sender: a host name, not a payload.
        raise CodecError(f"hello host and prefix have at most {MAX_NAME_LEN} characters")
    for name, value in (("rank", rank), ("pid", pid), ("process_count", count)):
        if type(value) is not int or not 0 <= value < MAX_PROCESSES:
            raise CodecError(f"hello {name} is an integer from 0 to {MAX_PROCESSES - 1}")


def wire_repr(value: Any) -> str:
    """A short, safe description of a value from the wire, for error messages.

    ``repr`` of a hostile value could be huge or recurse past Python's
    limit (msgpack nests up to 1,024 levels): containers are named, not shown.
    """
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    if isinstance(value, (str, bytes)):
        return repr(value[:64]) + ("..." if len(value) > 64 else "")
    return repr(value)[:64]


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still lets zero-length ext types through.
    raise ValueError(f"ext type {code} is not allowed")


def _check_sender_and_seq(sender_id: Any, seq: Any) -> None:
    if not isinstance(sender_id, bytes) or len(sender_id) != SENDER_ID_LEN:
        raise CodecError(f"sender id is {SENDER_ID_LEN} bytes")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise CodecError("seq is a non-negative 64-bit integer")


def _pack(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        data = msgpack.packb(obj, use_bin_type=True, default=default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from None
    if len(data) > MAX_FRAME_BYTES:
        raise CodecError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data
