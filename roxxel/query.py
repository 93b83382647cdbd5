"""Asking a collector about its run: what ``roxxel status`` and ``roxxel tail`` use.

A tool sends a ``query`` frame (``{"what": "status"}``, or ``{"what":
"tail", "offset": N}``) over a DEALER like any client's, CURVE keys
included, and waits for the ``answer`` with the same seq (sending the query
again while none came: :func:`roxxel.exchange.exchange`). One thread at a
time may ask: a query owns its connection for the length of :meth:`ask`.
A failed handshake (a CURVE collector and no keys, a key it refuses) ends
:meth:`ask` at once with :class:`HandshakeError`, not at its timeout.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from . import codec
from .exchange import exchange
from .security import ClientKeys
from .transport import DealerTransport

__all__ = ["CollectorQuery", "HandshakeError", "QueryError", "QUIET", "raise_if_refused"]


class QueryError(RuntimeError):
    """The collector answered, with an error (e.g. it does not show its log to this tool)."""


class HandshakeError(ConnectionError):
    """The collector's handshake failed (CURVE keys missing, refused or wrong): no
    answer can come over this connection; the message says why."""


# The transport would also warn of the failed handshake on stderr: the
# HandshakeError says it once, where the tool decides how.
QUIET = logging.Logger("roxxel.query")
QUIET.addHandler(logging.NullHandler())


def raise_if_refused(transport: DealerTransport) -> None:
    """Raise :class:`HandshakeError` if ``transport``'s handshake failed: libzmq
    would retry it in silence, and a tool wait out its timeout."""
    why = transport.handshake_failure
    if why is not None:
        raise HandshakeError(f"the collector at {transport.endpoint} {why}")


class CollectorQuery:
    """Questions to the collector at ``endpoint``, over one connection."""

    def __init__(self, endpoint: str, keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self._id = secrets.token_bytes(codec.SENDER_ID_LEN)
        self._transport = DealerTransport(endpoint, self._id, keys=keys, log=QUIET)
        self._seq = 0

    def ask(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The collector's answer to ``body``; ``TimeoutError`` without one in ``timeout`` s,
        :class:`HandshakeError` as soon as the connection's handshake failed."""
        self._seq += 1
        seq = self._seq
        frame = codec.encode(codec.Query(self._id, seq, body))
        # A late answer to an earlier query (or a second answer to a resent
        # one) has another seq: skipped.
        reply = exchange(
            _Watched(self._transport),
            frame,
            lambda reply: isinstance(reply, codec.Answer) and reply.seq == seq,
            timeout,
        )
        if not isinstance(reply, codec.Answer):  # None: no answer in time
            raise TimeoutError(f"no answer from a collector at {self.endpoint} within {timeout} s")
        if "error" in reply.body:
            raise QueryError(str(reply.body["error"]))
        return reply.body

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> CollectorQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watched:
    """The channel :meth:`CollectorQuery.ask` exchanges over: the transport, given up
    as soon as its handshake failed (libzmq would retry it, exchange() wait it out)."""

    def __init__(self, transport: DealerTransport) -> None:
        self._transport = transport

    def send(self, frame: bytes) -> bool:
        self._failed()
        return self._transport.send(frame)

    def receive(self, timeout: float) -> list[bytes]:
        frames = self._transport.receive(timeout)
        self._failed()
        return frames

    def _failed(self) -> None:
        raise_if_refused(self._transport)
