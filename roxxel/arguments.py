"""What a Logger is given, checked: each error names the argument and the value.

Called by :class:`roxxel.Logger` when it is made (its options) and, off the
hot path, when a call's step or metrics are not already an ``int`` and a
``dict``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from typing import Any

from .levels import level_number

__all__ = ["check_number", "option_level", "step_number", "metrics_dict"]


def check_number(name: str, value: Any, minimum: float, unit: str = "") -> None:
    """``ValueError``, naming the option, unless ``value`` is a finite number >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}{unit}, not {value!r}")


def option_level(name: str, level: Any) -> int:
    """The number of the level option ``name``; its ``ValueError`` names it."""
    try:
        return level_number(level)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def step_number(step: Any) -> int:
    """A step that is not an ``int`` as one (a NumPy or JAX integer), or ``TypeError``."""
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, not {type(step).__name__}") from None


def metrics_dict(metrics: Any) -> dict[str, Any]:
    """Metrics that are not a ``dict`` as one, or ``TypeError``."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name to value, not {type(metrics).__name__}")
    return dict(metrics)
