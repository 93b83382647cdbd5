"""``roxxel``: command-line tools for a roxxel run.

``roxxel check ENDPOINT`` introduces itself to a collector and reports
whether (and how fast) it answered: the first thing to try when ranks'
lines do not arrive.

``roxxel replay FILE --aggregator ENDPOINT`` delivers the records a closing
Logger could not (its ``*_undelivered_rank{N}.jsonl``), exactly once, and
renames the file to ``FILE.replayed`` when every record is acknowledged.
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
from .security import ENV_CLIENT_KEY, ENV_SERVER_KEY, ClientKeys, client_keys
from .transport import DealerTransport
from .undelivered import replay

__all__ = ["main"]


def _check(endpoint: str, timeout: float, keys: ClientKeys | None) -> int:
    sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
    transport = DealerTransport(endpoint, sender_id, keys=keys)
    hello = codec.Hello(sender_id, socket.gethostname(), 0, os.getpid(), 1, "roxxel-check")
    try:
        started = time.monotonic()
        deadline = started + timeout
        sent = False
        while time.monotonic() < deadline:
            # The socket takes the hello only once a connection is up.
            sent = sent or transport.send(codec.encode(hello))
            for data in transport.receive(min(0.05, max(0.0, deadline - time.monotonic()))):
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


def _replay(path: str, endpoint: str, timeout: float, keys: ClientKeys | None) -> int:
    try:
        delivered = replay(path, endpoint, timeout, keys)
    except (OSError, ValueError, TimeoutError) as exc:
        print(f"roxxel replay: {exc}", file=sys.stderr)
        return 1
    done = f"{path}.replayed"
    os.replace(path, done)
    print(f"delivered {delivered} record(s) from {path} to {endpoint}; the file is now {done}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roxxel", description="Tools for roxxel runs.")
    parser.add_argument("--version", action="version", version=f"roxxel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check that a collector answers")
    check.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    again = commands.add_parser(
        "replay", help="deliver a Logger's undelivered-records file to a collector"
    )
    again.add_argument("file", help="a {prefix}_undelivered_rank{N}.jsonl file")
    again.add_argument(
        "--aggregator",
        required=True,
        metavar="ENDPOINT",
        help="the collector to deliver to, e.g. tcp://127.0.0.1:5555",
    )
    again.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for acknowledgements (default: 60)",
    )
    for command in (check, again):
        _add_curve_options(command)
    args = parser.parse_args(argv)
    try:
        keys = client_keys(args.curve_server_key, args.curve_client_key)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    if args.command == "replay":
        return _replay(args.file, args.aggregator, args.timeout, keys)
    return _check(args.endpoint, args.timeout, keys)


def _add_curve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--curve-server-key",
        metavar="FILE",
        help=f"the collector's public key NAME.key (default: ${ENV_SERVER_KEY})",
    )
    parser.add_argument(
        "--curve-client-key",
        metavar="FILE",
        help=f"this client's secret key NAME.key_secret (default: ${ENV_CLIENT_KEY})",
    )


if __name__ == "__main__":
    sys.exit(main())
