"""The collector's sinks: one interface (write / flush / close), one file each."""

from .base import FanOut, Origin, Sink
from .metrics_csv import MetricsCsvSink
from .metrics_jsonl import MetricsJsonlSink
from .system_log import SystemLogSink

__all__ = ["Sink", "Origin", "FanOut", "SystemLogSink", "MetricsCsvSink", "MetricsJsonlSink"]
