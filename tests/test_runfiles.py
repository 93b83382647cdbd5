"""A run's files as every ``roxxel`` tool takes them: a log directory, a file, or DIR/PREFIX.

``roxxel plot``, ``tail``, ``replay``, ``status`` and ``check`` run as real
processes; ``replay`` delivers to a real daemon, ``status`` and ``check``
ask the collector a real Logger process started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from roxxel.runfiles import (
    COLLECTOR,
    METRICS_CSV,
    SYSTEM_LOG,
    UNDELIVERED,
    RunFilesError,
    run_file,
    run_files,
    running_collector,
    runs_in,
)

from .conftest import free_port, python_env, read, run_python, wait_for
from .test_tools import roxxel

CSV = "step,loss\n0,1.00000\n1,0.50000\n"
LOG = "[2026-01-01 00:00:00] [INFO] from the run\n"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A log dir of one run, ``run_a`` (its CSV, system log and dot-files)."""
    directory = tmp_path / "logs"
    directory.mkdir()
    (directory / "run_a_metrics.csv").write_text(CSV)
    (directory / "run_a_system.log").write_text(LOG)
    (directory / ".run_a_checkpoint.json").write_text("{}")  # a dot-file is not a run
    (directory / "run_a_metrics.jsonl").write_text("")
    return directory


def test_a_directory_of_one_run_gives_its_file(logs: Path) -> None:
    assert run_file(str(logs), METRICS_CSV) == str(logs / "run_a_metrics.csv")
    assert run_file(str(logs), SYSTEM_LOG) == str(logs / "run_a_system.log")
    assert runs_in(str(logs), METRICS_CSV) == {"run_a": [str(logs / "run_a_metrics.csv")]}


def test_a_file_and_dir_slash_prefix_name_the_same_file(logs: Path) -> None:
    csv = str(logs / "run_a_metrics.csv")
    assert run_file(csv, METRICS_CSV) == csv
    assert run_file(str(logs / "run_a"), METRICS_CSV) == csv
    with pytest.raises(RunFilesError, match=r"nor a run of that prefix \(its runs: run_a\)"):
        run_file(str(logs / "run_b"), METRICS_CSV)
    with pytest.raises(RunFilesError, match="--prefix names a run of a log directory"):
        run_file(csv, METRICS_CSV, "run_a")


def test_several_runs_are_listed_never_guessed(logs: Path) -> None:
    (logs / "run_b_metrics.csv").write_text(CSV)
    with pytest.raises(RunFilesError) as several:
        run_file(str(logs), METRICS_CSV)
    assert str(several.value) == (
        f"{logs} holds 2 runs (run_a, run_b): name the run with --prefix, e.g. --prefix run_a"
    )
    assert run_file(str(logs), METRICS_CSV, "run_b") == str(logs / "run_b_metrics.csv")
    with pytest.raises(RunFilesError, match=r"holds no run_c_metrics.csv \(its runs: run_a, run_b"):
        run_file(str(logs), METRICS_CSV, "run_c")
    with pytest.raises(RunFilesError, match=r"holds no \*_undelivered_rank\*.jsonl"):
        run_files(str(logs), UNDELIVERED)


def test_a_prefix_is_the_name_up_to_the_kind_s_suffix(tmp_path: Path) -> None:
    for name in ("a_b_undelivered_rank0.jsonl", "a_b_undelivered_rank12.jsonl", "c_system.log"):
        (tmp_path / name).write_text("")
    (tmp_path / "a_b_undelivered_rank0.jsonl.replayed").write_text("")  # done: not a run's file
    (tmp_path / "glob[x]").mkdir()
    assert runs_in(str(tmp_path), UNDELIVERED) == {
        "a_b": [str(tmp_path / f"a_b_undelivered_rank{n}.jsonl") for n in (0, 12)]
    }
    assert runs_in(str(tmp_path / "glob[x]"), SYSTEM_LOG) == {}


def test_plot_takes_a_run_directory_and_lists_its_runs_when_several(logs: Path) -> None:
    pytest.importorskip("matplotlib")
    png = logs / "run_a_metrics.png"
    from_dir = roxxel("plot", str(logs))
    assert from_dir.returncode == 0, from_dir.stderr
    assert from_dir.stdout == f"{png}\n" and png.read_bytes().startswith(b"\x89PNG")
    png.unlink()
    from_prefix = roxxel("plot", str(logs / "run_a"))
    assert from_prefix.returncode == 0 and from_prefix.stdout == f"{png}\n", from_prefix.stderr
    (logs / "run_b_metrics.csv").write_text(CSV)
    several = roxxel("plot", str(logs))
    assert several.returncode == 1 and several.stdout == ""
    assert several.stderr == (
        f"roxxel plot: {logs} holds 2 runs (run_a, run_b): name the run with --prefix, "
        "e.g. --prefix run_a\n"
    )
    chosen = roxxel("plot", str(logs), "--run", "run_b")
    assert chosen.returncode == 0 and chosen.stdout == f"{logs / 'run_b_metrics.png'}\n"


def test_tail_takes_the_file_and_dir_slash_prefix_too(logs: Path) -> None:
    for source in (logs / "run_a_system.log", logs / "run_a", logs):
        result = roxxel("tail", str(source), "--no-follow")
        assert (result.returncode, result.stdout) == (0, LOG), (source, result.stderr)
    (logs / "run_b_system.log").write_text(LOG)
    several = roxxel("tail", str(logs), "--no-follow")
    assert several.returncode == 1 and "2 runs (run_a, run_b)" in several.stderr
    absent = roxxel("tail", str(logs), "--prefix", "run_c", "--no-follow")
    assert absent.returncode == 1 and "run_c_system.log" in absent.stderr


def test_replay_of_a_log_directory_delivers_every_rank_s_file(tmp_path: Path, start_daemon) -> None:
    port = free_port()
    client_dir = tmp_path / "client"
    for rank in (0, 1):  # nobody listens yet: each rank keeps its records in a file
        closed = run_python(
            "from roxxel import Logger\n"
            f"lg = Logger({str(client_dir)!r}, 'run', aggregator='tcp://127.0.0.1:{port}',"
            " close_timeout=0.5, watcher=False)\n"
            f"lg.log_message('kept by rank {rank}', level=30)\n"  # WARNING: forwarded by rank 1
            "lg.close()\n",
            SLURM_PROCID=str(rank),
            SLURM_NTASKS="2",
        )
        assert closed.returncode == 0, closed.stderr
    files = [client_dir / f"run_undelivered_rank{rank}.jsonl" for rank in (0, 1)]
    assert all(f.exists() for f in files)
    (client_dir / "other_undelivered_rank0.jsonl").write_text("")
    daemon = start_daemon(tmp_path / "logs", "run", f"tcp://127.0.0.1:{port}")
    endpoint = ("--aggregator", daemon.endpoint)
    several = roxxel("replay", str(client_dir), *endpoint)
    assert several.returncode == 1 and "2 runs (other, run)" in several.stderr
    result = roxxel("replay", str(client_dir), "--prefix", "run", *endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("delivered 1 record(s)") == 2
    assert all(not f.exists() and Path(f"{f}.replayed").exists() for f in files)
    assert daemon.terminate() == 0
    log = daemon.file("system.log")
    assert "kept by rank 0" in log and "[rank 1] kept by rank 1" in log


# A Logger that keeps its run open (and its own collector serving) until
# its stdin is closed.
OPEN_RUN = """
import sys
from roxxel import Logger
with Logger(sys.argv[1], "run", watcher=False, close_timeout=5) as lg:
    lg.log_message("up")
    assert lg.flush(30)
    print("ready", flush=True)
    sys.stdin.readline()
"""
AT_ONCE = 8.0  # seconds, a process start included; a hang would be --timeout 60


@contextlib.contextmanager
def open_run(log_dir: Path, out: Path) -> Iterator[subprocess.Popen]:
    """A real training process with its own collector child, serving ``log_dir``."""
    with open(out, "w") as stdout:
        run = subprocess.Popen(
            [sys.executable, "-c", OPEN_RUN, str(log_dir)],
            env=python_env(),
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    started: list[psutil.Process] = []
    try:
        wait_for(lambda: "ready" in read(out) or run.poll() is not None, 60, "the run")
        assert run.poll() is None, read(out)
        # Its collector lives in a session of its own: ended here too if the test fails.
        started = psutil.Process(run.pid).children(recursive=True)
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(60)
        for child in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
                child.wait(60)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def timed(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = roxxel(*args)
    return result, time.monotonic() - started


def test_status_and_check_of_a_run_s_directory_ask_its_own_collector(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    dot_file = logs / f".run{COLLECTOR}"
    with open_run(logs, tmp_path / "out") as run:
        entry = json.loads(dot_file.read_text())
        assert stat.S_IMODE(dot_file.stat().st_mode) == 0o600  # an ipc:// endpoint is a way in
        assert entry["endpoint"].startswith("ipc://") and entry["pid"] != run.pid
        assert running_collector(str(logs)) == entry["endpoint"]
        for source in (logs, logs / "run", dot_file):
            status = roxxel("status", str(source), "--json", "--timeout", "60")
            assert status.returncode == 0, (source, status.stderr)
            answer = json.loads(status.stdout)
            assert answer["endpoint"] == entry["endpoint"] and answer["pid"] == entry["pid"]
            assert answer["stats"]["records"] >= 1
        text = roxxel("status", str(logs), "--run", "run")
        assert text.returncode == 0 and "prefix run" in text.stdout, text.stderr
        check = roxxel("check", str(logs))
        assert check.returncode == 0, check.stderr
        assert check.stdout.startswith(f"collector at {entry['endpoint']} answered in ")
        run.stdin.close()
        assert run.wait(60) == 0, read(tmp_path / "out")
    assert not dot_file.exists()  # its collector ended cleanly
    gone = roxxel("status", str(logs))
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr == (
        f"roxxel status: no collector of a run in {logs} is running: a Logger's own "
        "collector writes where it listens there while it runs (a daemon's: give its "
        "endpoint, tcp://HOST:PORT)\n"
    )


def test_a_file_left_by_a_killed_collector_is_said_at_once_in_one_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    dot_file = logs / f".run{COLLECTOR}"
    with open_run(logs, tmp_path / "out") as run:
        pid = json.loads(dot_file.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # its parent, the run, has not reaped it yet
        wait_for(lambda: not alive(pid), 30, "the kill")
        stale = (
            f"the collector of {dot_file} (pid {pid}) is no longer running (it did not end "
            "cleanly, or its Logger's process was killed); the file is left from it\n"
        )
        for command in ("status", "check"):
            result, elapsed = timed(command, str(logs), "--timeout", "60")
            assert (result.returncode, result.stdout) == (1, ""), result.stderr
            assert result.stderr == f"roxxel {command}: {stale}"
            assert elapsed < AT_ONCE, elapsed
        run.stdin.close()
        run.wait(60)
    assert dot_file.exists()  # not a clean end: left, and still said to be stale
    result, elapsed = timed("status", str(logs / "run"), "--timeout", "60")
    assert result.returncode == 1 and result.stderr == f"roxxel status: {stale}"
    assert elapsed < AT_ONCE, elapsed


def test_the_collector_file_names_no_run_and_another_host_s_is_not_asked(logs: Path) -> None:
    (logs / f".run_a{COLLECTOR}").write_text(
        json.dumps({"endpoint": "ipc://@elsewhere", "pid": 1, "host": "another-host"})
    )
    assert runs_in(str(logs), COLLECTOR) == {"run_a": [str(logs / f".run_a{COLLECTOR}")]}
    assert runs_in(str(logs), METRICS_CSV) == {"run_a": [str(logs / "run_a_metrics.csv")]}
    with pytest.raises(RunFilesError, match="runs on another-host .* only that host reaches"):
        running_collector(str(logs))
    with pytest.raises(RunFilesError, match=r"no collector of run run_b .*\(those of run_a are\)"):
        running_collector(str(logs), "run_b")
    with pytest.raises(RunFilesError, match="is not a run's .PREFIX_collector.json"):
        running_collector(str(logs / "run_a_metrics.csv"))
    remote = {"endpoint": "tcp://127.0.0.1:5555", "remote": "tcp://10.0.0.7:5555"}
    (logs / f".run_a{COLLECTOR}").write_text(json.dumps({**remote, "pid": 1, "host": "h2"}))
    assert running_collector(str(logs / "run_a")) == "tcp://10.0.0.7:5555"
