"""A deterministic generator of hostile ZeroMQ messages for a roxxel collector.

:class:`FrameFuzzer` yields messages (lists of parts; a DEALER sends each as
one multipart message, the collector handles every part as a frame): random
bytes, bit flips and truncations of valid frames, envelopes with wrong
fields, msgpack headers that declare gigabytes, deep nesting, ext types and
invalid UTF-8, and valid ``hello`` frames (fresh 16-byte sender ids of its
own, a bounded number) followed by batches whose records are partly invalid.

Everything comes from one ``random.Random(seed)``, and nothing depends on
what the collector answers: the same seed gives the same messages, so a
failure is reproduced by seed and message index::

    python -m tests.frame_fuzzer --seed 20251125 --index 41733

prints the parts of message 41733 as hex.

A :class:`Mirror` (:mod:`tests.fuzz_mirror`) feeds every part to the collector's ledger
(:mod:`aggregator.ledger`), to know which senders said hello (they get a
``bye`` at the end), the seq each expects next, and how many frames the
collector must count as bad. A part on which a codec call raises anything
but ``CodecError`` (``decode_envelope``, ``decode``, or ``check_record``,
which the collector runs on each record of a batch) is recorded in
:attr:`FrameFuzzer.codec_bugs`, and still sent.

Sizes stay modest: at most ``max_new_senders`` new sender ids (each is state
the collector keeps), host names of at most 64 KiB, batches of at most 5,000
records, a few frames of 1 MiB.
"""

from __future__ import annotations

import argparse
import math
import random
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack

from aggregator.ledger import MAX_SENDERS_PER_CONNECTION
from aggregator.router import MAX_MESSAGE_PARTS
from roxxel import codec, schema

from .fuzz_mirror import CodecBug, Mirror

__all__ = ["FrameFuzzer", "Mirror", "pack"]

SID_LEN = codec.SENDER_ID_LEN
# Within what one connection may introduce: the mirror does not know which
# socket a message goes on, so no socket may meet that bound.
MAX_NEW_SENDERS = MAX_SENDERS_PER_CONNECTION - 4
# Metric names of the fuzzer's valid rows: never the good client's ("good_*").
FUZZ_KEYS = [f"fz_{i}" for i in range(16)] + [
    "fz,comma",
    'fz"quote',
    "fz\nnewline",
    "=fz+1",
    "fz ü ✓",
    "fz\x00\x1b[2J",
]
# msgpack headers that declare a length: (header byte, size bytes, ext type byte)
LENGTH_HEADERS = [
    (0xDB, 4, False),  # str32
    (0xC6, 4, False),  # bin32
    (0xDD, 4, False),  # array32
    (0xDF, 4, False),  # map32
    (0xC9, 4, True),  # ext32
    (0xDA, 2, False),  # str16
    (0xC5, 2, False),  # bin16
    (0xDC, 2, False),  # array16
    (0xDE, 2, False),  # map16
    (0xD9, 1, False),  # str8
    (0xC4, 1, False),  # bin8
    (0xC7, 1, True),  # ext8
]
# One more metric name than a row may have (a fixed record: built once).
TOO_MANY_KEYS = [
    "m",
    [f"fzk{i}" for i in range(schema.MAX_METRIC_KEYS + 1)],
    [1.0],
    [1],
    [[0] * (schema.MAX_METRIC_KEYS + 1)],
]
SPECIAL_BYTES = [0xC1, 0xC7, 0xD4, 0xD6, 0xD8, 0xDD, 0xDF, 0xDB, 0xC6, 0xCF, 0xD3, 0xCB, 0xFF]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _map_key(value: Any) -> Any:
    """A dict key msgpack can pack from Python: lists and dicts are not hashable."""
    try:
        hash(value)
    except TypeError:
        return repr(value)[:20]
    return value


class FrameFuzzer:
    """Hostile messages from ``random.Random(seed)``; see the module docstring."""

    def __init__(
        self, seed: int, max_new_senders: int = MAX_NEW_SENDERS, run: str | None = None
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.run = run  # the run the collector serves: most hellos name it
        self.mirror = Mirror(run)
        self.max_new_senders = max_new_senders
        self.messages = 0
        self.parts = 0
        # (message index, part, error): codec calls that raised something else than CodecError
        self.codec_bugs: list[tuple[int, bytes, str]] = []
        self.pool: list[bytes] = []  # valid frames to flip, cut and splice
        self.kinds: Counter[str] = Counter()
        self._generators: list[tuple[Callable[[], list[bytes]], int]] = [
            (self._random_bytes, 14),
            (self._bit_flips, 14),
            (self._truncated, 7),
            (self._wrong_fields, 12),
            (self._huge_lengths, 8),
            (self._deep_nesting, 6),
            (self._multipart, 7),
            (self._sender_batch, 14),
            (self._stranger_batch, 4),
            (self._stale_batch, 3),
            (self._encoding_tricks, 4),
            (self._byes_and_acks, 2),
            (self._concatenated, 3),
            (self._fresh_hello, 2),
        ]
        if hasattr(codec, "Query"):  # a collector that answers tools' queries
            self._generators.append((self._queries, 1))
        self._gens = [g for g, _ in self._generators]
        self._weights = [w for _, w in self._generators]
        # Seed the pool with frames of ids nobody said hello with.
        for _ in range(8):
            sid = self._new_id()
            self.pool.append(codec.encode(codec.Bye(sid, self.rng.randrange(5))))
            self.pool.append(
                codec.encode(codec.Batch(sid, 1 + self.rng.randrange(3), self._records(3)))
            )
            self.pool.append(self._hello(sid))

    # -- the driver ---------------------------------------------------------------

    def next_message(self) -> list[bytes]:
        """The next message; the mirror follows it as the collector will."""
        gen = self.rng.choices(self._gens, self._weights)[0]
        self.kinds[gen.__name__.strip("_")] += 1
        parts = gen()
        return self.finish(parts)

    def finish(self, parts: list[bytes]) -> list[bytes]:
        """Pass ``parts`` through the mirror; a hello of one sender too many is spoilt.
        A message of too many parts is dropped unread: one bad frame."""
        if len(parts) > MAX_MESSAGE_PARTS:
            self.mirror.counts["bad"] += 1
            self.messages += 1
            self.parts += len(parts)
            return parts
        out = []
        for part in parts:
            try:
                room = len(self.mirror.said_hello) < self.max_new_senders
                outcome = self.mirror.see(part, new_senders=room)
                if outcome == "new-sender":  # over the budget: made a bad frame
                    part = b"\xc1" + part
                    self.mirror.see(part)
            except CodecBug as exc:
                self.codec_bugs.append((self.messages, part, str(exc)))
            out.append(part)
        self.messages += 1
        self.parts += len(out)
        return out

    def goodbyes(self) -> list[list[bytes]]:
        """A bye for every sender of ours that is still known."""
        return [
            [codec.encode(codec.Bye(sid, self.mirror.applied(sid)))]
            for sid in dict.fromkeys(self.mirror.said_hello)
            if self.mirror.knows(sid)
        ]

    # -- values -----------------------------------------------------------------------

    def _new_id(self) -> bytes:
        return self.rng.randbytes(SID_LEN)

    def _text(self, limit: int = 40) -> str:
        rng = self.rng
        alphabet = (
            "abcxyz019 ,;\"'%[]{}=+-@\t\n\r\x00\x1b\x7f\u00e9\u00fc\u2713\u200b\ufeff\U0001f600"
        )
        n = rng.randrange(limit)
        return "".join(rng.choice(alphabet) for _ in range(n))

    def _int(self) -> int:
        rng = self.rng
        return rng.choice(
            [
                0,
                1,
                -1,
                rng.randrange(-1000, 1000),
                2**31,
                2**32,
                2**63 - 1,
                2**63,
                2**64 - 1,
                -(2**63),
                rng.randrange(2**64),
            ]
        )

    def _float(self) -> float:
        rng = self.rng
        return rng.choice(
            [
                0.0,
                -0.0,
                math.nan,
                math.inf,
                -math.inf,
                1e300,
                -1e-310,
                5e-324,
                rng.uniform(-1e6, 1e6),
            ]
        )

    def _scalar(self) -> Any:
        rng = self.rng
        r = rng.randrange(9)
        if r == 0:
            return None
        if r == 1:
            return rng.random() < 0.5
        if r == 2:
            return self._int()
        if r == 3:
            return self._float()
        if r == 4:
            return self._text()
        if r == 5:
            return rng.randbytes(rng.choice([0, 1, 15, 16, 17, 40]))
        if r == 6:
            return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(4)))
        if r == 7:
            return msgpack.Timestamp(rng.randrange(2**32), rng.randrange(10**9))
        return rng.uniform(-100, 100)

    def _value(self, depth: int = 2) -> Any:
        rng = self.rng
        if depth <= 0 or rng.random() < 0.6:
            return self._scalar()
        if rng.random() < 0.6:
            return [self._value(depth - 1) for _ in range(rng.randrange(5))]
        return {_map_key(self._value(0)): self._value(depth - 1) for _ in range(rng.randrange(4))}

    def _ts(self) -> float | int:
        rng = self.rng
        return rng.choice(
            [
                1.7e9 + rng.random() * 1e6,
                0,
                0.0,
                -9.99e10,
                9.99e10,
                rng.randrange(-(10**10), 10**10),
                # Out of range: written with the collector's time, marked.
                math.nan,
                math.inf,
                1e300,
            ]
        )

    # -- records --------------------------------------------------------------------

    def _valid_record(self) -> list:
        rng = self.rng
        r = rng.randrange(10)
        if r < 4:
            return ["l", self._ts(), rng.choice([10, 20, 30, 40, 50, 0, 5, 99, -3]), self._text()]
        if r < 8:
            keys = rng.sample(FUZZ_KEYS, rng.randrange(1, 5))
            rows = rng.randrange(1, 5)
            scalars = [None, True, 1, -7, 2**64 - 1, 0.5, math.nan, math.inf, "x,y", "=1+1", ""]
            values = [
                [rng.choice(scalars) if rng.random() < 0.3 else rng.uniform(-9, 9) for _ in keys]
                for _ in range(rows)
            ]
            steps = [rng.randrange(-5, 10**6) for _ in range(rows)]
            ts = [self._ts() for _ in range(rows)]
            return [rng.choice("mmr"), keys, ts, steps, values]
        if r < 9:
            return ["d", self._ts(), rng.randrange(100), rng.randrange(100)]
        return ["x", self._ts(), 50, f"fuzz death notice {self._text(10)}"]

    def _invalid_record(self) -> Any:
        rng = self.rng
        t, k = self._ts(), ["fz_0"]
        choices = [
            [],
            ["l"],
            ["l", t, 20],
            ["l", "ts", 20, "x"],
            ["l", None, 20, "x"],
            ["l", t, 20.0, "x"],
            ["l", t, True, "x"],
            ["l", t, 20, b"bytes"],
            ["l", t, 20, None],
            ["x", t, "CRITICAL", "x"],
            ["d", t, -1, 0],
            ["d", t, 1.5, 0],
            ["q", t, 20, "x"],
            "a string",
            42,
            None,
            {"l": 1},
            ["m"],
            ["m", "keys", [], [], []],
            ["m", [], [], [], []],
            ["m", k, [t], [1], []],
            ["m", k, [t, t], [1], [[1.0]]],
            ["m", ["a", "a"], [t], [1], [[1, 2]]],
            ["m", ["fz_1", "step"], [t], [1], [[1, 2]]],
            ["r", ["rank"], [t], [1], [[1]]],
            ["m", [""], [t], [1], [[1]]],
            ["m", ["k" * 1025], [t], [1], [[1]]],
            ["m", [1], [t], [1], [[1]]],
            ["m", [b"k"], [t], [1], [[1]]],
            ["m", [["nested", ["key"]]], [t], [1], [[1]]],
            ["m", k, ["ts"], [1], [[1]]],
            ["m", k, [t], [1.5], [[1]]],
            ["m", k, [t], [True], [[1]]],
            ["m", k, [t], [1], [[1, 2]]],
            ["m", k, [t], [1], [1]],
            ["r", k, [t], [1], [[[1, 2]]]],  # a non-scalar value: valid record
            ["m", k, [t], [1], [[{"__roxxel_non_scalar__": "array(3,)"}]]],
        ]
        if rng.random() < 0.002:
            return TOO_MANY_KEYS
        if rng.random() < 0.2:
            return self._value(3)
        return rng.choice(choices)

    def _records(self, n: int, bad: float = 0.0) -> list:
        return [
            self._invalid_record() if self.rng.random() < bad else self._valid_record()
            for _ in range(n)
        ]

    # -- frames ---------------------------------------------------------------------

    def _hello(self, sid: bytes, acked: int = 0) -> bytes:
        """A hello, its fields sometimes out of range (packed by hand: codec.encode
        refuses those, the collector must too)."""
        rng = self.rng
        host = self._text() if rng.random() < 0.95 else "h" * rng.choice([1000, 65536])
        body = {
            "host": host,
            "rank": rng.choice([0, 1, 3, 2**32, 2**63 - 1, 2**64 - 1]),
            "pid": rng.choice([1, 4242, 2**64 - 1]),
            "process_count": rng.choice([0, 1, 2, 64, 2**31, 2**64 - 1]),
            "prefix": self._prefix(),
        }
        return msgpack.packb([codec.PROTO_VERSION, "hello", sid, acked, body], use_bin_type=True)

    def _prefix(self) -> str:
        text = self._text(12)
        # Mostly the collector's run (whose senders' batches go deep), sometimes another.
        return self.run if self.run is not None and self.rng.random() < 0.9 else text

    def _our_senders(self) -> list[bytes]:
        return [sid for sid in self.mirror.said_hello if self.mirror.knows(sid)]

    def _remember(self, frame: bytes) -> bytes:
        if len(self.pool) < 512:
            self.pool.append(frame)
        else:
            self.pool[self.rng.randrange(len(self.pool))] = frame
        return frame

    def _fresh_hello(self) -> list[bytes]:
        if len(self.mirror.said_hello) >= self.max_new_senders:
            return self._sender_batch()
        sid = self._new_id()
        acked = 0 if self.rng.random() < 0.9 else self.rng.randrange(2**63 - 100, 2**63)
        return [self._remember(self._hello(sid, acked))]

    def _sender_batch(self) -> list[bytes]:
        """A batch of a sender of ours, with the seq it expects: its records
        partly invalid, or a body that can never be applied."""
        rng = self.rng
        senders = self._our_senders()
        if not senders:
            return self._fresh_hello() if self.mirror.said_hello == [] else self._stranger_batch()
        sid = rng.choice(senders)
        seq = self.mirror.applied(sid) + 1
        if seq >= 2**63:  # its hello claimed the last seq: only a re-hello for it
            return [(self._hello(sid, rng.randrange(2**63)))]
        r = rng.random()
        if r < 0.7:
            n = rng.choice([1, 2, 3, 5, 10, 30]) if rng.random() < 0.998 else 5_000
            body = codec.encode_records(self._records(n, bad=rng.choice([0.0, 0.3, 0.7, 1.0])))
        elif r < 0.8:
            body = pack(self._value(2))  # not an array of records (or, rarely, one)
        elif r < 0.9:
            good = codec.encode_records(self._records(3))
            body = good[: rng.randrange(len(good))]  # truncated
        else:
            body = codec.encode_records(self._records(2)) + rng.randbytes(rng.randrange(1, 9))
        frame = codec.batch_frame(sid, seq, body)
        return [self._remember(frame) if len(frame) < 4096 else frame]

    def _stranger_batch(self) -> list[bytes]:
        sid = self._new_id()
        seq = 1 + self.rng.randrange(3)
        return [codec.encode(codec.Batch(sid, seq, self._records(3, bad=0.3)))]

    def _stale_batch(self) -> list[bytes]:
        """A duplicate or a gap of a sender of ours."""
        senders = self._our_senders()
        if not senders:
            return self._stranger_batch()
        sid = self.rng.choice(senders)
        committed = self.mirror.applied(sid)
        seq = self.rng.choice([committed, committed + 2, committed + 1000, 2**63 - 1])
        seq = min(max(seq, 1), 2**63 - 1)
        return [codec.encode(codec.Batch(sid, seq, self._records(2)))]

    def _byes_and_acks(self) -> list[bytes]:
        rng = self.rng
        sid = self._new_id()
        seq = rng.randrange(100)
        if rng.random() < 0.5:
            return [codec.encode(codec.Ack(sid, seq))]
        return [codec.encode(codec.Bye(sid, seq))]

    def _queries(self) -> list[bytes]:
        """A tool's query (status, tail, or anything) and its answer, both hostile."""
        rng = self.rng
        what = rng.choice(["status", "tail", "status", "nothing", None, 1, self._value(2)])
        body: Any = {"what": what}
        if what == "tail":
            body["offset"] = rng.choice([None, 0, -1, 2**63, 1.5, "0", rng.randrange(10**6)])
        if rng.random() < 0.1:
            body = self._value(2)
        kind = "query" if rng.random() < 0.9 else "answer"
        frame = [codec.PROTO_VERSION, kind, self._new_id(), rng.randrange(2**63), body]
        if rng.random() < 0.05:  # what: nested deeper than a repr goes
            nested = self._nest(rng.randrange(950, 1030))
            return [b"\x95" + pack(frame[:4])[1:] + b"\x81\xa4what" + nested]
        return [pack(frame)]

    def _random_bytes(self) -> list[bytes]:
        rng = self.rng
        n = rng.choice([0, 1, 2, 5, 16, 37, 64, 200, 1000])
        if rng.random() < 0.005:
            n = rng.choice([4096, 65536, 1 << 20])
        data = rng.randbytes(n)
        if rng.random() < 0.3:
            data = b"\x95" + data  # an array of 5, as a frame starts
        return [data]

    def _mutate(self, data: bytes) -> bytes:
        rng = self.rng
        if not data:
            return rng.randbytes(4)
        out = bytearray(data)
        for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
            pos = rng.randrange(len(out))
            r = rng.random()
            if r < 0.6:
                out[pos] ^= 1 << rng.randrange(8)
            elif r < 0.8:
                out[pos] = rng.choice(SPECIAL_BYTES)
            elif r < 0.9:
                del out[pos : pos + rng.randrange(1, 4)]
                if not out:
                    break
            else:
                out[pos:pos] = rng.randbytes(rng.randrange(1, 4))
        return bytes(out)

    def _bit_flips(self) -> list[bytes]:
        return [self._mutate(self.rng.choice(self.pool))]

    def _truncated(self) -> list[bytes]:
        data = self.rng.choice(self.pool)
        return [data[: self.rng.randrange(len(data))]]

    def _concatenated(self) -> list[bytes]:
        rng = self.rng
        a, b = rng.choice(self.pool), rng.choice(self.pool)
        if rng.random() < 0.5:
            return [a + b]
        cut = rng.randrange(len(a))
        return [a[:cut] + b[rng.randrange(len(b)) :]]

    def _envelope_items(self) -> list:
        rng = self.rng
        senders = self._our_senders()
        sid = rng.choice(senders) if senders and rng.random() < 0.5 else self._new_id()
        kind = rng.choice(["hello", "batch", "bye", "ack"])
        seq = rng.randrange(1, 5)
        body: Any = None
        if kind == "hello":
            body = {
                "host": "h",
                "rank": 0,
                "pid": 1,
                "process_count": 1,
                "prefix": "p",
            }
        elif kind == "batch":
            body = self._records(2)
        return [codec.PROTO_VERSION, kind, sid, seq, body]

    def _wrong_fields(self) -> list[bytes]:
        """A frame-shaped array with one to three items (or hello fields) wrong."""
        rng = self.rng
        items = self._envelope_items()
        wrong = {
            0: [0, 2, True, 1.0, "1", None, -1, 2**64 - 1],
            1: ["nack", "Hello", b"hello", "", 1, None, "batch\x00", "h" * 300],
            2: [
                b"",
                b"x" * 15,
                b"x" * 17,
                "s" * 16,
                16,
                None,
                [0] * 16,
                bytearray(b"y" * 16),
            ],
            3: [-1, 0, 2**63, 2**64 - 1, 1.0, "1", None, True, [1]],
        }
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            if r < 0.6:
                i = rng.randrange(4)
                items[i] = rng.choice(wrong[i]) if rng.random() < 0.8 else self._value(2)
            elif r < 0.8 and isinstance(items[4], dict):
                body = items[4]
                field = rng.choice(["host", "rank", "pid", "process_count", "prefix", "extra"])
                if rng.random() < 0.3:
                    body.pop(field, None)
                else:
                    body[field] = rng.choice([-1, 2**64 - 1, 1.5, None, "0", b"h", [1], True])
            else:
                items[4] = self._value(3)
        if rng.random() < 0.15:  # too few or too many items
            del items[rng.randrange(len(items)) :]
            items += [self._value(1) for _ in range(rng.randrange(3))]
        if rng.random() < 0.05:
            return [pack(dict(enumerate(map(_map_key, items))))]
        return [pack(items)]

    def _huge_header(self) -> bytes:
        rng = self.rng
        header, size, ext = rng.choice(LENGTH_HEADERS)
        top = (1 << (8 * size)) - 1
        length = rng.choice([top, top // 2 + 1, top // 2, top - 1, rng.randrange(top + 1)])
        fmt = {1: ">B", 2: ">H", 4: ">I"}[size]
        out = bytes([header]) + struct.pack(fmt, length)
        if ext:
            out += bytes([rng.randrange(256)])
        return out + rng.randbytes(rng.randrange(33))

    def _huge_lengths(self) -> list[bytes]:
        """Headers that declare up to 4 GiB, at the top, in the envelope, in the body."""
        rng = self.rng
        huge = self._huge_header()
        senders = self._our_senders()
        sid = rng.choice(senders) if senders else self._new_id()
        seq = self.mirror.applied(sid, 0) + 1
        head = b"\x95" + pack(codec.PROTO_VERSION)
        where = rng.randrange(7)
        if where == 0:
            return [huge]
        if where == 1:
            return [b"\x95" + huge]
        if where == 2:
            return [head + huge]
        if where == 3:
            return [head + pack("batch") + huge]
        if where == 4:
            return [head + pack("hello") + pack(sid) + pack(0) + b"\x85\xa4host" + huge]
        if where == 5 and seq < 2**63:
            return [codec.batch_frame(sid, seq, huge)]
        if seq < 2**63:
            # a batch whose first record is ["l", ts, 20, <huge>]
            return [codec.batch_frame(sid, seq, b"\x91\x94\xa1l" + pack(1.0) + b"\x14" + huge)]
        return [huge]

    def _nest(self, depth: int) -> bytes:
        rng = self.rng
        wrapper = rng.choice([b"\x91", b"\x81\x00", b"\xdc\x00\x01", b"mix"])
        if wrapper == b"mix":
            return b"".join(rng.choice([b"\x91", b"\x81\xa1k"]) for _ in range(depth)) + b"\xc0"
        return wrapper * depth + b"\xc0"

    def _deep_nesting(self) -> list[bytes]:
        """A value nested up to past msgpack's 1024 levels, in every place of a frame."""
        rng = self.rng
        depth = rng.randrange(900, 1100) if rng.random() < 0.6 else rng.randrange(1, 900)
        nested = self._nest(depth)
        senders = self._our_senders()
        sid = rng.choice(senders) if senders else self._new_id()
        seq = self.mirror.applied(sid, 0) + 1
        if seq >= 2**63:
            seq = 1
        v, sid_b, seq_b = pack(1), pack(sid), pack(seq)
        where = rng.randrange(9)
        if where == 0:
            return [b"\x95" + nested + pack("hello") + sid_b + seq_b + b"\xc0"]
        if where == 1:
            return [b"\x95" + v + nested + sid_b + seq_b + b"\xc0"]
        if where == 2:
            return [b"\x95" + v + pack("bye") + nested + seq_b + b"\xc0"]
        if where == 3:
            return [b"\x95" + v + pack("bye") + sid_b + nested + b"\xc0"]
        if where == 4:
            return [b"\x95" + v + pack("hello") + sid_b + pack(0) + b"\x81\xa4host" + nested]
        if where == 5:
            return [codec.batch_frame(sid, seq, nested)]
        # Inside one record of a sender of ours, with the seq it expects.
        ts = pack(1.0)
        record = [
            b"\x94\xa1l" + nested + b"\x14\xa1x",  # ["l", <nested>, 20, "x"]
            b"\x94\xa1l" + ts + b"\x14" + nested,  # ["l", 1.0, 20, <nested>]
            b"\x95\xa1m\x91" + nested + b"\x91" + ts + b"\x91\x01\x91\x91\x01",  # a nested key
            b"\x95\xa1m\x91\xa4fz_0\x91" + ts + b"\x91\x01\x91\x91" + nested,  # a nested value
            nested,  # the record itself
        ][rng.randrange(5)]
        return [codec.batch_frame(sid, seq, b"\x91" + record)]

    def _encoding_tricks(self) -> list[bytes]:
        """Ext types, invalid UTF-8, never-used bytes, where strings and ints belong."""
        rng = self.rng
        sid = self._new_id()
        tricks = [
            b"\xa3\xff\xfe\xfd",  # str of invalid UTF-8
            b"\xa2\xed\xa0",  # a lone surrogate in UTF-8 (invalid)
            b"\xd4\x01\x00",  # fixext1
            b"\xc7\x00\x05",  # ext8 of length 0
            b"\xd6\xff\x00\x00\x00\x00",  # timestamp32
            b"\xc1",  # never used
            b"\xcf" + b"\xff" * 8,  # uint64 max
            b"\xd3" + b"\x80" + b"\x00" * 7,  # int64 min
            b"\xcb" + struct.pack(">d", math.nan),
        ]
        trick = rng.choice(tricks)
        v, seq_b = pack(1), pack(1)
        forms = [
            b"\x95" + trick + pack("bye") + pack(sid) + seq_b + b"\xc0",
            b"\x95" + v + trick + pack(sid) + seq_b + b"\xc0",
            b"\x95" + v + pack("bye") + trick + seq_b + b"\xc0",
            b"\x95" + v + pack("bye") + pack(sid) + trick + b"\xc0",
            b"\x95" + v + pack("hello") + pack(sid) + pack(0) + b"\x85\xa4host" + trick,
        ]
        senders = self._our_senders()
        if senders:
            our = rng.choice(senders)
            seq = self.mirror.applied(our) + 1
            if seq < 2**63:
                forms.append(
                    codec.batch_frame(our, seq, b"\x91\x94\xa1l" + pack(1.0) + b"\x14" + trick)
                )
        return [rng.choice(forms)]

    def _multipart(self) -> list[bytes]:
        """1..N parts from the other generators (a DEALER cannot send 0 parts:
        an empty part stands for it)."""
        rng = self.rng
        if rng.random() < 0.01:  # many small parts, some messages past the bound
            count = rng.choice([100, 1000, MAX_MESSAGE_PARTS + 1, 3000])
            return [rng.randbytes(rng.randrange(8)) for _ in range(count)]
        parts: list[bytes] = []
        singles = [g for g in self._gens if g != self._multipart]
        weights = [w for g, w in self._generators if g != self._multipart]
        for _ in range(rng.choice([1, 2, 2, 3, 5, 10])):
            if rng.random() < 0.1:
                parts.append(b"")
            else:
                parts += rng.choices(singles, weights)[0]()
        return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--index", type=int, required=True, help="message index to print")
    parser.add_argument("--count", type=int, default=1, help="messages from --index on")
    args = parser.parse_args()
    fuzzer = FrameFuzzer(args.seed)
    for i in range(args.index + args.count):
        parts = fuzzer.next_message()
        if i >= args.index:
            print(f"message {i}: {len(parts)} part(s)")
            for part in parts:
                print(f"  {len(part)} bytes: {part.hex()}")


if __name__ == "__main__":
    main()
