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


def json_scalar(value: object) -> str:
    """The JSON text of a str, int, float, bool or None."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
        return _NON_FINITE.get(value, '"nan"')
    if kind is str:
        return encode_basestring(value)
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

    def _key(self, key: str) -> str:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = self._keys[key] = encode_basestring(key) + ": "
        return encoded

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        key = self._key
        head = f', "rank": {origin.rank}, "host": {encode_basestring(origin.host)}, "metrics": {{'
        lines = [
            f'{{"ts": {float.__repr__(float(ts))}, "step": {step}{head}'
            + ", ".join([key(k) + json_scalar(v) for k, v in metrics.items()])
            + "}}\n"
            for kind, ts, step, metrics in records
            if kind in METRICS_KINDS
        ]
        if lines:
            self._file.write("".join(lines))
