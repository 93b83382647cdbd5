"""``{prefix}_system.log``: one line per record (see :mod:`roxxel.lines`), echoed to stdout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, Any, TextIO

from roxxel.lines import format_lines
from roxxel.terminal import is_terminal

from .base import FileSink, Origin

__all__ = ["SystemLogSink"]


class SystemLogSink(FileSink):
    def __init__(self, path: str, echo: TextIO | None = None):
        self.path = path
        self._file = self._open()
        self._note_last_line()
        self._echo = echo
        # On a terminal: clear the line first (a Logger's progress line sits there).
        self._clear = "\r\033[K" if is_terminal(echo) else ""

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def write_lines(self, origin: Origin, records: Sequence[Sequence[Any]]) -> None:
        text = format_lines(records, origin.tag)
        if text:
            self._end_last_line()
            self._file.write(text)
            if self._echo is not None:
                try:
                    self._echo.write(self._clear + text if self._clear else text)
                except (OSError, ValueError):
                    self._echo = None  # a closed stdout must not stop the log file

    def holds_lines(self) -> bool:
        """Whether the file already has lines (an earlier run's, appended to)."""
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size > 0

    def write_unechoed(self, origin: Origin, records: Sequence[Sequence[Any]]) -> None:
        """Lines for the file alone: what the collector notes about a run (its
        start), which stdout, the training script's own, does not show."""
        self._file.write(format_lines(records, origin.tag))

    def flush(self) -> None:
        self._file.flush()
        if self._echo is not None:
            try:
                self._echo.flush()
            except (OSError, ValueError):
                self._echo = None  # a closed stdout must not stop the log file
