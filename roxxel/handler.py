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

import atexit
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
    Once the Logger is closed the handler counts as absent, as for
    ``logging`` itself: a record that no other handler on its logger's way
    up takes goes to Python's last-resort handler (warnings and above, to
    stderr; nowhere if ``logging.lastResort`` is ``None``) rather than nowhere.

    :meth:`flush` (and so ``logging.shutdown()``, which flushes every
    handler) returns once what was emitted is acknowledged by the collector,
    i.e. in the run's files, or after ``flush_timeout`` seconds. At exit,
    the other handlers are flushed before the Loggers close, so what a
    ``logging.handlers.MemoryHandler`` still holds for this one lands too.
    """

    def __init__(
        self, logger: RecordTarget, level: int = logging.NOTSET, *, flush_timeout: float = 30.0
    ) -> None:
        super().__init__(level)
        self.logger = logger
        self.flush_timeout = flush_timeout
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._emitting = threading.local()
        _flush_handlers_before_loggers_close()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._emitting, "active", False):
            return
        self._emitting.active = True
        try:
            # Python's warnings arrive with a final newline: not a line of its own.
            text = self.format(record).rstrip("\n")
            try:
                sent = self.logger.log_record(record.created, record.levelno, text)
            except RuntimeError:
                # close() on another thread between the Logger's check and its
                # append: asked again, it answers False. Any other error repeats.
                sent = self.logger.log_record(record.created, record.levelno, text)
            if not sent:
                self._as_if_absent(record)
        except Exception:
            self.handleError(record)
        finally:
            self._emitting.active = False

    def flush(self) -> None:
        """Wait until what was emitted is in the run's files (``flush_timeout`` at most)."""
        self.logger.flush(self.flush_timeout)

    def _as_if_absent(self, record: logging.LogRecord) -> None:
        # logging hands a record to its last resort only when it found no
        # handler on the way up; another one there (a root StreamHandler the
        # record propagates to) already printed it, and a second copy on
        # stderr would only repeat it.
        if self._another_on_path(record):
            return
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)

    def _another_on_path(self, record: logging.LogRecord) -> bool:
        name = record.name
        # Never getLogger(name): that would create loggers for made-up records.
        node = (
            logging.root if name == logging.root.name else logging.root.manager.loggerDict.get(name)
        )
        on_path, others = False, False
        while isinstance(node, logging.Logger):
            for handler in node.handlers:
                if handler is self:
                    on_path = True
                else:
                    others = True
            node = node.parent if node.propagate else None
        # Reached from a QueueListener or a MemoryHandler (not from its
        # logger's handlers): nothing else on that path prints the record.
        return on_path and others


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


_flush_registered = False


def _flush_handlers_before_loggers_close() -> None:
    # logging.shutdown() flushes every handler at exit, but atexit runs the
    # last registered first and logging registered before any Logger: by then
    # the Loggers are closed and a MemoryHandler's buffer would reach a closed
    # one. Registered at the first Handler, i.e. after the first Logger's own
    # close at exit, so this runs before it.
    global _flush_registered
    if not _flush_registered:
        _flush_registered = True
        atexit.register(_flush_other_handlers)


def _flush_other_handlers() -> None:
    for ref in reversed(list(getattr(logging, "_handlerList", ()))):
        handler = ref()
        # A Handler's own Logger delivers at close; flushOnClose=False (a
        # MemoryHandler's) means the buffer is not wanted at the end.
        if handler is None or isinstance(handler, Handler):
            continue
        if not getattr(handler, "flushOnClose", True):
            continue
        try:
            handler.flush()
        except Exception:
            pass  # logging.shutdown() flushes again and reports by its own rules


def _warnings_captured() -> bool:
    # logging.captureWarnings(True) puts logging's own function in place.
    return getattr(warnings.showwarning, "__module__", None) == logging.__name__
