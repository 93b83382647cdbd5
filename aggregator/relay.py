"""The relay: a collector's door, a JetStream stream behind it instead of files.

``roxxel-aggregator --bind EP --jetstream URLS --run NAME``. Clients connect
exactly as to a collector (the same frames, CURVE, limits: the
:class:`~aggregator.router.Router` and :class:`~aggregator.ledger.Ledger`
of one). What the ledger applies is neither read (a batch's body is the
writer's to read, and to quarantine if it cannot be applied) nor written: it
waits in the sender's :class:`Outbox` and is published as a unit (:mod:`aggregator.stream_wire`)
on the sender's subject; the client is acknowledged only once JetStream
acknowledged the unit, i.e. a quorum of the stream's replicas stored it.

A sender's units go one at a time, in seq order: a unit is published again
(same id: JetStream's duplicate window recognises it) until it is stored,
and the next one waits for that, so the stream never holds a sender's batch
before an earlier one. While JetStream does not answer, the relay holds what
it took, up to ``max_held_bytes``; past that it takes no new batch (its
clients keep them, as with a dead collector) -- and it says so, once, and
once more when JetStream answers again. It keeps no files: a relay killed
and started again learns each sender anew from its hello, and the client
resends what was not acknowledged.

Threading: one thread drives :meth:`Relay.serve_once`; :meth:`Relay.stop`
may be called from a signal handler.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from roxxel import codec
from roxxel.diagnostics import diagnostics
from roxxel.security import ServerKeys

from .jetstream import DEFAULT_STREAM, JetStreamLink, StreamSettings
from .ledger import Apply, Asked, Closed, Introduced, Ledger, Resent
from .reports import Reports
from .router import Router
from .stream_wire import (
    RELAY_HEADER,
    next_unit,
    pack_parts,
    pack_unit,
    part_id,
    sender_subject,
    unit_id,
)

__all__ = ["Relay", "Outbox", "MAX_HELD_BYTES", "PUBLISH_TIMEOUT"]

# What a relay holds for JetStream at most (taken from clients, not yet stored).
MAX_HELD_BYTES = 256 * 2**20
# How long a publish waits for JetStream's acknowledgement before it is tried
# again, and the longest pause between tries.
PUBLISH_TIMEOUT = 5.0
_MAX_RETRY_PAUSE = 2.0
_MAX_MESSAGES_PER_CYCLE = 256
# Problems of peers remembered (each said once); past it, no more are said.
_REPORTED_KEPT = 4096
# What a unit's headers may take of the servers' max_payload.
_HEADERS_ROOM = 512
# The ledger's applied seqs are this relay's only durable ones: its commits
# only keep the ledger's change set small.
_LEDGER_COMMIT_EVERY = 1.0


@dataclass
class _Flight:
    """A unit on its way: published, or waiting to be published again."""

    data: bytes
    headers: dict[str, str]
    upto: int | None  # the seq its last frame carries (None: a part, not the last)
    future: Any = None
    tries: int = 0
    retry_at: float = 0.0


@dataclass
class Outbox:
    """One sender: its latest hello, what is taken and not yet stored, and who waits."""

    hello: codec.Hello
    stored: int  # every batch up to this seq is in the stream
    waiting: list[bytes] = field(default_factory=list)
    parts: list[_Flight] = field(default_factory=list)  # of a large frame, in order
    flight: _Flight | None = None
    owed: set[bytes] = field(default_factory=set)  # peers owed an ack
    progressed: bool = False  # a unit was stored since the last acks
    bye: tuple[bytes, codec.Bye] | None = None

    def settled(self) -> bool:
        return not self.waiting and not self.parts and self.flight is None


class Relay:
    """Clients in on ``bind``, units out to the JetStream servers ``urls`` for ``run``."""

    def __init__(
        self,
        bind: str,
        urls: list[str],
        run: str,
        *,
        curve: ServerKeys | None = None,
        settings: StreamSettings = DEFAULT_STREAM,
        max_held_bytes: int = MAX_HELD_BYTES,
        publish_timeout: float = PUBLISH_TIMEOUT,
        name: str = "roxxel-relay",
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.run_name = run
        self._diag = log or diagnostics("roxxel.aggregator")
        self._router = Router(bind, curve=curve)
        self.endpoint = self._router.endpoint
        self._ledger = Ledger(reads_bodies=False)  # the writer reads them
        self._outboxes: dict[bytes, Outbox] = {}
        # The senders with something taken, on its way or owed: the only ones
        # a cycle looks at (a relay may know thousands, most of them idle).
        self._active: set[bytes] = set()
        self._held = 0
        self._max_held = max_held_bytes
        self._timeout = publish_timeout
        self._relay_id = f"{socket.gethostname()}:{os.getpid()}"
        self.stats: Counter[str] = Counter()
        self._stopping = False
        self._down_since: float | None = None  # JetStream not storing since then
        self._reports = Reports(limit=_REPORTED_KEPT)
        self._next_ledger_commit = 0.0
        try:
            self._link = JetStreamLink(
                urls, f"{name} {self._relay_id}", self._router.wake, settings, self._problem
            )
        except BaseException:
            self._router.close()
            raise

    # -- control -------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self._router.wake()

    def run(self, drain_seconds: float = 10.0, poll: float = 0.1) -> None:
        """Serve until :meth:`stop`; then publish what is held, at most
        ``drain_seconds`` (what is not stored by then, its clients still hold)."""
        while not self._stopping:
            self.serve_once(poll)
        deadline = time.monotonic() + drain_seconds
        while self._held and time.monotonic() < deadline:
            self.serve_once(min(poll, max(0.0, deadline - time.monotonic())), take=False)

    def close(self) -> None:
        try:
            self._link.close()
        finally:
            self._router.close()

    # -- the loop ------------------------------------------------------------------

    def serve_once(self, timeout: float, take: bool = True) -> int:
        """Wait up to ``timeout`` s; take what arrived, settle and start
        publishes, send the acks due. Returns the frames handled."""
        now = time.monotonic()
        retry = [o.flight.retry_at for o in self._busy() if _waits_retry(o)]
        if retry:
            timeout = min(timeout, max(0.0, min(retry) - now))
        if not take:  # draining: only JetStream's answers are waited for
            self._router.wait_for_wake(timeout)
        ready = self._router.poll(0 if not take else timeout)
        for refusal in ready.refusals:
            self.stats["refused_connections"] += 1
            self._report(
                refusal.address.encode(),
                refusal.kind,
                f"refused a connection from {refusal.address} ({refusal.kind})",
            )
        handled = 0
        while take and ready.messages and handled < _MAX_MESSAGES_PER_CYCLE:
            try:
                message = self._router.receive()
            except zmq.Again:
                break
            handled += max(1, len(message.frames))
            if message.refused is not None or not self._router.allows(message.key):
                self.stats["bad_frames"] += 1
                continue
            for data in message.frames:
                self._dispatch(message.peer, data, message.key, message.source)
        self._settle()
        self._publish()
        self._answer_settled()
        if time.monotonic() >= self._next_ledger_commit:
            self._ledger.commit()
            self._forget_idle()
            self._next_ledger_commit = time.monotonic() + _LEDGER_COMMIT_EVERY
        return handled

    def _dispatch(self, peer: bytes, data: bytes, key: str | None, source: str) -> None:
        kind = _kind(data)
        if kind == "batch" and self._held >= self._max_held:
            # Not taken: the client keeps it and sends it again.
            self.stats["not_taken"] += 1
            return
        if kind == "hello" and self._refused(peer, data):
            return
        event = self._ledger.receive(data, key, source, peer)
        if isinstance(event, Apply):
            outbox = self._outboxes[event.batch.sender_id]
            self._active.add(event.batch.sender_id)
            outbox.waiting.append(data)
            outbox.owed.add(peer)
            self._held += len(data)
            self.stats["batches"] += 1
        elif isinstance(event, Resent):
            self.stats["duplicate" if event.duplicate else "gap"] += 1
            outbox = self._outboxes.get(event.sender_id)
            if outbox is not None:
                outbox.owed.add(peer)
                self._active.add(event.sender_id)
        elif isinstance(event, Introduced):
            hello = event.hello
            outbox = self._outboxes.get(hello.sender_id)
            if outbox is None:
                outbox = Outbox(hello, event.state.committed)
                self._outboxes[hello.sender_id] = outbox
            else:  # said again (a reconnect): until its first unit is stored, it still starts
                outbox.hello = dataclasses.replace(hello, starts=outbox.hello.starts)
            # The hello is answered at once: what is stored of it (nothing new).
            self._send(peer, codec.Ack(hello.sender_id, outbox.stored))
        elif isinstance(event, Closed):
            outbox = self._outboxes.get(event.bye.sender_id)
            if outbox is None:
                self._send(peer, codec.Ack(event.bye.sender_id, event.bye.seq))
            else:
                outbox.waiting.append(data)
                outbox.bye = (peer, event.bye)
                self._active.add(event.bye.sender_id)
                self._held += len(data)
        elif isinstance(event, Asked):
            self._send(peer, self._status_answer(event.query))
        else:
            self.stats["bad_frames"] += 1
            what = type(event).__name__.lower()
            problem = getattr(event, "problem", what)
            self._report(peer, what, f"frame from peer {peer.hex()} not taken: {problem}")

    def _settle(self) -> None:
        """Take in JetStream's answers to the units published."""
        now = time.monotonic()
        for outbox in self._busy():
            flight = outbox.flight
            if flight is None or flight.future is None or not flight.future.done():
                continue
            flight.future, exc = None, flight.future.exception()
            if exc is None:
                outbox.flight = None
                if flight.upto is not None:
                    outbox.stored, outbox.progressed = flight.upto, True
                self._held -= len(flight.data)
                self.stats["units"] += 1
                if outbox.hello.starts:  # said: a later unit's hello no longer starts the run
                    outbox.hello = dataclasses.replace(outbox.hello, starts=False)
                if self._down_since is not None:
                    self._back(now)
                continue
            flight.tries += 1
            flight.retry_at = now + min(_MAX_RETRY_PAUSE, 0.1 * 2**flight.tries)
            self.stats["publish_failures"] += 1
            if self._down_since is None:
                self._down_since = now
                self._diag.warning(
                    "%s: JetStream (%s) does not store units: %s; holding what clients sent "
                    "(up to %d MiB, then taking no more: clients keep their records) and "
                    "acknowledging nothing until it does",
                    self.name,
                    ",".join(self._link.urls),
                    str(exc) or type(exc).__name__,
                    self._max_held // 2**20,
                )

    def _publish(self) -> None:
        """Start the next unit of every sender that has none on its way, and the
        units whose retry is due."""
        if not self._link.stream_ready:
            return  # not connected yet: the servers' max_payload is not known
        now = time.monotonic()
        for sender_id in self._active:
            outbox = self._outboxes[sender_id]
            flight = outbox.flight
            if flight is None and (outbox.parts or outbox.waiting):
                flight = outbox.flight = self._next_flight(sender_id, outbox)
            elif flight is None or flight.future is not None or flight.retry_at > now:
                continue
            subject = sender_subject(self.run_name, sender_id)
            flight.future = self._link.publish(subject, flight.data, flight.headers, self._timeout)

    def _next_flight(self, sender_id: bytes, outbox: Outbox) -> _Flight:
        """The sender's next unit: the next part of a large frame, or its next frames."""
        if not outbox.parts:
            limit = self._link.max_payload
            unit = next_unit(outbox.waiting, limit)
            del outbox.waiting[: len(unit)]
            data = pack_unit(outbox.hello, unit)
            upto = codec.decode_envelope(unit[-1]).seq
            if len(data) + _HEADERS_ROOM <= limit:
                self._held += len(data) - sum(map(len, unit))
                return _Flight(data, self._headers(unit_id(sender_id, unit)), upto)
            # One frame larger than a message may be: in parts, the last one stores it.
            (frame,) = unit
            parts = pack_parts(outbox.hello, frame, limit - _HEADERS_ROOM)
            outbox.parts = [
                _Flight(
                    part,
                    self._headers(part_id(sender_id, frame, index)),
                    upto if index == len(parts) - 1 else None,
                )
                for index, part in enumerate(parts)
            ]
            self._held += sum(map(len, parts)) - len(frame)
            self.stats["frames_in_parts"] += 1
        return outbox.parts.pop(0)

    def _headers(self, msg_id: str) -> dict[str, str]:
        return {"Nats-Msg-Id": msg_id, RELAY_HEADER: self._relay_id}

    def _answer_settled(self) -> None:
        """Acknowledge what is stored to every peer that waits for a sender: once
        a unit of it was stored, or at once when nothing of it is on its way (a
        duplicate, a gap); a bye once its unit is stored."""
        done, idle = [], []
        for sender_id in self._active:
            outbox = self._outboxes[sender_id]
            settled = outbox.settled()
            if outbox.owed and (outbox.progressed or settled):
                for peer in outbox.owed:
                    self._send(peer, codec.Ack(sender_id, outbox.stored))
                if settled:  # else they wait for the rest too
                    outbox.owed.clear()
            outbox.progressed = False
            if outbox.bye is not None and settled:
                peer, bye = outbox.bye
                self._send(peer, codec.Ack(sender_id, bye.seq))
                done.append(sender_id)
            elif settled and not outbox.owed:
                idle.append(sender_id)
        for sender_id in done:
            del self._outboxes[sender_id]
        self._active.difference_update(done)
        self._active.difference_update(idle)

    def _busy(self) -> list[Outbox]:
        return [self._outboxes[sender_id] for sender_id in self._active]

    def _forget_idle(self) -> None:
        """Outboxes of the senders the ledger forgot (idle long), holding nothing."""
        for sender_id in self._ledger.forget_idle():
            outbox = self._outboxes.get(sender_id)
            if outbox is not None and outbox.settled() and sender_id not in self._active:
                del self._outboxes[sender_id]

    # -- what cannot go --------------------------------------------------------------

    def _refused(self, peer: bytes, data: bytes) -> bool:
        """Refuse (and say why to the client) a hello of another run than this relay's."""
        try:
            hello = codec.decode(data)
        except codec.CodecError:
            return False  # the ledger says what is wrong with it
        if not isinstance(hello, codec.Hello) or hello.prefix == self.run_name:
            return False
        self.stats["refused_runs"] += 1
        why = (
            f"this relay takes run {self.run_name!r} only: use filename_prefix="
            f"{self.run_name!r}, or a relay of your run"
        )
        self._send(peer, codec.Refusal(hello.sender_id, 0, {"reason": why}))
        self._report(peer, "run", f"refused {hello.host[:64]} (pid {hello.pid}): {why}")
        return True

    # -- answers and reports ---------------------------------------------------------

    def _send(self, peer: bytes, frame: Any) -> None:
        self._router.send(peer, frame if isinstance(frame, bytes) else codec.encode(frame))

    def _status_answer(self, query: codec.Query) -> bytes:
        if query.body.get("what") != "status":
            body: dict[str, Any] = {
                "error": f"a relay writes no files: ask the run's writer's log "
                f"({codec.wire_repr(query.body.get('what'))} is for a collector)"
            }
            return codec.encode(codec.Answer(query.sender_id, query.seq, body))
        body = {
            "relay": True,
            "run": self.run_name,
            "endpoint": self.endpoint,
            "pid": os.getpid(),
            "jetstream": ",".join(self._link.urls),
            "connected": self._link.connected,
            "stream_ready": self._link.stream_ready,
            "senders": len(self._ledger.senders),
            "held_bytes": self._held,
            "stats": dict(self.stats),
        }
        return codec.encode(codec.Answer(query.sender_id, query.seq, body))

    def _report(self, who: bytes, what: str, text: str) -> None:
        """A peer's problem, said once per peer and kind (then only counted)."""
        if self._reports.first(who, what):
            self._reports.commit()  # said on stderr: nothing rewinds it
            self._diag.warning("%s: %s (reported once)", self.name, text)

    def _problem(self, text: str) -> None:
        """The link's troubles (from its thread): said as they come, rarely."""
        self._diag.warning("%s: %s", self.name, text)

    def _back(self, now: float) -> None:
        assert self._down_since is not None
        self._diag.warning(
            "%s: JetStream stores units again (after %.1f s); acknowledging",
            self.name,
            now - self._down_since,
        )
        self._down_since = None


def _waits_retry(outbox: Outbox) -> bool:
    return outbox.flight is not None and outbox.flight.future is None


def _kind(data: bytes) -> str | None:
    try:
        return codec.decode_envelope(data).kind
    except codec.CodecError:
        return None
