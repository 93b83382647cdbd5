"""The client's one ZeroMQ socket: a DEALER connected to a collector's ROUTER.

This is the only module of ``roxxel`` that touches sockets. It is used from
the sender thread alone (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import logging
import math

import zmq
from zmq.utils.monitor import recv_monitor_message

from .diagnostics import diagnostics
from .security import ClientKeys

__all__ = ["DealerTransport"]

_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class DealerTransport:
    """Send frames without ever blocking; receive the collector's replies.

    The routing id is the sender id, so that with ``ROUTER_HANDOVER`` on the
    collector an ack reaches this client even after it reconnected.
    :attr:`connects` counts completed connections (from ZeroMQ's socket
    monitor): when it grows past 1, the collector may have restarted. With
    ``keys`` it talks CURVE (encrypted, authenticated by the collector).
    """

    def __init__(
        self,
        endpoint: str,
        sender_id: bytes,
        context: zmq.Context | None = None,
        keys: ClientKeys | None = None,
        log: logging.Logger | None = None,
    ):
        self._diag = log or diagnostics("roxxel.client")
        self.endpoint = endpoint
        self.connects = 0
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.ROUTING_ID, sender_id)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Frames wait in the sender's own bounded buffer, not in ZeroMQ's.
        self._socket.setsockopt(zmq.SNDHWM, 64)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        # Queue only to a connected collector: what ZeroMQ would hold for an
        # absent one is the sender's to keep (and count against its bound).
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        # A collector host that vanished without closing the connection is
        # noticed in seconds, not when TCP gives up, and we reconnect and resend.
        self._socket.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        self._socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if keys is not None:
            keys.apply(self._socket)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_CONNECTED | _HANDSHAKE_FAILED)
        self._told_refusal = False
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"cannot connect to collector endpoint {endpoint!r}: {exc}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def send(self, frame: bytes) -> bool:
        """Queue ``frame`` for sending; ``False`` when ZeroMQ cannot take it now."""
        try:
            self._socket.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.Again:
            return False
        return True

    def send_many(self, frames: list[bytes]) -> bool:
        """Queue ``frames`` as one message (all or none); ``False`` when ZeroMQ cannot now."""
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def receive(self, timeout: float) -> list[bytes]:
        """Every frame that arrives within ``timeout`` seconds (at least one wait)."""
        frames: list[bytes] = []
        # Rounded up: a 0 ms poll for a wait under 1 ms would spin.
        ready = dict(self._poller.poll(max(0, math.ceil(timeout * 1000))))
        if self._monitor in ready:
            while self._monitor.poll(0):
                event = recv_monitor_message(self._monitor)["event"]
                if event == zmq.EVENT_CONNECTED:
                    self.connects += 1
                elif event & _HANDSHAKE_FAILED:
                    self._refused(event)
        if self._socket not in ready:
            return frames
        while True:
            try:
                frames.append(self._socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return frames

    def _refused(self, event: int) -> None:
        """Said once: the records stay here (and end in the undelivered file)."""
        if self._told_refusal:
            return
        self._told_refusal = True
        why = (
            "refused this client's CURVE key (is its NAME.key in the collector's "
            "--curve-clients directory?)"
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            else "could not complete a handshake (only one side uses CURVE keys, or this "
            "client has another collector's public key?)"
        )
        self._diag.warning(
            "roxxel: the collector at %s %s; records stay in this process", self.endpoint, why
        )

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
