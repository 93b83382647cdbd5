"""``{prefix}_tensorboard/rank{N}/events.out.tfevents.*``: a run's metrics for TensorBoard.

``tensorboard --logdir LOGDIR`` then shows each rank that sent metrics rows
as a run of its own, ``{prefix}_tensorboard/rank0`` (rank 0's rows; rows
logged with ``all_ranks=True`` come from every rank, each into its own
directory, as :attr:`aggregator.sinks.base.Origin.rank` says), while the
collector writes.

* Each metrics row is one event at the row's step and time (the time it was
  written with: the collector's where the sender's was out of range),
  holding every number of the row as a scalar named by its key; what becomes
  of each kind of value (bools 1/0, NaN kept, strings and empty cells left
  out, float32 precision) is in :mod:`aggregator.sinks.tfrecord`.
* Log lines are not written. TensorBoard's text dashboard keeps 10 samples
  per tag by default (``--samples_per_plugin``) and log lines have no step:
  a log there would show ten lines picked at random. The system log is
  where they are (``roxxel tail``).
* A rank's events go to one file that this sink starts on its first row of
  that rank: one per rank and collector start (and after each rewind that
  cut it), named as TensorBoard's own writer names them
  (``events.out.tfevents.{seconds}.{host}.roxxel``, ``seconds`` past any
  older file's, since TensorBoard reads a directory's files in the order of
  their names). An older file is never written again; a file of another
  writer in these directories is never touched.

Mark and rewind, as :class:`aggregator.sinks.base.Sink` says: the mark is,
for each rank directory, its latest file's name and size (all older ones
are finished). Rewinding cuts each such file back to its size and deletes
this sink's files made after the mark (newer names, or in rank directories
the mark does not have): they hold nothing acknowledged. The next row of a
rank whose file was cut starts a new file: a TensorBoard that had read past
the cut (it reads while the collector writes) then goes on with the new
file, and keeps showing the rows it read past the cut, which the clients
resend with the same steps and values, until it restarts.

Unlike the text files, a cut or missing file does not stop the collector
from starting (:meth:`TensorBoardSink.resume` tells what happened): these
files only show what the run's other files hold.

Files stay open up to ``max_open`` at once (the least recently written is
closed; :meth:`TensorBoardSink.sync` reopens one to make it durable), since
a run of many ranks would otherwise hold a descriptor per rank.
:meth:`TensorBoardSink.reopen` does nothing: these files are not rotated.

Threading: used only by the collector's thread. Usage::

    sink = TensorBoardSink(os.path.join(log_dir, f"{prefix}_tensorboard"))
    sink.write_metrics(origin, runs)
    sink.sync()
    mark = sink.checkpoint_mark()  # JSON-able; resume(mark) after a restart
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..checkpoint import fsync_dir
from ..metrics_run import MetricsRun
from . import tfrecord
from .base import Origin, Sink, call_each

__all__ = ["TensorBoardSink", "MAX_OPEN"]

MAX_OPEN = 4  # rank files open at once, by default

_RANK_DIR = re.compile(r"rank(0|-?[1-9][0-9]{0,18})")
# Ours: "roxxel" ends the name where TensorFlow's writer puts a pid and a counter.
_OURS = re.compile(r"events\.out\.tfevents\.([0-9]{10,20})\.[A-Za-z0-9_.-]{0,200}\.roxxel")
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"


@dataclass
class _RankFile:
    """A rank directory's latest file of this sink: its name and size."""

    name: str
    size: int
    appendable: bool  # made by this sink, and not cut since


class TensorBoardSink(Sink):
    """TensorBoard event files of one run's metrics in ``directory``, a
    subdirectory per rank (made when a rank's first row comes)."""

    def __init__(self, directory: str, *, max_open: int = MAX_OPEN) -> None:
        if max_open < 1:
            raise ValueError(f"max_open is at least 1, not {max_open}")
        self.directory = directory
        self._max_open = max_open
        self._tags = tfrecord.TagCache()
        self._files: dict[str, _RankFile] = {}  # by rank directory name
        self._fds: OrderedDict[str, int] = OrderedDict()  # open files, least recent first
        self._unsynced: set[str] = set()  # rank directories written since the last sync
        self._new_dirs: set[str] = set()  # directories whose entries are not yet synced
        self._find_files()

    # -- Writing -------------------------------------------------------------------------

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        data = b"".join([tfrecord.encode_run(run, self._tags) for run in runs])
        if data:
            self._append(f"rank{origin.rank}", data)

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the operating system."""

    def sync(self) -> None:
        for rank in sorted(self._unsynced):
            fd = self._fds.get(rank)
            if fd is not None:
                os.fsync(fd)
                continue
            if rank not in self._files:
                continue  # its file was deleted by a rewind
            try:  # closed since it was written (max_open)
                fd = os.open(self._path(rank), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed behind our back: nothing to keep
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()
        for directory in sorted(self._new_dirs, key=len, reverse=True):  # deepest first
            try:
                fsync_dir(directory)
            except FileNotFoundError:
                pass  # removed behind our back: nothing to keep
        self._new_dirs.clear()

    def close(self) -> None:
        self._close_all()

    def _append(self, rank: str, data: bytes) -> None:
        fd = self._fd(rank)
        state = self._files[rank]
        self._unsynced.add(rank)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            state.size += written  # what is in the file, should the next write fail
            view = view[written:]

    def _fd(self, rank: str) -> int:
        """The open file for ``rank``'s next rows: its file of this sink, or a new one."""
        fd = self._fds.get(rank)
        if fd is not None:
            self._fds.move_to_end(rank)
            return fd
        state = self._files.get(rank)
        if state is not None and state.appendable:
            try:
                fd = os.open(self._path(rank), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                pass  # removed behind our back: a new one
        if fd is None:
            fd = self._new_file(rank)
        self._fds[rank] = fd
        while len(self._fds) > self._max_open:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def _new_file(self, rank: str) -> int:
        """Start ``rank``'s next file, named after every older one, with its header."""
        rank_dir = os.path.join(self.directory, rank)
        for directory in (self.directory, rank_dir):
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
                self._new_dirs.add(os.path.dirname(directory) or ".")
        self._new_dirs.add(rank_dir)
        older = _our_files(rank_dir)
        # After every older file even where this host's clock is behind: in
        # TensorBoard's order (by name: 10 digits until the year 2286) and in
        # that of rewind, which deletes the files made after a mark.
        seconds = max([int(time.time())] + [_seconds(name) + 1 for name in older])
        name = f"events.out.tfevents.{seconds:010d}.{_HOST}.roxxel"
        fd = os.open(
            os.path.join(rank_dir, name),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
            0o644,
        )
        self._files[rank] = _RankFile(name, 0, appendable=True)
        self._fds[rank] = fd  # closed with the others, should the header fail
        self._append(rank, tfrecord.file_header(time.time()))
        return fd

    # -- Marks -------------------------------------------------------------------------

    def mark(self) -> Any:
        """``{"files": {rank directory: [latest file, size]}}``."""
        return {"files": {rank: [f.name, f.size] for rank, f in sorted(self._files.items())}}

    def rewind(self, mark: Any) -> None:
        self._rewind(mark)

    def resume(self, mark: Any) -> list[str]:
        """Rewind to ``mark``; what did not match it (a file missing, or
        shorter than the mark) is told, not refused."""
        return self._rewind(mark)

    def _rewind(self, mark: Any) -> list[str]:
        files = _parse_mark(mark)
        self._close_all()
        notes = []
        ranks = set(files) | set(self._files) | set(self._rank_dirs())
        for rank in sorted(ranks):
            rank_dir = os.path.join(self.directory, rank)
            kept = files.get(rank)
            for name in _our_files(rank_dir):
                if kept is None or _order(name) > _order(kept[0]):
                    os.unlink(os.path.join(rank_dir, name))  # made after the mark
                    self._new_dirs.add(rank_dir)
            if kept is None:
                self._files.pop(rank, None)
                try:
                    os.rmdir(rank_dir)  # made after the mark too, unless it holds others' files
                except OSError:
                    pass
                continue
            name, size = kept
            before = self._files.get(rank)
            # Appended to again only if this sink made it (a file found on
            # start may end in a record cut short) and nothing was cut.
            appendable = before is not None and before.name == name and before.appendable
            state = self._files[rank] = _RankFile(name, size, appendable=False)
            try:
                fd = os.open(os.path.join(rank_dir, name), os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                notes.append(
                    f"{os.path.join(rank_dir, name)} is gone: TensorBoard no longer shows "
                    "the rows it held; rows from here on go to a new file"
                )
                del self._files[rank]
                continue
            try:
                actual = os.fstat(fd).st_size
                if actual < size:
                    notes.append(
                        f"{os.path.join(rank_dir, name)} holds {actual} bytes, less than the "
                        f"{size} its checkpoint recorded: it was cut behind the collector's "
                        "back and TensorBoard no longer shows the rows it lost; rows from "
                        "here on go to a new file"
                    )
                    state.size = actual
                elif actual > size:
                    os.ftruncate(fd, size)
                    # Now: the rank's next rows go to a new file, which the next
                    # sync covers instead of this one.
                    os.fsync(fd)
                else:
                    state.appendable = appendable  # no reader can be past its end
            finally:
                os.close(fd)
        return notes

    # -- Files -------------------------------------------------------------------------

    def _find_files(self) -> None:
        """Each rank directory's latest file of this sink, as it is now."""
        for rank in self._rank_dirs():
            names = _our_files(os.path.join(self.directory, rank))
            if names:
                size = os.stat(os.path.join(self.directory, rank, names[-1])).st_size
                self._files[rank] = _RankFile(names[-1], size, appendable=False)

    def _rank_dirs(self) -> list[str]:
        try:
            with os.scandir(self.directory) as entries:
                return sorted(
                    e.name
                    for e in entries
                    if _RANK_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return []

    def _path(self, rank: str) -> str:
        return os.path.join(self.directory, rank, self._files[rank].name)

    def _close_all(self) -> None:
        fds, self._fds = self._fds, OrderedDict()
        call_each(partial(os.close, fd) for fd in fds.values())  # the others still get closed


def _our_files(rank_dir: str) -> list[str]:
    """This sink's files in ``rank_dir``, oldest first."""
    try:
        names = os.listdir(rank_dir)
    except FileNotFoundError:
        return []
    return sorted((name for name in names if _OURS.fullmatch(name)), key=_order)


def _seconds(name: str) -> int:
    match = _OURS.fullmatch(name)
    return int(match.group(1)) if match else 0


def _order(name: str) -> tuple[int, str]:
    return _seconds(name), name


def _parse_mark(mark: Any) -> dict[str, tuple[str, int]]:
    """A mark's files, checked: it comes from a checkpoint file, and names
    files to cut and delete."""
    files = mark.get("files") if isinstance(mark, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"not a mark of TensorBoardSink: {mark!r}")
    parsed = {}
    for rank, entry in files.items():
        if not (
            isinstance(rank, str)
            and _RANK_DIR.fullmatch(rank)
            and isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and _OURS.fullmatch(entry[0])
            and type(entry[1]) is int
            and entry[1] >= 0
        ):
            raise ValueError(f"not a mark of TensorBoardSink: {rank!r}: {entry!r}")
        parsed[rank] = (entry[0], entry[1])
    return parsed
