"""The system-log line format, shared by the collector and a client's stderr fallback.

``[%Y-%m-%d %H:%M:%S] [LEVEL] message`` in local time (the original
roxxel's format); ``tag`` (``[rank N] ``) goes before the message. A
multi-line message (a traceback) keeps its lines; a continuation line that
starts with ``[`` gets one leading space, so that only real records begin a
line with ``[``; a carriage return ends a line, and other control
characters (the ESC of an ANSI escape, a backspace) are written as ``\\xNN``.

:func:`parse_line` reads a record's head back (``roxxel tail``, tests);
continuation lines do not parse. Pure functions: any thread may call them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ParsedLine", "format_line", "format_lines", "parse_line", "rank_tag"]

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


def rank_tag(rank: int) -> str:
    """The ``tag`` that names a rank: ``[rank N] ``."""
    return f"[rank {rank}] "


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """The head line of a record, in parts."""

    stamp: str  # "2026-11-25 16:42:43", local time as written
    level: str  # the level's name as written: "INFO", "Level 116"
    rank: int | None  # from a leading rank tag; None without one
    text: str  # the message's first line, after the tag

    @property
    def message(self) -> str:
        """What follows the level: the rank tag (if any) and the text."""
        return self.text if self.rank is None else rank_tag(self.rank) + self.text


# The stamp as strftime writes it, a level name as logging gives it (upper
# case, or "Level N" for an unnamed one), then the optional rank tag.
_HEAD = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \[([A-Z]+|Level \d+)\] (?:\[rank (\d+)\] )?(.*)$"
)


def parse_line(line: str) -> ParsedLine | None:
    """The parts of a record's head line (its newline may follow), or ``None``
    for any other line: a continuation line of a multi-line message, a torn one.

    Only a head starts with ``[`` (the formatter indents a continuation line
    that would), so no continuation line written by :func:`format_lines`
    parses. A head parses when its level's name is upper case (the stdlib's
    are) or ``Level N`` (an unnamed level, N >= 0); a name registered with
    ``logging.addLevelName`` in other characters does not.
    Lines are split at ``\\n`` only: the formatter keeps a message's other
    line separators (U+2028, U+0085) as they are. Rank 0 is written untagged,
    so a message that itself starts with ``[rank N] `` reads as rank N's.
    """
    match = _HEAD.match(line)
    if match is None:
        return None
    stamp, level, rank, text = match.groups()
    return ParsedLine(stamp, level, None if rank is None else int(rank), text)
