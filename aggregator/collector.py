"""The collector: a ROUTER socket in, the sinks out, acks back.

Threading: a :class:`Collector` is driven by one thread (``run`` or repeated
``serve_once``); ``stop`` may be called from any thread or a signal handler.

Ordering and delivery (exactly once into the files): a sender's batch is
applied only if its seq is the next one expected from that sender; a
duplicate is only re-acknowledged, a gap writes nothing and re-acknowledges
the last applied seq (the client then resends). Each cycle drains what is
waiting on the socket and writes it; then it group-commits -- every sink
synced to disk, then the checkpoint (:mod:`aggregator.checkpoint`) replaced
atomically -- and only then sends one cumulative ack per sender touched. If
writing fails (``OSError``: disk full, unwritable), the files are rewound to
the last checkpoint and nothing is acknowledged: the clients keep the
batches and resend them. On start the collector loads its checkpoint and
rewinds the files to it, so what a killed collector wrote after its last
commit is written again once, from the resent batches.

Malformed input (bad msgpack, wrong shapes, batches from a sender that never
said hello, invalid records, non-scalar metric values) is counted in
:attr:`Collector.stats` and reported once per sender in the system log; it
never stops the loop. A batch with a valid envelope but a body that can never
be applied, and each invalid record, is acknowledged once and saved to the
quarantine dot-file ``.{prefix}_quarantine.jsonl``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

import zmq

from roxxel import codec, schema
from roxxel.security import ServerKeys

from .checkpoint import Checkpoint, checkpoint_path, load_checkpoint, save_checkpoint
from .curve import CurveGate, Refusal
from .lock import RunLock
from .metrics_run import MetricsRun, metrics_run
from .quarantine import Quarantine, quarantine_path
from .sinks import FanOut, MetricsCsvSink, MetricsJsonlSink, Origin, Sink, SystemLogSink

__all__ = ["Collector", "SenderState", "default_sinks", "quarantine_path"]

# A commit (fsync of the files, checkpoint replaced: ~0.9 ms of CPU on a
# 2-vCPU VM) happens at most this often, except when a client says bye; acks
# wait for it. With a commit per batch (every flush_interval of every client)
# a steady trickle of records would cost more in commits than in records.
DEFAULT_COMMIT_INTERVAL = 0.05
# How long an embedded collector whose parent died waits for that process's
# watcher to report how it ended (it does within about 0.6 s), and for the
# notices of the ranks that die with it.
_AFTER_PARENT_DEATH = 5.0
# A cycle takes at most this many frames (a message may carry many) before
# it may commit and ack, so acks keep flowing under a flood.
_MAX_MESSAGES_PER_CYCLE = 256
# Senders known at once (said hello; a bye forgets one). A pod of thousands of
# ranks, each with a Logger or two and a watcher, stays far below it.
MAX_SENDERS = 65_536
# Messages queued per connection: above what an honest client can have in
# flight (its window, 1,024 batches, each in at most one message), so only a
# client that ignores acknowledgements is held back by it.
_RCVHWM = 4096
# Senders that crashed without a word (no watcher) are never heard again; a
# collector forgets those silent this long once it knows more than this many.
# Their committed seqs are kept (the last 65,536, not in the checkpoint), so a
# client that comes back after a long partition is not written twice.
IDLE_SENDER_SECONDS = 3600.0
IDLE_SENDERS_KEPT = 1024
_FORGOTTEN_KEPT = 65_536
# What a status or tail answer holds at most (it must fit the codec's limits).
_STATUS_SENDERS = 100
_TAIL_BYTES = 256 * 1024
# How often a collector that cannot write says so again.
_FAILURE_REMINDER = 60.0
# Problems reported (once each); past it they are only counted.
_MAX_REPORTED = 10_000

COLLECTOR_ORIGIN = Origin(rank=0, host="", pid=os.getpid())


class _Failing(NamedTuple):
    since: float  # time.time() of the first failure
    first: float  # monotonic, of the first failure
    last_said: float  # monotonic, of the last message about it
    error: str


@dataclass(frozen=True)
class Death:
    """A process of the run that ended abnormally, as its watcher reported it."""

    ts: float
    rank: int
    host: str
    pid: int
    text: str


@dataclass
class SenderState:
    origin: Origin
    prefix: str
    committed: int  # highest seq applied
    durable: int  # highest seq in the last checkpoint
    key: str | None = None  # with CURVE: the public key that said hello
    warned_keys: set[str] = field(default_factory=set)
    # Not in the checkpoint: this collector's view of the sender.
    seen: float = field(default_factory=time.monotonic)  # its last frame
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
    def restored(cls, saved: dict[str, Any]) -> SenderState:
        origin = Origin(rank=int(saved["rank"]), host=str(saved["host"]), pid=int(saved["pid"]))
        committed = int(saved["committed"])
        key = saved.get("key")
        return cls(
            origin, str(saved["prefix"]), committed, committed, None if key is None else str(key)
        )


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
    """Receive batches on ``bind``, write them through ``sinks``.

    With ``checkpoint`` (a file path) delivery is exactly once across
    restarts; without it, acks follow a flush only (for tests and tools).
    With ``curve`` only clients holding one of its allowed keys get in
    (:mod:`aggregator.curve`), and a sender id belongs to the key that said
    hello with it: frames of another key naming it are refused.
    """

    def __init__(
        self,
        bind: str,
        sinks: Sink,
        *,
        checkpoint: str | None = None,
        quarantine: str | None = None,
        context: zmq.Context | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
    ):
        self.sinks = sinks
        self.senders: dict[bytes, SenderState] = {}
        self.max_senders = MAX_SENDERS
        self.idle_sender_seconds = IDLE_SENDER_SECONDS
        self.idle_senders_kept = IDLE_SENDERS_KEPT
        self._next_forget = time.monotonic() + 60.0
        self._forgotten: dict[bytes, int] = {}  # sender id -> committed seq, oldest first
        self._started = time.time()
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=11)  # (monotonic, records)
        self.log_dir: str | None = None
        self.prefix: str | None = None
        self.system_log_path: str | None = None
        self._log_committed: dict[int, int] = {}  # inode -> synced size of the system log
        self._now = time.monotonic()
        self.stats: Counter[str] = Counter()
        self._reported: set[tuple[bytes, str]] = set()
        # Undone by a roll back: what was reported in lines that are rewound.
        self._reported_since_commit: list[tuple[set, Any]] = []
        self._checkpoint_path = checkpoint
        self._quarantine = None if quarantine is None else Quarantine(quarantine)
        self._dirty = False
        self._commit_interval = commit_interval
        self._commit_due: float | None = None
        self._last_commit = -math.inf
        self._acks: dict[bytes, bytes] = {}  # peer -> sender id, to acknowledge
        self._needs_rewind = False
        self._marks: Any = None
        self._lock: RunLock | None = None
        self._reopen = False
        self._open: set[bytes] = set()  # said hello, not bye
        self._byes: list[tuple[bytes, codec.Bye]] = []
        self._ranks_seen: set[int] = set()
        self._process_count = 0
        self._deaths: dict[tuple[str, int, int], Death] = {}  # by (host, pid, rank)
        self._failing: _Failing | None = None  # since writing failed, until a commit works
        self._rewind_said = -math.inf
        if checkpoint is not None:
            self._resume(checkpoint)
        self._stop = threading.Event()
        # ZeroMQ asks one authenticator per context: a CURVE collector gets its own.
        self._own_context = context is None and curve is not None
        self._context = context or (zmq.Context() if curve else zmq.Context.instance())
        self._socket = self._context.socket(zmq.ROUTER)
        self._gate = None if curve is None else CurveGate(self._context, self._socket, curve)
        self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._socket.setsockopt(zmq.MAXMSGSIZE, codec.MAX_FRAME_BYTES)
        self._socket.setsockopt(zmq.LINGER, 1000)
        # Per connection: past it ZeroMQ stops reading that peer (TCP pushes
        # back to it). It counts messages, not bytes: each frame is still
        # bounded only by MAXMSGSIZE, so untrusted networks need CURVE.
        self._socket.setsockopt(zmq.RCVHWM, _RCVHWM)
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as exc:
            self._close_sockets(0)
            raise OSError(f"roxxel-aggregator cannot bind {bind}: {exc}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # The log's text goes to tools only where readers are known: CURVE
        # clients, or whoever can reach a local endpoint.
        self._serves_log = curve is not None or _is_local(self.endpoint)
        # stop() writes a byte here to end a poll at once; os.write is safe
        # from a signal handler and from any thread, unlike a ZeroMQ socket.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_read, zmq.POLLIN)
        for gate_socket in self._gate.sockets if self._gate else ():
            self._poller.register(gate_socket, zmq.POLLIN)

    @classmethod
    def for_log_dir(
        cls,
        bind: str,
        log_dir: str,
        prefix: str,
        echo: TextIO | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
    ) -> Collector:
        """A collector owning the run ``{log_dir}/{prefix}_*``, its checkpoint and quarantine.

        Raises ``OSError`` if another collector holds the run's lock.
        """
        os.makedirs(log_dir, exist_ok=True)
        lock = RunLock(log_dir, prefix)
        try:
            sinks = default_sinks(log_dir, prefix, echo)
        except BaseException:
            lock.release()
            raise
        try:
            collector = cls(
                bind,
                sinks,
                checkpoint=checkpoint_path(log_dir, prefix),
                quarantine=quarantine_path(log_dir, prefix),
                commit_interval=commit_interval,
                curve=curve,
            )
        except BaseException:
            sinks.close()
            lock.release()
            raise
        collector._lock = lock
        collector.log_dir, collector.prefix = os.path.abspath(log_dir), prefix
        collector.system_log_path = os.path.join(collector.log_dir, f"{prefix}_system.log")
        return collector

    def _resume(self, path: str) -> None:
        saved = load_checkpoint(path)
        if saved is not None:
            for hex_id, state in saved.senders.items():
                self.senders[bytes.fromhex(hex_id)] = SenderState.restored(state)
            if saved.marks is not None:
                if not isinstance(saved.marks, dict) or "sinks" not in saved.marks:
                    raise ValueError(f"unreadable checkpoint {path}: marks of another version")
                self._rewind(saved.marks)
        self._commit()

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it drains what has arrived, then returns."""
        self._stop.set()
        self._wake()

    def reopen(self) -> None:
        """Ask :meth:`run` to reopen the files (after log rotation moved them) and,
        with CURVE, to read the allowed clients' keys again."""
        self._reopen = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def run(
        self,
        parent_alive: Callable[[], bool] | None = None,
        poll: float = 0.1,
        drain_senders: float = 0.0,
        stats_every: float = 0.0,
        stats_out: TextIO | None = None,
        parent_pid: int | None = None,
    ) -> None:
        """Serve until :meth:`stop` (or until ``parent_alive()`` turns false), then drain.

        When the parent (process ``parent_pid``) died, its watcher's death
        notice is waited for, at most a few seconds.

        With ``drain_senders``, a stop request keeps serving until every rank
        of the run has said bye (see :meth:`senders_done`), at most that long.
        With ``stats_every``, a :meth:`stats_line` goes to ``stats_out`` that often.
        """
        next_check = 0.0
        next_stats = time.monotonic() + stats_every
        last_records = self.stats["records"]
        while not self._stop.is_set():
            self.serve_once(poll)
            if self._reopen:
                self._reopen_files()
            if stats_every > 0 and time.monotonic() >= next_stats:
                rate = (self.stats["records"] - last_records) / stats_every
                last_records = self.stats["records"]
                next_stats += stats_every
                print(self.stats_line(rate), file=stats_out or sys.stderr, flush=True)
            if parent_alive is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.2
                if not parent_alive():
                    self._guarded(
                        self._log, logging.WARNING, "parent process ended; writing what arrived"
                    )
                    self._await_death_notices(parent_pid)
                    break
        else:
            deadline = time.monotonic() + drain_senders
            while not self.senders_done() and time.monotonic() < deadline:
                self.serve_once(min(poll, max(0.0, deadline - time.monotonic())))
        while self.serve_once(0.01):
            pass
        self._guarded(self._summarize_failures)
        self._commit_or_roll_back()
        if not self._dirty:
            self._send_acks()

    def _await_death_notices(self, parent_pid: int | None) -> None:
        """After the parent died: serve until its watcher's notice has come and
        then a quiet spell has passed (other ranks die with it), a few seconds at most."""
        now = time.monotonic()
        deadline, last_heard = now + _AFTER_PARENT_DEATH, now
        while (now := time.monotonic()) < deadline:
            heard = any(d.pid == parent_pid for d in self._deaths.values())
            if heard and now - last_heard >= 0.5:
                return
            if self.serve_once(0.05):
                last_heard = time.monotonic()

    def stats_line(self, records_per_second: float) -> str:
        s = self.stats
        return (
            f"roxxel-aggregator stats: {records_per_second:,.0f} records/s, "
            f"{len(self._open)} senders, {s['records']:,} records written, "
            f"{s['client_dropped']:,} dropped by clients, {s['bad_frames']:,} bad frames, "
            f"{s['poison_batches']:,} quarantined batches, {s['write_errors']:,} write errors, "
            f"{s['refused_senders']:,} senders refused, "
            f"{s['refused_connections']:,} connections refused"
        )

    def _reopen_files(self) -> None:
        self._reopen = False
        if self._gate is not None:
            try:
                self._gate.reload()
                allowed = len(self._gate.keys.allowed)
                print(f"roxxel-aggregator: {allowed} client key(s) allowed", file=sys.stderr)
            except (OSError, ValueError) as exc:
                print(f"roxxel-aggregator: keeping the allowed keys: {exc}", file=sys.stderr)
        try:
            self._commit()
        except OSError as exc:
            self._failed(exc)  # the files stay as they are; the next SIGHUP tries again
            return
        try:
            self.sinks.reopen()
        except OSError as exc:  # some files may be new, the others are the old ones
            print(f"roxxel-aggregator: reopening the files failed: {exc}", file=sys.stderr)
        # Nothing is uncommitted: the files open now are where a roll back returns to.
        self._marks = self._current_marks()
        try:
            self._commit()
        except OSError as exc:
            self._failed(exc)

    def senders_done(self) -> bool:
        """Every rank of the run has said hello, and every sender that did has said bye."""
        count, seen = self._process_count, self._ranks_seen
        # Counted first: a hello may claim any process count.
        return not self._open and len(seen) >= count and all(r in seen for r in range(count))

    def close(self) -> None:
        try:
            self.sinks.close()
            if self._quarantine is not None:
                self._quarantine.close()
        finally:
            if self._lock is not None:
                self._lock.release()
            self._close_sockets(1000)
            os.close(self._wake_read)
            os.close(self._wake_write)
            if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
                try:
                    os.unlink(self.endpoint[len("ipc://") :])
                except OSError:
                    pass  # already gone

    def _close_sockets(self, linger: int) -> None:
        if self._gate is not None:
            self._gate.close()
        self._socket.close(linger=linger)
        if self._own_context:
            self._context.term()

    def serve_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` s (less when a commit is due), apply what
        arrived; commit and acknowledge when a commit is due: at once, unless
        the last one was less than ``commit_interval`` ago. Returns messages handled."""
        if self._commit_due is not None:
            timeout = min(timeout, max(0.0, self._commit_due - time.monotonic()))
        if self._needs_rewind and not self._roll_back():
            # The files cannot be rewound yet: read nothing (it could not be
            # written), wait for the disk or a stop instead of spinning.
            self._wait_for_wake(max(timeout, 0.1))
            return 0
        # Rounded up: a poll of 0 ms while a commit is due within 1 ms would spin.
        ready = dict(self._poller.poll(math.ceil(timeout * 1000)))
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
        handled = 0
        self._now = time.monotonic()
        try:
            if self._gate is not None and any(g in ready for g in self._gate.sockets):
                for refusal in self._gate.handle():
                    self._refused(refusal)
            while self._socket in ready and handled < _MAX_MESSAGES_PER_CYCLE:
                try:
                    parts, key = self._receive()
                except zmq.Again:
                    break
                handled += max(1, len(parts) - 1)  # frames: a message may carry many
                if len(parts) < 2:
                    self._bad(parts[0] if parts else b"", "message without a frame")
                    continue
                if self._gate is not None and not self._gate.allows(key):
                    self._revoked(parts[0], key)
                    continue
                for data in parts[1:]:  # a client sends what it has as one message
                    self._handle(parts[0], data, self._acks, key)
        except OSError as exc:
            self._failed(exc)
        now = time.monotonic()
        if self._dirty and self._commit_due is None:
            # At most one commit per interval: at once after a quiet spell.
            self._commit_due = max(now, self._last_commit + self._commit_interval)
        if self._commit_due is not None and now >= self._commit_due:
            self._commit_or_roll_back()
            self._last_commit = now
        if not self._dirty:
            self._commit_due = None
            self._send_acks()
        if now >= self._next_forget:
            try:
                self._forget_idle_senders(now)
            except OSError as exc:
                self._failed(exc)
        if not self._rate_samples or now - self._rate_samples[-1][0] >= 1.0:
            self._rate_samples.append((now, self.stats["records"]))
        return handled

    def _guarded(self, write: Callable[..., None], *args: Any) -> None:
        """``write`` (lines of the collector's own), a write failure handled as any other."""
        try:
            write(*args)
        except OSError as exc:
            self._failed(exc)

    def _wait_for_wake(self, timeout: float) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_read, zmq.POLLIN)
        if poller.poll(math.ceil(timeout * 1000)):
            os.read(self._wake_read, 4096)

    def _forget_idle_senders(self, now: float) -> None:
        self._next_forget = now + min(60.0, self.idle_sender_seconds)
        if len(self.senders) <= self.idle_senders_kept:
            return
        idle = [i for i, st in self.senders.items() if now - st.seen >= self.idle_sender_seconds]
        for sender_id in idle:
            # Remembered (bounded) so a sender that comes back is not written twice.
            self._forgotten[sender_id] = self.senders.pop(sender_id).committed
            self._open.discard(sender_id)
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            del self._forgotten[next(iter(self._forgotten))]
        if idle:
            self.stats["forgotten_senders"] += len(idle)
            self._log(
                logging.INFO,
                f"roxxel-aggregator: forgot {len(idle)} sender(s) silent for "
                f"{self.idle_sender_seconds:.0f} s or more ({len(self.senders)} known)",
            )

    def _receive(self) -> tuple[list[bytes], str | None]:
        """A waiting message's frames, and with CURVE the key of the connection it came on."""
        if self._gate is None:
            return self._socket.recv_multipart(zmq.NOBLOCK, copy=True), None
        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        # Set by our authenticator on every message of the connection; the
        # routing-id frame is the ROUTER's own and carries no properties.
        key = frames[1].get("User-Id") if len(frames) > 1 else None
        return [frame.bytes for frame in frames], key

    def _send_acks(self) -> None:
        """Acknowledge what is durable to every sender heard since the last acks."""
        for peer, sender_id in self._acks.items():
            state = self.senders.get(sender_id)
            if state is not None:
                reply = codec.encode(codec.Ack(sender_id, state.durable))
                self._socket.send_multipart([peer, reply], zmq.NOBLOCK)
        self._acks.clear()
        for peer, bye in self._byes:  # heard: the client may end now
            reply = codec.encode(codec.Ack(bye.sender_id, bye.seq))
            self._socket.send_multipart([peer, reply], zmq.NOBLOCK)
        self._byes.clear()

    # -- commit and roll back ------------------------------------------------------

    def _commit_or_roll_back(self) -> None:
        if not self._dirty or self._needs_rewind:
            return
        try:
            self._commit()
        except OSError as exc:
            self._failed(exc)

    def _commit(self) -> None:
        """Sync the sinks, then replace the checkpoint; only then is anything durable."""
        self.sinks.sync()
        if self.system_log_path is not None:
            # What roxxel tail may show: written and synced (keyed by file, for rotation).
            try:
                st = os.stat(self.system_log_path)
                self._log_committed = {st.st_ino: st.st_size}
            except FileNotFoundError:  # rotated away, not reopened yet
                self._log_committed = {}
        if self._quarantine is not None:
            self._quarantine.sync()
        if self._checkpoint_path is not None:
            marks = self._current_marks()
            saved = {sid.hex(): st.saved() for sid, st in self.senders.items()}
            save_checkpoint(self._checkpoint_path, Checkpoint(saved, marks))
            # Only now, with the checkpoint on disk, may anything be acknowledged.
            self._marks = marks
        for state in self.senders.values():
            state.durable = state.committed
        self._reported_since_commit.clear()
        self._dirty = False
        if self._failing is not None:
            self._recovered()

    def _recovered(self) -> None:
        failing, self._failing = self._failing, None
        assert failing is not None
        when = time.strftime("%H:%M:%S", time.localtime(failing.since))
        text = (
            f"roxxel-aggregator: writing failed from {when} for "
            f"{time.monotonic() - failing.first:.1f} s ({failing.error}); it works again and "
            "the clients' resent batches are written: nothing is lost"
        )
        print(text, file=sys.stderr, flush=True)
        self._log(logging.WARNING, text)  # committed with the next batch

    def _current_marks(self) -> dict[str, Any]:
        return {
            "sinks": self.sinks.mark(),
            "quarantine": None if self._quarantine is None else self._quarantine.mark(),
        }

    def _rewind(self, marks: Any) -> None:
        self.sinks.rewind(marks["sinks"])
        if self._quarantine is not None and marks["quarantine"] is not None:
            self._quarantine.rewind(marks["quarantine"])

    def _failed(self, exc: OSError) -> None:
        self.stats["write_errors"] += 1
        now = time.monotonic()
        # A full disk fails every commit: said at once, then once a minute.
        if self._failing is None or now - self._failing.last_said >= _FAILURE_REMINDER:
            again = "" if self._failing is None else "still "
            print(
                f"roxxel-aggregator: writing {again}failed ({exc}); the batches since the last "
                "checkpoint stay unacknowledged and will be written when the clients resend them",
                file=sys.stderr,
                flush=True,
            )
            if self._failing is None:
                self._failing = _Failing(time.time(), now, now, str(exc))
            self._failing = self._failing._replace(last_said=now)
        self._needs_rewind = True
        self._roll_back()

    def _roll_back(self) -> bool:
        """Forget everything after the last checkpoint, in memory and in the files."""
        for state in self.senders.values():
            state.committed = state.durable
        # The warnings written since are rewound: they are given again.
        for reported, key in self._reported_since_commit:
            reported.discard(key)
        self._reported_since_commit.clear()
        self._dirty = False
        try:
            if self._marks is not None:
                self._rewind(self._marks)
        except OSError as exc:
            now = time.monotonic()
            if now - self._rewind_said >= _FAILURE_REMINDER:
                self._rewind_said = now
                print(f"roxxel-aggregator: cannot rewind the files yet ({exc})", file=sys.stderr)
            return False
        self._needs_rewind = False
        return True

    # -- frames ----------------------------------------------------------------

    def _handle(
        self, peer: bytes, data: bytes, acks: dict[bytes, bytes], key: str | None = None
    ) -> None:
        try:
            envelope = codec.decode_envelope(data)
        except codec.CodecError as exc:
            self._bad(peer, str(exc))
            return
        state = self.senders.get(envelope.sender_id)
        if state is not None:
            if state.key != key:
                self._foreign(peer, state, key)
                return
            state.seen = self._now
        if envelope.kind == "batch":
            if state is None:  # refused before its body is decoded (it may be 64 MiB)
                self._bad(peer, "batch from a sender that has not said hello")
                return
            if envelope.seq != state.committed + 1:
                # A resent duplicate, or a gap: answered without decoding the body.
                self.stats["duplicate" if envelope.seq <= state.committed else "gap"] += 1
                acks[peer] = envelope.sender_id
                return
        try:
            frame = codec.decode(data)
        except codec.BatchError as exc:
            assert state is not None  # only a batch's body is a BatchError
            self._poison(peer, exc, data, acks, state)
            return
        except codec.CodecError as exc:
            self._bad(peer, str(exc))
            return
        if isinstance(frame, codec.Hello):
            if frame.sender_id not in self.senders and len(self.senders) >= self.max_senders:
                # Each sender costs memory and a checkpoint entry: refused,
                # counted, reported once; its batches are then malformed frames.
                self.stats["refused_senders"] += 1
                self._report(
                    b"", "senders", f"more than {self.max_senders} senders: refusing new ones"
                )
                return
            self._hello(frame, key)
            acks[peer] = frame.sender_id
        elif isinstance(frame, codec.Batch):
            assert state is not None  # a batch of an unknown sender was refused above
            self._apply(frame, state)
            state.bytes += len(data)
            acks[peer] = frame.sender_id
        elif isinstance(frame, codec.Query):
            self._answer(peer, frame)
        elif isinstance(frame, codec.Bye):
            # Everything of this sender is acknowledged: no resend or replay can follow.
            self._open.discard(frame.sender_id)
            if self.senders.pop(frame.sender_id, None) is not None:
                self._dirty = True
            self._byes.append((peer, frame))
            self._commit_due = time.monotonic()  # a closing client waits for this ack
        else:
            self._bad(peer, f"unexpected {type(frame).__name__} frame")

    def _answer(self, peer: bytes, query: codec.Query) -> None:
        what = query.body.get("what")
        if what == "status":
            body = self.status()
        elif what == "tail":
            body = self._tail(query.body.get("offset"), query.body.get("file"))
        else:
            body = {"error": f"unknown query {codec.wire_repr(what)}: 'status' or 'tail'"}
        try:
            reply = codec.encode(codec.Answer(query.sender_id, query.seq, body))
        except codec.CodecError as exc:  # e.g. past the frame limit: never a crash
            body = {"error": f"the answer cannot be sent: {exc}"}
            reply = codec.encode(codec.Answer(query.sender_id, query.seq, body))
        try:
            self._socket.send_multipart([peer, reply], zmq.NOBLOCK)
        except zmq.Again:
            pass  # the tool's queue is full: it asks again

    def status(self) -> dict[str, Any]:
        """What ``roxxel status`` shows: the run, its senders, rates and problems."""
        now = time.monotonic()
        rate = 0.0
        if len(self._rate_samples) > 1:
            (then, before), (last, records) = self._rate_samples[0], self._rate_samples[-1]
            rate = (records - before) / max(last - then, 1e-9)
        busiest = sorted(self.senders.values(), key=lambda st: st.records, reverse=True)
        return {
            "endpoint": self.endpoint,
            "pid": os.getpid(),
            "log_dir": self.log_dir,
            "prefix": self.prefix,
            "curve": self._gate is not None,
            "uptime": time.time() - self._started,
            "open_senders": len(self._open),
            "known_senders": len(self.senders),
            "process_count": self._process_count,
            "ranks_seen": len(self._ranks_seen),
            "records_per_second": rate,
            "stats": dict(self.stats),
            "senders": [
                {
                    "rank": st.origin.rank,
                    "host": st.origin.host[:256],
                    "pid": st.origin.pid,
                    "records": st.records,
                    "bytes": st.bytes,
                    "idle": now - st.seen,
                }
                for st in busiest[:_STATUS_SENDERS]
            ],
        }

    def _tail(self, offset: Any, file_id: Any) -> dict[str, Any]:
        """The system log's committed text from ``offset`` of file ``file_id`` (``None``:
        its last lines), whole lines only: what a roll back may rewind is not shown."""
        path = self.system_log_path
        if path is None:
            return {"error": "this collector writes no system log file"}
        if not self._serves_log:
            return {
                "error": "this collector shows its log only to CURVE clients or on a local "
                "endpoint; run `roxxel tail LOG_DIR` on its host"
            }
        try:
            with open(path, "rb") as log:
                st = os.fstat(log.fileno())
                end = self._log_committed.get(st.st_ino, st.st_size)
                if offset is None or type(offset) is not int or offset < 0:
                    # The first request: from the start of the last whole lines.
                    offset = max(0, end - _TAIL_BYTES)
                    log.seek(offset)
                    if offset:
                        offset += len(log.readline())  # a partial line
                elif file_id != st.st_ino:
                    offset = 0  # rotated: the new file from its start
                offset = min(offset, end)  # rewound since: from where it ends now
                log.seek(offset)
                data = log.read(max(0, min(_TAIL_BYTES, end - offset)))
        except OSError as exc:
            return {"error": f"cannot read {path}: {exc}"}
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            if cut >= 0:
                data = data[: cut + 1]
            elif len(data) < _TAIL_BYTES:
                data = b""  # a line still being written
            else:  # one line longer than an answer goes in pieces, cut between characters
                cut = len(data)
                while cut > len(data) - 3 and data[cut - 1] & 0xC0 == 0x80:  # continuation
                    cut -= 1
                if data[cut - 1] >= 0xC0:  # the lead byte of a character that may be cut
                    cut -= 1
                data = data[:cut] or data
        text = data.decode("utf-8", errors="replace")
        return {"offset": offset + len(data), "file": st.st_ino, "text": text, "path": path}

    def _hello(self, hello: codec.Hello, key: str | None) -> None:
        self._open.add(hello.sender_id)
        if len(self._ranks_seen) < MAX_SENDERS:  # hellos may name any rank
            self._ranks_seen.add(hello.rank)
        self._process_count = max(self._process_count, hello.process_count)
        state = self.senders.get(hello.sender_id)
        if state is None:
            origin = Origin(rank=hello.rank, host=hello.host, pid=hello.pid)
            # A forgotten sender that comes back: what it had sent is written.
            committed = max(hello.acked, self._forgotten.pop(hello.sender_id, 0))
            state = SenderState(origin, hello.prefix, committed, committed, key)
            self.senders[hello.sender_id] = state
            self.stats["senders"] += 1
        elif hello.acked > state.committed:
            # The client saw acks we no longer remember (a checkpoint of
            # another log dir): trust it, it never resends below that.
            state.committed = state.durable = hello.acked

    def _poison(
        self,
        peer: bytes,
        exc: codec.BatchError,
        data: bytes,
        acks: dict[bytes, bytes],
        state: SenderState,
    ) -> None:
        acks[peer] = exc.sender_id
        if exc.seq != state.committed + 1:
            return
        self.stats["poison_batches"] += 1
        self._quarantine_write(exc.sender_id, exc.seq, str(exc), data[:65536].hex())
        self._report(
            exc.sender_id,
            "batch",
            f"{state.origin.tag}batch {exc.seq} can never be applied ({exc}); "
            "it is acknowledged and saved to the quarantine file",
        )
        state.committed = exc.seq
        self._dirty = True

    def _quarantine_write(self, sender_id: bytes, seq: int, reason: str, content: Any) -> None:
        if self._quarantine is None:
            return
        if not self._quarantine.save(sender_id, seq, reason, content):
            self.stats["quarantine_full"] += 1
            self._report(
                b"",
                "quarantine full",
                f"the quarantine file holds {self._quarantine.max_bytes:,} bytes: what can "
                "never be applied is now counted, not saved",
            )

    def _apply(self, batch: codec.Batch, state: SenderState) -> None:
        if schema.all_log_lines(batch.records):  # the common batch, checked in one pass
            self.sinks.write(state.origin, batch.records)
            self._applied(batch, state, len(batch.records))
            return
        lines: list[Any] = []
        runs: list[MetricsRun] = []
        warnings: list[str] = []
        for record in batch.records:
            problem = schema.check_record(record)
            if problem is not None:
                self.stats["bad_records"] += 1
                self._quarantine_write(batch.sender_id, batch.seq, problem, record)
                self._report(
                    batch.sender_id, "record", f"{state.origin.tag}invalid record: {problem}"
                )
                continue
            kind = record[0]
            if kind in schema.METRICS_KINDS:
                run, dropped = metrics_run(record)
                if dropped:
                    warnings += self._non_scalars(dropped, state)
                runs.append(run)
                continue
            if kind == schema.RECORD_DEATH:
                self._death(record, state)
                continue
            if kind == schema.RECORD_DROPPED:
                self.stats["client_dropped"] += record[2] + record[3]
                record = [schema.RECORD_LOG, record[1], logging.WARNING, _dropped_text(record)]
            lines.append(record)
        for records in (lines, runs):  # one sort per write (the sinks' contract)
            if records:
                self.sinks.write(state.origin, records)
        for text in warnings:
            self._log(logging.WARNING, text)
        self._applied(batch, state, len(lines) + sum(len(run.steps) for run in runs))

    def _death(self, record: list, state: SenderState) -> None:
        """A watcher's notice that its process ended: written (before the rest of
        the batch, its stderr tail) and kept for the summary; the dead process's
        senders are no longer waited for (they will never say bye), but what
        they sent before is still applied."""
        _, ts, level, text = record
        origin = state.origin
        key = (origin.host, origin.pid, origin.rank)
        self.stats["deaths"] += 1
        self._deaths.setdefault(key, Death(ts, origin.rank, origin.host, origin.pid, text))
        self._write_line(ts, level, f"[rank {origin.rank}] {text}")
        for sender_id, other in self.senders.items():
            if (other.origin.host, other.origin.pid, other.origin.rank) == key:
                self._open.discard(sender_id)

    def _summarize_failures(self) -> None:
        """The run's last line names its first failure, so nobody has to hunt for it."""
        if not self._deaths:
            return
        first = min(self._deaths.values(), key=lambda d: d.ts)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first.ts))
        others = len(self._deaths) - 1
        self._log(
            logging.CRITICAL,
            f"roxxel: first failure of this run: rank {first.rank} on {first.host} at {when} "
            f"-- {first.text}"
            + (f" ({others} more process(es) ended abnormally after it)" if others else ""),
        )

    def _applied(self, batch: codec.Batch, state: SenderState, written: int) -> None:
        state.committed = batch.seq
        state.records += written
        self._dirty = True
        self.stats["batches"] += 1
        self.stats["records"] += written

    def _non_scalars(self, dropped: dict[str, tuple[str, int]], state: SenderState) -> list[str]:
        """Count the values that cannot be written; return the warnings not given yet."""
        warnings: list[str] = []
        for key, (why, count) in dropped.items():
            self.stats["non_scalar_values"] += count
            if key in state.warned_keys or len(state.warned_keys) >= _MAX_REPORTED:
                continue
            state.warned_keys.add(key)
            self._reported_since_commit.append((state.warned_keys, key))
            warnings.append(
                f"{state.origin.tag}metric {key!r} is {why}; "
                "it is not written (reported once per key)"
            )
        return warnings

    def _foreign(self, peer: bytes, state: SenderState, key: str | None) -> None:
        """A frame naming a sender that said hello with another key: refused."""
        self.stats["foreign_frames"] += 1
        self._report(
            peer,
            "foreign",
            f"refused frames from key {key or '(none)'} naming a sender of "
            f"{state.origin.tag or 'rank 0 '}that said hello with another key",
        )

    def _refused(self, refusal: Refusal) -> None:
        self.stats["refused_connections"] += 1
        if refusal.kind == "unknown_key":
            text = (
                f"refused CURVE key {refusal.key or '(none)'} from {refusal.address}: not allowed"
            )
        else:
            text = (
                f"refused a connection from {refusal.address} that did not complete a CURVE "
                "handshake (a client without keys, or with another collector's public key?)"
            )
        # Once per host (a retrying client's port changes; keys cost nothing to make).
        self._report(refusal.address.rsplit(":", 1)[0].encode(), f"refused {refusal.kind}", text)

    def _revoked(self, peer: bytes, key: str | None) -> None:
        self.stats["refused_connections"] += 1
        self._report(
            peer, "revoked", f"refused frames from key {key}: no longer among the allowed keys"
        )

    def _bad(self, peer: bytes, problem: str) -> None:
        self.stats["bad_frames"] += 1
        self._report(peer, "frame", f"malformed frame from peer {peer.hex() or '?'}: {problem}")

    def _report(self, who: bytes, what: str, text: str) -> None:
        key = (who, what)
        if key in self._reported:
            return
        if len(self._reported) >= _MAX_REPORTED:
            # Past the bound, problems are counted (stats), no longer written.
            self.stats["reports_not_written"] += 1
            if self.stats["reports_not_written"] == 1:
                self._log(
                    logging.WARNING,
                    f"roxxel-aggregator: {_MAX_REPORTED:,} problems reported; further ones are "
                    "only counted (roxxel status)",
                )
            return
        self._reported.add(key)
        self._reported_since_commit.append((self._reported, key))
        self._log(logging.WARNING, f"roxxel-aggregator: {text} (reported once)")

    def _log(self, level: int, text: str) -> None:
        self._write_line(time.time(), level, text)

    def _write_line(self, ts: float, level: int, text: str) -> None:
        self.sinks.write(COLLECTOR_ORIGIN, [[schema.RECORD_LOG, ts, level, text]])
        self._dirty = True


def _is_local(endpoint: str) -> bool:
    """Whether only this host can reach ``endpoint`` (as bound: numeric addresses)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _dropped_text(record: list) -> str:
    _, _, metrics, lines = record
    return (
        f"roxxel dropped {metrics} metrics row(s) and {lines} log line(s): the client's buffer "
        "was full while the collector did not acknowledge them"
    )
