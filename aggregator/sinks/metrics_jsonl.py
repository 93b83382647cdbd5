"""``{prefix}_metrics.jsonl``: one JSON object per metrics record.

``{"ts": 1764086400.5, "step": 10, "rank": 0, "host": "node-1",
"metrics": {"loss": 1.2}}``. JSON has no NaN or infinity, so those values are
the strings ``"nan"``, ``"inf"`` and ``"-inf"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from roxxel.codec import RECORD_METRICS

from .base import FileSink, Origin

__all__ = ["MetricsJsonlSink"]


def _json_value(value: object) -> object:
    if type(value) is float and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return value


class MetricsJsonlSink(FileSink):
    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._encode = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        encode = self._encode
        lines = [
            encode(
                {
                    "ts": ts,
                    "step": step,
                    "rank": origin.rank,
                    "host": origin.host,
                    "metrics": {k: _json_value(v) for k, v in metrics.items()},
                }
            )
            + "\n"
            for kind, ts, step, metrics in records
            if kind == RECORD_METRICS
        ]
        if lines:
            self._file.write("".join(lines))
