"""``{prefix}_metrics.jsonl``: one JSON object per metrics record.

``{"ts": 1764086400.500, "step": 10, "rank": 0, "host": "node-1",
"metrics": {"loss": 1.2}}``: ``ts`` in seconds with milliseconds, floats
as Python's shortest round-trip ``repr``. JSON has no NaN or infinity, so
those values are the strings ``"nan"``, ``"inf"`` and ``"-inf"``; a value
the collector could not write (not a scalar) is ``null``. A row sent with a
time out of range (:func:`roxxel.schema.in_time_range`) has the collector's
time as ``ts`` and ends with ``"sent_ts"``, the time as sent (a number, or
``"nan"``, ``"inf"``, ``"-inf"``). Metric names are keys of ``metrics``,
never of the line itself.

Lines are assembled from pre-encoded pieces rather than through
``json.dumps`` of a dict per record: the collector writes hundreds of
thousands of rows a second, and the generic encoder was its largest cost.
Each line is one %-format, built once per keys and column types (see
:mod:`aggregator.metrics_run`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from json.encoder import encode_basestring

from ..metrics_run import FLOATS, INTS, MIXED, MetricsRun
from .base import FileSink, Origin

__all__ = ["MetricsJsonlSink", "json_scalar"]

_NON_FINITE = {math.inf: '"inf"', -math.inf: '"-inf"'}


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
        return _NON_FINITE.get(value, '"nan"')
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
        self._keys: dict[str, str] = {}
        self._formats: dict[tuple, str] = {}

    def _key(self, key: str) -> str:
        encoded = self._keys.get(key)
        if encoded is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            encoded = self._keys[key] = json_string(key) + ": "
        return encoded

    def _format(self, keys: tuple[str, ...], cells: tuple[str, ...], head: str) -> str:
        """The %-format of a line: ``ts``, ``step``, then a value per key."""
        cache_key = (keys, cells, head)
        fmt = self._formats.get(cache_key)
        if fmt is None:
            if len(self._formats) > 10_000:
                self._formats.clear()
            body = ", ".join(
                self._key(k).replace("%", "%%") + c for k, c in zip(keys, cells, strict=True)
            )
            fmt = self._formats[cache_key] = (
                '{"ts": %.3f, "step": %d' + head.replace("%", "%%") + body + "}}\n"
            )
        return fmt

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        head = f', "rank": {origin.rank}, "host": {json_string(origin.host)}, "metrics": {{'
        lines = []
        for run in runs:
            # Finite floats and ints are converted by the format itself, a
            # column of one number is converted once, into the format; other
            # columns become JSON texts first, value by value.
            cells: list[str] = []
            columns: list[tuple] = []
            for kind, column, constant in zip(run.types, run.columns, run.constant, strict=True):
                if constant:
                    cells.append(json_scalar(column[0]))
                    continue
                if kind == MIXED:
                    column = tuple(map(json_scalar, column))
                cells.append(_CELLS.get(kind, "%s"))
                columns.append(column)
            fmt = self._format(run.keys, tuple(cells), head)
            rows = map(fmt.__mod__, zip(run.ts, run.steps, *columns, strict=True))
            if run.sent_ts is not None:
                rows = map(_with_sent_ts, rows, run.sent_ts)
            lines.append("".join(rows))
        self._file.write("".join(lines))


def _with_sent_ts(line: str, sent: float | None) -> str:
    """A row's line, ending with the time it was sent with when that was out of range."""
    if sent is None:
        return line
    return f'{line[:-2]}, "sent_ts": {json_scalar(sent)}}}\n'


_CELLS = {FLOATS: "%r", INTS: "%d"}
