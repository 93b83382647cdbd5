"""The system-log line: what :func:`format_line` writes, :func:`parse_line` reads back."""

from __future__ import annotations

import logging
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roxxel.lines import (
    ParsedLine,
    format_line,
    format_lines,
    parse_line,
    printable,
    rank_tag,
    within_time,
)

TS = 1_764_085_363.25  # any time: the stamp is checked against strftime, in local time
STAMP = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(TS))


@pytest.mark.parametrize(
    ("level", "text", "tag", "head"),
    [
        (logging.INFO, "hello", "", ParsedLine(STAMP, "INFO", None, "hello")),
        (logging.DEBUG, "quiet", "", ParsedLine(STAMP, "DEBUG", None, "quiet")),
        (logging.WARNING, "slow host", rank_tag(2), ParsedLine(STAMP, "WARNING", 2, "slow host")),
        (logging.ERROR, "", rank_tag(7), ParsedLine(STAMP, "ERROR", 7, "")),
        (logging.CRITICAL, "boom", rank_tag(0), ParsedLine(STAMP, "CRITICAL", 0, "boom")),
        (116, "custom", "", ParsedLine(STAMP, "Level 116", None, "custom")),
        (116, "custom", rank_tag(3), ParsedLine(STAMP, "Level 116", 3, "custom")),
        (0, "not set", "", ParsedLine(STAMP, "NOTSET", None, "not set")),
        # The text is kept as written, brackets and all.
        (20, "[x] ] [", "", ParsedLine(STAMP, "INFO", None, "[x] ] [")),
        (20, "  padded  ", "", ParsedLine(STAMP, "INFO", None, "  padded  ")),
        # Control characters are escaped, a tab is kept.
        (
            20,
            "a\x1b[31mred\x08\x7f\tb",
            "",
            ParsedLine(STAMP, "INFO", None, "a\\x1b[31mred\\x08\\x7f\tb"),
        ),
        # A multi-line message: its head is its first line.
        (
            40,
            f"first\n[{STAMP}] [INFO] looks like a head\n[rank 2] so does this",
            rank_tag(1),
            ParsedLine(STAMP, "ERROR", 1, "first"),
        ),
        # A carriage return ends a line: what follows is a continuation.
        (30, "50%\r100%", rank_tag(1), ParsedLine(STAMP, "WARNING", 1, "50%")),
        # Rank 0 writes no tag: a message that starts like one reads as that rank's.
        (20, "[rank 5] spoofed", "", ParsedLine(STAMP, "INFO", 5, "spoofed")),
    ],
)
def test_a_formatted_line_parses_back(level: int, text: str, tag: str, head: ParsedLine) -> None:
    first, *rest = format_line(TS, level, text, tag).split("\n")
    assert parse_line(first) == head
    assert all(parse_line(line) is None for line in rest)


def test_the_message_is_what_follows_the_level() -> None:
    assert ParsedLine(STAMP, "INFO", None, "x").message == "x"
    assert ParsedLine(STAMP, "INFO", 0, "x").message == "[rank 0] x"
    assert ParsedLine(STAMP, "INFO", 12, "x").message == "[rank 12] x"


def test_continuation_lines_of_a_traceback_are_not_heads() -> None:
    text = (
        "Uncaught exception\n"
        "Traceback (most recent call last):\n"
        '  File "train.py", line 3, in <module>\n'
        "[2026-01-01 00:00:00] [ERROR] not a record, a line of the message\n"
        "[rank 3] nor this\n"
        "ValueError: boom"
    )
    written = format_line(TS, logging.CRITICAL, text, rank_tag(4))
    lines = written.split("\n")
    assert lines[-1] == ""  # newline-terminated
    heads = [parse_line(line) for line in lines]
    assert heads[0] == ParsedLine(STAMP, "CRITICAL", 4, "Uncaught exception")
    assert heads[1:] == [None] * (len(lines) - 1)
    # Indented by one space, not otherwise changed.
    assert lines[3] == " [2026-01-01 00:00:00] [ERROR] not a record, a line of the message"
    assert lines[4] == " [rank 3] nor this"


def test_records_of_format_lines_each_parse() -> None:
    records = [("l", TS, 20, "one"), ("l", TS + 1, 40, "two\nmore"), ("x", TS + 2, 50, "three")]
    heads = [parse_line(line) for line in format_lines(records, rank_tag(9)).splitlines()]
    assert [(h.level, h.rank, h.text) for h in heads if h is not None] == [
        ("INFO", 9, "one"),
        ("ERROR", 9, "two"),
        ("CRITICAL", 9, "three"),
    ]
    assert heads[2] is None  # "more"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "plain text",
        " [2026-01-01 00:00:00] [INFO] indented: a continuation",
        "[2026-01-01 00:00:00] [INFO]",  # torn: no space after the level
        "[2026-01-01 00:00] [INFO] no seconds",
        "[2026-01-01 00:00:00]  [INFO] two spaces",
        "[2026-01-01 00:00:00] [INFO] two\nlines",
        "2026-01-01 00:00:00 [INFO] no brackets",
    ],
)
def test_what_is_not_a_record_head(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "head"),
    [
        # A level from a raw peer, or a name a thread collector's process registered.
        ("[2026-01-01 00:00:00] [Level -5] negative", ("Level -5", None, "negative")),
        ("[2026-01-01 00:00:00] [info] [rank 2] lower", ("info", 2, "lower")),
        ("[2026-01-01 00:00:00] [A]B] bracket", ("A]B", None, "bracket")),
        # Years an older collector wrote for times out of range.
        ("[-1168-10-24 03:14:15] [WARNING] [rank 1] old", ("WARNING", 1, "old")),
        ("[10000-01-01 00:00:00] [ERROR] far", ("ERROR", None, "far")),
    ],
)
def test_every_head_a_collector_writes_parses(line: str, head: tuple) -> None:
    parsed = parse_line(line)
    assert parsed is not None and (parsed.level, parsed.rank, parsed.text) == head


@pytest.mark.parametrize(
    "ts", [-9.9e10, 1e300, math.nan, math.inf, -math.inf, -1, 2**64 - 1, "two days ahead"]
)
def test_a_time_out_of_range_is_written_as_now_and_said(ts) -> None:
    if ts == "two days ahead":
        ts = time.time() + 2 * 86_400
    # time.time()'s clock, as format_line's: a bare strftime() reads the kernel's
    # coarse clock, which can be a tick ahead across a second's boundary.
    before = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))
    first, *rest = format_line(ts, 30, "late\nmore", rank_tag(1)).split("\n")
    after = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))
    head = parse_line(first)
    assert head is not None, first
    assert before <= head.stamp <= after
    assert (head.level, head.rank) == ("WARNING", 1)
    assert head.text == f"(time out of range: {ts!r}) late"
    assert rest == ["more", ""]


def test_within_time_keeps_a_time_in_range_and_redates_the_others() -> None:
    now = 1_764_085_363.0
    assert within_time(0, "epoch", now) == (0, "epoch")
    assert within_time(now + 86_400, "a day ahead", now) == (now + 86_400, "a day ahead")
    assert within_time(now + 86_401, "x", now) == (now, f"(time out of range: {now + 86_401!r}) x")
    assert within_time(-0.5, "x", now) == (now, "(time out of range: -0.5) x")


def test_printable_escapes_every_control_character_but_a_tab() -> None:
    hostile = "\x1b[2J\x1b]0;PWN\x07host\nname\r\x00\x7f\x9b31m\tok é ✓"
    shown = printable(hostile)
    assert shown == ("\\x1b[2J\\x1b]0;PWN\\x07host\\x0aname\\x0d\\x00\\x7f\\x9b31m\tok é ✓")
    assert all(c == "\t" or c.isprintable() for c in shown)
    assert printable("plain text") == "plain text"


def test_a_line_may_keep_its_newline_and_a_tag_needs_its_space() -> None:
    assert parse_line("[2026-01-01 00:00:00] [INFO] x\n") == parse_line(
        "[2026-01-01 00:00:00] [INFO] x"
    )
    assert parse_line("[2026-01-01 00:00:00] [INFO] [rank 3]x") == ParsedLine(
        "2026-01-01 00:00:00", "INFO", None, "[rank 3]x"
    )


# Text drawn from what matters to the format: brackets, line ends, control
# characters, line separators other than "\n", whole heads (after a line end
# they must not read as one) and any other character.
_PIECES = st.sampled_from(
    ["[", "]", " ", "\n", "\r", "\r\n", "\t", "\x1b", "\x00", "\x7f", "\x85", "\u2028",
     "[rank 3] ", "[INFO] ", f"[{STAMP}] ", f"\n[{STAMP}] [WARNING] ",
     f"\r[{STAMP}] [Level 116] [rank 3] ", "Level 116", "é", "✓"]
)  # fmt: skip
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=12).map("".join)
_LEVELS = st.one_of(st.sampled_from([0, 10, 20, 30, 40, 50]), st.integers(0, 1000))


def _first_line_as_written(text: str) -> str:
    """The formatter's rule for the first line, written out independently."""
    first = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[0]
    return "".join(map(_as_written, first))


def _as_written(c: str) -> str:
    code = ord(c)
    if (code < 0x20 and c != "\t") or 0x7F <= code < 0xA0:  # C0, DEL and C1 controls
        return f"\\x{code:02x}"
    if c in "\u2028\u2029":  # line ends to str.splitlines()
        return f"\\u{code:04x}"
    return c


def test_no_text_makes_a_line_that_splitlines_would_split() -> None:
    text = "a\x85b\u2028[2026-01-01 00:00:00] [CRITICAL] forged\u2029c\x1cd\x9b[2J"
    written = format_line(1_764_086_400.0, 20, text)
    assert written.splitlines() == [written.rstrip("\n")]
    assert written.endswith(
        "] [INFO] a\\x85b\\u2028[2026-01-01 00:00:00] [CRITICAL] forged\\u2029c\\x1cd\\x9b[2J\n"
    )


@given(
    ts=st.floats(0, 1.7e9),
    level=_LEVELS,
    text=_TEXT,
    rank=st.none() | st.integers(0, 2**32 - 1),
)
def test_only_the_first_line_is_a_head_and_it_round_trips(
    ts: float, level: int, text: str, rank: int | None
) -> None:
    tag = "" if rank is None else rank_tag(rank)
    written = format_line(ts, level, text, tag)
    lines = written.split("\n")
    assert lines[-1] == "" and len(lines) >= 2
    heads = [parse_line(line) for line in lines[:-1]]
    assert all(head is None for head in heads[1:]), written
    head = heads[0]
    assert head is not None, written
    assert head.stamp == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    assert head.level == logging.getLevelName(level)
    first = _first_line_as_written(text)
    if rank is not None:
        assert (head.rank, head.text) == (rank, first)
    elif not first.startswith("[rank "):  # rank 0's text may look tagged (see the table)
        assert (head.rank, head.text) == (None, first)


def test_a_level_name_from_a_sender_cannot_end_the_level_field_early() -> None:
    from roxxel.lines import NamedLevel, format_line, parse_line

    line = format_line(1_764_086_400.0, NamedLevel(116, "A] [CRITICAL"), "text")
    parsed = parse_line(line)
    assert parsed is not None and parsed.text == "text"
    assert "CRITICAL" in parsed.level and "]" not in parsed.level
