"""Where roxxel's long-lived components say what goes wrong with themselves.

A collector, a client's sender and its transport each take a ``log=``
(a :class:`logging.Logger`, as pyzmq's ``zmq.auth`` does); without one they
use :func:`diagnostics`, whose loggers write each message as it is, one per
line, to the ``sys.stderr`` of the moment -- what the user of a training
script expects to see there, whatever the script did to the root logger.
Quieten or redirect them like any logger (``logging.getLogger("roxxel")``:
remove the handler, raise the level), or pass your own ``log=``.

These are roxxel's own diagnostics (a collector that cannot write, a client
that is refused), not the run's log: that goes through the collector.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["diagnostics"]


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when it writes (tests and tools replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass  # StreamHandler.__init__ sets it: the property always answers sys.stderr


def diagnostics(name: str) -> logging.Logger:
    """The logger ``name`` (under ``roxxel``), writing to stderr unless configured otherwise."""
    root = logging.getLogger("roxxel")
    if not root.handlers:
        root.addHandler(_StderrHandler())
        if root.level == logging.NOTSET:  # a level the application set stays
            root.setLevel(logging.INFO)
        # Not also through the application's root logger: said once, as written.
        root.propagate = False
    return logging.getLogger(name) if name.startswith("roxxel") else root.getChild(name)
