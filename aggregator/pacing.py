"""When a collector commits, and how long it may sleep before its next cycle.

Pure decisions over a clock (injected; no sockets, no threads): the
collector asks before a cycle how long it may sleep and wait, and tells
after it what the cycle took and whether anything was written.

* A commit (every sink synced to disk, the checkpoint replaced: ~0.9 ms of
  CPU on a 2-vCPU VM) happens at most once per ``interval``: at once after
  a quiet spell, else when the interval since the last one is over. Acks
  wait for it. With a commit per batch (every ``flush_interval`` of every
  client) a steady trickle of records would cost more in commits than in
  records. A client that says bye waits for its ack: :meth:`soon` commits at
  the end of that cycle.
* After a trickle -- a cycle of at most :data:`TRICKLE_FRAMES` frames and
  :data:`TRICKLE_RECORDS` records, at least one frame (a training loop's
  batches of a row or two) -- the collector sleeps until a commit may be
  due, then takes all that came meanwhile in one cycle: nothing a trickle
  brings would be acknowledged before that commit anyway, and a wake-up
  costs more than a batch of one row. Many small senders, or big batches,
  are not a trickle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["CommitPacing", "TRICKLE_FRAMES", "TRICKLE_RECORDS"]

TRICKLE_FRAMES = 16
TRICKLE_RECORDS = 64


class CommitPacing:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._due: float | None = None  # when the next commit is, once something waits for one
        self._last = -math.inf  # when the last one was
        self._nap_until: float | None = None  # after a trickle

    def nap(self) -> float | None:
        """How long to sleep before the next cycle's poll (``None``: not at all);
        a wake-up (a stop, a signal) ends the nap early."""
        if self._nap_until is None:
            return None
        return max(0.0, self._nap_until - self._clock())

    def poll_timeout(self, timeout: float) -> float:
        """``timeout``, cut to when a commit is due."""
        if self._due is None:
            return timeout
        return min(timeout, max(0.0, self._due - self._clock()))

    def soon(self) -> None:
        """Commit at the end of this cycle (a closing client waits for its ack)."""
        self._due = self._clock()

    def commit_now(self, dirty: bool) -> bool:
        """After a cycle that left something uncommitted (``dirty``) or not:
        whether to commit now. A True is taken as the commit made."""
        now = self._clock()
        if dirty and self._due is None:
            self._due = max(now, self._last + self.interval)
        if self._due is not None and now >= self._due:
            self._last, self._due = now, None
            return True
        return False

    def cycle_done(self, frames: int, records: int) -> None:
        """What the cycle took: a trickle makes the next one nap until a commit may be due."""
        if not (0 < frames <= TRICKLE_FRAMES and records <= TRICKLE_RECORDS):
            self._nap_until = None
        elif self._due is not None:
            self._nap_until = self._due
        else:
            self._nap_until = self._last + self.interval
