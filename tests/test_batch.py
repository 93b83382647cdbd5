"""Sorting an applied batch for the sinks, without a collector."""

from __future__ import annotations

import logging

from aggregator.batch import DeathNotice, Invalid, sort_batch
from roxxel.schema import NON_SCALAR


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


def test_non_scalar_values_are_counted_per_name_across_runs() -> None:
    bad = {NON_SCALAR: "numpy.ndarray of shape (3,)"}
    records = [
        ["m", ["v", "ok"], [1.0], [0], [[bad, 1.0]]],
        ["m", ["v"], [2.0, 3.0], [1, 2], [[bad], [bad]]],
    ]
    records[1][4][0] = [{NON_SCALAR: "a list"}]  # another reason later: the first is kept
    part = sort_batch(records)
    why, count = part.non_scalars["v"]
    assert count == 3 and "(3,)" in why
    assert list(part.non_scalars) == ["v"]
