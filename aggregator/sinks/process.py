"""A metrics sink in a process of its own, so that formatting uses another core.

One collector process formats every row of a run, and formatting is most of
its CPU per metrics row (issue 16). :class:`SinkProcess` runs one sink
(:class:`MetricsCsvSink` or :class:`MetricsJsonlSink`, unchanged) in a child
process and is itself a :class:`Sink`: the collector still decides
everything -- which batches are applied, in what order, when to commit --
and hands the child each applied batch's runs as it applies it, without
waiting. A commit waits for the child's sync and takes its mark, so the
checkpoint covers exactly what the child wrote; a roll back rewinds it.

The child is the collector's own: a private pipe each way, requests pickled
(the runs are pickled once for every child, :func:`_pickled`), and it holds
the run's lock (inherited), so no new collector can open the run's files
while a child of an old one may still write them. It ends when the
collector closes it, when its pipe closes (the collector died, however),
and by ``PR_SET_PDEATHSIG`` when the collector is killed; signals meant for
the collector (SIGTERM, SIGINT, SIGHUP to its group or service) it ignores.

A child that dies (or a request that fails) is an ``OSError`` of the sink,
as a full disk is: the collector rolls back, and rewinding starts a new
child at the last checkpoint's mark.

:class:`Offloaded` starts a sink in the collector and moves it into a child
at a commit once the run writes enough rows a second to pay for it
(``--sink-processes``, :data:`MOVE_AT_ROWS_PER_S`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from roxxel.diagnostics import diagnostics

from .base import FileSink, Origin, Sink
from .metrics_csv import MetricsCsvSink
from .metrics_jsonl import MetricsJsonlSink

if TYPE_CHECKING:
    from ..metrics_run import MetricsRun

__all__ = [
    "SINK_PROCESSES",
    "ENV_SINK_PROCESSES",
    "MOVE_AT_ROWS_PER_S",
    "SinkSpec",
    "SinkProcess",
    "Offloaded",
    "processes_pay",
]

SINK_PROCESSES = ("auto", "on", "off")
# The daemon's --sink-processes when not given (a Logger's collector process's
# too; a collector thread never has sink processes).
ENV_SINK_PROCESSES = "ROXXEL_SINK_PROCESSES"
# A run that writes this many rows a second has its metrics sinks moved into
# processes of their own (with "auto", on a host with MIN_CPUS or more):
# below it, formatting takes under a tenth of a core (benchmarks/README.md).
MOVE_AT_ROWS_PER_S = 50_000
MIN_CPUS = 4

# What a child may run: the sinks whose state is all in their files.
_KINDS: dict[str, Callable[..., Sink]] = {
    "MetricsCsvSink": MetricsCsvSink,
    "MetricsJsonlSink": MetricsJsonlSink,
}
_LENGTH = struct.Struct(">I")
# Fewer wake-ups between collector and child; small enough that many children
# stay under the kernel's per-user budget of pipe pages.
_PIPE_BYTES = 256 << 10
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1
# Not "-m": the package imports this module before runpy would run it.
_CHILD = "from aggregator.sinks.process import main; main()"
_SYNC = pickle.dumps(("sync",))


class SinkSpec(NamedTuple):
    """How to make the sink: its class name (a key of ``_KINDS``) and arguments."""

    kind: str
    args: tuple[Any, ...]

    def local(self) -> Sink:
        return _KINDS[self.kind](*self.args)


def processes_pay(cpus: int | None = None) -> bool:
    """Whether this host has cores to spare for sink processes ("auto")."""
    if cpus is None:
        usable = getattr(os, "sched_getaffinity", None)  # Linux only
        cpus = len(usable(0)) if usable is not None else (os.cpu_count() or 1)
    return cpus >= MIN_CPUS


class SinkProcess(Sink):
    """The sink ``spec`` in a child process (see the module's text).

    Raises ``OSError`` if the child cannot start or open its file.
    """

    def __init__(self, spec: SinkSpec, keep_fds: Sequence[int] = ()):
        self.spec = spec
        self.path: str = spec.args[0]
        self._keep_fds = tuple(keep_fds)
        self._marks: tuple[Any, Any] | None = None  # (mark, checkpoint mark) while clean
        self._syncing = False  # a sync's answer is due
        self._child: _Child | None = None
        self._start()

    @property
    def name(self) -> str:
        return self.spec.kind

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.process.pid

    # -- the Sink interface -------------------------------------------------------

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        if self._syncing:  # what follows must not pass for synced
            self.sync()
        self._marks = None
        self._send(_pickled(origin, runs))

    def begin_sync(self) -> None:
        if not self._syncing:
            self._send(_SYNC)
            self._syncing = True

    def sync(self) -> None:
        self.begin_sync()
        self._syncing = False
        self._reply()

    def flush(self) -> None:
        self._call("flush")

    def mark(self) -> Any:
        return self._current_marks()[0]

    def checkpoint_mark(self) -> Any:
        return self._current_marks()[1]

    def rewind(self, mark: Any) -> None:
        self._settle()
        if self._child is None or self._child.process.poll() is not None:
            # A new child opens the file by name, which may be another file by
            # now (renamed by rotation): resuming at the mark finds the one it names.
            if self._child is not None:
                self._child.end()
                self._child = None
            self._start()
            for note in self._call("resume", mark):
                diagnostics("roxxel.aggregator").warning("roxxel-aggregator: %s", note)
        else:
            self._call("rewind", mark)

    def resume(self, mark: Any) -> list[str]:
        self._settle()
        return self._call("resume", mark)

    def reopen(self) -> None:
        self._call("reopen")

    def close(self) -> None:
        if self._child is None:
            return
        try:
            self._settle()
            if self._child.process.poll() is None:  # a dead child has nothing left to close
                self._call("close")
        finally:
            self._child.end()
            self._child = None

    # -- the pipes ----------------------------------------------------------------

    def _start(self) -> None:
        self._child = _Child(self._keep_fds)
        try:
            self._call("open", tuple(self.spec))
        except BaseException:
            self._child.end()
            self._child = None
            raise

    def _current_marks(self) -> tuple[Any, Any]:
        """(mark, checkpoint mark): those of the last answer, unless written since."""
        if self._marks is None:
            self._call("mark")
        assert self._marks is not None
        return self._marks

    def _settle(self) -> None:
        """Read a sync's answer still due: the request that follows supersedes its error."""
        if self._syncing:
            self._syncing = False
            try:
                self._reply()
            except OSError:
                pass  # said when the commit failed; a rewind or close follows

    def _call(self, op: str, *args: Any) -> Any:
        if self._syncing:  # a sync's answer comes first
            self.sync()
        self._send(pickle.dumps((op, *args)))
        return self._reply()

    def _send(self, data: bytes) -> None:
        if self._child is None:
            raise self._gone(None)
        try:
            self._child.send(data)
        except OSError as exc:
            raise self._gone(exc) from None

    def _reply(self) -> Any:
        if self._child is None:
            raise self._gone(None)
        try:
            body = self._child.receive()
        except OSError as exc:
            raise self._gone(exc) from None
        if body is None:
            raise self._gone(None)
        status, value, marks = pickle.loads(body)
        self._marks = marks
        if status == "oserror":
            number, text, filename = value
            raise OSError(number, text, filename) if number is not None else OSError(text)
        if status == "error":
            raise RuntimeError(f"the {self.spec.kind} process failed:\n{value}")
        return value

    def _gone(self, exc: OSError | None) -> OSError:
        if self._child is None:
            why = "is not running"
        else:
            code = self._child.wait(5)
            why = f"(pid {self._child.process.pid}) " + (
                f"exited with code {code}" if code is not None else f"stopped answering ({exc})"
            )
        return OSError(errno.EPIPE, f"the {self.spec.kind} process for {self.path} {why}")


class _Child:
    """A sink process and its two pipes: requests on its stdin, answers on a
    pipe of their own (what it prints goes to the collector's stderr)."""

    def __init__(self, keep_fds: tuple[int, ...]):
        answers, answers_there = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(os.getpid()), str(answers_there)],
                stdin=subprocess.PIPE,
                stdout=sys.stderr.fileno() if _has_fd(sys.stderr) else subprocess.DEVNULL,
                pass_fds=(answers_there, *keep_fds),
                env={**os.environ, "PYTHONPATH": _import_path()},
            )
        except BaseException:
            os.close(answers)
            raise
        finally:
            os.close(answers_there)
        assert self.process.stdin is not None
        self._requests = self.process.stdin
        self._answers = os.fdopen(answers, "rb")
        for fd in (self._requests.fileno(), answers):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # a smaller pipe only means more wake-ups

    def send(self, data: bytes) -> None:
        self._requests.write(_LENGTH.pack(len(data)))
        self._requests.write(data)
        self._requests.flush()

    def receive(self) -> bytes | None:
        """The next answer; ``None`` if the child closed its end."""
        head = self._answers.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack(head)
        body = self._answers.read(size)
        return body if len(body) == size else None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self) -> None:
        """Close its pipes (it exits), and wait for it; kill it after 10 s."""
        for pipe in (self._requests, self._answers):
            try:
                pipe.close()
            except OSError:
                pass  # a dead child's pipe: nothing left to flush
        if self.wait(10) is None:
            self.process.kill()
            self.process.wait()


def _has_fd(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # replaced by an object without one (pytest's capture)
    return True


class Offloaded(Sink):
    """The sink ``spec`` in the collector until the run writes ``move_at``
    rows a second, then (at a commit) in a :class:`SinkProcess`; ``move_at=0``
    moves it at once. A process that cannot start is said once, and the
    sink stays in the collector.

    Raises ``OSError`` if the sink cannot open its file."""

    def __init__(self, spec: SinkSpec, move_at: float, keep_fds: Sequence[int] = ()):
        self.spec = spec
        self.path: str = spec.args[0]
        self._move_at = move_at
        self._keep_fds = tuple(keep_fds)
        self._rows = 0
        self._since = time.monotonic()
        self.sink: Sink = spec.local()
        if not move_at:
            self._move()

    @property
    def name(self) -> str:
        return self.spec.kind

    @property
    def moved(self) -> bool:
        return isinstance(self.sink, SinkProcess)

    def write_metrics(self, origin: Origin, runs: Sequence[MetricsRun]) -> None:
        self._rows += sum(len(run.steps) for run in runs)
        self.sink.write_metrics(origin, runs)

    def begin_sync(self) -> None:
        self.sink.begin_sync()

    def sync(self) -> None:
        self.sink.sync()
        if not self.moved:
            self._maybe_move()

    def flush(self) -> None:
        self.sink.flush()

    def mark(self) -> Any:
        return self.sink.mark()

    def checkpoint_mark(self) -> Any:
        return self.sink.checkpoint_mark()

    def rewind(self, mark: Any) -> None:
        self.sink.rewind(mark)

    def resume(self, mark: Any) -> list[str]:
        return self.sink.resume(mark)

    def reopen(self) -> None:
        self.sink.reopen()

    def close(self) -> None:
        self.sink.close()

    def _maybe_move(self) -> None:
        """Just synced, so the file holds everything: a process may take it over."""
        elapsed = time.monotonic() - self._since
        if elapsed < 1.0:
            return
        busy = self._rows >= self._move_at * elapsed
        self._rows, self._since = 0, time.monotonic()
        if busy:
            self._move()

    def _move(self) -> None:
        """Into a process, which opens the file by name: only while that names
        the file written so far (all of it written: just opened or synced)."""
        local = self.sink
        if isinstance(local, FileSink) and not local.holds_path():
            return  # renamed by rotation and not yet reopened: after the reopen
        try:
            moved = SinkProcess(self.spec, self._keep_fds)
        except OSError as exc:
            self._move_at = float("inf")
            diagnostics("roxxel.aggregator").warning(
                "roxxel-aggregator: %s stays in the collector: its process did not start (%s)",
                self.path,
                exc,
            )
            return
        self.sink = moved
        local.close()


# -- the collector's side, shared ------------------------------------------------

_last_pickled: tuple[Any, Any, bytes] | None = None


def _pickled(origin: Origin, runs: Sequence[MetricsRun]) -> bytes:
    """The request for ``runs``, pickled once for all the run's sink processes
    (they get the same list in a row: ``FanOut``). It holds the list, so its
    identity cannot pass to another while cached."""
    global _last_pickled
    last = _last_pickled  # read once: two thread collectors may share this
    if last is not None and last[0] is runs and last[1] is origin:
        return last[2]
    data = pickle.dumps(("metrics", origin, runs), protocol=pickle.HIGHEST_PROTOCOL)
    _last_pickled = (runs, origin, data)
    return data


def _import_path() -> str:
    """This package's directory first, so the child imports the same code."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rest = os.environ.get("PYTHONPATH")
    return root if not rest else f"{root}{os.pathsep}{rest}"


# -- the child -------------------------------------------------------------------


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer the collector's requests until it closes the sink or its pipe."""
    sink: Sink | None = None
    failure: BaseException | None = None  # a write's, said at the next sync
    while True:
        head = requests.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return  # the collector is gone
        op, *args = pickle.loads(requests.read(_LENGTH.unpack(head)[0]))
        if op == "metrics":
            if failure is None and sink is not None:
                try:
                    sink.write_metrics(*args)
                except BaseException as exc:  # noqa: BLE001 -- answered at the sync
                    failure = exc
            continue
        value: Any = None
        try:
            if op == "open":
                sink = SinkSpec(*args[0]).local()
            else:
                assert sink is not None
                if failure is not None and op in ("sync", "flush", "mark"):
                    raise failure
                if op in ("rewind", "resume"):
                    failure = None  # back at a mark: what failed is forgotten
                value = _SERVE[op](sink, *args)
            answer: tuple[str, Any] = ("ok", value)
        except OSError as exc:
            answer = ("oserror", (exc.errno, exc.strerror or str(exc), exc.filename))
        except BaseException:  # noqa: BLE001 -- the collector raises it
            answer = ("error", traceback.format_exc())
        marks = None
        if sink is not None and answer[0] == "ok" and op != "close":
            marks = (sink.mark(), sink.checkpoint_mark())
        data = pickle.dumps((*answer, marks))
        replies.write(_LENGTH.pack(len(data)) + data)
        replies.flush()
        if op == "close":
            return


_SERVE: dict[str, Callable[..., Any]] = {
    "sync": lambda sink: sink.sync(),
    "flush": lambda sink: sink.flush(),
    "mark": lambda sink: None,  # the answer carries the marks
    "rewind": lambda sink, mark: sink.rewind(mark),
    "resume": lambda sink, mark: sink.resume(mark),
    "reopen": lambda sink: sink.reopen(),
    "close": lambda sink: sink.close(),
}


def _die_with(parent: int) -> None:
    """SIGKILL when the collector's thread that started this ends (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # elsewhere the closed pipe alone ends it
    if os.getppid() != parent:
        sys.exit(0)  # it died before the line above


def main() -> None:
    _die_with(int(sys.argv[1]))
    # A signal to the collector's process group or service (Ctrl-C, systemd's
    # SIGTERM to every process of the unit) is the collector's to act on: it
    # drains, and its last commit still needs this process.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    serve(requests, os.fdopen(int(sys.argv[2]), "wb"))
