"""The collector's sinks: one interface (write_lines, write_metrics, sync, close), a file each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from roxxel.schema import CSV_FLOATS, DEFAULT_METRICS_FILES, METRICS_FILES, check_file_options

from .base import FanOut, Origin, Sink
from .metrics_csv import MetricsCsvSink
from .metrics_jsonl import MetricsJsonlSink
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
]


@dataclass(frozen=True)
class FileOptions:
    """What a run's files are: which metrics files besides the system log
    (any of :data:`METRICS_FILES`, at least one; by default the CSV and the
    JSONL), and how the CSV writes
    floats (:data:`CSV_FLOATS`). Raises ``ValueError`` naming what is wrong."""

    metrics_files: tuple[str, ...] = DEFAULT_METRICS_FILES
    csv_floats: str = "original"

    def __post_init__(self) -> None:
        problem = check_file_options(self.metrics_files, self.csv_floats)
        if problem is not None:
            raise ValueError(problem)


DEFAULT_FILES = FileOptions()


def default_sinks(
    log_dir: str, prefix: str, echo: TextIO | None, options: FileOptions = DEFAULT_FILES
) -> FanOut:
    """The run's files in ``log_dir`` (created if missing): the system log and
    the metrics files of ``options``."""
    os.makedirs(log_dir, exist_ok=True)
    base = os.path.join(log_dir, prefix)
    sinks: list[Sink] = [SystemLogSink(f"{base}_system.log", echo)]
    if "csv" in options.metrics_files:
        sinks.append(MetricsCsvSink(f"{base}_metrics.csv", options.csv_floats))
    if "jsonl" in options.metrics_files:
        sinks.append(MetricsJsonlSink(f"{base}_metrics.jsonl"))
    if "tensorboard" in options.metrics_files:
        sinks.append(TensorBoardSink(f"{base}_tensorboard"))
    return FanOut(sinks)
