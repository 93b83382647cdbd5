"""Group commit and roll back: when what a collector applied becomes durable.

A commit syncs every sink and the quarantine, then replaces the checkpoint
(:mod:`aggregator.checkpoint`: every sender's applied seq and each file's
mark) atomically, and only then makes the ledger's seqs durable -- the ones
the collector may acknowledge. If writing or committing fails (``OSError``:
disk full, unwritable), everything since the last commit is rolled back:
the files are rewound to the checkpoint's marks, the ledger to its durable
seqs, the reports to what those lines said; nothing is acknowledged, and the
clients resend. Said on the diagnostics log once, then once a minute, and
once more when a commit works again.

Threading: used only by the collector's thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, NamedTuple

from .checkpoint import CheckpointFile
from .ledger import Ledger
from .quarantine import Quarantine
from .reports import Reports
from .sinks import Sink

__all__ = ["GroupCommit"]

# How often a collector that cannot write says so again.
FAILURE_REMINDER = 60.0


class _Failing(NamedTuple):
    since: float  # time.time() of the first failure
    first: float  # monotonic, of the first failure
    last_said: float  # monotonic, of the last message about it
    error: str


class GroupCommit:
    """The run's files, checkpoint and ledger, moved forward together or not at all."""

    def __init__(
        self,
        sinks: Sink,
        ledger: Ledger,
        reports: Reports,
        stats: Counter[str],
        log: logging.Logger,
        *,
        checkpoint: str | None = None,
        quarantine: Quarantine | None = None,
        name: str = "roxxel-aggregator",
    ) -> None:
        self.sinks = sinks
        self._name = name  # how its messages sign
        self.quarantine = quarantine
        self.dirty = False  # written since the last commit
        self.needs_rewind = False  # a failure's roll back could not rewind the files yet
        self._ledger = ledger
        self._reports = reports
        self._stats = stats
        self._log = log
        self._checkpoint = None if checkpoint is None else CheckpointFile(checkpoint)
        self._marks: Any = None
        self._failing: _Failing | None = None
        self._rewind_said = -math.inf

    def resume(self) -> None:
        """Take the checkpoint's senders and rewind the files to its marks (a
        file replaced since, by rotation, starts anew: ``Sink.resume``)."""
        if self._checkpoint is None:
            return
        saved = self._checkpoint.load()
        if saved is not None:
            self._ledger.restore(saved.senders)
            if saved.marks is not None:
                if not isinstance(saved.marks, dict) or "sinks" not in saved.marks:
                    raise ValueError(
                        f"unreadable checkpoint {self._checkpoint.path}: marks of another version"
                    )
                for note in self.sinks.resume(saved.marks["sinks"]):
                    self._log.warning("%s: %s", self._name, note)
                self._rewind_quarantine(saved.marks)
        self.commit()

    def commit(self) -> str | None:
        """Sync the files, then replace the checkpoint; only then is anything durable.

        Raises ``OSError`` if that fails. Returns the line to log when this
        commit ends a spell of failures.
        """
        self.sinks.sync()
        if self.quarantine is not None:
            self.quarantine.sync()
        if self._checkpoint is not None:
            marks = self._current_marks()
            self._checkpoint.save(self._ledger.changes(), marks, self._ledger.saved)
            # Only now, with the checkpoint on disk, may anything be acknowledged.
            self._marks = marks
        self._ledger.commit()
        self._reports.commit()
        self.dirty = False
        return self._recovered() if self._failing is not None else None

    def reopened(self) -> None:
        """The files were reopened (after rotation), all committed: roll backs return here."""
        self._marks = self._current_marks()

    def failed(self, exc: OSError) -> None:
        """Writing or committing failed: forget everything since the last commit."""
        self._stats["write_errors"] += 1
        now = time.monotonic()
        # A full disk fails every commit: said at once, then once a minute.
        if self._failing is None or now - self._failing.last_said >= FAILURE_REMINDER:
            again = "" if self._failing is None else "still "
            self._log.error(
                "%s: writing %sfailed (%s); the batches since the last checkpoint stay "
                "unacknowledged and will be written when the clients resend them",
                self._name,
                again,
                exc,
            )
            if self._failing is None:
                self._failing = _Failing(time.time(), now, now, str(exc))
            self._failing = self._failing._replace(last_said=now)
        self.needs_rewind = True
        self.roll_back()

    def roll_back(self) -> bool:
        """Forget everything after the last checkpoint, in memory and in the files;
        ``False`` while the files cannot be rewound yet."""
        self._ledger.roll_back()
        self._reports.roll_back()  # the warnings written since are given again
        self.dirty = False
        try:
            if self._marks is not None:
                self._rewind(self._marks)
        except OSError as exc:
            now = time.monotonic()
            if now - self._rewind_said >= FAILURE_REMINDER:
                self._rewind_said = now
                self._log.error("%s: cannot rewind the files yet (%s)", self._name, exc)
            return False
        self.needs_rewind = False
        return True

    def close(self) -> None:
        try:
            self.sinks.close()
        finally:
            if self.quarantine is not None:
                self.quarantine.close()

    def _recovered(self) -> str:
        failing, self._failing = self._failing, None
        assert failing is not None
        when = time.strftime("%H:%M:%S", time.localtime(failing.since))
        text = (
            f"{self._name}: writing failed from {when} for "
            f"{time.monotonic() - failing.first:.1f} s ({failing.error}); it works again and "
            "the clients' resent batches are written: nothing is lost"
        )
        self._log.warning("%s", text)
        return text

    def _current_marks(self) -> dict[str, Any]:
        return {
            "sinks": self.sinks.checkpoint_mark(),
            "quarantine": None if self.quarantine is None else self.quarantine.mark(),
        }

    def _rewind(self, marks: Any) -> None:
        self.sinks.rewind(marks["sinks"])
        self._rewind_quarantine(marks)

    def _rewind_quarantine(self, marks: Any) -> None:
        if self.quarantine is not None and marks["quarantine"] is not None:
            self.quarantine.rewind(marks["quarantine"])
