"""What a collector answers to ``roxxel status`` and ``roxxel tail`` (``query`` frames).

Answers are plain maps that must fit the codec's limits: a status names at
most :data:`STATUS_SENDERS` senders, a tail piece holds at most
:data:`TAIL_BYTES`. A tail shows only what the system log has synced
(:attr:`aggregator.sinks.base.FileSink.synced`): text a roll back may still
rewind is never shown.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from .ledger import Ledger
from .run import Run

__all__ = ["RateMeter", "senders_status", "tail_of", "tail_piece", "STATUS_SENDERS", "TAIL_BYTES"]

STATUS_SENDERS = 100
TAIL_BYTES = 256 * 1024


class RateMeter:
    """Records per second over the last ~10 s, from a sample at most once a second."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=11)  # (monotonic, records)

    def sample(self, now: float, records: int) -> None:
        if not self._samples or now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, records))

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (then, before), (last, records) = self._samples[0], self._samples[-1]
        return (records - before) / max(last - then, 1e-9)


def senders_status(ledgers: list[Ledger]) -> dict[str, Any]:
    """The ledgers' part of a status (one per run): counts, and the busiest senders first."""
    states = [(ledger.now(), st) for ledger in ledgers for st in ledger.senders.values()]
    busiest = sorted(states, key=lambda item: item[1].records, reverse=True)
    return {
        "open_senders": sum(len(ledger.open) for ledger in ledgers),
        "known_senders": len(states),
        "process_count": max((ledger.process_count for ledger in ledgers), default=0),
        "ranks_seen": max((len(ledger.ranks_seen) for ledger in ledgers), default=0),
        "senders": [
            {
                "rank": st.origin.rank,
                "host": st.origin.host[:256],
                "pid": st.origin.pid,
                "records": st.records,
                "bytes": st.bytes,
                "idle": now - st.seen,
            }
            for now, st in busiest[:STATUS_SENDERS]
        ],
    }


def tail_of(run: Run, offset: Any, file_id: Any) -> dict[str, Any]:
    """The tail answer for ``run``'s system log (see :func:`tail_piece`)."""
    log = run.system_log
    if log is None or run.log_dir is None:
        return {"error": "this collector writes no system log file"}
    return tail_piece(os.path.abspath(log.path), log.synced, offset, file_id)


def tail_piece(
    path: str, synced: tuple[int, int] | None, offset: Any, file_id: Any
) -> dict[str, Any]:
    """The system log's synced text from ``offset`` of file ``file_id`` (``None``:
    its last lines), whole lines only; ``synced`` is the sink's (inode, size)."""
    try:
        with open(path, "rb") as log:
            st = os.fstat(log.fileno())
            # A file other than the one synced last (rotated): all of it is written.
            end = synced[1] if synced is not None and synced[0] == st.st_ino else st.st_size
            if offset is None or type(offset) is not int or offset < 0:
                # The first request: from the start of the last whole lines.
                offset = max(0, end - TAIL_BYTES)
                log.seek(offset)
                if offset:
                    offset += len(log.readline())  # a partial line
            elif file_id != st.st_ino:
                offset = 0  # rotated: the new file from its start
            offset = min(offset, end)  # rewound since: from where it ends now
            log.seek(offset)
            data = log.read(max(0, min(TAIL_BYTES, end - offset)))
    except OSError as exc:
        return {"error": f"cannot read {path}: {exc}"}
    data = _whole_lines(data)
    text = data.decode("utf-8", errors="replace")
    return {"offset": offset + len(data), "file": st.st_ino, "text": text, "path": path}


def _whole_lines(data: bytes) -> bytes:
    """``data`` up to its last line end; a line longer than a piece is cut
    between characters, and a line still being written is not shown."""
    if data.endswith(b"\n"):
        return data
    cut = data.rfind(b"\n")
    if cut >= 0:
        return data[: cut + 1]
    if len(data) < TAIL_BYTES:
        return b""
    cut = len(data)
    while cut > len(data) - 3 and data[cut - 1] & 0xC0 == 0x80:  # continuation bytes
        cut -= 1
    if data[cut - 1] >= 0xC0:  # the lead byte of a character that may be cut
        cut -= 1
    return data[:cut] or data
