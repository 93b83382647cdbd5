"""``roxxel``: command-line tools for a roxxel run.

``roxxel check ENDPOINT`` introduces itself to a collector and reports
whether (and how fast) it answered: the first thing to try when ranks'
lines do not arrive.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from collections.abc import Sequence

from . import __version__, codec
from .transport import DealerTransport

__all__ = ["main"]


def _check(endpoint: str, timeout: float) -> int:
    sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
    transport = DealerTransport(endpoint, sender_id)
    hello = codec.Hello(sender_id, socket.gethostname(), 0, os.getpid(), 1, "roxxel-check")
    try:
        started = time.monotonic()
        deadline = started + timeout
        transport.send(codec.encode(hello))
        while time.monotonic() < deadline:
            for data in transport.receive(deadline - time.monotonic()):
                try:
                    reply = codec.decode(data)
                except codec.CodecError:
                    continue
                if isinstance(reply, codec.Ack) and reply.sender_id == sender_id:
                    transport.send(codec.encode(codec.Bye(sender_id, 0)))
                    elapsed = (time.monotonic() - started) * 1000
                    print(f"collector at {endpoint} answered in {elapsed:.1f} ms")
                    return 0
        print(f"no answer from a collector at {endpoint} within {timeout} s", file=sys.stderr)
        return 1
    finally:
        transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roxxel", description="Tools for roxxel runs.")
    parser.add_argument("--version", action="version", version=f"roxxel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check that a collector answers")
    check.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    args = parser.parse_args(argv)
    return _check(args.endpoint, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
