"""roxxel's collector: receives every rank's records and alone writes the run's files.

Run it as a daemon::

    roxxel-aggregator --bind tcp://0.0.0.0:5555 --log-dir ./logs --prefix run_alpha

or embed it (a ``roxxel.Logger`` on rank 0 with no endpoint does so)::

    from aggregator import Collector, default_sinks
    collector = Collector("tcp://127.0.0.1:0", default_sinks("./logs", "run", None))
    collector.run()
"""

from .collector import Collector, default_sinks
from .sinks import FileOptions

__all__ = ["Collector", "default_sinks", "FileOptions"]
