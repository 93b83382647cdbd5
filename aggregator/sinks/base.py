"""The one interface every sink implements, and the fan-out over several.

Contract: the collector calls ``write_lines`` with the log lines
``[kind, ts, level, text]`` of one applied batch and ``write_metrics`` with
its metrics as :class:`aggregator.metrics_run.MetricsRun`, already
validated, in the sender's order; a sink writes the sort it keeps and
inherits a no-op for the other. ``sync`` before it acknowledges
anything, and ``close`` once at the end. A sink keeps its files open between
calls; ``flush`` must leave everything written so far in the operating
system's hands, ``sync`` on the disk. ``mark`` returns a JSON-able position
(taken right after ``sync``) and ``rewind`` drops everything written after
such a position: the collector's checkpoint stores marks, and a restarted
collector rewinds to them. Calling anything after ``close`` is undefined.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from roxxel.lines import rank_tag

if TYPE_CHECKING:
    from ..metrics_run import MetricsRun

__all__ = ["Origin", "Sink", "FileSink", "FanOut", "truncate_to"]


def truncate_to(path: str, fd: int, size: int) -> None:
    """Cut the file open as ``fd`` back to ``size`` bytes; it must not be shorter."""
    actual = os.fstat(fd).st_size
    if actual < size:
        raise OSError(f"{path} holds {actual} bytes, less than the {size} its checkpoint recorded")
    if actual > size:
        os.ftruncate(fd, size)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a batch came from, as its sender's ``hello`` said."""

    rank: int
    host: str
    pid: int

    @property
    def tag(self) -> str:
        """The prefix of this origin's log lines: none for rank 0."""
        return rank_tag(self.rank) if self.rank else ""


class Sink(abc.ABC):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "write" in cls.__dict__:
            # It would never be called: the sink would silently write nothing.
            raise TypeError(f"{cls.__name__}: a sink implements write_lines and write_metrics")

    def write_lines(self, origin: Origin, records: Sequence[Sequence[Any]]) -> None:  # noqa: B027
        """Take log lines ``[kind, ts, level, text]``; a sink of metrics ignores them."""

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:  # noqa: B027
        """Take runs of metrics rows; a sink of log lines ignores them."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the sink's files."""

    def sync(self) -> None:
        """Flush, then make what was written durable."""
        self.flush()

    def mark(self) -> Any:
        """A position to :meth:`rewind` to (JSON-able); ``None`` when not rewindable."""
        return None

    def rewind(self, mark: Any) -> None:
        """Drop what was written after ``mark``."""
        if mark is not None:
            raise ValueError(f"{type(self).__name__} cannot rewind to {mark!r}")

    def reopen(self) -> None:  # noqa: B027 -- a sink without files has nothing to reopen
        """Reopen the files by name (log rotation moved them away)."""


class FileSink(Sink):
    """A sink that owns one append-only file, ``self._file`` at ``self.path``.

    Its mark is the file's size; rewinding truncates the file to it.
    """

    path: str
    _file: IO[str]

    _synced_size = -1
    # (inode, size) of the file at the last sync: what is on disk for good.
    synced: tuple[int, int] | None = None

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        # An fsync costs a few hundred µs: skip it for a file that has not
        # changed since the last one (a metrics-only batch leaves the log alone).
        st = os.fstat(self._file.fileno())
        if st.st_size != self._synced_size:
            os.fsync(self._file.fileno())
            self._synced_size = st.st_size
        self.synced = (st.st_ino, st.st_size)

    def mark(self) -> Any:
        return {"size": os.fstat(self._file.fileno()).st_size}

    def rewind(self, mark: Any) -> None:
        self._file.flush()
        truncate_to(self.path, self._file.fileno(), mark["size"])
        self._synced_size = -1

    def reopen(self) -> None:
        new = self._open()  # first: if it fails, the old file stays in use
        self._file.close()
        self._file = new
        self._synced_size = -1

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


class FanOut(Sink):
    """Every call goes to every sink, in order; all are flushed/closed even if one fails."""

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)

    def write_lines(self, origin: Origin, records: Sequence[Sequence[Any]]) -> None:
        for sink in self.sinks:
            sink.write_lines(origin, records)

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        for sink in self.sinks:
            sink.write_metrics(origin, runs)

    def flush(self) -> None:
        _each(sink.flush for sink in self.sinks)

    def close(self) -> None:
        _each(sink.close for sink in self.sinks)

    def sync(self) -> None:
        for sink in self.sinks:
            sink.sync()

    def mark(self) -> Any:
        return [sink.mark() for sink in self.sinks]

    def reopen(self) -> None:
        _each(sink.reopen for sink in self.sinks)

    def rewind(self, mark: Any) -> None:
        if not isinstance(mark, list) or len(mark) != len(self.sinks):
            raise ValueError(f"a mark for {len(self.sinks)} sinks expected, got {mark!r}")
        for sink, position in zip(self.sinks, mark, strict=True):
            sink.rewind(position)


def _each(calls: Iterable[Callable[[], None]]) -> None:
    """Make every call, even when one fails; then raise the first failure."""
    error: BaseException | None = None
    for call in calls:
        try:
            call()
        except BaseException as exc:  # the others still get the call
            error = error or exc
    if error is not None:
        raise error
