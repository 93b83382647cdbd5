"""The watcher process: copies a training process's stderr, reports its death.

Started by :class:`roxxel.watcher.Watcher` as ``python .../deathwatch.py``
(by path: while idle it imports only the standard library). It

* reads the pipe that is the training process's stderr, copies every chunk
  to its own stderr (the original one) at once and keeps the last 64 KiB;
* reads from a control pipe where the collector is (``endpoint E``) and
  whether the Logger closed cleanly (``closed``: it then copies stderr
  until its last writer is gone, and ends);
* notices the process's end (a Linux pidfd; else being handed to another
  parent) and, unless the Logger closed or the exit status is 0, sends to the
  collector, as the process's rank: a death notice ``process PID on HOST ended
  by SIGABRT`` (a ``"x"`` record: the collector writes it, stops waiting for
  that process's senders and names the run's first failure at its end) and
  the tail of its stderr (JAX's fatal messages, ``faulthandler``'s stacks).

The exit status of a process is readable only by its parent, or in
``/proc/PID/stat`` while it is a zombie its parent has not reaped yet; the
watcher reads it there at once. A launcher that reaps at once (``srun``,
``torchrun``, a shell) wins that race: then a fatal signal is named from
``faulthandler``'s message, and anything else (SIGKILL, ``os._exit``) is
reported as an end whose status could not be read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["CLOSED", "ENDPOINT", "describe_end", "main"]

CLOSED = b"closed"
ENDPOINT = b"endpoint "
# Between an endpoint and the CURVE key files to reach it with (a tab: not
# in endpoints, and the line is one line).
TARGET_SEPARATOR = "\t"
TAIL_BYTES = 64 * 1024
# faulthandler's first line on a fatal signal, and the signal it means.
_FATAL_ERRORS = {
    b"Fatal Python error: Segmentation fault": "SIGSEGV",
    b"Fatal Python error: Aborted": "SIGABRT",
    b"Fatal Python error: Bus error": "SIGBUS",
    b"Fatal Python error: Floating point exception": "SIGFPE",
    b"Fatal Python error: Illegal instruction": "SIGILL",
}


class _Tail:
    """The last ``limit`` bytes written to stderr."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self._limit :]
        if len(data) == self._limit:  # cut mid-stream: start at a line
            data = data.partition(b"\n")[2] or data
        return data.decode("utf-8", errors="replace").rstrip("\n")


def _copy(data: bytes) -> None:
    with contextlib.suppress(OSError):  # the original stderr may be gone
        view = memoryview(data)
        while view:
            view = view[os.write(2, view) :]


def _exit_status(pid: int) -> int | None:
    """The wait status of ``pid`` while it is a zombie (``/proc/PID/stat``, field 52)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    return int(fields[49])


def describe_end(status: int | None, tail: str) -> str | None:
    """How the process ended, or ``None`` for a clean end (exit status 0)."""
    if status is not None:
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            return f"{name}{' (core dumped)' if os.WCOREDUMP(status) else ''}"
        code = os.WEXITSTATUS(status)
        return None if code == 0 else f"exit code {code}"
    data = tail.encode("utf-8", errors="replace")
    for message, name in _FATAL_ERRORS.items():
        if message in data:
            return f"{name} (from faulthandler's message; the exit status was not readable)"
    return (
        "a cause that could not be read (SIGKILL? os._exit?): its parent reaped it "
        "before its exit status could be read"
    )


def _dead(pid: int, parent: int) -> bool:
    """Without a pidfd: the process is gone when we were handed to another parent."""
    return os.getppid() != parent or not os.path.exists(f"/proc/{pid}")


def _report(args: argparse.Namespace, endpoint: str, how: str, tail: str, died_at: float) -> None:
    """Send the death notice and the stderr tail as the dead process's rank."""
    import secrets

    from roxxel.codec import SENDER_ID_LEN, Ack, Batch, Bye, Frame, Hello, encode
    from roxxel.exchange import exchange
    from roxxel.schema import RECORD_DEATH, RECORD_LOG
    from roxxel.security import client_keys
    from roxxel.transport import DealerTransport

    ts = died_at
    records: list[list] = [
        [RECORD_DEATH, ts, 50, f"process {args.pid} on {args.host} ended by {how}"]
    ]
    if tail:
        lines = tail.count("\n") + 1
        records.append(
            [RECORD_LOG, ts, 40, f"last {lines} line(s) of stderr of process {args.pid}:\n{tail}"]
        )
    sender_id = secrets.token_bytes(SENDER_ID_LEN)
    hello = Hello(sender_id, args.host, args.rank, args.pid, args.process_count, args.prefix)
    endpoint, *key_files = endpoint.split(TARGET_SEPARATOR)
    keys = client_keys(*key_files) if key_files else None
    transport = DealerTransport(endpoint, sender_id, keys=keys)
    frames = [encode(hello), encode(Batch(sender_id, 1, records)), encode(Bye(sender_id, 1))]
    deadline = time.monotonic() + 10.0  # for the three

    def acks(seq: int) -> Callable[[Frame], bool]:
        return lambda reply: isinstance(reply, Ack) and reply.seq >= seq

    try:
        # Each frame in turn, sent again every second until its ack: the batch
        # only once the hello is acked, the bye once the batch is written.
        for want, frame in zip((0, 1, 1), frames, strict=True):
            if exchange(transport, frame, acks(want), deadline - time.monotonic()) is None:
                raise TimeoutError(f"the collector at {endpoint} did not answer")
    finally:
        transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deathwatch.py")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--process-count", type=int, required=True)
    parser.add_argument("--stderr-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ours is to outlive the process
    parent = os.getppid()
    try:
        pidfd: int | None = os.pidfd_open(args.pid)
    except (AttributeError, OSError):
        pidfd = None
    tail = _Tail()
    endpoint: str | None = None
    closed = False
    control = b""
    poller = select.poll()
    for fd in (args.stderr_fd, args.control_fd, *([pidfd] if pidfd is not None else [])):
        poller.register(fd, select.POLLIN)
    open_fds = {args.stderr_fd, args.control_fd}
    while True:
        died = False
        for fd, _ in poller.poll(100 if pidfd is None or closed else None):
            if fd == pidfd:
                died = True
                continue
            if fd == args.stderr_fd:
                if not _copy_from(fd, tail):
                    poller.unregister(fd)
                    open_fds.discard(fd)
                continue
            data = os.read(fd, 65536)
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
            else:
                control += data
                while b"\n" in control:
                    line, control = control.split(b"\n", 1)
                    if line == CLOSED:
                        closed = True
                        if pidfd is not None:
                            poller.unregister(pidfd)
                    elif line.startswith(ENDPOINT):
                        endpoint = line[len(ENDPOINT) :].decode()
        if closed:
            # The Logger closed: copy stderr until its last writer (the
            # process, or children that inherited it) is gone, then end.
            if args.stderr_fd not in open_fds:
                return 0
            continue
        if died or (pidfd is None and _dead(args.pid, parent)):
            break
    died_at = time.time()
    status = _exit_status(args.pid)
    stderr_only = select.poll()
    if args.stderr_fd in open_fds:
        stderr_only.register(args.stderr_fd, select.POLLIN)
    # What is still in the pipe; children of the process may keep writing,
    # so at most half a second of it goes into the report.
    until = time.monotonic() + 0.5
    while args.stderr_fd in open_fds and time.monotonic() < until:
        if not stderr_only.poll(20):
            break
        if not _copy_from(args.stderr_fd, tail):
            open_fds.discard(args.stderr_fd)
    if status is None:
        status = _exit_status(args.pid)
    text = tail.text()
    how = describe_end(status, text)
    if how is not None:
        _tell_collector(args, endpoint, how, text, died_at)
    # Processes that inherited the pipe as their stderr still write to it.
    while args.stderr_fd in open_fds:
        if stderr_only.poll(None) and not _copy_from(args.stderr_fd, tail):
            open_fds.discard(args.stderr_fd)
    return 0


def _copy_from(fd: int, tail: _Tail) -> bool:
    """Copy what ``fd`` holds to stderr and the tail; ``False`` at its end."""
    data = os.read(fd, 65536)
    if data:
        _copy(data)
        tail.add(data)
    return bool(data)


def _tell_collector(
    args: argparse.Namespace, endpoint: str | None, how: str, text: str, died_at: float
) -> None:
    if endpoint is None:
        _copy(f"roxxel: process {args.pid} ended by {how}; no collector to tell\n".encode())
        return
    try:
        _report(args, endpoint, how, text, died_at)
    except Exception as exc:
        _copy(
            f"roxxel: process {args.pid} (rank {args.rank}) ended by {how}; telling the "
            f"collector failed: {exc}\n".encode()
        )


if __name__ == "__main__":
    # Run by path, sys.path[0] is roxxel/ itself, whose modules would shadow
    # top-level ones: put the directory holding this roxxel there instead, so
    # a report imports the same roxxel as the training process.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
