"""Logging levels as a Logger takes them and as its records carry them.

A level is a ``logging`` number, or a name this process's ``logging`` knows.
A record at a level beyond the standard ones carries the name this process
gives it (``logging.addLevelName``): the collector, another process, could
not know it (:mod:`roxxel.schema`, the log record's fifth item).
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from .schema import MAX_LEVEL_NAME, STANDARD_LEVELS

__all__ = ["STANDARD_LEVELS", "level_number", "with_level_name"]


def level_number(level: int | str) -> int:
    """The number of ``level`` (an int, or an int-like such as an ``IntEnum`` or
    a NumPy integer, or a name); ``ValueError`` for anything else, or a name
    ``logging`` does not know."""
    if type(level) is int:
        return level
    if not isinstance(level, (str, bool)) and hasattr(type(level), "__index__"):
        return operator.index(level)
    if isinstance(level, str):
        # As registered ("Sociable"), or a standard name in any case ("warning").
        number = logging.getLevelName(level)
        if not isinstance(number, int):
            number = logging.getLevelName(level.upper())
        if isinstance(number, int):
            return number
    raise ValueError(f"unknown logging level {level!r}")


def with_level_name(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A line at a level that this process's ``logging`` names (``addLevelName``),
    with that name: the collector is another process."""
    name = logging.getLevelName(record[2])
    if type(name) is not str or not name or name == f"Level {record[2]}":
        return record
    return (*record, name[:MAX_LEVEL_NAME])
