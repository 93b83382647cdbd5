"""A run of metrics rows as the sinks take it: checked, and typed column by column.

A client sends consecutive rows with the same keys as one record
(``[kind, keys, ts, steps, values]``, see :mod:`roxxel.codec`). The
collector turns each into a :class:`MetricsRun`: the values column by
column, every value a scalar (a non-scalar becomes ``None``, an empty cell;
a text past :data:`roxxel.schema.MAX_TEXT_CHARS` is cut there), each step an
int (one beyond 64 bits came as its digits), and for each key what its
column holds. A sink zips the columns back into
rows and formats a column of finite floats or of integers through one
%-format for the whole run, instead of judging each value.

A row whose time is out of range (:func:`roxxel.schema.in_time_range`) gets
the collector's time; the run keeps the time it was sent with
(:attr:`MetricsRun.sent_ts`), which the JSONL writes beside it.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from roxxel.schema import (
    MAX_TEXT_CHARS,
    NON_SCALAR,
    big_int,
    cut_text,
    in_time_range,
    times_in_range,
)

__all__ = ["MetricsRun", "FLOATS", "INTS", "MIXED", "metrics_run", "is_constant", "problem"]

FLOATS = "floats"  # every value a finite float
INTS = "ints"  # every value an int (not a bool)
MIXED = "mixed"  # anything else: other scalars, NaN/inf, None, a mix

_SCALARS = (int, float, bool, str, type(None))
_FLOAT = {float}
_INT = {int}


class MetricsRun(NamedTuple):
    kind: str  # RECORD_METRICS or RECORD_RANKED_METRICS
    keys: tuple[str, ...]
    ts: list[float]  # per row
    steps: list[int]  # per row
    columns: list[tuple]  # per key, in keys' order: its value in each row
    types: tuple[str, ...]  # per key: FLOATS, INTS or MIXED
    constant: tuple[bool, ...]  # per key: one number in every row (see is_constant)
    # Per row, the time it was sent with where that was out of range (else
    # None); None when every row's was in range.
    sent_ts: tuple[float | None, ...] | None = None


def metrics_run(
    record: list, now: float | None = None
) -> tuple[MetricsRun, dict[tuple[str, str], tuple[str, int]]]:
    """The run of a checked metrics record received at ``now`` (default: the
    clock's); for each key and kind of value that could not be written (see
    :func:`problem`), why (for the first such value) and how many.

    A key none of whose values can be written leaves the run (it gets no
    column); other non-scalar values become ``None``.
    """
    kind, keys, ts, steps, values = record
    if set(map(type, steps)) != _INT:  # a step beyond 64 bits came as its digits
        steps = list(map(big_int, steps))
    ts, sent_ts = _times(ts, time.time() if now is None else now)
    columns = list(zip(*values, strict=True))
    types: list[str] = []
    dropped: dict[tuple[str, str], tuple[str, int]] = {}
    kept: list[int] = []
    for i, column in enumerate(columns):
        found = set(map(type, column))
        if dict in found:
            column = columns[i] = tuple(map(big_int, column))
            found = set(map(type, column))
        if found == _FLOAT:
            total = sum(column)  # finite only if every value is
            types.append(FLOATS if total - total == 0 else MIXED)
        elif found == _INT:
            types.append(INTS)
        elif found.issubset(_SCALARS):
            if str in found:
                columns[i] = _cut_texts(column)
            types.append(MIXED)
        else:
            bad = [v for v in column if type(v) not in _SCALARS]
            for value in bad:
                kind_of_value, why = problem(value)
                first_why, count = dropped.get((keys[i], kind_of_value), (why, 0))
                dropped[keys[i], kind_of_value] = (first_why, count + 1)
            if len(bad) == len(column):
                continue
            columns[i] = _cut_texts(tuple(v if type(v) in _SCALARS else None for v in column))
            types.append(MIXED)
        kept.append(i)
    if dropped:
        keys = [keys[i] for i in kept]
        columns = [columns[i] for i in kept]
    constant = tuple(map(is_constant, types, columns))
    run = MetricsRun(kind, tuple(keys), ts, steps, columns, tuple(types), constant, sent_ts)
    return run, dropped


def _cut_texts(column: tuple) -> tuple:
    """A column with its texts past :data:`~roxxel.schema.MAX_TEXT_CHARS` cut
    (a client sends a metric's text whole; a message it cuts itself)."""
    if any(type(v) is str and len(v) > MAX_TEXT_CHARS for v in column):
        return tuple(cut_text(v) if type(v) is str else v for v in column)
    return column


def _times(ts: list, now: float) -> tuple[list, tuple | None]:
    """The rows' times as written, and as sent where that was out of range."""
    if times_in_range(ts, now):
        return ts, None
    sent = tuple(None if in_time_range(t, now) else t for t in ts)
    return [now if s is not None else t for t, s in zip(ts, sent, strict=True)], sent


def is_constant(kind: str, column: tuple) -> bool:
    """Whether a column of ``kind`` holds one number in every row (a learning
    rate, an epoch), which a sink may format once for the whole run.

    Never for 0.0, which -0.0 equals but which is written differently.
    """
    return (
        (kind == INTS or (kind == FLOATS and column[0] != 0.0))
        and len(column) > 1
        and column[0] == column[-1]  # most columns vary: no pass over them
        and column.count(column[0]) == len(column)
    )


def problem(value: Any) -> tuple[str, str]:
    """The kind of a value that cannot be written, and why, in words.

    The kind is what the client's description starts with: the value's type
    (``numpy.ndarray`` of any shape, ``complex number``), so that a key
    reported for one kind is reported again for another.
    """
    if isinstance(value, dict) and type(value.get(NON_SCALAR)) is str:
        description = value[NON_SCALAR]
        kind = description.split(" of ", 1)[0].split(" that ", 1)[0]
        return kind[:200], f"not a scalar: {description}"
    name = type(value).__name__
    return name, f"not a scalar: {name} of {len(value)} items"
