"""Whether a stream is a terminal: the collector's echo and a Logger's progress
line both draw differently there (shared by client and collector)."""

from __future__ import annotations

from typing import Any

__all__ = ["is_terminal"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` (possibly ``None``, closed, or without a file) is a terminal."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False
