"""The training process's side of its watcher (:mod:`roxxel.deathwatch`).

No Python ``finally``, signal handler or ``atexit`` runs when a process is
killed (SIGKILL from the OOM killer), aborts (JAX ends every rank with
SIGABRT when a peer dies) or segfaults. So the first Logger of a process
starts a :class:`Watcher`: it runs ``python .../roxxel/deathwatch.py`` (a new
interpreter, never a fork of one that imported JAX), makes the write end of
a pipe the process's file descriptor 2 -- whatever is written to stderr, by
Python, by C++ (JAX's fatal messages) or by ``faulthandler`` (enabled here,
stacks of all threads on a fatal signal), goes through the watcher, which
copies it to the original stderr at once -- and tells it, through a control
pipe, where the collector is and when the Logger closed cleanly. If the
process ends otherwise, the watcher reports it to the collector (see
:mod:`roxxel.deathwatch`).

One watcher per process, shared by its Loggers (:func:`acquire`,
:func:`release`); ``Logger(..., watcher=False)`` or ``ROXXEL_WATCHER=0``
turns it off. Cost: one process of about 10 MiB RSS while idle (it imports
ZeroMQ and the codec only to report a death), started in about 30 ms.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import socket
import subprocess
import sys
import threading

from .deathwatch import CLOSED, ENDPOINT, TARGET_SEPARATOR
from .security import ClientKeys

__all__ = ["Watcher", "ENV_WATCHER", "acquire", "release", "watch_target", "watcher_enabled"]

ENV_WATCHER = "ROXXEL_WATCHER"


class Watcher:
    """The training process's side: stderr redirected through the watcher process."""

    def __init__(self, *, rank: int, prefix: str, process_count: int) -> None:
        self.pid = os.getpid()
        read_end, write_end = os.pipe()
        control_read, self._control = os.pipe()
        args = [
            sys.executable,
            # By path, not -m: the idle watcher imports the standard library only.
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "deathwatch.py"),
            # "--name=value": a value may start with "-".
            f"--pid={self.pid}",
            f"--rank={rank}",
            f"--host={socket.gethostname()}",
            f"--prefix={prefix}",
            f"--process-count={process_count}",
            f"--stderr-fd={read_end}",
            f"--control-fd={control_read}",
        ]
        try:
            self.process = subprocess.Popen(
                args,
                pass_fds=(read_end, control_read),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Its own session: a signal to the training process's group
                # (Ctrl-C, srun, a Kubernetes stop) must not take it too.
                start_new_session=True,
            )
        except BaseException:
            for fd in (read_end, write_end, control_read, self._control):
                os.close(fd)
            raise
        os.close(read_end)
        os.close(control_read)
        try:
            _flush_stderr()
            self._saved_stderr = os.dup(2)
        except BaseException:  # no fd 2 at all ("2>&-"): no watcher
            os.close(write_end)
            os.close(self._control)  # the watcher ends on this end of its control pipe
            raise
        os.dup2(write_end, 2)
        os.close(write_end)
        self._faulthandler_was_on = faulthandler.is_enabled()
        # By descriptor: sys.stderr may be None, or an object without a file.
        faulthandler.enable(file=2, all_threads=True)

    def tell_endpoint(self, endpoint: str) -> None:
        """Where to send a death notice (a :func:`watch_target`: the collector this
        process's Logger uses, and how)."""
        self._tell(ENDPOINT + endpoint.encode())

    def _tell(self, line: bytes) -> None:
        with contextlib.suppress(OSError):  # a watcher that is gone
            os.write(self._control, line + b"\n")

    def stop(self, timeout: float = 2.0) -> None:
        """The Logger closed cleanly: stderr back to its own file, the watcher told.

        The watcher copies stderr until its last writer is gone: processes
        started meanwhile (multiprocessing's helpers, subprocesses) inherited
        the pipe as their stderr. Waited for ``timeout`` seconds at most, then
        reaped in the background, never killed.
        """
        self._tell(CLOSED)
        _flush_stderr()
        if not self._faulthandler_was_on:
            faulthandler.disable()
        os.dup2(self._saved_stderr, 2)  # the pipe's last write end here is closed
        os.close(self._saved_stderr)
        os.close(self._control)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            threading.Thread(
                target=self.process.wait, name="roxxel-watcher-reap", daemon=True
            ).start()


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, ValueError, OSError):  # None, closed, no file
        sys.stderr.flush()


# One watcher per process, shared by its Loggers; a forked child leaves the
# parent's alone (it is not the process the watcher watches). The endpoint
# it reports to is that of the most recent Logger still open.
_lock = threading.Lock()
_active: Watcher | None = None
_endpoints: list[str | None] = []


def acquire(*, rank: int, prefix: str, process_count: int, endpoint: str | None) -> Watcher:
    """The process's watcher (started by its first Logger), told about ``endpoint``."""
    global _active
    with _lock:
        if _active is None or _active.pid != os.getpid():
            _active = Watcher(rank=rank, prefix=prefix, process_count=process_count)
            _endpoints.clear()
        _endpoints.append(endpoint)
        if endpoint is not None:
            _active.tell_endpoint(endpoint)
        return _active


def found(watcher: Watcher, previous: str | None, endpoint: str) -> None:
    """A Logger found its collector (through JAX's key-value store)."""
    with _lock:
        if watcher is _active and previous in _endpoints:
            _endpoints[_endpoints.index(previous)] = endpoint
            watcher.tell_endpoint(endpoint)


def release(watcher: Watcher, endpoint: str | None) -> None:
    """A Logger closed; the last one of the process stops the watcher."""
    global _active
    with _lock:
        if watcher is not _active or watcher.pid != os.getpid():
            return
        if endpoint in _endpoints:
            _endpoints.remove(endpoint)
        if _endpoints:
            remaining = [e for e in _endpoints if e is not None]
            if remaining:
                watcher.tell_endpoint(remaining[-1])
            return
        _active = None
    watcher.stop()


def watch_target(endpoint: str, keys: ClientKeys | None) -> str:
    """The collector endpoint and, with CURVE, the key files to reach it with."""
    if keys is None:
        return endpoint
    return TARGET_SEPARATOR.join((endpoint, keys.server_key_file, keys.client_key_file))


def watcher_enabled(requested: bool | None) -> bool:
    """The keyword wins; else ``ROXXEL_WATCHER=0`` turns the watcher off."""
    if requested is not None:
        return requested
    return os.environ.get(ENV_WATCHER, "1").strip().lower() not in ("0", "false", "no", "off")
