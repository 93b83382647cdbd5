"""An applied batch sorted for the sinks: pure, no I/O.

A batch mixes records of several kinds (:mod:`roxxel.schema`). The sinks
take log lines and metrics runs separately (one ``write_lines`` and one
``write_metrics`` per batch), so :func:`sort_batch` splits it: log lines (a
client's report of dropped records becomes a WARNING line), metrics runs
(typed column by column, :mod:`aggregator.metrics_run`), and, in the
batch's order, what the collector handles itself before writing those:
invalid records and death notices. A record's place among the lines and
among the runs is its place in the batch.

Times out of range (:func:`roxxel.schema.in_time_range`) become the
receive time: of a metrics row here (the JSONL keeps the time as sent), of
a death notice here (marked, :func:`roxxel.lines.within_time`), of a log
line where the system log formats it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from roxxel import schema
from roxxel.lines import NamedLevel, within_time

from .metrics_run import MetricsRun, metrics_run

__all__ = ["SortedBatch", "Invalid", "DeathNotice", "sort_batch"]


class Invalid(NamedTuple):
    """A record that fails validation: quarantined and reported, not written."""

    record: Any
    problem: str


class DeathNotice(NamedTuple):
    """A watcher's notice that the sender's process ended abnormally."""

    ts: float
    level: int
    text: str


@dataclass
class SortedBatch:
    lines: list[list[Any]] = field(default_factory=list)
    runs: list[MetricsRun] = field(default_factory=list)
    notices: list[Invalid | DeathNotice] = field(default_factory=list)
    # Per metric name and kind of value that could not be written: why (the
    # first such value's), and how many.
    non_scalars: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    client_dropped: int = 0  # records the client reported dropped
    # Metrics rows written with the receive time: theirs was out of range.
    rows_out_of_range: int = 0

    @property
    def written(self) -> int:
        """Records the sinks write: lines and metrics rows."""
        return len(self.lines) + sum(len(run.steps) for run in self.runs)


def sort_batch(records: list[Any], now: float | None = None) -> SortedBatch:
    """Split a batch's records, received at ``now`` (default: the clock's), by what takes them."""
    if schema.all_log_lines(records):  # the common batch, checked in one pass
        return SortedBatch(lines=records)
    if now is None:
        now = time.time()
    sorted_batch = SortedBatch()
    for record in records:
        problem = schema.check_record(record)
        if problem is not None:
            sorted_batch.notices.append(Invalid(record, problem))
            continue
        kind = record[0]
        if kind in schema.METRICS_KINDS:
            run, dropped = metrics_run(record, now)
            for key, (why, count) in dropped.items():
                first_why, before = sorted_batch.non_scalars.get(key, (why, 0))
                sorted_batch.non_scalars[key] = (first_why, before + count)
            if run.sent_ts is not None:
                sorted_batch.rows_out_of_range += len(run.sent_ts) - run.sent_ts.count(None)
            sorted_batch.runs.append(run)
        elif kind == schema.RECORD_DEATH:
            # Its time also dates the run's summary of failures.
            _, ts, level, text = record
            ts, text = within_time(ts, schema.cut_text(text), now)
            sorted_batch.notices.append(DeathNotice(ts, schema.big_int(level), text))
        elif len(record) == 5:  # a log line at a level its sender named
            kind, ts, level, text, name = record
            level = NamedLevel(schema.big_int(level), name)
            sorted_batch.lines.append([kind, ts, level, schema.cut_text(text)])
        elif kind == schema.RECORD_DROPPED:
            sorted_batch.client_dropped += record[2] + record[3]
            sorted_batch.lines.append(
                [schema.RECORD_LOG, record[1], logging.WARNING, _dropped_text(record)]
            )
        else:  # a log line (a level beyond 64 bits came as its digits)
            kind, ts, level, text = record
            sorted_batch.lines.append([kind, ts, schema.big_int(level), schema.cut_text(text)])
    return sorted_batch


def _dropped_text(record: list) -> str:
    _, _, metrics, lines = record
    return (
        f"roxxel dropped {metrics} metrics row(s) and {lines} log line(s): the client's buffer "
        "was full while the collector did not acknowledge them, or a record was larger "
        "than a frame (64 MiB)"
    )
