"""CURVE keys as files, in the format of pyzmq's ``zmq.auth``.

A key pair is two files in one directory: ``NAME.key`` (the public key, to
hand out) and ``NAME.key_secret`` (both keys, readable by its owner only),
which ``zmq.auth.load_certificate`` reads. ``roxxel-aggregator keygen``
writes them for the collector and for each client.

A client needs the collector's public ``.key`` and its own ``.key_secret``
(:func:`client_keys`); a collector needs its ``.key_secret`` and a directory
of the ``.key`` files of the clients it lets in (:func:`server_keys`). Every
loading error names the file and what it should have been.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = [
    "ClientKeys",
    "ServerKeys",
    "ENV_CLIENT_KEY",
    "ENV_CLIENTS",
    "ENV_SERVER_KEY",
    "ENV_SERVER_SECRET",
    "client_keys",
    "generate_keys",
    "server_keys",
]

ENV_SERVER_KEY = "ROXXEL_CURVE_SERVER_KEY"  # the collector's public NAME.key
ENV_CLIENT_KEY = "ROXXEL_CURVE_CLIENT_KEY"  # this client's NAME.key_secret
# For a rank 0 whose Logger runs the collector itself (the daemon has flags).
ENV_SERVER_SECRET = "ROXXEL_CURVE_SERVER_SECRET"
ENV_CLIENTS = "ROXXEL_CURVE_CLIENTS"


def generate_keys(directory: str, name: str) -> tuple[str, str]:
    """Write ``directory/name.key`` and ``directory/name.key_secret`` (mode 0600).

    Raises ``FileExistsError`` rather than replace a key, and ``ValueError``
    for a name that is not a plain file name.
    """
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"a key name is a plain file name, not {name!r}")
    _require_curve()
    public, secret = (
        os.path.join(directory, f"{name}.{suffix}") for suffix in ("key", "key_secret")
    )
    for path in (public, secret):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists; roxxel does not replace a key")
    os.makedirs(directory, exist_ok=True)
    # Created unreadable to others from the start, not made so afterwards.
    old_umask = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    os.chmod(public, 0o644)
    os.chmod(secret, 0o600)
    return public, secret


@dataclass(frozen=True)
class ClientKeys:
    """What a client's DEALER needs to talk to a CURVE collector (keys in Z85)."""

    server_key_file: str
    client_key_file: str
    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, socket: Any) -> None:
        """Make ``socket`` (before it connects) a CURVE client of the collector."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


@dataclass(frozen=True)
class ServerKeys:
    """A collector's key pair and the public keys of the clients it lets in."""

    secret_file: str
    clients_dir: str
    public: bytes
    secret: bytes
    allowed: frozenset[bytes]

    def reloaded(self) -> ServerKeys:
        """The same files read again (clients added or removed since)."""
        return server_keys(self.secret_file, self.clients_dir)


def client_keys(server_key: str | None = None, client_key: str | None = None) -> ClientKeys | None:
    """The keys of a client: the arguments, else the environment, else ``None`` (no CURVE).

    ``server_key`` is the collector's public ``.key``, ``client_key`` this
    client's ``.key_secret``; one without the other is a ``ValueError``.
    """
    server_key = server_key or os.environ.get(ENV_SERVER_KEY) or None
    client_key = client_key or os.environ.get(ENV_CLIENT_KEY) or None
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise ValueError(
            "CURVE needs both the collector's public key (curve_server_key= or "
            f"{ENV_SERVER_KEY}) and this client's secret key (curve_client_key= or "
            f"{ENV_CLIENT_KEY}); only one was given"
        )
    _require_curve()
    server_public, _ = _load(server_key, "the collector's public key file (NAME.key)")
    public, secret = _load_secret(client_key, "this client's secret key file (NAME.key_secret)")
    return ClientKeys(server_key, client_key, server_public, public, secret)


def server_keys(secret_file: str, clients_dir: str) -> ServerKeys:
    """A collector's keys: its ``.key_secret`` and the ``*.key`` files in ``clients_dir``."""
    _require_curve()
    public, secret = _load_secret(secret_file, "the collector's secret key file (NAME.key_secret)")
    if not os.path.isdir(clients_dir):
        raise ValueError(f"{clients_dir}: not a directory of client public keys (NAME.key)")
    allowed = set()
    for name in sorted(os.listdir(clients_dir)):
        if name.endswith(".key"):
            key, _ = _load(os.path.join(clients_dir, name), "a client's public key file")
            allowed.add(key)
    if not allowed:
        raise ValueError(f"{clients_dir} holds no client public key (NAME.key): nobody could log")
    return ServerKeys(secret_file, clients_dir, public, secret, frozenset(allowed))


def _load(path: str, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"{path} is not {what}: no public-key line") from None
    for key in (public, secret):
        if key is not None and not _is_z85_key(key):
            raise ValueError(f"{path} is not {what}: a key is not 40 characters of Z85")
    return public, secret


def _load_secret(path: str, what: str) -> tuple[bytes, bytes]:
    public, secret = _load(path, what)
    if secret is None:
        raise ValueError(f"{path} is not {what}: it holds no secret key")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        # As ssh does: a secret others can read is no longer a secret.
        raise ValueError(f"{path} is readable by other users (mode {mode:04o}); chmod 600 it")
    return public, secret


def _is_z85_key(key: bytes) -> bool:
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, struct.error):
        return False


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE")
