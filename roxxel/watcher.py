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

from .deathwatch import CLOSED, ENDPOINT

__all__ = ["Watcher", "ENV_WATCHER", "acquire", "release", "watcher_enabled"]

ENV_WATCHER = "ROXXEL_WATCHER"


class Watcher:
    """The training process's side: stderr redirected through the watcher process."""

    def __init__(self, *, rank: int, prefix: str, process_count: int, endpoint: str | None) -> None:
        self.pid = os.getpid()
        read_end, write_end = os.pipe()
        control_read, self._control = os.pipe()
        args = [
            sys.executable,
            # By path, not -m: the idle watcher imports the standard library only.
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "deathwatch.py"),
            "--pid",
            str(self.pid),
            "--rank",
            str(rank),
            "--host",
            socket.gethostname(),
            "--prefix",
            prefix,
            "--process-count",
            str(process_count),
            "--stderr-fd",
            str(read_end),
            "--control-fd",
            str(control_read),
        ]
        try:
            self.process = subprocess.Popen(
                args,
                pass_fds=(read_end, control_read),
                stdin=subprocess.DEVNULL,
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
        sys.stderr.flush()
        self._saved_stderr = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._faulthandler_was_on = faulthandler.is_enabled()
        faulthandler.enable(file=sys.stderr, all_threads=True)
        if endpoint is not None:
            self.tell_endpoint(endpoint)

    def tell_endpoint(self, endpoint: str) -> None:
        """Where to send a death notice (the collector this process's Logger uses)."""
        self._tell(ENDPOINT + endpoint.encode())

    def _tell(self, line: bytes) -> None:
        with contextlib.suppress(OSError):  # a watcher that is gone
            os.write(self._control, line + b"\n")

    def stop(self, timeout: float = 2.0) -> None:
        """The Logger closed cleanly: stderr back to its own file, the watcher ends."""
        self._tell(CLOSED)
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        if not self._faulthandler_was_on:
            faulthandler.disable()
        os.dup2(self._saved_stderr, 2)  # the pipe's last write end here is closed
        os.close(self._saved_stderr)
        os.close(self._control)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# One watcher per process, shared by its Loggers; a forked child leaves the
# parent's alone (it is not the process the watcher watches).
_active: Watcher | None = None
_users = 0


def acquire(*, rank: int, prefix: str, process_count: int, endpoint: str | None) -> Watcher:
    """The process's watcher, started by its first Logger."""
    global _active, _users
    if _active is None or _active.pid != os.getpid():
        _active = Watcher(rank=rank, prefix=prefix, process_count=process_count, endpoint=endpoint)
        _users = 0
    _users += 1
    return _active


def release(watcher: Watcher) -> None:
    """A Logger closed; the last one of the process stops the watcher."""
    global _active, _users
    if watcher is not _active or watcher.pid != os.getpid():
        return
    _users -= 1
    if _users <= 0:
        _active = None
        watcher.stop()


def watcher_enabled(requested: bool | None) -> bool:
    """The keyword wins; else ``ROXXEL_WATCHER=0`` turns the watcher off."""
    if requested is not None:
        return requested
    return os.environ.get(ENV_WATCHER, "1").strip().lower() not in ("0", "false", "no", "off")
