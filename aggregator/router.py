"""The collector's one socket: a ROUTER, its CURVE door, and a wake-up pipe.

This is the only module of ``aggregator`` that touches ZeroMQ sockets
(besides :mod:`aggregator.curve`, the door it owns). Used from the
collector's thread alone, except :meth:`Router.wake`, which any thread or a
signal handler may call.
"""

from __future__ import annotations

import ipaddress
import math
import os

import zmq

from roxxel import codec
from roxxel.security import ServerKeys

from .curve import CurveGate, Refusal

__all__ = ["Router", "Ready"]

# Messages queued per connection: above what an honest client can have in
# flight (its window, 1,024 batches, each in at most one message), so only a
# client that ignores acknowledgements is held back by it.
_RCVHWM = 4096


class Ready:
    """What a poll found: messages waiting, and connections the CURVE door refused."""

    __slots__ = ("messages", "refusals")

    def __init__(self, messages: bool, refusals: list[Refusal]) -> None:
        self.messages = messages
        self.refusals = refusals


class Router:
    """Bound at ``bind``; with ``curve``, only the clients it lists get in."""

    def __init__(
        self, bind: str, context: zmq.Context | None = None, curve: ServerKeys | None = None
    ) -> None:
        # ZeroMQ asks one authenticator per context: a CURVE collector gets its own.
        self._own_context = context is None and curve is not None
        self._context = context or (zmq.Context() if curve else zmq.Context.instance())
        self._socket = self._context.socket(zmq.ROUTER)
        self.gate = None if curve is None else CurveGate(self._context, self._socket, curve)
        self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._socket.setsockopt(zmq.MAXMSGSIZE, codec.MAX_FRAME_BYTES)
        self._socket.setsockopt(zmq.LINGER, 1000)
        # Per connection: past it ZeroMQ stops reading that peer (TCP pushes
        # back to it). It counts messages, not bytes: each frame is still
        # bounded only by MAXMSGSIZE, so untrusted networks need CURVE.
        self._socket.setsockopt(zmq.RCVHWM, _RCVHWM)
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as exc:
            self._close_sockets(0)
            raise OSError(f"cannot bind {bind}: {exc}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # wake() writes a byte here to end a poll at once; os.write is safe
        # from a signal handler and from any thread, unlike a ZeroMQ socket.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_read, zmq.POLLIN)
        for gate_socket in self.gate.sockets if self.gate else ():
            self._poller.register(gate_socket, zmq.POLLIN)

    @property
    def is_local(self) -> bool:
        """Whether only this host can reach the endpoint (as bound: numeric addresses)."""
        if self.endpoint.startswith(("ipc://", "inproc://")):
            return True
        host = self.endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    def poll(self, timeout: float) -> Ready:
        """Wait up to ``timeout`` s for a message, a wake-up or the CURVE door."""
        # Rounded up: a poll of 0 ms while a commit is due within 1 ms would spin.
        ready = dict(self._poller.poll(math.ceil(timeout * 1000)))
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
        refusals: list[Refusal] = []
        if self.gate is not None and any(g in ready for g in self.gate.sockets):
            refusals = self.gate.handle()
        return Ready(self._socket in ready, refusals)

    def wait_for_wake(self, timeout: float) -> None:
        """Sleep until :meth:`wake` or ``timeout``, reading nothing from the socket."""
        poller = zmq.Poller()
        poller.register(self._wake_read, zmq.POLLIN)
        if poller.poll(math.ceil(timeout * 1000)):
            os.read(self._wake_read, 4096)

    def wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def receive(self) -> tuple[list[bytes], str | None]:
        """A waiting message's frames (the peer's routing id first), and with
        CURVE the key of the connection it came on; ``zmq.Again`` if none waits."""
        if self.gate is None:
            return self._socket.recv_multipart(zmq.NOBLOCK, copy=True), None
        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        # Set by our authenticator on every message of the connection; the
        # routing-id frame is the ROUTER's own and carries no properties.
        key = frames[1].get("User-Id") if len(frames) > 1 else None
        return [frame.bytes for frame in frames], key

    def allows(self, key: str | None) -> bool:
        """Whether a message of a connection with ``key`` may be read (keys revoked
        by a reload are refused on connections already open)."""
        return self.gate is None or self.gate.allows(key)

    def send(self, peer: bytes, frame: bytes) -> bool:
        """Send without blocking; ``False`` if the peer's queue is full."""
        try:
            self._socket.send_multipart([peer, frame], zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        self._close_sockets(1000)
        os.close(self._wake_read)
        os.close(self._wake_write)
        if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
            try:
                os.unlink(self.endpoint[len("ipc://") :])
            except OSError:
                pass  # already gone

    def _close_sockets(self, linger: int) -> None:
        if self.gate is not None:
            self.gate.close()
        self._socket.close(linger=linger)
        if self._own_context:
            self._context.term()
