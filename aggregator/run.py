"""One run's files and exactly-once state, and how an applied batch is written there.

A :class:`Run` is what a collector keeps per run: the sinks (system log,
CSV, JSONL), the ledger of its senders, the group commit with its
checkpoint and quarantine, the problems reported once, the deaths, and the
lock that keeps a second collector off its files. A one-run collector has
one; a daemon serving many runs opens one per ``filename_prefix`` on its
first hello (:mod:`aggregator.runs`).

Threading: used only by the collector's thread.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from roxxel import codec, schema
from roxxel.lines import rank_tag

from .batch import DeathNotice, sort_batch
from .checkpoint import checkpoint_path
from .commit import GroupCommit
from .deaths import Deaths
from .ledger import Ledger, SenderState
from .lock import RunLock
from .quarantine import Quarantine, quarantine_path
from .reports import Reports
from .sinks import (
    DEFAULT_FILES,
    FanOut,
    FileOptions,
    MetricsCsvSink,
    MetricsJsonlSink,
    Origin,
    Sink,
    SystemLogSink,
    default_sinks,
)

__all__ = ["Run", "COLLECTOR_ORIGIN"]

COLLECTOR_ORIGIN = Origin(rank=0, host="", pid=os.getpid())


class Run:
    """A run's sinks, ledger and commit; ``name`` signs the collector's own lines."""

    def __init__(
        self,
        sinks: Sink,
        ledger: Ledger,
        stats: Counter[str],
        diagnostics: logging.Logger,
        *,
        name: str,
        checkpoint: str | None = None,
        quarantine: str | None = None,
        prefix: str | None = None,
        log_dir: str | None = None,
    ) -> None:
        self.sinks = sinks
        # What roxxel tail reads (None: a collector over sinks without one).
        self.system_log = next((s for s in _leaves(sinks) if isinstance(s, SystemLogSink)), None)
        self.ledger = ledger
        self.name = name
        self.prefix = prefix
        self.log_dir = log_dir
        self.reports = Reports()
        self.deaths = Deaths()
        self.quarantine = None if quarantine is None else Quarantine(quarantine)
        self.commits = GroupCommit(
            sinks,
            ledger,
            self.reports,
            stats,
            diagnostics,
            checkpoint=checkpoint,
            quarantine=self.quarantine,
            name=name,
        )
        self.lock: RunLock | None = None
        self.where = _where(sinks)
        # Whether a run started on these files before: they held lines when
        # opened, or a Logger's first hello came already (a run again while
        # this one stayed open). Not lines of other ranks of this same run.
        self._run_before = self.system_log is not None and self.system_log.holds_lines()
        self.active = time.monotonic()  # its last frame
        self.stats = stats  # the collector's, shared by its runs
        self.written = 0  # records this run's sinks took (lines and metrics rows)

    @classmethod
    def open(
        cls,
        log_dir: str,
        prefix: str,
        echo: TextIO | None,
        ledger: Ledger,
        stats: Counter[str],
        diagnostics: logging.Logger,
        *,
        name: str,
        log_only: bool = False,
        files: FileOptions = DEFAULT_FILES,
        extra_sinks: Sequence[Sink] = (),
    ) -> Run:
        """The run ``{log_dir}/{prefix}_*``: locked, rewound to its checkpoint;
        its system log and the metrics files of ``files``, or with ``log_only``
        its system log alone (a daemon's own lines).

        Raises ``OSError`` if another collector holds the run's lock.
        """
        os.makedirs(log_dir, exist_ok=True)
        lock = RunLock(log_dir, prefix)
        try:
            if log_only:
                log = SystemLogSink(os.path.join(log_dir, f"{prefix}_system.log"), echo)
                sinks: Sink = FanOut([log])
            else:
                sinks = default_sinks(log_dir, prefix, echo, files, (lock.fileno(),))
            if extra_sinks:  # marks of their own in the checkpoint (a writer's stream position)
                sinks = FanOut([*sinks.sinks, *extra_sinks])
        except BaseException:
            lock.release()
            raise
        try:
            run = cls(
                sinks,
                ledger,
                stats,
                diagnostics,
                name=name,
                checkpoint=checkpoint_path(log_dir, prefix),
                quarantine=quarantine_path(log_dir, prefix),
                prefix=prefix,
                log_dir=os.path.abspath(log_dir),
            )
            run.commits.resume()
        except BaseException:
            try:
                sinks.close()
            finally:
                lock.release()
            raise
        run.lock = lock
        return run

    def close(self) -> None:
        try:
            self.commits.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    # -- committing --------------------------------------------------------------

    def guarded(self, write: Callable[..., None], *args: Any) -> None:
        """``write`` (lines of the collector's own), a write failure this run's,
        handled as any other."""
        try:
            write(*args)
        except OSError as exc:
            self.commits.failed(exc)

    def commit(self, *, even_clean: bool = False) -> bool:
        """Commit what was written (``even_clean``: also when nothing); on a
        failure, roll back, say so, and return ``False``."""
        if self.commits.needs_rewind:
            return False  # the files are not back at the checkpoint: nothing to commit
        if not even_clean and not self.commits.dirty:
            return True
        try:
            recovered = self.commits.commit()
        except OSError as exc:
            self.commits.failed(exc)
            return False
        if recovered is not None:  # committed with the next batch
            self.guarded(self.log, logging.WARNING, recovered)
        return True

    # -- writing -----------------------------------------------------------------

    def apply(self, batch: codec.Batch, state: SenderState) -> None:
        """Write a batch the ledger applied: its lines, its metrics, its notices."""
        stats = self.stats
        part = sort_batch(batch.records)
        for notice in part.notices:
            if isinstance(notice, DeathNotice):
                self._died(notice, state)
                continue
            stats["bad_records"] += 1
            self.quarantine_write(batch.sender_id, batch.seq, notice.problem, notice.record)
            self.report(
                batch.sender_id, "record", f"{state.origin.tag}invalid record: {notice.problem}"
            )
        stats["client_dropped"] += part.client_dropped
        if part.rows_out_of_range:
            # The CSV has no time to mark: said once per sender.
            self.report(
                batch.sender_id,
                "time",
                f"{state.origin.tag}{part.rows_out_of_range} metrics row(s) sent with a time "
                "out of range (not finite, before 1970 or more than a day ahead): written with "
                "the collector's time; the JSONL keeps the time as sent in sent_ts",
            )
        if part.lines:
            self.sinks.write_lines(state.origin, part.lines)
        if part.runs:
            self.sinks.write_metrics(state.origin, part.runs)
        self.commits.dirty = True
        for (key, kind), (why, count) in part.non_scalars.items():
            stats["non_scalar_values"] += count
            if self.reports.first_in(state.warned_keys, (key, kind)):
                self.log(
                    logging.WARNING,
                    f"{state.origin.tag}metric {key!r} is {why}; it is not written "
                    "(reported once per key and kind of value; roxxel status counts them all)",
                )
        state.records += part.written
        self.written += part.written
        stats["batches"] += 1
        stats["records"] += part.written

    def _died(self, notice: DeathNotice, state: SenderState) -> None:
        """A watcher's notice that its process ended: written (before the rest of
        the batch, its stderr tail) and kept for the summary; the dead process's
        senders are no longer waited for (they will never say bye), but what
        they sent before is still applied."""
        self.stats["deaths"] += 1
        first = self.deaths.add(state.origin, notice.ts, notice.text)
        self.write_line(notice.ts, notice.level, rank_tag(state.origin.rank) + notice.text)
        if first:  # a batch may repeat notices: the senders are looked up once
            self.ledger.ended(state.origin)

    def poisoned(self, exc: codec.BatchError, data: bytes, state: SenderState) -> None:
        self.stats["poison_batches"] += 1
        self.quarantine_write(exc.sender_id, exc.seq, str(exc), data[:65536].hex())
        self.report(
            exc.sender_id,
            "batch",
            f"{state.origin.tag}batch {exc.seq} can never be applied ({exc}); "
            "it is acknowledged and saved to the quarantine file",
        )
        self.commits.dirty = True

    def quarantine_write(self, sender_id: bytes, seq: int, reason: str, content: Any) -> None:
        if self.quarantine is None:
            return
        if not self.quarantine.save(sender_id, seq, reason, content):
            self.stats["quarantine_full"] += 1
            self.report(
                b"",
                "quarantine full",
                f"the quarantine file holds {self.quarantine.max_bytes:,} bytes: what can "
                "never be applied is now counted, not saved",
            )

    def report(self, who: bytes, what: str, text: str) -> None:
        """A problem, written once (past the bound only counted)."""
        first = self.reports.first(who, what)
        if first:
            self.log(logging.WARNING, f"{self.name}: {text} (reported once)")
        elif first is None:
            # Past the bound, problems are counted (stats), no longer written.
            self.stats["reports_not_written"] += 1
            if self.stats["reports_not_written"] == 1:
                self.log(
                    logging.WARNING,
                    f"{self.name}: {self.reports.limit:,} problems reported; further "
                    "ones are only counted (roxxel status)",
                )

    def log(self, level: int, text: str) -> None:
        self.write_line(time.time(), level, text)

    def started(self, hello: codec.Hello) -> None:
        """A rank 0 Logger's first hello (``starts``) on files an earlier run
        wrote (a script run again with the same log_dir and prefix): a line in
        the system log, not on stdout, that keeps this run apart from the
        earlier one. A run's first start leaves its files exactly as the
        original roxxel wrote them, whichever of its ranks came first."""
        before, self._run_before = self._run_before, True
        if self.system_log is None or not before:
            return
        text = (
            f"roxxel {hello.version or '(version unknown)'}: a new run of {hello.prefix} "
            "starts here: rank 0 on "
            f"{hello.host} (pid {hello.pid}), {hello.process_count} process(es); the lines "
            "above are an earlier run's"
        )
        record = [schema.RECORD_LOG, time.time(), logging.INFO, text]
        self.system_log.write_unechoed(COLLECTOR_ORIGIN, [record])
        self.commits.dirty = True

    def write_line(self, ts: float, level: int, text: str) -> None:
        self.sinks.write_lines(COLLECTOR_ORIGIN, [[schema.RECORD_LOG, ts, level, text]])
        self.commits.dirty = True


def _where(sinks: Sink) -> codec.Where | None:
    """Where the run's files are, as a client is told (None: no system log)."""
    paths = {
        leaf.name: os.path.abspath(leaf.path) for leaf in _leaves(sinks) if hasattr(leaf, "path")
    }
    try:
        where = codec.Where(
            host=socket.gethostname(),
            system_log=paths[SystemLogSink.__name__],
            metrics_csv=paths.get(MetricsCsvSink.__name__),
            metrics_jsonl=paths.get(MetricsJsonlSink.__name__),
        )
        codec.encode(codec.Ack(bytes(codec.SENDER_ID_LEN), 0, where))
    except (KeyError, codec.CodecError):  # no system log, or a path too long to send
        return None
    return where


def _leaves(sink: Sink) -> list[Sink]:
    if isinstance(sink, FanOut):
        return [leaf for inner in sink.sinks for leaf in _leaves(inner)]
    return [sink]
