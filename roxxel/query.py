"""Asking a collector about its run: what ``roxxel status`` and ``roxxel tail`` use.

A tool sends a ``query`` frame (``{"what": "status"}``, or ``{"what":
"tail", "offset": N}``) over a DEALER like any client's, CURVE keys
included, and waits for the ``answer`` with the same seq.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from . import codec
from .security import ClientKeys
from .transport import DealerTransport

__all__ = ["CollectorQuery", "QueryError"]


class QueryError(RuntimeError):
    """The collector answered, with an error (e.g. it does not show its log to this tool)."""


class CollectorQuery:
    """Questions to the collector at ``endpoint``, over one connection."""

    def __init__(self, endpoint: str, keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self._id = secrets.token_bytes(codec.SENDER_ID_LEN)
        self._transport = DealerTransport(endpoint, self._id, keys=keys)
        self._seq = 0

    def ask(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The collector's answer to ``body``; ``TimeoutError`` without one in ``timeout`` s."""
        self._seq += 1
        frame = codec.encode(codec.Query(self._id, self._seq, body))
        deadline = time.monotonic() + timeout
        sent = False
        while (left := deadline - time.monotonic()) > 0:
            # Taken only once a connection is up (the transport queues nothing before).
            sent = sent or self._transport.send(frame)
            for data in self._transport.receive(min(0.05, left)):
                try:
                    reply = codec.decode(data)
                except codec.CodecError:
                    continue
                if isinstance(reply, codec.Answer) and reply.seq == self._seq:
                    if "error" in reply.body:
                        raise QueryError(str(reply.body["error"]))
                    return reply.body
        raise TimeoutError(f"no answer from a collector at {self.endpoint} within {timeout} s")

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> CollectorQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
