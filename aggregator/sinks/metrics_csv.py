"""``{prefix}_metrics.csv``: header ``step,<keys>``, one row per metrics record.

* Floats are written ``.5f`` (``10,1.23456,3.45600``), except a non-zero value
  below 1e-3 or at least 1e16 in magnitude, which is written with six
  significant digits (``1e-06``, ``0.000297``) so it keeps them;
  NaN and infinities are ``nan``, ``inf``, ``-inf``; integers are exact;
  ``None`` and a key missing from a row are an empty cell.
* Cells are quoted by the ``csv`` module (commas, quotes, newlines).
* A key first seen mid-run widens the header: the file is rewritten once, to
  a temporary dot-file that replaces it atomically, older rows getting empty
  cells. A file that already holds a run is appended to, keeping its header.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

from roxxel.codec import RECORD_METRICS

from .base import FileSink, Origin

__all__ = ["MetricsCsvSink", "format_value"]


def format_value(value: object) -> str:
    if type(value) is float:
        magnitude = abs(value)
        if 1e-3 <= magnitude < 1e16 or magnitude == 0.0 or magnitude == math.inf or value != value:
            return f"{value:.5f}"
        return f"{value:.6g}"
    if value is None:
        return ""
    return str(value)


class MetricsCsvSink(FileSink):
    def __init__(self, path: str):
        self.path = path
        self.keys: list[str] = self._read_header()
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")

    def _read_header(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", newline="") as existing:
                header = next(csv.reader(existing), None)
        except FileNotFoundError:
            return []
        return list(header[1:]) if header else []

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        rows = [r for r in records if r[0] == RECORD_METRICS]
        if not rows:
            return
        known = set(self.keys)
        new_keys: list[str] = []
        for _, _, _, metrics in rows:
            for key in metrics:
                if key not in known:
                    known.add(key)
                    new_keys.append(key)
        if new_keys:
            self._widen(new_keys)
        keys = self.keys
        self._writer.writerows(
            [step, *[format_value(metrics.get(k)) for k in keys]] for _, _, step, metrics in rows
        )

    def _widen(self, new_keys: list[str]) -> None:
        first = not self.keys and self._file.tell() == 0
        self.keys = self.keys + new_keys
        if first:
            self._writer.writerow(["step", *self.keys])
            return
        self._file.flush()
        directory, name = os.path.split(self.path)
        tmp = os.path.join(directory, f".{name}.widen.tmp")
        width = len(self.keys) + 1
        with (
            open(self.path, encoding="utf-8", newline="") as old,
            open(tmp, "w", encoding="utf-8", newline="") as new,
        ):
            reader = csv.reader(old)
            next(reader, None)
            writer = csv.writer(new, lineterminator="\n")
            writer.writerow(["step", *self.keys])
            writer.writerows(row + [""] * (width - len(row)) for row in reader)
            new.flush()
            os.fsync(new.fileno())
        self._file.close()
        os.replace(tmp, self.path)
        _fsync_dir(directory)
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
