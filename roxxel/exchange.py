"""Send a frame until the right reply comes: the one request/reply loop of roxxel.

Used by ``roxxel check`` (a hello, until its ack), :class:`roxxel.query.CollectorQuery`
(a query, until its answer), the sender's goodbye (a bye, until its ack) and
the watcher's death notice (a hello, a batch, a bye, each until its ack).

:func:`exchange` uses the transport for the length of the call, from the
calling thread only: the caller must own the transport (ZeroMQ sockets are
not thread-safe) and nothing else may receive on it meanwhile. Replies are
looked at in the order they arrive; the first one ``accept`` takes is
returned, and the ones before it (stale answers to earlier frames, frames
that do not decode) are dropped.

Only a frame whose resending is harmless may be exchanged: a reply that is
slow, or lost with a connection, makes the frame go again. The collector
(``aggregator/``) handles each kind that way: a hello's second copy finds
its sender known and changes nothing; a batch it has applied is a duplicate,
acknowledged again and not written; a query is answered again (answers change
nothing); a repeated bye finds the sender forgotten already and is only
acknowledged again. (A hello refused because the collector is full is
counted once per copy.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from . import codec

__all__ = ["RESEND_EVERY", "Channel", "exchange"]

RESEND_EVERY = 1.0  # seconds between sends of a frame that got no accepted reply
# While the transport refuses the frame (ZeroMQ takes it only once a
# connection is up), it is offered again this often.
_RETRY_REFUSED = 0.05


class Channel(Protocol):
    """What :func:`exchange` needs of a transport (:class:`roxxel.transport.DealerTransport`)."""

    def send(self, frame: bytes) -> bool: ...

    def receive(self, timeout: float) -> list[bytes]: ...


def exchange(
    transport: Channel,
    frame: bytes,
    accept: Callable[[codec.Frame], bool],
    timeout: float,
    resend_every: float = RESEND_EVERY,
    connect_within: float | None = None,
) -> codec.Frame | None:
    """Send ``frame`` until a reply that ``accept`` takes comes, and return that reply.

    The frame is offered until the transport takes it (a
    :class:`~roxxel.transport.DealerTransport` takes one only over a
    connection), then sent again every ``resend_every`` seconds while no
    accepted reply came; replies that do not decode or that ``accept`` refuses
    are skipped. ``None`` when ``timeout`` seconds pass first (a ``timeout`` of
    0 or less sends nothing), or when the transport has taken no copy within
    ``connect_within`` seconds (default: the whole ``timeout``; 0: one offer).
    """
    now = time.monotonic()
    deadline = now + timeout
    give_up = deadline if connect_within is None else now + connect_within
    send_at = now  # when the frame is (re)sent next
    taken = False
    while (left := deadline - now) > 0:
        if now >= send_at:
            if transport.send(frame):
                taken = True
                send_at = now + resend_every
            elif not taken and now >= give_up:
                return None
            else:
                send_at = now + _RETRY_REFUSED
        # Wakes up at the next send, or at once when a reply arrives.
        for data in transport.receive(min(left, max(0.0, send_at - now))):
            try:
                reply = codec.decode(data)
            except codec.CodecError:
                continue
            if accept(reply):
                return reply
        now = time.monotonic()
    return None
