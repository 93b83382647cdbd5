"""One collector per run: an exclusive lock on ``{log_dir}/.{prefix}.lock``.

Two collectors writing (and, on start, rewinding) the same files would
corrupt them. The lock is an ``flock`` on a dot-file holding the owner's
pid; the kernel releases it when the owner exits, however it exits (and
the sink processes that inherited it with it), so a stale file never
blocks a restart. Like every dot-file of the run it is
private (mode 0600, :mod:`aggregator.dotfiles`).
"""

from __future__ import annotations

import fcntl
import os
import time

from roxxel.pids import pid_alive

from .dotfiles import open_private

__all__ = ["RunLock", "lock_path"]

# How long a lock whose owner has died may still be held (by that owner's
# sink processes, which the kernel ends with it).
DEAD_OWNER_WAIT = 10.0


def _alive(pid_text: str) -> bool:
    try:
        return pid_alive(int(pid_text))
    except ValueError:
        return True  # no pid to tell by: as if alive (refused)


def lock_path(log_dir: str, prefix: str) -> str:
    return os.path.join(log_dir, f".{prefix}.lock")


class RunLock:
    def __init__(self, log_dir: str, prefix: str):
        self.path = lock_path(log_dir, prefix)
        fd = open_private(self.path, os.O_RDWR)
        deadline = time.monotonic() + DEAD_OWNER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if _alive(owner) or time.monotonic() > deadline:
                    os.close(fd)
                    raise OSError(
                        f"another roxxel collector (pid {owner}) is writing "
                        f"{os.path.join(log_dir, prefix)}_*"
                    ) from None
                # Its owner is dead, its sink processes are ending: they hold
                # the lock (aggregator.sinks.process) until they have.
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def fileno(self) -> int:
        """The locked descriptor: a process that inherits it holds the lock too."""
        if self._fd is None:
            raise ValueError("the run's lock was released")
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
