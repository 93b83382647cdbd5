"""The runs a collector serves, and which run a frame belongs to. No sockets.

A collector of one run has only its *home* run: every frame is that run's,
except a new sender's hello that names another run, which is refused (its
records would land in this run's files). A collector of many runs (the
daemon without ``--prefix``) keeps a run per client ``filename_prefix``
under one directory: a sender's frames go to the run its hello named, a
hello of a new run opens it (at most ``max_runs`` at once: 256, fewer where
the file-descriptor limit would not hold them), and a run no
sender uses any more is closed after ``idle_seconds``; its home run is the
daemon's own log. Anything that names no known sender (garbage, a tool's
query, a stranger's batch) goes to the home run, whose ledger says what it is.

Threading: used only by the collector's thread.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import TextIO

from roxxel import codec, schema

from .ledger import Ledger
from .run import Run
from .sinks import DEFAULT_FILES, FileOptions
from .sinks.tensorboard import MAX_OPEN as TENSORBOARD_MAX_OPEN

__all__ = ["Runs", "Refused", "MAX_RUNS", "IDLE_RUN_SECONDS", "max_runs_for_fds"]

# Runs a many-runs daemon keeps open at once (each holds three files, a lock
# and a ledger), and how long one without senders stays open after its last frame.
MAX_RUNS = 256
IDLE_RUN_SECONDS = 60.0
# A run whose senders never said goodbye (killed without a watcher, a replay,
# a client that said hello only) is closed after this long without a frame.
_SILENT_RUN_SECONDS = 3600.0
# File descriptors a run may hold (its files, or two pipes for a sink in a
# process of its own, and the one starting it; lock, checkpoint being
# replaced, quarantine), and those kept for everything else (sockets, connections).
_FDS_PER_RUN = 12
_FDS_KEPT = 256


@dataclass(frozen=True, slots=True)
class Refused:
    """A hello that no run here takes, and why (the client is told)."""

    hello: codec.Hello
    reason: str


class Runs:
    """The home run and, serving many runs (``root`` given), one run per prefix."""

    def __init__(
        self,
        home: Run,
        *,
        root: str | None = None,
        echo: TextIO | None = None,
        diagnostics: logging.Logger,
        name: str,
        files: FileOptions = DEFAULT_FILES,
    ) -> None:
        self.home = home
        # The run its clients' hellos must name (serving one run): the home
        # run's prefix, unless its files are named otherwise (a writer's --prefix
        # for the stream's --run).
        self.takes: str | None = home.prefix
        self.files = files  # what every run it opens writes
        self.root = root
        self.by_prefix: dict[str, Run] = {}
        tensorboard = "tensorboard" in files.metrics_files
        self.max_runs = max_runs_for_fds(
            _FDS_PER_RUN + (TENSORBOARD_MAX_OPEN if tensorboard else 0)
        )
        self.idle_seconds = IDLE_RUN_SECONDS
        self._of_sender: dict[bytes, Run] = {}
        self._echo = echo
        self._diag = diagnostics
        self._name = name

    @property
    def stats(self) -> Counter[str]:
        return self.home.stats

    @property
    def log_dir(self) -> str | None:
        return self.root or self.home.log_dir

    @property
    def prefix(self) -> str | None:
        """The run served (``None``: every run that reaches it)."""
        return None if self.root is not None else self.home.prefix

    def all(self) -> list[Run]:
        return [self.home, *self.by_prefix.values()]

    def route(self, data: bytes) -> Run | Refused:
        """The run a frame belongs to (opened now for a new run's hello), or its refusal.

        Raises ``OSError`` from opening a run's files only as a refusal's reason.
        """
        if self.root is None and self.home.prefix is None:
            return self.home  # a collector over given sinks: no run to tell apart
        try:
            envelope = codec.decode_envelope(data)
        except codec.CodecError:
            return self.home  # its ledger says why
        if self.root is None:
            if envelope.kind != "hello" or envelope.sender_id in self.home.ledger.senders:
                return self.home
        else:
            run = self._of_sender.get(envelope.sender_id)
            if run is not None or envelope.kind != "hello":
                return run or self.home
        try:
            hello = codec.decode(data)
        except codec.CodecError:
            return self.home
        assert isinstance(hello, codec.Hello)
        if self.root is None:
            return self.home if hello.prefix == self.takes else self._not_this_run(hello)
        run = self.by_prefix.get(hello.prefix)
        if run is not None:
            return run
        why = self._cannot_serve(hello.prefix)
        if why is not None:
            return Refused(hello, why)
        try:
            return self._open(hello.prefix)
        except Exception as exc:  # noqa: BLE001 -- one run's bad files must not stop the others
            return Refused(hello, f"run {hello.prefix!r} cannot be opened here: {exc}")

    def _not_this_run(self, hello: codec.Hello) -> Refused:
        run = self.takes
        return Refused(
            hello,
            f"this collector writes run {run!r} only (in {self.home.log_dir}): use "
            f"filename_prefix={run!r}, or a collector of your run (one without --prefix "
            "serves every run)",
        )

    def _cannot_serve(self, prefix: str) -> str | None:
        if not schema.is_run_name(prefix) or prefix == self._name:
            return (
                f"{prefix!r} cannot name a run's files ({schema.RUN_NAME_RULE}, not {self._name!r})"
            )
        if len(self.by_prefix) >= self.max_runs:
            return f"this collector has {self.max_runs} runs open already"
        return None

    def _open(self, prefix: str) -> Run:
        assert self.root is not None
        run = Run.open(
            self.root,
            prefix,
            self._echo,
            Ledger(),
            self.stats,
            self._diag,
            name=self._name,
            files=self.files,
        )
        self.by_prefix[prefix] = run
        for sender_id in run.ledger.senders:  # from its checkpoint: they resend
            self._of_sender[sender_id] = run
        # Said in the daemon's own log; a failure to write it is that run's to handle.
        try:
            self.home.log(
                logging.INFO, f"{self._name}: serving run {prefix!r} ({len(self.by_prefix)} open)"
            )
        except OSError as exc:
            self.home.commits.failed(exc)
        return run

    def joined(self, sender_id: bytes, run: Run) -> None:
        """A sender said hello in ``run``."""
        if run is not self.home:
            self._of_sender[sender_id] = run

    def left(self, sender_id: bytes) -> None:
        """A sender said bye, or was forgotten."""
        self._of_sender.pop(sender_id, None)

    def asked(self, prefix: object) -> Run | None | str:
        """The run a query names (``None``: all of them), or why there is none."""
        if prefix is None:
            return None
        if self.root is None:
            if prefix == self.home.prefix:
                return self.home
            return f"this collector serves run {self.home.prefix!r} only"
        run = self.by_prefix.get(prefix) if isinstance(prefix, str) else None
        if run is None:
            open_runs = ", ".join(sorted(self.by_prefix)[:20]) or "none"
            return f"no run {codec.wire_repr(prefix)} is open here (open: {open_runs})"
        return run

    def close_idle(self, now: float, busy: set[int]) -> list[Run]:
        """Take out the runs no sender uses, idle for ``idle_seconds`` and not
        waiting for an ack (``busy``: their ids); the caller closes them."""
        idle = [
            (prefix, run)
            for prefix, run in self.by_prefix.items()
            if (not run.ledger.open or now - run.active >= _SILENT_RUN_SECONDS)
            and not run.commits.dirty
            and not run.commits.needs_rewind
            and id(run) not in busy
            and now - run.active >= self.idle_seconds
        ]
        for prefix, run in idle:
            del self.by_prefix[prefix]
            # Its checkpoint keeps their seqs: a sender that comes back says hello,
            # which opens the run again.
            for sender_id in run.ledger.senders:
                if self._of_sender.get(sender_id) is run:
                    del self._of_sender[sender_id]
        return [run for _, run in idle]

    def close(self) -> None:
        try:
            for run in self.by_prefix.values():
                run.close()
        finally:
            self.home.close()


def max_runs_for_fds(per_run: int = _FDS_PER_RUN) -> int:
    """:data:`MAX_RUNS`, or fewer where the process may open fewer files: past
    the limit a run's open (and the daemon's connections) would fail."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_RUNS
    return max(1, min(MAX_RUNS, (soft - _FDS_KEPT) // per_run))
