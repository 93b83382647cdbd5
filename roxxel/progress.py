"""A one-line progress display for interactive runs (``Logger(..., progress=True)``).

On rank 0, when stdout is a terminal, the line under the run's echoed log
shows the last step, steps per second and the first few metrics that are
Python or NumPy numbers (not arrays: reading one would wait for the device),
redrawn in place at most twice a second (the caller pays a clock read per
row, the formatting twice a second). The collector's echo clears it before
each log line it prints on a terminal, and it is drawn again after. When
the Logger closes, the last row's state is drawn (whenever it came) and the
line ended, so what follows starts on a line of its own.
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
        # The last row not drawn yet: drawn at close (a dict the caller reuses
        # holds its last values by then, which is what is drawn).
        self._undrawn: tuple[int, Mapping[str, Any]] | None = None
        self._text: str | None = None  # what was drawn last

    def update(self, step: int, metrics: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if now < self._next:
            self._undrawn = (step, metrics)
            return
        self._next = now + self.interval
        self._undrawn = None
        self._draw(now, step, metrics)

    def _draw(self, now: float, step: int, metrics: Mapping[str, Any], end: str = "") -> None:
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
        self._write(text, end)

    def _write(self, text: str, end: str) -> None:
        width = shutil.get_terminal_size().columns - 1
        try:
            # One write with its end: another process's echo cannot come between.
            self.stream.write("\r\033[K" + text[:width] + end)
            self.stream.flush()
        except (OSError, ValueError):
            self._next = math.inf  # a closed terminal: no more drawing
            return
        self._text = text

    def close(self) -> None:
        """Draw the last state and end the line, so what follows starts on its own.

        Drawn again even when nothing changed: the collector's echo may have
        cleared the line since.
        """
        if self._next == math.inf:
            return  # closed already, or the terminal is gone
        undrawn, self._undrawn = self._undrawn, None
        if undrawn is not None:
            self._draw(time.monotonic(), *undrawn, end="\n")
        elif self._text is not None:
            self._write(self._text, "\n")
        self._next = math.inf  # closed: no more drawing


def _short(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError, OverflowError):
        return "?"
