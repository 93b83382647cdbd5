"""The processes of a run that died, as their watchers reported them, and the
run's last line: its first failure, so nobody has to hunt for it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .sinks.base import Origin

__all__ = ["Death", "Deaths"]


@dataclass(frozen=True)
class Death:
    """A process of the run that ended abnormally, as its watcher reported it."""

    ts: float
    rank: int
    host: str
    pid: int
    text: str


class Deaths:
    """One death per process (the first notice counts)."""

    def __init__(self) -> None:
        self._by_process: dict[Origin, Death] = {}

    def add(self, origin: Origin, ts: float, text: str) -> bool:
        """Keep the notice; ``True`` if it is the first of its process."""
        if origin in self._by_process:
            return False
        self._by_process[origin] = Death(ts, origin.rank, origin.host, origin.pid, text)
        return True

    def heard_from(self, pid: int | None) -> bool:
        return any(d.pid == pid for d in self._by_process.values())

    def summary(self) -> str | None:
        """The run's first failure and how many followed; ``None`` if none died."""
        if not self._by_process:
            return None
        first = min(self._by_process.values(), key=lambda d: d.ts)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first.ts))
        others = len(self._by_process) - 1
        return (
            f"roxxel: first failure of this run: rank {first.rank} on {first.host} at {when} "
            f"-- {first.text}"
            + (f" ({others} more process(es) ended abnormally after it)" if others else "")
        )
