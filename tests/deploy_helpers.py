"""Shared by the tests of deploy/ (``tests/test_deploy_*.py``): the daemon's own
argument parser applied to a deployment file's command line, the real daemon
run from its console script, and optional checker tools that skip the one test
needing them, with the reason, when they are not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from aggregator.cli import build_parser

from .conftest import REPO, read, wait_for

DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent


def daemon_args(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` (without the program name) as the real daemon parses it; fail if it would exit."""
    parser = build_parser()
    # argparse takes `--drain` for `--drain-senders`: deployment files spell options out.
    spelled = {opt for action in parser._actions for opt in action.option_strings}
    for word in argv:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in spelled, f"{where}: {word} is not a daemon option"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(list(argv))
    except SystemExit as exc:
        pytest.fail(f"{where}: roxxel-aggregator rejects {list(argv)}: {stderr.getvalue()} ({exc})")


def tcp_port(endpoint: str) -> int:
    """The port of a ``tcp://host:port`` endpoint."""
    assert endpoint.startswith("tcp://"), endpoint
    return int(endpoint.rsplit(":", 1)[1])


# Where to get a checker that the test extra (pyproject.toml) does not install.
SYSTEM_TOOLS = {
    "logrotate": "a system package: `make deps`, or apt-get install logrotate",
    "systemd-analyze": "part of systemd",
}


def tool(name: str) -> str:
    """The path of an optional checker, or skip this test saying it is missing."""
    # A user's PATH often lacks the sbin directories, where logrotate lives.
    where = os.pathsep.join([os.environ.get("PATH", ""), str(VENV_BIN), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=where)
    if path is None:
        how = SYSTEM_TOOLS.get(name, "in the test extra: pip install -e '.[test]'")
        pytest.skip(f"{name} is not installed on this machine ({how}); this check did not run")
    return path


def console_script() -> Path:
    """This venv's ``roxxel-aggregator``, what the deployment files run (fail if missing)."""
    script = VENV_BIN / "roxxel-aggregator"
    if not script.exists():
        pytest.fail(f"the roxxel-aggregator console script is not installed in {VENV_BIN}")
    return script


@contextlib.contextmanager
def running_daemon(argv: Sequence[str], out: Path, env: dict[str, str]) -> Iterator[str]:
    """The real daemon run with ``argv`` (a collector, relay or writer); yields its
    endpoint; SIGTERM (by pid) at the end."""
    with open(out, "w") as stdout:
        process = subprocess.Popen(
            [str(console_script()), *argv], stdout=stdout, stderr=subprocess.STDOUT, env=env
        )
    try:

        def ready() -> str | None:
            if process.poll() is not None:
                pytest.fail(f"the daemon exited ({process.returncode}): {read(out)}")
            return next((ln for ln in read(out).splitlines() if " ready " in ln), None)

        line = wait_for(ready, timeout=60, what=f"the daemon's ready line in {out}")
        # A writer (--from-jetstream) binds nothing: "" for it.
        yield line.split(" ready on ", 1)[1].split()[0] if " ready on " in line else ""
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, read(out)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
