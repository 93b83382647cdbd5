"""roxxel: one log for every rank of a multi-host JAX run.

Usage::

    from roxxel import Logger

    with Logger(log_dir="./logs", filename_prefix="run_alpha") as logger:
        logger.log_message("Initializing...")
        for step in range(100):
            logger.log_metrics_summary(step=step, metrics={"loss": 1.0 / (step + 1)})

Each process runs a small client that batches records on a background
thread and sends them over ZeroMQ to one collector (embedded on rank 0, or
the ``roxxel-aggregator`` daemon), which alone writes the files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .handler import Handler
    from .logger import CRASH_HEADLINE, Logger
    from .metric_writer import MetricWriter

__all__ = ["Logger", "Handler", "MetricWriter", "CRASH_HEADLINE", "__version__"]
__version__ = "0.1.0"

# Imported on first use: the collector imports only the shared wire modules
# (roxxel.codec, .schema, .lines, .terminal, .security), and importing them
# must not load the client (and, through it, the collector again).
_LAZY = {
    "Logger": ".logger",
    "CRASH_HEADLINE": ".logger",
    "Handler": ".handler",
    "MetricWriter": ".metric_writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roxxel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
