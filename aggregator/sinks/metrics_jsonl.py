"""``{prefix}_metrics.jsonl``: one flat JSON object per metrics row.

``{"ts": 1764086400.5021372, "step": 10, "rank": 0, "host": "node-1", "loss":
1.2, "lr": 0.0003}``: ``ts`` in seconds since 1970 as sent (every digit of
the sender's ``time.time()``), then each metric
under its own name (the line's own names, :data:`roxxel.schema.RESERVED_METRIC_NAMES`,
are not metric names), so that ``pandas.read_json(path, lines=True)`` gives
one column per metric. Floats are Python's shortest round-trip ``repr``;
NaN and the infinities are ``NaN``, ``Infinity`` and ``-Infinity``, as
Python's ``json`` writes and reads them and pandas reads them (strict JSON
has no such numbers). A value the collector could not write (not a scalar)
is ``null``. A row sent with a time out of range
(:func:`roxxel.schema.in_time_range`) has the collector's time as ``ts`` and
ends with ``"sent_ts"``, the time as sent.

The collector writes hundreds of thousands of rows a second, and Python's
float ``repr`` was its largest cost. So a column of finite floats or of
integers is converted in one call to orjson (whose floats are the same
shortest round-trip digits; see :mod:`aggregator.sinks.number_texts`), and a run's lines
are joined from those texts and the constant pieces between them, built
once per keys and column types.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from json.encoder import encode_basestring

from ..metrics_run import FLOATS, INTS, MetricsRun
from .base import FileSink, Origin
from .number_texts import float_texts, int_texts

__all__ = ["MetricsJsonlSink", "json_scalar", "json_string"]

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_string(text: str) -> str:
    """A JSON string; also escapes the characters some readers take for line breaks."""
    encoded = encode_basestring(text)
    if "\x85" in encoded or "\u2028" in encoded or "\u2029" in encoded:
        for char, escape in _LINE_BREAKS.items():
            encoded = encoded.replace(char, escape)
    return encoded


def json_scalar(value: object) -> str:
    """The JSON text of a str, int, float, bool or None."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
        return _NON_FINITE.get(value, "NaN")
    if kind is str:
        return json_string(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return int.__repr__(value)


class MetricsJsonlSink(FileSink):
    def __init__(self, path: str):
        self.path = path
        self._file = self._open()
        self._note_last_line()
        self._keys: dict[str, str] = {}
        self._layouts: dict[tuple, list[str | int]] = {}

    def _key(self, key: str) -> str:
        encoded = self._keys.get(key)
        if encoded is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            encoded = self._keys[key] = json_string(key) + ": "
        return encoded

    def _layout(
        self, keys: tuple[str, ...], cells: tuple[str | None, ...], head: str
    ) -> list[str | int]:
        """A line as constant texts alternating with the indexes of its
        per-row texts: 0 the time, 1 the step, then each metric not written
        into the layout (its cell is None), and last the line's end."""
        cache_key = (keys, cells, head)
        layout = self._layouts.get(cache_key)
        if layout is None:
            if len(self._layouts) > 10_000:
                self._layouts.clear()
            layout = ['{"ts": ', 0, ', "step": ', 1, head]
            column = 2
            for key, cell in zip(keys, cells, strict=True):
                layout[-1] += ", " + self._key(key)
                if cell is None:
                    layout += [column, ""]
                    column += 1
                else:
                    layout[-1] += cell
            layout.append(column)
            self._layouts[cache_key] = layout
        return layout

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        head = f', "rank": {origin.rank}, "host": {json_string(origin.host)}'
        lines = []
        for run in runs:
            # A column of one number is converted once, into the layout; any
            # other column into its values' texts.
            cells: list[str | None] = []
            texts: list[Iterable[str]] = [float_texts(run.ts), int_texts(run.steps)]
            for kind, column, constant in zip(run.types, run.columns, run.constant, strict=True):
                if constant:
                    cells.append(json_scalar(column[0]))
                    continue
                cells.append(None)
                if kind == FLOATS:
                    texts.append(float_texts(column))
                elif kind == INTS:
                    texts.append(int_texts(column))
                else:
                    texts.append(map(json_scalar, column))
            if run.sent_ts is None:
                texts.append(repeat("}\n"))
            else:
                texts.append(map(_end, run.sent_ts))
            layout = self._layout(run.keys, tuple(cells), head)
            # The constant pieces repeat without end; the run's length ends the rows.
            pieces = [repeat(p) if type(p) is str else texts[p] for p in layout]
            rows = zip(*pieces, strict=False)
            lines.append("".join(chain.from_iterable(rows)))
        self._end_last_line()
        self._file.write("".join(lines))


def _end(sent: float | None) -> str:
    """A row's line's end: with the time it was sent with when that was out of range."""
    if sent is None:
        return "}\n"
    return f', "sent_ts": {json_scalar(sent)}}}\n'
