"""deploy/systemd: the unit file, parsed and checked setting by setting, its
ExecStart by the daemon's own argument parser and, where it is installed, by
``systemd-analyze verify``; the logrotate config against the daemon's file
names and, where logrotate is installed, run against a live daemon.

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

from .conftest import python_env, read, wait_for
from .deploy_helpers import DEPLOY, console_script, daemon_args, running_daemon, tool

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


def test_logrotate_rotates_under_a_live_daemon(tmp_path: Path) -> None:
    """The shipped config, paths moved into tmp_path: rename, SIGHUP, new files."""
    logrotate = tool("logrotate")
    args = daemon_args(unit_exec_start()[1:], str(UNIT))
    log_dir, pidfile = tmp_path / "logs", tmp_path / "run" / "aggregator.pid"
    pidfile.parent.mkdir()
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    config = tmp_path / "roxxel.logrotate"
    text = LOGROTATE.read_text()
    for old, new in ((args.log_dir, str(log_dir)), (args.pidfile, str(pidfile))):
        assert old in text
        text = text.replace(old, new)
    text, count = re.subn(r"(?m)^(\s*su) \S+ \S+$", rf"\1 {user} {group}", text)
    assert count == 1
    config.write_text(text)

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
                result = subprocess.run(
                    [logrotate, "-v", "-f", "-s", str(tmp_path / "state"), str(config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, result.stdout + result.stderr
                assert "running postrotate script" in result.stdout + result.stderr
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
