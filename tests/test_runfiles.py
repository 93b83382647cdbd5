"""A run's files as every ``roxxel`` tool takes them: a log directory, a file, or DIR/PREFIX.

``roxxel plot``, ``tail`` and ``replay`` run as real processes; ``replay``
delivers to a real daemon.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from roxxel.runfiles import (
    METRICS_CSV,
    SYSTEM_LOG,
    UNDELIVERED,
    RunFilesError,
    run_file,
    run_files,
    runs_in,
)

from .conftest import free_port, python_env, run_python

CSV = "step,loss\n0,1.00000\n1,0.50000\n"
LOG = "[2026-01-01 00:00:00] [INFO] from the run\n"


def roxxel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roxxel.cli", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


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
