"""The collector's one socket: a ROUTER, its CURVE door, and a wake-up pipe.

This is the only module of ``aggregator`` that touches ZeroMQ sockets
(besides :mod:`aggregator.curve`, the door it owns). Used from the
collector's thread alone, except :meth:`Router.wake`, which any thread or a
signal handler may call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import math
import os
from dataclasses import dataclass

import zmq

from roxxel import codec
from roxxel.security import ServerKeys
from roxxel.wakepipe import WakePipe

from .curve import CurveGate, Refusal

__all__ = ["Router", "Ready", "Received", "MAX_MESSAGE_PARTS"]

# Messages queued per connection. A client sends at most codec.MESSAGE_BYTES
# a message and waits for acks past its window: only a client that ignores
# both is held back by it (TCP then pushes back on it, nothing is lost).
_RCVHWM = 256
# What one message may hold (a client sends at most its window of batches
# and codec.MESSAGE_BYTES, or one frame): a larger one is dropped unread.
# ZeroMQ holds a whole message before it can be looked at, so this bounds
# what stays and is copied, not what a plaintext peer can make ZeroMQ hold
# for a moment: untrusted networks need CURVE.
MAX_MESSAGE_PARTS = 1 + 1024 + 64
# After a message this large is freed, the C heap is handed back to the system.
_TRIM_AFTER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """One message: the peer's routing id, its frames, the connection's CURVE key
    and network address; ``refused`` says why the frames were not read (dropped)."""

    peer: bytes
    frames: list[bytes]
    key: str | None
    source: str
    refused: str | None = None


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
        _check_port(bind)
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
        self._wakes = WakePipe()  # wake() ends a poll at once
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wakes.fd, zmq.POLLIN)
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
        if self._wakes.fd in ready:
            self._wakes.clear()
        refusals: list[Refusal] = []
        if self.gate is not None and any(g in ready for g in self.gate.sockets):
            refusals = self.gate.handle()
        return Ready(self._socket in ready, refusals)

    def wait_for_wake(self, timeout: float) -> None:
        """Sleep until :meth:`wake` or ``timeout``, reading nothing from the socket."""
        self._wakes.wait(timeout)

    def wake(self) -> None:
        self._wakes.wake()

    def receive(self) -> Received:
        """A waiting message; ``zmq.Again`` if none waits."""
        peer, *frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        # Set on every message of the connection (the key by our
        # authenticator); the routing-id frame is the ROUTER's own and
        # carries no properties.
        key = _property(frames, "User-Id") if self.gate is not None else None
        source = _property(frames, "Peer-Address") or ""
        size = sum(len(frame) for frame in frames)
        if len(frames) > MAX_MESSAGE_PARTS or size > codec.MAX_MESSAGE_BYTES:
            why = f"a message of {len(frames):,} frames and {size:,} bytes"
            del frames  # unread: freed now, not copied
            if size > _TRIM_AFTER_BYTES:
                _trim_heap()
            return Received(peer.bytes, [], key, source, refused=why)
        return Received(peer.bytes, [frame.bytes for frame in frames], key, source)

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
        self._wakes.close()
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


def _property(frames: list[zmq.Frame], name: str) -> str | None:
    """A connection's property as its first frame carries it (None: that
    transport has none, e.g. no peer address over inproc://)."""
    if not frames:
        return None
    try:
        return frames[0].get(name)
    except zmq.ZMQError:
        return None


def _trim_heap() -> None:
    """Give freed C heap back to the system (glibc keeps it otherwise: a
    peer's one large message would stay in the daemon's RSS)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 -- glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _load_libc()


def _check_port(bind: str) -> None:
    """Refuse a TCP port past 65535: ZeroMQ would bind it modulo 65536, where
    no client (which refuses such a port) would look."""
    scheme, _, address = bind.partition("://")
    port = address.rpartition(":")[2]
    if scheme == "tcp" and port.isascii() and port.isdigit() and int(port) > 65535:
        raise OSError(f"cannot bind {bind}: the port {port} is out of range (0 to 65535)")
