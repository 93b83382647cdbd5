"""A run of metrics rows as the sinks take it: checked, and typed column by column.

A client sends consecutive rows with the same keys as one record
(``[kind, keys, ts, rows]``, see :mod:`roxxel.codec`). The collector turns
each into a :class:`MetricsRun`: the rows as tuples ``(step, value, ...)``,
every value a scalar (a non-scalar becomes ``None``, an empty cell), and for
each key what its column holds. A sink formats a column of finite floats or
of integers with one %-format for the whole run, instead of judging each value.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NamedTuple

from roxxel.values import NON_SCALAR

__all__ = ["MetricsRun", "FLOATS", "INTS", "MIXED", "metrics_run"]

FLOATS = "floats"  # every value a finite float
INTS = "ints"  # every value an int (not a bool)
MIXED = "mixed"  # anything else: other scalars, NaN/inf, None, a mix

_SCALARS = (int, float, bool, str, type(None))
_FLOAT = {float}
_INT = {int}


class MetricsRun(NamedTuple):
    kind: str  # codec.RECORD_METRICS or codec.RECORD_RANKED_METRICS
    keys: tuple[str, ...]
    ts: list[float]
    rows: list[tuple]  # (step, value, ...): a value per key, in keys' order
    columns: list[tuple]  # the values of each key, in keys' order
    types: tuple[str, ...]  # FLOATS, INTS or MIXED per key


def metrics_run(record: list) -> tuple[MetricsRun, dict[str, tuple[str, int]]]:
    """The run of a checked metrics record; for each key with non-scalar
    values, why they were dropped and how many.

    A key none of whose values can be written leaves the run (it gets no
    column); other non-scalar values become ``None``.
    """
    kind, keys, ts, rows = record
    columns = list(zip(*rows, strict=True))[1:]
    types: list[str] = []
    dropped: dict[str, tuple[str, int]] = {}
    kept: list[int] = []
    for i, column in enumerate(columns):
        found = set(map(type, column))
        if found == _FLOAT:
            total = sum(column)  # finite only if every value is
            types.append(FLOATS if total - total == 0 else MIXED)
        elif found == _INT:
            types.append(INTS)
        elif found.issubset(_SCALARS):
            types.append(MIXED)
        else:
            bad = [v for v in column if type(v) not in _SCALARS]
            dropped[keys[i]] = (_why(bad[0]), len(bad))
            if len(bad) == len(column):
                continue
            columns[i] = tuple(v if type(v) in _SCALARS else None for v in column)
            types.append(MIXED)
        kept.append(i)
    if not dropped:
        run = MetricsRun(kind, tuple(keys), ts, list(map(tuple, rows)), columns, tuple(types))
        return run, dropped
    columns = [columns[i] for i in kept]
    rows = list(zip(map(itemgetter(0), rows), *columns, strict=True))
    run = MetricsRun(kind, tuple(keys[i] for i in kept), ts, rows, columns, tuple(types))
    return run, dropped


def _why(value: Any) -> str:
    if isinstance(value, dict) and NON_SCALAR in value:
        return f"not a scalar: {value[NON_SCALAR]}"
    return f"not a scalar: {type(value).__name__} of {len(value)} items"
