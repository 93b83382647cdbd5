"""``roxxel tail``: follow a run's system log, from its file or from its collector.

A record is a line ``[time] [LEVEL] [rank N] text`` and the lines after it
that do not start a record (a traceback); the filters (a lowest level, a
rank) keep or drop whole records. A level is ``Level N`` or a name this
process knows (the stdlib's); a record whose level it cannot rank (a name
only the writer's process registered) passes any ``--level``: shown rather
than hidden. Lines before the first record head belong to a record whose
head is not in view: shown only when nothing is filtered. Control
characters in a line (a hostile collector's answer, an old file) are
printed as ``\\xNN``. Colour marks the level when the output is a terminal
(``--color auto``, and ``NO_COLOR`` unset).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TextIO

from .lines import parse_line, printable
from .query import CollectorQuery

__all__ = ["RecordFilter", "follow_collector", "follow_file", "level_of"]

_COLOURS = {
    "DEBUG": "\033[2m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}
_RESET = "\033[0m"
_FIRST_BYTES = 256 * 1024  # where the last lines are looked for
_POLL = 0.25  # seconds between looks for new text
_ANSWER_TIMEOUT = 10.0


class RecordFilter:
    """Whole records at or above ``level`` (``NOTSET``: any) and (if given) from ``rank``,
    coloured or not."""

    def __init__(self, level: int = logging.NOTSET, rank: int | None = None, colour: bool = False):
        self.level = level
        self.rank = rank
        self.colour = colour
        # NOTSET (the default) shows every level, negative ones too.
        self._every_level = level <= logging.NOTSET
        # Of the record the next continuation lines belong to: before the first
        # head, one that cannot be judged.
        self._keep = self._every_level and rank is None
        self._colour = ""

    def lines(self, text: str) -> list[str]:
        """The lines of ``text`` (whole lines) that pass, ready to print."""
        kept = []
        # At "\n" only, as the collector writes them: a message's own U+2028 or
        # U+0085 must not start a line that could pass for a record.
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            head = parse_line(line)
            if head is not None:
                level = level_of(head.level)
                # An untagged record is rank 0's.
                self._keep = (self._every_level or level is None or level >= self.level) and (
                    self.rank is None or (head.rank or 0) == self.rank
                )
                self._colour = _COLOURS.get(head.level, "") if self.colour else ""
            if self._keep:
                line = printable(line)
                kept.append(f"{self._colour}{line}{_RESET}" if self._colour else line)
        return kept


def level_of(name: str) -> int | None:
    """The number of a level as the system log names it (``"WARNING"``,
    ``"Level 25"``, ``"Level -5"``); ``None`` for a name this process does not know."""
    number = logging.getLevelName(name)
    if isinstance(number, int):
        return number
    if name.startswith("Level "):
        try:
            return int(name.removeprefix("Level "))
        except ValueError:
            return None
    return None


def follow_file(path: str, out: TextIO, records: RecordFilter, last: int, follow: bool) -> None:
    """Print the last ``last`` passing lines of ``path``, then (``follow``) what is
    appended, through rotation (a new file under the name) and truncation."""
    log = _open_waiting(path, follow)
    size = os.fstat(log.fileno()).st_size
    start = max(0, size - _FIRST_BYTES)
    log.seek(start)
    if start:
        log.readline()  # a partial line
    _print(out, records.lines(_whole_lines(log))[-last:] if last else [])
    while follow:
        chunk = _whole_lines(log)
        if chunk:
            _print(out, records.lines(chunk))
            continue
        try:
            moved = os.stat(path).st_ino != os.fstat(log.fileno()).st_ino
        except FileNotFoundError:
            moved = False  # rotated away, the new one not there yet
        if moved or os.fstat(log.fileno()).st_size < log.tell():
            _print(out, records.lines(_whole_lines(log)))
            log.close()
            log = _open_waiting(path, follow)
            continue
        time.sleep(_POLL)
    log.close()


def follow_collector(
    query: CollectorQuery,
    out: TextIO,
    records: RecordFilter,
    last: int,
    follow: bool,
    run: str | None = None,
) -> None:
    """The same through the collector's ``tail`` query (on another host); ``run``
    names one of the runs a collector of several serves."""
    which = {} if run is None else {"run": run}
    answer = query.ask({"what": "tail", "offset": None, **which}, _ANSWER_TIMEOUT)
    _print(out, records.lines(answer["text"])[-last:] if last else [])
    while follow:
        where = {"offset": answer["offset"], "file": answer["file"]}
        answer = query.ask({"what": "tail", **where, **which}, _ANSWER_TIMEOUT)
        _print(out, records.lines(answer["text"]))
        if not answer["text"]:
            time.sleep(_POLL)


def _open_waiting(path: str, follow: bool) -> TextIO:
    """``path`` opened; when following, waited for while it does not exist (rotation)."""
    while True:
        try:
            return open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
        except FileNotFoundError:
            if not follow:
                raise
        time.sleep(_POLL)


def _whole_lines(log: TextIO) -> str:
    """What the file holds past the position, up to its last newline."""
    start = log.tell()
    text = log.read()
    cut = text.rfind("\n") + 1
    if cut < len(text):
        log.seek(start)
        text = log.read(cut)  # a line being written stays for the next read
    return text


def _print(out: TextIO, lines: list[str]) -> None:
    if lines:
        out.write("\n".join(lines) + "\n")
        out.flush()
