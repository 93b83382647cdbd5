"""Fatal ends with real signals: os.abort(), SIGKILL and a segfault while logging at full speed.

Each training process (``benchmarks.abort_window``'s) logs metrics rows
``(step, t)`` as fast as it can and records every row's time in a
memory-mapped file (which outlives the process without being written at the
end). After the process is gone, every row
older than ``LOSS_WINDOW_S`` before its end must be in the CSV, once, and the run's log
must hold the watcher's death notice, the tail of the process's stderr and,
at the collector's end, the run's first failure. ``pytest -s`` prints the
loss window: the rows missing and the age of the oldest one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from benchmarks.abort_window import ROWS, loss_window, start_logging_process

from .conftest import Daemon, free_port, python_env, read, wait_for

# Rows logged longer than this before the end must all be on disk. Generous:
# a loaded 2-core CI can starve the sender thread (or the collector) for a
# while, and these tests are about nothing lost beyond that, nothing twice,
# and the end reported. The figure itself (tens of ms at full speed, <= 20 ms
# at rates the collector absorbs) is measured by ``benchmarks.abort_window``
# for os.abort(); it reports the window but fails on none (only on a row
# written twice or a missing death notice).
LOSS_WINDOW_S = 1.0
# How long the abort and SIGKILL cases log: longer than the window, so that
# rows older than it exist and are checked.
LOGGING_S = LOSS_WINDOW_S + 0.5


def start_child(tmp_path: Path, how: str, seconds: float = 0.5, **env: str):
    return start_logging_process(tmp_path, how, seconds, env=python_env(**env))


def helpers_of(process: subprocess.Popen) -> list[psutil.Process]:
    """The child's own children (its watcher, its embedded collector), to end them by PID."""
    wait_for(lambda: len(psutil.Process(process.pid).children()) >= 1, what="the watcher")
    return psutil.Process(process.pid).children()


def end_all(process: subprocess.Popen, helpers: list[psutil.Process]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(30)
    for helper in helpers:
        try:
            helper.wait(15)  # they end by themselves once they have reported
        except psutil.TimeoutExpired:
            helper.kill()
        except psutil.NoSuchProcess:
            pass


def check_loss(
    label: str,
    csv_path: Path,
    times: Path,
    end: float | None = None,
    within_s: float = LOSS_WINDOW_S,
) -> int:
    """Every row logged more than ``within_s`` before the end is in the CSV, and no
    row is there twice; prints the loss window (``pytest -s``). Returns how many
    rows were that old (those the window checked)."""
    window = loss_window(csv_path, times, end=end)
    logged = np.memmap(times, dtype="float64", mode="r", shape=(ROWS,))
    end = float(logged[ROWS - 1]) if end is None else end
    checked = int(np.count_nonzero(logged[: window["logged"]] < end - within_s))
    print(
        f"\n{label}: {window['logged']:,} rows logged, {window['on_disk']:,} on disk, "
        f"{window['missing']:,} missing, the oldest missing logged "
        f"{window['oldest_missing_age_ms']:.1f} ms before the end; {checked:,} rows "
        f"logged more than {within_s:g} s before it"
    )
    assert window["duplicates"] == 0, window
    assert window["oldest_missing_age_ms"] <= within_s * 1e3, window
    return checked


def test_abort_at_full_speed_loses_only_the_last_moments_and_is_reported(
    tmp_path: Path, start_daemon
) -> None:
    daemon: Daemon = start_daemon(tmp_path / "logs")
    process, times = start_child(
        tmp_path,
        "abort",
        LOGGING_S,  # of logging faster than the daemon writes: the backlog grows meanwhile
        ROXXEL_AGGREGATOR=daemon.endpoint,
        RANK="2",
        WORLD_SIZE="4",
        LOCAL_RANK="2",
    )
    helpers = helpers_of(process)
    try:
        assert process.wait(60) == -signal.SIGABRT
        log = daemon.log_dir / "run_system.log"
        wait_for(lambda: "ended by SIGABRT" in read(log), what="the death notice")
    finally:
        end_all(process, helpers)
    stderr = process.stderr.read().decode()
    assert "Fatal Python error: Aborted" in stderr  # still on the process's own stderr
    text = read(log)
    assert f"[rank 2] process {process.pid} on " in text
    assert "Fatal Python error: Aborted" in text  # the stderr tail, via the watcher
    assert "Current thread" in text and "in <module>" in text
    csv_path = daemon.log_dir / "run_metrics.csv"
    assert check_loss("os.abort() at full speed (daemon, rank 2)", csv_path, times) > 0
    assert daemon.terminate() == 0
    last = read(log).splitlines()[-1]
    assert "[CRITICAL] roxxel: first failure of this run: rank 2 on " in last
    assert "ended by SIGABRT" in last


def test_sigkill_loses_only_the_last_moments_and_is_reported(tmp_path: Path) -> None:
    process, times = start_child(tmp_path, "wait")
    helpers = helpers_of(process)
    log = tmp_path / "logs" / "run_system.log"
    try:
        mapped = np.memmap(times, dtype="float64", mode="r", shape=(ROWS,))
        wait_for(
            lambda: mapped[0] != 0 and time.time() - mapped[0] > LOGGING_S,
            timeout=60,
            what=f"{LOGGING_S:g} s of logging",
        )
        os.kill(process.pid, signal.SIGKILL)
        end = time.time()
        # Not reaped yet: the watcher reads the exit status of the zombie.
        wait_for(lambda: "first failure of this run" in read(log), what="the summary")
    finally:
        end_all(process, helpers)
    assert process.returncode == -signal.SIGKILL
    text = read(log)
    assert f"[rank 0] process {process.pid} on " in text
    assert "ended by SIGKILL" in text
    # The process never wrote its end: the SIGKILL came from here.
    csv_path = tmp_path / "logs" / "run_metrics.csv"
    label = "SIGKILL at full speed (embedded collector, rank 0)"
    assert check_loss(label, csv_path, times, end=end) > 0
    assert text.splitlines()[-1].count("first failure of this run: rank 0") == 1


def test_a_segfault_puts_the_python_stack_in_the_log(tmp_path: Path) -> None:
    process, times = start_child(tmp_path, "segv", seconds=0.1)
    helpers = helpers_of(process)
    log = tmp_path / "logs" / "run_system.log"
    try:
        assert process.wait(60) == -signal.SIGSEGV
        wait_for(lambda: "first failure of this run" in read(log), what="the summary")
    finally:
        end_all(process, helpers)
    text = read(log)
    assert f"[rank 0] process {process.pid} on " in text and "ended by SIGSEGV" in text
    assert "Fatal Python error: Segmentation fault" in text
    assert "in read_address_zero" in text  # faulthandler's stack of the crashing thread
    assert "Current thread 0x" in text and "\nThread 0x" in text  # and of the others
    # 0.1 s of logging: no row older than the window, but none twice either.
    check_loss(
        "segfault (embedded collector, rank 0)", tmp_path / "logs" / "run_metrics.csv", times
    )


def test_a_clean_exit_gives_no_death_notice_and_the_watcher_ends(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path / 'logs')!r}, 'run') as lg:\n"
        "    lg.log_message('fine')\n"
        "    print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "to stderr" in result.stderr  # copied through by the watcher before it ended
    text = read(tmp_path / "logs" / "run_system.log")
    assert "fine" in text and "ended by" not in text and "first failure" not in text


def test_the_watcher_can_be_turned_off(tmp_path: Path) -> None:
    from roxxel import Logger

    with Logger(tmp_path, "kw", watcher=False) as logger:
        assert logger._route.watcher is None
    with Logger(tmp_path, "thread", collector="thread") as logger:
        assert logger._route.watcher is None  # its collector would die with the process
    os.environ["ROXXEL_WATCHER"] = "0"
    try:
        with Logger(tmp_path, "env") as logger:
            assert logger._route.watcher is None
        with Logger(tmp_path, "kw_wins", watcher=True) as logger:
            assert logger._route.watcher is not None
            watcher_pid = logger._route.watcher.process.pid
    finally:
        del os.environ["ROXXEL_WATCHER"]
    assert not psutil.pid_exists(watcher_pid) or psutil.Process(watcher_pid).status() == "zombie"


@pytest.mark.parametrize("loggers", [1, 2])
def test_stderr_goes_back_to_its_file_when_the_last_logger_closes(tmp_path, loggers) -> None:
    code = (
        "import os, sys\n"
        "from roxxel import Logger\n"
        f"lgs = [Logger({str(tmp_path)!r}, f'p{{i}}') for i in range({loggers})]\n"
        "assert len({id(lg._route.watcher) for lg in lgs}) == 1  # one watcher per process\n"
        "assert not os.path.samestat(os.fstat(2), os.fstat(99))\n"
        "for lg in lgs:\n"
        "    lg.close()\n"
        "assert os.path.samestat(os.fstat(2), os.fstat(99))\n"
        "print('after close', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import os; os.dup2(2, 99); exec({code!r})"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "after close" in result.stderr


# -- a jax.distributed run where one rank is SIGKILLed -------------------------------

WORKER = str(Path(__file__).with_name("pod_worker.py"))


def kill_one_rank_of_four(tmp_path: Path, **env: str) -> list[subprocess.Popen]:
    """Four ranks (JAX heartbeat timeout 3 s) that log and wait; rank 2 gets SIGKILL,
    and JAX then aborts the other three. Returns the ended processes."""
    port = str(free_port())
    procs = []
    for i in range(4):
        # To a file: a pipe nobody reads while we wait would stop the rank once full.
        with open(tmp_path / f"rank{i}.err", "w") as err:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        WORKER,
                        port,
                        str(i),
                        "4",
                        str(tmp_path / f"rank{i}"),
                        "--hang",
                        "3",
                    ],
                    env=python_env(**env),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    helpers: list[psutil.Process] = []
    try:
        ready = [tmp_path / f"rank{i}.ready" for i in range(4)]
        wait_for(lambda: all(p.exists() for p in ready), timeout=120, what="4 ranks logging")
        helpers = [h for p in procs for h in psutil.Process(p.pid).children()]
        os.kill(procs[2].pid, signal.SIGKILL)
        codes = [p.wait(120) for p in procs]
        assert codes == [-signal.SIGABRT, -signal.SIGABRT, -signal.SIGKILL, -signal.SIGABRT]
    finally:
        for p in procs:
            end_all(p, [])
        for helper in helpers:  # watchers and rank 0's collector end once they have reported
            with contextlib.suppress(psutil.NoSuchProcess):
                try:
                    helper.wait(30)
                except psutil.TimeoutExpired:
                    helper.kill()
    return procs


def check_deaths(log: str, procs: list[subprocess.Popen]) -> None:
    for rank, p in enumerate(procs):
        how = "SIGKILL" if rank == 2 else "SIGABRT"
        assert f"[CRITICAL] [rank {rank}] process {p.pid} on " in log, log
        assert f"process {p.pid} on " in log and f"ended by {how}" in log
    # The survivors' own last words, through their watchers: JAX's abort message.
    assert log.count("Terminating process because the JAX distributed service") >= 3
    last = log.splitlines()[-1]
    assert "first failure of this run: rank 2 on " in last
    assert f"process {procs[2].pid} on " in last and "ended by SIGKILL" in last


def test_a_rank_killed_in_a_jax_run_is_named_first_in_rank_zeros_log(tmp_path: Path) -> None:
    procs = kill_one_rank_of_four(tmp_path)
    log = tmp_path / "rank0" / "pod_system.log"
    wait_for(lambda: "first failure of this run" in read(log), what="the summary")
    text = read(log)
    for rank in range(4):
        assert f"rank {rank} waits" in text
    check_deaths(text, procs)


def test_a_rank_killed_in_a_jax_run_is_named_first_in_the_daemons_log(
    tmp_path: Path, start_daemon
) -> None:
    daemon: Daemon = start_daemon(tmp_path / "daemon", "pod")
    procs = kill_one_rank_of_four(tmp_path, ROXXEL_AGGREGATOR=daemon.endpoint)
    log = daemon.log_dir / "pod_system.log"
    wait_for(lambda: read(log).count("] process ") >= 4, what="4 death notices")
    assert daemon.terminate() == 0
    check_deaths(read(log), procs)


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_prefix_that_looks_like_an_option_still_gets_its_deaths_reported(tmp_path) -> None:
    code = (
        "import os\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, '-run')\n"
        "lg.log_message('logged')\n"
        "lg.flush()\n"
        "os.abort()\n"
    )
    result = run_script(code)
    assert result.returncode == -signal.SIGABRT
    log = tmp_path / "-run_system.log"
    wait_for(lambda: "first failure of this run" in read(log), what="the summary")
    assert "ended by SIGABRT" in read(log)


def test_a_logger_that_fails_to_start_leaves_stderr_and_no_watcher_behind(tmp_path) -> None:
    code = (
        "import os, sys\n"
        "from roxxel import Logger\n"
        "original = os.fstat(2)\n"
        "try:\n"
        f"    Logger({str(tmp_path)!r}, 'bad', aggregator='bogus://x')\n"
        "except ValueError:\n"
        "    pass\n"
        "assert os.path.samestat(os.fstat(2), original)\n"
        f"with Logger({str(tmp_path)!r}, 'good') as lg:\n"
        "    assert not os.path.samestat(os.fstat(2), original)\n"
        "assert os.path.samestat(os.fstat(2), original)  # the last Logger closed: back\n"
        "print('stderr works', file=sys.stderr)\n"
    )
    result = run_script(code)
    assert result.returncode == 0, result.stderr
    assert "stderr works" in result.stderr


def test_a_child_that_inherited_the_pipe_keeps_a_working_stderr_after_close(tmp_path) -> None:
    code = (
        "import subprocess, sys\n"
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'run') as lg:\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import sys; "
        'sys.stdin.read(); print("late words", file=sys.stderr)\'], stdin=subprocess.PIPE)\n'
        "child.communicate(b'go')  # writes to the inherited pipe after close()\n"
        "sys.exit(child.returncode)\n"
    )
    result = run_script(code)
    assert result.returncode == 0, result.stderr
    assert "late words" in result.stderr  # copied by the watcher, which outlived close()
