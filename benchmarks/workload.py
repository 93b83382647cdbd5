"""What the benchmarks log, and how they count it in the files afterwards.

Every benchmark that calls a Logger in a loop logs the same records, so that
their numbers can be compared: ``log_metrics_summary`` cycling through
:data:`METRICS_SERIES` (or the constant :data:`METRICS`) and ``log_message``
with the constant :data:`MESSAGE`, into files named ``bench_*``.
"""

from __future__ import annotations

import os
import random
from typing import Any

__all__ = [
    "PREFIX",
    "MESSAGE",
    "METRICS",
    "METRICS_SERIES",
    "SERIES_MASK",
    "APIS",
    "metrics_series",
    "log_calls",
    "records_on_disk",
]

PREFIX = "bench"
MESSAGE = "step finished: loss 0.12345 lr 0.00030"
METRICS = {"loss": 0.123456, "lr": 3e-4, "grad_norm": 1.234567, "accuracy": 0.987654}
APIS = ("log_metrics_summary", "log_message")


def metrics_series(count: int = 1024) -> list[dict[str, float]]:
    """Rows like a training run's, cycled through by every metrics benchmark:
    ``loss``, ``grad_norm`` and ``accuracy`` change every row and have all the
    digits of a float64 (slow to format, like real ones), ``lr`` is constant."""
    rng = random.Random(0)
    return [
        {
            "loss": 2.5 / (1 + 0.01 * i) + rng.random() * 0.01,
            "lr": 3e-4,
            "grad_norm": 1.0 + rng.random(),
            "accuracy": min(0.999, 0.5 + i / 2048 + rng.random() * 0.01),
        }
        for i in range(count)
    ]


METRICS_SERIES = metrics_series()
SERIES_MASK = len(METRICS_SERIES) - 1  # a power of two: i & mask cycles through it


def log_calls(logger: Any, api: str, start: int, stop: int) -> None:
    """The measured loop: calls ``start`` to ``stop`` of ``api`` (step = the call's index)."""
    if api == "log_metrics_summary":
        # Locals, not globals, in the loop: the loop is what is measured.
        series, mask = METRICS_SERIES, SERIES_MASK
        for i in range(start, stop):
            logger.log_metrics_summary(step=i, metrics=series[i & mask])
    else:
        message = MESSAGE
        for _ in range(start, stop):
            logger.log_message(message)


def records_on_disk(api: str, log_dir: str) -> int:
    """Records of ``api`` in ``log_dir``'s files: CSV rows, or system-log lines with
    :data:`MESSAGE` (0 if the file is not there yet)."""
    if api == "log_metrics_summary":
        path = os.path.join(log_dir, f"{PREFIX}_metrics.csv")
        try:
            with open(path, encoding="utf-8") as f:
                return max(0, sum(1 for _ in f) - 1)  # minus the header
        except FileNotFoundError:
            return 0
    path = os.path.join(log_dir, f"{PREFIX}_system.log")
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.endswith(f"] {MESSAGE}\n"))
    except FileNotFoundError:
        return 0
