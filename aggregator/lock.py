"""One collector per run: an exclusive lock on ``{log_dir}/.{prefix}.lock``.

Two collectors writing (and, on start, rewinding) the same files would
corrupt them. The lock is an ``flock`` on a dot-file holding the owner's
pid; the kernel releases it when the owner exits, however it exits, so a
stale file never blocks a restart. Like every dot-file of the run it is
private (mode 0600, :mod:`aggregator.dotfiles`).
"""

from __future__ import annotations

import fcntl
import os

from .dotfiles import open_private

__all__ = ["RunLock", "lock_path"]


def lock_path(log_dir: str, prefix: str) -> str:
    return os.path.join(log_dir, f".{prefix}.lock")


class RunLock:
    def __init__(self, log_dir: str, prefix: str):
        self.path = lock_path(log_dir, prefix)
        fd = open_private(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OSError(
                f"another roxxel collector (pid {owner}) is writing "
                f"{os.path.join(log_dir, prefix)}_*"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
