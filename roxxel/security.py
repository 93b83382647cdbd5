"""CURVE keys as files, in the format of pyzmq's ``zmq.auth``.

A key pair is two files in one directory: ``NAME.key`` (the public key, to
hand out) and ``NAME.key_secret`` (both keys, readable by its owner only),
which ``zmq.auth.load_certificate`` reads. ``roxxel-aggregator keygen``
writes them for the collector and for each client.
"""

from __future__ import annotations

import os

import zmq
import zmq.auth

__all__ = ["generate_keys"]


def generate_keys(directory: str, name: str) -> tuple[str, str]:
    """Write ``directory/name.key`` and ``directory/name.key_secret`` (mode 0600).

    Raises ``FileExistsError`` rather than replace a key, and ``ValueError``
    for a name that is not a plain file name.
    """
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"a key name is a plain file name, not {name!r}")
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE")
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
