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
such a position. The collector's checkpoint stores what ``checkpoint_mark``
returns (a mark that also names the file it is a position in), and a
restarted collector calls ``resume`` with it: it rewinds there, or starts a
file anew where the one a mark names was replaced (:meth:`FileSink.resume`).
Calling anything after ``close`` is undefined.
"""

from __future__ import annotations

import abc
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from roxxel.lines import rank_tag

if TYPE_CHECKING:
    from ..metrics_run import MetricsRun

__all__ = ["Origin", "Sink", "FileSink", "FanOut", "truncate_to", "call_each"]

# How many bytes before a mark its checksum covers: enough that a file which
# only got the old file's inode number (freed and used again) never passes for it.
END_BYTES = 64


def truncate_to(path: str, fd: int, size: int) -> None:
    """Cut the file open as ``fd`` back to ``size`` bytes; it must not be shorter."""
    actual = os.fstat(fd).st_size
    if actual < size:
        raise OSError(f"{path} holds {actual} bytes, less than the {size} its checkpoint recorded")
    if actual > size:
        os.ftruncate(fd, size)


def end_crc32(fd: int, size: int) -> int:
    """The CRC-32 of the :data:`END_BYTES` bytes before ``size`` of the file
    open for reading as ``fd`` (fewer at its start)."""
    start = max(0, size - END_BYTES)
    return zlib.crc32(os.pread(fd, size - start, start))


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

    @property
    def name(self) -> str:
        """What the sink is, as its checkpoint mark is filed under (its class's name)."""
        return type(self).__name__

    @abc.abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the sink's files."""

    def begin_sync(self) -> None:  # noqa: B027 -- only a sink in another process starts early
        """Start what :meth:`sync` finishes, so that sinks in other processes sync together."""

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

    def checkpoint_mark(self) -> Any:
        """:meth:`mark` as a checkpoint stores it, for :meth:`resume`."""
        return self.mark()

    def resume(self, mark: Any) -> list[str]:
        """After a restart: rewind to a checkpoint's mark. Returns what to tell
        the operator about it (nothing when it only rewound)."""
        self.rewind(mark)
        return []

    def reopen(self) -> None:  # noqa: B027 -- a sink without files has nothing to reopen
        """Reopen the files by name (log rotation moved them away)."""


class FileSink(Sink):
    """A sink that owns one append-only file, ``self._file`` at ``self.path``.

    Its mark is the file's size; rewinding truncates the file to it.
    """

    path: str
    _file: IO[str]

    _synced_size = -1
    _unended = False  # see _note_last_line
    # (inode, size) of the file at the last sync: what is on disk for good.
    synced: tuple[int, int] | None = None

    def holds_path(self) -> bool:
        """Whether :attr:`path` still names the file this sink writes (not after a
        rename rotation before :meth:`reopen`)."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        open_file = os.fstat(self._file.fileno())
        return (at_path.st_dev, at_path.st_ino) == (open_file.st_dev, open_file.st_ino)

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
        self._note_last_line()

    def reopen(self) -> None:
        new = self._open()  # first: if it fails, the old file stays in use
        self._file.close()
        self._file = new
        self._synced_size = -1
        self._note_last_line()

    def _note_last_line(self) -> None:
        """Whether the file's last line has no line end (a file written by
        hand, or cut short), read when the file is opened or rewound: the next
        write ends it first (:meth:`_end_last_line`), or what is appended
        would run on from it (CSV rows ``0,1,22`` and ``1,2,3`` read as
        ``0,1,221,2,3``; two JSONL lines as one, which is no JSON). Nothing is
        written before then: a file the checkpoint then refuses stays as found."""
        self._file.flush()
        size = os.fstat(self._file.fileno()).st_size
        self._unended = False
        if size:
            fd = self._reader()
            if fd is not None:  # without /proc: not known, taken as ended
                try:
                    self._unended = os.pread(fd, 1, size - 1) != b"\n"
                finally:
                    os.close(fd)

    def _end_last_line(self) -> None:
        if self._unended:
            self._file.write("\n")
            self._unended = False

    def checkpoint_mark(self) -> Any:
        """The mark with the file it is a position in: its inode, and the CRC-32
        of its last bytes before the mark (``None`` where they cannot be read)."""
        mark = self.mark()
        inode = os.fstat(self._file.fileno()).st_ino
        return {**mark, "inode": inode, "crc32": self._end_crc32(mark["size"])}

    def resume(self, mark: Any) -> list[str]:
        """Rewind to the checkpoint's ``mark``; or, if the file at :attr:`path`
        is not the one it names, start it anew.

        The same file (or a checkpoint of an older roxxel, which does not say)
        is rewound; shorter than the mark, it was cut behind the collector's
        back and acknowledged records are gone: refused (``OSError``). Another
        file is what a rename rotation or moving the files away while the
        collector was stopped leaves (see :meth:`_resume_replaced`).
        """
        inode = mark.get("inode")
        st = os.fstat(self._file.fileno())
        if inode is not None and st.st_ino != inode:
            return self._resume_replaced(mark, st.st_size)
        if inode is not None and st.st_size < mark["size"]:
            raise OSError(
                f"{self.path} holds {st.st_size} bytes, less than the {mark['size']} its "
                f"checkpoint recorded, and it is the file the checkpoint names (inode {inode}): "
                "it was cut short behind the collector's back (logrotate's copytruncate?) or "
                "damaged, and acknowledged records are gone. Rotate by renaming; to start a "
                "new file here, move this one away"
            )
        self.rewind(mark)
        return []

    def _resume_replaced(self, mark: dict[str, Any], size: int) -> list[str]:
        """The file at :attr:`path` (``size`` bytes) is not the one ``mark`` names.

        Every acknowledged record is in the old file, up to the mark; what
        follows there was never acknowledged and the clients resend it. Found
        in this directory under another name (renamed by log rotation), it is
        cut back to the mark, and this file, which no checkpoint covered,
        starts empty: each record is once in the two. Not found (moved away,
        compressed), an empty file starts here, and the old file's records
        past the mark are also written here. Not found while this file holds
        something: this sink replaced its file itself (the CSV rewrites
        itself with a wider header) or someone put a file here; it is rewound
        to the mark as before, and refused if shorter.
        """
        old = _cut_to_mark(self.path, mark)
        if old is None and size > 0:
            try:
                self.rewind(mark)
            except OSError as exc:
                raise OSError(
                    f"{exc}; it is not the file the checkpoint names (inode {mark['inode']}), "
                    "which is not in its directory either: to start a new file here, move "
                    "this one away"
                ) from None
            return []
        self.rewind({**mark, "size": 0})  # nothing here was acknowledged
        return _replaced_notes(self.path, mark, size, old)

    def _end_crc32(self, size: int) -> int | None:
        fd = self._reader()
        if fd is None:
            return None  # no /proc: a rotated file is then never cut back on restart
        try:
            return end_crc32(fd, size)
        finally:
            os.close(fd)

    def _reader(self) -> int | None:
        """The open file, opened again for reading (``None`` where that cannot
        be done). It is open write-only (append), and opened through /proc, by
        descriptor: its name may be another file's by now, or gone (rotation,
        the directory moved). The caller closes it: a run's descriptors are
        counted (aggregator.runs)."""
        try:
            return os.open(f"/proc/self/fd/{self._file.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


class FanOut(Sink):
    """Every call goes to every sink, in order; all are flushed/closed even if one fails.

    Its mark holds each sink's under the sink's class name, so that a
    collector restarted with fewer or more sinks (``--metrics-files``) still
    resumes each file it writes from its own mark: a sink the checkpoint has
    no mark of was not written by the collector before, and starts as it is.
    """

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)
        names = [sink.name for sink in self.sinks]
        if len(set(names)) != len(names):  # two sinks of one kind: told apart by place
            names = [f"{name}#{i}" for i, name in enumerate(names)]
        self._names = names

    def write_lines(self, origin: Origin, records: Sequence[Sequence[Any]]) -> None:
        for sink in self.sinks:
            sink.write_lines(origin, records)

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        for sink in self.sinks:
            sink.write_metrics(origin, runs)

    def flush(self) -> None:
        call_each(sink.flush for sink in self.sinks)

    def close(self) -> None:
        call_each(sink.close for sink in self.sinks)

    def begin_sync(self) -> None:
        for sink in self.sinks:
            sink.begin_sync()

    def sync(self) -> None:
        self.begin_sync()
        for sink in self.sinks:
            sink.sync()

    def mark(self) -> Any:
        return {name: sink.mark() for name, sink in zip(self._names, self.sinks, strict=True)}

    def checkpoint_mark(self) -> Any:
        return {
            name: sink.checkpoint_mark() for name, sink in zip(self._names, self.sinks, strict=True)
        }

    def reopen(self) -> None:
        call_each(sink.reopen for sink in self.sinks)

    def rewind(self, mark: Any) -> None:
        for sink, position in self._pairs(mark):
            sink.rewind(position)

    def resume(self, mark: Any) -> list[str]:
        return [note for sink, position in self._pairs(mark) for note in sink.resume(position)]

    def _pairs(self, mark: Any) -> list[tuple[Sink, Any]]:
        if isinstance(mark, list) and len(mark) == len(self.sinks):
            return list(zip(self.sinks, mark, strict=True))  # an older roxxel's: by place
        if not isinstance(mark, dict):
            raise ValueError(f"a mark for {len(self.sinks)} sinks expected, got {mark!r}")
        return [
            (sink, mark[name])
            for name, sink in zip(self._names, self.sinks, strict=True)
            if name in mark
        ]


def _replaced_notes(
    path: str, mark: dict[str, Any], size: int, old: tuple[str, int] | None
) -> list[str]:
    """What to tell of the file at ``path`` started anew (``size`` bytes dropped)
    in place of the one ``mark`` names, found and cut back as ``old``."""
    dropped = f", dropping the {size} byte(s) it held that no checkpoint covered" if size else ""
    if old is None and mark["size"] == 0:  # the old file held nothing acknowledged
        return [f"{path} is a new file{dropped}"] if size else []
    if old is None:
        return [
            f"{path} is a new file{dropped} (the one the last checkpoint names, inode "
            f"{mark['inode']}, is no longer in its directory: moved away?); records that "
            f"file holds past byte {mark['size']} were never acknowledged and are written "
            "again here"
        ]
    name, cut = old
    tail = (
        f"cut back to the checkpoint, dropping {cut} byte(s) never acknowledged, which the "
        "clients resend"
        if cut
        else "holds nothing past the checkpoint"
    )
    return [
        f"{path} is a new file{dropped}; the one the last checkpoint names was renamed to "
        f"{name} (log rotation) and {tail}"
    ]


def _cut_to_mark(path: str, mark: dict[str, Any]) -> tuple[str, int] | None:
    """Find the file ``mark`` names in ``path``'s directory under another name
    and cut it back to the mark: its name and the bytes cut; ``None`` if not there.

    It must be that file: a regular file with its inode, at least as long,
    with the same last bytes before the mark (an inode number is used again
    once its file is deleted: the bytes tell a newcomer from the old file).
    """
    inode, size, crc = mark["inode"], mark["size"], mark.get("crc32")
    if crc is None or size == 0:
        return None  # cannot be told apart (or nothing acknowledged was in it)
    directory, name = os.path.split(path)
    try:
        with os.scandir(directory or ".") as entries:
            found = [e.path for e in entries if e.inode() == inode and e.name != name]
    except OSError:
        return None  # an unreadable directory: as if moved away
    for candidate in found:
        try:
            fd = os.open(candidate, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (
                stat.S_ISREG(st.st_mode)
                and st.st_ino == inode
                and st.st_size >= size
                and end_crc32(fd, size) == crc
            ):
                os.ftruncate(fd, size)
                os.fsync(fd)
                return candidate, st.st_size - size
        finally:
            os.close(fd)
    return None


def call_each(calls: Iterable[Callable[[], None]]) -> None:
    """Make every call, even when one fails; then raise the first failure."""
    error: BaseException | None = None
    for call in calls:
        try:
            call()
        except BaseException as exc:  # the others still get the call
            error = error or exc
    if error is not None:
        raise error
