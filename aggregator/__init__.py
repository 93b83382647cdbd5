"""roxxel's collector: receives every rank's records and alone writes the run's files.

Run it as a daemon::

    roxxel-aggregator --bind tcp://0.0.0.0:5555 --log-dir ./logs --prefix run_alpha

or embed it (a ``roxxel.Logger`` on rank 0 with no endpoint does so)::

    from aggregator import Collector, default_sinks
    collector = Collector("tcp://127.0.0.1:0", default_sinks("./logs", "run", None))
    collector.run()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .collector import Collector, default_sinks
    from .sinks import FileOptions

__all__ = ["Collector", "default_sinks", "FileOptions"]


def __getattr__(name: str) -> Any:
    # Imported when first asked for: a sink process imports aggregator.sinks
    # alone, and starts in a third of the time without the collector's modules.
    if name in ("Collector", "default_sinks"):
        from . import collector

        return getattr(collector, name)
    if name == "FileOptions":
        from .sinks import FileOptions

        return FileOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
