"""The collector's sinks: one interface (write_lines, write_metrics, sync, close), a file each."""

from __future__ import annotations

import os
from typing import TextIO

from .base import FanOut, Origin, Sink
from .metrics_csv import MetricsCsvSink
from .metrics_jsonl import MetricsJsonlSink
from .system_log import SystemLogSink

__all__ = [
    "Sink",
    "Origin",
    "FanOut",
    "SystemLogSink",
    "MetricsCsvSink",
    "MetricsJsonlSink",
    "default_sinks",
]


def default_sinks(log_dir: str, prefix: str, echo: TextIO | None) -> FanOut:
    """The run's three files in ``log_dir`` (created if missing)."""
    os.makedirs(log_dir, exist_ok=True)
    base = os.path.join(log_dir, prefix)
    return FanOut(
        [
            SystemLogSink(f"{base}_system.log", echo),
            MetricsCsvSink(f"{base}_metrics.csv"),
            MetricsJsonlSink(f"{base}_metrics.jsonl"),
        ]
    )
