"""deploy/systemd: the unit file, parsed and checked setting by setting, its
ExecStart by the daemon's own argument parser and, where it is installed, by
``systemd-analyze verify``; the logrotate config against the daemon's file
names and, where logrotate is installed, run against a live daemon and
around a daemon killed before or after its SIGHUP; and a daemon restarted
after its files were moved away.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.checkpoint import load_checkpoint

from .conftest import free_port, python_env, read, wait_for
from .deploy_helpers import DEPLOY, console_script, daemon_args, running_daemon, tool
from .test_delivery import assert_exactly_once, csv_steps, messages, start_clients, wait_all

UNIT = DEPLOY / "systemd" / "roxxel-aggregator.service"
RUN_FILES = ("system.log", "metrics.csv", "metrics.jsonl")
LOGROTATE = DEPLOY / "systemd" / "roxxel.logrotate"


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}, with continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: str | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue  # systemd also skips comments inside a continued line
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            assert current not in sections, f"{path}:{number}: section [{current}] twice"
            sections[current] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path}:{number}: not a key=value line: {raw!r}"
        sections[current].setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path}: ends inside a continued line"
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def unit_exec_start() -> list[str]:
    return shlex.split(one(read_unit(UNIT)["Service"], "ExecStart"))


def test_systemd_unit_has_the_sections_and_settings() -> None:
    unit = read_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert one(service, "Type") == "simple"
    user = one(service, "User")
    assert user and user not in ("root", "0")
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RuntimeDirectory") == "roxxel"
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "PrivateTmp") == "yes"
    assert one(unit["Install"], "WantedBy") == "multi-user.target"

    argv = unit_exec_start()
    assert argv[0].startswith("/") and argv[0].endswith("/roxxel-aggregator")
    args = daemon_args(argv[1:], f"{UNIT} ExecStart")
    assert args.bind.startswith("tcp://")
    assert args.pidfile.startswith("/run/roxxel/")
    assert args.log_dir.startswith("/var/log/roxxel")
    # ProtectSystem=strict makes everything else read-only.
    writable = one(service, "ReadWritePaths").split()
    assert any(args.log_dir == p or args.log_dir.startswith(p + "/") for p in writable)
    # systemd's SIGKILL must not cut the drain short.
    assert float(one(service, "TimeoutStopSec")) > args.drain_senders + 10


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # verify insists that ExecStart's binary exists: point it at this venv's.
    script = console_script()
    installed = unit_exec_start()[0]
    text = UNIT.read_text()
    assert text.count(installed) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(installed, str(script)))

    def verify(path: Path) -> tuple[int, list[str]]:
        result = subprocess.run(
            [analyze, "verify", str(path)], capture_output=True, text=True, timeout=120
        )
        lines = (result.stdout + result.stderr).splitlines()
        return result.returncode, [ln for ln in lines if path.name in ln]

    # Unknown keys and bad values are only warnings (exit 0): the test is that
    # nothing is printed about our unit. First, that this systemd-analyze does
    # print such warnings, or an empty output would prove nothing.
    broken = tmp_path / "broken" / UNIT.name
    broken.parent.mkdir()
    broken.write_text(
        unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus\nNoSuchKey=1")
    )
    _, complaints = verify(broken)
    assert any("NoSuchKey" in ln for ln in complaints), complaints
    assert any("protect system" in ln.lower() for ln in complaints), complaints

    code, complaints = verify(unit)
    assert code == 0 and complaints == [], complaints


def test_logrotate_config_matches_the_daemon() -> None:
    text = LOGROTATE.read_text()
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    directives = [ln for ln in lines if ln]
    header = directives[0]
    assert header.endswith("{") and directives.count("}") == 1
    patterns = header[:-1].split()
    args = daemon_args(unit_exec_start()[1:], str(UNIT))
    assert args.prefix is None  # the service serves every job: a run per prefix
    names = [f"{run}_{kind}" for run in ("jobA", "run_beta") for kind in RUN_FILES]
    names.append("roxxel-aggregator_system.log")  # the daemon's own reports
    hidden = [".jobA_checkpoint.json", ".jobA.lock"]
    for name in names:
        path = f"{args.log_dir}/{name}"
        assert any(fnmatch.fnmatch(path, p) for p in patterns), (name, patterns)
    # glob(3), which logrotate uses, never matches a leading dot with `*`.
    assert not any(p.rsplit("/", 1)[1].startswith(".") for p in patterns)
    for name in hidden:
        assert not any(fnmatch.fnmatch(name, p.rsplit("/", 1)[1]) for p in patterns)
    # Renamed, never truncated in place (the checkpoint holds each file's size).
    assert "copytruncate" not in directives and "nocreate" in directives
    postrotate = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    assert "kill -HUP" in postrotate and args.pidfile in postrotate


def logrotate_config(tmp_path: Path, log_dir: Path, pidfile: Path) -> Path:
    """The shipped config with its log dir and pid file moved into ``tmp_path``,
    rotating as this test's user."""
    args = daemon_args(unit_exec_start()[1:], str(UNIT))
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    text = LOGROTATE.read_text()
    for old, new in ((args.log_dir, str(log_dir)), (args.pidfile, str(pidfile))):
        assert old in text
        text = text.replace(old, new)
    text, count = re.subn(r"(?m)^(\s*su) \S+ \S+$", rf"\1 {user} {group}", text)
    assert count == 1
    config = tmp_path / "roxxel.logrotate"
    config.write_text(text)
    return config


def rotate(config: Path, state: Path) -> str:
    """One forced run of the real logrotate on ``config``; what it said."""
    result = subprocess.run(
        [tool("logrotate"), "-v", "-f", "-s", str(state), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_logrotate_rotates_under_a_live_daemon(tmp_path: Path) -> None:
    """The shipped config, paths moved into tmp_path: rename, SIGHUP, new files."""
    tool("logrotate")
    log_dir, pidfile = tmp_path / "logs", tmp_path / "run" / "aggregator.pid"
    pidfile.parent.mkdir()
    config = logrotate_config(tmp_path, log_dir, pidfile)

    argv = ["--bind", "tcp://127.0.0.1:0", "--log-dir", str(log_dir)]
    argv += ["--no-echo", "--pidfile", str(pidfile)]
    client = (
        "import sys\nfrom roxxel import Logger\n"
        "with Logger(sys.argv[1], 'run', aggregator=sys.argv[2]) as lg:\n"
        "    lg.log_message(f'batch {sys.argv[3]}')\n"
        "    lg.log_metrics_summary(int(sys.argv[3]), {'loss': 0.5})\n"
    )
    env = python_env()
    files = {name: log_dir / f"run_{name}" for name in ("system.log", "metrics.csv")}
    with running_daemon(argv, tmp_path / "daemon.out", env) as endpoint:
        for step in ("1", "2"):
            if step == "2":
                assert "running postrotate script" in rotate(config, tmp_path / "state")
                # The daemon makes the new files when the SIGHUP reaches it.
                wait_for(lambda: all(p.exists() for p in files.values()), what="reopened files")
            sent = subprocess.run(
                [sys.executable, "-c", client, str(tmp_path / "client"), endpoint, step],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert sent.returncode == 0, sent.stderr
    assert "batch 1" in read(f"{files['system.log']}.1")
    assert "batch 2" not in read(f"{files['system.log']}.1")
    assert "batch 2" in read(files["system.log"])
    assert read(f"{files['metrics.csv']}.1").splitlines() == ["step,loss", "1,0.50000"]
    assert read(files["metrics.csv"]).splitlines() == ["step,loss", "2,0.50000"]
    assert not pidfile.exists()  # the daemon removes it at exit


# -- a daemon restarted around a rotation, or after its logs were moved away ------------

# Clients streaming numbered lines (and rank 0 metrics rows) while the daemon is
# rotated, killed and restarted: the kill lands in the middle of the stream.
STREAMED, RANKS = 4000, 3


def stream(tmp_path: Path, endpoint: str) -> list[subprocess.Popen]:
    return start_clients(endpoint, STREAMED, RANKS, tmp_path)


def expected_lines() -> list[str]:
    tags = [f"[rank {r}] " if r else "" for r in range(RANKS)]
    return [f"{tags[r]}c{r} {i}" for r in range(RANKS) for i in range(STREAMED)]


def restart_serves_everyone(
    start_daemon, log_dir: Path, bind: str, extra: tuple[str, ...], clients: list
) -> str:
    """A second daemon on the same endpoint and files, which must start and take
    every client's records; ended by SIGTERM. Its output."""
    second = start_daemon(log_dir, None, bind, extra=extra)
    results = wait_all(clients)
    assert [code for code, _ in results] == [0] * RANKS, results
    assert second.terminate() == 0, second.stdout
    return second.stdout


def line_count(*paths: Path) -> int:
    return sum(len(read(p).splitlines()) for p in paths)


def streaming(log_dir: Path) -> bool:
    """Whether lines and rank 0's rows are coming in (rank 0 may start last)."""
    log, rows = log_dir / "run_system.log", log_dir / "run_metrics.csv"
    return line_count(log) >= 300 and line_count(rows) >= 100


@pytest.mark.parametrize("sighup", [False, True], ids=["before-sighup", "after-sighup"])
def test_a_daemon_killed_around_a_rotation_restarts_with_every_record_once(
    tmp_path: Path, start_daemon, sighup: bool
) -> None:
    """logrotate renames the files; the daemon is killed (-9) before its SIGHUP
    (the config's postrotate finds no pid file) or after it reopened; a daemon
    restarted on the same files starts, and each line is once in the rotated
    file and the new one together."""
    tool("logrotate")
    log_dir, pidfile = tmp_path / "logs", tmp_path / "aggregator.pid"
    config = logrotate_config(tmp_path, log_dir, pidfile if sighup else tmp_path / "none.pid")
    log, csv_file = log_dir / "run_system.log", log_dir / "run_metrics.csv"
    rotated = [Path(f"{log}.1"), Path(f"{csv_file}.1")]  # each rotated, since not empty
    bind, extra = f"tcp://127.0.0.1:{free_port()}", ("--no-echo", "--pidfile", str(pidfile))
    first = start_daemon(log_dir, None, bind, extra=extra)
    clients = stream(tmp_path, first.endpoint)
    try:
        wait_for(lambda: streaming(log_dir), 60, "300 lines and 100 rows")
        said = rotate(config, tmp_path / "state")
        assert ("running postrotate script" in said) and rotated[0].exists(), said
        if sighup:
            wait_for(lambda: line_count(log) >= 100, 60, "100 lines in the reopened file")
        first.kill()  # SIGKILL, by pid
        at_kill = line_count(rotated[0], log)
        out = restart_serves_everyone(start_daemon, log_dir, bind, extra, clients)
    finally:
        wait_all(clients, 1)
    assert at_kill < STREAMED * RANKS, "the kill came after everything was written"
    assert_exactly_once(read(rotated[0]) + read(log), expected_lines())
    assert sorted(csv_steps(rotated[1]) + csv_steps(csv_file)) == list(range(STREAMED))
    said = [ln for ln in out.splitlines() if " is a new file" in ln]
    # Before the SIGHUP the checkpoint names the renamed files: new ones start.
    assert bool(said) != sighup, out
    cut = [re.findall(r"/([^/\s]+) is a new file.*?(dropping \d+|nothing)", ln) for ln in said]
    print(f"{at_kill} lines on disk at the kill; the rotated files: {cut}")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_logs_moved_away_while_the_daemon_is_stopped(
    tmp_path: Path, start_daemon, signal_name: str
) -> None:
    """The operator moves the run's files out of the log dir while the daemon
    is stopped: the restarted daemon starts new files. Every acknowledged line
    (the moved log up to its checkpointed size) is once in the moved and the
    new file together; a line written after the checkpoint, never
    acknowledged, is written again in the new file (the rule of README.md,
    "Log rotation and restarts")."""
    log_dir, away = tmp_path / "logs", tmp_path / "away"
    bind, extra = f"tcp://127.0.0.1:{free_port()}", ("--no-echo",)
    log = log_dir / "run_system.log"
    first = start_daemon(log_dir, None, bind, extra=extra)
    clients = stream(tmp_path, first.endpoint)
    try:
        wait_for(lambda: streaming(log_dir), 60, "300 lines and 100 rows")
        if signal_name == "SIGTERM":
            assert first.terminate() == 0  # writes and acknowledges what arrived
        else:
            first.kill()
        checkpoint = load_checkpoint(str(log_dir / ".run_checkpoint.json"))
        acknowledged = checkpoint.marks["sinks"]["SystemLogSink"]["size"]
        away.mkdir()
        for path in log_dir.glob("run_*"):
            path.rename(away / path.name)
        out = restart_serves_everyone(start_daemon, log_dir, bind, extra, clients)
    finally:
        wait_all(clients, 1)
    moved = (away / log.name).read_bytes()
    committed, tail = moved[:acknowledged].decode(), moved[acknowledged:].decode()
    assert len(messages(committed)) < STREAMED * RANKS, "stopped after everything was written"
    assert_exactly_once(committed + read(log), expected_lines())
    assert set(messages(tail)) <= set(messages(read(log)))  # written again, in the new file
    if signal_name == "SIGTERM":
        assert tail == ""  # a clean stop commits everything it wrote
    print(f"{len(messages(tail))} line(s) past the checkpoint in the moved file")
    assert "no longer in its directory" in out
