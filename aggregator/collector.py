"""The collector: a ROUTER socket in, the sinks out, acks back.

Threading: a :class:`Collector` is driven by one thread (``run`` or repeated
``serve_once``); ``stop`` may be called from any thread or a signal handler.

Ordering and delivery: a sender's batch is applied only if its seq is the
next one expected from that sender; a duplicate is only re-acknowledged, a
gap writes nothing and re-acknowledges the last applied seq (the client then
resends). Each cycle drains what is waiting on the socket, writes it, flushes
every sink and only then sends one cumulative ack per sender touched.

Malformed input (bad msgpack, wrong shapes, batches from a sender that never
said hello, invalid records, non-scalar metric values) is counted in
:attr:`Collector.stats` and reported once per sender in the system log; it
never stops the loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import zmq

from roxxel import codec
from roxxel.values import NON_SCALAR

from .sinks import FanOut, MetricsCsvSink, MetricsJsonlSink, Origin, Sink, SystemLogSink

__all__ = ["Collector", "SenderState", "default_sinks"]

# A cycle takes at most this many messages before it commits and acks, so
# acks keep flowing under a flood.
_MAX_MESSAGES_PER_CYCLE = 256
# Peers remembered for "report once"; past it reports are no longer de-duplicated.
_MAX_REPORTED = 10_000
_SCALARS = (int, float, bool, str, type(None))

COLLECTOR_ORIGIN = Origin(rank=0, host="", pid=os.getpid())


@dataclass
class SenderState:
    origin: Origin
    prefix: str
    committed: int
    warned_keys: set[str] = field(default_factory=set)


def default_sinks(log_dir: str, prefix: str, echo: TextIO | None) -> FanOut:
    """The run's three files in ``log_dir`` (created if missing)."""
    os.makedirs(log_dir, exist_ok=True)
    base = os.path.join(log_dir, prefix)
    return FanOut(
        [
            SystemLogSink(f"{base}_system.log", echo),
            MetricsCsvSink(f"{base}_metrics.csv"),
            MetricsJsonlSink(f"{base}_metrics.jsonl"),
        ]
    )


class Collector:
    """Receive batches on ``bind``, write them through ``sinks``."""

    def __init__(self, bind: str, sinks: Sink, *, context: zmq.Context | None = None):
        self.sinks = sinks
        self.senders: dict[bytes, SenderState] = {}
        self.stats: Counter[str] = Counter()
        self._reported: set[tuple[bytes, str]] = set()
        self._stop = threading.Event()
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._socket.setsockopt(zmq.MAXMSGSIZE, codec.MAX_FRAME_BYTES)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            raise OSError(f"roxxel-aggregator cannot bind {bind}: {exc}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # stop() writes a byte here to end a poll at once; os.write is safe
        # from a signal handler and from any thread, unlike a ZeroMQ socket.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_read, zmq.POLLIN)

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it drains what has arrived, then returns."""
        self._stop.set()
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def run(self, parent_alive: Callable[[], bool] | None = None, poll: float = 0.1) -> None:
        """Serve until :meth:`stop` (or until ``parent_alive()`` turns false), then drain."""
        next_check = 0.0
        while not self._stop.is_set():
            self.serve_once(poll)
            if parent_alive is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.2
                if not parent_alive():
                    self._log(logging.WARNING, "parent process ended; writing what arrived")
                    break
        while self.serve_once(0.01):
            pass

    def close(self) -> None:
        try:
            self.sinks.close()
        finally:
            self._socket.close(linger=1000)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def serve_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` s, apply what arrived, flush, ack. Returns messages handled."""
        ready = dict(self._poller.poll(int(timeout * 1000)))
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
        if self._socket not in ready:
            return 0
        acks: dict[bytes, bytes] = {}
        handled = 0
        while handled < _MAX_MESSAGES_PER_CYCLE:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            handled += 1
            if len(parts) != 2:
                self._bad(parts[0] if parts else b"", f"message of {len(parts)} frames")
                continue
            self._handle(parts[0], parts[1], acks)
        if acks:
            self.sinks.flush()
            for peer, sender_id in acks.items():
                state = self.senders[sender_id]
                reply = codec.encode(codec.Ack(sender_id, state.committed))
                self._socket.send_multipart([peer, reply], zmq.NOBLOCK)
        return handled

    def _handle(self, peer: bytes, data: bytes, acks: dict[bytes, bytes]) -> None:
        try:
            frame = codec.decode(data)
        except codec.CodecError as exc:
            self._bad(peer, str(exc))
            return
        if isinstance(frame, codec.Hello):
            self._hello(frame)
            acks[peer] = frame.sender_id
        elif isinstance(frame, codec.Batch):
            state = self.senders.get(frame.sender_id)
            if state is None:
                self._bad(peer, "batch from a sender that has not said hello")
                return
            if frame.seq == state.committed + 1:
                self._apply(frame, state)
            else:
                self.stats["duplicate" if frame.seq <= state.committed else "gap"] += 1
            acks[peer] = frame.sender_id
        elif isinstance(frame, codec.Bye):
            self.senders.pop(frame.sender_id, None)
        else:
            self._bad(peer, f"unexpected {type(frame).__name__} frame")

    def _hello(self, hello: codec.Hello) -> None:
        state = self.senders.get(hello.sender_id)
        if state is None:
            origin = Origin(rank=hello.rank, host=hello.host, pid=hello.pid)
            self.senders[hello.sender_id] = SenderState(origin, hello.prefix, hello.acked)
            self.stats["senders"] += 1
        else:
            state.committed = max(state.committed, hello.acked)

    def _apply(self, batch: codec.Batch, state: SenderState) -> None:
        good = []
        warnings: list[str] = []
        for record in batch.records:
            problem = codec.check_record(record)
            if problem is not None:
                self.stats["bad_records"] += 1
                self._report(
                    batch.sender_id, "record", f"{state.origin.tag}invalid record: {problem}"
                )
                continue
            if record[0] == codec.RECORD_METRICS:
                warnings += self._drop_non_scalars(record[3], state)
            good.append(record)
        self.sinks.write(state.origin, good)
        for text in warnings:
            self._log(logging.WARNING, text)
        state.committed = batch.seq
        self.stats["batches"] += 1
        self.stats["records"] += len(good)

    def _drop_non_scalars(self, metrics: dict, state: SenderState) -> list[str]:
        """Remove values that cannot be written; return the warnings not yet given."""
        warnings: list[str] = []
        bad = [k for k, v in metrics.items() if type(v) not in _SCALARS or type(k) is not str]
        for key in bad:
            value = metrics.pop(key)
            self.stats["non_scalar_values"] += 1
            name = key if type(key) is str else repr(key)
            if name in state.warned_keys or len(state.warned_keys) >= _MAX_REPORTED:
                continue
            state.warned_keys.add(name)
            if type(key) is not str:
                what = "its key is not text"
            elif isinstance(value, dict) and NON_SCALAR in value:
                what = f"not a scalar: {value[NON_SCALAR]}"
            else:
                what = f"not a scalar: {type(value).__name__} of {len(value)} items"
            warnings.append(
                f"{state.origin.tag}metric {name!r} is {what}; "
                "it is not written (reported once per key)"
            )
        return warnings

    def _bad(self, peer: bytes, problem: str) -> None:
        self.stats["bad_frames"] += 1
        self._report(peer, "frame", f"malformed frame from peer {peer.hex() or '?'}: {problem}")

    def _report(self, who: bytes, what: str, text: str) -> None:
        key = (who, what)
        if key in self._reported:
            return
        if len(self._reported) < _MAX_REPORTED:
            self._reported.add(key)
        self._log(logging.WARNING, f"roxxel-aggregator: {text} (reported once per sender)")

    def _log(self, level: int, text: str) -> None:
        self.sinks.write(COLLECTOR_ORIGIN, [[codec.RECORD_LOG, time.time(), level, text]])
