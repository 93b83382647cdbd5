"""The collector: a ROUTER socket in, the sinks out, acks back.

One cycle is poll → decode → dispatch → commit → ack. What each frame means
is the ledger's to decide (:mod:`aggregator.ledger`: apply, re-ack, refuse);
when what was applied becomes durable is the group commit's
(:mod:`aggregator.commit`); this module moves bytes between the socket and
those two, and writes what the ledger says to apply through the sinks.

Threading: a :class:`Collector` is driven by one thread (``run`` or repeated
``serve_once``); ``stop`` and ``reopen`` may be called from any thread or a
signal handler.

Ordering and delivery (exactly once into the files): a sender's batch is
applied only if its seq is the next one expected from that sender; a
duplicate is only re-acknowledged, a gap writes nothing and re-acknowledges
the last durable seq (the client then resends). Each cycle drains what is
waiting on the socket and writes it; then it group-commits -- every sink
synced to disk, then the checkpoint replaced atomically -- and only then
sends one cumulative ack per sender touched. If writing fails (``OSError``:
disk full, unwritable), the files are rewound to the last checkpoint and
nothing is acknowledged: the clients keep the batches and resend them. On
start the collector loads its checkpoint and rewinds the files to it, so
what a killed collector wrote after its last commit is written again once,
from the resent batches.

Malformed input (bad msgpack, wrong shapes, batches from a sender that never
said hello, invalid records, non-scalar metric values) is counted in
:attr:`Collector.stats` and reported once per sender in the system log; it
never stops the loop. A batch with a valid envelope but a body that can never
be applied, and each invalid record, is acknowledged once and saved to the
quarantine dot-file ``.{prefix}_quarantine.jsonl``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

import zmq

from roxxel import codec, schema
from roxxel.diagnostics import diagnostics
from roxxel.lines import rank_tag
from roxxel.security import ServerKeys

from .answers import RateMeter, senders_status, tail_piece
from .batch import DeathNotice, sort_batch
from .checkpoint import checkpoint_path
from .commit import GroupCommit
from .curve import Refusal
from .deaths import Deaths
from .ledger import (
    Apply,
    Asked,
    Closed,
    Foreign,
    Introduced,
    Ledger,
    Poisoned,
    Resent,
    SenderState,
    TooMany,
)
from .lock import RunLock
from .quarantine import Quarantine, quarantine_path
from .reports import Reports
from .router import Router
from .sinks import FanOut, Origin, Sink, SystemLogSink, default_sinks

__all__ = ["Collector", "default_sinks"]

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
DAEMON_NAME = "roxxel-aggregator"
COLLECTOR_ORIGIN = Origin(rank=0, host="", pid=os.getpid())


class Collector:
    """Receive batches on ``bind``, write them through ``sinks``.

    With ``checkpoint`` (a file path) delivery is exactly once across
    restarts; without it, acks follow a flush only (for tests and tools).
    With ``curve`` only clients holding one of its allowed keys get in
    (:mod:`aggregator.curve`), and a sender id belongs to the key that said
    hello with it: frames of another key naming it are refused. ``ledger``
    sets the bounds on senders (and the clock that forgets silent ones);
    ``log`` takes the collector's own diagnostics (default: stderr, see
    :mod:`roxxel.diagnostics`); they and its reports in the log are signed
    ``name`` (a Logger's own collector: ``roxxel collector``).
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
        ledger: Ledger | None = None,
        log: logging.Logger | None = None,
        name: str = DAEMON_NAME,
    ):
        self.name = name  # how its messages sign: the program the user started
        self.sinks = sinks
        self.ledger = ledger or Ledger()
        self.stats: Counter[str] = Counter()
        self.log_dir: str | None = None
        self.prefix: str | None = None
        self._diag = log or diagnostics("roxxel.aggregator")
        self._reports = Reports()
        self._deaths = Deaths()
        self._rate = RateMeter()
        self._started = time.time()
        self._quarantine = None if quarantine is None else Quarantine(quarantine)
        self._commits = GroupCommit(
            sinks,
            self.ledger,
            self._reports,
            self.stats,
            self._diag,
            checkpoint=checkpoint,
            quarantine=self._quarantine,
            name=name,
        )
        self._commit_interval = commit_interval
        self._commit_due: float | None = None
        self._last_commit = -math.inf
        self._acks: dict[bytes, bytes] = {}  # peer -> sender id, to acknowledge
        self._byes: list[tuple[bytes, codec.Bye]] = []
        self._lock: RunLock | None = None
        self._reopen = False
        self._commits.resume()
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and
        # Event.set() takes a lock that a second signal would wait on forever.
        self._stopping = False
        self._router = Router(bind, context, curve)
        self.endpoint = self._router.endpoint
        # The log's text goes to tools only where readers are known: CURVE
        # clients, or whoever can reach a local endpoint.
        self._serves_log = curve is not None or self._router.is_local

    @classmethod
    def for_log_dir(
        cls,
        bind: str,
        log_dir: str,
        prefix: str,
        echo: TextIO | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
        name: str = DAEMON_NAME,
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
                name=name,
            )
        except BaseException:
            sinks.close()
            lock.release()
            raise
        collector._lock = lock
        collector.log_dir, collector.prefix = os.path.abspath(log_dir), prefix
        return collector

    # -- control, from any thread ------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it drains what has arrived, then returns."""
        self._stopping = True
        self._router.wake()

    def reopen(self) -> None:
        """Ask :meth:`run` to reopen the files (after log rotation moved them) and,
        with CURVE, to read the allowed clients' keys again."""
        self._reopen = True
        self._router.wake()

    # -- the loop ----------------------------------------------------------------

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
        while not self._stopping:
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
        summary = self._deaths.summary()
        if summary is not None:
            self._guarded(self._log, logging.CRITICAL, summary)
        self._commit()
        if not self._commits.dirty:
            self._send_acks()

    def serve_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` s (less when a commit is due), apply what
        arrived; commit and acknowledge when a commit is due: at once, unless
        the last one was less than ``commit_interval`` ago. Returns messages handled."""
        if self._commit_due is not None:
            timeout = min(timeout, max(0.0, self._commit_due - time.monotonic()))
        if self._commits.needs_rewind and not self._commits.roll_back():
            # The files cannot be rewound yet: read nothing (it could not be
            # written), wait for the disk or a stop instead of spinning.
            self._router.wait_for_wake(max(timeout, 0.1))
            return 0
        ready = self._router.poll(timeout)
        handled = 0
        try:
            for refusal in ready.refusals:
                self._refused(refusal)
            while ready.messages and handled < _MAX_MESSAGES_PER_CYCLE:
                try:
                    parts, key = self._router.receive()
                except zmq.Again:
                    break
                handled += max(1, len(parts) - 1)  # frames: a message may carry many
                if len(parts) < 2:
                    self._bad(parts[0] if parts else b"", "message without a frame")
                    continue
                if not self._router.allows(key):
                    self._revoked(parts[0], key)
                    continue
                for data in parts[1:]:  # a client sends what it has as one message
                    self._dispatch(parts[0], data, key)
        except OSError as exc:
            self._commits.failed(exc)
        now = time.monotonic()
        if self._commits.dirty and self._commit_due is None:
            # At most one commit per interval: at once after a quiet spell.
            self._commit_due = max(now, self._last_commit + self._commit_interval)
        if self._commit_due is not None and now >= self._commit_due:
            self._commit()
            self._last_commit = now
        if not self._commits.dirty:
            self._commit_due = None
            self._send_acks()
        forgotten = self.ledger.forget_idle()
        if forgotten:
            self.stats["forgotten_senders"] += forgotten
            self._guarded(
                self._log,
                logging.INFO,
                f"{self.name}: forgot {forgotten} sender(s) silent for "
                f"{self.ledger.idle_seconds:.0f} s or more ({len(self.ledger.senders)} known)",
            )
        self._rate.sample(now, self.stats["records"])
        return handled

    def _dispatch(self, peer: bytes, data: bytes, key: str | None) -> None:
        """Do what the ledger decides for one frame."""
        event = self.ledger.receive(data, key)
        if isinstance(event, Apply):
            self._apply(event.batch, event.state)
            event.state.bytes += len(data)
            self._acks[peer] = event.batch.sender_id
        elif isinstance(event, Resent):
            # Answered without decoding the body: the client resends from the ack.
            self.stats["duplicate" if event.duplicate else "gap"] += 1
            self._acks[peer] = event.sender_id
        elif isinstance(event, Introduced):
            if event.new:
                self.stats["senders"] += 1
            self._acks[peer] = event.hello.sender_id
        elif isinstance(event, Closed):
            self._commits.dirty |= event.known
            self._byes.append((peer, event.bye))
            self._commit_due = time.monotonic()  # a closing client waits for this ack
        elif isinstance(event, Poisoned):
            self._poisoned(event.error, data, event.state)
            self._acks[peer] = event.error.sender_id
        elif isinstance(event, Asked):
            self._answer(peer, event.query)
        elif isinstance(event, TooMany):
            # Refused, counted, reported once; its batches are then malformed frames.
            self.stats["refused_senders"] += 1
            limit = self.ledger.max_senders
            self._report(b"", "senders", f"more than {limit} senders: refusing new ones")
        elif isinstance(event, Foreign):
            self.stats["foreign_frames"] += 1
            self._report(
                peer,
                "foreign",
                f"refused frames from key {event.key or '(none)'} naming a sender of "
                f"{event.state.origin.tag or 'rank 0 '}that said hello with another key",
            )
        else:
            self._bad(peer, event.problem)

    def _send_acks(self) -> None:
        """Acknowledge what is durable to every sender heard since the last acks."""
        for peer, sender_id in self._acks.items():
            seq = self.ledger.acknowledged(sender_id)
            if seq is not None:
                self._router.send(peer, codec.encode(codec.Ack(sender_id, seq)))
        self._acks.clear()
        for peer, bye in self._byes:  # heard: the client may end now
            self._router.send(peer, codec.encode(codec.Ack(bye.sender_id, bye.seq)))
        self._byes.clear()

    # -- writing -----------------------------------------------------------------

    def _apply(self, batch: codec.Batch, state: SenderState) -> None:
        part = sort_batch(batch.records)
        for notice in part.notices:
            if isinstance(notice, DeathNotice):
                self._died(notice, state)
                continue
            self.stats["bad_records"] += 1
            self._quarantine_write(batch.sender_id, batch.seq, notice.problem, notice.record)
            self._report(
                batch.sender_id, "record", f"{state.origin.tag}invalid record: {notice.problem}"
            )
        self.stats["client_dropped"] += part.client_dropped
        if part.lines:
            self.sinks.write_lines(state.origin, part.lines)
        if part.runs:
            self.sinks.write_metrics(state.origin, part.runs)
        self._commits.dirty = True
        for key, (why, count) in part.non_scalars.items():
            self.stats["non_scalar_values"] += count
            if self._reports.first_in(state.warned_keys, key):
                self._log(
                    logging.WARNING,
                    f"{state.origin.tag}metric {key!r} is {why}; "
                    "it is not written (reported once per key)",
                )
        state.records += part.written
        self.stats["batches"] += 1
        self.stats["records"] += part.written

    def _died(self, notice: DeathNotice, state: SenderState) -> None:
        """A watcher's notice that its process ended: written (before the rest of
        the batch, its stderr tail) and kept for the summary; the dead process's
        senders are no longer waited for (they will never say bye), but what
        they sent before is still applied."""
        self.stats["deaths"] += 1
        first = self._deaths.add(state.origin, notice.ts, notice.text)
        self._write_line(notice.ts, notice.level, rank_tag(state.origin.rank) + notice.text)
        if first:  # a batch may repeat notices: the senders are looked up once
            self.ledger.ended(state.origin)

    def _poisoned(self, exc: codec.BatchError, data: bytes, state: SenderState) -> None:
        self.stats["poison_batches"] += 1
        self._quarantine_write(exc.sender_id, exc.seq, str(exc), data[:65536].hex())
        self._report(
            exc.sender_id,
            "batch",
            f"{state.origin.tag}batch {exc.seq} can never be applied ({exc}); "
            "it is acknowledged and saved to the quarantine file",
        )
        self._commits.dirty = True

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

    def _log(self, level: int, text: str) -> None:
        self._write_line(time.time(), level, text)

    def _write_line(self, ts: float, level: int, text: str) -> None:
        self.sinks.write_lines(COLLECTOR_ORIGIN, [[schema.RECORD_LOG, ts, level, text]])
        self._commits.dirty = True

    def _guarded(self, write: Callable[..., None], *args: Any) -> None:
        """``write`` (lines of the collector's own), a write failure handled as any other."""
        try:
            write(*args)
        except OSError as exc:
            self._commits.failed(exc)

    def _commit(self) -> None:
        recovered = self._commits.commit_or_roll_back()
        if recovered is not None:
            self._guarded(self._log, logging.WARNING, recovered)  # committed with the next batch

    def _reopen_files(self) -> None:
        self._reopen = False
        gate = self._router.gate
        if gate is not None:
            try:
                gate.reload()
                allowed = len(gate.keys.allowed)
                self._diag.info("%s: %d client key(s) allowed", self.name, allowed)
            except (OSError, ValueError) as exc:
                self._diag.warning("%s: keeping the allowed keys: %s", self.name, exc)
        if not self._commit_now():
            return  # the files stay as they are; the next SIGHUP tries again
        try:
            self.sinks.reopen()
        except OSError as exc:  # some files may be new, the others are the old ones
            self._diag.error("%s: reopening the files failed: %s", self.name, exc)
        # Nothing is uncommitted: the files open now are where a roll back returns to.
        self._commits.reopened()
        self._commit_now()

    def _commit_now(self) -> bool:
        """Commit, dirty or not; ``False`` if it failed (and was rolled back)."""
        try:
            recovered = self._commits.commit()
        except OSError as exc:
            self._commits.failed(exc)
            return False
        if recovered is not None:
            self._guarded(self._log, logging.WARNING, recovered)
        return True

    # -- problems ----------------------------------------------------------------

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
        first = self._reports.first(who, what)
        if first:
            self._log(logging.WARNING, f"{self.name}: {text} (reported once)")
        elif first is None:
            # Past the bound, problems are counted (stats), no longer written.
            self.stats["reports_not_written"] += 1
            if self.stats["reports_not_written"] == 1:
                self._log(
                    logging.WARNING,
                    f"{self.name}: {self._reports.limit:,} problems reported; further "
                    "ones are only counted (roxxel status)",
                )

    # -- answers -----------------------------------------------------------------

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
        self._router.send(peer, reply)  # if the tool's queue is full, it asks again

    def status(self) -> dict[str, Any]:
        """What ``roxxel status`` shows: the run, its senders, rates and problems."""
        return {
            "endpoint": self.endpoint,
            "pid": os.getpid(),
            "log_dir": self.log_dir,
            "prefix": self.prefix,
            "curve": self._router.gate is not None,
            "uptime": time.time() - self._started,
            **senders_status(self.ledger),
            "records_per_second": self._rate.rate(),
            "stats": dict(self.stats),
        }

    def _tail(self, offset: Any, file_id: Any) -> dict[str, Any]:
        log = next((s for s in _leaves(self.sinks) if isinstance(s, SystemLogSink)), None)
        if log is None or self.log_dir is None:
            return {"error": "this collector writes no system log file"}
        if not self._serves_log:
            return {
                "error": "this collector shows its log only to CURVE clients or on a local "
                "endpoint; run `roxxel tail LOG_DIR` on its host"
            }
        return tail_piece(os.path.abspath(log.path), log.synced, offset, file_id)

    def stats_line(self, records_per_second: float) -> str:
        s = self.stats
        return (
            f"{self.name} stats: {records_per_second:,.0f} records/s, "
            f"{len(self.ledger.open)} senders, {s['records']:,} records written, "
            f"{s['client_dropped']:,} dropped by clients, {s['bad_frames']:,} bad frames, "
            f"{s['poison_batches']:,} quarantined batches, {s['write_errors']:,} write errors, "
            f"{s['refused_senders']:,} senders refused, "
            f"{s['refused_connections']:,} connections refused"
        )

    # -- the end -----------------------------------------------------------------

    def senders_done(self) -> bool:
        """Every rank of the run has said hello, and every sender that did has said bye."""
        return self.ledger.done()

    def _await_death_notices(self, parent_pid: int | None) -> None:
        """After the parent died: serve until its watcher's notice has come and
        then a quiet spell has passed (other ranks die with it), a few seconds at most."""
        now = time.monotonic()
        deadline, last_heard = now + _AFTER_PARENT_DEATH, now
        while (now := time.monotonic()) < deadline:
            if self._deaths.heard_from(parent_pid) and now - last_heard >= 0.5:
                return
            if self.serve_once(0.05):
                last_heard = time.monotonic()

    def close(self) -> None:
        try:
            self._commits.close()
        finally:
            if self._lock is not None:
                self._lock.release()
            self._router.close()


def _leaves(sink: Sink) -> list[Sink]:
    if isinstance(sink, FanOut):
        return [leaf for inner in sink.sinks for leaf in _leaves(inner)]
    return [sink]
