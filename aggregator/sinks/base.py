"""The one interface every sink implements, and the fan-out over several.

Contract: the collector calls ``write`` with the records of one applied batch
(already validated, in the sender's order), ``flush`` before it acknowledges
anything, and ``close`` once at the end. A sink keeps its files open between
calls; ``flush`` must leave everything written so far in the operating
system's hands. Calling anything after ``close`` is undefined.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

__all__ = ["Origin", "Sink", "FileSink", "FanOut"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a batch came from, as its sender's ``hello`` said."""

    rank: int
    host: str
    pid: int

    @property
    def tag(self) -> str:
        """The prefix of this origin's log lines: none for rank 0."""
        return f"[rank {self.rank}] " if self.rank else ""


class Sink(abc.ABC):
    @abc.abstractmethod
    def write(self, origin: Origin, records: Sequence[list]) -> None:
        """Take the records of one batch; a sink ignores kinds it does not write."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the sink's files."""


class FileSink(Sink):
    """A sink that owns one open file, ``self._file``."""

    _file: IO[str]

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


class FanOut(Sink):
    """Every call goes to every sink, in order; all are flushed/closed even if one fails."""

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        for sink in self.sinks:
            sink.write(origin, records)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")

    def _each(self, method: str) -> None:
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                getattr(sink, method)()
            except BaseException as exc:  # the others still get the call
                error = error or exc
        if error is not None:
            raise error
