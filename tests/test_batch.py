"""Sorting an applied batch for the sinks, without a collector."""

from __future__ import annotations

import logging
import math

from aggregator.batch import DeathNotice, Invalid, sort_batch
from roxxel.schema import BIG_INT, MAX_TEXT_CHARS, NON_SCALAR, TRUNCATED


def test_a_batch_of_log_lines_goes_whole_to_the_lines() -> None:
    records = [["l", 1.0, 20, "a"], ["l", 2.0, 30, "b"]]
    part = sort_batch(records)
    assert part.lines is records and not part.runs and not part.notices
    assert part.written == 2


def test_a_mixed_batch_keeps_each_kind_in_order_and_sets_notices_aside() -> None:
    records = [
        ["l", 1.0, 20, "first"],
        ["m", ["loss"], [1.0, 2.0], [0, 1], [[0.5], [0.25]]],
        ["x", 3.0, 50, "died"],
        ["bogus"],
        ["d", 4.0, 3, 1],
        ["l", 5.0, 20, "last"],
    ]
    part = sort_batch(records)
    assert [line[3] for line in part.lines[::2]] == ["first", "last"]
    dropped = part.lines[1]
    assert dropped[2] == logging.WARNING and "3 metrics row(s) and 1 log line(s)" in dropped[3]
    assert part.client_dropped == 4
    assert [run.steps for run in part.runs] == [[0, 1]]
    assert part.notices == [
        DeathNotice(3.0, 50, "died"),
        Invalid(["bogus"], "a log or dropped record is an array of 4 items"),
    ]
    assert part.written == 3 + 2  # three lines, two rows


def test_non_scalar_values_are_counted_per_name_and_kind_across_runs() -> None:
    bad = {NON_SCALAR: "numpy.ndarray of shape (3,)"}
    records = [
        ["m", ["v", "ok"], [1.0], [0], [[bad, 1.0]]],
        ["m", ["v"], [2.0, 3.0], [1, 2], [[bad], [bad]]],
    ]
    records[1][4][1] = [{NON_SCALAR: "numpy.ndarray of shape (5,)"}]  # the first why is kept
    records[1][4][0] = [{NON_SCALAR: "complex number"}]  # another kind: counted apart
    part = sort_batch(records)
    why, count = part.non_scalars["v", "numpy.ndarray"]
    assert count == 2 and "(3,)" in why
    assert part.non_scalars["v", "complex number"] == ("not a scalar: complex number", 1)
    assert list(part.non_scalars) == [("v", "numpy.ndarray"), ("v", "complex number")]


def test_a_metric_named_as_a_csv_column_makes_its_record_invalid() -> None:
    records = [
        ["m", ["loss", "step"], [1.0], [0], [[0.5, 3]]],
        ["r", ["rank"], [1.0], [0], [[1]]],
        ["m", ["loss"], [1.0], [1], [[0.25]]],
        ["m", ["ts"], [1.0], [2], [[0.25]]],
        ["m", ["host", "sent_ts"], [1.0], [3], [["h", 2.0]]],
    ]
    part = sort_batch(records)
    assert [run.steps for run in part.runs] == [[1]]
    columns = "roxxel's metrics files have their own columns named " + ", ".join(
        map(repr, ["step", "rank", "ts", "host", "sent_ts"])
    )
    assert [notice.problem for notice in part.notices] == [
        f"metric name {name!r} is reserved: {columns}" for name in ("step", "rank", "ts", "host")
    ]


def test_times_out_of_range_become_the_receive_time() -> None:
    now = 1_764_085_363.5
    records = [
        ["x", math.nan, 50, "died"],
        ["m", ["loss"], [-9.9e10, now - 1, 1e300, math.inf], [0, 1, 2, 3], [[0.5]] * 4],
        ["m", ["loss"], [now, now + 86_400], [4, 5], [[0.5]] * 2],
        ["l", -9.9e10, 20, "a line: dated where the system log formats it"],
    ]
    part = sort_batch(records, now)
    assert part.notices == [DeathNotice(now, 50, "(time out of range: nan) died")]
    first, second = part.runs
    assert first.ts == [now, now - 1, now, now]
    assert first.sent_ts == (-9.9e10, None, 1e300, math.inf)
    assert (second.ts, second.sent_ts) == ([now, now + 86_400], None)
    assert part.rows_out_of_range == 3
    assert part.lines == [records[-1]]


def test_long_texts_are_cut_and_big_int_levels_and_steps_read_as_ints() -> None:
    big = {BIG_INT: str(2**70)}
    records = [
        ["l", 1.0, 20, "x" * (MAX_TEXT_CHARS + 1)],
        ["l", 2.0, big, "a level beyond 64 bits"],
        ["m", ["note"], [1.0, 2.0], [{BIG_INT: str(2**64)}, 7], [["y" * MAX_TEXT_CHARS], [None]]],
        ["l", 3.0, {BIG_INT: "12x"}, "not digits: invalid"],
    ]
    part = sort_batch(records)
    assert part.lines[0][3] == "x" * MAX_TEXT_CHARS + TRUNCATED
    assert part.lines[1][2] == 2**70 and len(part.lines) == 2
    (run,) = part.runs
    assert run.steps == [2**64, 7] and run.columns == [("y" * MAX_TEXT_CHARS, None)]
    (invalid,) = part.notices
    assert isinstance(invalid, Invalid) and invalid.problem == "log level is not an integer"
