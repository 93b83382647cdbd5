"""The run's dot-files are private: mode 0600.

``.{prefix}_checkpoint.json`` names every sender id of the run (a local user
who read one could write as that sender), ``.{prefix}_quarantine.jsonl``
holds what clients sent, ``.{prefix}.lock`` the owner's pid. They are created
with mode 0600 (a umask can only narrow it), and one found with a wider mode
is narrowed when it is opened. A temporary file of an atomic replace is
created anew (a stale one, left by a crash with whatever mode, removed first).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["PRIVATE_MODE", "narrow", "open_private", "create_anew"]

PRIVATE_MODE = 0o600


def narrow(fd: int) -> None:
    """Give the file open as ``fd`` mode 0600 if its group or others have any access."""
    if os.fstat(fd).st_mode & 0o077:
        # Another user's file (the collector runs as someone else now) is left
        # as it is: refusing to serve over a mode would be worse.
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, PRIVATE_MODE)


def open_private(path: str, flags: int) -> int:
    """``os.open`` of a dot-file: created 0600, narrowed to 0600 if wider; never
    through a symbolic link (its target would get the mode and the writes)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        narrow(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_anew(path: str, mode: int = PRIVATE_MODE) -> int:
    """A new, empty file at ``path`` open for writing, created with ``mode``
    (less the umask); whatever was at ``path`` before is removed first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
