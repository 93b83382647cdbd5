"""``--pidfile``: the daemon's pid in a file while it runs, removed when it ends."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["pid_written"]


@contextlib.contextmanager
def pid_written(path: str | None) -> Iterator[None]:
    """Write this process's pid to ``path`` (nothing when ``None``), remove it after."""
    if path is None:
        yield
        return
    with open(path, "w") as pidfile:
        pidfile.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
