"""How roxxel's frames travel through a JetStream stream: pure functions, no I/O.

A relay (``roxxel-aggregator --jetstream``) publishes what it takes from a
sender as *units*, on the subject ``roxxel.{run}.{sender id in hex}`` of the
stream :data:`STREAM_NAME`. A unit is one msgpack array::

    [UNIT_VERSION, hello frame, [frame, ...]]

the sender's frames (batches, then possibly its bye) in seq order, after
its hello: a writer (``--from-jetstream``) that never saw the sender --
started later, or after the stream's retention removed its first units --
still knows its rank, host and run. The hello's ``acked`` is rewritten to
the seq before the unit's first frame: everything of the sender before it
is in the stream already (a relay publishes a sender's units one at a time,
in order), so a writer that meets the sender first here starts from it.

A frame too large for one message (the servers' ``max_payload``, 1 MiB by
default; a batch of 4,096 long lines is more) goes in *parts*: consecutive
units of the sender ``[UNIT_VERSION, hello frame, [], index, count, piece]``
whose pieces, joined, are the frame; a writer applies it once it has the
last one.

A unit's ``Nats-Msg-Id`` is ``{sender hex}:{last seq}`` (a bye's
``{sender hex}:bye:{seq}``, a part's ``{sender hex}:{seq}:part{index}``): a
relay that publishes a unit again (no acknowledgement came) is answered
``duplicate`` by JetStream within its duplicate window; past it, or when a
client resends through a restarted relay (other units, other ids), the
writer's ledger drops every batch it has applied already by its seq, as a
collector drops a resent batch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import NamedTuple

import msgpack

from roxxel import codec

__all__ = [
    "STREAM_NAME",
    "SUBJECT_ROOT",
    "UNIT_VERSION",
    "RELAY_HEADER",
    "check_run_name",
    "run_subjects",
    "sender_subject",
    "sender_of_subject",
    "unit_id",
    "pack_unit",
    "unpack_unit",
    "next_unit",
    "pack_parts",
    "part_id",
    "Part",
    "Unit",
    "MAX_PARTS",
    "MAX_UNIT_FRAMES",
]

STREAM_NAME = "ROXXEL"
SUBJECT_ROOT = "roxxel"
UNIT_VERSION = 1
# The relay that published a unit (host and pid): what a writer's reports name.
RELAY_HEADER = "Roxxel-Relay"
# A run name is one subject token: no '.', '*', '>' or white space.
_RUN_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
# Parts of one frame at most (a frame is at most 64 MiB; a server's max_payload
# is rarely below 1 MiB).
MAX_PARTS = 4096
# Frames in one unit at most (a client sends at most a window of batches at once).
MAX_UNIT_FRAMES = 1024
# What a unit adds to its frames: the array's head, the hello, each frame's bin head.
_UNIT_OVERHEAD = 1024
_FRAME_OVERHEAD = 5


def check_run_name(name: str) -> str | None:
    """Why ``name`` cannot name a run in the stream (``None``: it can)."""
    if _RUN_NAME.match(name):
        return None
    return (
        f"--run {name!r}: a run name is 1 to 128 letters, digits, '-' or '_' "
        "(it is a token of the stream's subjects)"
    )


def run_subjects(run: str) -> str:
    """The subjects of every sender of ``run``: what its writer reads."""
    return f"{SUBJECT_ROOT}.{run}.>"


def sender_subject(run: str, sender_id: bytes) -> str:
    return f"{SUBJECT_ROOT}.{run}.{sender_id.hex()}"


def sender_of_subject(subject: str) -> bytes | None:
    """The sender id a subject names (``None``: not a sender's subject)."""
    token = subject.rsplit(".", 1)[-1]
    if len(token) != 2 * codec.SENDER_ID_LEN:
        return None
    try:
        return bytes.fromhex(token)
    except ValueError:
        return None


def unit_id(sender_id: bytes, frames: Sequence[bytes]) -> str:
    """The unit's ``Nats-Msg-Id``: the sender and the seq its last frame carries."""
    last = codec.decode_envelope(frames[-1])
    kind = ":bye" if last.kind == "bye" else ""
    return f"{sender_id.hex()}{kind}:{last.seq}"


def pack_unit(hello: codec.Hello, frames: Sequence[bytes]) -> bytes:
    """One unit: ``hello`` (its ``acked`` the seq before the first frame), then ``frames``."""
    if not frames:
        raise codec.CodecError("a unit holds at least one frame")
    first = codec.decode_envelope(frames[0])
    before = first.seq if first.kind == "bye" else first.seq - 1
    hello = dataclasses.replace(hello, acked=max(0, before))
    return msgpack.packb([UNIT_VERSION, codec.encode(hello), list(frames)], use_bin_type=True)


def pack_parts(hello: codec.Hello, frame: bytes, max_bytes: int) -> list[bytes]:
    """``frame`` as the units of its parts, each at most ``max_bytes``."""
    seq = codec.decode_envelope(frame).seq
    hello_frame = codec.encode(dataclasses.replace(hello, acked=max(0, seq - 1)))
    size = max_bytes - _UNIT_OVERHEAD
    pieces = [frame[i : i + size] for i in range(0, len(frame), size)]
    return [
        msgpack.packb([UNIT_VERSION, hello_frame, [], index, len(pieces), piece], use_bin_type=True)
        for index, piece in enumerate(pieces)
    ]


def part_id(sender_id: bytes, frame: bytes, index: int) -> str:
    return f"{sender_id.hex()}:{codec.decode_envelope(frame).seq}:part{index}"


class Part(NamedTuple):
    """One piece of a frame sent in parts: ``index`` of ``count``."""

    index: int
    count: int
    piece: bytes


class Unit(NamedTuple):
    """A unit read back: its frames, the hello first; a part's piece with only the hello."""

    frames: list[bytes]
    part: Part | None = None


def unpack_unit(data: bytes) -> Unit:
    """A unit's frames, its hello first, or its part. Raises
    :class:`roxxel.codec.CodecError` for anything that is not a unit (whatever the bytes)."""
    try:
        unit = msgpack.unpackb(
            data,
            raw=False,
            max_bin_len=codec.MAX_FRAME_BYTES,
            max_str_len=0,
            max_array_len=MAX_UNIT_FRAMES,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # noqa: BLE001 -- msgpack raises many kinds on garbage
        raise codec.CodecError(f"not a roxxel unit: {exc}") from None
    if (
        not isinstance(unit, list)
        or len(unit) not in (3, 6)
        or unit[0] != UNIT_VERSION
        or not isinstance(unit[1], bytes)
        or not isinstance(unit[2], list)
        or not all(isinstance(frame, bytes) for frame in unit[2])
    ):
        raise codec.CodecError(f"not a roxxel unit of version {UNIT_VERSION}")
    if len(unit) == 3:
        return Unit([unit[1], *unit[2]])
    _, hello, frames, index, count, piece = unit
    if (
        frames
        or type(index) is not int
        or type(count) is not int
        or not 0 <= index < count <= MAX_PARTS
        or not isinstance(piece, bytes)
    ):
        raise codec.CodecError("not a part of a roxxel unit")
    return Unit([hello], Part(index, count, piece))


def next_unit(frames: Sequence[bytes], max_bytes: int) -> list[bytes]:
    """The first frames of ``frames`` that go in one unit of at most ``max_bytes``
    (the servers' ``max_payload``) and :data:`MAX_UNIT_FRAMES`; a frame too
    large for any unit goes alone."""
    unit: list[bytes] = []
    size = _UNIT_OVERHEAD
    for frame in frames:
        size += len(frame) + _FRAME_OVERHEAD
        if unit and (size > max_bytes or len(unit) >= MAX_UNIT_FRAMES):
            break
        unit.append(frame)
    return unit
