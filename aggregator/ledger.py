"""The exactly-once rules of a collector, sans-IO: a frame's bytes in, a decision out.

A :class:`Ledger` knows every sender of a run: the seq it has applied
(``committed``) and the seq that is on disk (``durable``). :meth:`Ledger.receive`
reads one frame and returns what the collector must do with it:

* :class:`Apply` -- the next batch of a known sender: write its records
  (the ledger counts it applied already; a failed write is undone by
  :meth:`Ledger.roll_back`, as everything since the last commit is);
* :class:`Resent` -- a duplicate (already applied) or a gap (a batch is
  missing before it): write nothing, acknowledge what is durable, and the
  client resends from there;
* :class:`Poisoned` -- the next batch, whose body can never be decoded:
  quarantine it and count it applied, so the client does not resend it forever;
* :class:`Introduced` -- a ``hello``: the sender is known (a new one, a
  known one, or one forgotten and remembered), acknowledge it;
* :class:`TooMany` -- a ``hello`` of a new sender past ``max_senders``: refused;
* :class:`Closed` -- a ``bye``: the sender is forgotten (nothing of it can
  follow), acknowledge the bye;
* :class:`Foreign` -- a frame naming a sender that said hello with another
  CURVE key: refused before its body is decoded;
* :class:`Asked` -- a tool's query;
* :class:`Malformed` -- anything else: count and report it.

:meth:`Ledger.commit` makes what is applied durable (call it once the files
and the checkpoint are on disk: only durable seqs are acknowledged), and
:meth:`Ledger.roll_back` returns every sender to its durable seq (the files
were rewound). Nothing here touches a socket or a file, and time comes from
an injected ``clock``: tests drive it with case tables, and the fuzzer uses
it as its oracle. Not thread-safe: one collector thread owns a ledger.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roxxel import codec

from .sinks.base import Origin

__all__ = [
    "Ledger",
    "SenderState",
    "Event",
    "Apply",
    "Resent",
    "Poisoned",
    "Introduced",
    "TooMany",
    "Closed",
    "Foreign",
    "Asked",
    "Malformed",
    "MAX_SENDERS",
    "MAX_SENDERS_PER_SOURCE",
    "MAX_SENDERS_PER_CONNECTION",
    "NEVER_BATCHED_SECONDS",
    "CROWDED",
    "IDLE_SENDER_SECONDS",
    "IDLE_SENDERS_KEPT",
    "FORGOTTEN_KEPT",
]

# Senders known at once (said hello; a bye forgets one). A pod of thousands of
# ranks, each with a Logger or two and a watcher, stays far below it.
MAX_SENDERS = 65_536
# Senders introduced on one connection (a client has one sender on its own
# connection) and from one network address (a host: its ranks, their
# watchers, a replay or two): a peer that floods hellos with made-up ids fills
# these, not the run's table, and other connections and hosts still get in.
MAX_SENDERS_PER_CONNECTION = 64
MAX_SENDERS_PER_SOURCE = 4096
# Senders that crashed without a word (no watcher) are never heard again; a
# ledger forgets those silent this long once it knows more than this many.
# Their committed seqs are kept (the last FORGOTTEN_KEPT, not in the
# checkpoint), so a client that comes back after a long partition is not
# written twice.
IDLE_SENDER_SECONDS = 3600.0
IDLE_SENDERS_KEPT = 1024
FORGOTTEN_KEPT = 65_536
# A sender that never had a batch applied has nothing to protect: once more
# than CROWDED senders are known (hellos with made-up ids from several
# addresses), it is forgotten (not remembered) after this long silent, so
# they leave the table within minutes. Below that, an honest rank that has
# had nothing to say for a while keeps its place (its first batch is not
# taken for a stranger's).
NEVER_BATCHED_SECONDS = 60.0
CROWDED = 16_384
# How often silent senders are looked for, at most.
_FORGET_EVERY = 60.0


@dataclass
class SenderState:
    origin: Origin
    prefix: str
    committed: int  # highest seq applied
    durable: int  # highest seq in the last checkpoint
    key: str | None = None  # with CURVE: the public key that said hello
    warned_keys: set[tuple[str, str]] = field(default_factory=set)  # (metric, kind of value)
    # Not in the checkpoint: this collector's view of the sender.
    seen: float = 0.0  # the ledger's clock at its last frame
    # The network address and connection whose bounds it counts in.
    counted: tuple[str, bytes] | None = None
    # A batch of it was applied here, or it came from a checkpoint: what a
    # hello claims (acked) alone does not count.
    batched: bool = False
    records: int = 0  # written
    bytes: int = 0  # of the batches applied

    def saved(self) -> dict[str, Any]:
        """For the checkpoint being written: what is applied now."""
        o = self.origin
        return {
            "committed": self.committed,
            "rank": o.rank,
            "host": o.host,
            "pid": o.pid,
            "prefix": self.prefix,
            "key": self.key,
        }

    @classmethod
    def restored(cls, saved: dict[str, Any], seen: float) -> SenderState:
        origin = Origin(rank=int(saved["rank"]), host=str(saved["host"]), pid=int(saved["pid"]))
        committed = int(saved["committed"])
        key = saved.get("key")
        return cls(
            origin,
            str(saved["prefix"]),
            committed,
            committed,
            None if key is None else str(key),
            seen=seen,
            batched=True,
        )


@dataclass(frozen=True, slots=True)
class Apply:
    batch: codec.Batch
    state: SenderState


@dataclass(frozen=True, slots=True)
class Resent:
    sender_id: bytes
    duplicate: bool  # False: a gap


@dataclass(frozen=True, slots=True)
class Poisoned:
    error: codec.BatchError
    state: SenderState


@dataclass(frozen=True, slots=True)
class Introduced:
    hello: codec.Hello
    state: SenderState
    new: bool
    # A hello of a known sender claiming acks past what is committed: not
    # believed (the claim; 0: none). No client does that; a peer that learnt
    # the sender's id would, to have its next batches taken for duplicates.
    overclaimed: int = 0
    # A ledger that follows a stream: the seqs a unit's hello says are in the
    # stream before it but never reached this ledger (first, last), skipped.
    missing: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class TooMany:
    hello: codec.Hello
    # Whose bound was reached: "run" (the run's table), "connection" or "address".
    bound: str = "run"
    source: str = ""


@dataclass(frozen=True, slots=True)
class Closed:
    bye: codec.Bye
    known: bool  # False: a bye repeated, or of a sender this ledger never knew


@dataclass(frozen=True, slots=True)
class Foreign:
    state: SenderState
    key: str | None  # the key the frame came with


@dataclass(frozen=True, slots=True)
class Asked:
    query: codec.Query


@dataclass(frozen=True, slots=True)
class Malformed:
    problem: str


Event = Apply | Resent | Poisoned | Introduced | TooMany | Closed | Foreign | Asked | Malformed


class Ledger:
    """Every sender's applied and durable seq, and the decisions they imply."""

    def __init__(
        self,
        *,
        max_senders: int = MAX_SENDERS,
        max_per_source: int = MAX_SENDERS_PER_SOURCE,
        max_per_connection: int = MAX_SENDERS_PER_CONNECTION,
        idle_seconds: float = IDLE_SENDER_SECONDS,
        idle_kept: int = IDLE_SENDERS_KEPT,
        crowded: int = CROWDED,
        forgotten_kept: int = FORGOTTEN_KEPT,
        clock: Callable[[], float] = time.monotonic,
        follows_stream: bool = False,
        reads_bodies: bool = True,
    ) -> None:
        self.max_senders = max_senders
        self.max_per_source = max_per_source
        self.max_per_connection = max_per_connection
        self._per_source: Counter[str] = Counter()
        self._per_connection: Counter[bytes] = Counter()
        self.idle_seconds = idle_seconds
        self.idle_kept = idle_kept
        self.crowded = crowded
        self.forgotten_kept = forgotten_kept
        self._clock = clock
        # Fed by a writer from a stream (aggregator.writer): a hello there is a
        # relay's, whose ``acked`` says what of the sender the stream held before
        # it; batches the ledger never got by then were lost, not delayed.
        self.follows_stream = follows_stream
        # A relay passes a next batch on unread (its records: an empty list):
        # the writer reads it, and quarantines one that cannot be applied.
        self.reads_bodies = reads_bodies
        self.senders: dict[bytes, SenderState] = {}
        self.open: set[bytes] = set()  # said hello, not bye (nor died)
        self.ranks_seen: set[int] = set()
        self.process_count = 0
        self._forgotten: dict[bytes, int] = {}  # sender id -> committed seq, oldest first
        # Senders whose checkpoint entry changed since the last commit.
        self._changed: set[bytes] = set()
        self._next_forget = clock() + _FORGET_EVERY

    def now(self) -> float:
        """The ledger's clock (what a sender's ``seen`` is measured on)."""
        return self._clock()

    # -- frames ----------------------------------------------------------------

    def receive(
        self, data: bytes, key: str | None = None, source: str = "", connection: bytes = b""
    ) -> Event:
        """Decide what to do with one frame that came on ``connection``, of CURVE
        ``key``, from the network address ``source``.

        A batch that is not the next one of its sender is decided from its
        envelope alone: its body (up to 64 MiB) is never decoded.
        """
        try:
            envelope = codec.decode_envelope(data)
        except codec.CodecError as exc:
            return Malformed(str(exc))
        state = self.senders.get(envelope.sender_id)
        if state is not None:
            if state.key != key:
                return Foreign(state, key)
            state.seen = self._clock()
        if envelope.kind == "batch":
            if state is None:
                return Malformed("batch from a sender that has not said hello")
            if envelope.seq != state.committed + 1:
                return Resent(envelope.sender_id, duplicate=envelope.seq <= state.committed)
            if not self.reads_bodies:
                state.committed, state.batched = envelope.seq, True
                self._changed.add(envelope.sender_id)
                return Apply(codec.Batch(envelope.sender_id, envelope.seq, []), state)
        try:
            frame = codec.decode(data)
        except codec.BatchError as exc:
            assert state is not None  # only the body of a next batch gets this far
            state.committed, state.batched = exc.seq, True
            self._changed.add(envelope.sender_id)
            return Poisoned(exc, state)
        except codec.CodecError as exc:
            return Malformed(str(exc))
        if isinstance(frame, codec.Batch):
            assert state is not None
            state.committed, state.batched = frame.seq, True
            self._changed.add(frame.sender_id)
            return Apply(frame, state)
        if isinstance(frame, codec.Hello):
            return self._hello(frame, key, (source, connection))
        if isinstance(frame, codec.Bye):
            # Everything of this sender is acknowledged: no resend or replay can follow.
            return Closed(frame, self._drop(frame.sender_id) is not None)
        if isinstance(frame, codec.Query):
            return Asked(frame)
        return Malformed(f"unexpected {type(frame).__name__} frame")

    def _hello(
        self, hello: codec.Hello, key: str | None, where: tuple[str, bytes]
    ) -> Introduced | TooMany:
        state = self.senders.get(hello.sender_id)
        if state is None and len(self.senders) >= self.max_senders:
            # Each sender costs memory and a checkpoint entry.
            return TooMany(hello)
        if state is None or state.counted is None:
            if self._per_connection[where[1]] >= self.max_per_connection:
                return TooMany(hello, "connection", where[0])
            if self._per_source[where[0]] >= self.max_per_source:
                return TooMany(hello, "address", where[0])
        self.open.add(hello.sender_id)
        if len(self.ranks_seen) < MAX_SENDERS:  # hellos may name any rank
            self.ranks_seen.add(hello.rank)
        self.process_count = max(self.process_count, hello.process_count)
        new = state is None
        if state is None:
            origin = Origin(rank=hello.rank, host=hello.host, pid=hello.pid)
            # A forgotten sender that comes back: what it had sent is written
            # (what this ledger remembers, not what the hello claims). An
            # unknown one saw acks of a collector that kept no checkpoint of
            # them: it never resends below its claim.
            remembered = hello.sender_id in self._forgotten
            committed = self._forgotten.pop(hello.sender_id, hello.acked)
            state = SenderState(origin, hello.prefix, committed, committed, key, seen=self._clock())
            state.batched = remembered  # its batches were written: kept as any other's
            self.senders[hello.sender_id] = state
            if remembered:
                self._changed.add(hello.sender_id)  # back in the checkpoint
        if state.counted is None:  # new, or restored from a checkpoint: counted from here
            state.counted = where
            self._per_source[where[0]] += 1
            self._per_connection[where[1]] += 1
        if self.follows_stream and hello.acked > state.committed:
            missing = (state.committed + 1, hello.acked)
            state.committed, state.batched = hello.acked, True
            self._changed.add(hello.sender_id)
            return Introduced(hello, state, new=new, missing=missing)
        # A known sender's committed seq moves only with its batches.
        return Introduced(hello, state, new=new, overclaimed=_past(hello.acked, state.committed))

    def _drop(self, sender_id: bytes) -> SenderState | None:
        """Forget a sender (said bye, or silent); its state, if it was known."""
        self.open.discard(sender_id)
        state = self.senders.pop(sender_id, None)
        if state is not None and state.batched:
            self._changed.add(sender_id)
        if state is not None and state.counted is not None:
            source, connection = state.counted
            for counter, name in ((self._per_source, source), (self._per_connection, connection)):
                counter[name] -= 1
                if not counter[name]:
                    del counter[name]
        return state

    # -- commit and roll back ----------------------------------------------------

    def commit(self) -> None:
        """What is applied is on disk now: it may be acknowledged."""
        for state in self.senders.values():
            state.durable = state.committed
        self._changed.clear()

    def roll_back(self) -> None:
        """The files were rewound to the last commit: so is every sender."""
        for state in self.senders.values():
            state.committed = state.durable

    def acknowledged(self, sender_id: bytes) -> int | None:
        """The seq to acknowledge to ``sender_id`` (``None``: not known here)."""
        state = self.senders.get(sender_id)
        return None if state is None else state.durable

    def saved(self) -> dict[str, dict[str, Any]]:
        """The senders as a checkpoint stores them (what is applied now): those with
        a batch applied; one without has nothing a restart could write twice, and
        a flood of hellos must not grow every commit's checkpoint."""
        return {
            sender_id.hex(): state.saved()
            for sender_id, state in self.senders.items()
            if state.batched
        }

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """The entries of :meth:`saved` changed since the last commit (``None``: gone)."""
        out: dict[str, dict[str, Any] | None] = {}
        for sender_id in self._changed:
            state = self.senders.get(sender_id)
            out[sender_id.hex()] = state.saved() if state is not None and state.batched else None
        return out

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Take the senders of a checkpoint (:meth:`saved`), all durable."""
        now = self._clock()
        for hex_id, state in saved.items():
            self.senders[bytes.fromhex(hex_id)] = SenderState.restored(state, now)

    # -- the end of senders ------------------------------------------------------

    def ended(self, origin: Origin) -> None:
        """The process ``origin`` died: its senders will never say bye."""
        for sender_id, state in self.senders.items():
            if state.origin == origin:
                self.open.discard(sender_id)

    def done(self) -> bool:
        """Every rank of the run has said hello, and every sender that did has said bye."""
        count, seen = self.process_count, self.ranks_seen
        # Counted first: a hello may claim any process count.
        return not self.open and len(seen) >= count and all(r in seen for r in range(count))

    def forget_idle(self) -> list[bytes]:
        """Forget senders silent for ``idle_seconds`` once more than ``idle_kept``
        are known (and, once more than ``crowded`` are, those that never had a
        batch applied after NEVER_BATCHED_SECONDS); looked for at most once a
        minute; the ids forgotten."""
        now = self._clock()
        if now < self._next_forget:
            return []
        self._next_forget = now + min(_FORGET_EVERY, self.idle_seconds)
        if len(self.senders) <= self.idle_kept:
            return []
        crowded = len(self.senders) > max(self.idle_kept, self.crowded)
        never = min(self.idle_seconds, NEVER_BATCHED_SECONDS) if crowded else self.idle_seconds
        idle = [
            i
            for i, st in self.senders.items()
            if now - st.seen >= (self.idle_seconds if st.batched else never)
        ]
        for sender_id in idle:
            state = self._drop(sender_id)
            if state is not None and state.batched:
                # Remembered (bounded) so a sender that comes back is not written twice.
                self._forgotten[sender_id] = state.committed
        while len(self._forgotten) > self.forgotten_kept:
            del self._forgotten[next(iter(self._forgotten))]
        return idle


def _past(claimed: int, committed: int) -> int:
    return claimed if claimed > committed else 0
