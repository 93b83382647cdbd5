"""Shared helpers: polling with a deadline, free ports, daemons and client processes."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def run_python(code: str, timeout: float = 120.0, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; the caller asserts on the result."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_daemons = itertools.count()


class Daemon:
    """A real ``roxxel-aggregator`` process, its stdout in a file, ended by PID."""

    def __init__(self, log_dir: Path, prefix: str = "run", bind: str = "tcp://127.0.0.1:0"):
        self.log_dir = log_dir
        self.prefix = prefix
        self.stdout_path = log_dir.parent / f"{log_dir.name}-daemon-{next(_daemons)}.out"
        self._out = open(self.stdout_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--bind",
                bind,
                "--log-dir",
                str(log_dir),
                "--prefix",
                prefix,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=python_env(),
        )
        ready = wait_for(self._ready_line, 30, "the daemon's ready line")
        self.endpoint = ready.split(" ready on ", 1)[1].split()[0]

    def _ready_line(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited early: {read(self.stdout_path)}")
        return next((ln for ln in read(self.stdout_path).splitlines() if "ready" in ln), None)

    @property
    def stdout(self) -> str:
        return read(self.stdout_path)

    def file(self, suffix: str) -> str:
        return read(self.log_dir / f"{self.prefix}_{suffix}")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "logs")
    try:
        yield d
    finally:
        d.kill()
