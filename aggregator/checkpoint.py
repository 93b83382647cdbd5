"""The collector's checkpoint: what is committed, written atomically.

``{log_dir}/.{prefix}_checkpoint.json`` holds, as of the last group commit,
every sender's highest written seq (and its hello: rank, host, pid) and each
sink's mark (file sizes). It is replaced whole -- temporary file, fsync,
rename, fsync of the directory -- so a reader sees the old one or the new
one, never half. A collector acknowledges a batch only after the checkpoint
that includes it is on disk; a restarted collector rewinds the files to the
marks before it serves, so a resent batch is written once, never twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

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
    replace_file(path, lambda f: f.write(text))


def replace_file(path: str, write: Callable[[IO[str]], None], tmp: str | None = None) -> None:
    """Replace ``path`` whole: ``write`` into a temporary file, fsync, rename, fsync the dir."""
    tmp = tmp or f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
