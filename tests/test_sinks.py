"""The sinks' column-wise formats write exactly what the per-value general path writes."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.sinks import FanOut, MetricsCsvSink, MetricsJsonlSink, Origin, SystemLogSink
from aggregator.sinks.metrics_csv import format_value, header_cell
from aggregator.sinks.metrics_jsonl import float_texts, int_texts, json_scalar, json_string

from .conftest import metrics_runs

ORIGIN = Origin(3, "host-a", 1)
# "rank" is not a metric name (roxxel.schema.RESERVED_METRIC_NAMES): the
# column comes from the "r" rows.
KEYS = ["loss", "lr", "acc", "100%", "ranks"]
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-3, max_value=1e6),
    st.sampled_from([0.0, -0.0, 1e-6, 2.5e-4, 1e16, -1e-3, 0.001]),
    st.integers(-5, 5),
    st.none(),
    st.text(max_size=5),
)
MIXED_ROWS = st.lists(
    st.tuples(st.sampled_from(["m", "r"]), st.dictionaries(st.sampled_from(KEYS), VALUE)),
    min_size=1,
    max_size=20,
)
# Long runs of rows with the same keys and numbers only: the column-wise formats.
NUMBER = st.one_of(
    st.floats(min_value=1e-3, max_value=1e6),
    st.floats(min_value=1e-9, max_value=9e-4),
    st.integers(-(2**63), 2**64 - 1),
)
SAME_KEYS_ROWS = st.tuples(
    st.sampled_from(["m", "r"]),
    st.lists(st.sampled_from(KEYS), unique=True),
    st.sampled_from(
        [
            st.floats(min_value=1e-3, max_value=1e6),
            st.floats(min_value=1e-9, max_value=9e-4),
            st.floats(min_value=-1e6, max_value=-1e-3),
            st.floats(min_value=-9e-4, max_value=-1e-9),
            st.floats(min_value=-1e20, max_value=1e20),
            st.integers(-5, 5),
            # A column of one value (formatted once per run), and zeros of both signs.
            st.just(3e-4),
            st.just(-2.5),
            st.just(2**40),
            st.sampled_from([0.0, -0.0]),
            NUMBER,
        ]
    ),
).flatmap(
    lambda spec: st.lists(
        st.tuples(st.just(spec[0]), st.fixed_dictionaries({k: spec[2] for k in spec[1]})),
        min_size=1,
        max_size=50,
    )
)
ROWS = st.one_of(MIXED_ROWS, SAME_KEYS_ROWS)


def general_csv(keys: list[str], rows: list[tuple[str, dict]], full: bool = False) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for step, (kind, metrics) in enumerate(rows):
        writer.writerow(
            [
                step,
                *[
                    ORIGIN.rank
                    if k == "rank" and kind == "r"
                    else format_value(metrics.get(k), full)
                    for k in keys
                ],
            ]
        )
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_csv_rows_are_what_the_csv_module_writes(tmp_path_factory, rows) -> None:
    path = Path(tmp_path_factory.mktemp("csv")) / "m.csv"
    sink = MetricsCsvSink(str(path))
    sink.write_metrics(
        ORIGIN, metrics_runs([(kind, step, m) for step, (kind, m) in enumerate(rows)])
    )
    sink.close()
    text = path.read_text(encoding="utf-8")
    header, _, body = text.partition("\n")
    keys = header.split(",")[1:]
    assert body == general_csv(keys, rows)


@settings(max_examples=200, deadline=None)
@given(ROWS)
def test_csv_with_full_floats_writes_every_digit(tmp_path_factory, rows) -> None:
    path = Path(tmp_path_factory.mktemp("csv")) / "m.csv"
    sink = MetricsCsvSink(str(path), floats="full")
    sink.write_metrics(
        ORIGIN, metrics_runs([(kind, step, m) for step, (kind, m) in enumerate(rows)])
    )
    sink.close()
    header, _, body = path.read_text(encoding="utf-8").partition("\n")
    assert body == general_csv(header.split(",")[1:], rows, full=True)
    for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        metrics = rows[int(row["step"])][1]
        for key, value in metrics.items():
            if type(value) is float and math.isfinite(value):
                assert row[header_cell(key)] == repr(value)  # and so reads back as value


def test_a_csv_sink_refuses_an_unknown_float_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="floats is one of original, full, not '6f'"):
        MetricsCsvSink(str(tmp_path / "m.csv"), floats="6f")


def test_a_fan_out_resumes_each_sink_from_its_own_mark_whatever_the_others(
    tmp_path: Path,
) -> None:
    log, csv_path = tmp_path / "run_system.log", tmp_path / "run_metrics.csv"
    both = FanOut([SystemLogSink(str(log)), MetricsCsvSink(str(csv_path))])
    both.write_lines(ORIGIN, [["l", 1.0, 20, "kept"]])
    both.sync()
    mark = both.checkpoint_mark()
    assert list(mark) == ["SystemLogSink", "MetricsCsvSink"]
    both.write_lines(ORIGIN, [["l", 1.0, 20, "never acknowledged"]])
    both.close()
    # Restarted without the CSV, then with a JSONL it never had: each file its own mark.
    alone = FanOut([SystemLogSink(str(log)), MetricsJsonlSink(str(tmp_path / "run.jsonl"))])
    assert alone.resume(mark) == []
    alone.close()
    assert log.read_text().count("never acknowledged") == 0 and "kept" in log.read_text()
    with pytest.raises(ValueError, match="a mark for 2 sinks expected"):
        FanOut([SystemLogSink(str(log)), SystemLogSink(str(log))]).resume([{"size": 0}])


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_jsonl_lines_are_what_the_general_path_writes(tmp_path_factory, rows) -> None:
    path = Path(tmp_path_factory.mktemp("jsonl")) / "m.jsonl"
    sink = MetricsJsonlSink(str(path))
    sink.write_metrics(
        ORIGIN, metrics_runs([(kind, step, m) for step, (kind, m) in enumerate(rows)], ts=1.5)
    )
    sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows)
    for step, (line, (_, metrics)) in enumerate(zip(lines, rows, strict=True)):
        body = "".join(", " + json_string(k) + ": " + json_scalar(v) for k, v in metrics.items())
        assert line == f'{{"ts": 1.5, "step": {step}, "rank": 3, "host": "host-a"{body}}}'
        parsed = json.loads(line)
        assert list(parsed) == ["ts", "step", "rank", "host", *metrics]
        for k, v in metrics.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(parsed[k])
            else:
                assert parsed[k] == v


def test_jsonl_keeps_percent_signs_of_names_hosts_and_values(tmp_path: Path) -> None:
    # A run's lines go through a %-format: its constant pieces are escaped.
    path = tmp_path / "m.jsonl"
    sink = MetricsJsonlSink(str(path))
    rows = [("m", step, {"acc%": 0.5 + step, "%s": "%d%%", "lr %": 0.1}) for step in range(3)]
    sink.write_metrics(Origin(1, "h%s%%", 9), metrics_runs(rows, ts=2.5))
    sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "ts": 2.5,
            "step": s,
            "rank": 1,
            "host": "h%s%%",
            "acc%": 0.5 + s,
            "%s": "%d%%",
            "lr %": 0.1,
        }
        for s in range(3)
    ]


@pytest.mark.parametrize("kind", ["jsonl", "log"])
def test_a_file_whose_last_line_has_no_end_gets_one_before_the_next_record(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"run.{kind}"
    path.write_text('{"step": 0, "loss": 1.0' if kind == "jsonl" else "[a note saved by hand")
    if kind == "jsonl":
        sink = MetricsJsonlSink(str(path))
        sink.write_metrics(ORIGIN, metrics_runs([("m", 1, {"loss": 0.5})], ts=1.5))
    else:
        sink = SystemLogSink(str(path))
        sink.write_lines(ORIGIN, [["l", 1_764_086_400.0, 20, "next"]])
    sink.close()
    first, second = path.read_text(encoding="utf-8").splitlines()
    assert first in ('{"step": 0, "loss": 1.0', "[a note saved by hand")
    if kind == "jsonl":
        assert json.loads(second)["loss"] == 0.5
    else:
        assert second.endswith("[rank 3] next")
    sink = SystemLogSink(str(path)) if kind == "log" else MetricsJsonlSink(str(path))
    sink.close()  # an ended file is left as it is
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize("kind", ["csv", "jsonl", "log"])
def test_a_rewind_works_when_the_file_s_name_is_gone(tmp_path: Path, kind: str) -> None:
    # Renamed by a rotation with nocreate, or its directory moved, while a
    # write was failing: the rewind before the next commit is by descriptor.
    path = tmp_path / f"run.{kind}"
    sink = {"csv": MetricsCsvSink, "jsonl": MetricsJsonlSink, "log": SystemLogSink}[kind](str(path))

    def write(step: int) -> None:
        if kind == "log":
            sink.write_lines(ORIGIN, [["l", 1_764_086_400.0, 20, f"line {step}"]])
        else:
            sink.write_metrics(ORIGIN, metrics_runs([("m", step, {"loss": 0.5})]))

    write(0)
    sink.sync()
    mark = sink.mark()
    write(1)
    sink.flush()
    moved = tmp_path / "rotated"
    os.rename(path, moved)
    sink.rewind(mark)
    write(2)
    sink.close()
    lines = moved.read_text(encoding="utf-8").splitlines()
    if kind == "csv":
        assert lines == ["step,loss", "0,0.50000", "2,0.50000"]
    elif kind == "jsonl":
        assert [json.loads(line)["step"] for line in lines] == [0, 2]
    else:
        assert [line.rpartition("] ")[2] for line in lines] == ["line 0", "line 2"]
    assert not path.exists()


# Where orjson and repr write floats differently (exponents, 1e-5 <= |x| < 1e-4)
# and the edges of the range.
EDGES = [
    s * m * 10.0**e
    for s in (1, -1)
    for m in (1.0, 1.234, 9.999999999999999)
    for e in range(-30, 30)
] + [5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.0, -0.0, 1e22]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_float_texts_are_each_floats_repr(column: list[float]) -> None:
    assert float_texts(tuple(column)) == list(map(repr, column))


def test_float_texts_are_repr_at_the_edges() -> None:
    assert float_texts(tuple(EDGES)) == list(map(repr, EDGES))
    for value in EDGES:
        assert float_texts((value,)) == [repr(value)]


def test_int_texts_cover_every_int_msgpack_carries_and_more() -> None:
    column = (0, -1, 2**63 - 1, -(2**63), 2**64 - 1)
    assert int_texts(column) == list(map(str, column))
    assert int_texts((1, 2**70, -(2**80))) == ["1", str(2**70), str(-(2**80))]


def test_a_sink_written_against_the_old_write_method_is_refused_at_once() -> None:
    from aggregator.sinks import Sink

    with pytest.raises(TypeError, match="write_lines and write_metrics"):

        class OldSink(Sink):  # noqa: F841 -- defining it is the test
            def write(self, origin, records) -> None: ...

            def flush(self) -> None: ...

            def close(self) -> None: ...


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        ("loss", "loss"),
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "+1"),  # a number: not a formula
        ("@sum\x00", "'@sum\\x00"),
        ("\tlead", "'\tlead"),
        ("two\nlines\r", "two\\x0alines\\x0d"),
        ("\x1b[2J\x9b", "\\x1b[2J\\x9b"),
        ("é ✓", "é ✓"),
    ],
)
def test_a_header_cell_is_the_name_guarded_and_on_one_line(name: str, cell: str) -> None:
    assert header_cell(name) == cell


def test_hostile_names_keep_one_column_each_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    names = ["=cmd|' /C calc'!A0", "\x00nul", "\x1b[31mred", "a,b"]
    sink = MetricsCsvSink(str(path))
    sink.write_metrics(ORIGIN, metrics_runs([("m", 1, dict.fromkeys(names, 1))]))
    sink.close()
    again = MetricsCsvSink(str(path))  # reads its header back: the cells, not the names
    again.write_metrics(ORIGIN, metrics_runs([("m", 2, dict.fromkeys(names, 2))]))
    again.close()
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows == [
        ["step", "'=cmd|' /C calc'!A0", "\\x00nul", "\\x1b[31mred", "a,b"],
        ["1", "1", "1", "1", "1"],
        ["2", "2", "2", "2", "2"],
    ]


def test_text_values_get_control_characters_escaped_as_in_the_system_log() -> None:
    assert format_value("a\x1b[2Jb\x00c\r\nd\re\tf") == "a\\x1b[2Jb\\x00c\nd\ne\tf"
    assert format_value("=1+1\x07") == "'=1+1\\x07"


def test_a_jsonl_row_sent_with_a_time_out_of_range_keeps_it(tmp_path: Path) -> None:
    from aggregator.metrics_run import metrics_run

    path = tmp_path / "m.jsonl"
    sink = MetricsJsonlSink(str(path))
    now = 1_764_086_400.5
    record = ["m", ["loss"], [math.nan, now, -9.9e10], [1, 2, 3], [[0.5], [0.25], [0.125]]]
    sink.write_metrics(ORIGIN, [metrics_run(record, now)[0]])
    sink.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert math.isnan(rows[0].pop("sent_ts"))
    rows[0]["sent_ts"] = "NaN"
    assert [(r["ts"], r["step"], r.get("sent_ts")) for r in rows] == [
        (now, 1, "NaN"),
        (now, 2, None),
        (now, 3, -9.9e10),
    ]


@pytest.mark.parametrize("created", [False, True], ids=["nocreate", "create"])
def test_a_new_key_after_a_rename_rotation_starts_the_new_file(
    tmp_path: Path, created: bool
) -> None:
    # Between logrotate's rename and the daemon's SIGHUP, a new metric name
    # must not stop writing (the old file is no longer at its path).
    path = tmp_path / "r_metrics.csv"
    sink = MetricsCsvSink(str(path))
    sink.write_metrics(ORIGIN, metrics_runs([("m", 1, {"loss": 1.0})]))
    sink.flush()
    path.rename(tmp_path / "r_metrics.csv.1")
    if created:  # logrotate's "create": an empty file in its place
        path.touch()
    sink.write_metrics(ORIGIN, metrics_runs([("m", 2, {"loss": 2.0, "acc": 0.5})]))
    sink.close()
    assert (tmp_path / "r_metrics.csv.1").read_text() == "step,loss\n1,1.00000\n"
    assert path.read_text() == "step,loss,acc\n2,2.00000,0.50000\n"


# -- widening a large file: amortised O(new names) ------------------------------------


def _dict_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _fill(sink: MetricsCsvSink, rows: int, first: int = 0) -> None:
    for step in range(first, first + rows):
        sink.write_metrics(ORIGIN, metrics_runs([("m", step, {"loss": step / 8})]))


def test_new_names_in_a_large_file_go_into_the_room_after_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.csv"
    sink = MetricsCsvSink(str(path))
    _fill(sink, 8000)  # past RESERVE_FROM
    rewrites = []
    original = MetricsCsvSink._rewrite
    monkeypatch.setattr(
        MetricsCsvSink, "_rewrite", lambda s, rows: [rewrites.append(len(rows)), original(s, rows)]
    )
    names = 300
    for i in range(names):  # one new name a row, as per-layer norms appear
        step = 8000 + i
        sink.write_metrics(ORIGIN, metrics_runs([("m", step, {"loss": 1.0, f"norm_{i}": 2.0})]))
    sink.close()
    # A rewrite when the room is used up (it grows with the header), not one per name.
    assert 1 <= len(rewrites) <= 4, rewrites
    rows = _dict_rows(path)
    assert len(rows) == 8000 + names
    assert rows[0]["step"] == "0" and rows[0]["loss"] == "0.00000" and rows[0]["norm_0"] is None
    last = rows[-1]
    assert last["step"] == str(8000 + names - 1) and last[f"norm_{names - 1}"] == "2.00000"
    assert all(rows[8000 + i][f"norm_{i}"] == "2.00000" for i in range(names))
    # Opened again, it appends under the same header and finds its room.
    again = MetricsCsvSink(str(path))
    again.write_metrics(ORIGIN, metrics_runs([("m", 9999, {"late": 1.0})]))
    again.close()
    assert _dict_rows(path)[-1] == {
        "step": "9999",
        "loss": "",
        **dict.fromkeys([f"norm_{i}" for i in range(names)], ""),
        "late": "1.00000",
    }


def test_a_rewind_past_names_added_in_place_keeps_the_rows_of_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = MetricsCsvSink(str(path))
    _fill(sink, 8000)
    sink.write_metrics(ORIGIN, metrics_runs([("m", 8000, {"acc": 0.5})]))  # a rewrite, room kept
    sink.sync()
    mark = sink.mark()
    size = path.stat().st_size
    sink.write_metrics(ORIGIN, metrics_runs([("m", 8001, {"new": 1.0})]))  # in place
    sink.flush()
    assert path.stat().st_size > size and ",new\n" in path.read_text()[:200]
    sink.rewind(mark)
    sink.write_metrics(ORIGIN, metrics_runs([("m", 8001, {"acc": 0.75})]))
    sink.close()
    rows = _dict_rows(path)
    assert [r["step"] for r in rows[-2:]] == ["8000", "8001"]
    assert rows[-1]["acc"] == "0.75000" and rows[-1].get("new") in ("", None)


def test_a_restart_rewinds_a_header_widened_in_place_after_the_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.csv"
    sink = MetricsCsvSink(str(path))
    _fill(sink, 8000)
    sink.write_metrics(ORIGIN, metrics_runs([("m", 8000, {"acc": 0.5})]))
    sink.sync()
    mark = sink.mark()  # what the checkpoint holds
    sink.write_metrics(ORIGIN, metrics_runs([("m", 8001, {"never": 1.0})]))
    sink.close()  # then killed: no checkpoint of it
    restarted = MetricsCsvSink(str(path))
    restarted.rewind(mark)
    restarted.write_metrics(ORIGIN, metrics_runs([("m", 8001, {"acc": 0.25})]))
    restarted.close()
    rows = _dict_rows(path)
    assert len(rows) == 8002 and rows[-1]["step"] == "8001" and rows[-1]["acc"] == "0.25000"
    assert all(not r.get("never") for r in rows)


def test_the_room_after_a_header_is_found_whatever_its_size(tmp_path: Path) -> None:
    # A header of many names keeps room of twice its length: megabytes.
    path = tmp_path / "m.csv"
    room = 3 * 1024 * 1024 + 5
    path.write_bytes(b"step,a\n" + b"\n" * room + b"1,0.50000\n")
    sink = MetricsCsvSink(str(path))
    assert sink.mark()["region"] == len(b"step,a\n") + room
    sink.write_metrics(ORIGIN, metrics_runs([("m", 2, {"a": 1.0, "b": 2.0})]))  # in place
    sink.close()
    assert path.read_bytes().startswith(b"step,a,b\n\n") and path.stat().st_size == (
        len(b"step,a\n") + room + len(b"1,0.50000\n2,1.00000,2.00000\n")
    )
