"""Process plumbing every benchmark shares: the environment of the processes it
starts, a port where nothing listens, and progress lines on stderr."""

from __future__ import annotations

import os
import socket
import sys

__all__ = ["roxxel_free_env", "forget_roxxel_env", "free_port", "progress"]


def roxxel_free_env() -> dict[str, str]:
    """This environment without ROXXEL_AGGREGATOR & co.: roxxel starts its own collector."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}


def forget_roxxel_env() -> None:
    """The same, in a worker's own environment."""
    for key in [k for k in os.environ if k.startswith("ROXXEL_")]:
        del os.environ[key]


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def progress(text: str) -> None:
    """``running <text> ...`` on stderr: stdout is kept for the tables."""
    print(f"running {text} ...", file=sys.stderr, flush=True)
