"""Nothing lost, nothing twice: real processes, real signals, real broken connections."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from roxxel import CRASH_HEADLINE
from roxxel.lines import parse_line

from .conftest import REPO, Daemon, free_port, python_env, read, run_python, wait_for

# A client that streams numbered warnings (and, on rank 0, metrics), paced so
# that faults land in the middle of the stream: a pause every 10 records
# (argv[5] seconds, 0.002 by default).
STREAM = """
import logging, sys, time
from roxxel import Logger
n = int(sys.argv[2])
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.002
with Logger(sys.argv[1], sys.argv[4], close_timeout=120) as lg:
    for i in range(n):
        lg.log_message(f"{sys.argv[3]} {i}", level=logging.WARNING)
        lg.log_metrics_summary(i, {"i": float(i)})
        if i % 10 == 9:
            time.sleep(pause)
"""


def messages(text: str) -> list[str]:
    """The message of every record line; fails on a line that is neither record nor continuation."""
    out = []
    for line in text.splitlines():
        head = parse_line(line)
        assert head is not None, f"torn or foreign line in the system log: {line!r}"
        out.append(head.message)
    return out


def assert_exactly_once(log: str, expected: list[str]) -> None:
    counts = Counter(messages(log))
    missing = [e for e in expected if counts[e] == 0]
    doubled = [e for e in expected if counts[e] > 1]
    assert not missing and not doubled, (
        f"{len(missing)} lost (e.g. {missing[:3]}), {len(doubled)} duplicated (e.g. {doubled[:3]})"
    )


def csv_steps(path: Path) -> list[int]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "i"]
    for row in rows[1:]:
        assert len(row) == 2 and float(row[1]) == int(row[0]), f"torn row {row}"
    return [int(r[0]) for r in rows[1:]]


def roxxel_replay(path: Path, endpoint: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roxxel.cli", "replay", str(path), "--aggregator", endpoint]
        + list(extra),
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )


def start_clients(
    endpoint: str, n: int, ranks: int, workdir: Path, prefix: str = "run", tag: str = "c"
) -> list[subprocess.Popen]:
    """``ranks`` client processes of run ``prefix``, each logging lines ``{tag}{rank} i``."""
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                STREAM,
                str(workdir / f"{prefix}-client{rank}"),
                str(n),
                f"{tag}{rank}",
                prefix,
            ],
            env=python_env(
                SLURM_PROCID=str(rank), SLURM_NTASKS=str(ranks), ROXXEL_AGGREGATOR=endpoint
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(ranks)
    ]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_all(procs: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str]]:
    try:
        return [(p.wait(timeout), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("sink_processes", ["off", "on"])
def test_kill_9_of_the_daemon_and_restart_lose_and_duplicate_nothing(
    tmp_path: Path, start_daemon, sink_processes: str
) -> None:
    n, ranks = 3000, 3
    bind = f"tcp://127.0.0.1:{free_port()}"
    log_dir = tmp_path / "logs"
    extra = ("--sink-processes", sink_processes)
    first = start_daemon(log_dir, "run", bind, extra)
    clients = start_clients(first.endpoint, n, ranks, tmp_path)
    try:
        wait_for(lambda: len(first.file("system.log").splitlines()) >= 300, 60, "300 lines")
        sink_pids = [child.pid for child in first.process.children()]
        assert len(sink_pids) == (2 if sink_processes == "on" else 0)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        at_kill = len(first.file("system.log").splitlines())
        second = start_daemon(log_dir, "run", bind, extra)  # once the sink processes let go
        assert not any(map(alive, sink_pids))  # they died with the collector
        try:
            results = wait_all(clients)
            assert [code for code, _ in results] == [0] * ranks, results
            assert second.terminate() == 0
        finally:
            second.kill()
    finally:
        first.kill()
        wait_all(clients, 1)
    assert at_kill < n * ranks, "the kill came after everything was written: no fault tested"
    tags = [f"[rank {r}] " if r else "" for r in range(ranks)]
    expected = [f"{tags[r]}c{r} {i}" for r in range(ranks) for i in range(n)]
    assert_exactly_once(second.file("system.log"), expected)
    assert sorted(csv_steps(log_dir / "run_metrics.csv")) == list(range(n))
    print(f"kill -9: {len(expected)} lines + {n} rows sent; {at_kill} lines on disk at the kill")
    assert not list(tmp_path.glob("*client*/*undelivered*"))


def test_broken_connections_and_dropped_acks_lose_and_duplicate_nothing(
    tmp_path: Path, daemon: Daemon
) -> None:
    n = 5000
    port = daemon.endpoint.rsplit(":", 1)[1]
    proxy_out = tmp_path / "proxy.out"
    with open(proxy_out, "w") as out:
        proxy = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "fault_proxy.py"), port, "4", "7"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = wait_for(
            lambda: re.search(r"proxy ready on (\d+)", read(proxy_out)), 30, "the proxy"
        )
        clients = start_clients(f"tcp://127.0.0.1:{ready.group(1)}", n, 2, tmp_path)
        results = wait_all(clients)
        assert [code for code, _ in results] == [0, 0], results
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(30)
        finally:
            if proxy.poll() is None:
                proxy.kill()
                proxy.wait()
    faults = read(proxy_out).splitlines()
    dropped_bytes = sum(int(f.split()[1]) for f in faults if f.startswith("dropped "))
    print(
        f"proxy: {faults.count('closed')} connections closed, {dropped_bytes} reply bytes dropped"
    )
    assert sum(line == "closed" for line in faults) >= 3, faults[:20]
    assert any(line.startswith("dropped ") for line in faults), "no ack was dropped"
    expected = [f"c0 {i}" for i in range(n)] + [f"[rank 1] c1 {i}" for i in range(n)]
    assert_exactly_once(daemon.file("system.log"), expected)
    assert sorted(csv_steps(daemon.log_dir / "run_metrics.csv")) == list(range(n))


def test_sigterm_mid_burst_drains_then_ends_the_process_by_sigterm(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'burst')\n"
        "for i in range(10_000_000):\n"
        "    lg.log_message(f'burst {i}')\n"
        "    if i == 20_000:\n"
        f"        open({str(tmp_path / 'marker')!r}, 'w').close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (tmp_path / "marker").exists() or proc.poll() is not None, 60, "logging")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == -signal.SIGTERM, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = messages(read(tmp_path / "burst_system.log"))
    assert got[-1] == "received SIGTERM; draining the log before the process ends"
    burst = got[:-1]
    assert len(burst) > 20_000
    print(f"SIGTERM: {len(burst)} records logged before the signal, all on disk")
    assert burst == [f"burst {i}" for i in range(len(burst))]


# A training script interrupted by Ctrl-C while it runs ``train``: inside
# ``with`` or with a Logger it never closes (the excepthook, then atexit).
INTERRUPTED = """
import sys, time
from roxxel import Logger

def train(lg):
    lg.log_message("training")
    assert lg.flush(30)
    open(sys.argv[2], "w").close()
    while True:
        time.sleep(0.05)  # Ctrl-C lands here

if sys.argv[3] == "with":
    with Logger(sys.argv[1], "run") as lg:
        train(lg)
else:
    train(Logger(sys.argv[1], "run"))
"""


@pytest.mark.parametrize("how", ["with", "no with"])
def test_ctrl_c_is_one_warning_line_saying_where_not_a_crash(tmp_path: Path, how: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(INTERRUPTED)
    line = INTERRUPTED.splitlines().index("        time.sleep(0.05)  # Ctrl-C lands here") + 1
    marker, out, err = tmp_path / "marker", tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "logs"), str(marker), how],
            env=python_env(),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 60, "the training loop")
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(120) == -signal.SIGINT, read(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = f"interrupted (KeyboardInterrupt) at {script}:{line} in train"
    log = read(tmp_path / "logs" / "run_system.log")
    assert messages(log) == ["training", said]
    assert f"[WARNING] {said}\n" in log
    assert "CRITICAL" not in log and "Traceback" not in log
    echoed = read(out)
    assert echoed.count(said) == 1 and "Traceback" not in echoed
    # Python's own traceback, once, is the only one.
    errors = read(err)
    assert errors.count("Traceback") == 1 and errors.rstrip().endswith("KeyboardInterrupt"), errors


def test_sigterm_handler_chains_to_the_previous_handler_and_the_process_goes_on(
    tmp_path: Path,
) -> None:
    # A preemption handler that sets a flag (and saves a checkpoint) and returns:
    # the log is drained before it runs, and stays open for the training that goes on.
    result = run_python(
        "import os, signal\n"
        "from roxxel import Logger\n"
        "seen = []\n"
        "def mine(signum, frame):\n"
        "    seen.append(open(lg.sys_log_path).read().count('before'))\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        f"lg = Logger({str(tmp_path)!r}, 'chain')\n"
        "lg.log_message('before')\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "lg.log_message('after the handler')\n"
        "lg.close()\n"
        "print('handlers ran:', seen, flush=True)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "handlers ran: [1]" in result.stdout  # on disk before the handler ran
    assert messages(read(tmp_path / "chain_system.log")) == [
        "before",
        "received SIGTERM; draining the log (the program's own handler follows)",
        "after the handler",
    ]


def test_a_previous_handler_that_exits_ends_the_process_with_everything_written(
    tmp_path: Path,
) -> None:
    result = run_python(
        "import os, signal, sys\n"
        "from roxxel import Logger\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        f"with Logger({str(tmp_path)!r}, 'exits') as lg:\n"
        "    lg.log_metrics_summary(1, {'loss': 0.5})\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    lg.log_message('never reached')\n"
    )
    assert result.returncode == 7, result.stderr
    lines = messages(read(tmp_path / "exits_system.log"))
    assert lines[0] == "received SIGTERM; draining the log (the program's own handler follows)"
    assert lines[1].startswith("exiting with status 7 (sys.exit)") and len(lines) == 2
    assert read(tmp_path / "exits_metrics.csv").splitlines() == ["step,loss", "1,0.50000"]


def test_an_ignored_sigterm_is_logged_and_drained_and_the_process_goes_on(
    tmp_path: Path,
) -> None:
    result = run_python(
        "import os, signal\n"
        "from roxxel import Logger\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"lg = Logger({str(tmp_path)!r}, 'ign')\n"
        "lg.log_message('before')\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "lg.log_message('after')\n"
        "lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    assert messages(read(tmp_path / "ign_system.log")) == [
        "before",
        "received SIGTERM; draining the log (SIGTERM is ignored here: the process goes on)",
        "after",
    ]


def test_an_inherited_ignored_sigterm_still_stops_the_embedded_collector(tmp_path: Path) -> None:
    # Some launchers' wrapper scripts run the training with SIGTERM ignored
    # (`trap '' TERM`); exec keeps that, and the collector child inherits it.
    code = (
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'inherit', close_timeout=2) as lg:\n"
        "    lg.log_message('kept')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(),
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "exited with code" not in result.stderr  # stopped, not killed after the timeout
    assert messages(read(tmp_path / "inherit_system.log")) == ["kept"]


def undelivered_by_a_client_of_nobody(tmp_path: Path, body: str) -> tuple[Path, int]:
    """Run ``body`` (logging through ``lg``) in a client of run 'run' whose
    collector, at a free port, is not there: the undelivered file its close()
    wrote, and the port."""
    port = free_port()
    client_dir = tmp_path / "client"
    result = run_python(
        "from roxxel import Logger\n"
        f"lg = Logger({str(client_dir)!r}, 'run', aggregator='tcp://127.0.0.1:{port}',"
        " close_timeout=0.2, max_buffer_bytes=64 * 1024 * 1024)\n" + body + "lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    path = client_dir / "run_undelivered_rank0.jsonl"
    assert str(path) in result.stderr and "roxxel replay" in result.stderr
    assert path.exists()
    return path, port


def test_a_copy_with_a_batch_taken_out_then_the_whole_file_replay_exactly_once(
    tmp_path: Path, start_daemon
) -> None:
    path, port = undelivered_by_a_client_of_nobody(
        tmp_path,
        "for i in range(40):\n"
        "    lg.log_message(f'line {i}')\n"
        "    lg.flush(0.02)\n",  # a batch or a few each
    )
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    batches = sorted({json.loads(line)["batch"] for line in lines[1:]})
    assert len(batches) >= 3, batches
    edited = path.parent / "edited_undelivered_rank0.jsonl"
    edited.write_text(
        "".join(ln for ln in lines if json.loads(ln).get("batch") != batches[1]), "utf-8"
    )
    daemon = start_daemon(tmp_path / "logs", "run", f"tcp://127.0.0.1:{port}")
    try:
        cut = roxxel_replay(edited, daemon.endpoint, "--timeout", "3")
        assert cut.returncode == 1 and "did not acknowledge" in cut.stderr, cut.stderr
        assert edited.exists()  # not renamed: not all delivered
        whole = roxxel_replay(path, daemon.endpoint)
        assert whole.returncode == 0, whole.stderr
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert messages(daemon.file("system.log")) == [f"line {i}" for i in range(40)]


def test_unreachable_collector_at_close_writes_a_file_replayed_exactly_once(
    tmp_path: Path, start_daemon
) -> None:
    path, port = undelivered_by_a_client_of_nobody(
        tmp_path,
        "for i in range(500):\n"
        "    lg.log_message(f'kept {i}')\n"
        "    lg.log_metrics_summary(i, {'i': float(i), 'nan': float('nan')})\n",
    )
    daemon = start_daemon(tmp_path / "logs", "run", f"tcp://127.0.0.1:{port}")
    try:
        first = roxxel_replay(path, daemon.endpoint)
        assert first.returncode == 0, first.stderr
        assert "delivered 1000 record(s)" in first.stdout
        done = Path(f"{path}.replayed")
        assert done.exists() and not path.exists()
        again = roxxel_replay(done, daemon.endpoint)
        assert again.returncode == 0, again.stderr
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert messages(daemon.file("system.log")) == [f"kept {i}" for i in range(500)]
    rows = daemon.file("metrics.csv").splitlines()
    assert rows == ["step,i,nan"] + [f"{i},{i:.5f},nan" for i in range(500)]


def test_records_logged_before_and_after_fork_all_arrive(tmp_path: Path) -> None:
    result = run_python(
        "import os\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'fork')\n"
        "lg.log_message('parent before fork')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    for i in range(100): lg.log_message(f'child {i}')\n"
        "    lg.close()\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert status == 0, status\n"
        "for i in range(100): lg.log_message(f'after {i}')\n"
        "lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    got = messages(read(tmp_path / "fork_system.log"))
    assert got.count("parent before fork") == 1
    assert [m for m in got if m.startswith("child ")] == [f"child {i}" for i in range(100)]
    assert [m for m in got if m.startswith("after ")] == [f"after {i}" for i in range(100)]


@pytest.mark.parametrize("rank", [0, 1])
def test_uncaught_exception_outside_with_is_logged_from_any_rank(
    tmp_path: Path, daemon: Daemon, rank: int
) -> None:
    result = run_python(
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'run')\n"
        "def train():\n"
        "    raise ValueError('diverged at step 9')\n"
        "train()\n",
        ROXXEL_AGGREGATOR=daemon.endpoint,
        SLURM_PROCID=str(rank),
        SLURM_NTASKS="2",
    )
    assert result.returncode == 1
    assert "ValueError: diverged at step 9" in result.stderr  # the default hook still ran
    log = daemon.file("system.log")
    tag = f"[rank {rank}] " if rank else ""
    assert f"[CRITICAL] {tag}{CRASH_HEADLINE}" in log
    assert "in train" in log and log.rstrip().endswith("ValueError: diverged at step 9")
    assert log.count(CRASH_HEADLINE) == 1


def test_uncaught_exception_in_a_thread_is_logged(tmp_path: Path) -> None:
    result = run_python(
        "import threading\n"
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'thr') as lg:\n"
        "    def work():\n"
        "        raise KeyError('missing shard')\n"
        "    t = threading.Thread(target=work, name='loader')\n"
        "    t.start(); t.join()\n"
    )
    assert result.returncode == 0, result.stderr
    log = read(tmp_path / "thr_system.log")
    assert "[CRITICAL] ❌ CRITICAL: Uncaught exception in thread 'loader'!" in log
    assert "KeyError: 'missing shard'" in log


def test_a_full_buffer_drops_metrics_first_and_reports_the_count(
    tmp_path: Path, start_daemon
) -> None:
    port = free_port()
    code = (
        "import sys, time\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path / 'c')!r}, 'run', aggregator='tcp://127.0.0.1:{port}',"
        " max_buffer_bytes=200_000, close_timeout=120)\n"
        "for i in range(20_000):\n"
        "    lg.log_metrics_summary(i, {'i': float(i)})\n"
        "for i in range(1000):\n"
        "    lg.log_message(f'line {i}')\n"
        "deadline = time.monotonic() + 60\n"
        "while lg._sender.dropped_total == 0 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('dropped', lg._sender.dropped_total, flush=True)\n"
        "sys.stdin.readline()\n"
        "lg.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=python_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = None
    try:
        dropped = int(proc.stdout.readline().split()[1])
        assert dropped > 0
        daemon = start_daemon(tmp_path / "logs", "run", f"tcp://127.0.0.1:{port}")
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(180) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if daemon is not None:
            daemon.kill()
    got = messages(daemon.file("system.log"))
    assert [m for m in got if m.startswith("line ")] == [f"line {i}" for i in range(1000)]
    reports = [m for m in got if m.startswith("roxxel dropped")]
    assert len(reports) == 1, got[-5:]
    dropped_rows = int(re.search(r"dropped (\d+) metrics row", reports[0]).group(1))
    assert re.search(r"and 0 log line", reports[0])
    steps = csv_steps(daemon.log_dir / "run_metrics.csv")
    assert len(steps) == len(set(steps))
    assert len(steps) + dropped_rows == 20_000
    assert steps[-1] == 19_999  # the newest rows are kept, the oldest dropped
    print(f"full buffer: {dropped_rows} metrics rows dropped and reported, {len(steps)} written")
    assert not os.path.exists(tmp_path / "c" / "run_undelivered_rank0.jsonl")


def test_drops_while_the_collector_never_returned_are_reported_through_replay(
    tmp_path: Path, start_daemon
) -> None:
    port = free_port()
    client_dir = tmp_path / "client"
    result = run_python(
        "import time\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(client_dir)!r}, 'run', aggregator='tcp://127.0.0.1:{port}',"
        " close_timeout=0, max_buffer_bytes=100_000)\n"
        "for i in range(20_000): lg.log_message(f'line {i}')\n"
        "deadline = time.monotonic() + 60\n"
        "while lg._sender.dropped_total == 0 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "lg.close()\n"
        "print(lg._sender.dropped_total)\n"
    )
    assert result.returncode == 0, result.stderr
    dropped = int(result.stdout.split()[-1])
    assert dropped > 0
    assert f"({dropped} more were dropped earlier: the buffer was full)" in result.stderr
    path = client_dir / "run_undelivered_rank0.jsonl"
    daemon = start_daemon(tmp_path / "logs", "run")
    try:
        replay = roxxel_replay(path, daemon.endpoint)
        assert replay.returncode == 0, replay.stderr
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    got = messages(daemon.file("system.log"))
    lines = [m for m in got if m.startswith("line ")]
    (report,) = [m for m in got if m.startswith("roxxel dropped")]
    assert report.startswith(f"roxxel dropped 0 metrics row(s) and {dropped} log line(s)")
    assert len(lines) + dropped == 20_000 and len(set(lines)) == len(lines)
    assert lines[-1] == "line 19999"


def test_replaying_a_file_of_many_batches_twice_writes_each_record_once(
    tmp_path: Path, start_daemon
) -> None:
    from roxxel import codec
    from roxxel.undelivered import write_unsent
    from roxxel.unsent import Unsent, UnsentBatch

    hello = codec.Hello(bytes(range(16)), "host", 0, 1, 1, "run", acked=0)
    batches = [
        UnsentBatch(seq, codec.encode_records([("l", 1.0, 20, f"batch {seq}")]), 0, 1)
        for seq in range(1, 81)
    ] + [
        UnsentBatch(None, codec.encode_records([("l", 1.0, 20, f"pending {i}")]), 0, 1)
        for i in range(40)
    ]
    path = tmp_path / "run_undelivered_rank0.jsonl"
    write_unsent(str(path), Unsent(hello, batches))
    daemon = start_daemon(tmp_path / "logs", "run")
    for _ in range(2):
        result = roxxel_replay(path, daemon.endpoint)
        assert result.returncode == 0, result.stderr
        path = Path(f"{path}.replayed")
        path.rename(tmp_path / "again.jsonl")
        path = tmp_path / "again.jsonl"
    assert daemon.terminate() == 0
    assert messages(daemon.file("system.log")) == [f"batch {s}" for s in range(1, 81)] + [
        f"pending {i}" for i in range(40)
    ]


def test_sigterm_during_close_waits_for_the_close_then_ends_the_process(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "closing"
    code = (
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path / 'c')!r}, 'run', aggregator='tcp://127.0.0.1:{port}',"
        " close_timeout=3)\n"
        "for i in range(1000): lg.log_message(f'line {i}')\n"
        # The marker once close() has begun (a SIGTERM just before it is another case).
        "import threading, time, roxxel.exits as exits\n"
        "def mark():\n"
        "    while not exits._closing: time.sleep(0.001)\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "threading.Thread(target=mark, daemon=True).start()\n"
        "lg.close()\n"
        "print('close returned', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 60, "close() to start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM, err
    assert "close returned" not in out
    from roxxel.undelivered import read_unsent

    (section,) = read_unsent(str(tmp_path / "c" / "run_undelivered_rank0.jsonl"))
    assert section.records == 1000


def test_multiprocessing_fork_children_deliver_their_records(tmp_path: Path) -> None:
    result = run_python(
        "import multiprocessing as mp\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'mp')\n"
        "def work(n):\n"
        "    for i in range(50): lg.log_message(f'child {n} line {i}')\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('fork')\n"
        "    procs = [ctx.Process(target=work, args=(n,)) for n in range(3)]\n"
        "    for p in procs: p.start()\n"
        "    for p in procs: p.join()\n"
        "    assert [p.exitcode for p in procs] == [0, 0, 0]\n"
        "    lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    got = messages(read(tmp_path / "mp_system.log"))
    for n in range(3):
        assert [m for m in got if m.startswith(f"child {n} ")] == [
            f"child {n} line {i}" for i in range(50)
        ]


def test_a_torn_last_line_of_an_undelivered_file_is_ignored(tmp_path: Path) -> None:
    from roxxel import codec
    from roxxel.undelivered import read_unsent, write_unsent
    from roxxel.unsent import Unsent, UnsentBatch

    hello = codec.Hello(bytes(16), "host", 0, 1, 1, "run")
    body = codec.encode_records([("l", 1.0, 20, "kept")])
    path = tmp_path / "u.jsonl"
    write_unsent(str(path), Unsent(hello, [UnsentBatch(1, body, 0, 1)]))
    with open(path, "a") as f:
        f.write('{"seq": 2, "metrics": 0, "lin')
    (section,) = read_unsent(str(path))
    assert section.batches == [UnsentBatch(1, body, 0, 1)]
    with open(path, "a") as f:
        f.write('\n{"not": "a batch"}\n')
    with pytest.raises(ValueError, match=r"u\.jsonl:3"):
        read_unsent(str(path))


def test_a_forked_child_starts_its_sender_with_its_first_record(tmp_path: Path) -> None:
    # subprocess's preexec_fn runs the fork hooks between fork and exec: a thread
    # started there would have its sockets closed under it by close_fds.
    result = run_python(
        "import os, threading\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'fork')\n"
        "lg.log_message('parent')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    before = threading.active_count()\n"
        "    lg.log_message('child')\n"
        "    after = threading.active_count()\n"
        "    lg.close()\n"
        "    os._exit(0 if (before, after) == (1, 2) else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert status == 0, status\n"
        "lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    assert messages(read(tmp_path / "fork_system.log")) == ["parent", "child"]


def test_a_child_forked_while_the_hot_path_lock_was_held_closes(tmp_path: Path) -> None:
    # The parent's sender thread may hold the hot path's lock at the fork; that
    # thread does not exist in the child, so a lock it held would never be let go.
    for collector in ("thread", "process"):
        result = run_python(
            "import os, signal, threading\n"
            "from roxxel import Logger\n"
            f"lg = Logger({str(tmp_path)!r}, 'held_{collector}', collector={collector!r})\n"
            "lg.log_message('parent')\n"
            "taken, fork_done = threading.Event(), threading.Event()\n"
            "def hold():\n"
            "    with lg._hot_path._lock:\n"
            "        taken.set()\n"
            "        fork_done.wait()\n"
            "holder = threading.Thread(target=hold)\n"
            "holder.start()\n"
            "taken.wait()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    signal.alarm(20)  # a child that hangs ends, failing the test\n"
            "    lg.log_message('child')\n"
            "    lg.close()\n"
            "    os._exit(0)\n"
            "fork_done.set()\n"
            "holder.join()\n"
            "_, status = os.waitpid(pid, 0)\n"
            "assert status == 0, status\n"
            "lg.close()\n",
            timeout=60,
        )
        assert result.returncode == 0, (collector, result.stderr)
        expected = ["parent"] if collector == "thread" else ["parent", "child"]
        assert messages(read(tmp_path / f"held_{collector}_system.log")) == expected


def test_subprocesses_with_preexec_fn_start_beside_a_live_logger(tmp_path: Path) -> None:
    result = run_python(
        "import os, subprocess, sys\n"
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'spawn') as lg:\n"
        "    for i in range(40):\n"
        "        lg.log_message(f'spawn {i}')\n"
        "        done = subprocess.run([sys.executable, '-c', 'print(7)'], preexec_fn=os.setpgrp,\n"
        "                              capture_output=True, text=True)\n"
        "        assert (done.returncode, done.stdout) == (0, '7\\n'), (i, done)\n"
    )
    assert result.returncode == 0, result.stderr
    assert messages(read(tmp_path / "spawn_system.log")) == [f"spawn {i}" for i in range(40)]
