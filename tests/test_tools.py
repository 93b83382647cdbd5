"""``roxxel status`` and ``roxxel tail``: real daemons, real clients, real processes."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zmq

from roxxel import Logger, codec
from roxxel.query import CollectorQuery
from roxxel.tail import RecordFilter, follow_collector

from .conftest import Daemon, python_env, read, run_python, wait_for


def roxxel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roxxel.cli", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


LOG = (
    "[2026-01-01 00:00:00] [INFO] starting\n"
    "[2026-01-01 00:00:01] [WARNING] [rank 2] slow host\n"
    "[2026-01-01 00:00:02] [ERROR] [rank 3] step failed\n"
    "Traceback (most recent call last):\n"
    "    [not a record] ValueError: bad\n"
    "[2026-01-01 00:00:03] [INFO] [rank 3] recovered\n"
    "[2026-01-01 00:00:04] [CRITICAL] rank 0 gives up\n"
)


def test_filters_keep_whole_records_by_level_and_rank() -> None:
    assert RecordFilter(40).lines(LOG) == [
        "[2026-01-01 00:00:02] [ERROR] [rank 3] step failed",
        "Traceback (most recent call last):",
        "    [not a record] ValueError: bad",
        "[2026-01-01 00:00:04] [CRITICAL] rank 0 gives up",
    ]
    assert [ln[22:] for ln in RecordFilter(rank=0).lines(LOG)] == [
        "[INFO] starting",
        "[CRITICAL] rank 0 gives up",
    ]
    coloured = RecordFilter(30, rank=2, colour=True).lines(LOG)
    assert coloured == ["\033[33m[2026-01-01 00:00:01] [WARNING] [rank 2] slow host\033[0m"]


def test_a_message_s_own_line_separators_cannot_pass_for_a_record() -> None:
    from roxxel.lines import format_line

    forged = "fine\u2028[2026-01-01 00:00:09] [CRITICAL] [rank 9] forged\u0085more"
    text = format_line(1.0, 20, forged) + "[2026-01-01 00:00:10] [ERROR] real\n"
    assert [ln.rsplit("] ", 1)[1] for ln in RecordFilter(40).lines(text)] == ["real"]
    assert RecordFilter(rank=9).lines(text) == []


def test_filters_rank_every_level_the_collector_writes() -> None:
    text = (
        "  File 'a head out of view', line 1\n"  # its record's head is not in this piece
        "[2026-01-01 00:00:00] [Level -5] negative\n"
        "[2026-01-01 00:00:01] [Level 25] between info and warning\n"
        "[2026-01-01 00:00:02] [Level 35] between warning and error\n"
        "    its continuation\n"
        "[2026-01-01 00:00:03] [notice] [rank 2] a name only the writer knew\n"
        "[-1168-10-24 00:00:04] [ERROR] dated by an old collector\n"
        "[2026-01-01 00:00:05] [WARN] the stdlib's alias\n"
    )
    shown = [ln.split("] ", 2)[-1] for ln in RecordFilter(30).lines(text)]
    assert shown == [
        "between warning and error",
        "    its continuation",
        "[rank 2] a name only the writer knew",  # not ranked: shown, not hidden
        "dated by an old collector",
        "the stdlib's alias",
    ]
    assert [ln.split("] ", 2)[-1] for ln in RecordFilter(rank=2).lines(text)] == [
        "[rank 2] a name only the writer knew"
    ]
    assert len(RecordFilter().lines(text)) == 8  # nothing filtered: every line


def test_tail_prints_control_characters_escaped_whatever_a_collector_sent() -> None:
    hostile = "[2026-01-01 00:00:00] [ERROR] a\x1b]0;PWN\x07b\rc\x9b2J\n\x1b[2Jnext\tline\n"
    assert RecordFilter(40, colour=True).lines(hostile) == [
        "\033[31m[2026-01-01 00:00:00] [ERROR] a\\x1b]0;PWN\\x07b\\x0dc\\x9b2J\033[0m",
        "\033[31m\\x1b[2Jnext\tline\033[0m",
    ]


def test_tail_of_a_directory_filters_and_exits_without_follow(tmp_path: Path) -> None:
    (tmp_path / "run_system.log").write_text(LOG)
    result = roxxel("tail", str(tmp_path), "--no-follow", "--level", "warning", "--rank", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[2026-01-01 00:00:02] [ERROR] [rank 3] step failed",
        "Traceback (most recent call last):",
        "    [not a record] ValueError: bad",
    ]
    assert "\033[" not in result.stdout  # not a terminal: no colour
    (tmp_path / "other_system.log").write_text(LOG)
    two = roxxel("tail", str(tmp_path), "--no-follow")
    assert two.returncode == 1 and "name the run with --prefix" in two.stderr
    bad = roxxel("tail", str(tmp_path), "--prefix", "run", "--level", "LOUD", "--no-follow")
    assert bad.returncode == 1 and "unknown level 'LOUD'" in bad.stderr


@pytest.mark.parametrize("level", ["35", "Level 35", "level 35"])
def test_tail_takes_a_level_as_a_number_too(tmp_path: Path, level: str) -> None:
    (tmp_path / "run_system.log").write_text(LOG + "[2026-01-01 00:00:05] [Level 35] custom\n")
    result = roxxel("tail", str(tmp_path), "--no-follow", "--level", level)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[2026-01-01 00:00:02] [ERROR] [rank 3] step failed",
        "Traceback (most recent call last):",
        "    [not a record] ValueError: bad",
        "[2026-01-01 00:00:04] [CRITICAL] rank 0 gives up",
        "[2026-01-01 00:00:05] [Level 35] custom",
    ]


@pytest.mark.parametrize("command", ["check", "status", "replay"])
@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon"])
def test_a_timeout_that_is_no_number_of_seconds_is_refused(command: str, timeout: str) -> None:
    args = (
        ["x.jsonl", "--aggregator", "tcp://127.0.0.1:1"] if command == "replay" else ["tcp://h:1"]
    )
    result = roxxel(command, *args, "--timeout", timeout)
    assert result.returncode == 2
    assert f"--timeout: expected a number of seconds > 0, got '{timeout}'" in result.stderr


def test_replay_of_an_empty_file_does_not_claim_a_delivery(tmp_path: Path) -> None:
    path = tmp_path / "run_undelivered_rank0.jsonl"
    path.write_bytes(b"")
    result = roxxel("replay", str(path), "--aggregator", "tcp://127.0.0.1:1", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path} holds no records: nothing to deliver;")


def test_replay_of_a_file_that_is_not_text_names_it(tmp_path: Path) -> None:
    path = tmp_path / "run_undelivered_rank0.jsonl"
    path.write_bytes(b"\xff\xfe not UTF-8")
    result = roxxel("replay", str(path), "--aggregator", "tcp://127.0.0.1:1", "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith(f"roxxel replay: {path}: 'utf-8' codec can't decode")
    assert path.exists()  # not renamed: nothing was delivered


@pytest.mark.parametrize("source", ["dir", "endpoint"])
def test_tail_follows_a_live_run(tmp_path: Path, start_daemon, source: str) -> None:
    daemon: Daemon = start_daemon(tmp_path / "logs")
    first = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'run', aggregator={daemon.endpoint!r}) as lg:\n"
        "    lg.log_message('before tail started', level=30)\n"
    )
    assert first.returncode == 0, first.stderr
    out = tmp_path / "tail.out"
    where = str(daemon.log_dir) if source == "dir" else daemon.endpoint
    with open(out, "w") as stdout:
        tail = subprocess.Popen(
            [sys.executable, "-m", "roxxel.cli", "tail", where, "--level", "WARNING"],
            env=python_env(),
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        # Its first lines printed: what comes next, it has to follow.
        wait_for(lambda: "before tail started" in read(out), what="tail's first lines")
        later = run_python(
            "import logging\n"
            "from roxxel import Logger\n"
            f"with Logger({str(tmp_path)!r}, 'run', aggregator={daemon.endpoint!r}) as lg:\n"
            "    lg.log_message('an info line, filtered out')\n"
            "    lg.log_message('a warning while tail runs', level=logging.WARNING)\n"
            "    lg.log_message('an error while tail runs', level=logging.ERROR)\n",
            SLURM_PROCID="1",
            SLURM_NTASKS="2",
        )
        assert later.returncode == 0, later.stderr
        text = wait_for(
            lambda: "an error while tail runs" in (t := read(out)) and t,
            what="the live lines in tail's output",
        )
        assert tail.poll() is None, text
    finally:
        tail.terminate()
        tail.wait(30)
    assert "[WARNING] [rank 1] a warning while tail runs" in text
    assert text.count("before tail started") == 1
    assert "filtered out" not in text  # INFO
    assert daemon.terminate() == 0


def test_status_reports_senders_records_and_problems(tmp_path: Path, daemon: Daemon) -> None:
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from roxxel import Logger\n"
            f"lg = Logger({str(tmp_path)!r}, 'run', aggregator={daemon.endpoint!r}, "
            "watcher=False)\n"
            "for i in range(500): lg.log_metrics_summary(i, {'loss': 1.0}, all_ranks=True)\n"
            "assert lg.flush(30)\n"
            "print('logged', flush=True)\n"
            "sys.stdin.readline()\n"
            "lg.close()\n",
        ],
        env=python_env(SLURM_PROCID="3", SLURM_NTASKS="4"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline() == "logged\n"
        asked = roxxel("check", daemon.endpoint)  # a tool asks; it is no sender
        assert asked.returncode == 0
        with zmq.Context() as context, context.socket(zmq.DEALER) as garbage:
            garbage.linger = 0
            garbage.connect(daemon.endpoint)
            garbage.send(b"not a frame")
            wait_for(lambda: "malformed frame" in daemon.file("system.log"), what="bad frame")
        answer = roxxel("status", daemon.endpoint, "--json")
        assert answer.returncode == 0, answer.stderr
        status = json.loads(answer.stdout)
        text = roxxel("status", daemon.endpoint)
    finally:
        client.communicate("\n", timeout=60)
    assert status["open_senders"] == 1 and status["process_count"] == 4
    assert status["stats"]["records"] >= 500 and status["stats"]["bad_frames"] == 1, status
    [sender] = [s for s in status["senders"] if s["rank"] == 3]
    assert sender["records"] == 500 and sender["bytes"] > 0
    assert status["log_dir"] == str(daemon.log_dir) and status["prefix"] == daemon.prefix
    assert text.returncode == 0
    assert "senders: 1 open" in text.stdout and "ranks seen 1 of 4" in text.stdout
    assert "1 bad frames" in text.stdout
    assert client.returncode == 0


def test_status_of_nothing_says_so() -> None:
    result = roxxel("status", "tcp://127.0.0.1:1", "--timeout", "0.5")
    assert result.returncode == 1 and "no answer from a collector" in result.stderr


def test_a_public_collector_without_curve_does_not_show_its_log(
    tmp_path: Path, start_daemon
) -> None:
    daemon = start_daemon(tmp_path / "logs", bind="tcp://0.0.0.0:0")
    endpoint = "tcp://127.0.0.1:" + daemon.endpoint.rsplit(":", 1)[1]
    result = roxxel("tail", endpoint, "--no-follow")
    assert result.returncode == 1 and "only to CURVE clients" in result.stderr
    assert roxxel("status", endpoint).returncode == 0  # figures, no log text
    assert daemon.terminate() == 0


def test_queries_round_trip_through_the_codec() -> None:
    query = codec.Query(b"q" * 16, 7, {"what": "tail", "offset": None})
    assert codec.decode(codec.encode(query)) == query
    with pytest.raises(codec.CodecError, match="body is a map"):
        codec.decode(msgpack.packb([codec.PROTO_VERSION, "query", b"q" * 16, 7, [1]]))


PROGRESS_RUN = (
    "import time\n"
    "from roxxel import Logger\n"
    "with Logger({log_dir!r}, 'run', progress=True) as lg:\n"
    "    lg.log_message('an echoed line')\n"
    "    end, step = time.monotonic() + 1.2, 0\n"
    "    while time.monotonic() < end:\n"  # a training loop, about 1.2 s of it
    "        lg.log_metrics_summary(step, {{'loss': 1 / (step + 1), 'lr': 0.1}})\n"
    "        step += 1\n"
    "    lg.log_message('done')\n"
)


def on_a_terminal(argv: list[str], env: dict[str, str]) -> bytes:
    """What ``argv`` writes with a pseudo-terminal as its stdout (it must exit 0)."""
    primary, secondary = pty.openpty()
    child = subprocess.Popen(argv, env=env, stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    output = b""
    try:
        while True:  # until the child (and its children) closed the terminal
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(60) == 0
    finally:
        os.close(primary)
        if child.poll() is None:
            child.kill()
            child.wait()
    return output


@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_tail_colours_levels_on_a_terminal_only_when_allowed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "run_system.log").write_text(LOG)
    argv = [sys.executable, "-m", "roxxel.cli", "tail", str(tmp_path), "--no-follow"]
    environment = python_env(**{"TERM": "xterm", **env})
    if "NO_COLOR" not in env:
        environment.pop("NO_COLOR", None)  # whatever the machine running the tests says
    text = on_a_terminal(argv, environment).decode()
    assert "slow host" in text
    assert ("\x1b[33m[2026-01-01 00:00:01] [WARNING]" in text) == (not env), text


def test_progress_line_on_a_terminal_and_none_on_a_pipe(tmp_path: Path) -> None:
    output = on_a_terminal(
        [sys.executable, "-c", PROGRESS_RUN.format(log_dir=str(tmp_path / "tty"))], python_env()
    )
    text = output.decode()
    assert "\r\x1b[Kstep " in text and " steps/s | loss " in text and "| lr 0.1" in text, text
    # The collector's echo clears the progress line before each log line.
    assert "\r\x1b[K[" in text and "[INFO] an echoed line" in text
    piped = subprocess.run(
        [sys.executable, "-c", PROGRESS_RUN.format(log_dir=str(tmp_path / "pipe"))],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert "steps/s" not in piped.stdout and "\x1b[K" not in piped.stdout
    assert "[INFO] done" in piped.stdout


def test_the_progress_line_shows_the_last_step_and_ends_with_a_newline(tmp_path: Path) -> None:
    code = (
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'run', progress=True, watcher=False) as lg:\n"
        "    lg.log_metrics_summary(0, {'loss': 1.0})\n"  # drawn at once
        "    lg.log_metrics_summary(1, {'loss': 0.5})\n"  # within the half second: not yet
    )
    text = on_a_terminal([sys.executable, "-c", code], python_env()).decode()
    # The last step drawn last, and its line ended (the terminal writes \n as \r\n).
    last = text.rindex("\r\x1b[Kstep ")
    assert re.match(r"\r\x1b\[Kstep 1 \| [\d.,]+ steps/s \| loss 0\.5\r\n", text[last:]), text


def test_tail_through_a_collector_keeps_a_long_non_ascii_line_whole(tmp_path: Path) -> None:
    text = "é" * 200_000  # 400 KB of UTF-8: more than one answer holds
    with Logger(tmp_path, "run", collector="thread", watcher=False) as lg:
        lg.log_message(text)
        lg.log_message("after it")
        assert lg.flush(30)
        out = io.StringIO()
        with CollectorQuery(lg.endpoint) as query:
            answer = query.ask({"what": "tail", "offset": 0, "file": None}, 10)
            pieces = [answer["text"]]
            while answer["text"]:
                where = {"offset": answer["offset"], "file": answer["file"]}
                answer = query.ask({"what": "tail", **where}, 10)
                pieces.append(answer["text"])
            follow_collector(query, out, RecordFilter(), last=1, follow=False)
    whole = "".join(pieces)
    assert "\ufffd" not in whole and len(pieces) >= 3  # in pieces, none cut in a character
    assert whole.splitlines()[0].endswith("[INFO] " + text)
    assert out.getvalue().splitlines() == [whole.splitlines()[-1]]
    assert out.getvalue().rstrip().endswith("[INFO] after it")
