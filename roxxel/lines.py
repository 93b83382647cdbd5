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

__all__ = ["format_line"]

_last: tuple[int, str] = (-1, "")


def _stamp(ts: float) -> str:
    # strftime costs more than the rest of the line: reuse it within a second.
    # One tuple, replaced whole, so threads never see a second with another's text.
    global _last
    second, stamp = _last
    if int(ts) != second:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        _last = (int(ts), stamp)
    return stamp


def format_line(ts: float, level: int, text: str, tag: str = "") -> str:
    """The system-log line(s) for one record, newline-terminated."""
    if "\n" in text or "\r" in text:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        text = "\n".join([lines[0]] + [" " + ln if ln.startswith("[") else ln for ln in lines[1:]])
    return f"[{_stamp(ts)}] [{logging.getLevelName(level)}] {tag}{text}\n"
