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

from .handler import Handler
from .logger import CRASH_HEADLINE, Logger
from .metric_writer import MetricWriter

__all__ = ["Logger", "Handler", "MetricWriter", "CRASH_HEADLINE", "__version__"]
__version__ = "0.1.0"
