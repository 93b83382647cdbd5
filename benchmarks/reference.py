"""A reference implementation of the ORIGINAL roxxel design, for side-by-side benchmarks.

Written here from the description of the original (DESIGN.md), not copied.
It keeps the original's architecture -- and its defects -- on purpose:

* ``log_message`` goes through the standard library: a ``logging.Logger``
  with a ``QueueHandler``; a ``QueueListener`` thread formats each record and
  writes it to ``{prefix}_system.log`` (``FileHandler``) and to stdout
  (``StreamHandler``), format ``[%(asctime)s] [%(levelname)s] %(message)s``.
* ``log_metrics_summary`` puts ``(step, metrics)`` on a ``queue.Queue`` (the
  dict is *not* copied); a writer thread takes each row and, per row, checks
  whether ``{prefix}_metrics.csv`` exists, opens it in append mode, writes
  the header if the file is new (``step,<keys of the first dict>``), writes
  ``step,`` + the values as ``.5f`` and closes the file -- the ~26 us/row
  defect. Keys that were not in the first dict are dropped (another defect);
  a key missing from a row is an empty cell.
* ``close()`` drains both queues and joins both threads.

It is not part of roxxel and is only used by :mod:`benchmarks`.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import traceback
from collections.abc import Mapping
from logging.handlers import QueueHandler, QueueListener
from types import TracebackType
from typing import Any

__all__ = ["ReferenceLogger"]

LOG_FORMAT = "[%(asctime)s] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
CRASH_HEADLINE = "❌ CRITICAL: Uncaught exception occurred during execution!"
_STOP = object()


class ReferenceLogger:
    """The original design: stdlib queue logging plus an open-append-close CSV writer."""

    def __init__(
        self, log_dir: str, filename_prefix: str = "roxxel", logger_name: str = "RoxxelCore"
    ) -> None:
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self.is_rank_zero = True  # the original asked jax.process_index(); not needed here
        self.sys_log_path = os.path.join(self.log_dir, f"{filename_prefix}_system.log")
        self.metrics_csv_path = os.path.join(self.log_dir, f"{filename_prefix}_metrics.csv")
        self._closed = False

        formatter = logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)
        self._file_handler = logging.FileHandler(self.sys_log_path, encoding="utf-8")
        self._stream_handler = logging.StreamHandler(sys.stdout)
        for handler in (self._file_handler, self._stream_handler):
            handler.setFormatter(formatter)
        self._log_queue: queue.Queue[logging.LogRecord] = queue.Queue()
        self._queue_handler = QueueHandler(self._log_queue)
        self._logger = logging.getLogger(logger_name)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(self._queue_handler)
        self._listener = QueueListener(self._log_queue, self._file_handler, self._stream_handler)
        self._listener.start()

        self._keys: list[str] | None = None
        self._metrics_queue: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(
            target=self._write_metrics, name="reference-metrics-writer", daemon=True
        )
        self._writer.start()

    def log_message(self, message: str, level: int = logging.INFO) -> None:
        self._logger.log(level, message)

    def log_metrics_summary(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._metrics_queue.put((step, metrics))

    def _write_metrics(self) -> None:
        while True:
            item = self._metrics_queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()  # flush(): every row queued before it is written
                continue
            step, metrics = item
            try:
                self._write_row(step, metrics)
            except Exception:
                traceback.print_exc()

    def _write_row(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._keys is None:
            self._keys = list(metrics)
        new_file = not os.path.exists(self.metrics_csv_path)
        with open(self.metrics_csv_path, "a", encoding="utf-8") as f:
            if new_file:
                f.write("step," + ",".join(self._keys) + "\n")
            values = [metrics.get(k) for k in self._keys]
            f.write(f"{step}," + ",".join("" if v is None else f"{v:.5f}" for v in values) + "\n")

    def flush(self) -> None:
        """Wait until every metrics row queued so far is written (benchmarks
        use it between runs; the original had no such call)."""
        written = threading.Event()
        self._metrics_queue.put(written)
        written.wait()

    def close(self) -> None:
        """Write everything queued, stop both threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._metrics_queue.put(_STOP)
        self._writer.join()
        self._listener.stop()  # drains the queue, then joins the listener thread
        self._logger.removeHandler(self._queue_handler)
        self._file_handler.close()
        self._stream_handler.flush()

    def __enter__(self) -> ReferenceLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
                self.log_message(f"{CRASH_HEADLINE}\n{text}", logging.CRITICAL)
        finally:
            self.close()
