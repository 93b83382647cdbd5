"""``{prefix}_metrics.csv``: header ``step,<keys>``, one row per metrics record.

* Floats are written ``.5f`` (``10,1.23456,3.45600``), except a non-zero value
  below 1e-3 or at least 1e16 in magnitude, which is written with six
  significant digits (``1e-06``, ``0.000297``) so it keeps them;
  NaN and infinities are ``nan``, ``inf``, ``-inf``; integers are exact;
  ``None`` and a key missing from a row are an empty cell. With
  ``floats="full"`` (:data:`CSV_FLOATS`), a finite float is its shortest
  round-trip ``repr`` instead (``0.0012345678``, ``1e-06``): every digit.
* Cells are quoted by the ``csv`` module (commas, quotes, newlines); a
  carriage return in text is stored as a newline, other control characters
  but a tab as ``\\xNN`` (as in the system log); a text value that starts
  with ``= + - @`` or a tab and is not a number gets a leading ``'`` (a
  spreadsheet would run it as a formula).
* A header cell is its metric's name on one line: the same leading ``'``,
  and every control character but a tab (newlines included) as ``\\xNN``
  (:func:`header_cell`). Two names that give the same cell (``=x`` and
  ``'=x``) share its column; the JSONL keeps them apart.
* A key first seen mid-run widens the header. In a small file (under
  RESERVE_FROM bytes) the file is rewritten, to a temporary dot-file that
  replaces it atomically, older rows getting empty cells: the original
  format. A larger file is rewritten so only when the header outgrows the
  room kept after it: a rewrite leaves blank lines after the header (twice
  its length, at least 4 KiB), and a new key takes its bytes there, the
  header rewritten in place; older rows then end before the new columns
  (``pandas.read_csv`` and ``csv.DictReader`` skip blank lines and read a
  short row's missing cells as missing: NaN, ``restval``). So names that keep appearing cost
  amortised O(new names), not O(file), and the header only ever grows.
  A file that already holds a run is appended to, keeping its header; one
  whose last line has no line end (written by hand, cut short) gets one
  first, so the next row does not run on from it.
* Its mark is the file size, the header's keys and the bytes before the
  first row; rewinding past a widening keeps the rows that were within the
  mark (under the wider header).
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
from itertools import repeat
from typing import IO, Any

from roxxel.codec import MAX_STR_LEN
from roxxel.lines import escape_controls, printable
from roxxel.schema import CSV_FLOATS, RECORD_RANKED_METRICS

from ..checkpoint import replace_file
from ..metrics_run import FLOATS, INTS, MetricsRun
from .base import FileSink, Origin, truncate_to
from .number_texts import float_texts

__all__ = [
    "MetricsCsvSink",
    "format_value",
    "csv_cell",
    "header_cell",
    "RANK_COLUMN",
]

RANK_COLUMN = "rank"
# From this size on, a widening leaves room after the header (see above).
RESERVE_FROM = 64 * 1024
_MIN_RESERVE = 4096


# Rows are read back when the header widens or the file is rewound; a text
# value may be as long as a record allows.
csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_STR_LEN))


CONVERSIONS = frozenset({"%d", "%.5f", "%.6g", "%s"})


# Below _SMALL or from _LARGE on (and not 0, inf or NaN), .5f would lose the
# digits: six significant ones instead.
_SMALL, _LARGE = 1e-3, 1e16


def _float_format(column: tuple[float, ...]) -> str | None:
    """The %-conversion that gives what :func:`format_value` gives each of
    these finite floats, or ``None`` when they do not share one."""
    low, high = min(column), max(column)
    if high < 0.0:  # all negative: the same magnitudes, mirrored
        low, high = -high, -low
    elif low <= 0.0:  # both signs, or zeros
        low, high = min(map(abs, column)), max(map(abs, column))
    if high < _LARGE and (low >= _SMALL or high == 0.0):
        return "%.5f"
    if low > 0.0 and (high < _SMALL or low >= _LARGE):
        return "%.6g"
    return None


def format_value(value: object, full: bool = False) -> str:
    """The text of a cell (before quoting); ``full``: floats as ``repr``."""
    if type(value) is float:
        if full and math.isfinite(value):
            return float.__repr__(value)
        magnitude = abs(value)
        if _SMALL <= magnitude < _LARGE or magnitude in (0.0, math.inf) or value != value:
            return f"{value:.5f}"
        return f"{value:.6g}"
    if value is None:
        return ""
    text = str(value)
    if type(value) is not str:
        return text
    if not text.isprintable():  # one C-level scan for the rare text that needs work
        # The writer quotes "\n" (its line terminator) but not a lone "\r",
        # which a reader takes for a line end: line ends as "\n". An ESC or a
        # NUL would reach whoever cats the file: as in the system log, \xNN.
        text = escape_controls(text)
    return _guarded(text)


def header_cell(key: str) -> str:
    """The header cell of metric ``key``: on one line, control characters
    as ``\\xNN``, guarded as a text value is."""
    return _guarded(printable(key))


def _guarded(text: str) -> str:
    if text[:1] in _FORMULA_STARTS and not _is_number(text):
        # A spreadsheet would run "=cmd|..." as a formula: a leading quote
        # makes it text (OWASP's CSV injection advice).
        return "'" + text
    return text


_FORMULA_STARTS = frozenset("=+-@\t")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(value: object, full: bool = False) -> str:
    """The cell of ``value`` as the csv module writes it (quoted when it must be)."""
    text = format_value(value, full)
    if "," in text or '"' in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


class MetricsCsvSink(FileSink):
    def __init__(self, path: str, floats: str = "original"):
        if floats not in CSV_FLOATS:
            raise ValueError(f"floats is one of {', '.join(CSV_FLOATS)}, not {floats!r}")
        self.path = path
        self._full = floats == "full"
        # The header's cells ("step" left out); the bytes before the first row
        # (the header line and the blank lines kept after it).
        self.keys: list[str] = []
        self._region = 0
        self._read_header()
        self._cells: dict[str, str] = {}  # a metric's name: its header cell
        self._file = self._open()
        self._note_last_line()
        self._headed = os.fstat(self._file.fileno()).st_size > 0
        self._writer = csv.writer(self._file, lineterminator="\n")
        # One %-format per row of a run, cached per keys and column formats
        # under the current header (cleared when the header changes).
        self._formats: dict[tuple, tuple[str, Any]] = {}

    def _read_header(self) -> None:
        """The header's keys, and the room kept after it, from the file."""
        try:
            with open(self.path, encoding="utf-8", newline="") as existing:
                header = next(csv.reader(existing), None)
            line = _csv_line(header) if header else b""
            with open(self.path, "rb") as existing:
                self._region = _room_end(existing, line)
        except FileNotFoundError:
            header, self._region = None, 0
        if header and header[0] != "step":
            # Another program's CSV (Lightning's sorts "step" among its names):
            # appended to, its columns would be taken for ours, shifted.
            raise OSError(
                f"{self.path} is not a roxxel metrics CSV: its header starts with "
                f"{printable(header[0])!r}, not 'step'; move it away or choose another prefix"
            )
        self.keys = list(header[1:]) if header else []

    def _cell(self, key: str) -> str:
        cell = self._cells.get(key)
        if cell is None:
            if len(self._cells) > 100_000:
                self._cells.clear()
            cell = self._cells[key] = header_cell(key)
        return cell

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        self._end_last_line()
        known = set(self.keys)
        new_keys: list[str] = []
        for run in runs:
            if run.kind == RECORD_RANKED_METRICS and RANK_COLUMN not in known:
                known.add(RANK_COLUMN)
                new_keys.append(RANK_COLUMN)
            for key in run.keys:
                cell = self._cell(key)
                if cell not in known:
                    known.add(cell)
                    new_keys.append(cell)
        if new_keys or not self._headed:
            self._widen(new_keys)
        self._file.write("".join([self._text(run, origin.rank) for run in runs]))

    def _text(self, run: MetricsRun, rank: int) -> str:
        """The CSV lines of ``run``, one %-format per row.

        A column of integers, or of floats that all take the same one of
        ``.5f``/``.6g``, is converted by the format itself; a column of one
        number (a learning rate, an epoch) is formatted once, into the format;
        any other column is turned into cell texts first, value by value.
        """
        cells: list[str] = []
        columns: list[tuple] = []
        for kind, column, constant in zip(run.types, run.columns, run.constant, strict=True):
            if constant:
                cell = format_value(column[0], self._full)  # a number: nothing to quote
            elif kind == INTS:
                cell = "%d"
            elif kind == FLOATS and self._full:
                cell, column = "%s", float_texts(column)
            else:
                cell = _float_format(column) if kind == FLOATS else None
                if cell is None:
                    cell, column = "%s", tuple(map(csv_cell, column, repeat(self._full)))
            cells.append(cell)
            columns.append(column)
        rank_cell = str(rank) if run.kind == RECORD_RANKED_METRICS else ""
        fmt, order = self._run_format(run.keys, tuple(cells), rank_cell)
        rows = zip(run.steps, *[columns[i] for i in order], strict=True)
        return "".join(map(fmt.__mod__, rows))

    def _run_format(
        self, keys: tuple[str, ...], cells: tuple[str, ...], rank_cell: str
    ) -> tuple[str, list[int]]:
        """The %-format of a row of ``keys`` under the current header, and
        which of the run's columns it takes, in header order."""
        cache_key = (keys, cells, rank_cell)
        found = self._formats.get(cache_key)
        if found is None:
            if len(self._formats) > 10_000:
                self._formats.clear()
            at = {self._cell(key): i for i, key in enumerate(keys)}
            # Per header column: the index of its values in the run, or the cell's text.
            layout = [
                rank_cell if rank_cell and key == RANK_COLUMN else at.get(key, "")
                for key in self.keys
            ]
            text = ["%d", *[cells[c] if type(c) is int else c for c in layout]]
            order = [c for c in layout if type(c) is int and cells[c] in CONVERSIONS]
            found = self._formats[cache_key] = (",".join(text) + "\n", order)
        return found

    def _widen(self, new_keys: list[str]) -> None:
        first = not self._headed
        old = self.keys
        self.keys = self.keys + new_keys
        self._formats.clear()
        if first:
            self._writer.writerow(["step", *self.keys])
            self._headed = True
            self._region = len(_csv_line(["step", *self.keys]))
            return
        self._file.flush()
        if self._widen_in_place(old):
            return
        if not self.holds_path():
            # Renamed by a rotation, not reopened yet: the old rows stay in the
            # rotated file, the new header starts the file at the path.
            self._rewrite([])
            return
        with open(self.path, encoding="utf-8", newline="") as old:
            reader = csv.reader(old)
            next(reader, None)
            self._rewrite([row for row in reader if row])  # not the room's blank lines

    def _widen_in_place(self, old: list[str]) -> bool:
        """The new cells into the room after the header, if it has enough."""
        before, after = _csv_line(["step", *old]), _csv_line(["step", *self.keys])
        room = self._region - len(before)
        grown = after[len(before) - 1 :]  # from the old line's newline on
        if not after.startswith(before[:-1]) or len(grown) - 1 > room:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            # The descriptor of this sink appends (O_APPEND ignores an offset).
            if os.fstat(fd).st_ino != os.fstat(self._file.fileno()).st_ino:
                return False  # renamed by a rotation: not this file
            os.pwrite(fd, grown, len(before) - 1)
        finally:
            os.close(fd)
        self._synced_size = -1
        return True

    def _rewrite(self, rows: list[list[str]]) -> None:
        """Replace the file atomically with the current header and ``rows`` padded to it."""
        directory, name = os.path.split(self.path)
        width = len(self.keys) + 1

        header = _csv_line(["step", *self.keys])
        # A large file keeps room after its header for the next names.
        size = sum(map(len, map(_csv_line, rows)))
        room = max(_MIN_RESERVE, 2 * len(header)) if size >= RESERVE_FROM else 0

        def write(new: IO[str]) -> None:
            writer = csv.writer(new, lineterminator="\n")
            writer.writerow(["step", *self.keys])
            if room:
                # Rows keep their bytes (a rewind measures them): short ones stay short.
                new.write("\n" * room)
                writer.writerows(rows)
            else:
                writer.writerows(row + [""] * (width - len(row)) for row in rows)

        self._file.close()
        try:
            replace_file(self.path, write, os.path.join(directory, f".{name}.widen.tmp"))
        finally:
            self._file = self._open()
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._synced_size = -1
            self._note_last_line()
        self._region = len(header) + room

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def reopen(self) -> None:
        super().reopen()
        self._read_header()
        self._formats.clear()
        self._headed = os.fstat(self._file.fileno()).st_size > 0
        self._writer = csv.writer(self._file, lineterminator="\n")

    def mark(self) -> Any:
        size = os.fstat(self._file.fileno()).st_size
        return {"size": size, "keys": list(self.keys), "region": self._region}

    def rewind(self, mark: Any) -> None:
        self._file.flush()
        keys, size = list(mark["keys"]), mark["size"]
        self._formats.clear()
        region = mark.get("region")  # None: a mark of an older roxxel
        if (
            size == 0
            or keys == self.keys
            or (
                # Widened in place since the mark: the rows did not move.
                region == self._region and self.keys[: len(keys)] == keys and size >= region
            )
        ):
            truncate_to(self.path, self._file.fileno(), size)
            self._synced_size = -1
            if not size:
                self.keys, self._region = [], 0
            self._headed = size > 0
            self._note_last_line()
            return
        if self.keys[: len(keys)] != keys:
            raise OSError(f"{self.path}: header {self.keys} does not extend {keys}")
        # Rewritten since the mark: keep the rows that then fitted in `size` bytes.
        used = len(_csv_line(["step", *keys])) if region is None else region
        kept: list[list[str]] = []
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                if used >= size:
                    break
                if not row:
                    continue  # the room after the header
                used += len(_csv_line(row[: len(keys) + 1]))
                kept.append(row)
        if used != size:
            raise OSError(f"{self.path}: its rows do not add up to the {size} bytes recorded")
        self._rewrite(kept)


def _room_end(f: IO[bytes], line: bytes) -> int:
    """Where the first row starts: after the header ``line`` and the blank lines
    right after it (only after a header of one physical line)."""
    if not line or f.read(len(line)) != line:
        return len(line)
    end = len(line)
    while chunk := f.read(1 << 16):
        blank = len(chunk) - len(chunk.lstrip(b"\n"))
        end += blank
        if blank < len(chunk):
            break
    return end


def _csv_line(row: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode("utf-8")
