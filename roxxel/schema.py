"""The records a batch carries: their kinds, limits and validation, and how a
client groups metrics rows -- the schema inside a frame's body (the frames
themselves are :mod:`roxxel.codec`). Pure functions, no I/O.

Records inside a batch are small arrays:

* ``["l", ts, level, text]`` -- a system-log line (``level`` is a stdlib
  logging level number); ``["l", ts, level, text, name]`` when the sender's
  ``logging`` names a level the standard ones do not (``addLevelName``): the
  collector, another process, could not know it;
* ``["m", keys, ts, steps, values]`` -- a run of metrics rows with the same
  keys: ``keys`` the metric names, then per row its timestamp, its step and
  its ``[value, ...]`` (a value per key, in ``keys`` order). A client sends
  consecutive rows with the same keys as one such record
  (:func:`metrics_records`): the names travel once per run, and the
  collector checks and formats a run column by column instead of row by row;
* ``["r", keys, ts, steps, values]`` -- the same, logged with
  ``all_ranks=True``: written with the sender's rank in a ``rank`` column;
  so ``step`` and ``rank``, the CSV's own columns, and ``ts``, ``host`` and
  ``sent_ts``, the JSONL's, are not metric names (:data:`RESERVED_METRIC_NAMES`);
* ``["d", ts, metrics, lines]`` -- how many records the client dropped
  (its buffer was full) since its last such report;
* ``["x", ts, level, text]`` -- a death notice: the sender's process ended
  abnormally (sent by its watcher, :mod:`roxxel.watcher`); written like a
  log line, and remembered for the run's summary of failures.

A metric value that is not a scalar travels as ``{NON_SCALAR: description}``
(:mod:`roxxel.values` makes it); the collector reports it once per key and
writes nothing for it. An int beyond msgpack's 64 bits -- a value, a step, a
level -- travels as ``{BIG_INT: its decimal digits}``, so that it is written
exactly. A text longer than :data:`MAX_TEXT_CHARS` characters is written cut
there, ending with :data:`TRUNCATED` (:func:`cut_text`): a message by the
client, a metric's text value by the collector.

A record's timestamp is any number (seconds since 1970). The collector
writes one outside :func:`in_time_range` -- not finite, before 1970, or more
than :data:`MAX_AHEAD` seconds past its own clock -- with its own time,
marked (:func:`roxxel.lines.within_time`): a wrong clock or a hostile peer
cannot date a line to year -1168, and no record is lost for its date.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from .codec import MAX_STR_LEN, wire_repr

__all__ = [
    "RECORD_LOG",
    "RECORD_METRICS",
    "RECORD_RANKED_METRICS",
    "RECORD_DROPPED",
    "RECORD_DEATH",
    "METRICS_KINDS",
    "NON_SCALAR",
    "BIG_INT",
    "TRUNCATED",
    "MAX_TEXT_CHARS",
    "cut_text",
    "big_int",
    "MIN_TIMESTAMP",
    "MAX_AHEAD",
    "RESERVED_METRIC_NAMES",
    "MAX_METRIC_KEYS",
    "MAX_KEY_LEN",
    "MAX_PREFIX_BYTES",
    "MAX_LEVEL_NAME",
    "STANDARD_LEVELS",
    "METRICS_FILES",
    "DEFAULT_METRICS_FILES",
    "CSV_FLOATS",
    "check_file_options",
    "is_run_name",
    "RUN_NAME_RULE",
    "check_record",
    "all_log_lines",
    "check_metric_keys",
    "in_time_range",
    "times_in_range",
    "metrics_records",
]

RECORD_LOG = "l"
RECORD_METRICS = "m"
RECORD_RANKED_METRICS = "r"
RECORD_DROPPED = "d"
RECORD_DEATH = "x"
METRICS_KINDS = (RECORD_METRICS, RECORD_RANKED_METRICS)
NON_SCALAR = "__roxxel_non_scalar__"
BIG_INT = "__roxxel_int__"
TRUNCATED = " …[truncated by roxxel]"
# What one string of a frame (codec.MAX_STR_LEN bytes) holds whatever its
# characters (UTF-8 takes up to 4 bytes a character), with TRUNCATED.
MAX_TEXT_CHARS = MAX_STR_LEN // 4 - len(TRUNCATED)
STANDARD_LEVELS = frozenset(range(0, 60, 10))  # NOTSET .. CRITICAL: no name sent
MAX_LEVEL_NAME = 64  # characters of a level's name
# A run's metrics files (besides its system log), and those it gets by
# default; how its CSV writes floats: the original's .5f rule, or every digit.
METRICS_FILES = ("csv", "jsonl", "tensorboard")
DEFAULT_METRICS_FILES = ("csv", "jsonl")
CSV_FLOATS = ("original", "full")

# The window of times written as sent (see in_time_range). From the epoch:
# before it only a broken or hostile clock dates a record, and localtime()
# gives odd years for it, or refuses it (Windows). To a day ahead: beyond
# any honest clock's skew.
MIN_TIMESTAMP = 0.0
MAX_AHEAD = 86_400.0
# The files' own columns: a metric so named would repeat "step" in the CSV's
# header (pandas reads it as "step.1", csv.DictReader keeps the last), be
# taken for, and overwritten by, the sender's rank of all_ranks rows, or
# repeat a key of a JSONL line (whose metrics are keys of the line itself).
RESERVED_METRIC_NAMES = ("step", "rank", "ts", "host", "sent_ts")
MAX_METRIC_KEYS = 4096
MAX_KEY_LEN = 1024

# A run's name (a Logger's filename_prefix) names its files in the log dir,
# the longest being ".{prefix}_checkpoint.json.tmp": within a file name's 255 bytes.
MAX_PREFIX_BYTES = 200

_KIND, _KEYS = itemgetter(0), itemgetter(1)
_NUMBERS = {int, float}
_RESERVED = frozenset(RESERVED_METRIC_NAMES)


def metrics_records(entries: Iterable[tuple]) -> list[tuple]:
    """Wire records for metrics rows as a client queues them.

    An entry is ``(kind, keys, ts, step, values)``; consecutive entries with
    the same kind and keys become one ``[kind, keys, ts, steps, values]`` record.
    """
    records = []
    # A Logger queues the same keys object while the names do not change:
    # grouping by it compares identities.
    for keys, run in itertools.groupby(entries, _KEYS):
        kinds, _, ts, steps, values = zip(*run, strict=True)
        if kinds.count(kinds[0]) == len(kinds):
            records.append((kinds[0], keys, ts, steps, values))
            continue
        for kind, part in itertools.groupby(zip(kinds, ts, steps, values, strict=True), _KIND):
            _, ts, steps, values = zip(*part, strict=True)
            records.append((kind, keys, ts, steps, values))
    return records


def check_metric_keys(keys: Sequence[Any]) -> str | None:
    """Return why ``keys`` are not valid metric names, or ``None`` when they are."""
    if len(keys) > MAX_METRIC_KEYS:
        return f"at most {MAX_METRIC_KEYS} metrics per row"
    for key in keys:
        if type(key) is not str:
            return f"metric names are str, not {type(key).__name__} ({wire_repr(key)})"
        if not 0 < len(key) <= MAX_KEY_LEN:
            return f"a metric name has 1 to {MAX_KEY_LEN} characters, not {len(key)}"
    if len(set(keys)) != len(keys):
        return "metric names repeat"
    if not _RESERVED.isdisjoint(keys):
        name = next(key for key in keys if key in _RESERVED)
        return (
            f"metric name {name!r} is reserved: roxxel's metrics files have their own "
            "columns named " + ", ".join(map(repr, RESERVED_METRIC_NAMES))
        )
    return None


def check_file_options(metrics_files: Sequence[str], csv_floats: str) -> str | None:
    """Why a collector cannot write a run's files so, or ``None``: one or more
    of :data:`METRICS_FILES`, and one of :data:`CSV_FLOATS`."""
    if not metrics_files or any(name not in METRICS_FILES for name in metrics_files):
        given = ", ".join(map(repr, metrics_files)) or "none"
        return f"metrics files are one or more of {', '.join(METRICS_FILES)}, not {given}"
    if csv_floats not in CSV_FLOATS:
        return f"csv floats are one of {', '.join(CSV_FLOATS)}, not {csv_floats!r}"
    return None


def in_time_range(ts: float, now: float) -> bool:
    """Whether a record's time ``ts`` is written as sent, ``now`` being the
    collector's clock: from 1970 to :data:`MAX_AHEAD` seconds past ``now``
    (never NaN or an infinity)."""
    return MIN_TIMESTAMP <= ts <= now + MAX_AHEAD


def times_in_range(ts: Sequence[float], now: float) -> bool:
    """Whether every time of a (non-empty) run of rows is :func:`in_time_range`:
    C-level passes, not a call per row."""
    # min() and max() skip a NaN that is not first; the sum is NaN if one is there.
    total = sum(ts)
    return total == total and MIN_TIMESTAMP <= min(ts) and max(ts) <= now + MAX_AHEAD


def cut_text(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT_CHARS` characters, ending with
    :data:`TRUNCATED`; a shorter text as it is."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + TRUNCATED


_DIGITS = re.compile(r"-?[0-9]{1,4300}")  # what int() reads at Python's default limit


def big_int(value: Any) -> Any:
    """The int a ``{BIG_INT: digits}`` map stands for; any other value as it is."""
    if type(value) is dict and len(value) == 1:
        digits = value.get(BIG_INT)
        if type(digits) is str and _DIGITS.fullmatch(digits):
            return int(digits)
    return value


def check_record(record: Any) -> str | None:
    """Return why ``record`` is not a valid record, or ``None`` when it is.

    Metric *values* are not judged here: a non-scalar value is the
    collector's to report by key, without refusing the rest of the row.
    """
    if not isinstance(record, list) or not record:
        return "a record is a non-empty array"
    kind = record[0]
    if kind in METRICS_KINDS:
        return _check_metrics(record)
    if len(record) == 5 and kind == RECORD_LOG:
        name = record[4]
        if type(name) is not str or not 0 < len(name) <= MAX_LEVEL_NAME:
            return f"a level's name is a string of 1 to {MAX_LEVEL_NAME} characters"
        record = record[:4]
    if len(record) != 4:
        return "a log or dropped record is an array of 4 items"
    _, ts, a, b = record
    if type(ts) not in _NUMBERS:
        return "record timestamp is not a number"
    if kind in (RECORD_LOG, RECORD_DEATH):
        if type(big_int(a)) is not int:
            return "log level is not an integer"
        if not isinstance(b, str):
            return "log text is not a string"
        return None
    if kind == RECORD_DROPPED:
        if type(a) is not int or type(b) is not int or a < 0 or b < 0:
            return "dropped counts are not non-negative integers"
        return None
    return f"unknown record kind {wire_repr(kind)}"


def all_log_lines(records: list) -> bool:
    """Whether every record is a valid log line: one pass of C-level calls
    per field, instead of :func:`check_record` per record."""
    if set(map(type, records)) != {list} or set(map(len, records)) != {4}:
        return False
    kinds, ts, levels, texts = zip(*records, strict=True)
    return (
        kinds.count(RECORD_LOG) == len(kinds)
        and set(map(type, ts)) <= _NUMBERS
        and set(map(type, levels)) == {int}
        and set(map(type, texts)) == {str}
        and max(map(len, texts)) <= MAX_TEXT_CHARS
    )


def _check_metrics(record: list) -> str | None:
    # Column by column through C-level map/set calls: a run holds thousands of rows.
    if len(record) != 5 or any(type(part) is not list for part in record[1:]):
        return "a metrics record is [kind, keys, timestamps, steps, values] of arrays"
    _, keys, ts, steps, values = record
    if not values or not len(ts) == len(steps) == len(values):
        return "a metrics record has at least one row, each with a timestamp and a step"
    problem = check_metric_keys(keys)
    if problem is not None:
        return problem
    if not set(map(type, ts)) <= _NUMBERS:
        return "record timestamp is not a number"
    step_types = set(map(type, steps))
    if step_types != {int} and (
        not step_types <= {int, dict} or any(type(big_int(s)) is not int for s in steps)
    ):
        return "metrics step is not an integer"
    if set(map(type, values)) != {list} or set(map(len, values)) != {len(keys)}:
        return "the values of a metrics row are an array of one value per key"
    return None


# What is_run_name asks, in words, for the errors of whoever refuses a prefix.
RUN_NAME_RULE = (
    f"a file name of 1 to {MAX_PREFIX_BYTES} bytes, without a path separator and not "
    "starting with '.'"
)


def is_run_name(prefix: str) -> bool:
    """Whether ``prefix`` can name a run's files inside a log dir: a file name
    of 1 to :data:`MAX_PREFIX_BYTES` UTF-8 bytes, not a dot-file, not a path.
    A lone surrogate (an undecodable byte of a file name, as ``os.listdir``
    gives it) is not text a frame can carry."""
    try:
        size = len(prefix.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return (
        0 < size <= MAX_PREFIX_BYTES
        and not prefix.startswith(".")  # the run's own dot-files (checkpoint, lock) start so
        and not any(c in prefix for c in "/\\\0")
    )
