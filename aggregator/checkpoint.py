"""The collector's checkpoint: what is committed, written atomically.

``{log_dir}/.{prefix}_checkpoint.json`` holds, as of the last group commit,
every sender's highest written seq (and its hello: rank, host, pid) and each
sink's mark (file sizes). A commit costs what changed, not what is known: it
appends one line to ``.{prefix}_checkpoint.journal`` (the senders that
changed since the commit before, each file's mark) and fsyncs it; once the
journal outgrows the snapshot, the snapshot is replaced whole -- temporary
file, fsync, rename, fsync of the directory -- with a new generation, and
the journal starts over (its lines of an older generation are never read).
A reader sees the snapshot and every complete journal line of its
generation: a line cut short by a crash was never acknowledged, and is
dropped. A collector acknowledges a batch only after the checkpoint that
includes it is on disk; a restarted collector rewinds the files to the
marks before it serves, so a resent batch is written once, never twice. A
file's mark also names the file (its inode, and a checksum of its last bytes
before the mark), so a restart can tell a file rotated away from one cut
short (:meth:`aggregator.sinks.base.FileSink.resume`).

The checkpoint lists the run's sender ids: it is private (mode 0600, see
:mod:`aggregator.dotfiles`), its journal and temporary file too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .dotfiles import PRIVATE_MODE, create_anew, narrow, open_private

__all__ = [
    "Checkpoint",
    "CheckpointFile",
    "checkpoint_path",
    "load_checkpoint",
    "replace_file",
    "fsync_dir",
]

VERSION = 1
# The journal is folded into a new snapshot once it holds more than this
# many times the snapshot's bytes (and at least _MIN_JOURNAL_BYTES).
_JOURNAL_RATIO = 4
_MIN_JOURNAL_BYTES = 1 << 20


@dataclass
class Checkpoint:
    senders: dict[str, dict[str, Any]] = field(default_factory=dict)  # hex id -> state
    marks: Any = None


def checkpoint_path(log_dir: str, prefix: str) -> str:
    return os.path.join(log_dir, f".{prefix}_checkpoint.json")


def load_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint at ``path`` with its journal, or ``None`` if there is none.

    Raises ``ValueError`` naming the file if it exists but is not one.
    """
    loaded = _load(path)
    return None if loaded is None else loaded[0]


def _load(path: str) -> tuple[Checkpoint, int, int] | None:
    """The checkpoint, its generation, and the bytes of its journal that count."""
    try:
        with open(path, encoding="utf-8") as f:
            narrow(f.fileno())  # one written before checkpoints were private
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable checkpoint {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"unreadable checkpoint {path}: not a version {VERSION} checkpoint")
    senders = data.get("senders")
    generation = data.get("generation", 0)
    if not isinstance(senders, dict) or type(generation) is not int:
        raise ValueError(f"unreadable checkpoint {path}: no senders")
    checkpoint = Checkpoint(senders, data.get("marks"))
    return checkpoint, generation, _replay(_journal_path(path), generation, checkpoint)


def _replay(journal: str, generation: int, checkpoint: Checkpoint) -> int:
    """Apply the journal's complete lines of ``generation``; the bytes they span."""
    try:
        with open(journal, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    good = 0
    for line in data.splitlines(keepends=True):
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("senders"), dict):
            break  # cut short by a crash: that commit was never acknowledged
        if entry.get("generation") != generation:
            return 0  # written before the snapshot: already in it
        for hex_id, state in entry["senders"].items():
            if state is None:
                checkpoint.senders.pop(hex_id, None)
            else:
                checkpoint.senders[hex_id] = state
        checkpoint.marks = entry.get("marks")
        good += len(line)
    return good


def _journal_path(path: str) -> str:
    return path.removesuffix(".json") + ".journal"


class CheckpointFile:
    """Where a run's commits go: a line of what changed each time, a new
    snapshot now and then (see the module's docstring).

    Used by one collector's thread; the run's lock keeps others off it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._journal = _journal_path(path)
        self._generation = 0
        self._snapshot_bytes = 0
        self._journal_bytes = 0  # its complete lines: what a failed append is cut back to

    def load(self) -> Checkpoint | None:
        """What was committed last (the snapshot and its journal), or ``None``."""
        loaded = _load(self.path)
        if loaded is None:
            return None
        checkpoint, self._generation, self._journal_bytes = loaded
        self._snapshot_bytes = os.stat(self.path).st_size
        return checkpoint

    def save(
        self,
        changed: dict[str, dict[str, Any] | None],
        marks: Any,
        everything: Callable[[], dict[str, dict[str, Any]]],
    ) -> None:
        """Commit: the senders ``changed`` since the last save (``None``: gone) and
        the files' ``marks``; ``everything`` gives all senders for a new snapshot."""
        limit = max(_JOURNAL_RATIO * self._snapshot_bytes, _MIN_JOURNAL_BYTES)
        if self._snapshot_bytes == 0 or self._journal_bytes > limit:
            self._snapshot(Checkpoint(everything(), marks))
            return
        entry = {"generation": self._generation, "senders": changed, "marks": marks}
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = open_private(self._journal, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            if size < self._journal_bytes:
                # Shorter than what was committed (removed, cut by someone): a
                # snapshot, never a gap of zeros that would hide later lines.
                os.close(fd)
                fd = -1
                self._snapshot(Checkpoint(everything(), marks))
                return
            if size > self._journal_bytes:  # what a failed append left goes first
                os.ftruncate(fd, self._journal_bytes)
            try:
                view, at = memoryview(line), self._journal_bytes
                while view:
                    written = os.pwrite(fd, view, at)
                    view, at = view[written:], at + written
                os.fsync(fd)
            except OSError:
                # Cut back at once: the files are about to be rolled back, and a
                # crash must not find a line newer than them.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._journal_bytes)
                    os.fsync(fd)
                raise
        finally:
            if fd >= 0:
                os.close(fd)
        self._journal_bytes += len(line)

    def _snapshot(self, checkpoint: Checkpoint) -> None:
        generation = self._generation + 1
        data = {
            "version": VERSION,
            "generation": generation,
            "senders": checkpoint.senders,
            "marks": checkpoint.marks,
        }
        # One write of the whole text: json.dump would write it piece by piece.
        text = json.dumps(data, separators=(",", ":"))
        replace_file(self.path, lambda f: f.write(text), private=True)
        # The journal's lines are of the old generation now: never read again,
        # and cut before the next append even if cutting them here fails.
        self._generation, self._snapshot_bytes = generation, len(text)
        self._journal_bytes = 0
        os.close(open_private(self._journal, os.O_WRONLY | os.O_TRUNC))
        fsync_dir(os.path.dirname(self._journal))  # the journal's name, if it is new


def replace_file(
    path: str, write: Callable[[IO[str]], None], tmp: str | None = None, *, private: bool = False
) -> None:
    """Replace ``path`` whole: ``write`` into a temporary file, fsync, rename, fsync the dir.

    ``private``: the file gets mode 0600 (a dot-file of the run). Otherwise it
    keeps the mode of the file it replaces (a CSV rewritten with a wider
    header stays readable to whom it was), 0666 less the umask if there is none.
    """
    tmp = tmp or f"{path}.tmp"
    mode = PRIVATE_MODE if private else _mode_of(path)
    # 0600 while it is written; given its mode before it takes the name.
    fd = create_anew(tmp, 0o666 if mode is None else PRIVATE_MODE)
    with open(fd, "w", encoding="utf-8", newline="") as f:
        write(f)
        f.flush()
        if mode is not None and mode != PRIVATE_MODE:
            os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def _mode_of(path: str) -> int | None:
    """The permission bits of ``path``, ``None`` if there is no such file."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return None


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
