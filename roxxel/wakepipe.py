"""A wake-up pipe: how one thread ends another's wait at once. Shared by the
client's sender (woken by the hot path) and the collector (woken by its
signal handlers)."""

from __future__ import annotations

import contextlib
import math
import os
import select
import weakref

__all__ = ["WakePipe"]


class WakePipe:
    """Ends a wait at once: :meth:`wake` writes a byte to a pipe whose read end
    (``fd``) the waiting thread polls. ``os.write`` is safe from a signal
    handler and from any thread, unlike a ZeroMQ socket, or a
    ``threading.Event`` (its ``set`` takes a lock that its ``wait`` may hold).

    Its descriptors are closed by :meth:`close` or with the object: one that
    other threads may still wake is left to the latter, so that a late
    wake-up never writes into a descriptor number that was reused.
    """

    def __init__(self) -> None:
        self.fd, write = os.pipe()
        os.set_blocking(write, False)
        self._write = write
        self._close = weakref.finalize(self, _close_both, self.fd, write)
        # Not at exit: an atexit hook that drains a Logger may still wake it
        # then (the process's end closes the descriptors anyway).
        self._close.atexit = False

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending
            os.write(self._write, b"\0")

    def clear(self) -> None:
        """Take the wake-ups in (``fd`` polled readable)."""
        os.read(self.fd, 4096)

    def wait(self, timeout: float) -> None:
        """Until :meth:`wake` or ``timeout`` s."""
        # poll(), not select(): a descriptor past 1023 is fine.
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if poller.poll(math.ceil(max(0.0, timeout) * 1000)):
            self.clear()

    def close(self) -> None:
        self._close()


def _close_both(read: int, write: int) -> None:
    os.close(read)
    os.close(write)
