"""The user's contract of roxxel.Logger, checked against the real files.

Each test runs a real Logger: its client thread, a real ZeroMQ socket and an
embedded collector in a child process (or a thread where the test says so).
"""

from __future__ import annotations

import csv
import enum
import json
import logging
import math
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import roxxel
from roxxel import CRASH_HEADLINE, Logger
from roxxel.lines import parse_line
from roxxel.query import CollectorQuery

from .conftest import read, run_python, wait_for


def csv_rows(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def log_lines(path: str) -> list[tuple[str, str]]:
    out = []
    for line in read(path).splitlines():
        head = parse_line(line)
        if head is not None:
            out.append((head.level, head.message))
    return out


def test_defaults_attributes_and_file_names(tmp_path: Path) -> None:
    with Logger(str(tmp_path)) as logger:
        assert logger.log_dir == str(tmp_path)
        assert logger.is_rank_zero is True
        assert logger.logger_name == "RoxxelCore"
        assert logger.sys_log_path == str(tmp_path / "roxxel_system.log")
        assert logger.metrics_csv_path == str(tmp_path / "roxxel_metrics.csv")
        logger.log_message("Initializing...")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "roxxel_metrics.csv",
        "roxxel_metrics.jsonl",
        "roxxel_system.log",
    ]
    assert log_lines(logger.sys_log_path) == [("INFO", "Initializing...")]


def test_system_log_line_format_and_levels(tmp_path: Path) -> None:
    with Logger(tmp_path, "run_alpha") as logger:
        logger.log_message("hello")
        logger.log_message("careful", level=logging.WARNING)
        logger.log_message("by name", level="ERROR")
        logger.log_message("too quiet", level=logging.DEBUG)
    text = read(tmp_path / "run_alpha_system.log")
    assert all(parse_line(line) is not None for line in text.splitlines()), text
    assert log_lines(tmp_path / "run_alpha_system.log") == [
        ("INFO", "hello"),
        ("WARNING", "careful"),
        ("ERROR", "by name"),
    ]


def test_system_log_lines_are_echoed_to_stdout(tmp_path: Path) -> None:
    result = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'echo') as lg:\n"
        "    lg.log_message('seen on stdout')\n"
    )
    assert result.returncode == 0, result.stderr
    file_lines = read(tmp_path / "echo_system.log").splitlines()
    assert file_lines and file_lines[0].endswith("[INFO] seen on stdout")
    assert file_lines[0] in result.stdout.splitlines()


def test_metrics_csv_header_and_five_decimals(tmp_path: Path) -> None:
    with Logger(tmp_path, "m") as logger:
        logger.log_metrics_summary(step=10, metrics={"loss": 1.234564, "lr": 3.456})
        logger.log_metrics_summary(step=11, metrics={"loss": 2, "lr": 0.5})
    assert read(tmp_path / "m_metrics.csv") == "step,loss,lr\n10,1.23456,3.45600\n11,2,0.50000\n"


def test_exception_inside_with_logs_critical_traceback_and_propagates(tmp_path: Path) -> None:
    def fail() -> None:
        raise ValueError("boom in step 7")

    with pytest.raises(ValueError, match="boom in step 7"):
        with Logger(tmp_path, "crash") as logger:
            logger.log_message("before")
            fail()
    text = read(tmp_path / "crash_system.log")
    lines = text.splitlines()
    headline = next(i for i, ln in enumerate(lines) if CRASH_HEADLINE in ln)
    assert lines[headline].split("] ", 2)[1] == "[CRITICAL"
    assert lines[headline + 1] == "Traceback (most recent call last):"
    assert any("in fail" in ln for ln in lines[headline:])
    assert lines[-1] == "ValueError: boom in step 7"
    assert log_lines(tmp_path / "crash_system.log")[0] == ("INFO", "before")


def test_close_is_idempotent_and_later_calls_fail_clearly(tmp_path: Path) -> None:
    logger = Logger(tmp_path)
    logger.log_message("once")
    logger.close()
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log_message("after close")
    with pytest.raises(RuntimeError, match="closed"):
        logger.log_metrics_summary(1, {"x": 1.0})
    assert log_lines(logger.sys_log_path) == [("INFO", "once")]


def test_reopening_a_log_dir_appends_and_keeps_header_order(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with Logger(tmp_path, "again") as logger:
        logger.log_message("first run")
        logger.log_metrics_summary(1, {"a": 1.0, "b": 2.0})
    with Logger(tmp_path, "again") as logger:
        logger.log_message("second run")
        logger.log_metrics_summary(2, {"b": 20.0, "a": 10.0})
    assert csv_rows(logger.metrics_csv_path) == [
        ["step", "a", "b"],
        ["1", "1.00000", "2.00000"],
        ["2", "10.00000", "20.00000"],
    ]
    first, marker, second = [m for _, m in log_lines(logger.sys_log_path)]
    assert (first, second) == ("first run", "second run")
    # The second run is kept apart by a line of the collector's (the file only).
    assert marker.startswith(f"roxxel {roxxel.__version__}: a new run of again starts here")
    assert f"(pid {os.getpid()}), 1 process(es)" in marker
    assert "a new run" not in capfd.readouterr().out  # stdout shows the script's lines only


# -- the defects of the original, one test each ----------------------------------


def test_new_key_mid_run_widens_header_and_older_rows_get_empty_cells(tmp_path: Path) -> None:
    with Logger(tmp_path, "widen") as logger:
        logger.log_metrics_summary(1, {"loss": 1.0})
        assert logger.flush(30)
        logger.log_metrics_summary(2, {"loss": 0.5, "acc": 0.25})
        logger.log_metrics_summary(3, {"acc": 0.75})
    assert csv_rows(logger.metrics_csv_path) == [
        ["step", "loss", "acc"],
        ["1", "1.00000", ""],
        ["2", "0.50000", "0.25000"],
        ["3", "", "0.75000"],
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_text_values_use_real_csv_quoting(tmp_path: Path) -> None:
    nasty = 'a,b "quoted"\nnext line'
    with Logger(tmp_path, "quote") as logger:
        logger.log_metrics_summary(1, {"note": nasty, "loss": 1.5})
    assert csv_rows(logger.metrics_csv_path) == [["step", "note", "loss"], ["1", nasty, "1.50000"]]


def test_small_values_keep_significant_digits_normal_values_keep_5f(tmp_path: Path) -> None:
    with Logger(tmp_path, "small") as logger:
        logger.log_metrics_summary(1, {"lr": 1e-6, "tiny": 2.5e-4, "loss": 0.5, "zero": 0.0})
    header, row = csv_rows(logger.metrics_csv_path)
    values = dict(zip(header, row, strict=True))
    assert values == {
        "step": "1",
        "lr": "1e-06",
        "tiny": "0.00025",
        "loss": "0.50000",
        "zero": "0.00000",
    }
    assert float(values["lr"]) == 1e-6


def test_metrics_dict_is_snapshotted_at_call_time(tmp_path: Path) -> None:
    metrics = {"loss": 0.0}
    with Logger(tmp_path, "snap") as logger:
        for step in range(200):
            metrics["loss"] = float(step)
            logger.log_metrics_summary(step, metrics)
        metrics.clear()
    rows = csv_rows(logger.metrics_csv_path)[1:]
    assert rows == [[str(s), f"{s:.5f}"] for s in range(200)]


def test_nan_and_infinities_are_written_as_nan_and_inf(tmp_path: Path) -> None:
    with Logger(tmp_path, "nan") as logger:
        logger.log_metrics_summary(1, {"a": math.nan, "b": math.inf, "c": -math.inf})
        logger.log_metrics_summary(2, {"a": 0.5, "b": 1.0, "c": 2.0})
    assert csv_rows(logger.metrics_csv_path)[1] == ["1", "nan", "inf", "-inf"]
    text = read(tmp_path / "nan_metrics.jsonl")
    assert text.splitlines()[0].endswith('"a": NaN, "b": Infinity, "c": -Infinity}')
    record = json.loads(text.splitlines()[0])  # as Python's json reads them
    assert math.isnan(record["a"]) and (record["b"], record["c"]) == (math.inf, -math.inf)


def test_the_jsonl_loads_flat_in_pandas_in_one_call(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    with Logger(tmp_path, "pd") as logger:
        logger.log_metrics_summary(1, {"loss": 0.5, "acc": math.nan})
        logger.log_metrics_summary(2, {"loss": 0.25, "acc": 0.75, "note": "a,b"})
    frame = pandas.read_json(tmp_path / "pd_metrics.jsonl", lines=True)
    assert list(frame.columns) == ["ts", "step", "rank", "host", "loss", "acc", "note"]
    assert frame["loss"].tolist() == [0.5, 0.25] and frame["step"].tolist() == [1, 2]
    assert frame["acc"].dtype == float and math.isnan(frame["acc"][0]) and frame["acc"][1] == 0.75


def test_numpy_scalars_are_accepted(tmp_path: Path) -> None:
    with Logger(tmp_path, "np") as logger:
        logger.log_metrics_summary(
            np.int64(4),
            {
                "f32": np.float32(0.25),
                "i64": np.int64(7),
                "f64": np.float64(1.5),
                "zero_d": np.array(2.0),
            },
        )
    assert csv_rows(logger.metrics_csv_path) == [
        ["step", "f32", "i64", "f64", "zero_d"],
        ["4", "0.25000", "7", "1.50000", "2.00000"],
    ]


def test_non_scalar_values_get_one_warning_and_are_not_written(tmp_path: Path) -> None:
    with Logger(tmp_path, "ns") as logger:
        for step in range(3):
            logger.log_metrics_summary(step, {"loss": 1.0, "hist": np.zeros(5), "seq": [1, 2]})
    assert csv_rows(logger.metrics_csv_path) == [["step", "loss"]] + [
        [str(s), "1.00000"] for s in range(3)
    ]
    warnings = [m for lvl, m in log_lines(logger.sys_log_path) if lvl == "WARNING"]
    assert len(warnings) == 2, warnings
    assert any("'hist'" in w and "shape (5,)" in w for w in warnings)
    assert any("'seq'" in w and "list" in w for w in warnings)


def test_each_kind_of_unwritable_value_is_reported_once_per_key(tmp_path: Path, daemon) -> None:
    with Logger(tmp_path / "c", "run", aggregator=daemon.endpoint, watcher=False) as logger:
        logger.log_metrics_summary(0, {"loss": np.arange(5)})
        logger.log_metrics_summary(1, {"loss": np.ones((3, 3))})  # an array again: counted
        logger.log_metrics_summary(2, {"loss": 1 + 2j})
        logger.log_metrics_summary(3, {"loss": object()})
        logger.log_metrics_summary(4, {"loss": 0.5})
    query = CollectorQuery(daemon.endpoint)
    try:
        stats = query.ask({"what": "status"}, 30)["stats"]
    finally:
        query.close()
    warnings = [line for line in daemon.file("system.log").splitlines() if "[WARNING]" in line]
    assert len(warnings) == 3, warnings
    assert "'loss' is not a scalar: numpy.ndarray of shape (5,)" in warnings[0]
    assert "not a scalar: complex;" in warnings[1]
    assert "not a scalar: object" in warnings[2]
    assert daemon.file("metrics.csv").splitlines()[-1] == "4,0.50000"
    assert stats["non_scalar_values"] == 4, stats


class _LazyScalar:
    """Array-like that records which thread asked for its value (as jax.Array.item would)."""

    shape = ()

    def __init__(self, value: float) -> None:
        self.value = value
        self.threads: list[str] = []

    def item(self) -> float:
        self.threads.append(threading.current_thread().name)
        return self.value


def test_array_values_are_converted_on_the_sender_thread(tmp_path: Path) -> None:
    lazy = _LazyScalar(3.5)
    with Logger(tmp_path, "lazy") as logger:
        logger.log_metrics_summary(1, {"v": lazy})
        assert lazy.threads in ([], ["roxxel-sender"])
    assert lazy.threads == ["roxxel-sender"]
    assert csv_rows(logger.metrics_csv_path)[1] == ["1", "3.50000"]


def test_jax_scalars_and_arrays_are_written(tmp_path: Path) -> None:
    result = run_python(
        "import jax, jax.numpy as jnp\n"
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'jax') as lg:\n"
        "    x = jnp.arange(4.0)\n"
        "    lg.log_metrics_summary(jnp.int32(2), {'s': jnp.float32(0.5), 'sum': x.sum(),\n"
        "                            'vec': x})\n"
        "    gone = jnp.float32(2.0)\n"
        "    gone.delete()  # as a donated buffer is\n"
        "    lg.log_metrics_summary(3, {'s': gone, 'sum': 0.25})\n"
    )
    assert result.returncode == 0, result.stderr
    assert csv_rows(str(tmp_path / "jax_metrics.csv")) == [
        ["step", "s", "sum"],
        ["2", "0.50000", "6.00000"],
        ["3", "", "0.25000"],  # a deleted array: reported, the rest of its row written
    ]
    log = read(tmp_path / "jax_system.log")
    assert "'vec'" in log
    assert "metric 's' is not a scalar" in log and "could not be read" in log, log


def test_constructing_a_logger_does_not_start_jax_backend(tmp_path: Path) -> None:
    result = run_python(
        "import socket, jax\n"
        "from jax._src import xla_bridge\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'jd')\n"
        "assert not xla_bridge.backends_are_initialized(), 'backend started'\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=1,"
        " process_id=0)\n"
        "lg.log_message(f'devices {jax.device_count()}')\n"
        "lg.close()\n"
        "jax.distributed.shutdown()\n"
    )
    assert result.returncode == 0, result.stderr
    assert "[INFO] devices 1" in read(tmp_path / "jd_system.log")


def test_thread_mode_collector_writes_the_same_files(tmp_path: Path) -> None:
    with Logger(tmp_path, "thr", collector="thread") as logger:
        logger.log_message("from a thread collector")
        logger.log_metrics_summary(1, {"loss": 0.5})
    assert log_lines(logger.sys_log_path) == [("INFO", "from a thread collector")]
    assert read(logger.metrics_csv_path) == "step,loss\n1,0.50000\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "flush_interval",
            math.inf,
            "flush_interval must be a finite number >= 0.001 seconds, not inf",
        ),
        ("flush_interval", 0.0, "flush_interval must be a finite number >= 0.001 seconds, not 0.0"),
        ("max_buffer_bytes", math.nan, "max_buffer_bytes must be a finite number >= 1, not nan"),
        ("max_buffer_bytes", "1G", "max_buffer_bytes must be a finite number >= 1, not '1G'"),
        ("close_timeout", -1, "close_timeout must be a finite number >= 0 seconds, not -1"),
        ("close_timeout", math.nan, "close_timeout must be a finite number >= 0 seconds, not nan"),
        ("discovery_timeout", None, "discovery_timeout must be a finite number >= 0 seconds"),
        # Every rank checks it, rank 0 (this test) too: not only at scale.
        ("forward_level", "BOGUS", "forward_level: unknown logging level 'BOGUS'"),
        ("forward_level", None, "forward_level: unknown logging level None"),
        ("level", 2.5, "level: unknown logging level 2.5"),
    ],
)
def test_a_bad_option_is_refused_naming_it(
    tmp_path: Path, option: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Logger(tmp_path, "opts", **{option: value})
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_a_closed_logger_cannot_be_entered_again(tmp_path: Path) -> None:
    logger = Logger(tmp_path, "again")
    logger.close()
    with pytest.raises(RuntimeError, match="closed"), logger:
        pass


def test_int_like_levels_are_levels(tmp_path: Path) -> None:
    class Verbosity(enum.IntEnum):
        LOUD = 35

    with Logger(tmp_path, "intlike", level=np.int64(20)) as logger:
        logger.log_message("an IntEnum", Verbosity.LOUD)
        logger.log_message("a NumPy int", np.int32(40))
    assert log_lines(logger.sys_log_path) == [("Level 35", "an IntEnum"), ("ERROR", "a NumPy int")]


def test_bad_arguments_fail_clearly_at_the_caller(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="collector"):
        Logger(tmp_path, collector="fork")
    for prefix in ("", "../escape", "a/b", "a\\b", ".hidden", "..", "x" * 256, "nul\0", "a\udcff"):
        with pytest.raises(ValueError, match="filename_prefix must be a file name"):
            Logger(tmp_path, filename_prefix=prefix)
    with pytest.raises(ValueError, match="aggregator='tcp:/x' is not a ZeroMQ endpoint"):
        Logger(tmp_path, aggregator="tcp:/x")
    with Logger(tmp_path, "bad") as logger:
        with pytest.raises(TypeError, match="step must be an integer"):
            logger.log_metrics_summary(1.5, {"x": 1.0})
        with pytest.raises(TypeError, match="metrics must be a mapping"):
            logger.log_metrics_summary(1, [("x", 1.0)])
        with pytest.raises(ValueError, match="unknown logging level"):
            logger.log_message("x", level="LOUD")
        logger.log_metrics_summary(2, {"x": 1.0})
        # Metric names: checked whenever they differ from the last good ones.
        with pytest.raises(TypeError, match=r"metric names are str, not int \(7\)"):
            logger.log_metrics_summary(3, {"x": 1.0, 7: 2.0})
        with pytest.raises(ValueError, match="1 to 1024 characters, not 0"):
            logger.log_metrics_summary(3, {"": 1.0})
        with pytest.raises(ValueError, match="1 to 1024 characters, not 1025"):
            logger.log_metrics_summary(3, {"y" * 1025: 1.0})
        with pytest.raises(ValueError, match="at most 4096 metrics per row"):
            logger.log_metrics_summary(3, {f"k{i}": 1.0 for i in range(4097)})
        logger.log_metrics_summary(4, {"x": 3.0})
    assert read(logger.metrics_csv_path) == "step,x\n2,1.00000\n4,3.00000\n"


@pytest.mark.parametrize("rank", [0, 1])
def test_metric_names_are_checked_alike_on_every_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon, rank: int
) -> None:
    for name in ("TPU_WORKER_ID", "MEGASCALE_SLICE_ID", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(rank))  # torchrun's (RANK alone is too common a name)
    with Logger(tmp_path, "run", aggregator=daemon.endpoint, watcher=False) as logger:
        assert logger.rank == rank
        with pytest.raises(TypeError, match=r"metric names are str, not int \(7\)"):
            logger.log_metrics_summary(1, {"x": 1.0, 7: 2.0})
        with pytest.raises(ValueError, match="1 to 1024 characters, not 0"):
            logger.log_metrics_summary(1, {"": 1.0})
        logger.log_metrics_summary(2, {"x": 1.0})  # written by rank 0 only
        logger.log_metrics_summary(3, {"x": 2.0}, all_ranks=True)
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log_metrics_summary(4, {"x": 3.0})  # after close, on every rank
    rows = csv_rows(str(daemon.log_dir / "run_metrics.csv"))
    if rank == 0:
        assert rows == [["step", "x", "rank"], ["2", "1.00000", ""], ["3", "2.00000", "0"]]
    else:
        assert rows == [["step", "rank", "x"], ["3", "1", "2.00000"]]


def test_after_fork_called_outside_a_forked_child_changes_nothing(tmp_path: Path) -> None:
    with Logger(tmp_path, "fork", collector="thread", watcher=False) as logger:
        sender = logger._sender
        logger.after_fork()  # the fork hook's call, made in the same process
        assert logger._sender is sender
        logger.log_message("still delivered")
    assert log_lines(logger.sys_log_path) == [("INFO", "still delivered")]


def test_an_embedded_collector_that_cannot_start_says_why_in_the_exception(
    tmp_path: Path, daemon
) -> None:
    # The daemon holds the run {log_dir}/run_*: rank 0's own collector cannot.
    with pytest.raises(RuntimeError, match="could not start .*cannot serve .*another roxxel col"):
        Logger(daemon.log_dir, "run", watcher=False)


def test_an_embedded_collector_signs_its_reports_as_the_logger_s_collector(
    tmp_path: Path,
) -> None:
    import zmq

    with Logger(tmp_path, "own", collector_bind="tcp://127.0.0.1:0", watcher=False) as logger:
        peer = zmq.Context.instance().socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        peer.connect(logger.endpoint)
        peer.send(b"not a frame")
        logger.log_message("after the garbage")
        assert logger.flush(30)
        peer.close()
    log = read(logger.sys_log_path)
    assert "roxxel collector: malformed frame from peer" in log, log
    assert "roxxel-aggregator" not in log


def test_many_records_from_several_threads_all_arrive_in_order(tmp_path: Path) -> None:
    n = 20_000

    def work(tag: str) -> None:
        for i in range(n):
            logger.log_message(f"{tag} {i}")

    with Logger(tmp_path, "many") as logger:
        threads = [threading.Thread(target=work, args=(t,)) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    msgs = [m for _, m in log_lines(logger.sys_log_path)]
    for tag in "ab":
        assert [m for m in msgs if m.startswith(tag + " ")] == [f"{tag} {i}" for i in range(n)]


def test_embedded_collector_exits_after_parent_is_killed(tmp_path: Path) -> None:
    import psutil

    result = run_python(
        "import os, signal\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'orphan')\n"
        "for i in range(100): lg.log_message(f'line {i}')\n"
        "assert lg.flush(30)\n"
        "print(lg._route.embedded.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert result.returncode == -9, result.stderr
    # run_python returns once stdout closes, and the orphaned collector holds it too.
    pid = next(int(line) for line in result.stdout.splitlines() if line.isdigit())
    try:
        collector = psutil.Process(pid)
    except psutil.NoSuchProcess:
        collector = None
    if collector is not None:
        try:
            wait_for(lambda: _ended(collector), 30, "the orphaned collector to exit")
        finally:
            if not _ended(collector):
                collector.kill()
    assert [m for _, m in log_lines(tmp_path / "orphan_system.log")][:100] == [
        f"line {i}" for i in range(100)
    ]
    assert "parent process ended" in read(tmp_path / "orphan_system.log")


def test_csv_stays_parseable_after_many_widenings(tmp_path: Path) -> None:
    with Logger(tmp_path, "wide") as logger:
        for step in range(20):
            logger.log_metrics_summary(step, {f"k{step}": float(step)})
    rows = csv_rows(logger.metrics_csv_path)
    assert rows[0] == ["step"] + [f"k{s}" for s in range(20)]
    for step, row in enumerate(rows[1:]):
        assert len(row) == 21 and row[0] == str(step) and row[1 + step] == f"{step:.5f}"


def _ended(process) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_logger_never_closed_is_drained_at_exit(tmp_path: Path) -> None:
    result = run_python(
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'atexit')\n"
        "for i in range(1000): lg.log_message(f'line {i}')\n"
        "lg.log_metrics_summary(1, {'loss': 0.5})\n"
    )
    assert result.returncode == 0, result.stderr
    assert [m for _, m in log_lines(tmp_path / "atexit_system.log")] == [
        f"line {i}" for i in range(1000)
    ]
    assert read(tmp_path / "atexit_metrics.csv") == "step,loss\n1,0.50000\n"


def test_multi_line_message_cannot_forge_a_record(tmp_path: Path) -> None:
    with Logger(tmp_path, "forge") as logger:
        logger.log_message("real\n[2026-01-01 00:00:00] [INFO] fake\r\nmore")
    assert log_lines(logger.sys_log_path) == [("INFO", "real")]
    assert read(logger.sys_log_path).splitlines()[1:] == [
        " [2026-01-01 00:00:00] [INFO] fake",
        "more",
    ]


def test_control_characters_cannot_rewrite_what_a_terminal_shows(tmp_path: Path) -> None:
    with Logger(tmp_path, "ctl") as logger:
        logger.log_message("ok\x1b[2K\x1b[1A\rERROR: forged\x08\x00\tend")
    text = read(logger.sys_log_path)
    assert "\x1b" not in text and "\x08" not in text and "\x00" not in text
    assert text.endswith("] [INFO] ok\\x1b[2K\\x1b[1A\nERROR: forged\\x08\\x00\tend\n")
    assert log_lines(logger.sys_log_path) == [("INFO", "ok\\x1b[2K\\x1b[1A")]  # one record


def test_text_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    cells = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\tx", "-1.5", "+2", "plain"]
    with Logger(tmp_path, "csvi") as logger:
        logger.log_metrics_summary(1, {f"c{i}": v for i, v in enumerate(cells)})
        logger.log_metrics_summary(2, {"c0": -3.5})
    rows = csv_rows(logger.metrics_csv_path)
    assert rows[1][1:] == [
        "'=cmd|' /C calc'!A0",
        "'+1+1",
        "'-2+3",
        "'@SUM(A1:A2)",
        "'\tx",
        "-1.5",  # numbers as text stay numbers
        "+2",
        "plain",
    ]
    assert rows[2][1] == "-3.50000"  # a float is never touched


def test_close_reports_records_a_dead_embedded_collector_never_wrote(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    logger = Logger(tmp_path, "dead", close_timeout=60)
    logger.log_message("written")
    assert logger.flush(30)
    logger._route.embedded.process.kill()
    logger._route.embedded.process.wait()
    logger.log_message("never written")
    logger.close()  # returns once it sees the collector is gone, not after 60 s
    err = capfd.readouterr().err
    assert "1 record(s) were not delivered: the run's own collector is no longer running" in err
    assert "--aggregator ENDPOINT)" in err  # its own collector is gone: the user names one
    assert "exited with code -9" in err
    assert log_lines(logger.sys_log_path) == [("INFO", "written")]


def test_all_ranks_rows_carry_a_rank_column(tmp_path: Path) -> None:
    with Logger(tmp_path, "ranked") as logger:
        logger.log_metrics_summary(1, {"loss": 1.0}, all_ranks=True)
        logger.log_metrics_summary(2, {"loss": 0.5}, all_ranks=True)
    assert read(logger.metrics_csv_path) == "step,rank,loss\n1,0,1.00000\n2,0,0.50000\n"
    with Logger(tmp_path, "option", metrics_from_all_ranks=True) as logger:
        logger.log_metrics_summary(1, {"loss": 1.0})
    assert read(logger.metrics_csv_path) == "step,rank,loss\n1,0,1.00000\n"


class _Unreadable:
    """Array-like whose value cannot be read, as a deleted or donated jax.Array."""

    shape = ()

    def item(self) -> float:
        raise RuntimeError("Array has been deleted")


def test_an_unreadable_value_is_reported_and_the_rest_still_arrives(tmp_path: Path) -> None:
    with Logger(tmp_path, "unreadable") as logger:
        logger.log_metrics_summary(1, {"loss": 0.5, "grad": _Unreadable()})
        for step in range(2, 5):
            logger.log_metrics_summary(step, {"loss": 0.25})
    assert csv_rows(logger.metrics_csv_path) == [["step", "loss"]] + [
        [str(s), "0.50000" if s == 1 else "0.25000"] for s in range(1, 5)
    ]
    (warning,) = [m for lvl, m in log_lines(logger.sys_log_path) if lvl == "WARNING"]
    assert "'grad'" in warning and "could not be read" in warning and "deleted" in warning


def test_carriage_returns_in_text_cannot_tear_a_csv_row(tmp_path: Path) -> None:
    with Logger(tmp_path, "cr") as logger:
        logger.log_metrics_summary(1, {"note": "a\rb\r\nc"})
        assert logger.flush(30)
        logger.log_metrics_summary(2, {"note": "d", "later": 1.0})  # widens: rows read back
    assert csv_rows(logger.metrics_csv_path) == [
        ["step", "note", "later"],
        ["1", "a\nb\nc", ""],
        ["2", "d", "1.00000"],
    ]


def test_a_log_dir_with_any_file_name_characters_is_served(tmp_path: Path) -> None:
    # The collector's answer names the files: a no-break space or a tab in a
    # path once made encoding that answer fail, and the collector exit.
    log_dir = tmp_path / "my\u00a0runs\tand more"
    with Logger(log_dir, "job") as logger:
        logger.log_message("served")
        assert logger.flush(30)
    assert log_lines(logger.sys_log_path) == [("INFO", "served")]


def test_a_forked_child_and_the_watcher_do_not_mark_a_new_run(tmp_path: Path) -> None:
    code = f"""
import os
from roxxel import Logger
with Logger({str(tmp_path)!r}, "forks") as log:
    log.log_message("parent before")
    assert log.flush(30)
    pid = os.fork()
    if pid == 0:
        log.log_message("from the child")
        log.flush(30)
        os._exit(0)
    os.waitpid(pid, 0)
    log.log_message("parent after")
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    text = read(tmp_path / "forks_system.log")
    assert "a new run of" not in text, text
    assert [m for _, m in log_lines(tmp_path / "forks_system.log")] == [
        "parent before",
        "from the child",
        "parent after",
    ]


def test_a_log_dir_that_is_a_file_is_refused_in_one_clear_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="log_dir '.*afile' is a file, not a directory"):
        Logger(afile, "run")
    assert afile.read_text() == "not a directory"


def test_a_message_past_the_limit_is_cut_said_once_and_counted(tmp_path: Path) -> None:
    from roxxel.logger import MAX_MESSAGE_CHARS

    long = "é" * (MAX_MESSAGE_CHARS + 10)  # two bytes a character: past 1 MiB would not fit
    with Logger(tmp_path, "cut") as logger:
        logger.log_message(long)
        logging.getLogger("cut-test").addHandler(roxxel.Handler(logger))
        logging.getLogger("cut-test").warning("%s", "x" * (MAX_MESSAGE_CHARS + 1))
        logger.log_message("short")
    assert logger.truncated_messages == 2
    lines = log_lines(logger.sys_log_path)
    warnings = [m for lvl, m in lines if lvl == "WARNING" and m.startswith("roxxel:")]
    assert warnings == [
        f"roxxel: a message of {MAX_MESSAGE_CHARS + 10:,} characters was cut to "
        f"{MAX_MESSAGE_CHARS:,} (the limit), ending with '…[truncated by roxxel]'; "
        "Logger.truncated_messages counts such cuts"
    ]
    cut = [m for _, m in lines if m.endswith(" …[truncated by roxxel]")]
    assert [len(m) for m in cut] == [MAX_MESSAGE_CHARS + 23] * 2
    assert cut[0].startswith("é" * 100) and lines[-1] == ("INFO", "short")


def test_a_text_value_past_the_limit_is_cut_and_its_batch_written(tmp_path: Path) -> None:
    from roxxel.schema import MAX_TEXT_CHARS, TRUNCATED

    with Logger(tmp_path, "longtext") as logger:
        for i in range(1000):
            logger.log_metrics_summary(i, {"loss": 1 / (i + 1)})
            if i == 500:  # 1 MiB + 1: the longest string a frame's text may hold, and one more
                logger.log_metrics_summary(i, {"note": "x" * (1024 * 1024 + 1)})
    csv.field_size_limit(max(csv.field_size_limit(), 2 * MAX_TEXT_CHARS))  # the default: 128 KiB
    rows = csv_rows(logger.metrics_csv_path)
    assert rows[0] == ["step", "loss", "note"]
    assert [int(r[0]) for r in rows[1:]] == [*range(501), *range(500, 1000)]
    (note,) = [r[2] for r in rows[1:] if len(r) > 2 and r[2]]
    assert note == "x" * MAX_TEXT_CHARS + TRUNCATED
    jsonl = [json.loads(line) for line in open(logger.metrics_jsonl_path, encoding="utf-8")]
    assert len(jsonl) == 1001 and jsonl[501]["note"] == note


def test_texts_with_lone_surrogates_are_written_escaped_not_dropped(tmp_path: Path) -> None:
    # os.listdir gives a file name's undecodable byte as a lone surrogate: no UTF-8.
    with Logger(tmp_path, "surrogate") as logger:
        logger.log_message("file \udcff.txt")
        for step in range(3):
            logger.log_metrics_summary(step, {"loss": 0.5, "name \udcfe": 1.0, "v": "x\udcff"})
        logger.log_message("after")
    assert log_lines(logger.sys_log_path) == [("INFO", "file \\udcff.txt"), ("INFO", "after")]
    assert csv_rows(logger.metrics_csv_path) == [
        ["step", "loss", "name \\udcfe", "v"],
        *[[str(step), "0.50000", "1.00000", "x\\udcff"] for step in range(3)],
    ]
    assert "dropped" not in open(logger.sys_log_path, encoding="utf-8").read()


def test_steps_and_levels_beyond_64_bits_are_written_exactly(tmp_path: Path) -> None:
    huge, low = 2**64, -(2**63) - 1
    with Logger(tmp_path, "bigstep") as logger:
        for step in [*range(100), huge, low, *range(101, 200)]:
            logger.log_metrics_summary(step, {"loss": 0.5})
        logger.log_message("a big level", 2**70)
        logger.log_message("after it")
    steps = [int(r[0]) for r in csv_rows(logger.metrics_csv_path)[1:]]
    assert steps == [*range(100), huge, low, *range(101, 200)]
    jsonl = [json.loads(line) for line in open(logger.metrics_jsonl_path, encoding="utf-8")]
    assert [row["step"] for row in jsonl] == steps
    lines = log_lines(logger.sys_log_path)
    assert ("Level 1180591620717411303424", "a big level") in lines
    assert lines[-1] == ("INFO", "after it")


def test_a_level_named_in_the_training_process_keeps_its_name(tmp_path: Path) -> None:
    result = run_python(
        f"""
import logging, roxxel
logging.addLevelName(116, "Sociable")
logging.addLevelName(117, "")  # no name to send: shown as logging shows it
with roxxel.Logger({str(tmp_path)!r}, "lv") as logger:
    logger.log_message("direct", 116)
    logger.log_message("by name", "Sociable")
    log = logging.getLogger("lv-test")
    log.addHandler(roxxel.Handler(logger))
    log.log(116, "through logging")
    logger.log_message("unnamed", 117)
    logger.log_message("numbered", 118)
"""
    )
    assert result.returncode == 0, result.stderr
    assert log_lines(str(tmp_path / "lv_system.log")) == [
        ("Sociable", "direct"),
        ("Sociable", "by name"),
        ("Sociable", "lv-test: through logging"),
        ("Level 117", "unnamed"),
        ("Level 118", "numbered"),
    ]
    assert "[Sociable] direct" in result.stdout


def test_the_metrics_files_and_the_csv_floats_are_the_loggers_to_choose(tmp_path: Path) -> None:
    with Logger(tmp_path, "csvonly", metrics_files=["csv"], csv_floats="full") as logger:
        logger.log_metrics_summary(1, {"loss": 0.0012345678, "tiny": 1e-7, "n": 3})
        assert logger.metrics_jsonl_path is None
    assert read(logger.metrics_csv_path) == "step,loss,tiny,n\n1,0.0012345678,1e-07,3\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "csvonly_metrics.csv",
        "csvonly_system.log",
    ]
    with Logger(tmp_path, "jsonlonly", metrics_files="jsonl", collector="thread") as logger:
        logger.log_metrics_summary(1, {"loss": 0.5})
        assert logger.metrics_csv_path is None
    assert json.loads(read(logger.metrics_jsonl_path))["loss"] == 0.5
    assert not (tmp_path / "jsonlonly_metrics.csv").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"metrics_files": ()},
            "metrics files are one or more of csv, jsonl, tensorboard, not none",
        ),
        ({"metrics_files": ["csv", "xml"]}, "not 'csv', 'xml'"),
        ({"csv_floats": "6f"}, "csv floats are one of original, full, not '6f'"),
    ],
)
def test_unknown_metrics_files_or_csv_floats_are_refused(tmp_path: Path, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        Logger(tmp_path, "bad", **options)
    assert not list(tmp_path.iterdir())


def test_a_logger_of_a_daemon_cannot_choose_its_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="roxxel-aggregator --metrics-files/--csv-floats"):
        Logger(tmp_path, "d", aggregator="tcp://127.0.0.1:9", csv_floats="full")


@pytest.mark.parametrize(("code", "said"), [(0, None), (None, None), (3, "exiting with status 3")])
def test_sys_exit_inside_the_logger_is_no_crash(tmp_path: Path, code, said) -> None:
    result = run_python(
        f"""
import sys, roxxel
with roxxel.Logger({str(tmp_path)!r}, "ex") as logger:
    logger.log_message("before")
    sys.exit({code!r})
"""
    )
    assert result.returncode == (code or 0), result.stderr
    lines = log_lines(str(tmp_path / "ex_system.log"))
    assert "CRITICAL" not in [level for level, _ in lines] and "Traceback" not in result.stderr
    if said is None:
        assert lines == [("INFO", "before")]
    else:
        assert lines[0] == ("INFO", "before") and lines[1][0] == "WARNING"
        assert lines[1][1].startswith(f"{said} (sys.exit) at <string>:5 in <module>")


def test_a_row_waits_for_its_array_without_holding_up_what_was_logged_around_it(
    tmp_path: Path,
) -> None:
    # The sender reads a jax.Array only once the device has computed it: the
    # line logged after the slow step's row reaches the file while the device
    # still computes, the rows before it too; the row and those after it follow.
    result = run_python(
        "import time, jax, jax.numpy as jnp\n"
        "from roxxel import Logger\n"
        "x = jnp.ones((2000, 2000), jnp.float32) / 2000\n"
        "slow = jax.jit(lambda x: jnp.sum(x @ x @ x @ x @ x @ x @ x @ x @ x @ x) / 2000)\n"
        "slow(x).block_until_ready()\n"
        f"with Logger({str(tmp_path)!r}, 'ready', watcher=False) as lg:\n"
        "    lg.log_metrics_summary(0, {'loss': 1.0})\n"
        "    y = slow(x)\n"
        "    lg.log_metrics_summary(1, {'loss': y})\n"
        "    lg.log_metrics_summary(2, {'loss': 3.0})\n"
        "    lg.log_message('after the slow step')\n"
        "    deadline = time.monotonic() + 60\n"
        "    while ('after the slow step' not in open(lg.sys_log_path).read()\n"
        "           or '0,1.00000' not in open(lg.metrics_csv_path).read()):\n"
        "        assert time.monotonic() < deadline, 'the line and row 0 did not arrive'\n"
        "        time.sleep(0.002)\n"
        "    print('computed when the line was written:', y.is_ready())\n"
        "    print('rows then:', open(lg.metrics_csv_path).read().split())\n"
    )
    assert result.returncode == 0, result.stderr
    assert "computed when the line was written: False" in result.stdout, result.stdout
    assert "rows then: ['step,loss', '0,1.00000']" in result.stdout, result.stdout
    rows = csv_rows(str(tmp_path / "ready_metrics.csv"))
    assert [row[0] for row in rows] == ["step", "0", "1", "2"]
    assert (rows[1][1], rows[3][1]) == ("1.00000", "3.00000")
    assert abs(float(rows[2][1]) - 1.0) < 1e-3  # the array's value (float32 sums)


def test_an_idle_logger_sleeps_and_any_threads_next_records_wake_it(tmp_path, monkeypatch):
    # An hour between an idle sender's looks: a record that did not ring for
    # it would miss flush()'s deadline.
    monkeypatch.setattr(roxxel.client, "IDLE_WAIT", 3600.0)
    expected = []
    with Logger(str(tmp_path), "idle") as lg:
        asleep = lg._hot_path._line_wakes_sender  # what it calls while the sender sleeps
        for burst in range(4):
            wait_for(lambda: lg._append_line == asleep, timeout=10, what="the sender asleep")

            def log(thread: int, burst: int = burst) -> None:
                for i in range(50):
                    lg.log_message(f"burst {burst} thread {thread} line {i}")
                    lg.log_metrics_summary(burst * 1000 + thread * 100 + i, {"x": float(i)})

            threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            expected += [f"burst {burst} thread {t} line {i}" for t in range(4) for i in range(50)]
            assert lg.flush(timeout=30)
    messages = [message for _, message in log_lines(str(tmp_path / "idle_system.log"))]
    assert sorted(m for m in messages if m.startswith("burst ")) == sorted(expected)
    assert len(csv_rows(str(tmp_path / "idle_metrics.csv"))) == 1 + len(expected)
    with pytest.raises(RuntimeError):
        lg.log_message("after close")  # close() swapped the hot path over the ringing one
