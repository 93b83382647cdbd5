"""The system-log line format, shared by the collector and a client's stderr fallback.

``[%Y-%m-%d %H:%M:%S] [LEVEL] message`` in local time (the original
roxxel's format); ``tag`` (``[rank N] ``) goes before the message. A
multi-line message (a traceback) keeps its lines; a continuation line that
starts with ``[`` gets one leading space, so that only real records begin a
line with ``[``; a carriage return ends a line, and other control
characters (the ESC of an ANSI escape, a backspace) are written as ``\\xNN``.
A time out of range (:func:`roxxel.schema.in_time_range`: not finite,
before 1970, more than a day ahead) is written as the time of writing, and
the text starts ``(time out of range: TS)`` with the time as sent
(:func:`within_time`).

:func:`parse_line` reads a record's head back (``roxxel tail``, tests);
continuation lines do not parse. :func:`printable` makes text from a peer
safe to print on one line of a terminal. Pure functions: any thread may
call them.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .schema import in_time_range

__all__ = [
    "ParsedLine",
    "format_line",
    "format_lines",
    "NamedLevel",
    "escape_controls",
    "parse_line",
    "printable",
    "rank_tag",
    "within_time",
]


class NamedLevel(int):
    """A level number with the name the sender's ``logging`` gives it (a
    level registered there with ``addLevelName``)."""

    name: str

    def __new__(cls, number: int, name: str) -> NamedLevel:
        level = super().__new__(cls, number)
        # A "]" would end the line's [LEVEL] early for whoever parses it (roxxel tail).
        level.name = name.replace("]", "\\x5d")
        return level


# Level numbers the stdlib names; other levels get "Level N" as logging does.
_LEVEL_NAMES = {n: logging.getLevelName(n) for n in range(0, 60, 10)}


def format_lines(records: Iterable[Sequence[Any]], tag: str = "") -> str:
    """The system-log lines of ``[kind, ts, level, text]`` records, newline-terminated."""
    out = []
    second, stamp = math.nan, ""
    names = _LEVEL_NAMES
    for _, ts, level, text in records:
        # strftime costs more than the rest of the line: once per second,
        # when the time's range is checked too (NaN leaves the current second).
        if not second <= ts < second + 1:
            ts, text = within_time(ts, text)
            second = ts // 1
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        name = names.get(level)
        if name is None:
            # The sender's name for it, a name registered in this process, or "Level N".
            name = printable(getattr(level, "name", None) or logging.getLevelName(level))
        if not text.isprintable():  # one C-level scan for the rare text that needs work
            text = _visible(text)
        out.append(f"[{stamp}] [{name}] {tag}{text}\n")
    return "".join(out)


def format_line(ts: float, level: int, text: str, tag: str = "") -> str:
    """The system-log line(s) for one record, newline-terminated."""
    return format_lines([(None, ts, level, text)], tag)


def within_time(ts: float, text: str, now: float | None = None) -> tuple[float, str]:
    """A record's time and text as written: ``(ts, text)`` when ``ts`` is in
    range (:func:`roxxel.schema.in_time_range`) of ``now`` (default: this
    clock's), else ``now`` and the text marked with the time as sent."""
    if now is None:
        now = time.time()
    if in_time_range(ts, now):
        return ts, text
    return now, f"(time out of range: {ts!r}) {text}"


# Control characters other than tab and newline could rewrite what a
# terminal shows (ANSI escapes, backspace, carriage return), and so could
# the C1 controls (U+0080 to U+009F), which some terminals run (U+009B is
# CSI, as ESC [ is): written as \xNN. U+0085 (a C1 control), U+2028 and
# U+2029 end a line for str.splitlines() and some editors: a message holding
# one could forge a record for such a reader; as \xNN and \uNNNN.
_CONTROLS = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)},
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
# On one line, a newline too.
_ONE_LINE = {**_CONTROLS, 0x0A: "\\x0a"}


def escape_controls(text: str) -> str:
    """Line ends as ``\\n`` (a carriage return too), other control characters
    but a tab as ``\\xNN``: what the system log and the CSV's text cells hold."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)


def printable(text: str) -> str:
    """``text`` for one line of a terminal: every control character but a tab
    (newlines, C1 controls included) as ``\\xNN``. For what a peer supplied
    (a host name, a metric name, a collector's answer)."""
    if text.isprintable():  # one C-level scan for the common text
        return text
    return text.translate(_ONE_LINE)


def _visible(text: str) -> str:
    """Line ends kept, a continuation line that starts with ``[`` indented,
    other control characters escaped: the text stays visibly one record."""
    lines = escape_controls(text).split("\n")
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


# A head as format_lines writes it: the stamp as strftime writes it (any
# year: older collectors wrote times out of range as they came), any level
# name (a stdlib one, "Level N" with N < 0 too, or one a thread collector's
# process registered), then the optional rank tag.
_HEAD = re.compile(r"\[(-?\d+-\d\d-\d\d \d\d:\d\d:\d\d)\] \[(.+?)\] (?:\[rank (\d+)\] )?(.*)$")


def parse_line(line: str) -> ParsedLine | None:
    """The parts of a record's head line (its newline may follow), or ``None``
    for any other line: a continuation line of a multi-line message, a torn one.

    Only a head starts with ``[`` (the formatter indents a continuation line
    that would), so no continuation line written by :func:`format_lines`
    parses, and every head it writes does, whatever its level's name (up to
    the first ``"] "``).
    Lines are split at ``\\n`` only: the formatter keeps a message's other
    line separators (U+2028, U+0085) as they are. Rank 0 is written untagged,
    so a message that itself starts with ``[rank N] `` reads as rank N's.
    """
    match = _HEAD.match(line)
    if match is None:
        return None
    stamp, level, rank, text = match.groups()
    return ParsedLine(stamp, level, None if rank is None else int(rank), text)
