"""A one-line progress display for interactive runs (``Logger(..., progress=True)``).

On rank 0, when stdout is a terminal, the line under the run's echoed log
shows the last step, steps per second and the first few metrics that are
Python or NumPy numbers (not arrays: reading one would wait for the device),
redrawn in place at most twice a second (the caller pays a clock read per
row, the formatting twice a second). The collector's echo clears it before
each log line it prints on a terminal, and it is drawn again after.
"""

from __future__ import annotations

import math
import numbers
import shutil
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Progress"]

_SHOWN_METRICS = 4


class Progress:
    def __init__(self, stream: TextIO, interval: float = 0.5) -> None:
        self.stream = stream
        self.interval = interval
        self._next = 0.0
        self._last: tuple[float, int] | None = None  # (monotonic, step) of the last draw
        self._drawn = False

    def update(self, step: int, metrics: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        rate = ""
        if self._last is not None and now > self._last[0] and step >= self._last[1]:
            rate = f" | {(step - self._last[1]) / (now - self._last[0]):,.1f} steps/s"
        self._last = (now, step)
        shown = [
            f"{name} {_short(value)}"
            for name, value in list(metrics.items())[:_SHOWN_METRICS]
            # Python and NumPy numbers only: float() of a jax.Array would wait
            # for the device on the training thread.
            if isinstance(value, numbers.Real)
        ]
        text = f"step {step:,}{rate}" + "".join(f" | {s}" for s in shown)
        width = shutil.get_terminal_size().columns - 1
        try:
            self.stream.write("\r\033[K" + text[:width])
            self.stream.flush()
        except (OSError, ValueError):
            self._next = math.inf  # a closed terminal: no more drawing
            return
        self._drawn = True

    def close(self) -> None:
        """End the line, so what follows starts on its own."""
        if self._drawn:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False


def _short(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError, OverflowError):
        return "?"
