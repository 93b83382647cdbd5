"""Python ``logging`` into a roxxel run: :class:`Handler` and :class:`Capture`.

JAX, absl and most libraries report through ``logging``; a :class:`Handler`
sends their records through a :class:`~roxxel.Logger`'s client, so every
rank's warnings land in the run's one system log (ranks other than 0 forward
what is at or above the Logger's ``forward_level``). :class:`Capture` (what
``Logger(..., capture=("jax", "absl"))`` uses) attaches one to named loggers
and stops them propagating while attached: their records would otherwise be
printed a second time by the root logger's handlers (or Python's last-resort
stderr handler) next to the collector's echo.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable
from typing import Protocol

__all__ = ["Capture", "Handler", "RecordTarget", "WARNINGS"]


class RecordTarget(Protocol):
    """Where a :class:`Handler` sends records: a :class:`roxxel.Logger`."""

    def log_record(self, ts: float, level: int, text: str) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...


# The logger Python's warnings module reports to once logging captures them.
WARNINGS = "py.warnings"


class Handler(logging.Handler):
    """Send ``logging`` records through ``logger``: level, time and logger name kept.

    The line is ``NAME: MESSAGE`` with the exception's traceback and the
    stack, if the record has them, below it (change it with ``setFormatter``).
    A record logged while this handler is sending one on the same thread
    (a library logging from inside roxxel) is dropped, not recursed into.
    Once the Logger is closed, records go to Python's last-resort handler
    (warnings and above, to stderr; nowhere if ``logging.lastResort`` is
    ``None``) rather than nowhere.

    :meth:`flush` (and so ``logging.shutdown()``, which flushes every
    handler) returns once what was emitted is acknowledged by the collector,
    i.e. in the run's files, or after ``flush_timeout`` seconds.
    """

    def __init__(
        self, logger: RecordTarget, level: int = logging.NOTSET, *, flush_timeout: float = 30.0
    ) -> None:
        super().__init__(level)
        self.logger = logger
        self.flush_timeout = flush_timeout
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._emitting = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._emitting, "active", False):
            return
        self._emitting.active = True
        try:
            # Python's warnings arrive with a final newline: not a line of its own.
            text = self.format(record).rstrip("\n")
            if not self.logger.log_record(record.created, record.levelno, text):
                last = logging.lastResort  # as logging itself uses it: its level applies
                if last is not None and record.levelno >= last.level:
                    last.handle(record)
        except Exception:
            self.handleError(record)
        finally:
            self._emitting.active = False

    def flush(self) -> None:
        """Wait until what was emitted is in the run's files (``flush_timeout`` at most)."""
        self.logger.flush(self.flush_timeout)


class Capture:
    """A :class:`Handler` on each named logger (``"py.warnings"``: Python's warnings
    too), which stop propagating until :meth:`release` puts everything back."""

    def __init__(self, logger: RecordTarget, names: Iterable[str]) -> None:
        self.handler = Handler(logger)
        self._loggers: list[tuple[logging.Logger, bool]] = []
        self._captured_warnings = False
        for name in names:
            if name == WARNINGS and not _warnings_captured():
                logging.captureWarnings(True)
                self._captured_warnings = True
            target = logging.getLogger(name)
            self._loggers.append((target, target.propagate))
            target.addHandler(self.handler)
            target.propagate = False

    def release(self) -> None:
        for target, propagate in self._loggers:
            target.removeHandler(self.handler)
            target.propagate = propagate
        self._loggers.clear()
        if self._captured_warnings:
            logging.captureWarnings(False)
            self._captured_warnings = False


def _warnings_captured() -> bool:
    # logging.captureWarnings(True) puts logging's own function in place.
    return getattr(warnings.showwarning, "__module__", None) == logging.__name__
