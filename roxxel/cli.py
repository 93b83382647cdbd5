"""``roxxel``: command-line tools for a roxxel run.

``roxxel check ENDPOINT`` introduces itself to a collector and reports
whether (and how fast) it answered: the first thing to try when ranks'
lines do not arrive.

``roxxel status ENDPOINT`` prints a collector's live figures: senders,
ranks, records/s, drops, refusals, the busiest senders.

``roxxel tail DIR|ENDPOINT`` follows a run's system log (``--level``,
``--rank``), from its directory or through its collector.

``roxxel plot CSV`` draws each metric of a run's CSV against step (a PNG;
needs the ``plot`` extra, matplotlib).

``roxxel replay FILE --aggregator ENDPOINT`` delivers the records a closing
Logger could not (its ``*_undelivered_rank{N}.jsonl``), exactly once, and
renames the file to ``FILE.replayed`` when every record is acknowledged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Sequence

from . import __version__, codec
from .exchange import exchange
from .plot import add_plot_command, plot_command
from .query import CollectorQuery, QueryError
from .security import ENV_CLIENT_KEY, ENV_SERVER_KEY, ClientKeys, client_keys
from .tail import RecordFilter, follow_collector, follow_file, system_log_in
from .transport import DealerTransport
from .undelivered import replay

__all__ = ["main"]


def _check(endpoint: str, timeout: float, keys: ClientKeys | None) -> int:
    sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
    transport = DealerTransport(endpoint, sender_id, keys=keys)
    hello = codec.Hello(sender_id, socket.gethostname(), 0, os.getpid(), 1, "roxxel-check")
    try:
        started = time.monotonic()
        reply = exchange(
            transport,
            codec.encode(hello),
            lambda reply: isinstance(reply, codec.Ack) and reply.sender_id == sender_id,
            timeout,
        )
        if reply is None:
            print(f"no answer from a collector at {endpoint} within {timeout} s", file=sys.stderr)
            return 1
        # The bye's ack is not waited for: the hello's ack is what check reports.
        transport.send(codec.encode(codec.Bye(sender_id, 0)))
        elapsed = (time.monotonic() - started) * 1000
        print(f"collector at {endpoint} answered in {elapsed:.1f} ms")
        return 0
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


def _status(endpoint: str, timeout: float, as_json: bool, keys: ClientKeys | None) -> int:
    try:
        with CollectorQuery(endpoint, keys) as query:
            answer = query.ask({"what": "status"}, timeout)
    except (TimeoutError, QueryError) as exc:
        print(f"roxxel status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True) if as_json else _status_text(answer))
    return 0


def _status_text(s: dict) -> str:
    stats = s.get("stats", {})
    count = s.get("process_count") or "?"
    lines = [
        f"collector at {s['endpoint']} (pid {s['pid']}, up {s['uptime']:.0f} s"
        f"{', CURVE' if s.get('curve') else ''}): log dir {s.get('log_dir')}, "
        f"prefix {s.get('prefix')}",
        f"senders: {s['open_senders']} open, {s['known_senders']} known; "
        f"ranks seen {s['ranks_seen']} of {count}",
        f"records: {stats.get('records', 0):,} written, {s['records_per_second']:,.0f}/s "
        "over the last 10 s",
        "problems: "
        + ", ".join(
            f"{stats.get(key, 0):,} {label}"
            for key, label in (
                ("client_dropped", "dropped by clients"),
                ("bad_frames", "bad frames"),
                ("poison_batches", "quarantined batches"),
                ("write_errors", "write errors"),
                ("refused_connections", "connections refused"),
                ("foreign_frames", "frames naming another key's sender"),
                ("deaths", "processes ended abnormally"),
            )
        ),
    ]
    if s["senders"]:
        lines.append(f"{'rank':>6} {'host':<24} {'pid':>8} {'records':>12} {'bytes':>14} idle")
        lines += [
            f"{t['rank']:>6} {t['host'][:24]:<24} {t['pid']:>8} {t['records']:>12,} "
            f"{t['bytes']:>14,} {t['idle']:.1f} s"
            for t in s["senders"]
        ]
    return "\n".join(lines)


def _tail(args: argparse.Namespace, keys: ClientKeys | None) -> int:
    try:
        level = logging.getLevelName(args.level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown level {args.level!r}")
        colour = args.color == "always" or (
            args.color == "auto"
            and sys.stdout.isatty()
            and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb"
        )
        records = RecordFilter(level, args.rank, colour)
        follow = not args.no_follow
        if "://" in args.source:
            with CollectorQuery(args.source, keys) as query:
                follow_collector(query, sys.stdout, records, args.lines, follow)
        else:
            path = system_log_in(args.source, args.prefix)
            follow_file(path, sys.stdout, records, args.lines, follow)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, TimeoutError, QueryError) as exc:
        print(f"roxxel tail: {exc}", file=sys.stderr)
        return 1
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
    status = commands.add_parser("status", help="a collector's live figures")
    status.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    status.add_argument("--json", action="store_true", help="the raw answer, as JSON")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    tail = commands.add_parser("tail", help="follow a run's system log")
    tail.add_argument(
        "source", help="the run's log directory, or its collector's endpoint (tcp://, ipc://)"
    )
    tail.add_argument("--prefix", help="the run's file name prefix, if DIR holds several runs")
    tail.add_argument("--level", default="NOTSET", help="lowest level shown, e.g. WARNING")
    tail.add_argument("--rank", type=int, help="only this rank's records (0: rank 0's)")
    tail.add_argument("-n", "--lines", type=int, default=10, help="lines shown first (default: 10)")
    tail.add_argument("--no-follow", action="store_true", help="print the last lines and exit")
    tail.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the level (auto: on a terminal, unless NO_COLOR is set)",
    )
    for command in (check, again, status, tail):
        _add_curve_options(command)
    add_plot_command(commands)
    args = parser.parse_args(argv)
    if args.command == "plot":
        return plot_command(args)
    try:
        keys = client_keys(args.curve_server_key, args.curve_client_key)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    if args.command == "replay":
        return _replay(args.file, args.aggregator, args.timeout, keys)
    if args.command == "status":
        return _status(args.endpoint, args.timeout, args.json, keys)
    if args.command == "tail":
        return _tail(args, keys)
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
