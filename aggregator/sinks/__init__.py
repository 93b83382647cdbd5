"""The collector's sinks: one interface (write_lines, write_metrics, sync, close), a file each."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from roxxel.schema import CSV_FLOATS, DEFAULT_METRICS_FILES, METRICS_FILES, check_file_options

from .base import FanOut, Origin, Sink
from .metrics_csv import MetricsCsvSink
from .metrics_jsonl import MetricsJsonlSink
from .process import MOVE_AT_ROWS_PER_S, SINK_PROCESSES, Offloaded, SinkSpec, processes_pay
from .system_log import SystemLogSink
from .tensorboard import TensorBoardSink

__all__ = [
    "Sink",
    "Origin",
    "FanOut",
    "SystemLogSink",
    "MetricsCsvSink",
    "MetricsJsonlSink",
    "TensorBoardSink",
    "default_sinks",
    "FileOptions",
    "DEFAULT_FILES",
    "METRICS_FILES",
    "CSV_FLOATS",
    "SINK_PROCESSES",
]


@dataclass(frozen=True)
class FileOptions:
    """What a run's files are: which metrics files besides the system log
    (any of :data:`METRICS_FILES`, at least one; by default the CSV and the
    JSONL), and how the CSV writes
    floats (:data:`CSV_FLOATS`). Raises ``ValueError`` naming what is wrong."""

    metrics_files: tuple[str, ...] = DEFAULT_METRICS_FILES
    csv_floats: str = "original"
    # Whether the CSV and JSONL are formatted in processes of their own
    # (:mod:`aggregator.sinks.process`): "auto" once a run writes
    # MOVE_AT_ROWS_PER_S on a host with cores to spare, "on" always, "off" never.
    sink_processes: str = "auto"

    def __post_init__(self) -> None:
        problem = check_file_options(self.metrics_files, self.csv_floats)
        if problem is None and self.sink_processes not in SINK_PROCESSES:
            problem = (
                f"sink processes are one of {', '.join(SINK_PROCESSES)}, "
                f"not {self.sink_processes!r}"
            )
        if problem is not None:
            raise ValueError(problem)

    def metrics_sink(self, spec: SinkSpec, keep_fds: Sequence[int]) -> Sink:
        """The sink ``spec``, in the collector or (see :attr:`sink_processes`) not."""
        if self.sink_processes == "off" or (self.sink_processes == "auto" and not processes_pay()):
            return spec.local()
        move_at = 0 if self.sink_processes == "on" else MOVE_AT_ROWS_PER_S
        return Offloaded(spec, move_at, keep_fds)


DEFAULT_FILES = FileOptions()


def default_sinks(
    log_dir: str,
    prefix: str,
    echo: TextIO | None,
    options: FileOptions = DEFAULT_FILES,
    keep_fds: Sequence[int] = (),
) -> FanOut:
    """The run's files in ``log_dir`` (created if missing): the system log and
    the metrics files of ``options``; a sink process holds ``keep_fds`` (the
    run's lock) open as long as it lives."""
    os.makedirs(log_dir, exist_ok=True)
    base = os.path.join(log_dir, prefix)
    makers: list[Callable[[], Sink]] = [lambda: SystemLogSink(f"{base}_system.log", echo)]
    if "csv" in options.metrics_files:
        csv = SinkSpec("MetricsCsvSink", (f"{base}_metrics.csv", options.csv_floats))
        makers.append(lambda: options.metrics_sink(csv, keep_fds))
    if "jsonl" in options.metrics_files:
        jsonl = SinkSpec("MetricsJsonlSink", (f"{base}_metrics.jsonl",))
        makers.append(lambda: options.metrics_sink(jsonl, keep_fds))
    if "tensorboard" in options.metrics_files:
        makers.append(lambda: TensorBoardSink(f"{base}_tensorboard"))
    sinks: list[Sink] = []
    try:
        for make in makers:
            sinks.append(make())
    except BaseException:
        FanOut(sinks).close()  # those opened (a sink process holds the run's lock)
        raise
    return FanOut(sinks)
