"""The collector's door when CURVE is on: who may connect, and who was refused.

:class:`CurveGate` makes the collector's ROUTER a CURVE server and answers
ZeroMQ's authentication requests (ZAP, RFC 27) itself, on the collector's
thread: a client whose public key is in the allowed directory is let in,
with that key as the connection's ``User-Id`` (the collector binds each
sender id to it); any other key is refused. A client without CURVE fails
ZeroMQ's handshake before any request; the socket monitor reports that.
Every refusal is counted; :meth:`CurveGate.handle` returns the refusals to
report, each naming the peer's address.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import NamedTuple

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from roxxel.security import ServerKeys

__all__ = ["CurveGate", "Refusal"]

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class Refusal(NamedTuple):
    kind: str  # "handshake" (no CURVE: a plaintext client) or "unknown_key"
    address: str  # the peer, as well as it could be read
    key: str  # the offered public key (Z85), "" without one


class CurveGate:
    """A CURVE server ROUTER's authenticator and handshake watcher (one thread)."""

    def __init__(self, context: zmq.Context, router: zmq.Socket, keys: ServerKeys):
        self.keys = keys
        router.curve_server = True
        router.curve_publickey = keys.public
        router.curve_secretkey = keys.secret
        # The ZAP handler of this context: one per context, so a collector
        # with CURVE has a context of its own.
        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(_ZAP_ENDPOINT)
        self._monitor = router.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
        )
        self._router = router
        self._peers: dict[int, str] = {}  # accepted connection's fd -> peer address
        self._failed_handshakes = 0

    @property
    def sockets(self) -> tuple[zmq.Socket, zmq.Socket]:
        """To poll with the ROUTER: :meth:`handle` when either is readable."""
        return self._zap, self._monitor

    def allows(self, user_id: str | None) -> bool:
        """Whether a message's ``User-Id`` (its connection's key) is still allowed:
        a key removed since the connection was made is not."""
        return user_id is not None and user_id.encode() in self.keys.allowed

    def reload(self) -> None:
        """Read the allowed clients' keys again (SIGHUP); a broken directory keeps the old."""
        self.keys = self.keys.reloaded()

    def handle(self) -> list[Refusal]:
        """Answer waiting authentication requests, read handshake events; the refusals."""
        refusals: list[Refusal] = []
        while self._zap.poll(0):
            refusal = self._authenticate(self._zap.recv_multipart())
            if refusal is not None:
                refusals.append(refusal)
        while self._monitor.poll(0):
            refusal = self._event(recv_monitor_message(self._monitor))
            if refusal is not None:
                refusals.append(refusal)
        return refusals

    def _authenticate(self, request: list[bytes]) -> Refusal | None:
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6:
            return None  # not from libzmq; nothing to answer
        version, request_id, _, address, _, mechanism, *credentials = request
        key = b""
        if mechanism == b"CURVE" and credentials and len(credentials[0]) == 32:
            key = z85.encode(credentials[0])
        allowed = key in self.keys.allowed
        self._zap.send_multipart(
            [
                version,
                request_id,
                b"200" if allowed else b"400",
                b"OK" if allowed else b"unknown key",
                key if allowed else b"",  # the connection's User-Id
                b"",
            ]
        )
        if allowed:
            return None
        return Refusal("unknown_key", address.decode(errors="replace"), key.decode())

    def _event(self, event: dict) -> Refusal | None:
        # libzmq names the listening address, not the peer, in these events;
        # the peer is read from the accepted socket while it is still open.
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_ACCEPTED:
            self._peers[value] = _peer_of(value)
        elif kind & _HANDSHAKE_FAILED:
            # The failing connection's DISCONNECTED follows (same I/O thread).
            self._failed_handshakes += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            address = self._peers.pop(value, "an address that could not be read")
            if self._failed_handshakes:
                self._failed_handshakes -= 1
                return Refusal("handshake", address, "")
        return None

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._router.disable_monitor()
        self._monitor.close(linger=0)
        self._zap.close(linger=0)


def _peer_of(fd: int) -> str:
    try:
        with socket.socket(fileno=os.dup(fd)) as peer:
            address = peer.getpeername()
    except OSError:
        return "an address that could not be read"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return "a local (ipc://) peer"
