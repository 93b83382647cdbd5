"""Process-wide hooks that drain every live Logger before the process ends.

Installed once, the first time a Logger is created, and chained to whatever
was there before:

* ``SIGTERM`` (how TPU/Kubernetes preemption arrives): a WARNING line on
  every Logger, then what SIGTERM would have done without us. With no
  handler of the program's (the default action), every Logger is closed
  (drained) and the signal re-delivered with the default action, so the
  process ends *by SIGTERM*, as it would have. With the program's own
  handler (a preemption handler that saves a checkpoint and goes on), or
  SIGTERM ignored, every Logger is flushed (drained, left open), then that
  handler runs: a process that goes on keeps logging, and one that ends
  (``sys.exit`` in its handler) closes its Loggers on the way out as usual.
  Installed only from the main thread (Python allows no other), and only
  for a Logger created with ``handle_sigterm=True`` (the default);
* ``sys.excepthook`` / ``threading.excepthook``: the CRITICAL line and the
  traceback of an uncaught exception, from any rank, then the previous hook
  (a ``KeyboardInterrupt``: one WARNING line saying where, see
  ``Logger.log_crash``);
* ``atexit``: every Logger never closed is closed (the registry holds them,
  so one that went out of scope unclosed is drained too);
* ``os.register_at_fork``: a forked child's Loggers get a new sender id and
  fresh sockets (made with the child's first record, so a child that only
  execs starts no thread), and the child's records are kept; in a ``multiprocessing``
  child (which ends with ``os._exit``, skipping ``atexit``) they are closed
  by ``multiprocessing``'s own exit finalizers.

A SIGTERM that arrives while a Logger is closing (a second SIGTERM, or one
during ``close()``) waits for that close to finish before the process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any, Protocol

from .diagnostics import diagnostics

__all__ = ["Drained", "register", "unregister", "closing"]


class Drained(Protocol):
    """What the hooks need of a Logger (this module does not import it)."""

    def close(self) -> None: ...

    def log_signal(self, signum: int, then: str) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def log_crash(
        self,
        exc_type: type[BaseException],
        exc: BaseException | None,
        tb: TracebackType | None,
        *,
        thread: str | None = None,
    ) -> None: ...

    def after_fork(self) -> None: ...


_loggers: set[Drained] = set()  # open Loggers; a closed one unregisters itself
_closing = 0  # Logger.close() calls in progress
_deferred_signal: int | None = None
_lock = threading.Lock()
_installed = False
_previous_sigterm: Any = None
_sigterm_installed = False
_previous_excepthook = sys.excepthook
_previous_threading_excepthook = threading.excepthook


def register(logger: Drained, handle_sigterm: bool) -> None:
    global _installed
    with _lock:
        _loggers.add(logger)
        if not _installed:
            _installed = True
            _install_once()
    if handle_sigterm:
        _install_sigterm()


def unregister(logger: Drained) -> None:
    _loggers.discard(logger)


def _live() -> list[Drained]:
    return list(_loggers)


@contextlib.contextmanager
def closing() -> Iterator[None]:
    """Around a Logger's close(): a SIGTERM meanwhile is handled after it."""
    global _closing, _deferred_signal
    _closing += 1
    try:
        yield
    finally:
        _closing -= 1
        if _closing == 0 and _deferred_signal is not None:
            signum, _deferred_signal = _deferred_signal, None
            _on_sigterm(signum, None)


def _install_once() -> None:
    global _previous_excepthook, _previous_threading_excepthook
    _previous_excepthook = sys.excepthook
    _previous_threading_excepthook = threading.excepthook
    sys.excepthook = _excepthook
    threading.excepthook = _threading_excepthook
    atexit.register(_close_all)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_sigterm() -> None:
    global _previous_sigterm, _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _close_all() -> None:
    _each_logger("close")


def _flush_all() -> None:
    _each_logger("flush")


def _each_logger(method: str) -> None:
    """Call ``method`` of every live Logger: one that fails does not keep the
    others from being closed or drained."""
    for logger in _live():
        try:
            getattr(logger, method)()
        except Exception as exc:
            diagnostics("roxxel.client").error("roxxel: %s() of a Logger failed: %r", method, exc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _deferred_signal
    if _closing:
        _deferred_signal = signum  # handled when that close() returns
        return
    previous = _previous_sigterm
    # Nothing else wanted SIGTERM (the default action, or a handler set from C):
    # the process ends by it, as without us.
    ends = not callable(previous) and previous != signal.SIG_IGN
    if ends:
        then = "before the process ends"
    elif callable(previous):
        then = "(the program's own handler follows)"
    else:
        then = "(SIGTERM is ignored here: the process goes on)"
    for logger in _live():
        logger.log_signal(signum, then)
    if ends:
        _close_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    # The program's own handler decides whether the process ends: everything
    # logged so far is on disk first, and the Loggers stay open for a process
    # that goes on.
    _flush_all()
    if callable(previous):
        previous(signum, frame)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    for logger in _live():
        logger.log_crash(exc_type, exc, tb)
    _previous_excepthook(exc_type, exc, tb)


def _threading_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        name = args.thread.name if args.thread is not None else "?"
        for logger in _live():
            logger.log_crash(args.exc_type, args.exc_value, args.exc_traceback, thread=name)
    _previous_threading_excepthook(args)


def _after_fork_in_child() -> None:
    global _closing, _deferred_signal
    _closing, _deferred_signal = 0, None
    for logger in _live():
        logger.after_fork()
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        # Process._bootstrap clears the finalizers after fork, then runs these.
        multiprocessing.util.register_after_fork(_loggers, _close_at_multiprocessing_exit)


def _close_at_multiprocessing_exit(_: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all, exitpriority=100)
