"""The system-log line format, shared by the collector and a client's stderr fallback.

``[%Y-%m-%d %H:%M:%S] [LEVEL] message`` in local time (the original
roxxel's format); ``tag`` (``[rank N] ``) goes before the message. A
multi-line message (a traceback) keeps its lines; a continuation line that
starts with ``[`` gets one leading space, so that only real records begin a
line with ``[``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["format_line", "format_lines"]

# Level numbers the stdlib names; other levels get "Level N" as logging does.
_LEVEL_NAMES = {n: logging.getLevelName(n) for n in range(0, 60, 10)}


def format_lines(records: Iterable[Sequence[Any]], tag: str = "") -> str:
    """The system-log lines of ``[kind, ts, level, text]`` records, newline-terminated."""
    out = []
    second, stamp = None, ""
    names = _LEVEL_NAMES
    for _, ts, level, text in records:
        # strftime costs more than the rest of the line: once per second.
        if int(ts) != second:
            second = int(ts)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        name = names.get(level)
        if name is None:
            name = logging.getLevelName(level)
        if "\n" in text or "\r" in text:
            text = _continued(text)
        out.append(f"[{stamp}] [{name}] {tag}{text}\n")
    return "".join(out)


def format_line(ts: float, level: int, text: str, tag: str = "") -> str:
    """The system-log line(s) for one record, newline-terminated."""
    return format_lines([(None, ts, level, text)], tag)


def _continued(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join([lines[0]] + [" " + ln if ln.startswith("[") else ln for ln in lines[1:]])
