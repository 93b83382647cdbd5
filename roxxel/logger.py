"""``roxxel.Logger``: the original API, on a ZeroMQ client.

The caller's cost of ``log_message`` and ``log_metrics_summary`` is about a
``deque.append`` of a small tuple: the metrics dict is copied (a snapshot),
the rest -- value conversion, encoding, sending, retrying -- happens on the
client's sender thread, and formatting and disk I/O in the collector.

A Logger is safe to call from several threads; records of one thread keep
their order. Records a rank does not forward (INFO on ranks other than 0)
are dropped in the call itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from . import codec, exits, schema
from .arguments import check_number, metrics_dict, option_level, step_number
from .client import Sender
from .handler import Capture
from .hotpath import HotPath
from .levels import STANDARD_LEVELS, level_number, with_level_name
from .lines import printable
from .progress import Progress
from .ranks import detect_rank
from .route import ENV_AGGREGATOR, RouteOptions, open_route
from .security import client_keys
from .terminal import is_terminal
from .undelivered import undelivered_path, write_unsent

__all__ = ["Logger", "CRASH_HEADLINE", "MAX_MESSAGE_CHARS"]

CRASH_HEADLINE = "❌ CRITICAL: Uncaught exception occurred during execution!"
# A message longer than this is cut there and ends with schema.TRUNCATED.
MAX_MESSAGE_CHARS = schema.MAX_TEXT_CHARS
# Module-level names for the hot path: one dict lookup instead of two.
_now = time.time
_LOG = schema.RECORD_LOG
_METRICS = schema.RECORD_METRICS
_RANKED = schema.RECORD_RANKED_METRICS


class Logger:
    """Log lines and metrics of a (multi-process) run into one place.

    ``Logger(log_dir, filename_prefix="roxxel", logger_name="RoxxelCore")``
    writes ``{log_dir}/{filename_prefix}_system.log``, ``..._metrics.csv``
    and ``..._metrics.jsonl`` through a collector. ``logger_name`` is kept
    for compatibility with the original roxxel, which named its ``logging``
    logger so: it is :attr:`logger_name` and used for nothing else (name a
    Python logger in ``capture`` to bring its records in). Keyword-only options:

    * ``aggregator``: a collector endpoint (``tcp://host:port``); default
      ``$ROXXEL_AGGREGATOR``; with neither, rank 0 starts its own collector
      (``collector="process"``, or ``"thread"`` where spawning is not allowed).
      With an endpoint every rank, rank 0 included, is only a client and the
      files are written where that collector runs: rank 0 says where on
      stderr once it answers (``roxxel: logging to ENDPOINT → DIR/PREFIX_*
      on HOST``), and :attr:`sys_log_path`, :attr:`metrics_csv_path` and
      :attr:`metrics_jsonl_path` are its paths on :attr:`collector_host`
      (``None`` until it has answered).
    * ``collector_bind`` (default ``$ROXXEL_COLLECTOR_BIND``, else
      ``tcp://0.0.0.0:0`` in a multi-process run and a private ``ipc://``
      endpoint otherwise): where rank 0's own collector listens. In a
      ``jax.distributed`` run it is published in JAX's key-value store and
      the other ranks find it there, waiting at most ``discovery_timeout``
      seconds (default 300) on their sender thread, never in a ``log_*`` call.
    * ``level`` (default ``logging.INFO``): lines below it are dropped.
    * ``forward_level`` (default ``logging.WARNING``): ranks other than 0
      forward only lines at or above it (and always their crash tracebacks).
    * ``flush_interval`` (default 10 ms): how long records may wait in this
      process before they are sent. Shorter loses less to a ``kill -9`` but
      wakes the sender thread more often (each wake-up takes the GIL from
      the training thread).
    * ``close_timeout`` (default 30 s): how long ``close()`` waits for the
      collector to acknowledge everything; what is still unacknowledged then
      is written to ``{log_dir}/{prefix}_undelivered_rank{N}.jsonl`` (replay
      it with ``roxxel replay FILE --aggregator ENDPOINT``).
    * ``max_buffer_bytes`` (default 256 MiB): what this process keeps while
      the collector has not acknowledged it; past it the oldest unsent
      metrics (then lines) are dropped and counted, never the caller blocked.
    * ``no_answer_warning`` (default 5 s; ``None``: off): if no collector has
      answered that many seconds after the first records began to wait, say
      so once on stderr (the endpoint; the records are kept up to
      ``max_buffer_bytes`` and what is unacknowledged at ``close()`` goes to
      the undelivered file), and once more when it answers.
    * ``handle_sigterm`` (default ``True``): on SIGTERM, log it, drain every
      Logger, then end the process by SIGTERM (or run the previous handler).
    * ``metrics_from_all_ranks`` (default ``False``): every
      ``log_metrics_summary`` call behaves as with ``all_ranks=True``.
    * ``watcher`` (default on; ``ROXXEL_WATCHER=0`` turns it off when the
      keyword is not given): a small process that copies this process's
      stderr through (and ``faulthandler``'s stacks), and if the process
      dies without closing its Logger (SIGKILL, SIGABRT, a segfault) tells
      the collector how it ended, with the last 64 KiB of its stderr
      (:mod:`roxxel.watcher`). Not with ``collector="thread"``, whose
      collector dies with the process.
    * ``curve_server_key``, ``curve_client_key`` (default
      ``$ROXXEL_CURVE_SERVER_KEY``, ``$ROXXEL_CURVE_CLIENT_KEY``): the
      collector's public ``NAME.key`` and this process's ``NAME.key_secret``
      (``roxxel-aggregator keygen``); with them every connection is CURVE
      (encrypted; the collector lets in only the keys it lists). A rank 0
      that runs the collector itself also needs ``curve_server_secret`` (the
      collector's ``.key_secret``) and ``curve_clients`` (the directory of
      the allowed clients' ``.key`` files, its own included), default
      ``$ROXXEL_CURVE_SERVER_SECRET`` and ``$ROXXEL_CURVE_CLIENTS``.
    * ``capture`` (default none): names of ``logging`` loggers whose records
      go into the run's log, e.g. ``("jax", "absl")``; ``"py.warnings"``
      adds Python's warnings (:mod:`roxxel.handler`). While the Logger is
      open those loggers do not propagate (no second copy on stderr).
    * ``progress`` (default ``False``): on rank 0, when stdout is a
      terminal, a line showing the last step, steps/s and the first metrics
      of ``log_metrics_summary``, redrawn in place (:mod:`roxxel.progress`).
    * ``metrics_files`` (default ``("csv", "jsonl")``): which metrics files
      rank 0's own collector writes besides the system log, and
      ``csv_floats`` (default ``"original"``, the original roxxel's ``.5f``;
      ``"full"``: every digit, the shortest round-trip ``repr``): how its CSV
      writes floats. A daemon's files are the daemon's to choose
      (``roxxel-aggregator --metrics-files/--csv-floats``): with
      ``aggregator=``, other values raise ``ValueError``.
    """

    def __init__(
        self,
        log_dir: str,
        filename_prefix: str = "roxxel",
        logger_name: str = "RoxxelCore",
        *,
        aggregator: str | None = None,
        collector: str = "process",
        level: int = logging.INFO,
        forward_level: int = logging.WARNING,
        flush_interval: float = 0.01,
        close_timeout: float = 30.0,
        max_buffer_bytes: int = 256 * 1024 * 1024,
        no_answer_warning: float | None = 5.0,
        handle_sigterm: bool = True,
        collector_bind: str | None = None,
        discovery_timeout: float = 300.0,
        metrics_from_all_ranks: bool = False,
        watcher: bool | None = None,
        curve_server_key: str | None = None,
        curve_client_key: str | None = None,
        curve_server_secret: str | None = None,
        curve_clients: str | None = None,
        capture: str | Iterable[str] = (),
        progress: bool = False,
        metrics_files: Iterable[str] = schema.DEFAULT_METRICS_FILES,
        csv_floats: str = "original",
    ) -> None:
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path, not {type(log_dir).__name__}")
        if not isinstance(filename_prefix, str) or not schema.is_run_name(filename_prefix):
            raise ValueError(
                f"filename_prefix must be {schema.RUN_NAME_RULE}, not {filename_prefix!r}"
            )
        if collector not in ("process", "thread"):
            raise ValueError(f"collector must be 'process' or 'thread', not {collector!r}")
        check_number("close_timeout", close_timeout, 0.0, " seconds")
        check_number("flush_interval", flush_interval, 0.001, " seconds")
        check_number("max_buffer_bytes", max_buffer_bytes, 1)
        check_number("discovery_timeout", discovery_timeout, 0.0, " seconds")
        if no_answer_warning is not None and not no_answer_warning > 0:
            raise ValueError(
                f"no_answer_warning must be > 0 seconds or None, not {no_answer_warning!r}"
            )
        capture_names = (capture,) if isinstance(capture, str) else tuple(capture)
        metrics_files = (metrics_files,) if isinstance(metrics_files, str) else tuple(metrics_files)
        problem = schema.check_file_options(metrics_files, csv_floats)
        if problem is not None:
            raise ValueError(problem)
        for name in capture_names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"capture takes logger names, not {name!r}")
        self.log_dir = os.fspath(log_dir)
        if os.path.exists(self.log_dir) and not os.path.isdir(self.log_dir):
            # Said here, not as a bare FileExistsError from deep in makedirs.
            raise NotADirectoryError(f"log_dir {self.log_dir!r} is a file, not a directory")
        self.filename_prefix = filename_prefix
        self.logger_name = logger_name
        rank = detect_rank()
        self.rank = rank.rank
        self.world_size = rank.world_size
        self.is_rank_zero = rank.rank == 0
        self._level = option_level("level", level)
        # Checked on every rank: a bad one must not wait for a multi-host run to show.
        forward = option_level("forward_level", forward_level)
        # Rows logged without all_ranks: only rank 0's are sent.
        self._own_rows = self.is_rank_zero
        if not self.is_rank_zero:
            self._level = max(self._level, forward)
        self._all_ranks = metrics_from_all_ranks
        self._checked_keys: tuple[str, ...] | None = None
        self._known_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._close_timeout = close_timeout
        self._closed = False
        self.truncated_messages = 0  # messages cut at MAX_MESSAGE_CHARS
        self._last_crash: BaseException | None = None
        self._capture: Capture | None = None
        self._progress: Progress | None = None
        self._route = open_route(
            RouteOptions(
                log_dir=self.log_dir,
                prefix=filename_prefix,
                rank=self.rank,
                world_size=self.world_size,
                aggregator=aggregator,
                collector=collector,
                collector_bind=collector_bind,
                close_timeout=close_timeout,
                discovery_timeout=discovery_timeout,
                flush_interval=flush_interval,
                max_buffer_bytes=max_buffer_bytes,
                no_answer_warning=no_answer_warning,
                watcher=watcher,
                keys=client_keys(curve_server_key, curve_client_key),
                curve_server_secret=curve_server_secret,
                curve_clients=curve_clients,
                metrics_files=metrics_files,
                csv_floats=csv_floats,
            )
        )
        self.endpoint = self._route.endpoint
        if self._route.collector_endpoint is not None:
            self.collector_endpoint = self._route.collector_endpoint
        # What log_message and log_metrics_summary append through (_append_line,
        # _append_metrics), and every swap of it (roxxel.hotpath).
        self._hot_path = HotPath(self, self.rank, self._route.log)
        self._connect()
        if self._route.reachable:
            self._route.start_watcher()
        exits.register(self, handle_sigterm)
        if capture_names:
            self._capture = Capture(self, capture_names)
        if progress and self.is_rank_zero and is_terminal(sys.stdout):
            self._progress = Progress(sys.stdout)

    # -- where the run's files are -------------------------------------------------

    @property
    def sys_log_path(self) -> str | None:
        """``{log_dir}/{prefix}_system.log``; with a daemon (``aggregator=``), the
        path it writes on :attr:`collector_host` (``None`` until it has answered)."""
        return self._path("system_log", "_system.log")

    @property
    def metrics_csv_path(self) -> str | None:
        """As :attr:`sys_log_path`, for the metrics CSV (``None`` when not written)."""
        return self._path("metrics_csv", "_metrics.csv")

    @property
    def metrics_jsonl_path(self) -> str | None:
        """As :attr:`sys_log_path`, for the metrics JSONL (``None`` when not written)."""
        return self._path("metrics_jsonl", "_metrics.jsonl")

    @property
    def collector_host(self) -> str | None:
        """The host name of the collector that writes the files, once it has answered."""
        where = self._where()
        return None if where is None else where.host

    def _where(self) -> codec.Where | None:
        return None if self._sender is None else self._sender.where

    def _path(self, field: str, suffix: str) -> str | None:
        if not self._route.remote:
            kind = field.removeprefix("metrics_")
            if kind != field and kind not in self._route.options.metrics_files:
                return None  # a metrics file this Logger's collector does not write
            return os.path.join(self.log_dir, self.filename_prefix + suffix)
        where = self._where()
        return None if where is None else getattr(where, field)

    @property
    def _sender(self) -> Sender | None:
        """The sender the hot path appends to (``None``: stderr, or a forked
        child's not started yet)."""
        return self._hot_path.sender

    def _connect(self) -> None:
        """Point the hot path at a new sender, or at stderr when there is nowhere to send."""
        if not self._route.reachable:
            # A rank other than 0 with nowhere to send: its forwarded lines go
            # to its own stderr rather than nowhere.
            self._hot_path.to_stderr(
                f"rank {self.rank} has no collector endpoint (aggregator= or "
                f"{ENV_AGGREGATOR}, or jax.distributed)"
            )
            return
        sender = self._route.start_sender(on_idle=self._hot_path.sender_sleeps)
        self._pid = os.getpid()
        if not self._hot_path.point_at(sender):
            # Closed meanwhile (a forked child's first record racing close()):
            # this sender took no record; its caller's record raises.
            sender.close(0, bye=False)

    # -- the hot path ---------------------------------------------------------

    def log_message(self, message: str, level: int = logging.INFO) -> None:
        """Log one line at ``level`` (a ``logging`` level number or name)."""
        if type(level) is not int:
            level = level_number(level)
        if level < self._level:
            return
        if type(message) is not str:
            message = str(message)
        if len(message) > MAX_MESSAGE_CHARS:
            message = self._cut(message)
        if level in STANDARD_LEVELS:
            self._append_line((_LOG, _now(), level, message))
        else:
            self._append_line(with_level_name((_LOG, _now(), level, message)))

    def log_record(self, ts: float, level: int, text: str) -> bool:
        """A line stamped ``ts`` (e.g. a ``logging`` record's time), as :meth:`log_message`
        at ``level`` would log it; ``False`` once the Logger is closed. A ``ts``
        out of range (:func:`roxxel.schema.in_time_range`) is written with the
        collector's time, the text saying what it was."""
        if self._closed:
            return False
        if level >= self._level:
            if len(text) > MAX_MESSAGE_CHARS:
                text = self._cut(text)
            if level in STANDARD_LEVELS:
                self._append_line((_LOG, ts, level, text))
            else:
                self._append_line(with_level_name((_LOG, ts, level, text)))
        return True

    def _cut(self, text: str) -> str:
        """A message past :data:`MAX_MESSAGE_CHARS`, cut; counted, and the first
        cut of this Logger said in a WARNING line of its own."""
        self.truncated_messages += 1
        if self.truncated_messages == 1:
            self._append_line(
                (
                    _LOG,
                    _now(),
                    logging.WARNING,
                    f"roxxel: a message of {len(text):,} characters was cut to "
                    f"{MAX_MESSAGE_CHARS:,} (the limit), ending with '{schema.TRUNCATED.strip()}'; "
                    "Logger.truncated_messages counts such cuts",
                )
            )
        return schema.cut_text(text)

    def log_metrics_summary(
        self, step: int, metrics: Mapping[str, Any], *, all_ranks: bool = False
    ) -> None:
        """Log one metrics row for ``step``; keys and values are taken now, values converted later.

        Only rank 0's rows are written, unless ``all_ranks=True`` (or the
        Logger's ``metrics_from_all_ranks=True``): then every rank's row lands
        in the one CSV with a ``rank`` column (and the JSONL, which always
        has ``rank`` and ``host``). Metric names are non-empty ``str`` of at
        most 1,024 characters, at most 4,096 per row, and neither ``step``
        nor ``rank`` (the CSV's own columns); ``TypeError`` / ``ValueError``
        otherwise, checked when the names change, on every rank alike.
        """
        if type(step) is not int:
            step = step_number(step)
        if type(metrics) is not dict:
            metrics = metrics_dict(metrics)
        # Tuples of names and of values, not a copy of the dict: queued
        # tuples of scalars are untracked by the garbage collector, and the
        # sender turns runs of rows with the same names into one record.
        keys = tuple(metrics)
        if keys == self._checked_keys:
            # The checked tuple itself: the new one is freed at once, so it
            # does not count towards the next young-generation collection.
            keys = self._checked_keys
        else:
            keys = self._check_metric_names(keys)
        # Checked the same on every rank; then only rank 0's rows go, unless every rank's are asked.
        if all_ranks or self._all_ranks:
            self._append_metrics((_RANKED, keys, _now(), step, tuple(metrics.values())))
        elif self._own_rows:
            self._append_metrics((_METRICS, keys, _now(), step, tuple(metrics.values())))
        if self._progress is not None:
            self._progress.update(step, metrics)

    def _check_metric_names(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The checked tuple equal to ``keys`` (names that alternate, such as
        train and eval metrics, are checked once each); raises for bad names."""
        known = self._known_keys.get(keys)
        if known is None:
            problem = schema.check_metric_keys(keys)
            if problem is not None:
                error = TypeError if any(type(k) is not str for k in keys) else ValueError
                raise error(f"log_metrics_summary: {problem}")
            if len(self._known_keys) >= 256:
                self._known_keys.clear()
            known = self._known_keys[keys] = keys
        self._checked_keys = known
        return known

    # -- crashes and signals ------------------------------------------------------

    def log_crash(
        self,
        exc_type: type[BaseException],
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        thread: str | None = None,
    ) -> None:
        """Log the CRITICAL headline and the full traceback, on every rank (once per exception).

        A ``KeyboardInterrupt`` (Ctrl-C) is no crash: one WARNING line saying
        where it arrived; Python prints its traceback on stderr as it ends.
        Nor is ``sys.exit()``: nothing for a status of 0 or ``None``, else one
        WARNING line with the status and the place.
        """
        if self._closed or (exc is not None and exc is self._last_crash):
            return
        self._last_crash = exc
        if issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            where = traceback.extract_tb(tb)[-1:] if tb is not None else []
            place = "".join(f" at {f.filename}:{f.lineno} in {f.name}" for f in where)
            if not issubclass(exc_type, SystemExit):
                text = f"interrupted ({exc_type.__name__}){place}"
            elif isinstance(exc, SystemExit) and exc.code not in (None, 0):
                text = f"exiting with status {exc.code!r} (sys.exit){place}"
            else:
                return
            self._append_line((_LOG, _now(), logging.WARNING, text))
            return
        headline = (
            CRASH_HEADLINE
            if thread is None
            else f"❌ CRITICAL: Uncaught exception in thread {thread!r}!"
        )
        text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
        self._append_line((_LOG, _now(), logging.CRITICAL, f"{headline}\n{text}"))

    def log_signal(self, signum: int, then: str = "before the process ends") -> None:
        """Log (on every rank) that the process received ``signum`` and is
        draining; ``then`` says what follows."""
        if not self._closed:
            name = signal.Signals(signum).name
            text = f"received {name}; draining the log {then}"
            self._append_line((_LOG, _now(), logging.WARNING, text))

    def after_fork(self) -> None:
        """In a forked child (called by :mod:`roxxel.exits`' fork hook): a sender of its
        own; the parent's records stay the parent's."""
        if self._closed or self._sender is None or os.getpid() == self._pid:
            return  # nothing to do, or not a child (a live sender is never replaced)
        self._route.after_fork()  # the collector belongs to the parent
        self._hot_path.forked()
        if self.endpoint is not None and self.endpoint.startswith("inproc://"):
            # A thread collector lives in the parent's memory: unreachable from here.
            self._hot_path.to_stderr(
                f"a forked child (pid {os.getpid()}) cannot reach its parent's thread collector"
            )
            return
        # The child's sender starts with its first record, not here: this hook also
        # runs between fork and exec (subprocess with preexec_fn), where close_fds
        # would close a new sender's sockets under libzmq, which then aborts.
        self._hot_path.start_on_first_record(self._connect)

    # -- lifecycle --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the collector has written every record logged so far.

        Returns ``False`` if ``timeout`` (default ``close_timeout``) seconds
        passed first, or if the embedded collector is no longer running.
        """
        if self._closed:
            return True  # delivered, or saved in the undelivered file, by close()
        return self._delivered(timeout)

    def _delivered(self, timeout: float | None) -> bool:
        if self._sender is None:
            return True
        deadline = time.monotonic() + (self._close_timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            # Short waits, so a dead embedded collector is noticed in time.
            if self._sender.flush(max(0.0, min(left, 0.25))):
                return True
            if left <= 0 or self._undeliverable() is not None:
                return False

    def close(self) -> None:
        """Deliver everything, stop the client (and an embedded collector). Idempotent.

        What the collector has not acknowledged within ``close_timeout`` is
        written to ``{log_dir}/{prefix}_undelivered_rank{N}.jsonl`` on this
        host, and the path printed on stderr.
        """
        if self._closed:
            return
        self._closed = True
        if self._capture is not None:
            self._capture.release()
        if self._progress is not None:
            self._progress.close()
        # Every call from now on reaches the hot path's _closed and raises (the
        # level last: another thread's call must not pass it on its way to the sender).
        self._hot_path.close()
        self._own_rows = True
        self._level = _BELOW_EVERY_LEVEL
        with exits.closing():
            try:
                if self._sender is not None:
                    with contextlib.suppress(RuntimeError):  # raised below, after saving
                        self._delivered(None)
                    unsent = self._sender.close(0)
                    if unsent.batches:
                        self._save_unsent(unsent)
                    if self._sender.failure is not None:
                        raise RuntimeError("roxxel sender thread failed") from self._sender.failure
            finally:
                exits.unregister(self)
                self._route.close()

    def _undeliverable(self) -> str | None:
        """Why no wait would deliver more (``None``: waiting may): the collector
        refused this client, or the run's own collector no longer runs."""
        if self._sender is not None and self._sender.refusal is not None:
            return f"the collector at {self.endpoint} refused them ({self._sender.refusal})"
        embedded = self._route.embedded
        if embedded is not None and not embedded.running():
            return "the run's own collector is no longer running"
        return None

    def _save_unsent(self, unsent: Any) -> None:
        path = undelivered_path(self.log_dir, self.filename_prefix, self.rank)
        write_unsent(path, unsent)
        dropped = (
            f" ({unsent.dropped} more were dropped earlier: the buffer was full)"
            if unsent.dropped
            else ""
        )
        why = self._undeliverable()
        if why is None:
            why = (
                f"the collector at {self.endpoint} did not acknowledge them within "
                f"close_timeout={self._close_timeout} s"
            )
            # A daemon's endpoint is where they belong; a run's own collector has ended.
            to = self.endpoint if self._route.remote and self.endpoint else "ENDPOINT"
        else:
            to = "ENDPOINT"  # one that serves this run
        self._route.log.warning(
            "roxxel: %d record(s) were not delivered: %s%s; they are in %s "
            "(deliver them with: roxxel replay %s --aggregator %s)",
            unsent.records,
            printable(why),
            dropped,
            path,
            path,
            to,
        )

    def __enter__(self) -> Logger:
        if self._closed:
            raise RuntimeError("this roxxel Logger is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                self.log_crash(exc_type, exc, tb)
        finally:
            self.close()


_BELOW_EVERY_LEVEL = -(2**63)
