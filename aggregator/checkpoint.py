"""The collector's checkpoint: what is committed, written atomically.

``{log_dir}/.{prefix}_checkpoint.json`` holds, as of the last group commit,
every sender's highest written seq (and its hello: rank, host, pid) and each
sink's mark (file sizes). It is replaced whole -- temporary file, fsync,
rename, fsync of the directory -- so a reader sees the old one or the new
one, never half. A collector acknowledges a batch only after the checkpoint
that includes it is on disk; a restarted collector rewinds the files to the
marks before it serves, so a resent batch is written once, never twice. A
file's mark also names the file (its inode, and a checksum of its last bytes
before the mark), so a restart can tell a file rotated away from one cut
short (:meth:`aggregator.sinks.base.FileSink.resume`).

The checkpoint lists the run's sender ids: it is private (mode 0600, see
:mod:`aggregator.dotfiles`), its temporary file too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .dotfiles import PRIVATE_MODE, create_anew, narrow

__all__ = [
    "Checkpoint",
    "checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
    "replace_file",
    "fsync_dir",
]

VERSION = 1


@dataclass
class Checkpoint:
    senders: dict[str, dict[str, Any]] = field(default_factory=dict)  # hex id -> state
    marks: Any = None


def checkpoint_path(log_dir: str, prefix: str) -> str:
    return os.path.join(log_dir, f".{prefix}_checkpoint.json")


def load_checkpoint(path: str) -> Checkpoint | None:
    """The checkpoint at ``path``, or ``None`` if there is none.

    Raises ``ValueError`` naming the file if it exists but is not one.
    """
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
    if not isinstance(senders, dict):
        raise ValueError(f"unreadable checkpoint {path}: no senders")
    return Checkpoint(senders, data.get("marks"))


def save_checkpoint(path: str, checkpoint: Checkpoint) -> None:
    data = {"version": VERSION, "senders": checkpoint.senders, "marks": checkpoint.marks}
    # One write of the whole text: json.dump would write it piece by piece.
    text = json.dumps(data, separators=(",", ":"))
    replace_file(path, lambda f: f.write(text), private=True)


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
