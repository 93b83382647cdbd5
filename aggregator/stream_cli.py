"""``roxxel-aggregator --jetstream`` (a relay) and ``--from-jetstream`` (a writer).

:func:`aggregator.cli.main` hands its parsed arguments here when either flag
is given; nothing here is imported otherwise, so the single-collector path
never needs ``nats-py``. README "Past one collector" shows the topology.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from roxxel.security import server_keys

from .jetstream import MissingExtra, StreamSettings
from .pidfile import pid_written
from .sinks import FileOptions
from .stream_wire import check_run_name

__all__ = ["add_arguments", "stream_main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "past one collector (NATS JetStream; needs the jetstream extra)"
    )
    group.add_argument(
        "--jetstream",
        metavar="URLS",
        help="relay mode: take clients on --bind and publish their batches to the JetStream "
        "servers URLS (comma-separated nats://host:port), acknowledging each client only once "
        "the stream stored them; needs --run; writes no files",
    )
    group.add_argument(
        "--from-jetstream",
        metavar="URLS",
        help="writer mode: write run --run from the stream on the JetStream servers URLS into "
        "--log-dir (prefix --prefix, default the run's name), as a collector would",
    )
    group.add_argument(
        "--run",
        metavar="NAME",
        help="the run in the stream: its clients' filename_prefix (letters, digits, - and _)",
    )
    defaults = StreamSettings()
    group.add_argument(
        "--stream-replicas",
        type=int,
        default=defaults.replicas,
        metavar="N",
        help="replicas of the stream, if this creates it (default: %(default)s; 1 for a "
        "single NATS server)",
    )
    group.add_argument(
        "--stream-max-bytes",
        type=int,
        default=defaults.max_bytes,
        metavar="BYTES",
        help="the stream's size limit, if this creates it; when full, relays stop "
        "acknowledging, nothing is dropped (default: %(default)s)",
    )
    group.add_argument(
        "--stream-max-age",
        type=float,
        default=defaults.max_age,
        metavar="SECONDS",
        help="how long the stream keeps a unit, if this creates it (default: %(default)s)",
    )


def stream_main(args: argparse.Namespace, echo: Any) -> int:
    """Run a relay or a writer until SIGTERM/SIGINT; the exit status."""
    name = "roxxel-aggregator"
    relay = args.jetstream is not None
    problem = _problem(args, relay)
    if problem is not None:
        print(f"{name}: {problem}", file=sys.stderr)
        return 2
    settings = StreamSettings(
        replicas=args.stream_replicas,
        max_bytes=args.stream_max_bytes,
        max_age=args.stream_max_age,
    )
    urls = [url.strip() for url in (args.jetstream or args.from_jetstream).split(",") if url]
    try:
        if relay:
            from .relay import Relay

            curve = None
            if args.curve_secret is not None:
                curve = server_keys(args.curve_secret, args.curve_clients)
            server: Any = Relay(args.bind, urls, args.run, curve=curve, settings=settings)
            ready = (
                f"relay ready on {server.endpoint} (run {args.run} to JetStream {','.join(urls)}"
            )
        else:
            from .writer import open_writer

            prefix = args.prefix or args.run
            server = open_writer(
                urls,
                args.run,
                args.log_dir,
                prefix,
                echo,
                commit_interval=args.commit_interval,
                settings=settings,
                files=FileOptions(args.metrics_files, args.csv_floats, args.sink_processes),
            )
            ready = (
                f"writer ready (run {args.run} from JetStream {','.join(urls)} into log dir "
                f"{os.path.abspath(args.log_dir)}, prefix {prefix}"
            )
    except MissingExtra as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda *_: server.stop())
    if not relay:
        signal.signal(signal.SIGHUP, lambda *_: server.reopen())
    with pid_written(args.pidfile):
        if not args.quiet:
            print(f"{name} {ready}, pid {os.getpid()})", flush=True)
        try:
            if relay:
                server.run()
            else:
                server.run(stats_every=args.stats_interval, drain_senders=args.drain_senders)
        finally:
            server.close()
    return 0


def _problem(args: argparse.Namespace, relay: bool) -> str | None:
    if args.jetstream is not None and args.from_jetstream is not None:
        return "--jetstream (a relay) and --from-jetstream (a writer) are two processes"
    if args.run is None:
        return f"{'--jetstream' if relay else '--from-jetstream'} needs --run NAME"
    problem = check_run_name(args.run)
    if problem is not None:
        return problem
    if args.stream_replicas < 1:
        return "--stream-replicas must be at least 1"
    if relay:
        if args.bind is None:
            return "a relay (--jetstream) needs --bind ENDPOINT: where its clients connect"
        if args.log_dir is not None or args.prefix is not None:
            return "a relay (--jetstream) writes no files: --log-dir and --prefix are the writer's"
        if (args.curve_secret is None) != (args.curve_clients is None):
            return "--curve-secret and --curve-clients go together"
        return None
    if args.log_dir is None:
        return "a writer (--from-jetstream) needs --log-dir DIR"
    if args.bind is not None:
        return "a writer (--from-jetstream) takes no clients: --bind is the relays'"
    return None
