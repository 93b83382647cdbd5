"""The collector a rank-0 Logger starts when no endpoint is configured.

``process`` mode (the default) spawns ``python -m aggregator`` as a child --
a fresh interpreter, never a fork of a process that may have imported JAX --
so formatting and disk I/O never take the training process's GIL. The child
listens on a private ``ipc://`` endpoint, inherits stdout (the echo of the
system log), and exits when told to or when its parent dies, after writing
what it received. ``thread`` mode runs the same collector on a thread, for
places that cannot spawn processes.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from typing import Protocol

__all__ = ["EmbeddedCollector", "ProcessCollector", "ThreadCollector", "start_embedded"]


class EmbeddedCollector(Protocol):
    endpoint: str

    def running(self) -> bool:
        """Whether the collector is still serving."""

    def stop(self, timeout: float) -> int | None:
        """Stop after writing everything received; return the exit code if known."""


class ProcessCollector:
    def __init__(self, log_dir: str, prefix: str):
        name = f"roxxel-{os.getpid()}-{secrets.token_hex(6)}"
        # Linux's abstract socket namespace leaves no file behind, even after kill -9.
        where = "@" if sys.platform.startswith("linux") else tempfile.gettempdir() + os.sep
        self.endpoint = f"ipc://{where}{name}"
        env = dict(os.environ)
        # The child must import the same `aggregator` as this process, installed or not.
        spec = importlib.util.find_spec("aggregator")
        if spec is not None and spec.origin:
            root = os.path.dirname(os.path.dirname(spec.origin))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--bind",
                self.endpoint,
                "--log-dir",
                log_dir,
                "--prefix",
                prefix,
                "--parent-pid",
                str(os.getpid()),
                "--quiet",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class ThreadCollector:
    def __init__(self, log_dir: str, prefix: str):
        from aggregator import Collector

        self.collector = Collector.for_log_dir(
            f"inproc://roxxel-{secrets.token_hex(8)}", log_dir, prefix, sys.stdout
        )
        self.endpoint = self.collector.endpoint
        self._thread = threading.Thread(target=self._serve, name="roxxel-collector", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.collector.run()
        finally:
            self.collector.close()

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> int | None:
        self.collector.stop()
        self._thread.join(timeout)
        return None if self._thread.is_alive() else 0


def start_embedded(mode: str, log_dir: str, prefix: str) -> EmbeddedCollector:
    if mode == "process":
        return ProcessCollector(log_dir, prefix)
    if mode == "thread":
        return ThreadCollector(log_dir, prefix)
    raise ValueError(f"collector must be 'process' or 'thread', not {mode!r}")
