"""The background sender: records in, acknowledged batches out.

The training thread only appends a tuple to :attr:`Sender.records` (a
``collections.deque``, whose ``append`` is atomic and lock-free under the
GIL). One sender thread, the only user of the socket, takes records off the
deque in order, cuts them into numbered batches, encodes them (converting
NumPy/JAX values there, not on the caller's thread) and sends them without
blocking. Every batch is kept until the collector acknowledges its seq;
acks are cumulative. Unacknowledged batches are sent again, after a fresh
``hello``, when no ack has arrived for ``resend_after`` seconds.

Errors of the sender thread never surface inside a ``log_*`` call; they are
re-raised by :meth:`Sender.flush` and :meth:`Sender.close`.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import deque
from typing import Any, Protocol

from . import codec
from .values import to_wire

__all__ = ["Transport", "Sender"]


class Transport(Protocol):
    endpoint: str

    def send(self, frame: bytes) -> bool: ...

    def receive(self, timeout: float) -> list[bytes]: ...

    def close(self) -> None: ...


class Sender:
    """Batches records from :attr:`records` and delivers them through ``transport``."""

    def __init__(
        self,
        transport: Transport,
        hello: codec.Hello,
        *,
        flush_interval: float = 0.005,
        resend_after: float = 5.0,
        max_batch: int = codec.MAX_BATCH_RECORDS,
    ) -> None:
        self.records: deque[tuple[Any, ...]] = deque()
        self._transport = transport
        self._hello = hello
        self._sender_id = hello.sender_id
        self._flush_interval = flush_interval
        self._resend_after = resend_after
        self._max_batch = max_batch
        self._unacked: dict[int, tuple[bytes, int]] = {}  # seq -> (frame, records)
        self._next_seq = 1
        self._sent_upto = 0
        self._acked = 0
        self._last_progress = time.monotonic()
        self._changed = threading.Condition()
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="roxxel-sender", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint

    def pending(self) -> int:
        """Records not yet acknowledged by the collector."""
        with self._changed:
            return len(self.records) + sum(n for _, n in self._unacked.values())

    def flush(self, timeout: float) -> bool:
        """Wait until every record appended so far is acknowledged.

        Returns ``False`` if ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.records or self._unacked:
                self._raise_error()
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._changed.wait(min(left, 0.05))
        self._raise_error()
        return True

    def close(self, timeout: float) -> int:
        """Flush (bounded by ``timeout``), stop the thread, close the socket.

        Returns the number of records the collector did not acknowledge.
        """
        try:
            self.flush(timeout)
        finally:
            with self._changed:
                self._stopping = True
            self._thread.join()
            self._transport.close()
        self._raise_error()
        return len(self.records) + sum(n for _, n in self._unacked.values())

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("roxxel sender thread failed") from error

    def _run(self) -> None:
        try:
            self._transport.send(codec.encode(self._hello))
            while not self._stopping:
                self._cut_batches()
                self._send_pending()
                for frame in self._transport.receive(self._flush_interval):
                    self._on_reply(frame)
                self._resend_if_stalled()
        except BaseException as exc:  # surfaced by flush()/close()
            self._error = exc
            with self._changed:
                self._changed.notify_all()

    def _cut_batches(self) -> None:
        records = self.records
        while records:
            # Held from popleft to insert, so flush() never sees a batch in neither place.
            with self._changed:
                n = min(len(records), self._max_batch)
                batch = [records.popleft() for _ in range(n)]
                frame = codec.encode_batch(self._sender_id, self._next_seq, batch, to_wire)
                self._unacked[self._next_seq] = (frame, n)
            self._next_seq += 1

    def _send_pending(self) -> None:
        while self._sent_upto + 1 < self._next_seq:
            entry = self._unacked.get(self._sent_upto + 1)
            if entry is not None and not self._transport.send(entry[0]):
                return
            self._sent_upto += 1

    def _on_reply(self, data: bytes) -> None:
        try:
            frame = codec.decode(data)
        except codec.CodecError as exc:
            print(f"roxxel: ignoring a malformed reply from the collector: {exc}", file=sys.stderr)
            return
        if not isinstance(frame, codec.Ack) or frame.sender_id != self._sender_id:
            return
        if frame.seq > self._acked:
            with self._changed:
                for seq in range(self._acked + 1, frame.seq + 1):
                    self._unacked.pop(seq, None)
                self._acked = frame.seq
                self._changed.notify_all()
        self._last_progress = time.monotonic()

    def _resend_if_stalled(self) -> None:
        if not self._unacked:
            self._last_progress = time.monotonic()
            return
        if time.monotonic() - self._last_progress < self._resend_after:
            return
        # The collector may have restarted or lost us: introduce ourselves
        # again and resend from the first unacknowledged batch.
        hello = dataclasses.replace(self._hello, acked=self._acked)
        if self._transport.send(codec.encode(hello)):
            self._sent_upto = self._acked
        self._last_progress = time.monotonic()
