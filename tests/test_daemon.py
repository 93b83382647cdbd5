"""The roxxel-aggregator daemon as a real process, with real client processes."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from roxxel import Logger, codec

from .conftest import Daemon, Said, daemon_argv, free_port, python_env, read, run_python, wait_for

CLIENT = """
import logging, os, sys
from roxxel import Logger
with Logger(sys.argv[1], "run") as lg:
    lg.log_message(f"info from rank {lg.rank}")
    lg.log_message(f"warning from rank {lg.rank}", level=logging.WARNING)
    lg.log_metrics_summary(1, {"loss": 0.5 + lg.rank})
    if lg.rank == 2:
        raise RuntimeError("rank 2 crashed")
"""


@pytest.mark.parametrize("program", ["module", "console-script"])
def test_help_reads_like_a_daemon(program: str) -> None:
    script = Path(sys.executable).parent / "roxxel-aggregator"
    if program == "console-script" and not script.exists():
        pytest.fail(f"the console script is not installed next to {sys.executable}")
    argv = [str(script)] if program == "console-script" else [sys.executable, "-m", "aggregator"]
    result = subprocess.run(
        [*argv, "--help"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 0
    for option in ("--bind", "--log-dir", "--prefix", "--no-echo"):
        assert option in result.stdout
    assert "roxxel-aggregator" in result.stdout


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_commit_interval_is_refused_by_the_parser(value: str, capsys) -> None:
    from aggregator.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--log-dir", "d", "--commit-interval", value])
    assert info.value.code == 2
    assert "--commit-interval" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--prefix", "a/b", "is not a run's prefix"),
        ("--prefix", ".x", "is not a run's prefix"),
        ("--prefix", "a\udcff", "is not a run's prefix"),  # an undecodable file-name byte
        ("--drain-senders", "-1", "expected a number of seconds >= 0"),
        ("--stats-interval", "-5", "expected a number of seconds >= 0"),
        ("--stats-interval", "nan", "expected a number of seconds >= 0"),
    ],
)
def test_bad_daemon_options_are_refused_by_the_parser(
    option: str, value: str, said: str, capsys
) -> None:
    from aggregator.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--log-dir", "d", option, value])
    assert info.value.code == 2
    assert option in (err := capsys.readouterr().err) and said in err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--bind", "tcp://127.0.0.1:99999"), "the port 99999 is out of range (0 to 65535)"),
        (("--pidfile", "/nonexistent-dir/x.pid"), "cannot write the pidfile"),
    ],
)
def test_a_daemon_that_cannot_serve_as_asked_exits_2_having_made_nothing(
    tmp_path: Path, extra: tuple[str, str], said: str
) -> None:
    argv = [sys.executable, "-m", "aggregator", "--bind", "tcp://127.0.0.1:0"]
    argv += ["--log-dir", str(tmp_path / "logs"), "--quiet", *extra]
    result = subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()


def test_unusable_log_dir_fails_with_a_clear_message(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = subprocess.run(
        daemon_argv(not_a_dir, "run", "tcp://127.0.0.1:0"),
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot serve" in result.stderr and str(not_a_dir) in result.stderr


def test_client_process_logs_through_daemon_and_writes_no_files(
    tmp_path: Path, daemon: Daemon
) -> None:
    client_dir = tmp_path / "client"
    result = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(client_dir)!r}, 'run') as lg:\n"
        "    lg.log_message('through the daemon')\n"
        "    lg.log_metrics_summary(3, {'loss': 0.25})\n",
        ROXXEL_AGGREGATOR=daemon.endpoint,
    )
    assert result.returncode == 0, result.stderr
    assert not client_dir.exists()
    assert "[INFO] through the daemon" in daemon.file("system.log")
    assert daemon.file("metrics.csv") == "step,loss\n3,0.25000\n"
    assert "[INFO] through the daemon" in daemon.stdout
    assert daemon.terminate() == 0


def test_sigterm_writes_everything_then_exits_zero(tmp_path: Path, daemon: Daemon) -> None:
    result = run_python(
        "import sys\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path)!r}, 'run', aggregator={daemon.endpoint!r})\n"
        "for i in range(5000): lg.log_message(f'line {i}')\n"
        "assert lg.flush(60)\n"
        "lg.close()\n"
    )
    assert result.returncode == 0, result.stderr
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(30) == 0
    lines = daemon.file("system.log").splitlines()
    assert [ln.split("] ", 2)[2] for ln in lines] == [f"line {i}" for i in range(5000)]


def test_ranks_are_tagged_and_info_from_other_ranks_is_not_written(daemon: Daemon) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(daemon.log_dir.parent / f"r{rank}")],
            env=python_env(
                SLURM_PROCID=str(rank), SLURM_NTASKS="3", ROXXEL_AGGREGATOR=daemon.endpoint
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(3)
    ]
    try:
        results = [(p.wait(120), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [code for code, _, _ in results] == [0, 0, 1], results
    assert "rank 2 crashed" in results[2][2]
    log = daemon.file("system.log")
    assert "[INFO] info from rank 0" in log
    assert "[WARNING] warning from rank 0" in log
    assert "[WARNING] [rank 1] warning from rank 1" in log
    assert "[WARNING] [rank 2] warning from rank 2" in log
    assert "info from rank 1" not in log and "info from rank 2" not in log
    assert "[CRITICAL] [rank 2] ❌ CRITICAL: Uncaught exception occurred" in log
    assert "RuntimeError: rank 2 crashed" in log
    assert daemon.file("metrics.csv") == "step,loss\n1,0.50000\n"


def test_bad_frames_are_counted_and_a_good_client_is_still_served(
    tmp_path: Path, daemon: Daemon
) -> None:
    ctx = zmq.Context()
    garbage = [
        b"",
        b"\xc1",
        b"not msgpack at all",
        b"\x95\x02\xa5batch\xc4\x10" + b"x" * 16 + b"\x01\x90",  # version 2
        b"\x91" * 5000 + b"\xc0",
        codec.encode(codec.Batch(b"y" * 16, 1, [["l", 1.0, 20, "no hello first"]])),
    ]
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    for frame in garbage:
        sock.send(frame)
    sock.send_multipart([b"two", b"frames"])
    result = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'run', aggregator={daemon.endpoint!r}) as lg:\n"
        "    lg.log_message('good client')\n"
    )
    sock.close()
    ctx.term()
    assert result.returncode == 0, result.stderr
    log = daemon.file("system.log")
    assert "[INFO] good client" in log
    assert "no hello first" not in log
    assert "malformed frame" in log
    assert daemon.running(), "the daemon died on bad input"
    assert daemon.terminate() == 0


def test_ready_line_names_the_bound_port(tmp_path: Path, start_daemon) -> None:
    d = start_daemon(tmp_path / "logs", prefix="ready")
    try:
        assert d.endpoint.startswith("tcp://127.0.0.1:")
        assert int(d.endpoint.rsplit(":", 1)[1]) > 0
        assert str(tmp_path / "logs") in d.stdout
    finally:
        assert d.terminate() == 0
    assert read(tmp_path / "logs" / "ready_system.log") == ""


def test_roxxel_check_reports_a_live_collector_and_a_missing_one(daemon: Daemon) -> None:
    cmd = [sys.executable, "-m", "roxxel.cli", "check"]
    live = subprocess.run(
        [*cmd, daemon.endpoint], capture_output=True, text=True, env=python_env(), timeout=60
    )
    assert live.returncode == 0, live.stderr
    assert f"collector at {daemon.endpoint} answered" in live.stdout
    nobody = f"tcp://127.0.0.1:{free_port()}"
    dead = subprocess.run(
        [*cmd, nobody, "--timeout", "0.5"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert dead.returncode == 1
    assert f"no answer from a collector at {nobody}" in dead.stderr
    assert "roxxel-check" not in daemon.file("system.log")


def test_a_second_daemon_on_the_same_run_is_refused(daemon: Daemon) -> None:
    result = subprocess.run(
        daemon_argv(daemon.log_dir, daemon.prefix, "tcp://127.0.0.1:0"),
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 2
    assert f"another roxxel collector (pid {daemon.pid})" in result.stderr
    assert daemon.running()


@pytest.mark.parametrize("prefix", ["run", None], ids=["one run", "every run"])
def test_a_daemon_that_cannot_bind_creates_nothing(
    tmp_path: Path, daemon: Daemon, prefix: str | None
) -> None:
    logs = tmp_path / "other"
    logs.mkdir()
    result = subprocess.run(
        daemon_argv(logs, prefix, daemon.endpoint),  # the address is in use
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 2
    assert f"cannot bind {daemon.endpoint}" in result.stderr and "in use" in result.stderr
    assert list(logs.iterdir()) == []  # no log, no CSV, no lock, no checkpoint
    missing = tmp_path / "missing"
    again = subprocess.run(
        daemon_argv(missing, prefix, daemon.endpoint),
        capture_output=True,
        env=python_env(),
        timeout=60,
    )
    assert again.returncode == 2 and not missing.exists()
    assert daemon.running()


def test_pidfile_sighup_reopen_and_stats(tmp_path: Path, start_daemon) -> None:
    pidfile = tmp_path / "daemon.pid"
    d = start_daemon(
        tmp_path / "logs", "svc", extra=("--pidfile", str(pidfile), "--stats-interval", "0.2")
    )
    assert pidfile.read_text().strip() == str(d.pid)
    log = tmp_path / "logs" / "svc_system.log"

    def send(text: str) -> None:
        result = run_python(
            "from roxxel import Logger\n"
            f"with Logger({str(tmp_path / 'c')!r}, 'svc', aggregator={d.endpoint!r}) as lg:\n"
            f"    lg.log_message({text!r})\n"
            f"    lg.log_metrics_summary(1, {{'x': 1.0}})\n"
        )
        assert result.returncode == 0, result.stderr

    send("before rotation")
    rotated = tmp_path / "logs" / "svc_system.log.1"
    log.rename(rotated)
    (tmp_path / "logs" / "svc_metrics.csv").rename(tmp_path / "logs" / "svc_metrics.csv.1")
    d.process.send_signal(signal.SIGHUP)
    wait_for(log.exists, 30, "the reopened system log")
    send("after rotation")
    assert "before rotation" in read(rotated) and "after rotation" not in read(rotated)
    assert "after rotation" in read(log) and "before rotation" not in read(log)
    assert d.file("metrics.csv") == "step,x\n1,1.00000\n"
    wait_for(lambda: "roxxel-aggregator stats:" in d.stdout, 30, "a stats line")
    stats = next(ln for ln in d.stdout.splitlines() if "stats:" in ln)
    assert "records/s" in stats and "senders" in stats and "dropped by clients" in stats
    assert d.terminate() == 0
    assert not pidfile.exists()


def test_clients_ended_by_sigterm_say_goodbye_before_they_go(tmp_path: Path, start_daemon) -> None:
    d = start_daemon(tmp_path / "logs", "bye", extra=("--stats-interval", "0.1"))
    code = (
        "import os, signal\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path / 'c')!r}, 'bye', aggregator={d.endpoint!r})\n"
        "lg.log_message('about to be preempted')\n"
        "assert lg.flush(30)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=python_env(SLURM_PROCID=str(r), SLURM_NTASKS="4")
        )
        for r in range(4)
    ]
    try:
        assert [p.wait(120) for p in procs] == [-signal.SIGTERM] * 4
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    offset = len(d.stdout)
    # Every sender said bye and was heard: the next stats lines count none open.
    wait_for(lambda: " 0 senders" in d.stdout[offset:], 60, "a stats line with 0 senders")
    assert d.file("system.log").count("received SIGTERM") == 4


def test_a_daemon_writes_the_metrics_files_it_is_told_and_resumes_after_a_change(
    tmp_path: Path, start_daemon
) -> None:
    logs = tmp_path / "logs"
    csv_only = start_daemon(logs, "run", extra=("--metrics-files", "csv", "--csv-floats", "full"))
    said, diag = Said(), logging.getLogger("roxxel.client")
    diag.addHandler(said)
    try:
        with Logger(tmp_path / "c", "run", aggregator=csv_only.endpoint, watcher=False) as log:
            log.log_metrics_summary(1, {"loss": 0.0012345678})
            assert log.flush(30)
            assert log.metrics_csv_path == str(logs / "run_metrics.csv")
            assert log.metrics_jsonl_path is None
    finally:
        diag.removeHandler(said)
    assert any(m.endswith("run_*.{log,csv} on " + socket.gethostname()) for m in said.messages)
    assert not (logs / "run_metrics.jsonl").exists()
    assert csv_only.terminate() == 0
    # Restarted with both files: the CSV resumes from its mark, the JSONL starts.
    both = start_daemon(logs, "run")
    with Logger(tmp_path / "c", "run", aggregator=both.endpoint, watcher=False) as log:
        log.log_metrics_summary(2, {"loss": 0.5})
        assert log.flush(30)
        assert log.metrics_jsonl_path == str(logs / "run_metrics.jsonl")
    assert both.file("metrics.csv") == "step,loss\n1,0.0012345678\n2,0.50000\n"
    assert [json.loads(line)["step"] for line in both.file("metrics.jsonl").splitlines()] == [2]
    assert "Traceback" not in both.file("system.log")


def test_a_daemon_refuses_unknown_metrics_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "--bind", "tcp://127.0.0.1:0", "--log-dir",
         str(tmp_path), "--metrics-files", "csv,parquet"],
        capture_output=True, text=True, timeout=60, env=python_env(),
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "metrics files are one or more of csv, jsonl, tensorboard, not 'csv', 'parquet'"
        in result.stderr
    )
    assert not list(tmp_path.iterdir())
