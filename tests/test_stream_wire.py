"""Tests of the sans-IO unit format a relay publishes and a writer reads
(aggregator.stream_wire): round trips, hypothesis over frames and arbitrary
bytes, and the names that become subjects."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.stream_wire import (
    MAX_PARTS,
    MAX_UNIT_FRAMES,
    UNIT_VERSION,
    check_run_name,
    next_unit,
    pack_parts,
    pack_unit,
    part_id,
    run_subjects,
    sender_of_subject,
    sender_subject,
    unit_id,
    unpack_unit,
)
from roxxel import codec

SID = bytes(range(16))
HELLO = codec.Hello(SID, "host-a", 3, 4242, 8, "run", acked=0, version="1.0", starts=True)


def batch(seq: int, records: list | None = None) -> bytes:
    return codec.encode_batch(SID, seq, records or [["l", 1.0, 20, f"line {seq}"]])


def test_a_unit_is_its_hello_then_its_frames_and_the_hello_vouches_for_what_came_before() -> None:
    frames = [batch(5), batch(6), codec.encode(codec.Bye(SID, 6))]
    (hello, *rest), part = unpack_unit(pack_unit(HELLO, frames))
    assert rest == frames and part is None
    decoded = codec.decode(hello)
    assert decoded == codec.Hello(SID, "host-a", 3, 4242, 8, "run", 4, "1.0", True)


def test_a_bye_alone_says_everything_up_to_its_seq_is_in_the_stream() -> None:
    hello, bye = unpack_unit(pack_unit(HELLO, [codec.encode(codec.Bye(SID, 9))])).frames
    assert codec.decode(hello).acked == 9
    assert codec.decode(bye) == codec.Bye(SID, 9)


def test_an_empty_unit_cannot_be_packed() -> None:
    with pytest.raises(codec.CodecError):
        pack_unit(HELLO, [])


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(1, 2**40),
    bodies=st.lists(st.text(max_size=200), min_size=1, max_size=20),
)
def test_units_round_trip(first: int, bodies: list[str]) -> None:
    frames = [batch(first + i, [["l", 1.0, 20, text]]) for i, text in enumerate(bodies)]
    hello, *rest = unpack_unit(pack_unit(HELLO, frames)).frames
    assert rest == frames
    assert codec.decode(hello).acked == first - 1
    assert unit_id(SID, frames) == f"{SID.hex()}:{first + len(bodies) - 1}"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_a_unit_or_a_codec_error(data: bytes) -> None:
    try:
        frames, part = unpack_unit(data)
    except codec.CodecError:
        return
    assert frames and all(isinstance(frame, bytes) for frame in frames)
    assert part is None or 0 <= part.index < part.count


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        msgpack.packb([UNIT_VERSION + 1, b"h", [b"f"]]),
        msgpack.packb([UNIT_VERSION, "hello as text", [b"f"]]),
        msgpack.packb([UNIT_VERSION, b"h", [b"f", 3]]),
        msgpack.packb([UNIT_VERSION, b"h", b"not a list"]),
        msgpack.packb([UNIT_VERSION, b"h"]),
        msgpack.packb({"v": UNIT_VERSION}),
        msgpack.packb([UNIT_VERSION, b"h", [b"f"]]) + b"trailing",
        msgpack.packb([UNIT_VERSION, b"h", [b"f"] * (MAX_UNIT_FRAMES + 1)]),
        msgpack.packb([UNIT_VERSION, b"h", [b"f"], 0, 2, b"piece"]),  # frames and a part
        msgpack.packb([UNIT_VERSION, b"h", [], 2, 2, b"piece"]),
        msgpack.packb([UNIT_VERSION, b"h", [], -1, 2, b"piece"]),
        msgpack.packb([UNIT_VERSION, b"h", [], 0, MAX_PARTS + 1, b"piece"]),
        msgpack.packb([UNIT_VERSION, b"h", [], True, 2, b"piece"]),
        msgpack.packb([UNIT_VERSION, b"h", [], 0, 2, "piece"]),
        msgpack.packb([UNIT_VERSION, b"h", [], 0, 2]),
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(codec.CodecError):
        unpack_unit(data)


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=30_000), limit=st.integers(2048, 9000))
def test_a_frame_in_parts_joins_back(text: str, limit: int) -> None:
    frame = batch(7, [["l", 1.0, 20, text]])
    units = pack_parts(HELLO, frame, limit)
    assert all(len(unit) <= limit for unit in units)
    pieces = []
    for index, data in enumerate(units):
        (hello,), part = unpack_unit(data)
        assert codec.decode(hello).acked == 6
        assert part is not None and (part.index, part.count) == (index, len(units))
        pieces.append(part.piece)
    assert b"".join(pieces) == frame
    assert part_id(SID, frame, 2) == f"{SID.hex()}:7:part2"


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=40),
    limit=st.integers(2000, 20000),
)
def test_units_keep_order_and_size(sizes: list[int], limit: int) -> None:
    frames = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    units, rest = [], frames
    while rest:
        unit = next_unit(rest, limit)
        assert unit == rest[: len(unit)]
        units.append(unit)
        rest = rest[len(unit) :]
    assert [frame for unit in units for frame in unit] == frames
    for unit in units:
        packed = msgpack.packb([UNIT_VERSION, b"h" * 200, unit])
        assert len(unit) == 1 or len(packed) <= limit


def test_a_unit_holds_at_most_max_unit_frames_and_unpacks() -> None:
    frames = [batch(1 + i) for i in range(MAX_UNIT_FRAMES + 5)]
    unit = next_unit(frames, 2**30)
    assert len(unit) == MAX_UNIT_FRAMES
    assert unpack_unit(pack_unit(HELLO, unit)).frames[1:] == unit


@pytest.mark.parametrize("name", ["run", "run_alpha-7", "A" * 128])
def test_run_names_that_are_subject_tokens(name: str) -> None:
    assert check_run_name(name) is None
    assert run_subjects(name) == f"roxxel.{name}.>"
    subject = sender_subject(name, SID)
    assert subject == f"roxxel.{name}.{SID.hex()}"
    assert sender_of_subject(subject) == SID


@pytest.mark.parametrize("name", ["", "a.b", "a*", ">", "a b", "A" * 129, "é", "a/b"])
def test_run_names_that_would_break_the_subjects_are_refused(name: str) -> None:
    assert "a run name is 1 to 128 letters" in (check_run_name(name) or "")


@pytest.mark.parametrize("subject", ["roxxel.run.xyz", "roxxel.run", "roxxel.run." + "g" * 32])
def test_a_subject_that_names_no_sender(subject: str) -> None:
    assert sender_of_subject(subject) is None
