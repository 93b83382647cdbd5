"""Tests of the sans-IO wire codec (roxxel.codec).

As in h11's tests, one table of (frame, expected decoded frame) drives the
round-trip and mutation tests; hypothesis covers frames built from
strategies and arbitrary bytes; explicit garbage cases pin the refusals.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roxxel import codec, schema
from roxxel.codec import (
    Ack,
    Batch,
    BatchError,
    Bye,
    CodecError,
    Envelope,
    Hello,
    Where,
    decode,
    decode_envelope,
    encode,
)
from roxxel.schema import NON_SCALAR, check_record
from roxxel.values import to_wire

SID = bytes(range(16))
OTHER_SID = b"\xff" * 16
WHERE = Where("collector-host", "/logs/a_system.log", "/logs/a_metrics.csv", "/logs/a.jsonl")
_WHERE_BODY = {
    "host": WHERE.host,
    "system_log": WHERE.system_log,
    "metrics_csv": WHERE.metrics_csv,
    "metrics_jsonl": WHERE.metrics_jsonl,
}
FRAME_TYPES = (Hello, Batch, Bye, Ack)

PROPERTY = settings(max_examples=200, deadline=None)


def _raw(*items) -> bytes:
    """Pack any array by hand, bypassing encode()'s checks."""
    return msgpack.packb(list(items), use_bin_type=True)


def _same(actual, expected) -> None:
    """Equal, and equal in repr too: catches bool/int/float and tuple/list swaps."""
    assert actual == expected
    assert repr(actual) == repr(expected)


# --------------------------------------------------------------------------
# The table: (frame to encode, frame decode() must give back)
# --------------------------------------------------------------------------

_LOG = ["l", 1700000000.25, 20, "starting"]
_METRICS = [
    "m",
    ["loss", "n", "tag", "gone", "ok"],
    [1700000001, 1700000001.5],
    [10, 11],
    [[0.125, 3, "x", None, True], [-0.5, 4, "y", 1.5, False]],
]

CASES = [
    pytest.param(
        Hello(SID, "host-a", 0, 1234, 8, "run_alpha"),
        Hello(SID, "host-a", 0, 1234, 8, "run_alpha", 0),
        id="hello",
    ),
    pytest.param(
        Hello(OTHER_SID, "", 7, 2**32 - 1, 8, "", acked=41),
        Hello(OTHER_SID, "", 7, 2**32 - 1, 8, "", 41),
        id="hello-acked-empty-strings",
    ),
    pytest.param(
        Hello(SID, "hôte-ü-日本", 2**32 - 1, 1, 2**32 - 1, "préfixe", acked=2**63 - 1),
        Hello(SID, "hôte-ü-日本", 2**32 - 1, 1, 2**32 - 1, "préfixe", 2**63 - 1),
        id="hello-unicode-extreme-ints",
    ),
    pytest.param(
        Batch(SID, 1, [list(_LOG), list(_METRICS)]),
        Batch(SID, 1, [list(_LOG), list(_METRICS)]),
        id="batch-log-and-metrics",
    ),
    pytest.param(
        Batch(SID, 2, [tuple(_LOG), ("m", ("a",), (0.5,), (0,), ((-1.5,),))]),
        Batch(SID, 2, [list(_LOG), ["m", ["a"], [0.5], [0], [[-1.5]]]]),
        id="batch-tuples-come-back-as-lists",
    ),
    pytest.param(Batch(SID, 3, []), Batch(SID, 3, []), id="batch-empty"),
    pytest.param(
        Batch(SID, 2**63 - 1, [["l", -1, -(2**63), "x" * 1000]]),
        Batch(SID, 2**63 - 1, [["l", -1, -(2**63), "x" * 1000]]),
        id="batch-max-seq",
    ),
    pytest.param(Bye(SID, 0), Bye(SID, 0), id="bye-nothing-sent"),
    pytest.param(Bye(SID, 17), Bye(SID, 17), id="bye"),
    pytest.param(Ack(SID, 0), Ack(SID, 0), id="ack-zero"),
    pytest.param(Ack(OTHER_SID, 2**63 - 1), Ack(OTHER_SID, 2**63 - 1), id="ack-max"),
    pytest.param(Ack(SID, 0, WHERE), Ack(SID, 0, WHERE), id="ack-where"),
]


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_encode_then_decode_gives_the_expected_frame(frame, expected):
    data = encode(frame)
    assert isinstance(data, bytes)
    _same(decode(data), expected)


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_reencoding_the_decoded_frame_gives_the_same_bytes(frame, expected):
    data = encode(frame)
    assert encode(decode(data)) == data
    assert encode(expected) == data


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_decode_accepts_bytearray_and_memoryview(frame, expected):
    data = encode(frame)
    _same(decode(bytearray(data)), expected)
    _same(decode(memoryview(data)), expected)


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_decoded_batch_records_pass_check_record(frame, expected):
    decoded = decode(encode(frame))
    records = decoded.records if isinstance(decoded, Batch) else []
    assert [check_record(r) for r in records] == [None] * len(records)


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_every_truncation_of_a_valid_frame_raises_codec_error(frame, expected):
    data = encode(frame)
    for end in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:end])


@pytest.mark.parametrize("trailer", [b"\x00", b"\xc0", b"\x90", b"\xff" * 7])
@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_trailing_bytes_after_a_valid_frame_raise_codec_error(frame, expected, trailer):
    with pytest.raises(CodecError, match="bytes after the frame"):
        decode(encode(frame) + trailer)


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_flipped_bytes_give_a_frame_or_codec_error_and_nothing_else(frame, expected):
    data = encode(frame)
    masks = [1 << bit for bit in range(8)] + [0xFF]
    outcomes = {"frame": 0, "error": 0}
    for pos in range(len(data)):
        for mask in masks:
            mutated = bytearray(data)
            mutated[pos] ^= mask
            try:
                result = decode(bytes(mutated))
            except CodecError:
                outcomes["error"] += 1
            else:
                assert isinstance(result, FRAME_TYPES)
                outcomes["frame"] += 1
    # Flipping the array header or version byte always breaks the frame.
    assert outcomes["error"] >= 2 * len(masks)
    assert sum(outcomes.values()) == len(data) * len(masks)


@pytest.mark.parametrize(("frame", "expected"), CASES)
def test_replacing_any_byte_with_special_markers_gives_a_frame_or_codec_error(frame, expected):
    data = encode(frame)
    # never-used byte, ext8/fixext/timestamp, huge array/map/str/bin headers
    specials = [0xC1, 0xC7, 0xD4, 0xD6, 0xDD, 0xDF, 0xDB, 0xC6, 0xCF, 0xD3, 0xCB]
    for pos in range(len(data)):
        for special in specials:
            mutated = bytearray(data)
            mutated[pos] = special
            try:
                result = decode(bytes(mutated))
            except CodecError:
                continue
            assert isinstance(result, FRAME_TYPES)


# --------------------------------------------------------------------------
# Hypothesis: valid frames round-trip
# --------------------------------------------------------------------------

sender_ids = st.binary(min_size=16, max_size=16)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
hello_ints = st.integers(min_value=0, max_value=codec.MAX_PROCESSES - 1)
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
texts = st.text(max_size=30)
timestamps = st.one_of(
    st.integers(-(10**11) + 1, 10**11 - 1), st.floats(-9.99e10, 9.99e10, allow_nan=False)
)
metric_values = st.one_of(
    st.none(),
    st.booleans(),
    wire_ints,
    st.floats(allow_nan=False),
    texts,
)
log_records = st.tuples(st.just("l"), timestamps, wire_ints, texts).map(list)
metric_keys = st.lists(
    st.text(min_size=1, max_size=30).filter(lambda k: k not in schema.RESERVED_METRIC_NAMES),
    unique=True,
    max_size=8,
)
metrics_records = metric_keys.flatmap(
    lambda keys: st.lists(
        st.tuples(timestamps, wire_ints, st.tuples(*[metric_values] * len(keys))),
        min_size=1,
        max_size=5,
    ).map(
        lambda rows: [
            "m",
            list(keys),
            [ts for ts, _, _ in rows],
            [step for _, step, _ in rows],
            [list(values) for _, _, values in rows],
        ]
    )
)
records = st.lists(st.one_of(log_records, metrics_records), max_size=20)

hellos = st.builds(
    Hello,
    sender_id=sender_ids,
    host=texts,
    rank=hello_ints,
    pid=hello_ints,
    process_count=hello_ints,
    prefix=texts,
    acked=seqs,
    version=st.text(max_size=64).filter(str.isprintable),
    starts=st.booleans(),
)
batches = st.builds(Batch, sender_id=sender_ids, seq=st.integers(1, 2**63 - 1), records=records)
byes = st.builds(Bye, sender_id=sender_ids, seq=seqs)
paths = st.text(min_size=1, max_size=64).filter(str.isprintable)
wheres = st.builds(
    Where,
    host=paths,
    system_log=paths,
    metrics_csv=st.none() | paths,
    metrics_jsonl=st.none() | paths,
)
acks = st.builds(Ack, sender_id=sender_ids, seq=seqs, where=st.none() | wheres)
frames = st.one_of(hellos, batches, byes, acks)


@PROPERTY
@given(frames)
def test_any_valid_frame_round_trips_unchanged(frame):
    data = encode(frame)
    decoded = decode(data)
    _same(decoded, frame)
    assert encode(decoded) == data


@PROPERTY
@given(sender_ids, st.integers(1, 2**63 - 1), records, st.booleans())
def test_batch_records_sent_as_tuples_decode_as_lists(sender_id, seq, recs, as_tuples):
    sent = [tuple(r) for r in recs] if as_tuples else recs
    decoded = decode(encode(Batch(sender_id, seq, sent)))
    _same(decoded, Batch(sender_id, seq, recs))
    assert all(check_record(r) is None for r in decoded.records)


@PROPERTY
@given(sender_ids, st.integers(1, 2**63 - 1), records)
def test_encode_batch_matches_encode_of_a_batch_frame(sender_id, seq, recs):
    assert codec.encode_batch(sender_id, seq, recs) == encode(Batch(sender_id, seq, recs))


# --------------------------------------------------------------------------
# Hypothesis: garbage never raises anything but CodecError
# --------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
def test_decode_of_arbitrary_bytes_returns_a_frame_or_raises_codec_error(data):
    try:
        result = decode(data)
    except CodecError:
        return
    assert isinstance(result, FRAME_TYPES)


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        wire_ints,
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.binary(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(-3, 3)), children, max_size=5),
    ),
    max_leaves=20,
)
hello_bodies = st.dictionaries(
    st.sampled_from(["host", "rank", "pid", "process_count", "prefix", "extra"]),
    st.one_of(st.integers(-2, 2**64 - 1), st.text(max_size=5), msgpack_values),
)
frame_like = st.lists(msgpack_values, max_size=7) | st.tuples(
    st.sampled_from([1, 1, 1, 0, 2, True, 1.0, "1", None]),
    st.sampled_from(["hello", "batch", "bye", "ack", "nack", b"ack", 1]) | msgpack_values,
    st.binary(min_size=15, max_size=17) | msgpack_values,
    st.integers(-2, 2**64 - 1) | msgpack_values,
    hello_bodies | st.lists(msgpack_values, max_size=4) | msgpack_values,
).map(list)


@settings(max_examples=300, deadline=None)
@given(frame_like)
def test_decode_of_frame_shaped_msgpack_returns_a_stable_frame_or_raises_codec_error(obj):
    data = msgpack.packb(obj, use_bin_type=True)
    try:
        result = decode(data)
    except CodecError:
        return
    assert isinstance(result, FRAME_TYPES)
    # Whatever decode accepts, encode can send again unchanged.
    _same(decode(encode(result)), result)


# --------------------------------------------------------------------------
# Explicit garbage
# --------------------------------------------------------------------------

_BIG_BIN = codec.MAX_BIN_LEN + 1
_HELLO_BODY = {"host": "h", "rank": 0, "pid": 1, "process_count": 1, "prefix": "p"}

GARBAGE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="never-used-byte"),
    pytest.param(_raw(2, "ack", SID, 1, None), id="version-2"),
    pytest.param(_raw(0, "ack", SID, 1, None), id="version-0"),
    pytest.param(_raw(True, "ack", SID, 1, None), id="version-true"),
    pytest.param(_raw(1.0, "ack", SID, 1, None), id="version-float"),
    pytest.param(_raw("1", "ack", SID, 1, None), id="version-str"),
    pytest.param(_raw(1, "nack", SID, 1, None), id="unknown-kind"),
    pytest.param(_raw(1, b"ack", SID, 1, None), id="kind-as-bytes"),
    pytest.param(_raw(1, 3, SID, 1, None), id="kind-as-int"),
    pytest.param(_raw(1, "ACK", SID, 1, None), id="kind-wrong-case"),
    pytest.param(_raw(1, "ack", SID[:15], 1, None), id="sender-15-bytes"),
    pytest.param(_raw(1, "ack", SID + b"\x00", 1, None), id="sender-17-bytes"),
    pytest.param(_raw(1, "ack", b"", 1, None), id="sender-empty"),
    pytest.param(_raw(1, "ack", "0123456789abcdef", 1, None), id="sender-as-str"),
    pytest.param(_raw(1, "ack", None, 1, None), id="sender-nil"),
    pytest.param(_raw(1, "ack", SID, -1, None), id="negative-seq"),
    pytest.param(_raw(1, "bye", SID, -(2**63), None), id="most-negative-seq"),
    pytest.param(_raw(1, "ack", SID, 2**63, None), id="seq-2-63"),
    pytest.param(_raw(1, "ack", SID, 2**64 - 1, None), id="seq-max-uint64"),
    pytest.param(_raw(1, "ack", SID, 1.0, None), id="seq-float"),
    pytest.param(_raw(1, "ack", SID, True, None), id="seq-true"),
    pytest.param(_raw(1, "ack", SID, "1", None), id="seq-str"),
    pytest.param(_raw(1, "batch", SID, 0, []), id="batch-seq-0"),
    pytest.param(_raw(1, "batch", SID, 1, None), id="batch-body-nil"),
    pytest.param(_raw(1, "batch", SID, 1, {"a": 1}), id="batch-body-map"),
    pytest.param(_raw(1, "batch", SID, 1, "records"), id="batch-body-str"),
    pytest.param(_raw(1, "hello", SID, 0, None), id="hello-body-nil"),
    pytest.param(_raw(1, "hello", SID, 0, [1, 2, 3, 4, 5]), id="hello-body-array"),
    pytest.param(
        _raw(1, "hello", SID, 0, {k: v for k, v in _HELLO_BODY.items() if k != "pid"}),
        id="hello-missing-pid",
    ),
    pytest.param(_raw(1, "hello", SID, 0, {**_HELLO_BODY, "rank": -1}), id="hello-rank-negative"),
    pytest.param(_raw(1, "hello", SID, 0, {**_HELLO_BODY, "rank": True}), id="hello-rank-bool"),
    pytest.param(_raw(1, "hello", SID, 0, {**_HELLO_BODY, "pid": 1.5}), id="hello-pid-float"),
    pytest.param(
        _raw(1, "hello", SID, 0, {**_HELLO_BODY, "process_count": "8"}), id="hello-count-str"
    ),
    pytest.param(_raw(1, "hello", SID, 0, {**_HELLO_BODY, "host": b"h"}), id="hello-host-bytes"),
    pytest.param(_raw(1, "hello", SID, 0, {**_HELLO_BODY, "prefix": None}), id="hello-prefix-nil"),
    pytest.param(_raw(1, "hello", SID, 0, {1: "h"}), id="hello-map-with-int-keys"),
    pytest.param(_raw(1, "ack", SID, 1), id="array-of-4"),
    pytest.param(_raw(1, "ack", SID, 1, None, None), id="array-of-6"),
    pytest.param(msgpack.packb({"kind": "ack"}), id="map-not-array"),
    pytest.param(msgpack.packb(1), id="bare-int"),
    pytest.param(msgpack.packb("ack"), id="bare-str"),
    pytest.param(b"\x91" * 10000 + b"\xc0", id="10000-nested-arrays"),
    pytest.param(b"\x81\xa1k" * 10000 + b"\xc0", id="10000-nested-maps"),
    pytest.param(
        b"\x95\x01\xa5batch\xc4\x10" + SID + b"\x01" + b"\x91" * 10000 + b"\xc0",
        id="10000-nested-arrays-in-batch-body",
    ),
    pytest.param(b"\xdb" + (2**31).to_bytes(4, "big") + b"abc", id="str32-claims-2-31-bytes"),
    pytest.param(b"\xdb\xff\xff\xff\xff", id="str32-claims-4gib-no-payload"),
    pytest.param(b"\xc6\xff\xff\xff\xff" + b"x" * 10, id="bin32-claims-4gib"),
    pytest.param(b"\xdd\xff\xff\xff\xff" + b"\xc0" * 10, id="array32-claims-4g-items"),
    pytest.param(b"\xdf\xff\xff\xff\xff" + b"\xc0" * 10, id="map32-claims-4g-pairs"),
    pytest.param(
        b"\x95\x01\xa3ack\xc5" + _BIG_BIN.to_bytes(2, "big") + bytes(_BIG_BIN) + b"\x01\xc0",
        id="sender-bin-over-limit",
    ),
    pytest.param(
        msgpack.packb([1, "ack", SID, 1, msgpack.ExtType(5, b"x")], use_bin_type=True),
        id="ext-type-in-body",
    ),
    pytest.param(msgpack.packb(msgpack.ExtType(1, b"\x00" * 8)), id="bare-ext-type"),
    pytest.param(b"\xd6\xff\x00\x00\x00\x00", id="timestamp-ext"),
    pytest.param(
        msgpack.packb([1, "batch", SID, 1, [["l", 0, 20, msgpack.ExtType(0, b"x")]]]),
        id="ext-type-in-record",
    ),
    pytest.param(b"\x95\x01\xa3ack\xc4\x10" + SID + b"\x01\xd9\x02\xff\xfe", id="invalid-utf8"),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_decode_refuses_garbage_with_codec_error(data):
    with pytest.raises(CodecError) as info:
        decode(data)
    assert str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            msgpack.packb(
                [1, "batch", SID, 1, [["m", ["loss"], [0], [1], [[msgpack.ExtType(0, b"")]]]]]
            ),
            id="in-metrics-value",
        ),
        pytest.param(msgpack.packb([1, "ack", SID, 1, msgpack.ExtType(7, b"")]), id="in-ack-body"),
    ],
)
def test_decode_refuses_zero_length_ext_types(data):
    with pytest.raises(CodecError):
        decode(data)


def test_codec_error_is_a_value_error():
    assert issubclass(CodecError, ValueError)


def test_hand_packed_frames_with_valid_fields_decode():
    # The table's hand-built frames differ from a good one only in the broken
    # field: the same helper with correct fields decodes.
    assert decode(_raw(1, "ack", SID, 1, None)) == Ack(SID, 1)
    assert decode(_raw(1, "hello", SID, 0, _HELLO_BODY)) == Hello(SID, "h", 0, 1, 1, "p", 0)
    assert decode(_raw(1, "batch", SID, 1, [])) == Batch(SID, 1, [])


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("where", id="str"),
        pytest.param([1, 2], id="list"),
        pytest.param({"host": "h"}, id="partial"),
        pytest.param({**_WHERE_BODY, "system_log": ""}, id="empty-path"),
        pytest.param({**_WHERE_BODY, "metrics_csv": 7}, id="int-path"),
        pytest.param({**_WHERE_BODY, "system_log": "/" + "x" * 5000}, id="path-too-long"),
    ],
)
def test_an_ack_whose_where_is_not_valid_is_still_an_ack_without_it(body):
    # Printed on the client's terminal: only plain, bounded strings are believed.
    assert decode(_raw(1, "ack", SID, 4, body)) == Ack(SID, 4)


def test_a_where_may_name_any_file_name_its_printer_escapes_it():
    where = Where("h\x1b[2J", "/logs/my\u00a0runs/a\tb_system.log", "/c", "/j")
    assert decode(encode(Ack(SID, 1, where))).where == where


def test_an_ack_says_where_with_extra_keys_ignored():
    body = {**_WHERE_BODY, "future_field": 1}
    assert decode(_raw(1, "ack", SID, 4, body)) == Ack(SID, 4, WHERE)


def test_a_where_that_cannot_be_read_back_is_not_encoded():
    with pytest.raises(CodecError, match="where holds host"):
        encode(Ack(SID, 1, Where("h", "", "/c", "/j")))


def test_hello_body_with_extra_keys_is_accepted():
    body = {**_HELLO_BODY, "future_field": [1, 2]}
    assert decode(_raw(1, "hello", SID, 3, body)) == Hello(SID, "h", 0, 1, 1, "p", 3)


def test_decode_reports_unknown_version_and_kind_by_name():
    with pytest.raises(CodecError, match="version 2"):
        decode(_raw(2, "ack", SID, 1, None))
    with pytest.raises(CodecError, match="nack"):
        decode(_raw(1, "nack", SID, 1, None))
    with pytest.raises(CodecError, match="batch seq starts at 1"):
        decode(_raw(1, "batch", SID, 0, []))
    with pytest.raises(CodecError, match="hello lacks 'pid'"):
        decode(_raw(1, "hello", SID, 0, {k: v for k, v in _HELLO_BODY.items() if k != "pid"}))


@pytest.mark.parametrize(
    "data",
    ["not bytes", None, 42, [1, "ack", SID, 1, None], bytearray, object()],
    ids=["str", "none", "int", "list", "type", "object"],
)
def test_decode_refuses_non_bytes_input_with_codec_error(data):
    with pytest.raises(CodecError, match="expected bytes"):
        decode(data)


def test_decode_refuses_a_frame_over_the_size_limit():
    data = bytes(codec.MAX_FRAME_BYTES + 1)  # calloc'd zeros: cheap
    with pytest.raises(CodecError, match="exceeds"):
        decode(data)


def test_decode_checks_the_size_limit_before_parsing(monkeypatch):
    data = encode(Ack(SID, 1))
    monkeypatch.setattr(codec, "MAX_FRAME_BYTES", len(data) - 1)
    with pytest.raises(CodecError, match="exceeds"):
        decode(data)
    monkeypatch.setattr(codec, "MAX_FRAME_BYTES", len(data))
    assert decode(data) == Ack(SID, 1)


def test_encode_refuses_a_frame_over_the_size_limit(monkeypatch):
    monkeypatch.setattr(codec, "MAX_FRAME_BYTES", 100)
    with pytest.raises(CodecError, match="exceeds"):
        encode(Batch(SID, 1, [["l", 0, 20, "x" * 200]]))
    assert decode(encode(Batch(SID, 1, [["l", 0, 20, "x"]]))) == Batch(SID, 1, [["l", 0, 20, "x"]])


# --------------------------------------------------------------------------
# encode() refusals
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(None, id="none"),
        pytest.param("hello", id="str"),
        pytest.param([1, "ack", SID, 1, None], id="list"),
        pytest.param(Ack(SID[:15], 1), id="ack-short-sender"),
        pytest.param(Ack("0123456789abcdef", 1), id="ack-str-sender"),
        pytest.param(Ack(SID, -1), id="ack-negative-seq"),
        pytest.param(Ack(SID, 2**63), id="ack-seq-too-big"),
        pytest.param(Ack(SID, True), id="ack-bool-seq"),
        pytest.param(Bye(SID, 1.0), id="bye-float-seq"),
        pytest.param(Hello(SID, "h", 0, 1, 1, "p", acked=-1), id="hello-negative-acked"),
        pytest.param(Hello(SID, "h", 2**64, 1, 1, "p"), id="hello-rank-over-uint64"),
        pytest.param(Hello(SID, "h", 0, 1, 1, "p", version="1\x1b[2J"), id="hello-escape-version"),
        pytest.param(Hello(SID, "h", 0, 1, 1, "p", version="v" * 65), id="hello-long-version"),
        pytest.param(Batch(SID, 0, []), id="batch-seq-0"),
        pytest.param(Batch(SID + b"!", 1, []), id="batch-long-sender"),
        pytest.param(Batch(SID, 1, [["m", 0, 0, {"a": object()}]]), id="batch-unencodable-value"),
        pytest.param(Batch(SID, 1, [["m", 0, 0, {"a": 2**64}]]), id="batch-int-over-uint64"),
        pytest.param(Batch(SID, 1, [["l", 0, 20, "\ud800"]]), id="batch-lone-surrogate"),
        pytest.param(Batch(SID, 1, [None] * (codec.MAX_ARRAY_LEN + 1)), id="batch-too-many"),
    ],
)
def test_encode_refuses_malformed_frames_with_codec_error(frame):
    with pytest.raises(CodecError):
        encode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(Hello(SID, "h", -1, 1, 1, "p"), id="negative-rank"),
        pytest.param(Hello(SID, "h", True, 1, 1, "p"), id="bool-rank"),
        pytest.param(Hello(SID, b"h", 0, 1, 1, "p"), id="bytes-host"),
        pytest.param(Hello(SID, "h", 0, 1, 1, None), id="none-prefix"),
    ],
)
def test_encode_refuses_a_hello_that_decode_would_refuse(frame):
    with pytest.raises(CodecError):
        encode(frame)


def test_encode_batch_with_to_wire_default_sends_numpy_scalars_as_python_scalars():
    metrics = {
        "f32": np.float32(0.5),
        "f64": np.float64(0.25),
        "i64": np.int64(-3),
        "u8": np.uint8(200),
        "flag": np.bool_(True),
        "zero_d": np.array(1.5),
        "vector": np.arange(3),
        "plain": 7,
    }
    record = ["m", list(metrics), [1.0], [5], [list(metrics.values())]]
    data = codec.encode_batch(SID, 1, [record], default=to_wire)
    decoded = decode(data)
    assert isinstance(decoded, Batch)
    [record] = decoded.records
    assert check_record(record) is None
    values = dict(zip(record[1], record[4][0], strict=True))
    _same(
        {k: values[k] for k in ("f32", "f64", "i64", "u8", "flag", "zero_d", "plain")},
        {"f32": 0.5, "f64": 0.25, "i64": -3, "u8": 200, "flag": True, "zero_d": 1.5, "plain": 7},
    )
    assert set(values["vector"]) == {NON_SCALAR}
    assert "(3,)" in values["vector"][NON_SCALAR]


def test_encode_batch_without_a_default_refuses_numpy_scalars():
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode_batch(SID, 1, [["m", ["x"], [1.0], [5], [[np.int64(1)]]]])


def test_encode_batch_runs_the_default_hook_only_for_unknown_values():
    seen = []

    def default(value):
        seen.append(value)
        return "converted"

    data = codec.encode_batch(
        SID, 1, [["m", ["a", "b", "c"], [0], [0], [[1, "s", {1, 2}]]]], default
    )
    assert decode(data).records == [["m", ["a", "b", "c"], [0], [0], [[1, "s", "converted"]]]]
    assert seen == [{1, 2}]


# --------------------------------------------------------------------------
# check_record
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        ["l", 1700000000.5, 20, "hello"],
        ["l", 0, 0, ""],
        ["l", -1.5, -5, "negative ts and level are numbers"],
        ["m", [], [1], [0], [[]]],
        ["r", ["loss", "name", "none"], [1.0, 2], [123, -1], [[0.1, "x", None], [1, 2, 3]]],
        ["m", ["v", NON_SCALAR], [1.0], [1], [[[1, 2], {"nested": True}]]],  # values not judged
    ],
)
def test_check_record_accepts_valid_records(record):
    assert check_record(record) is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (("l", 0, 20, "tuple"), "non-empty array"),
        ({"kind": "l"}, "non-empty array"),
        (None, "non-empty array"),
        ("l", "non-empty array"),
        ([], "non-empty array"),
        (["l", 0, 20], "array of 4"),
        (["l", 0, 20, "x", ""], "level's name is a string of 1 to 64"),
        (["l", 0, 20, "x", 7], "level's name is a string of 1 to 64"),
        (["l", 0, 20, "x", "n" * 65], "level's name is a string of 1 to 64"),
        (["l", 0, 20, "x", "name", "extra"], "array of 4"),
        (["d", 0, 1, 2, "name"], "array of 4"),
        (["d", 0, 1], "array of 4"),
        (["m", [], [True], [0], [[]]], "timestamp"),
        (["m", [], [1, "12:00"], [0, 1], [[], []]], "timestamp"),
        (["l", "12:00", 20, "x"], "timestamp"),
        (["l", None, 20, "x"], "timestamp"),
        (["l", True, 20, "x"], "timestamp"),
        (["l", 0, 20.0, "x"], "log level"),
        (["l", 0, "INFO", "x"], "log level"),
        (["l", 0, True, "x"], "log level"),
        (["l", 0, 20, b"bytes"], "log text"),
        (["l", 0, 20, None], "log text"),
        (["m", ["a"], [0], [1.5], [[1.0]]], "metrics step"),
        (["m", ["a"], [0, 0], [1, "1"], [[1.0], [1.0]]], "metrics step"),
        (["m", [], [0], [False], [[]]], "metrics step"),
        (["m", 0, 1, {"loss": 1.0}], "of arrays"),
        (["m", ["a"], [0], [1], None], "of arrays"),
        (["m", ["a"], [0], [[1, 1.0]]], "of arrays"),
        (["m", ["a"], [], [], []], "at least one row"),
        (["m", ["a"], [0, 1], [1], [[1.0]]], "a timestamp and a step"),
        (["m", ["a"], [0], [1, 2], [[1.0]]], "a timestamp and a step"),
        (["m", ["a"], [0], [1], [[]]], "one value per key"),
        (["m", ["a"], [0], [1], [[1.0, 2.0]]], "one value per key"),
        (["m", ["a"], [0], [1], [(1.0,)]], "one value per key"),
        (["m", [1], [0], [1], [[1.0]]], "metric names are str"),
        (["m", [""], [0], [1], [[1.0]]], "1 to 1024 characters"),
        (["m", ["x" * 1025], [0], [1], [[1.0]]], "1 to 1024 characters"),
        (["m", ["a", "a"], [0], [1], [[1.0, 2.0]]], "repeat"),
        (["m", ["loss", "step"], [0], [1], [[1.0, 2.0]]], "'step' is reserved"),
        (["r", ["rank"], [0], [1], [[1.0]]], "'rank' is reserved"),
        (["m", ["k"] * 4097, [0], [1], [[1] * 4097]], "at most 4096"),
        (["q", 0, 1, {}], "unknown record kind 'q'"),
        (["x", 0, 50, None], "log text"),
        ([b"l", 0, 20, "x"], "unknown record kind"),
        ([None, 0, 20, "x"], "unknown record kind"),
    ],
)
def test_check_record_gives_a_reason_for_each_invalid_record(record, reason):
    result = check_record(record)
    assert isinstance(result, str)
    assert reason in result


@pytest.mark.parametrize(
    "record",
    [
        ["l", math.nan, 20, "x"],
        ["l", 1e300, 20, "x"],
        ["x", 1e18, 50, "y"],
        ["d", -(10**11), 0, 0],
        ["l", math.inf, 20, "x"],
        ["m", [], [-math.inf], [0], [[]]],
        ["m", [], [1, math.nan], [0, 1], [[], []]],
    ],
)
def test_a_record_dated_out_of_range_is_valid_the_collector_redates_it(record):
    # Kept and written with the collector's time (roxxel.lines.within_time), never refused.
    assert check_record(record) is None


@PROPERTY
@given(st.one_of(log_records, metrics_records))
def test_check_record_accepts_every_generated_record(record):
    assert check_record(record) is None


@PROPERTY
@given(msgpack_values)
def test_check_record_never_raises(value):
    result = check_record(value)
    assert result is None or isinstance(result, str)


@PROPERTY
@given(st.lists(st.one_of(log_records, metrics_records, msgpack_values), max_size=6))
def test_all_log_lines_agrees_with_check_record(records):
    expected = all(check_record(r) is None and r[0] == schema.RECORD_LOG for r in records) and bool(
        records
    )
    assert schema.all_log_lines(records) is expected


@pytest.mark.parametrize(
    "records",
    [
        [],
        [[["l"], 0, 20, "unhashable kind"]],
        [["l", 0, 20, "x"], ["m", [], [0], [1], [[]]]],
        [["l", 0, 20, "x"], ["l", "0", 20, "y"]],
        [["l", 0, 20, "x"], ["l", 0, True, "y"]],
        [["l", 0, 20, "x"], ("l", 0, 20, "tuple")],
    ],
)
def test_all_log_lines_is_false_unless_every_record_is_a_valid_line(records):
    assert schema.all_log_lines(records) is False


def test_metrics_records_group_consecutive_rows_with_the_same_kind_and_keys():
    ab, ba = ("a", "b"), ("b", "a")
    entries = [
        ("m", ab, 1.0, 1, (1.0, 2.0)),
        ("m", ab, 2.0, 2, (3.0, 4.0)),
        ("r", ab, 3.0, 3, (5.0, 6.0)),
        ("m", ba, 4.0, 4, (7.0, 8.0)),
        ("m", ab, 5.0, 5, (9.0, 10.0)),
    ]
    assert schema.metrics_records(entries) == [
        ("m", ab, (1.0, 2.0), (1, 2), ((1.0, 2.0), (3.0, 4.0))),
        ("r", ab, (3.0,), (3,), ((5.0, 6.0),)),
        ("m", ba, (4.0,), (4,), ((7.0, 8.0),)),
        ("m", ab, (5.0,), (5,), ((9.0, 10.0),)),
    ]
    decoded = decode(codec.encode_batch(SID, 1, schema.metrics_records(entries)))
    assert [check_record(r) for r in decoded.records] == [None] * 4
    assert schema.metrics_records([]) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"not": "a list"}, id="map"),
        pytest.param([["l", 1.0, 20, b"x" * 2000]], id="bin-over-limit"),
        pytest.param([["m", 1.0, 1, {("k",): 1.0}]], id="unhashable-key"),
    ],
)
def test_a_batch_with_a_bad_body_names_its_sender_and_seq(body):
    with pytest.raises(BatchError) as info:
        decode(_raw(1, "batch", SID, 7, body))
    assert (info.value.sender_id, info.value.seq) == (SID, 7)


def test_decode_envelope_reads_only_the_envelope():
    data = encode(Batch(SID, 9, [["l", 1.0, 20, "x"]]))
    assert decode_envelope(data) == Envelope("batch", SID, 9)
    assert decode_envelope(data[:40]) == Envelope("batch", SID, 9)  # body cut off


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("host", "h" * 256, "at most 255 characters"),
        ("prefix", "p" * 256, "at most 255 characters"),
        ("rank", 2**32, "rank is an integer from 0 to 4294967295"),
        ("process_count", 2**62, "process_count is an integer from 0"),
        ("pid", -1, "pid is an integer from 0"),
    ],
)
def test_a_hello_past_its_bounds_is_refused(field: str, value, problem: str) -> None:
    body = {"host": "h", "rank": 0, "pid": 1, "process_count": 1, "prefix": "run", field: value}
    data = msgpack.packb([codec.PROTO_VERSION, "hello", SID, 0, body], use_bin_type=True)
    with pytest.raises(codec.CodecError, match=problem):
        codec.decode(data)


def test_errors_describe_hostile_values_without_repr() -> None:
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    data = msgpack.packb([codec.PROTO_VERSION, deep, SID, 0, None], use_bin_type=True)
    with pytest.raises(codec.CodecError, match="unknown frame kind a list of 1 item"):
        codec.decode(data)
    assert codec.wire_repr("x" * 1000) == repr("x" * 64) + "..."
    assert schema.check_record([deep, 1.0, 20, "t"]) == "unknown record kind a list of 1 item(s)"
