"""Where a Logger's ``log_*`` calls put their records, and the swaps of it.

``log_message`` and ``log_metrics_summary`` append through two callables kept
on the Logger itself, ``_append_line`` and ``_append_metrics``: a call costs
one attribute lookup and one call, in the normal state the bound
``deque.append`` of the sender's deques. :class:`HotPath` owns them -- it is
the only code that assigns them (the attributes stay on the Logger only so
that a call looks up one of them, not two) -- and swaps them between five
states:

* *sending* (:meth:`HotPath.point_at`): the plain ``deque.append`` of the
  sender's :attr:`~roxxel.client.Sender.lines` and ``metrics``;
* *sender asleep* (:meth:`HotPath.sender_sleeps`, the sender's ``on_idle``
  hook): the next record, from any thread, rings the sender's doorbell, and
  that call swaps the plain appends back; a busy loop keeps the plain appends
  (the sender is never idle then): no cost per call;
* *forked child* (:meth:`HotPath.start_on_first_record`): the first record
  starts the child's own sender;
* *stderr* (:meth:`HotPath.to_stderr`): no collector to send to: lines go to
  this process's stderr, metrics nowhere;
* *closed* (:meth:`HotPath.close`): every call raises ``RuntimeError``.

Threading guarantees:

* The swaps between *sending*, *sender asleep* and *closed* are made by
  several threads (the caller's, the sender's, the one that closes) and each
  is made holding one lock, so no thread swaps over another's swap unseen.
  It is an ``RLock``: a signal handler that logs (SIGTERM's, on the main
  thread) may run inside the holder and take it again.
* :meth:`~HotPath.point_at` swaps under the lock too: the sender's thread may
  already ask (:meth:`~HotPath.sender_sleeps`) before the hot path points at
  it; until then, or once pointed elsewhere (closed), it gets no ring and so
  does not sleep. It never points a closed hot path at a sender.
* A ringing call appends its record before the ring, so the woken sender
  finds it; it swaps the plain appends back only if nothing swapped them
  since (a close() or a fork), and never after close(): a closed hot path
  stays closed.
* A forked child gets new locks (:meth:`HotPath.forked`: the parent's sender
  thread may have held them at the fork, and that thread does not exist in
  the child); two threads' first records in the child start one sender.
* The swap to *stderr* is made without the lock: only where no sender thread
  runs (before one has started, or in a forked child).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import schema
from .lines import NamedLevel, format_line, rank_tag

if TYPE_CHECKING:
    from .client import Sender

__all__ = ["Append", "Appends", "HotPath"]

Append = Callable[[tuple[Any, ...]], None]


class Appends(Protocol):
    """The owner of a hot path (a Logger): the two callables its ``log_*`` calls call."""

    _append_line: Append
    _append_metrics: Append


class HotPath:
    """Swaps the appends of ``owner``; ``rank`` tags the lines it writes to
    stderr, ``log`` says why it does."""

    def __init__(self, owner: Appends, rank: int, log: logging.Logger) -> None:
        self._owner = owner
        self._tag = rank_tag(rank)
        self._log = log
        # The sender the appends go to (None: stderr, or a forked child's not started yet).
        self.sender: Sender | None = None
        self._closed = False
        # Held while the hot path's appends are swapped, by any thread; an
        # RLock: a signal handler that logs may run inside the holder.
        self._lock = threading.RLock()
        # A forked child's: starts its sender (see start_on_first_record).
        self._start: Callable[[], None] | None = None
        self._child_start = threading.Lock()

    def point_at(self, sender: Sender) -> bool:
        """Point the hot path at ``sender``'s deques; False (and nothing
        changes) once it is closed: a forked child's first record may start a
        sender while another thread closes the Logger."""
        owner = self._owner
        with self._lock:  # the sender's thread may already ask (sender_sleeps)
            if self._closed:
                return False
            self.sender = sender
            owner._append_line = sender.lines.append
            owner._append_metrics = sender.metrics.append
            return True

    def sender_sleeps(self, sender: Sender) -> bool:
        """Called on the sender's thread when it is idle: whether the next
        record rings for it (then it may sleep until one does). A busy loop
        keeps the plain appends (the sender is never idle then): no cost per call."""
        owner = self._owner
        with self._lock:
            # Not yet pointed at this sender (its thread runs before point_at
            # is done), or pointed elsewhere since (closed): no ring, no sleep.
            line = getattr(owner, "_append_line", None)
            metrics = getattr(owner, "_append_metrics", None)
            if line == sender.lines.append and metrics == sender.metrics.append:
                owner._append_line = self._line_wakes_sender
                owner._append_metrics = self._metrics_wakes_sender
                return True
            return line == self._line_wakes_sender and metrics == self._metrics_wakes_sender

    def _line_wakes_sender(self, record: tuple[Any, ...]) -> None:
        sender = self.sender
        sender.lines.append(record)  # before the ring: the woken sender finds it
        self._sender_woken(sender)

    def _metrics_wakes_sender(self, record: tuple[Any, ...]) -> None:
        sender = self.sender
        sender.metrics.append(record)
        self._sender_woken(sender)

    def _sender_woken(self, sender: Sender) -> None:
        owner = self._owner
        with self._lock:  # not over a close() or a fork that swapped them since
            if not self._closed and owner._append_line == self._line_wakes_sender:
                owner._append_line = sender.lines.append
                owner._append_metrics = sender.metrics.append
        sender.ring()

    def forked(self) -> None:
        """In a forked child: the parent's sender is not its own, and the
        parent's sender thread, which does not exist here, may have held the
        locks at the fork: new ones."""
        self.sender = None
        self._lock = threading.RLock()
        self._child_start = threading.Lock()

    def start_on_first_record(self, start: Callable[[], None]) -> None:
        """In a forked child (after :meth:`forked`): no sender until its first
        record, which calls ``start`` (that points the hot path again, at a
        new sender or stderr)."""
        self._start = start
        self._owner._append_line = self._first_line_in_child
        self._owner._append_metrics = self._first_metrics_in_child

    def _first_line_in_child(self, record: tuple[Any, ...]) -> None:
        self._start_in_child()
        self._owner._append_line(record)

    def _first_metrics_in_child(self, record: tuple[Any, ...]) -> None:
        self._start_in_child()
        self._owner._append_metrics(record)

    def _start_in_child(self) -> None:
        with self._child_start:  # two threads' first records make one sender
            if self._owner._append_line == self._first_line_in_child:
                self._start()

    def to_stderr(self, why: str) -> None:
        """No collector to send to: lines go to this process's stderr, metrics nowhere."""
        self._log.warning("roxxel: %s; its warnings go to stderr", why)
        self.sender = None
        self._owner._append_line = self._owner._append_metrics = self._to_stderr

    def _to_stderr(self, record: tuple[Any, ...]) -> None:
        if record[0] == schema.RECORD_LOG:
            _, ts, level, text = record[:4]
            if len(record) == 5:
                level = NamedLevel(level, record[4])
            sys.stderr.write(format_line(ts, level, text, self._tag))

    def close(self) -> None:
        """Every call from now on reaches :func:`_closed` and raises; nothing swaps back."""
        with self._lock:
            self._closed = True
            self._owner._append_line = self._owner._append_metrics = _closed


def _closed(record: tuple[Any, ...]) -> None:
    raise RuntimeError("this roxxel Logger is closed")
