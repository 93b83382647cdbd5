"""``{prefix}_metrics.jsonl``: one JSON object per metrics record.

``{"ts": 1764086400.5, "step": 10, "rank": 0, "host": "node-1",
"metrics": {"loss": 1.2}}``. JSON has no NaN or infinity, so those values are
the strings ``"nan"``, ``"inf"`` and ``"-inf"``.

Lines are assembled from pre-encoded pieces rather than through
``json.dumps`` of a dict per record: the collector writes hundreds of
thousands of rows a second, and the generic encoder was its largest cost.
Every value that reaches a sink is a JSON scalar (the collector drops the rest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from json.encoder import encode_basestring

from roxxel.codec import METRICS_KINDS

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
            encoded = self._keys[key] = json_string(key) + ": "
        return encoded

    def _format(self, keys: tuple) -> str:
        """A %-format for a metrics map of these keys whose values are all finite floats."""
        fmt = self._formats.get(keys)
        if fmt is None:
            if len(self._formats) > 10_000:
                self._formats.clear()
            fmt = self._formats[keys] = ", ".join(
                self._key(k).replace("%", "%%") + "%r" for k in keys
            )
        return fmt

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        key = self._key
        head = f', "rank": {origin.rank}, "host": {json_string(origin.host)}, "metrics": {{'
        lines = []
        for kind, ts, step, metrics in records:
            if kind not in METRICS_KINDS:
                continue
            values = tuple(metrics.values())
            # sum() is finite only if every value is: NaN and inf need the slow path.
            if values and set(map(type, values)) == _FLOAT and (total := sum(values)) - total == 0:
                body = self._format(tuple(metrics)) % values
            else:
                body = ", ".join([key(k) + json_scalar(v) for k, v in metrics.items()])
            lines.append(f'{{"ts": {float.__repr__(float(ts))}, "step": {step}{head}{body}}}}}\n')
        if lines:
            self._file.write("".join(lines))


_FLOAT = {float}
