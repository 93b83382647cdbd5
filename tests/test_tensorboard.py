"""TensorBoard event files: the sans-IO encoder (aggregator.sinks.tfrecord) and
the sink (aggregator.sinks.tensorboard), read back by TensorBoard's own readers."""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import time
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import plugin_event_accumulator  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import (  # noqa: E402
    LegacyEventFileLoader,
)
from tensorboard.compat.proto import event_pb2  # noqa: E402
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_stub  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from aggregator.metrics_run import MetricsRun, metrics_run  # noqa: E402
from aggregator.sinks import tfrecord  # noqa: E402
from aggregator.sinks.base import Origin  # noqa: E402
from aggregator.sinks.tensorboard import TensorBoardSink  # noqa: E402

from .conftest import metrics_runs  # noqa: E402

T0 = 1_764_086_400.25
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def float32(value: object) -> float:
    """What TensorBoard should read for a value: its float32, ±inf beyond that range."""
    if isinstance(value, bool):
        return float(value)
    try:
        return struct.unpack("<f", struct.pack("<f", float(value)))[0]  # type: ignore[arg-type]
    except (OverflowError, struct.error):
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]


def run_of(keys, ts, steps, rows, kind="m") -> MetricsRun:
    return metrics_run([kind, list(keys), list(ts), list(steps), [list(r) for r in rows]])[0]


def expected_events(run: MetricsRun) -> list[tuple[float, int, dict[str, list[float]]]]:
    """Per row with a number: its time, its step clamped to int64, each tag's values."""
    events = []
    for row, (ts, step) in enumerate(zip(run.ts, run.steps, strict=True)):
        values = defaultdict(list)
        for key, column in zip(run.keys, run.columns, strict=True):
            if type(column[row]) in (int, float, bool):
                values[key.encode("utf-8", "replace").decode()].append(float32(column[row]))
        if values:
            events.append((float(ts), min(max(step, INT64_MIN), INT64_MAX), dict(values)))
    return events


def parsed(event: event_pb2.Event) -> tuple[float, int, dict[str, list[float]]]:
    values = defaultdict(list)
    for value in event.summary.value:
        values[value.tag].append(value.simple_value)
    return event.wall_time, event.step, dict(values)


def assert_events(got: list, want: list) -> None:
    assert len(got) == len(want)
    for (t1, s1, v1), (t2, s2, v2) in zip(got, want, strict=True):
        assert (t1, s1) == (t2, s2)
        assert v1.keys() == v2.keys()
        for tag in v1:
            assert sorted(map(repr, v1[tag])) == sorted(map(repr, v2[tag])), tag


def read_file(path: str) -> list[event_pb2.Event]:
    """Every event of one file, through TensorBoard's record reader (CRCs checked)."""
    return list(LegacyEventFileLoader(path).Load())


# -- The encoder, on its own -------------------------------------------------------------


def test_crc32c_of_the_standard_check_string():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283
    assert tfrecord._crc32c_python(b"123456789") == 0xE3069283


@given(st.binary(max_size=300))
def test_masked_crc_is_tensorboards_in_both_implementations(data):
    assert tfrecord.masked_crc32c(data) == tb_stub.masked_crc32c(data)
    assert tfrecord._crc32c_python(data) == tfrecord.crc32c(data)


@given(st.lists(st.binary(max_size=200), max_size=8), st.data())
def test_records_split_back_and_a_cut_record_waits(payloads, data):
    framed = b"".join(map(tfrecord.frame, payloads))
    assert tfrecord.split_records(framed) == (payloads, len(framed))
    cut = data.draw(st.integers(0, len(framed)))
    records, end = tfrecord.split_records(framed[:cut])
    assert records == payloads[: len(records)]
    assert end == len(b"".join(map(tfrecord.frame, records)))
    if cut < len(framed):  # only the record cut short is left for later
        assert cut - end < len(tfrecord.frame(payloads[len(records)]))


@given(st.binary(max_size=400))
def test_garbage_is_refused_with_tfrecord_error_only(garbage):
    try:
        records, end = tfrecord.split_records(garbage)
    except tfrecord.TFRecordError:
        return
    assert end <= len(garbage)


@given(st.binary(min_size=0, max_size=64), st.data())
def test_any_flipped_bit_is_caught(payload, data):
    framed = bytearray(tfrecord.frame(payload))
    bit = data.draw(st.integers(0, len(framed) * 8 - 1))
    framed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(tfrecord.TFRecordError):  # a length too: its own CRC fails first
        tfrecord.split_records(bytes(framed))


@given(st.integers(INT64_MIN, INT64_MAX).filter(bool) | st.integers(1, 2**29))
def test_step_varint_is_protobufs(step):
    assert event_pb2.Event(step=step).SerializeToString() == b"\x10" + tfrecord.varint(step)


def test_step_varint_at_each_length_is_protobufs():
    for bits in range(1, 64):
        for step in (2**bits - 1, 2**bits, 2**bits + 1, -(2**bits)):
            if step > INT64_MAX:
                continue
            assert event_pb2.Event(step=step).SerializeToString() == b"\x10" + tfrecord.varint(step)


@pytest.mark.parametrize(
    ("step", "read"), [(2**63, INT64_MAX), (2**64 - 1, INT64_MAX), (-(2**70), INT64_MIN)]
)
def test_a_step_beyond_int64_is_clamped(step, read):
    event = event_pb2.Event.FromString(tfrecord.scalars_event(T0, step, [("x", 1.0)]))
    assert event.step == read


def test_file_header_is_the_version_event():
    event = read_events_of(tfrecord.file_header(T0))[0]
    assert (event.file_version, event.wall_time, event.step) == ("brain.Event:2", T0, 0)


def read_events_of(data: bytes) -> list[event_pb2.Event]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "events.out.tfevents.1.test")
        with open(path, "wb") as file:
            file.write(data)
        return read_file(path)


KEY = st.text(min_size=1, max_size=12) | st.sampled_from(["loss", "lr", "\ud800", "a/b", "é"])
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**39, -(10**400), 1e300, -1e39, 3.4028235e38, 2**128 - 2**103, 0.0, -0.0]),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
STEP = st.integers(-(2**64), 2**64) | st.integers(0, 3000)
TS = st.floats(0, 4e9)


@st.composite
def runs(draw, column=None):
    keys = draw(st.lists(KEY, min_size=1, max_size=6, unique=True))
    n = draw(st.integers(1, 12))
    rows = []
    columns = [
        draw(column or st.sampled_from([VALUE, st.floats(-1e30, 1e30), st.just(2.5)])) for _ in keys
    ]
    for _ in range(n):
        rows.append([draw(c) for c in columns])
    ts = draw(st.lists(TS, min_size=n, max_size=n))
    steps = draw(st.lists(STEP, min_size=n, max_size=n))
    return run_of(keys, ts, steps, rows)


@settings(max_examples=300, deadline=None)
@given(runs())
def test_a_run_round_trips_through_protobuf(run):
    records, end = tfrecord.split_records(tfrecord.encode_run(run, tfrecord.TagCache()))
    got = [parsed(event_pb2.Event.FromString(r)) for r in records]
    assert_events(got, expected_events(run))


@settings(max_examples=60, deadline=None)
@given(st.lists(runs(), min_size=1, max_size=4))
def test_runs_round_trip_through_tensorboards_reader(runs_):
    tags = tfrecord.TagCache(limit=3)  # cleared on the way: built again the same
    data = tfrecord.file_header(T0) + b"".join(tfrecord.encode_run(r, tags) for r in runs_)
    events = read_events_of(data)
    assert events[0].file_version == "brain.Event:2"
    assert_events([parsed(e) for e in events[1:]], [e for r in runs_ for e in expected_events(r)])


def test_only_strings_and_empty_cells_make_no_event():
    run = run_of(["a", "b"], [T0, T0], [1, 2], [["x", None], [None, ""]])
    assert tfrecord.encode_run(run, tfrecord.TagCache()) == b""
    assert tfrecord.encode_run(run_of([], [T0], [1], [[]]), tfrecord.TagCache()) == b""
    assert tfrecord.scalars_event(T0, 1, [("a", "x"), ("b", None)]) is None


def test_a_row_of_mixed_cells_keeps_its_numbers():
    run = run_of(["a", "b", "c"], [T0, T0 + 1], [1, 2], [["x", 1, True], [None, 2.5, False]])
    events = [
        parsed(event_pb2.Event.FromString(r))
        for r in tfrecord.split_records(tfrecord.encode_run(run, tfrecord.TagCache()))[0]
    ]
    assert events == [(T0, 1, {"b": [1.0], "c": [1.0]}), (T0 + 1, 2, {"b": [2.5], "c": [0.0]})]


def test_rows_as_a_logger_sends_them():
    # Through the client's codec: NumPy-free big ints, bools, NaN as the collector gets them.
    rows = [
        ("m", s, {"loss": 1 / (s + 1), "big": 10**30, "ok": s % 2 == 0, "nan": math.nan})
        for s in range(5)
    ]
    runs_ = metrics_runs(rows, ts=T0)
    data = b"".join(tfrecord.encode_run(r, tfrecord.TagCache()) for r in runs_)
    got = [parsed(event_pb2.Event.FromString(r)) for r in tfrecord.split_records(data)[0]]
    assert_events(got, [e for r in runs_ for e in expected_events(r)])
    assert got[1][2]["ok"] == [0.0] and got[1][2]["big"] == [float32(10**30)]


# -- The sink ------------------------------------------------------------------------------


def rank_events(directory: str, rank: int) -> list[tuple[float, int, dict[str, list[float]]]]:
    """A rank directory's metrics events, file after file as TensorBoard reads them."""
    rank_dir = os.path.join(directory, f"rank{rank}")
    events = []
    for name in sorted(os.listdir(rank_dir)):
        file_events = read_file(os.path.join(rank_dir, name))
        assert file_events[0].file_version == "brain.Event:2"
        events += [parsed(e) for e in file_events[1:]]
    return events


def simple_run(steps, kind="m", base=0.0) -> MetricsRun:
    return run_of(
        ["loss", "lr"], [T0 + s for s in steps], steps, [[base + s / 8, 3e-4] for s in steps], kind
    )


def test_each_rank_gets_a_directory_that_tensorboard_shows(tmp_path):
    directory = str(tmp_path / "run_tensorboard")
    sink = TensorBoardSink(directory)
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1, 2, 3])])
    sink.write_metrics(Origin(3, "b", 2), [simple_run([1, 2], "r", base=10)])
    sink.write_metrics(Origin(0, "a", 1), [simple_run([4])])
    sink.sync()
    sink.close()
    assert sorted(os.listdir(directory)) == ["rank0", "rank3"]
    accumulator = EventAccumulator(os.path.join(directory, "rank3"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["loss", "lr"]
    assert [(e.wall_time, e.step, e.value) for e in accumulator.Scalars("loss")] == [
        (T0 + 1, 1, 10.125),
        (T0 + 2, 2, 10.25),
    ]
    # What `tensorboard --logdir` reads without TensorFlow: events turned into tensors.
    plugin = plugin_event_accumulator.EventAccumulator(
        os.path.join(directory, "rank0"), size_guidance={"tensors": 0}
    )
    plugin.Reload()
    loss = [
        (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in plugin.Tensors("loss")
    ]
    assert loss == [(1, 0.125), (2, 0.25), (3, 0.375), (4, 0.5)]
    lr = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in plugin.Tensors("lr")]
    assert lr == [float32(3e-4)] * 4


def test_file_is_named_as_tensorboard_globs(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1])])
    sink.close()
    (name,) = os.listdir(tmp_path / "rank0")
    assert name.startswith("events.out.tfevents.") and "tfevents" in name


def test_no_numbers_no_directory(tmp_path):
    sink = TensorBoardSink(str(tmp_path / "tb"))
    sink.write_metrics(Origin(0, "a", 1), [run_of(["a"], [T0], [1], [["text"]])])
    sink.write_metrics(Origin(0, "a", 1), [])
    sink.write_lines(Origin(0, "a", 1), [["l", T0, 20, "a log line"]])
    sink.sync()
    sink.close()
    assert not os.path.exists(tmp_path / "tb")
    assert TensorBoardSink(str(tmp_path / "tb")).mark() == {"files": {}}


def test_new_file_sorts_after_older_ones_and_theirs_stay(tmp_path):
    rank_dir = tmp_path / "rank0"
    rank_dir.mkdir()
    # Written by a collector on a host whose clock was ahead of this one's.
    ahead = int(time.time()) + 1000
    later = f"events.out.tfevents.{ahead}.elsewhere.roxxel"
    theirs = f"events.out.tfevents.{ahead}.host.123.1.v2"
    for name in (later, theirs):
        (rank_dir / name).write_bytes(tfrecord.file_header(T0))
    sink = TensorBoardSink(str(tmp_path))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1])])
    sink.close()
    ours = sorted(n for n in os.listdir(rank_dir) if n.endswith(".roxxel"))  # TensorBoard's order
    assert ours[0] == later and ours[1].startswith(f"events.out.tfevents.{ahead + 1}.")
    sink = TensorBoardSink(str(tmp_path))
    sink.rewind({"files": {}})  # nothing of ours was acknowledged
    assert os.listdir(rank_dir) == [theirs]


def test_max_open_closes_files_and_sync_still_reaches_them(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    sink = TensorBoardSink(str(tmp_path), max_open=1)
    for rank in range(3):
        sink.write_metrics(Origin(rank, "a", 1), [simple_run([rank], "r")])
        assert len(sink._fds) == 1
    sink.sync()
    assert len(synced) >= 3  # every rank's file, reopened when closed
    sink.write_metrics(Origin(0, "a", 1), [simple_run([7], "r")])  # reopened, appended to
    sink.close()
    assert [e[1] for e in rank_events(str(tmp_path), 0)] == [0, 7]
    assert len(os.listdir(tmp_path / "rank0")) == 1


def test_mark_survives_json_and_rewind_then_append_reads_exactly_once(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1, 2])])
    sink.write_metrics(Origin(2, "a", 1), [simple_run([1], "r")])
    sink.sync()
    mark = json.loads(json.dumps(sink.mark()))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([3, 4])])
    sink.write_metrics(Origin(5, "a", 1), [simple_run([3], "r")])
    sink.rewind(mark)
    assert sorted(os.listdir(tmp_path)) == ["rank0", "rank2"]
    sink.write_metrics(Origin(0, "a", 1), [simple_run([3, 4])])  # resent
    sink.close()
    assert [e[1] for e in rank_events(str(tmp_path), 0)] == [1, 2, 3, 4]
    assert len(os.listdir(tmp_path / "rank0")) == 2  # cut: the resent rows start a new file
    assert [e[1] for e in rank_events(str(tmp_path), 2)] == [1]


def test_a_rewind_that_cut_nothing_appends_to_the_same_file(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1])])
    sink.sync()
    sink.rewind(sink.mark())
    sink.write_metrics(Origin(0, "a", 1), [simple_run([2])])
    sink.close()
    assert len(os.listdir(tmp_path / "rank0")) == 1
    assert [e[1] for e in rank_events(str(tmp_path), 0)] == [1, 2]


def test_resume_after_a_crash_drops_what_followed_the_checkpoint(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    sink.write_metrics(Origin(0, "a", 1), [simple_run([1, 2])])
    sink.sync()
    checkpoint = sink.checkpoint_mark()
    sink.write_metrics(Origin(0, "a", 1), [simple_run([3])])
    sink.write_metrics(Origin(1, "a", 1), [simple_run([3], "r")])
    os.write(sink._fds["rank0"], b"\x05\x00\x00")  # a record cut short by the crash
    # The collector dies here; a new one starts on the same directory.
    again = TensorBoardSink(str(tmp_path))
    assert again.resume(json.loads(json.dumps(checkpoint))) == []
    assert not os.path.exists(tmp_path / "rank1")
    again.write_metrics(Origin(0, "a", 1), [simple_run([3, 4])])
    again.write_metrics(Origin(1, "a", 1), [simple_run([3], "r")])
    again.sync()
    again.close()
    sink.close()
    assert [e[1] for e in rank_events(str(tmp_path), 0)] == [1, 2, 3, 4]
    assert [e[1] for e in rank_events(str(tmp_path), 1)] == [3]


def test_resume_tells_of_a_missing_or_cut_file_and_goes_on(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    for rank in (0, 1):
        sink.write_metrics(Origin(rank, "a", 1), [simple_run([1, 2], "r")])
    sink.sync()
    mark = sink.mark()
    sink.close()
    (name0,) = os.listdir(tmp_path / "rank0")
    os.unlink(tmp_path / "rank0" / name0)
    (name1,) = os.listdir(tmp_path / "rank1")
    os.truncate(tmp_path / "rank1" / name1, 100)
    again = TensorBoardSink(str(tmp_path))
    notes = again.resume(mark)
    assert len(notes) == 2 and "is gone" in notes[0] and "less than the" in notes[1]
    for rank in (0, 1):
        again.write_metrics(Origin(rank, "a", 1), [simple_run([3], "r")])
    again.sync()
    again.close()
    assert [e[1] for e in rank_events(str(tmp_path), 0)] == [3]
    assert len(os.listdir(tmp_path / "rank1")) == 2  # the cut file is never appended to


@pytest.mark.parametrize(
    "mark",
    [
        None,
        {"size": 10},
        {"files": []},
        {"files": {"rank0": ["../../etc/passwd", 0]}},
        {"files": {"ranks": ["events.out.tfevents.1000000000.h.roxxel", 0]}},
        {"files": {"rank0": ["events.out.tfevents.1000000000.h.roxxel", -1]}},
        {"files": {"rank0": ["events.out.tfevents.1000000000.h.roxxel"]}},
    ],
)
def test_a_mark_that_is_not_ours_is_refused(tmp_path, mark):
    with pytest.raises(ValueError, match="not a mark of TensorBoardSink"):
        TensorBoardSink(str(tmp_path)).rewind(mark)


# Rewinds at random points of random batches from random ranks: what TensorBoard
# reads is every row written before a mark or after the rewind to it, once.
BATCH = st.tuples(st.integers(0, 3), st.lists(st.integers(-5, 10**12), min_size=1, max_size=4))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(BATCH, max_size=5),
    st.lists(BATCH, max_size=5),
    st.lists(BATCH, max_size=5),
    st.booleans(),
    st.integers(1, 4),
)
def test_rewind_then_append_is_exactly_once(before, dropped, after, restart, max_open):
    with tempfile.TemporaryDirectory() as directory:
        sink = TensorBoardSink(directory, max_open=max_open)
        want: dict[int, list[int]] = defaultdict(list)
        for rank, steps in before:
            sink.write_metrics(Origin(rank, "h", 1), [simple_run(steps, "r")])
            want[rank] += steps
        sink.sync()
        mark = json.loads(json.dumps(sink.checkpoint_mark()))
        for rank, steps in dropped:
            sink.write_metrics(Origin(rank, "h", 1), [simple_run(steps, "r")])
        if restart:
            sink.close()
            sink = TensorBoardSink(directory, max_open=max_open)
            sink.resume(mark)
        else:
            sink.rewind(mark)
        for rank, steps in after:
            sink.write_metrics(Origin(rank, "h", 1), [simple_run(steps, "r")])
            want[rank] += steps
        sink.sync()
        sink.close()
        got = {
            int(name[4:]): [step for _, step, _ in rank_events(directory, int(name[4:]))]
            for name in os.listdir(directory)
        }
        assert got == {rank: steps for rank, steps in want.items()}


def test_tensorboard_reading_while_rows_come_sees_them_and_goes_on_after_a_rewind(tmp_path):
    sink = TensorBoardSink(str(tmp_path))
    live = EventAccumulator(str(tmp_path / "rank0"), size_guidance={"scalars": 0})

    def steps_seen(accumulator):
        accumulator.Reload()
        return [e.step for e in accumulator.Scalars("loss")]

    sink.write_metrics(Origin(0, "a", 1), [simple_run([1, 2])])
    sink.sync()
    mark = sink.mark()
    assert steps_seen(live) == [1, 2]
    sink.write_metrics(Origin(0, "a", 1), [simple_run([3])])
    sink.sync()
    assert steps_seen(live) == [1, 2, 3]
    sink.rewind(mark)  # step 3 was never acknowledged: it comes again
    sink.write_metrics(Origin(0, "a", 1), [simple_run([3, 4])])
    sink.sync()
    # The live reader goes on in the new file; it keeps the 3 it read past the cut.
    assert steps_seen(live) == [1, 2, 3, 3, 4]
    fresh = EventAccumulator(str(tmp_path / "rank0"), size_guidance={"scalars": 0})
    assert steps_seen(fresh) == [1, 2, 3, 4]
    sink.close()


def test_a_daemon_told_to_writes_every_ranks_curves_for_tensorboard(tmp_path, start_daemon) -> None:
    from roxxel import Logger

    from .conftest import run_python

    logs = tmp_path / "logs"
    daemon = start_daemon(logs, "run", extra=("--metrics-files", "csv,tensorboard"))
    rank1 = run_python(
        f"""
from roxxel import Logger
with Logger({str(tmp_path / "c1")!r}, "run", aggregator={daemon.endpoint!r}) as log:
    for step in range(3):
        log.log_metrics_summary(step, {{"loss": 2.0 + step, "note": "text"}}, all_ranks=True)
""",
        RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", ROXXEL_WATCHER="0",
    )  # fmt: skip
    assert rank1.returncode == 0, rank1.stderr
    with Logger(tmp_path / "c0", "run", aggregator=daemon.endpoint, watcher=False) as log:
        for step in range(3):
            log.log_metrics_summary(step, {"loss": 1.0 / (step + 1), "ok": True})
        assert log.flush(30) and log.metrics_jsonl_path is None
    assert daemon.terminate() == 0
    assert sorted(os.listdir(logs / "run_tensorboard")) == ["rank0", "rank1"]
    curves = {}
    for rank in ("rank0", "rank1"):
        accumulator = EventAccumulator(str(logs / "run_tensorboard" / rank), {"scalars": 0})
        accumulator.Reload()
        curves[rank] = {
            tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]
        }
    assert curves == {
        "rank0": {
            "loss": [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))],
            "ok": [(0, 1.0), (1, 1.0), (2, 1.0)],
        },
        "rank1": {"loss": [(0, 2.0), (1, 3.0), (2, 4.0)]},
    }
    assert not (logs / "run_metrics.jsonl").exists()
