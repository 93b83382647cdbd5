"""``{prefix}_metrics.csv``: header ``step,<keys>``, one row per metrics record.

* Floats are written ``.5f`` (``10,1.23456,3.45600``), except a non-zero value
  below 1e-3 or at least 1e16 in magnitude, which is written with six
  significant digits (``1e-06``, ``0.000297``) so it keeps them;
  NaN and infinities are ``nan``, ``inf``, ``-inf``; integers are exact;
  ``None`` and a key missing from a row are an empty cell.
* Cells are quoted by the ``csv`` module (commas, quotes, newlines); a
  carriage return in text is stored as a newline.
* A key first seen mid-run widens the header: the file is rewritten once, to
  a temporary dot-file that replaces it atomically, older rows getting empty
  cells. A file that already holds a run is appended to, keeping its header.
* Its mark is the file size and the header's keys; rewinding past a widening
  keeps the rows that were within the mark (now with the wider header).
* Rows logged with ``all_ranks=True`` (``"r"`` records) fill a ``rank``
  column, added like any new key (first, if the run starts with such a
  row); rank 0's plain rows leave it empty. Without such rows the file is
  exactly the original format.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import IO, Any

from roxxel.codec import MAX_STR_LEN, METRICS_KINDS, RECORD_RANKED_METRICS

from ..checkpoint import replace_file
from .base import FileSink, Origin, truncate_to

__all__ = ["MetricsCsvSink", "format_value", "RANK_COLUMN"]

RANK_COLUMN = "rank"


# Rows are read back when the header widens or the file is rewound; a text
# value may be as long as a record allows.
csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_STR_LEN))


def _six_digits(values: list) -> tuple[bool, ...] | None:
    """For a row of floats, which take ``.6g`` in :func:`format_value`; ``None`` otherwise."""
    if not values or set(map(type, values)) != _FLOAT:
        return None
    magnitudes = list(map(abs, values))
    if min(magnitudes) >= 1e-3 and max(magnitudes) < 1e16:
        return _NONE_SMALL  # the common row: no per-value test
    return tuple(not (1e-3 <= m < 1e16 or m == 0.0 or m == math.inf or m != m) for m in magnitudes)


_FLOAT = {float}
_NONE_SMALL: tuple[bool, ...] = ()


def format_value(value: object) -> str:
    if type(value) is float:
        magnitude = abs(value)
        if 1e-3 <= magnitude < 1e16 or magnitude == 0.0 or magnitude == math.inf or value != value:
            return f"{value:.5f}"
        return f"{value:.6g}"
    if value is None:
        return ""
    text = str(value)
    if "\r" in text:
        # The writer quotes "\n" (its line terminator) but not a lone "\r",
        # which a reader takes for a line end: store line ends as "\n".
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class MetricsCsvSink(FileSink):
    def __init__(self, path: str):
        self.path = path
        self.keys: list[str] = self._read_header()
        self._file = self._open()
        self._headed = os.fstat(self._file.fileno()).st_size > 0
        self._writer = csv.writer(self._file, lineterminator="\n")
        # Rows of plain floats (the common case) are one %-format call each;
        # any other row goes through the csv module, into this buffer.
        self._formats: dict[tuple[int, int, tuple[bool, ...]], tuple[str, str]] = {}
        self._slow_buffer = io.StringIO()
        self._slow = csv.writer(self._slow_buffer, lineterminator="\n")

    def _read_header(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", newline="") as existing:
                header = next(csv.reader(existing), None)
        except FileNotFoundError:
            return []
        return list(header[1:]) if header else []

    def write(self, origin: Origin, records: Sequence[list]) -> None:
        rows = [r for r in records if r[0] in METRICS_KINDS]
        if not rows:
            return
        known = set(self.keys)
        new_keys: list[str] = []
        for kind, _, _, metrics in rows:
            if kind == RECORD_RANKED_METRICS and RANK_COLUMN not in known:
                known.add(RANK_COLUMN)
                new_keys.append(RANK_COLUMN)
            for key in metrics:
                if key not in known:
                    known.add(key)
                    new_keys.append(key)
        if new_keys or not self._headed:
            self._widen(new_keys)
        keys = self.keys
        rank_at = keys.index(RANK_COLUMN) if RANK_COLUMN in known else -1
        values_of = [k for k in keys if k != RANK_COLUMN]
        slow = self._slow
        out = []
        for kind, _, step, metrics in rows:
            values = [metrics.get(k) for k in values_of]
            is_ranked = rank_at >= 0 and kind == RECORD_RANKED_METRICS
            small = _six_digits(values)
            if small is not None:
                plain, ranked = self._row_formats(len(keys), rank_at, small)
                if is_ranked:
                    values.insert(rank_at, origin.rank)
                    out.append(f"{step},{ranked % tuple(values)}\n")
                else:
                    out.append(f"{step},{plain % tuple(values)}\n")
                continue
            row = [step, *[format_value(v) for v in values]]
            if rank_at >= 0:
                row.insert(rank_at + 1, origin.rank if is_ranked else "")
            slow.writerow(row)
            out.append(self._slow_buffer.getvalue())
            self._slow_buffer.seek(0)
            self._slow_buffer.truncate()
        self._file.write("".join(out))

    def _row_formats(self, width: int, rank_at: int, small: tuple[bool, ...]) -> tuple[str, str]:
        """%-formats of a row of floats (``.5f``, ``.6g`` where ``small``):
        without and with the rank's ``%d``."""
        key = (width, rank_at, small)
        formats = self._formats.get(key)
        if formats is None:
            if len(self._formats) > 10_000:
                self._formats.clear()
            six = iter(small or [False] * width)
            cells = [
                "" if i == rank_at else ("%.6g" if next(six) else "%.5f") for i in range(width)
            ]
            plain = ",".join(cells)
            if rank_at >= 0:
                cells[rank_at] = "%d"
            formats = self._formats[key] = (plain, ",".join(cells))
        return formats

    def _widen(self, new_keys: list[str]) -> None:
        first = not self._headed
        self.keys = self.keys + new_keys
        if first:
            self._writer.writerow(["step", *self.keys])
            self._headed = True
            return
        self._file.flush()
        with open(self.path, encoding="utf-8", newline="") as old:
            reader = csv.reader(old)
            next(reader, None)
            self._rewrite(list(reader))

    def _rewrite(self, rows: list[list[str]]) -> None:
        """Replace the file atomically with the current header and ``rows`` padded to it."""
        directory, name = os.path.split(self.path)
        width = len(self.keys) + 1

        def write(new: IO[str]) -> None:
            writer = csv.writer(new, lineterminator="\n")
            writer.writerow(["step", *self.keys])
            writer.writerows(row + [""] * (width - len(row)) for row in rows)

        self._file.close()
        try:
            replace_file(self.path, write, os.path.join(directory, f".{name}.widen.tmp"))
        finally:
            self._file = self._open()
            self._writer = csv.writer(self._file, lineterminator="\n")

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def reopen(self) -> None:
        super().reopen()
        self.keys = self._read_header()
        self._headed = os.fstat(self._file.fileno()).st_size > 0
        self._writer = csv.writer(self._file, lineterminator="\n")

    def mark(self) -> Any:
        return {"size": os.fstat(self._file.fileno()).st_size, "keys": list(self.keys)}

    def rewind(self, mark: Any) -> None:
        self._file.flush()
        keys, size = list(mark["keys"]), mark["size"]
        if keys == self.keys or size == 0:
            truncate_to(self.path, self._file.fileno(), size)
            self.keys = keys if size else []
            self._headed = size > 0
            return
        if self.keys[: len(keys)] != keys:
            raise OSError(f"{self.path}: header {self.keys} does not extend {keys}")
        # Widened since the mark: keep the rows that then fitted in `size` bytes.
        used = len(_csv_line(["step", *keys]))
        kept: list[list[str]] = []
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                if used >= size:
                    break
                used += len(_csv_line(row[: len(keys) + 1]))
                kept.append(row)
        if used != size:
            raise OSError(f"{self.path}: its rows do not add up to the {size} bytes recorded")
        self._rewrite(kept)


def _csv_line(row: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode("utf-8")
