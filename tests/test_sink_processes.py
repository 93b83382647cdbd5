"""Metrics sinks in processes of their own (aggregator.sinks.process): real
child processes, real pipes, real failures (a write past RLIMIT_FSIZE, a
SIGKILL); the files as one process would write them, each row once."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from aggregator.sinks import FileOptions, Origin, default_sinks
from aggregator.sinks.process import Offloaded, SinkProcess, SinkSpec

from .conftest import Daemon, metrics_runs, python_env, read, wait_for
from .test_delivery import alive, assert_exactly_once, csv_steps, start_clients, wait_all

ORIGIN = Origin(0, "host", 1)


def runs(first: int, count: int, key: str = "loss") -> list:
    return metrics_runs([("m", step, {key: step / 8}) for step in range(first, first + count)])


def loss_steps(path: Path) -> list[int]:
    """The steps of a CSV written from :func:`runs`, each row's loss checked."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(row["loss"]) == int(row["step"]) / 8 for row in rows)
    return [int(row["step"]) for row in rows]


def test_a_sink_process_writes_what_the_sink_writes_and_rewinds_to_its_marks(
    tmp_path: Path,
) -> None:
    local = SinkSpec("MetricsCsvSink", (str(tmp_path / "local.csv"), "original")).local()
    process = SinkProcess(SinkSpec("MetricsCsvSink", (str(tmp_path / "p.csv"), "original")))
    try:
        for sink in (local, process):
            sink.write_metrics(ORIGIN, runs(0, 3))
            sink.sync()
            mark = sink.checkpoint_mark()
            sink.write_metrics(ORIGIN, runs(3, 2, key="new"))  # widens the header
            sink.sync()
            sink.rewind(mark)
            sink.write_metrics(ORIGIN, runs(3, 1))
            sink.sync()
        assert process.mark() == local.mark()
    finally:
        local.close()
        process.close()
    expected = (tmp_path / "local.csv").read_text()
    assert (tmp_path / "p.csv").read_text() == expected
    rows = [row.rstrip() for row in expected.splitlines() if row.strip()]
    # The header keeps a column once widened (the sink's rule, not the process's).
    assert rows == ["step,loss,new", "0,0.00000,", "1,0.12500,", "2,0.25000,", "3,0.37500,"]


def test_closing_a_sink_process_ends_it(tmp_path: Path) -> None:
    process = SinkProcess(SinkSpec("MetricsJsonlSink", (str(tmp_path / "p.jsonl"),)))
    pid = process.pid
    assert pid is not None and alive(pid)
    process.close()
    assert not alive(pid)
    process.close()  # idempotent


def test_a_failed_write_in_the_process_is_an_oserror_at_the_sync_and_a_rewind_recovers(
    tmp_path: Path,
) -> None:
    # The child inherits a 4 KiB file size limit and an ignored SIGXFSZ: its
    # write past that fails with EFBIG, as a full disk fails with ENOSPC.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        process = SinkProcess(SinkSpec("MetricsJsonlSink", (str(tmp_path / "p.jsonl"),)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    try:
        process.write_metrics(ORIGIN, runs(0, 2))
        process.sync()
        mark = process.checkpoint_mark()
        process.write_metrics(ORIGIN, runs(2, 200))  # ~15 KiB
        process.write_metrics(ORIGIN, runs(202, 1))  # skipped: an earlier write failed
        with pytest.raises(OSError, match="File too large"):
            process.sync()
        process.rewind(mark)
        process.write_metrics(ORIGIN, runs(2, 1))
        process.sync()
    finally:
        process.close()
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]


def test_an_error_in_the_process_is_raised_with_its_traceback(tmp_path: Path) -> None:
    process = SinkProcess(SinkSpec("MetricsJsonlSink", (str(tmp_path / "p.jsonl"),)))
    try:
        process.write_metrics(ORIGIN, ["not a run"])  # type: ignore[list-item]
        with pytest.raises(RuntimeError, match="(?s)MetricsJsonlSink process failed.*Error"):
            process.sync()
    finally:
        process.close()


def test_a_sink_that_cannot_open_its_file_is_said_when_it_starts(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("epoch,loss\n1,2\n")  # another program's CSV
    with pytest.raises(OSError, match="not a roxxel metrics CSV"):
        SinkProcess(SinkSpec("MetricsCsvSink", (str(tmp_path / "p.csv"), "original")))


def test_a_busy_run_moves_its_sinks_into_processes_at_a_commit(tmp_path: Path) -> None:
    sinks = default_sinks(str(tmp_path / "moved"), "p", None, FileOptions(sink_processes="off"))
    spec = SinkSpec("MetricsCsvSink", (str(tmp_path / "p.csv"), "original"))
    offloaded = Offloaded(spec, move_at=1000)
    try:
        for sink in (sinks, offloaded):
            sink.write_metrics(ORIGIN, runs(0, 10))
            sink.sync()
        assert not offloaded.moved  # under a second: not judged yet
        offloaded._since -= 2.0  # two seconds later, at 5 rows a second: stays
        offloaded.sync()
        assert not offloaded.moved
        for sink in (sinks, offloaded):
            sink.write_metrics(ORIGIN, runs(10, 3000, key="acc"))
            sink.sync()
        offloaded._since -= 1.0  # 3,000 rows within a second: moved
        offloaded.sync()
        assert offloaded.moved
        for sink in (sinks, offloaded):
            sink.write_metrics(ORIGIN, runs(3010, 5))
            sink.sync()
    finally:
        sinks.close()
        offloaded.close()
    assert (tmp_path / "p.csv").read_text() == read(tmp_path / "moved" / "p_metrics.csv")


def test_bad_sink_processes_options_are_refused() -> None:
    with pytest.raises(ValueError, match="sink processes are one of auto, on, off, not 'yes'"):
        FileOptions(sink_processes="yes")
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--sink-processes", "yes"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--sink-processes: invalid choice: 'yes'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--bind", "tcp://127.0.0.1:0", "--log-dir", "x"],
        env=python_env(ROXXEL_SINK_PROCESSES="always"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ROXXEL_SINK_PROCESSES='always': one of auto, on, off" in done.stderr


def test_kill_9_of_a_sink_process_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, start_daemon
) -> None:
    n, ranks = 3000, 2
    log_dir = tmp_path / "logs"
    daemon: Daemon = start_daemon(log_dir, "run", extra=("--sink-processes", "on"))
    clients = start_clients(daemon.endpoint, n, ranks, tmp_path)
    try:
        csv_child = next(
            child
            for child in daemon.process.children()
            if any("metrics.csv" in f.path for f in child.open_files())
        )
        wait_for(lambda: len(daemon.file("metrics.csv").splitlines()) >= 300, 60, "300 rows")
        csv_child.kill()
        csv_child.wait(30)
        results = wait_all(clients)
        assert [code for code, _ in results] == [0] * ranks, results
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
        wait_all(clients, 1)
    log = daemon.file("system.log")
    assert sorted(csv_steps(log_dir / "run_metrics.csv")) == list(range(n))
    jsonl = [json.loads(line)["step"] for line in daemon.file("metrics.jsonl").splitlines()]
    assert sorted(jsonl) == list(range(n))
    tags = [f"[rank {r}] " if r else "" for r in range(ranks)]
    assert_exactly_once(log, [f"{tags[r]}c{r} {i}" for r in range(ranks) for i in range(n)])
    assert f"MetricsCsvSink process for {log_dir / 'run_metrics.csv'} (pid {csv_child.pid}) " in log
    assert "it works again" in log
    assert not [c for c in psutil.Process().children(recursive=True) if c.pid == csv_child.pid]


def test_sigterm_to_the_collector_s_process_group_drains_through_its_sink_processes(
    tmp_path: Path, start_daemon
) -> None:
    # systemd and a terminal's Ctrl-C signal every process of the group: the
    # sink processes must outlive the collector's last commit.
    n = 3000
    log_dir = tmp_path / "logs"
    extra = ("--sink-processes", "on")
    first: Daemon = start_daemon(log_dir, "run", extra=extra)
    clients = start_clients(first.endpoint, n, 1, tmp_path)
    try:
        children = first.process.children()
        assert len(children) == 2
        wait_for(lambda: len(first.file("metrics.csv").splitlines()) >= 300, 60, "300 rows")
        os.killpg(first.pid, signal.SIGTERM)
        assert first.process.wait(30) == 0
        assert not any(map(alive, (child.pid for child in children)))
        assert "failed" not in first.stdout + first.file("system.log")
        second = start_daemon(log_dir, "run", first.endpoint, extra)
        results = wait_all(clients)
        assert [code for code, _ in results] == [0], results
        assert second.terminate() == 0
    finally:
        wait_all(clients, 1)
    assert sorted(csv_steps(log_dir / "run_metrics.csv")) == list(range(n))


def test_a_child_restarted_after_a_rotation_rewinds_the_file_its_mark_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.jsonl"
    process = SinkProcess(SinkSpec("MetricsJsonlSink", (str(path),)))
    try:
        process.write_metrics(ORIGIN, runs(0, 2))
        process.sync()
        mark = process.checkpoint_mark()
        process.write_metrics(ORIGIN, runs(2, 3))  # never committed
        process.sync()
        path.rename(tmp_path / "p.jsonl.1")  # logrotate, before the SIGHUP
        child = psutil.Process(process.pid)
        child.kill()
        child.wait(30)
        process.rewind(mark)  # a new child: the renamed file is cut back to the mark
        process.write_metrics(ORIGIN, runs(2, 1))
        process.sync()
    finally:
        process.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "p.jsonl.1").read_text().splitlines()]
    assert steps == [0, 1]
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2]


def test_a_sink_is_not_moved_while_its_file_was_renamed_and_not_reopened(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    offloaded = Offloaded(SinkSpec("MetricsCsvSink", (str(path), "original")), move_at=1)
    try:
        offloaded.write_metrics(ORIGIN, runs(0, 10))
        path.rename(tmp_path / "p.csv.1")
        offloaded._since -= 2.0
        offloaded.sync()
        assert not offloaded.moved  # a child would open a new file by the name
        offloaded.reopen()
        offloaded.write_metrics(ORIGIN, runs(10, 10))
        offloaded._since -= 2.0
        offloaded.sync()
        assert offloaded.moved
        offloaded.write_metrics(ORIGIN, runs(20, 1))
    finally:
        offloaded.close()
    assert loss_steps(tmp_path / "p.csv.1") == list(range(10))
    assert loss_steps(path) == list(range(10, 21))


def test_rows_written_while_a_sync_was_due_are_synced_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    process = SinkProcess(SinkSpec("MetricsJsonlSink", (str(path),)))
    try:
        process.write_metrics(ORIGIN, runs(0, 2))
        process.begin_sync()  # a commit that failed elsewhere before its sync was read
        process.write_metrics(ORIGIN, runs(2, 2))
        process.sync()
        assert process.mark() == {"size": path.stat().st_size}
    finally:
        process.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]
