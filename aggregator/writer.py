"""The writer: a collector whose frames come from a JetStream stream, not a socket.

``roxxel-aggregator --from-jetstream URLS --run NAME --log-dir DIR --prefix P``.
It is a :class:`~aggregator.collector.Collector` of the run ``P`` -- the same
ledger, sinks, group commit, checkpoint, reports, death notices and
summary -- whose router is a :class:`StreamInbox`: each unit the relays
published (:mod:`aggregator.stream_wire`) is one message, its frames the
sender's hello and what followed it.

Exactly once: the units are read in stream order through a durable
consumer. The stream seq of the last unit read is one more sink's mark
(:class:`StreamPosition`), so the checkpoint holds it with the files'
sizes: a writer killed and started again rewinds the files to its
checkpoint and reads the stream again from the unit after that mark (its
consumer is made anew there); a commit that fails and rolls back reads again,
from memory, the units read since the commit before. A unit read twice within one life (JetStream's
redelivery) is skipped by its stream seq. A batch that is in the stream
twice (a relay that published it again past the duplicate window, or a
client that resent it through a restarted relay) is dropped by the
ledger's seq rules, as a collector drops a resent batch. The stream's
messages are acknowledged (the consumer acks all before) only after the
commit that wrote them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from typing import Any

import zmq

from roxxel import codec
from roxxel.diagnostics import diagnostics
from roxxel.wakepipe import WakePipe

from .collector import Collector
from .jetstream import DEFAULT_STREAM, Delivered, JetStreamLink, StreamSettings
from .ledger import MAX_SENDERS, Ledger
from .router import Ready, Received
from .run import Run
from .sinks import DEFAULT_FILES, FileOptions, Sink
from .stream_wire import RELAY_HEADER, Part, sender_of_subject, unpack_unit

__all__ = ["StreamPosition", "StreamInbox", "Writer", "open_writer"]

# Units fetched and not yet handed to the collector, at most (then fetching waits).
_HELD_UNITS = 4096
# The run's written units are purged from the stream at most this often.
_PURGE_EVERY = 5.0


class StreamPosition(Sink):
    """The stream seq of the last unit handed to the collector, as a sink's mark:
    committed with the files, rewound with them. Writes nothing."""

    def __init__(self) -> None:
        self.read = 0  # the last unit handed out
        self.rewound = False  # set by a roll back: the inbox reads again from here
        # The first unit of a frame whose parts are not all read yet: a restart
        # must read it again, so no mark passes it.
        self.holding: int | None = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def mark(self) -> int:
        return self.read if self.holding is None else min(self.read, self.holding - 1)

    def rewind(self, mark: Any) -> None:
        if not isinstance(mark, int) or mark < 0:
            raise ValueError(f"a stream position is a seq, got {mark!r}")
        if mark != self.read:
            self.read = mark
            self.rewound = True


class StreamInbox:
    """What a :class:`~aggregator.router.Router` is to a collector, over a
    JetStream consumer of one run: poll, receive, send (an ack: the stream's
    messages up to the last one read are acknowledged), wake."""

    gate = None
    is_local = False

    def __init__(self, urls: list[str], run: str, settings: StreamSettings, log: logging.Logger):
        self.endpoint = f"jetstream:{','.join(urls)}/{run}"
        self._run = run
        self._log = log
        self.position = StreamPosition()
        self._units: deque[Delivered] = deque()
        self._lock = threading.Lock()
        # Woken by the link's thread, and by pause() in a signal handler.
        self._wakes = WakePipe()
        self._next_purge = 0.0
        self._purged_upto = 0
        # Handed to the collector since the last ack (what a roll back may undo).
        self._uncommitted: deque[Delivered] = deque()
        # Per sender (peer), the parts of a large frame read so far, and the
        # stream seq of its first part.
        self._parts: dict[bytes, tuple[int, list[bytes]]] = {}
        self._last_read: Delivered | None = None
        self._acked_upto = 0
        self._paused = False
        self._link = JetStreamLink(
            urls, f"roxxel-writer {run} {os.getpid()}", self.wake, settings, self._problem
        )

    def start(self) -> None:
        """Read from the unit after the position (the checkpoint's, once resumed)."""
        self.position.rewound = False
        self._link.consume(self._run, self.position.read + 1, self._deliver)

    # -- the link's thread ---------------------------------------------------------

    def _deliver(self, units: list[Delivered]) -> bool:
        with self._lock:
            if len(self._units) >= _HELD_UNITS:
                return False
            self._units.extend(units)
        return True

    def _problem(self, text: str) -> None:
        self._log.warning("roxxel-aggregator: %s", text)

    # -- the collector's thread ----------------------------------------------------

    def pause(self) -> None:
        """Hand out nothing more (the writer stops: what is not read yet stays in
        the stream for the next start). Safe in a signal handler."""
        self._paused = True
        self.wake()

    def poll(self, timeout: float) -> Ready:
        if self._paused:
            return Ready(False, [])
        if self.position.rewound:
            self._read_again()
        if not self._units:
            self.wait_for_wake(timeout)
        return Ready(bool(self._units) and not self._paused, [])

    def wait_for_wake(self, timeout: float) -> None:
        self._wakes.wait(timeout)

    def wake(self) -> None:
        self._wakes.wake()

    def receive(self) -> Received:
        """The next unit not read before, as one message (``zmq.Again``: none);
        a frame sent in parts once its last part is read."""
        while True:
            with self._lock:
                if not self._units or self._paused:
                    raise zmq.Again()
                unit = self._units.popleft()
            if unit.stream_seq <= self.position.read:
                continue  # JetStream delivered it again: read already
            self.position.read = unit.stream_seq
            self._last_read = unit
            self._uncommitted.append(unit)
            sender = sender_of_subject(unit.subject)
            peer = sender if sender is not None else unit.subject.encode()
            source = unit.headers.get(RELAY_HEADER, "")
            try:
                frames, part = unpack_unit(unit.data)
            except ValueError as exc:
                why = f"stream seq {unit.stream_seq}: {exc}"
                return Received(peer, [], None, source, refused=why)
            if part is not None:
                joined = self._joined(peer, unit.stream_seq, part)
                if joined is None:
                    continue  # more parts to come
                if not joined:
                    why = f"stream seq {unit.stream_seq}: part {part.index} of {part.count} alone"
                    return Received(peer, [], None, source, refused=why)
                frames.append(joined)
            return Received(peer, frames, None, source)

    def _joined(self, peer: bytes, stream_seq: int, part: Part) -> bytes | None:
        """The frame once ``part`` is its last (``b""``: a part whose first ones
        were never read), else ``None``."""
        first, pieces = self._parts.pop(peer, (stream_seq, []))
        if part.index != len(pieces):  # a frame begun again, or its start missing
            first, pieces = stream_seq, []
            if part.index:
                self._hold()
                return b""
        pieces.append(part.piece)
        if part.index < part.count - 1:
            self._parts[peer] = (first, pieces)
            self._hold()
            return None
        self._hold()
        return b"".join(pieces)

    def _hold(self) -> None:
        self.position.holding = min((first for first, _ in self._parts.values()), default=None)

    def allows(self, key: str | None) -> bool:
        return True

    def send(self, peer: bytes, frame: bytes) -> bool:
        """An ack is due: everything read so far is committed (acks are due only
        then), so the stream's messages up to the last read are acknowledged.
        Other answers (a refusal) have nobody to go to."""
        if codec.decode_envelope(frame).kind != "ack":
            return True
        if self.position.rewound:  # acks after a roll back: of the commit before it
            self._read_again()
        # Committed: all but the parts of a frame not read whole yet.
        mark = self.position.mark()
        while self._uncommitted and self._uncommitted[0].stream_seq <= mark:
            self._uncommitted.popleft()
        last = self._last_read
        if last is not None and last.stream_seq > self._acked_upto:
            self._acked_upto = last.stream_seq
            self._link.ack(last)
        if time.monotonic() >= self._next_purge:
            self.purge_written()
        return True

    def purge_written(self) -> None:
        """The run's units up to the committed mark leave the stream (written and
        committed), so that it holds what no writer has written yet, not days of it."""
        mark = self.position.mark()
        if mark > self._purged_upto:
            self._link.purge(self._run, mark)
            self._purged_upto, self._next_purge = mark, time.monotonic() + _PURGE_EVERY

    def _read_again(self) -> None:
        """After a roll back to the last commit: the units read since are read
        again, from memory (all were read since the last ack, which followed
        that commit), before those fetched after them."""
        self.position.rewound = False
        again = [u for u in self._uncommitted if u.stream_seq > self.position.read]
        self._uncommitted.clear()
        self._parts.clear()  # read again with the rest
        self._hold()
        if again:
            self._last_read = None  # read past the commit: not to be acknowledged
        with self._lock:
            self._units.extendleft(reversed(again))

    def close(self) -> None:
        try:
            self._link.close()
        finally:
            self._wakes.close()


class Writer:
    """A writer's two parts: the collector, and the stream inbox it reads."""

    def __init__(self, collector: Any, inbox: StreamInbox) -> None:
        self.collector = collector
        self.inbox = inbox
        self._drains = False

    def run(self, stats_every: float = 0.0, drain_senders: float = 0.0) -> None:
        """Write until :meth:`stop`; then commit what was read and acknowledge it.
        With ``drain_senders``, a stop reads on until every rank of the run has
        said bye (at most that long), as a collector does."""
        self._drains = drain_senders > 0
        self.collector.run(stats_every=stats_every, drain_senders=drain_senders)
        if not self.collector.runs.home.commits.dirty:  # the last commit held
            self.inbox.purge_written()

    def stop(self) -> None:
        """Stop reading the stream and finish (from a signal handler too)."""
        if not self._drains:
            self.inbox.pause()
        self.collector.stop()

    def reopen(self) -> None:
        self.collector.reopen()

    def close(self) -> None:
        self.collector.close()  # the inbox, and its link, last


def open_writer(
    urls: list[str],
    run: str,
    log_dir: str,
    prefix: str,
    echo: Any,
    *,
    commit_interval: float,
    settings: StreamSettings = DEFAULT_STREAM,
    files: FileOptions = DEFAULT_FILES,
    name: str = "roxxel-aggregator",
) -> Writer:
    """A collector writing run ``prefix`` in ``log_dir`` from the stream's run ``run``.

    Raises ``OSError`` if another collector holds the run's files.
    """
    log = diagnostics("roxxel.aggregator")
    inbox = StreamInbox(urls, run, settings, log)
    try:
        # Every sender comes through the stream: the per-address and
        # per-connection bounds of a collector's door are the relays' to apply.
        ledger = Ledger(
            max_per_source=MAX_SENDERS, max_per_connection=MAX_SENDERS, follows_stream=True
        )
        home = Run.open(
            log_dir,
            prefix,
            echo,
            ledger,
            Counter(),
            log,
            name=name,
            files=files,
            extra_sinks=[inbox.position],
        )
    except BaseException:
        inbox.close()
        raise
    try:
        collector = Collector(
            inbox.endpoint,
            home.sinks,
            commit_interval=commit_interval,
            name=name,
            home=home,
            router=inbox,  # type: ignore[arg-type] -- a router's interface over a stream
            files=files,
        )
    except BaseException:
        try:
            home.close()
        finally:
            inbox.close()
        raise
    collector.runs.takes = run  # the clients' filename_prefix: the stream's run name
    inbox.start()
    return Writer(collector, inbox)
