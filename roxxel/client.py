"""The background sender: records in, acknowledged batches out.

The training thread only appends a tuple to :attr:`Sender.lines`
(``(kind, ts, level, text)``) or :attr:`Sender.metrics` (``(kind, keys, ts,
step, values)``, names and values as tuples); ``collections.deque``:
``append`` is atomic and lock-free under the GIL. One sender thread, the only user of the socket:

1. *cuts*: every ``flush_interval`` it takes what the deques hold and encodes
   it (converting NumPy/JAX values there, never on the caller's thread) into
   batch bodies of one kind each -- *pending* batches, not yet numbered (the
   deques and the batches, 1. and 2.: :mod:`roxxel.outbox`);
2. *bounds*: while pending and in-flight batches hold more than
   ``max_buffer_bytes``, it drops the oldest pending metrics batch (then the
   oldest pending log batch) and counts the records; a deque that outgrows
   its cap (a caller faster than encoding) loses its oldest records, counted
   too, so memory stays bounded by the buffer, not by the records logged; once the collector takes
   frames again, a ``["d", ts, metrics, lines]`` batch reports them, and the
   collector writes it as one WARNING;
3. *sends*: a pending batch gets its seq when it is first sent (so dropping
   never leaves a gap), at most ``window`` batches are in flight;
4. *retains*: an in-flight batch is kept until the collector acknowledges its
   seq (acks are cumulative). After a reconnect, or when no ack came for
   ``resend_after`` seconds, it says hello again and resends them all; the
   collector keeps only what it had not written yet;
5. *says when nobody answers*: with ``no_answer_warning``, if no collector has
   answered within that many seconds of the first batch waiting to go, it
   says so once (the endpoint, what it does with the records meanwhile), and
   once more when the collector answers: a wrong or dead endpoint is seen at
   the start of a run, not when ``close()`` gives up;
6. *sleeps when idle*: with nothing to send and nothing unacknowledged, a
   sender given an ``on_idle`` hook calls it (the Logger then makes its hot
   path ring the sender's doorbell for the next record, and says so), takes one more pass
   at the tick, then waits for a ring or a reply instead of waking every
   ``flush_interval``;
7. *says where*: the collector's answer to the hello names the host and
   paths of the run's files (:attr:`Sender.where`); with ``announce`` (rank
   0 of a run whose collector is a daemon) it prints them once on stderr.

Errors of the sender thread never surface inside a ``log_*`` call; they are
re-raised by :meth:`Sender.flush` and :meth:`Sender.close`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import codec
from .diagnostics import diagnostics
from .exchange import exchange
from .lines import printable
from .outbox import Outbox
from .transport import Transport
from .unsent import Unsent
from .wakepipe import WakePipe

__all__ = ["Sender"]


# How long an idle sender with an ``on_idle`` hook waits between looks when
# nothing rings for it (nothing should need it: a bound, not a tick).
IDLE_WAIT = 1.0


class Sender:
    """Batches records from :attr:`lines` and :attr:`metrics` and delivers them."""

    def __init__(
        self,
        transport: Transport,
        hello: codec.Hello,
        *,
        flush_interval: float = 0.01,
        resend_after: float = 5.0,
        max_buffer_bytes: int = 256 * 1024 * 1024,
        max_batch: int = codec.MAX_BATCH_RECORDS,
        window: int = 1024,
        resume: Unsent | None = None,
        log: logging.Logger | None = None,
        no_answer_warning: float | None = None,
        undelivered_file: str | None = None,
        announce: bool = False,
        on_idle: Callable[[Sender], bool] | None = None,
    ) -> None:
        self._diag = log or diagnostics("roxxel.client")
        # Where the collector writes this run's files, once it has said (its
        # answer to the hello); ``announce``: say so on stderr, once.
        self.where: codec.Where | None = None
        self._announce = announce
        # What is not acknowledged yet: the records (the hot path appends to
        # lines and metrics) and the batches cut from them.
        self._outbox = Outbox(max_buffer_bytes, max_batch, window)
        self.lines: deque[tuple[Any, ...]] = self._outbox.lines
        self.metrics: deque[tuple[Any, ...]] = self._outbox.metrics
        self._transport = transport
        self._hello = hello
        self._sender_id = hello.sender_id
        self._flush_interval = flush_interval
        self._resend_after = resend_after
        self._next_seq = 1
        self._sent_upto = 0
        self._acked = 0
        self._connects_seen = 0
        self._need_hello = True
        self._told_refusal = False
        # Why the collector refused this client (None: it did not): only the
        # hello goes then, every resend_after, until an ack.
        self.refusal: str | None = None
        self._last_progress = time.monotonic()
        self._changed = threading.Condition()
        self._stopping = False
        self._error: BaseException | None = None
        # The first answer watched for (None: not watched): when records
        # began to wait for it, whether the silence was said, the records
        # acknowledged since (for the "answers now" line).
        self._no_answer_warning = no_answer_warning
        self._undelivered_file = undelivered_file
        self._answered = no_answer_warning is None
        self._waiting_since: float | None = None
        self._warned_at: float | None = None
        self._delivered_since_warning = 0
        # Idle, the thread sleeps until rung instead of waking every
        # flush_interval, once ``on_idle`` (called on it) says that the next
        # record rings for it. Without the hook: the tick, always.
        self._on_idle = on_idle
        self._doorbell = WakePipe()  # never closed here: see WakePipe
        if resume is not None:
            self._resume(resume)
        self._thread = threading.Thread(target=self._run, name="roxxel-sender", daemon=True)
        self._thread.start()

    def _resume(self, unsent: Unsent) -> None:
        """Take over what an earlier client with this sender id left undelivered."""
        self._acked = self._sent_upto = unsent.hello.acked
        self._next_seq = self._acked + 1
        for seq, body, metrics, lines in unsent.batches:
            if seq is None:
                self._outbox.add(body, metrics, lines)
            elif seq >= self._next_seq:
                self._next_seq = seq + 1
                batch = self._outbox.add(body, metrics, lines, seq)
                batch.frame = codec.batch_frame(self._sender_id, seq, body)
                batch.frame_seq = seq
            # else: acknowledged already

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint

    @property
    def dropped_total(self) -> int:
        """Records dropped by the buffer bound, its deques' caps, or as too large for a frame."""
        return self._outbox.dropped_total

    def _idle(self) -> bool:
        return self._outbox.empty()

    def _sleepy(self) -> bool:
        """Nothing to send, nothing to wait for: only a new record needs the thread."""
        return self._idle() and not self._need_hello and self.refusal is None

    def ring(self) -> None:
        """Wake the thread now (it may be sleeping until a record comes: see ``on_idle``)."""
        self._doorbell.wake()

    def flush(self, timeout: float) -> bool:
        """Wait until every record appended so far is acknowledged.

        Returns ``False`` if ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._idle():
                self._raise_error()
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._changed.wait(min(left, 0.05))
        self._raise_error()
        return True

    def close(self, timeout: float, *, bye: bool = True) -> Unsent:
        """Flush (bounded by ``timeout``), stop the thread, close the socket.

        With everything delivered and ``bye``, the collector is told it may
        forget this sender. Returns what the collector did not acknowledge.
        """
        try:
            self.flush(timeout)
        except RuntimeError:
            pass  # kept in self.failure; what is unsent is still returned
        finally:
            with self._changed:
                self._stopping = True
            self.ring()
            self._thread.join()
        # Checked after the join: nothing can be cut or sent after this bye.
        if bye and self._idle():
            self._say_bye()
        self._transport.close()
        return self._unsent()

    def _say_bye(self, timeout: float = 0.5) -> None:
        """Tell the collector to forget us; wait (briefly) until it has heard it.

        Without the wait a process that ends right after close() (a SIGTERM
        handler re-raising the signal) may take the bye with it, and a
        collector draining its senders would wait for it in vain.
        """
        last = self._next_seq - 1
        # Given up at once when the transport does not take it (no connection:
        # nobody to hear it, and a close does not wait for one). Sent again
        # every 0.2 s (a repeated bye is only acknowledged again), so a
        # connection that drops and comes back within the wait still carries one.
        exchange(
            self._transport,
            codec.encode(codec.Bye(self._sender_id, last)),
            lambda reply: isinstance(reply, codec.Ack) and reply.seq >= last,
            timeout,
            resend_every=0.2,
            connect_within=0.0,
        )

    @property
    def failure(self) -> BaseException | None:
        """What stopped the sender thread, if anything did."""
        return self._error

    def _unsent(self) -> Unsent:
        """What the collector did not acknowledge, for the undelivered file:
        the batches never sent numbered now, after those sent. So every copy
        of the file replays each batch under the same seq, and the collector
        writes each once: a copy edited or cut short leaves a gap it waits
        at, instead of other records renumbered under a batch's seq."""
        self._cut()  # the deques' leftovers, as batches
        batches, dropped = self._outbox.unsent()
        seqs = itertools.count(self._next_seq)
        numbered = [b if b.seq is not None else b._replace(seq=next(seqs)) for b in batches]
        return Unsent(self._hello_now(), numbered, dropped)

    def _hello_now(self) -> codec.Hello:
        return dataclasses.replace(self._hello, acked=self._acked)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError("roxxel sender thread failed") from self._error

    # -- the sender thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            next_cut = time.monotonic()
            idle_passes, rings = 0, False  # rings: the next record rings (on_idle said)
            while not self._stopping:
                # One cut per flush_interval, however often acks wake us:
                # fewer, fuller batches, and fewer GIL hand-overs with the caller.
                if time.monotonic() >= next_cut:
                    self._cut()
                    self._bound()
                    next_cut = time.monotonic() + self._flush_interval
                self._send()
                wait = max(0.0, next_cut - time.monotonic())
                if not self._sleepy():
                    idle_passes, rings = 0, False
                elif self._on_idle is not None:
                    idle_passes += 1
                    if rings:
                        # One pass at the tick since the hook: a call that was
                        # appending as it ran has landed by now.
                        wait = IDLE_WAIT
                    elif idle_passes >= 2:
                        rings = self._on_idle(self)
                if self._answered:
                    for frame in self._transport.receive(wait, self._doorbell):
                        self._on_reply(frame)
                else:
                    self._receive_watching(wait)
                self._resend_if_needed()
        except BaseException as exc:  # surfaced by flush()/close()
            self._error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def _cut(self) -> None:
        # Held from popleft to append, so flush() never sees a record in neither place.
        with self._changed:
            self._outbox.cut(self._stopping)

    def _bound(self) -> None:
        with self._changed:
            if self._outbox.bound():
                self._changed.notify_all()

    def _send(self) -> None:
        """Send what may go now -- the hello, resends in seq order, then new
        batches within the window -- as one ZeroMQ message of several frames.

        One send, not one per batch: each gives the GIL up, and getting it
        back from a caller that logs without pause can take a switch interval
        (5 ms). If ZeroMQ cannot take the message, nothing changes.
        """
        frames: list[bytes] = []
        if self.refusal is not None:
            # Refused: the records stay pending (never numbered, so still droppable).
            hello = [codec.encode(self._hello_now())] if self._need_hello else []
            if hello and self._transport.send_many(hello):
                self._need_hello = False
            return
        if self._need_hello:
            frames.append(codec.encode(self._hello_now()))
        # At most codec.MESSAGE_BYTES a message, or one frame (a collector drops
        # a larger one unread): a long resend goes over several passes, new
        # batches after it.
        size, upto = 0, self._sent_upto
        for seq in range(self._sent_upto + 1, self._next_seq):
            batch = self._outbox.in_flight.get(seq)
            if batch is not None:
                if size and size + len(batch.frame) > codec.MESSAGE_BYTES:
                    break
                frames.append(batch.frame)
                size += len(batch.frame)
            upto = seq
        report, new = (None, []) if upto < self._next_seq - 1 else self._outbox.next_batches(size)
        seq = self._next_seq
        for batch in new:
            if batch.frame_seq != seq:  # built already if the last attempt failed
                batch.frame = codec.batch_frame(self._sender_id, seq, batch.body)
                batch.frame_seq = seq
            frames.append(batch.frame)
            seq += 1
        if not frames:
            return
        if not self._transport.send_many(frames):
            return  # not connected, or ZeroMQ's queue is full: all of it again later
        self._need_hello = False
        self._sent_upto = upto
        with self._changed:
            self._outbox.sent(report, new, self._next_seq)
            self._next_seq += len(new)
        if new:
            self._sent_upto = self._next_seq - 1

    def _on_reply(self, data: bytes) -> None:
        try:
            frame = codec.decode(data)
        except codec.CodecError as exc:
            self._diag.warning("roxxel: ignoring a malformed reply from the collector: %s", exc)
            return
        if frame.sender_id != self._sender_id:
            return
        if isinstance(frame, codec.Refusal):
            self._refused(frame)
            return
        if not isinstance(frame, codec.Ack):
            return
        self.refusal = None  # taken (again)
        if self._hello.starts:  # said: a later hello is this run's, not its start
            self._hello = dataclasses.replace(self._hello, starts=False)
        if frame.where is not None and frame.where != self.where:
            self._located(frame.where)
        # Every in-flight seq up to the ack, including any numbered after an
        # ack that ran ahead of us (a replay the collector had seen).
        done = [seq for seq in self._outbox.in_flight if seq <= frame.seq]
        if done or frame.seq > self._acked:
            with self._changed:
                self._outbox.acknowledged(done)
                self._acked = max(self._acked, frame.seq)
                self._changed.notify_all()
        self._last_progress = time.monotonic()

    def _located(self, where: codec.Where) -> None:
        said = self.where is not None
        self.where = where
        if self._announce and not said:
            base = where.system_log.removesuffix("_system.log")
            kinds = ["log"] + [
                kind
                for kind, path in (("csv", where.metrics_csv), ("jsonl", where.metrics_jsonl))
                if path is not None
            ]
            self._diag.info(
                "roxxel: logging to %s → %s_*.{%s} on %s",
                self.endpoint,
                printable(base),  # the collector's text, on this terminal
                ",".join(kinds),
                printable(where.host),
            )

    def _refused(self, refusal: codec.Refusal) -> None:
        """Said once; the records stay here (and end in the undelivered file at close)."""
        reason = refusal.body.get("reason")
        self.refusal = reason if isinstance(reason, str) and reason else "no reason given"
        if not self._told_refusal:
            self._told_refusal = True
            self._diag.warning(
                "roxxel: the collector at %s refused this client: %s; its records stay in "
                "this process",
                self.endpoint,
                printable(self.refusal),
            )
        self._last_progress = time.monotonic()  # asked again after resend_after, not at once

    def _receive_watching(self, wait: float) -> None:
        """Receive and handle replies while no collector has answered yet (only
        then: the watch costs a look at the buffers each pass)."""
        progress = self._last_progress
        held = self._outbox.in_flight_records() if self._warned_at is not None else 0
        for frame in self._transport.receive(wait, self._doorbell):
            self._on_reply(frame)
        if self._told_refusal:  # an answer, already said: nothing more to say
            self._answered = True
            return
        now = time.monotonic()
        # _on_reply stamps _last_progress on every ack of ours (and on a
        # refusal, handled above), and only it runs between the two looks.
        answered = self._last_progress != progress
        if self._warned_at is None:
            if answered:
                self._answered = True
            elif self._waiting_since is None:
                # Counted from when the first records wait and the endpoint is
                # known (a discovering rank says so itself while it looks).
                if not self._idle() and "://" in self.endpoint:
                    self._waiting_since = now
            elif now - self._waiting_since >= self._no_answer_warning:
                self._warn_no_answer(now)
            return
        self._delivered_since_warning += held - self._outbox.in_flight_records()
        # The hello's ack comes before the batches' acks: said once records
        # are delivered (or when there is nothing left to deliver).
        if answered and (self._delivered_since_warning or not self._outbox.in_flight):
            self._answered = True
            self._diag.warning(
                "roxxel: the collector at %s answers now (after %.1f s); %d record(s) delivered",
                self.endpoint,
                now - self._waiting_since,
                self._delivered_since_warning,
            )

    def _warn_no_answer(self, now: float) -> None:
        self._warned_at = now
        after_close = (
            f"writes what is unacknowledged at close() to {self._undelivered_file}"
            if self._undelivered_file
            else "returns what is unacknowledged at close()"
        )
        self._diag.warning(
            "roxxel: no collector at %s has answered for %.1f s; this process keeps its "
            "records and sends them when one answers (up to max_buffer_bytes=%s; past it "
            "the oldest unsent metrics, then lines, are dropped and counted), and %s",
            self.endpoint,
            now - self._waiting_since,
            _size(self._outbox.max_bytes),
            after_close,
        )

    def _resend_if_needed(self) -> None:
        reconnected = self._transport.connects > max(self._connects_seen, 1)
        self._connects_seen = self._transport.connects
        if self.refusal is not None:
            if reconnected or time.monotonic() - self._last_progress >= self._resend_after:
                self._need_hello = True  # asked again: the run may be served by now
                self._sent_upto = self._acked
                self._last_progress = time.monotonic()
            return
        if not self._outbox.in_flight:
            self._last_progress = time.monotonic()
            if not reconnected:
                return
        elif not reconnected and time.monotonic() - self._last_progress < self._resend_after:
            return
        # The collector may have restarted or lost us: introduce ourselves
        # again and resend from the first unacknowledged batch.
        self._need_hello = True
        self._sent_upto = self._acked
        self._last_progress = time.monotonic()


def _size(n: int) -> str:
    """``n`` bytes for a person: 256 MiB, 100,000 bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,} bytes"
