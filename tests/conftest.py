"""Shared helpers: polling with a deadline, free ports, daemons and client processes."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from xprocess import ProcessStarter

from roxxel.security import generate_keys

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


def metrics_runs(rows: list[tuple[str, int, dict]], ts: float = 1.0) -> list:
    """``(kind, step, metrics)`` rows as a collector's sinks get them: queued
    as a Logger queues them, grouped and encoded by the client's codec,
    decoded and checked as the collector does."""
    from aggregator.metrics_run import metrics_run
    from roxxel import codec, schema
    from roxxel.values import to_wire

    entries = [(kind, tuple(m), ts, step, tuple(m.values())) for kind, step, m in rows]
    body = codec.encode_records(schema.metrics_records(entries), to_wire)
    frame = codec.decode(codec.batch_frame(b"s" * codec.SENDER_ID_LEN, 1, body))
    assert all(schema.check_record(r) is None for r in frame.records)
    return [metrics_run(r)[0] for r in frame.records]


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


def daemon_argv(
    log_dir: str | os.PathLike, prefix: str | None, bind: str, *extra: str
) -> list[str]:
    """The command line of a roxxel-aggregator daemon (``prefix`` None: of every run)."""
    return [
        sys.executable,
        "-m",
        "aggregator",
        "--bind",
        bind,
        "--log-dir",
        str(log_dir),
        *(["--prefix", prefix] if prefix is not None else []),
        *extra,
    ]


class Daemon:
    """A real ``roxxel-aggregator`` process started by pytest-xprocess, ended by PID."""

    def __init__(
        self,
        xprocess,
        log_dir: Path,
        prefix: str | None = "run",
        bind: str = "tcp://127.0.0.1:0",
        extra: tuple[str, ...] = (),
    ):
        self.log_dir = log_dir
        self.prefix = prefix
        argv = daemon_argv(log_dir, prefix, bind, *extra)

        class Starter(ProcessStarter):
            pattern = r"roxxel-aggregator ready on "
            args = argv
            env = python_env()
            timeout = 60
            terminate_on_interrupt = True

        name = f"roxxel-aggregator-{os.getpid()}-{next(_daemons)}"
        pid, self.stdout_path = xprocess.ensure(name, Starter, restart=True, persist_logs=False)
        self.process = psutil.Process(pid)
        ready = next(ln for ln in self.stdout.splitlines() if " ready on " in ln)
        self.endpoint = ready.split(" ready on ", 1)[1].split()[0]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return read(self.stdout_path)

    def file(self, suffix: str) -> str:
        return read(self.log_dir / f"{self.prefix}_{suffix}")

    def running(self) -> bool:
        try:
            return self.process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM by PID; the exit code."""
        try:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(30)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def start_daemon(xprocess) -> Iterator[Callable[..., Daemon]]:
    """Start daemons with ``start_daemon(log_dir, prefix, bind)``; all are ended by PID."""
    started: list[Daemon] = []

    def start(*args, **kwargs) -> Daemon:
        started.append(Daemon(xprocess, *args, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for d in started:
            d.kill()


@pytest.fixture
def daemon(tmp_path: Path, start_daemon) -> Daemon:
    return start_daemon(tmp_path / "logs")


class Said(logging.Handler):
    """Keeps what a component said on its diagnostics logger, message by message."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def having(self, text: str) -> list[str]:
        return [m for m in self.messages if text in m]


_Test = TypeVar("_Test", bound=Callable[..., Any])


def differs_on_purpose(readme_words: str) -> Callable[[_Test], _Test]:
    """Mark a test that asserts a deliberate difference from the project whose
    test suite its file ports; the README states it in ``readme_words``."""

    def mark(test: _Test) -> _Test:
        test.differs_on_purpose = readme_words  # type: ignore[attr-defined]
        return test

    return mark


def unstated_differences(module: str, section: str | None = None) -> tuple[int, list[str]]:
    """How many tests of ``module`` are marked :func:`differs_on_purpose`, and
    the words of those the README (or its ``## section``) does not state."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    if section is not None:
        readme = readme.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    readme = " ".join(readme.split())
    marked = [
        test.differs_on_purpose
        for name, test in vars(sys.modules[module]).items()
        if name.startswith("test_") and hasattr(test, "differs_on_purpose")
    ]
    return len(marked), [w for w in marked if " ".join(w.split()) not in readme]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """CURVE keys: server, alice, mallory (both listed) and bob (not listed); the allowed
    clients' public keys in keys/clients."""
    directory = tmp_path / "keys"
    for name in ("server", "alice", "mallory", "bob"):
        generate_keys(str(directory), name)
    (directory / "clients").mkdir()
    for name in ("alice", "mallory"):
        (directory / "clients" / f"{name}.key").write_bytes(
            (directory / f"{name}.key").read_bytes()
        )
    return directory


class Clock:
    """A clock the test moves (a float assignment: safe across threads), for
    the sans-IO parts that take one (the ledger, the commit pacing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
