"""The collector a rank-0 Logger starts when no endpoint is configured.

``process`` mode (the default) spawns ``python -m aggregator`` as a child --
a fresh interpreter, never a fork of a process that may have imported JAX --
so formatting and disk I/O never take the training process's GIL. The child
reports the endpoint it bound on a pipe (so a failure to start is an error
here, at once), inherits stdout (the echo of the system log), and exits when
told to or when its parent dies, after writing what it received. ``thread``
mode runs the same collector on a thread, for places that cannot spawn.

By default the collector listens on a private ``ipc://`` endpoint; a
multi-host run binds it on TCP (``bind``) so the other ranks can reach it.
When told to stop it keeps serving, at most ``drain_senders`` seconds, until
every rank of the run has said goodbye.
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from typing import Protocol

from .schema import DEFAULT_METRICS_FILES
from .security import ServerKeys

__all__ = ["EmbeddedCollector", "ProcessCollector", "ThreadCollector", "start_embedded"]

_START_TIMEOUT = 60.0
# How a Logger's own collector signs its messages (it is not the daemon the user runs).
COLLECTOR_NAME = "roxxel collector"
# The collector's metrics files and how its CSV writes floats
# (roxxel.schema.check_file_options): plain values, so that this module does
# not import the collector.
Files = tuple[tuple[str, ...], str]
DEFAULT_FILES: Files = (DEFAULT_METRICS_FILES, "original")


class EmbeddedCollector(Protocol):
    endpoint: str  # as bound, e.g. tcp://0.0.0.0:41234
    pid: int  # the process it runs in

    @property
    def local_endpoint(self) -> str:
        """Where this process connects to it."""

    def running(self) -> bool:
        """Whether the collector is still serving."""

    def stop(self, timeout: float) -> int | None:
        """Stop after writing everything received; return the exit code if known."""


def private_endpoint() -> str:
    name = f"roxxel-{os.getpid()}-{secrets.token_hex(6)}"
    # Linux's abstract socket namespace leaves no file behind, even after kill -9.
    where = "@" if sys.platform.startswith("linux") else tempfile.gettempdir() + os.sep
    return f"ipc://{where}{name}"


def _local(endpoint: str) -> str:
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


class ProcessCollector:
    def __init__(
        self,
        log_dir: str,
        prefix: str,
        bind: str,
        drain_senders: float,
        curve: ServerKeys | None = None,
        files: Files = DEFAULT_FILES,
        parent_watched: bool = True,
    ):
        self._drain = drain_senders
        env = dict(os.environ)
        # The child must import the same `aggregator` as this process, installed or not.
        spec = importlib.util.find_spec("aggregator")
        if spec is not None and spec.origin:
            root = os.path.dirname(os.path.dirname(spec.origin))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        ready_read, ready_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    # "--name=value": a value may start with "-".
                    f"--bind={bind}",
                    f"--log-dir={log_dir}",
                    f"--prefix={prefix}",
                    "--parent-pid",
                    str(os.getpid()),
                    *([] if parent_watched else ["--parent-unwatched"]),
                    "--ready-fd",
                    str(ready_write),
                    "--drain-senders",
                    str(drain_senders),
                    "--quiet",
                    f"--name={COLLECTOR_NAME}",
                    f"--metrics-files={','.join(files[0])}",
                    f"--csv-floats={files[1]}",
                    # Its stats line would land in the training job's terminal.
                    "--stats-interval=0",
                    *(
                        [
                            f"--curve-secret={curve.secret_file}",
                            f"--curve-clients={curve.clients_dir}",
                        ]
                        if curve
                        else []
                    ),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(ready_write,),
                # Its own session: a Ctrl-C or a signal to the training job's
                # process group reaches the Logger, which then stops it in order.
                start_new_session=True,
            )
        finally:
            os.close(ready_write)
        self.pid = self.process.pid
        try:
            self.endpoint = self._read_endpoint(ready_read)
        finally:
            os.close(ready_read)

    def _read_endpoint(self, fd: int) -> str:
        deadline = time.monotonic() + _START_TIMEOUT
        data = b""
        poller = select.poll()  # select() refuses descriptors past 1023
        poller.register(fd, select.POLLIN)
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(math.ceil(left * 1000)):
                self.stop(5)
                raise RuntimeError(f"the embedded collector did not start in {_START_TIMEOUT} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.process.wait()
                raise RuntimeError(
                    f"the embedded collector exited with code {code} before it was ready "
                    "(its error is on stderr above)"
                )
            data += chunk
        line = data.decode(errors="replace").strip()
        if "://" not in line:  # not an endpoint: why the child could not start
            code = self.process.wait()
            raise RuntimeError(f"the embedded collector could not start (code {code}): {line}")
        return line

    @property
    def local_endpoint(self) -> str:
        return _local(self.endpoint)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout + self._drain)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class ThreadCollector:
    def __init__(
        self,
        log_dir: str,
        prefix: str,
        bind: str,
        drain_senders: float,
        curve: ServerKeys | None = None,
        files: Files = DEFAULT_FILES,
    ):
        from aggregator import Collector, FileOptions

        if bind.startswith("ipc://") and curve is None:
            # In-process; a CURVE collector has a context of its own, which
            # the clients' sockets could not reach inproc://.
            bind = f"inproc://roxxel-{secrets.token_hex(8)}"
        self.collector = Collector.for_log_dir(
            bind,
            log_dir,
            prefix,
            sys.stdout,
            curve=curve,
            name=COLLECTOR_NAME,
            # No child processes of the training process: its sinks stay here.
            files=FileOptions(*files, sink_processes="off"),
        )
        self.endpoint = self.collector.endpoint
        self.pid = os.getpid()
        self._drain = drain_senders
        self._thread = threading.Thread(target=self._serve, name="roxxel-collector", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.collector.run(drain_senders=self._drain)
        finally:
            self.collector.close()

    @property
    def local_endpoint(self) -> str:
        return _local(self.endpoint)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> int | None:
        self.collector.stop()
        self._thread.join(timeout + self._drain)
        return None if self._thread.is_alive() else 0


def start_embedded(
    mode: str,
    log_dir: str,
    prefix: str,
    bind: str | None = None,
    drain_senders: float = 0.0,
    curve: ServerKeys | None = None,
    files: Files = DEFAULT_FILES,
    parent_watched: bool = True,
) -> EmbeddedCollector:
    """``curve``: the collector lets in only the clients it lists (its own must
    be); ``files``: its metrics files and how its CSV writes floats;
    ``parent_watched``: this process will have a watcher (its death notice is
    worth waiting for)."""
    bind = bind or private_endpoint()
    if mode == "process":
        return ProcessCollector(log_dir, prefix, bind, drain_senders, curve, files, parent_watched)
    if mode == "thread":
        return ThreadCollector(log_dir, prefix, bind, drain_senders, curve, files)
    raise ValueError(f"collector must be 'process' or 'thread', not {mode!r}")
