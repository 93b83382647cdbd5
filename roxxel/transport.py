"""The client's one ZeroMQ socket: a DEALER connected to a collector's ROUTER.

This is the only module of ``roxxel`` that touches sockets. It is used from
the sender thread alone (ZeroMQ sockets are not thread-safe).

:func:`check_endpoint` is the one judge of an endpoint to connect to, used by
the Logger's route, by :class:`DealerTransport` and by the ``roxxel``
command: ZeroMQ takes ``localhost:5555`` or ``tcp://host:99999`` only to
raise a bare ``Invalid argument``, and resolves a host name only once it
tries to connect -- a name that does not exist is then retried in silence
for the whole run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from .diagnostics import diagnostics
from .security import ClientKeys
from .wakepipe import WakePipe

__all__ = ["Transport", "DealerTransport", "EndpointError", "check_endpoint", "is_host_port"]

# How long a host name may take to resolve before it is let through: a
# resolver that is slow now is not proof that the name does not exist (the
# client then says that no collector answers, see roxxel.client).
RESOLVE_TIMEOUT = 5.0
_SCHEMES = ("tcp", "ipc", "inproc")
# host:port without a scheme (a name, an IPv4 address or a bracketed IPv6 one).
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d+")


class EndpointError(ValueError):
    """An endpoint that cannot be connected to; the message is one line for the user."""


def check_endpoint(endpoint: object, what: str = "", *, resolve: bool = True) -> str:
    """``endpoint`` when a client can connect to it, else :class:`EndpointError`.

    ``what`` names where the endpoint came from (``"aggregator="``,
    ``"ROXXEL_AGGREGATOR="``) and starts the message. ``tcp://HOST:PORT``
    needs a port from 1 to 65535 and, with ``resolve``, a HOST that resolves
    (at most :data:`RESOLVE_TIMEOUT` seconds are waited for the resolver);
    ``ipc://PATH`` and ``inproc://NAME`` need a non-empty name. Endpoints
    to bind (``tcp://0.0.0.0:0``, ``tcp://*:5555``) are not judged here.
    """
    said = f"{what}{endpoint!r}"
    if not isinstance(endpoint, str):
        raise EndpointError(f"{said} is not a ZeroMQ endpoint (a str such as tcp://HOST:PORT)")
    scheme, sep, address = endpoint.partition("://")
    if not sep:
        if is_host_port(endpoint):
            raise EndpointError(f"{said} is not a ZeroMQ endpoint: did you mean tcp://{endpoint}?")
        if os.path.isdir(endpoint):
            raise EndpointError(
                f"{said} is a directory, not a collector's endpoint (tcp://HOST:PORT, "
                "ipc://PATH or inproc://NAME)"
            )
        raise EndpointError(
            f"{said} is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
        )
    if scheme not in _SCHEMES:
        raise EndpointError(
            f"{said}: roxxel connects over tcp://, ipc:// or inproc://, not {scheme}://"
        )
    if scheme != "tcp":
        if not address:
            raise EndpointError(f"{said} names no {'path' if scheme == 'ipc' else 'name'}")
        return endpoint
    # ZeroMQ's "tcp://SOURCE;HOST:PORT" names the local address to connect from.
    host, sep, port = address.rpartition(";")[2].rpartition(":")
    if not sep or not host:
        raise EndpointError(f"{said} is not tcp://HOST:PORT")
    if not (port.isascii() and port.isdigit()):
        raise EndpointError(f"{said}: the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise EndpointError(f"{said}: the port {port} is out of range (1 to 65535)")
    if host == "*":
        raise EndpointError(f"{said}: '*' is for binding; a client connects to a host")
    if resolve:
        _resolve(said, host.removeprefix("[").removesuffix("]"), int(port))
    return endpoint


def is_host_port(text: str) -> bool:
    """Whether ``text`` is ``HOST:PORT`` without a scheme (meant as ``tcp://HOST:PORT``)."""
    return _HOST_PORT.fullmatch(text) is not None


def _resolve(said: str, host: str, port: int) -> None:
    """Raise when ``host`` certainly does not resolve; let a slow resolver through."""
    failure: list[socket.gaierror] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            failure.append(exc)
        except (OSError, UnicodeError):
            pass  # not the resolver's verdict: ZeroMQ's own connect judges it

    # getaddrinfo has no timeout of its own: a thread bounds the wait (and is
    # left to finish on its own if the resolver hangs).
    thread = threading.Thread(target=look_up, name="roxxel-resolve", daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT)
    # EAI_AGAIN is "try again later" (no DNS server reachable now): ZeroMQ
    # does try again, so that is not a reason to refuse the endpoint.
    if failure and failure[0].errno != socket.EAI_AGAIN:
        raise EndpointError(f"{said}: the host {host!r} does not resolve ({failure[0].strerror})")


_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class Transport(Protocol):
    """What a :class:`~roxxel.client.Sender` sends through (a DEALER, or one
    that finds its endpoint first: :class:`roxxel.discovery.DiscoveringTransport`)."""

    endpoint: str
    connects: int

    def send(self, frame: bytes) -> bool: ...

    def send_many(self, frames: list[bytes]) -> bool: ...

    def receive(self, timeout: float, wake: WakePipe | None = None) -> list[bytes]: ...

    def close(self) -> None: ...


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
        # Only its form here: resolving is for the entry points (Logger(), the
        # command), once, and a forked child's new transport need not wait for it.
        self.endpoint = check_endpoint(endpoint, "collector endpoint ", resolve=False)
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
        self._curve = keys is not None
        # Why the collector's handshake failed, once one did: no reply can come
        # over this socket until keys change, which a one-shot tool can act on.
        self.handshake_failure: str | None = None
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise EndpointError(
                f"cannot connect to collector endpoint {endpoint!r}: {exc}"
            ) from None
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._wake_fds: set[int] = set()

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

    def receive(self, timeout: float, wake: WakePipe | None = None) -> list[bytes]:
        """Every frame that arrives within ``timeout`` seconds (at least one
        wait), or none once ``wake`` is woken (its wake-ups taken in here)."""
        frames: list[bytes] = []
        if wake is not None and wake.fd not in self._wake_fds:
            self._wake_fds.add(wake.fd)
            self._poller.register(wake.fd, zmq.POLLIN)
        elif wake is None and self._wake_fds:
            # A wait that does not take the wake-ups in (a bye's) must not
            # return at once for one left in the pipe, again and again.
            for fd in self._wake_fds:
                self._poller.unregister(fd)
            self._wake_fds.clear()
        # Rounded up: a 0 ms poll for a wait under 1 ms would spin.
        ready = dict(self._poller.poll(max(0, math.ceil(timeout * 1000))))
        if wake is not None and wake.fd in ready:
            wake.clear()
        if self._monitor in ready:
            while self._monitor.poll(0):
                message = recv_monitor_message(self._monitor)
                event = message["event"]
                if event == zmq.EVENT_CONNECTED:
                    self.connects += 1
                elif event & _HANDSHAKE_FAILED:
                    self._refused(event, message["value"])
        if self._socket not in ready:
            return frames
        while True:
            try:
                frames.append(self._socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return frames

    def _refused(self, event: int, value: int) -> None:
        """Said once: the records stay here (and end in the undelivered file)."""
        if self.handshake_failure is not None:
            return
        # A plaintext client fails a handshake only with a CURVE collector:
        # libzmq says "mechanism mismatch", or no detail when the collector
        # closed first. With keys, a collector without CURVE and a wrong public
        # key of the collector's mostly give no detail: those stay one guess.
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = (
                "refused this client's CURVE key (is its NAME.key in the collector's "
                "--curve-clients directory?)"
            )
        elif not self._curve:
            why = (
                "could not complete a handshake: it needs CURVE keys and this client has "
                "none (the collector's public NAME.key and this client's NAME.key_secret)"
            )
        elif value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            why = "could not complete a handshake: the collector does not use CURVE keys"
        else:
            why = (
                "could not complete a handshake (only one side uses CURVE keys, or this "
                "client has another collector's public key?)"
            )
        self.handshake_failure = why
        self._diag.warning(
            "roxxel: the collector at %s %s; records stay in this process", self.endpoint, why
        )

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
