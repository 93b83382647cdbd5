"""The fuzzer's oracle: what the collector knows after each frame it was sent.

:class:`Mirror` feeds every part to the collector's own sans-IO ledger
(:mod:`aggregator.ledger`) -- the rules under test, not a copy of them -- to
know which senders said hello (they get a ``bye`` at the end), the seq each
expects next, and how many frames the collector must count as bad.
"""

from __future__ import annotations

from collections import Counter

from aggregator.batch import sort_batch
from aggregator.ledger import (
    Apply,
    Asked,
    Closed,
    Foreign,
    Introduced,
    Ledger,
    Malformed,
    Poisoned,
    Resent,
    TooMany,
)
from roxxel import codec

__all__ = ["CodecBug", "Mirror"]


class CodecBug(Exception):
    """roxxel.codec raised something else than CodecError (decode, check_record)."""


class Mirror:
    """What the collector knows after the parts seen so far, decided by the
    collector's own :class:`aggregator.ledger.Ledger` (the rules under test,
    not a copy of them): which sender ids said hello (and not bye), the seq
    each has applied, how many frames were bad."""

    def __init__(self, run: str | None = None) -> None:
        self.run = run  # a collector of this run only refuses hellos naming another
        self.ledger = Ledger(clock=lambda: 0.0)  # a fuzz run never forgets a sender
        self.said_hello: list[bytes] = []  # every sender id that was new in a hello
        self.refused: set[bytes] = set()  # senders whose hello named another run
        self.counts: Counter[str] = Counter()

    def knows(self, sid: bytes) -> bool:
        return sid in self.ledger.senders

    def applied(self, sid: bytes, default: int | None = None) -> int:
        """The seq a known sender has applied (``default`` for an unknown one)."""
        state = self.ledger.senders.get(sid)
        if state is None:
            if default is None:
                raise KeyError(sid.hex())
            return default
        return state.committed

    def see(self, part: bytes, new_senders: bool = True) -> str:
        """Follow the collector's handling of one frame; the outcome's name.

        A hello of a new sender when ``new_senders`` is false changes nothing:
        ``"new-sender"``. An exception other than ``CodecError`` from the
        codec propagates as :class:`CodecBug`.
        """
        try:
            outcome = self._see(part, new_senders)
        except Exception as exc:  # noqa: BLE001 -- the decoder promises CodecError only
            self.counts["codec-bug"] += 1
            raise CodecBug(f"{type(exc).__name__}: {exc}"[:300]) from exc
        self.counts[outcome] += 1
        return outcome

    def _see(self, part: bytes, new_senders: bool) -> str:
        hello = self._new_hello(part)
        if hello is not None and not new_senders:
            return "new-sender"
        if hello is not None and self.run is not None and hello.prefix != self.run:
            self.refused.add(hello.sender_id)
            return "refused-run"  # answered with a refusal, nothing kept
        event = self.ledger.receive(part)
        if isinstance(event, Introduced):
            if event.new:
                self.said_hello.append(event.hello.sender_id)
            return "hello"
        if isinstance(event, Apply):
            sort_batch(event.batch.records)  # the collector checks each record
            return "batch"
        if isinstance(event, Resent):
            return "duplicate" if event.duplicate else "gap"
        if isinstance(event, Malformed) and self.refused and _sender_of(part) in self.refused:
            return "refused-frame"  # a refused client's frame: not counted as bad
        return _OUTCOMES[type(event)]

    def _new_hello(self, part: bytes) -> codec.Hello | None:
        """The hello of a sender the collector does not know yet, if ``part`` is one."""
        try:
            if codec.decode_envelope(part).kind != "hello":
                return None
            frame = codec.decode(part)
        except codec.CodecError:
            return None
        if isinstance(frame, codec.Hello) and frame.sender_id not in self.ledger.senders:
            return frame
        return None


_OUTCOMES = {
    Malformed: "bad",
    Poisoned: "poison",
    Closed: "bye",
    Asked: "query",
    TooMany: "refused",
    Foreign: "foreign",
}


def _sender_of(part: bytes) -> bytes | None:
    try:
        return codec.decode_envelope(part).sender_id
    except codec.CodecError:
        return None
