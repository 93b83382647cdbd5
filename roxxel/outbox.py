"""The client's buffer: records in, encoded batches out, within ``max_buffer_bytes``.

What a :class:`~roxxel.client.Sender` holds until the collector acknowledges
it, without the socket: the two deques the hot path appends to, the
*pending* batches (encoded, not yet numbered) and the *in-flight* ones (sent
under a seq, waiting for their ack).

1. :meth:`Outbox.cut` takes what the deques hold and encodes it (converting
   NumPy/JAX values there, never on the caller's thread) into batch bodies of
   one kind each; a deque that outgrows its cap (a caller faster than
   encoding) loses its oldest records, counted, so memory stays bounded by the
   buffer, not by the records logged;
2. :meth:`Outbox.bound`: while pending and in-flight batches hold more than
   ``max_buffer_bytes``, the oldest pending metrics batch (then the oldest
   pending log batch) is dropped and its records counted; in-flight batches
   are never dropped (numbered: dropping them would leave a gap);
3. :meth:`Outbox.next_batches` picks what may go next, oldest first, after a
   report of the records dropped and not reported yet; the sender numbers
   them, and :meth:`Outbox.sent` holds them in flight until
   :meth:`Outbox.acknowledged`.

Not thread-safe: the sender thread makes every change, holding its
condition around each one that ``Sender.flush`` (which asks :meth:`Outbox.empty`
from another thread) may see; only the hot path's ``deque.append`` runs
unlocked (atomic under the GIL).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import codec, schema
from .unsent import UnsentBatch
from .values import NotReady, ReadWhenReady, split_ready, to_wire

__all__ = ["Batch", "Outbox"]

_RECORD_OBJECT_BYTES = 700


@dataclasses.dataclass(slots=True)
class Batch:
    """Encoded records of one kind (or a drop report), pending or in flight."""

    body: bytes
    metrics: int
    lines: int
    order: int
    frame: bytes = b""  # set once numbered
    frame_seq: int = 0  # the seq ``frame`` was built with


class Outbox:
    """The deques :attr:`lines` and :attr:`metrics`, and the batches cut from them."""

    def __init__(self, max_buffer_bytes: int, max_batch: int, window: int) -> None:
        self.lines: deque[tuple[Any, ...]] = deque()
        self.metrics: deque[tuple[Any, ...]] = deque()
        self.dropped_total = 0
        self.max_bytes = max_buffer_bytes
        # Records waiting in a deque take ~10x their encoded size in Python
        # objects: cap them at about half the buffer's worth.
        self._deque_cap = max(10_000, max_buffer_bytes // _RECORD_OBJECT_BYTES)
        # A batch at most ~1/8 of the buffer (records take 25-60 bytes encoded),
        # so that the bound drops in small steps.
        self._max_batch = max(64, min(max_batch, max_buffer_bytes // 512))
        self._window = window
        self._order = itertools.count()
        self._pending_metrics: deque[Batch] = deque()
        self._pending_lines: deque[Batch] = deque()
        self.in_flight: dict[int, Batch] = {}  # by seq
        self.held_bytes = 0  # pending and in flight
        self._flight_bytes = 0
        self._unreported = [0, 0]  # dropped metrics, lines not yet reported

    def add(self, body: bytes, metrics: int, lines: int, seq: int | None = None) -> Batch:
        """A batch taken over from an earlier client (see ``Sender``'s
        ``resume``): pending, or in flight as ``seq``."""
        batch = Batch(body, metrics, lines, next(self._order))
        if seq is None:
            (self._pending_metrics if metrics else self._pending_lines).append(batch)
        else:
            self.in_flight[seq] = batch
            self._flight_bytes += len(body)
        self.held_bytes += len(body)
        return batch

    def empty(self) -> bool:
        """Nothing to send and nothing unacknowledged."""
        # A drop not yet reported is a record the collector still has to get.
        return not (
            self.lines
            or self.metrics
            or self._pending_metrics
            or self._pending_lines
            or self.in_flight
            or any(self._unreported)
        )

    def unsent(self) -> tuple[list[UnsentBatch], int]:
        """What is not acknowledged -- in-flight batches with their seq, then the
        pending ones, then a report of the drops not reported yet -- and how
        many records were dropped and not reported."""
        batches = [
            UnsentBatch(seq, b.body, b.metrics, b.lines)
            for seq, b in sorted(self.in_flight.items())
        ]
        pending = sorted(
            itertools.chain(self._pending_metrics, self._pending_lines), key=lambda b: b.order
        )
        batches += [UnsentBatch(None, b.body, b.metrics, b.lines) for b in pending]
        dropped = sum(self._unreported)
        if dropped:
            batches.append(UnsentBatch(None, self._drop_report(), 0, 0))
        return batches, dropped

    def _drop_report(self) -> bytes:
        """A batch body reporting the records dropped and not yet reported."""
        return codec.encode_records([(schema.RECORD_DROPPED, time.time(), *self._unreported)])

    def cut(self, stopping: bool) -> None:
        """Encode what the deques hold into pending batches; ``stopping`` (the
        process is ending): wait for arrays the device is still computing."""
        self._cut_kind(self.metrics, self._pending_metrics, True, stopping)
        self._cut_kind(self.lines, self._pending_lines, False, stopping)

    def _cut_kind(
        self, source: deque, pending: deque[Batch], is_metrics: bool, stopping: bool
    ) -> None:
        # A caller faster than encoding would grow the deque without bound:
        # past its cap the oldest records go uncoded (a popleft each), counted.
        excess = len(source) - self._deque_cap
        if excess > 0:
            for _ in range(excess):
                source.popleft()
            self._unreported[0 if is_metrics else 1] += excess
            self.dropped_total += excess
        while source:
            # starmap calls popleft() from C: no Python loop per record.
            take = min(len(source), self._max_batch)
            records = list(itertools.starmap(source.popleft, itertools.repeat((), take)))
            try:
                # Until stopping (the process is ending), an array that the
                # device is still computing is not waited for.
                read = to_wire if stopping or not is_metrics else ReadWhenReady()
                encoded, waiting = _encode(records, is_metrics, read), False
            except NotReady:
                records, later = split_ready(records, read.is_ready)
                source.extendleft(reversed(later))  # for a later cycle; the cap bounds them
                encoded, waiting = _encode(records, True, read), True
            for body, count in encoded:
                if not body:  # a record too large for any frame
                    self._unreported[0 if is_metrics else 1] += count
                    self.dropped_total += count
                    continue
                batch = Batch(
                    body,
                    metrics=count if is_metrics else 0,
                    lines=0 if is_metrics else count,
                    order=next(self._order),
                )
                pending.append(batch)
                self.held_bytes += len(body)
            if waiting:
                return  # the rest waits for the device: a later cycle

    def bound(self) -> bool:
        """Drop the oldest pending batches, metrics first, while over
        ``max_buffer_bytes``; ``False``: still over it, with only in-flight
        batches left (they are never dropped)."""
        while self.held_bytes > self.max_bytes:
            pending = self._pending_metrics or self._pending_lines
            if not pending:
                return False  # only in-flight batches left: they are never dropped
            batch = pending.popleft()
            self.held_bytes -= len(batch.body)
            self._unreported[0] += batch.metrics
            self._unreported[1] += batch.lines
            self.dropped_total += batch.metrics + batch.lines
        return True

    def next_batches(self, size: int) -> tuple[Batch | None, list[Batch]]:
        """The pending batches to send now (oldest first), within the window and
        half the buffer (so pending keeps room to drop from), after ``size``
        bytes already in the message; first, once the collector takes frames
        again, one report of what was dropped (also returned on its own)."""
        new: list[Batch] = []
        report = None
        room = self._window - len(self.in_flight)
        flight_bytes = self._flight_bytes
        if any(self._unreported) and room > 0:
            report = Batch(self._drop_report(), 0, 0, next(self._order))
            new.append(report)
        metrics, lines = self._pending_metrics, self._pending_lines
        m = n = 0
        while len(new) < room and flight_bytes < self.max_bytes // 2:
            if m < len(metrics) and (n >= len(lines) or metrics[m].order < lines[n].order):
                batch, is_metrics = metrics[m], True
            elif n < len(lines):
                batch, is_metrics = lines[n], False
            else:
                break
            if size and size + len(batch.body) > codec.MESSAGE_BYTES:
                break  # the next pass sends it
            m, n = m + is_metrics, n + (not is_metrics)
            new.append(batch)
            flight_bytes += len(batch.body)
            size += len(batch.body)
        return report, new

    def sent(self, report: Batch | None, new: list[Batch], seq: int) -> None:
        """``new`` (from :meth:`next_batches`, with its ``report``) went out
        numbered from ``seq`` on: in flight now."""
        for batch in new:
            if batch is report:
                self._unreported = [0, 0]
                self.held_bytes += len(batch.body)
            else:
                (self._pending_metrics if batch.metrics else self._pending_lines).popleft()
            self.in_flight[seq] = batch
            self._flight_bytes += len(batch.body)
            seq += 1

    def acknowledged(self, seqs: list[int]) -> None:
        """The collector has the in-flight batches ``seqs``: forget them."""
        for seq in seqs:
            batch = self.in_flight.pop(seq)
            self.held_bytes -= len(batch.body)
            self._flight_bytes -= len(batch.body)

    def in_flight_records(self) -> int:
        return sum(b.metrics + b.lines for b in self.in_flight.values())


def _encode(
    records: list, is_metrics: bool, read: Callable[[Any], Any] = to_wire
) -> list[tuple[bytes, int]]:
    """Bodies for ``records`` and how many records each holds, split until
    each fits in a frame (an empty body: a record too large for any, dropped);
    ``read`` turns what msgpack cannot pack itself into what it can."""
    if not records:
        return []
    try:
        wire = schema.metrics_records(records) if is_metrics else records
        return [(codec.encode_records(wire, read), len(records))]
    except codec.CodecError:
        if len(records) > 1:
            half = len(records) // 2
            return _encode(records[:half], is_metrics, read) + _encode(
                records[half:], is_metrics, read
            )
        valid = _with_valid_text(records[0])
        if valid is not records[0]:
            return _encode([valid], is_metrics, read)
        # One record too large for any frame: dropped (counted by the caller).
        return [(b"", 1)]


def _with_valid_text(record: tuple) -> tuple:
    """``record`` with each text UTF-8 cannot encode -- a lone surrogate, as
    ``os.listdir`` gives an undecodable byte of a file name -- written with
    ``\\u`` escapes (``\\udcff``); ``record`` itself when it has none."""
    valid = tuple(map(_valid_text, record))
    changed = any(new is not old for new, old in zip(valid, record, strict=True))
    return valid if changed else record


def _valid_text(part: Any) -> Any:
    if type(part) is tuple:
        return _with_valid_text(part)
    if type(part) is str:
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            return part.encode("utf-8", "backslashreplace").decode("utf-8")
    return part
