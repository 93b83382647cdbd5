"""What a collector answers to ``roxxel status`` and ``roxxel tail`` (``query`` frames).

Answers are plain maps that must fit the codec's limits: a status names at
most :data:`STATUS_SENDERS` senders, a tail piece holds at most
:data:`TAIL_BYTES`. A tail shows only what the system log has synced
(:attr:`aggregator.sinks.base.FileSink.synced`): text a roll back may still
rewind is never shown.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from typing import Any

from roxxel import codec

from .ledger import Ledger
from .run import Run
from .runs import Runs

__all__ = [
    "RateMeter",
    "answer",
    "status_answer",
    "senders_status",
    "stats_line",
    "tail_answer",
    "tail_piece",
    "STATUS_SENDERS",
    "TAIL_BYTES",
]

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


def answer(query: codec.Query, runs: Runs, serves_log: bool, **collector: Any) -> bytes:
    """The encoded answer to a tool's ``query`` (``status``, with the
    ``collector``'s own fields, or ``tail``); never raises: an answer that
    cannot be sent (past the frame limit) says so instead."""
    what = query.body.get("what")
    run = runs.asked(query.body.get("run"))
    if isinstance(run, str):
        body: dict[str, Any] = {"error": run}
    elif what == "status":
        body = status_answer(runs, run, **collector)
    elif what == "tail":
        body = tail_answer(runs, run, serves_log, query.body.get("offset"), query.body.get("file"))
    else:
        body = {"error": f"unknown query {codec.wire_repr(what)}: 'status' or 'tail'"}
    try:
        return codec.encode(codec.Answer(query.sender_id, query.seq, body))
    except codec.CodecError as exc:
        body = {"error": f"the answer cannot be sent: {exc}"}
        return codec.encode(codec.Answer(query.sender_id, query.seq, body))


def status_answer(runs: Runs, run: Run | None, **collector: Any) -> dict[str, Any]:
    """What ``roxxel status`` shows of ``run`` (``None``: every run): the
    ``collector``'s own fields (endpoint, pid, uptime, rate, stats...), then
    its senders; a collector of many runs also lists them; of a run named,
    also the records it wrote (``run_records``)."""
    served = [run] if run is not None else runs.all()
    body = {
        **collector,
        "log_dir": runs.log_dir,
        "prefix": runs.prefix if run is None else run.prefix,
        **senders_status([r.ledger for r in served]),
    }
    if runs.root is not None and run is None:
        body["runs"] = sorted(runs.by_prefix)[:100]
    if run is not None:
        body["run_records"] = run.written  # the other figures are the collector's
    return body


def tail_answer(
    runs: Runs, run: Run | None, serves_log: bool, offset: Any, file_id: Any
) -> dict[str, Any]:
    """The tail answer for ``run``'s system log (``None``: the only run), see
    :func:`tail_piece`; ``serves_log``: whether this tool may read it."""
    if run is None:
        if runs.root is not None:
            return {"error": "this collector serves several runs: name one (--run)"}
        run = runs.home
    if not serves_log:
        return {
            "error": "this collector shows its log only to CURVE clients or on a local "
            "endpoint; run `roxxel tail LOG_DIR` on its host"
        }
    log = run.system_log
    if log is None or run.log_dir is None:
        return {"error": "this collector writes no system log file"}
    return tail_piece(os.path.abspath(log.path), log.synced, offset, file_id)


def stats_line(name: str, runs: Runs, stats: Counter[str], records_per_second: float) -> str:
    """The line a daemon prints every ``--stats-interval`` seconds."""
    s = stats
    open_senders = sum(len(run.ledger.open) for run in runs.all())
    return (
        f"{name} stats: {records_per_second:,.0f} records/s, "
        f"{open_senders} senders, {s['records']:,} records written, "
        f"{s['client_dropped']:,} dropped by clients, {s['bad_frames']:,} bad frames, "
        f"{s['poison_batches']:,} quarantined batches, {s['write_errors']:,} write errors, "
        f"{s['refused_senders']:,} senders refused, "
        f"{s['refused_connections']:,} connections refused"
    )


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
