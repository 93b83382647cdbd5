"""The system-log line format, shared by the collector and a client's stderr fallback.

``[%Y-%m-%d %H:%M:%S] [LEVEL] message`` in local time (the original
roxxel's format); ``tag`` (``[rank N] ``) goes before the message. A
multi-line message (a traceback) keeps its lines; a continuation line that
starts with ``[`` gets one leading space, so that only real records begin a
line with ``[``; a carriage return ends a line, and other control
characters (the ESC of an ANSI escape, a backspace) are written as ``\\xNN``.
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
        if not text.isprintable():  # one C-level scan for the rare text that needs work
            text = _visible(text)
        out.append(f"[{stamp}] [{name}] {tag}{text}\n")
    return "".join(out)


def format_line(ts: float, level: int, text: str, tag: str = "") -> str:
    """The system-log line(s) for one record, newline-terminated."""
    return format_lines([(None, ts, level, text)], tag)


# Control characters other than tab and newline could rewrite what a
# terminal shows (ANSI escapes, backspace, carriage return): written as \xNN.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09, 0x0A)}


def _visible(text: str) -> str:
    """Line ends kept, a continuation line that starts with ``[`` indented,
    other control characters escaped: the text stays visibly one record."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS).split("\n")
    return "\n".join([lines[0]] + [" " + ln if ln.startswith("[") else ln for ln in lines[1:]])
