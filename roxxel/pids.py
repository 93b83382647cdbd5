"""Whether a process is still running, told by its pid (a zombie has ended)."""

from __future__ import annotations

import os
import sys

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: there, and not an ended process its parent
    has not reaped yet (a zombie still takes signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: there all the same
        pass
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                return f.read().rpartition(")")[2].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True
