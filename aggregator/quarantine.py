"""The run's quarantine: what a collector acknowledged but could never apply.

``{log_dir}/.{prefix}_quarantine.jsonl`` holds one JSON object per line
(time, sender, seq, reason, content). It is created when first needed,
synced with the run's files at each commit and rewound with them, so a batch
written again after a restart or a write error is quarantined once. It is
bounded (:data:`MAX_QUARANTINE_BYTES`): a hostile or broken client cannot
fill the disk through it; past the bound items are counted, not saved. It
is private (mode 0600, :mod:`aggregator.dotfiles`): it holds what clients sent.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

import msgpack

from .dotfiles import open_private
from .sinks.base import truncate_to

__all__ = ["MAX_QUARANTINE_BYTES", "Quarantine", "quarantine_path"]

MAX_QUARANTINE_BYTES = 64 * 1024 * 1024
_MAX_ITEM_CHARS = 256 * 1024


def quarantine_path(log_dir: str, prefix: str) -> str:
    return os.path.join(log_dir, f".{prefix}_quarantine.jsonl")


class Quarantine:
    def __init__(self, path: str, max_bytes: int = MAX_QUARANTINE_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self._file: IO[str] | None = None
        self._size = 0  # of the file, while it is open

    def save(self, sender_id: bytes, seq: int, reason: str, content: Any) -> bool:
        """Append one item; ``False`` (nothing written) once the file holds ``max_bytes``."""
        if self._file is None:
            self._file = self._open()
            self._size = self.mark()
        if self._size >= self.max_bytes:
            return False
        item = {
            "ts": time.time(),
            "sender": sender_id.hex(),
            "seq": seq,
            "reason": reason,
            "content": content,
        }
        try:
            line = json.dumps(item, default=repr)
        except (TypeError, ValueError, RecursionError):
            line = ""  # bytes map keys, nesting deeper than json goes
        if not line or len(line) > _MAX_ITEM_CHARS:
            # Whatever it was, its msgpack bytes (the start of them) say it exactly.
            item["content"] = {"msgpack_hex": _packed_hex(content)}
            line = json.dumps(item)
        self._file.write(line + "\n")
        self._size += len(line) + 1  # json.dumps writes ASCII: characters are bytes
        return True

    def sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def mark(self) -> int:
        """The file's size (0 before it exists), to :meth:`rewind` to."""
        if self._file is not None:
            self._file.flush()
            return os.fstat(self._file.fileno()).st_size
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def rewind(self, size: int) -> None:
        if self._file is None and not os.path.exists(self.path):
            return
        if self._file is None:
            self._file = self._open()
        self._file.flush()
        truncate_to(self.path, self._file.fileno(), size)
        self._size = size

    def _open(self) -> IO[str]:
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        return open(fd, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _packed_hex(content: Any) -> str:
    try:
        packed = msgpack.packb(content, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return ""  # not even msgpack can say it: the reason alone is saved
    return packed[: _MAX_ITEM_CHARS // 2].hex()
