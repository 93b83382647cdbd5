"""``roxxel-aggregator`` (also ``python -m aggregator``): the collector as a daemon.

It binds, prints one line containing ``ready`` on stdout once it accepts
connections, then writes ``{log-dir}/{prefix}_system.log`` (echoed to stdout
unless ``--no-echo``), ``_metrics.csv`` and ``_metrics.jsonl``. SIGTERM or
SIGINT: it writes everything that has arrived, acknowledges it, exits 0.
SIGHUP: it reopens the files by name (after logrotate moved them) and
re-reads the allowed clients' keys (``--curve-clients``). A lock
on ``{log-dir}/.{prefix}.lock`` keeps a second collector off the same run.

``roxxel-aggregator keygen --out DIR --name NAME`` writes a CURVE key pair
(for the collector or a client); ``--help`` lists it with the daemon's options.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from roxxel.schema import (
    CSV_FLOATS,
    DEFAULT_METRICS_FILES,
    METRICS_FILES,
    RUN_NAME_RULE,
    check_file_options,
    is_run_name,
)
from roxxel.security import generate_keys, server_keys

from .collector import DAEMON_NAME, DEFAULT_COMMIT_INTERVAL, Collector
from .pidfile import pid_written
from .sinks import FileOptions
from .sinks.process import ENV_SINK_PROCESSES, MIN_CPUS, MOVE_AT_ROWS_PER_S, SINK_PROCESSES
from .stream_cli import add_arguments as add_stream_arguments
from .stream_cli import stream_main

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roxxel-aggregator",
        # keygen is read before this parser (it has no --bind): the usage and
        # the list below are where --help shows it.
        usage="%(prog)s --bind ENDPOINT --log-dir LOG_DIR [options]\n"
        "       %(prog)s --bind ENDPOINT --jetstream URLS --run NAME [options]   (a relay)\n"
        "       %(prog)s --from-jetstream URLS --run NAME --log-dir LOG_DIR [options]"
        "   (a writer)\n"
        "       %(prog)s keygen --out DIR --name NAME",
        description="Collect every rank's log lines and metrics of a roxxel run into one\n"
        "log directory. Clients connect with Logger(..., aggregator=ENDPOINT) or\n"
        "ROXXEL_AGGREGATOR=ENDPOINT.\n\n"
        "subcommands:\n"
        "  keygen    write a CURVE key pair for the collector or a client\n"
        "            (roxxel-aggregator keygen --help: its options)",
        epilog="Example: roxxel-aggregator --bind tcp://0.0.0.0:5555 --log-dir ./logs\n"
        "(one set of files per run), or ... --prefix run_alpha (that run only)",
        # Keeps the subcommand list a list (the default would refill it as a paragraph).
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bind",
        metavar="ENDPOINT",
        help="ZeroMQ endpoint to listen on, e.g. tcp://0.0.0.0:5555, tcp://127.0.0.1:0 "
        "(a free port; the ready line names it) or ipc:///tmp/roxxel.sock",
    )
    parser.add_argument("--log-dir", help="directory of the runs' files")
    parser.add_argument(
        "--prefix",
        type=_run_name,
        help="serve this run only (file name prefix, as Logger's filename_prefix); without "
        "it, every run that reaches the daemon gets its own files, named by its clients' "
        "filename_prefix",
    )
    parser.add_argument(
        "--no-echo", action="store_true", help="do not echo system-log lines to stdout"
    )
    parser.add_argument(
        "--metrics-files",
        type=_metrics_files,
        default=DEFAULT_METRICS_FILES,
        metavar="LIST",
        help="which metrics files each run gets besides its system log, comma-separated: "
        f"any of {', '.join(METRICS_FILES)} (default: {','.join(DEFAULT_METRICS_FILES)}; "
        "tensorboard: {prefix}_tensorboard/rank{N}/ event files)",
    )
    parser.add_argument(
        "--csv-floats",
        choices=CSV_FLOATS,
        default="original",
        help="how the CSV writes floats: 'original', the original roxxel's .5f (six "
        "significant digits below 1e-3), or 'full', every digit (shortest round-trip) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--sink-processes",
        choices=SINK_PROCESSES,
        default=os.environ.get(ENV_SINK_PROCESSES, "auto"),
        help="format the CSV and the JSONL in a process each, beside the collector, which "
        "still decides the order and commits: 'auto' once a run writes "
        f"{MOVE_AT_ROWS_PER_S:,} rows/s on a host with {MIN_CPUS} or more cores, 'on' "
        f"always, 'off' never (default: ${ENV_SINK_PROCESSES}, else auto)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the ready line")
    parser.add_argument("--pidfile", help="write the daemon's pid to this file (removed at exit)")
    parser.add_argument(
        "--stats-interval",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="print a one-line stats report (records/s, senders, drops) on stderr this often; "
        "0 turns it off (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-senders",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, keep serving until every rank of the run has closed its "
        "Logger, at most SECONDS (default: %(default)s, stop at once)",
    )
    parser.add_argument(
        "--commit-interval",
        type=_non_negative,
        default=DEFAULT_COMMIT_INTERVAL,
        metavar="SECONDS",
        help="fsync the files and the checkpoint, then acknowledge, at most this often "
        "(default: %(default)s; 0: after every cycle of messages)",
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="this collector's CURVE secret key (NAME.key_secret from `roxxel-aggregator "
        "keygen`); with --curve-clients, only clients holding an allowed key get in",
    )
    parser.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="directory of the public keys (NAME.key) of the clients allowed in; re-read on SIGHUP",
    )
    add_stream_arguments(parser)
    # Set by an embedding Logger: exit (after writing what arrived) when that
    # process ends, and report the bound endpoint on this file descriptor.
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    # The parent has no watcher: no death notice to wait for when it dies.
    parser.add_argument("--parent-unwatched", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # A Logger's own collector signs its messages with the name the user knows.
    parser.add_argument("--name", default=DAEMON_NAME, help=argparse.SUPPRESS)
    return parser


def _metrics_files(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    problem = check_file_options(names, "original")
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return names


def _run_name(text: str) -> str:
    if not is_run_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run's prefix: {RUN_NAME_RULE} (as Logger's filename_prefix)"
        )
    return text


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def keygen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="roxxel-aggregator keygen",
        description="Write a CURVE key pair: DIR/NAME.key (public, to hand out) and "
        "DIR/NAME.key_secret (secret, mode 0600), as zmq.auth.load_certificate reads them.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory of the key files")
    parser.add_argument("--name", required=True, help="the key files' name (e.g. server, rank3)")
    args = parser.parse_args(argv)
    try:
        public, secret = generate_keys(args.out, args.name)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"roxxel-aggregator keygen: {exc}", file=sys.stderr)
        return 2
    print(f"public key {public}\nsecret key {secret} (keep it on this host, mode 0600)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["keygen"]:
        return keygen_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sink_processes not in SINK_PROCESSES:  # a default from the environment
        parser.error(
            f"{ENV_SINK_PROCESSES}={args.sink_processes!r}: one of {', '.join(SINK_PROCESSES)}"
        )
    echo = None if args.no_echo else sys.stdout
    if args.jetstream is not None or args.from_jetstream is not None:
        return stream_main(args, echo)
    missing = [flag for flag in ("bind", "log_dir") if getattr(args, flag) is None]
    if missing:
        names = ", ".join(f"--{flag.replace('_', '-')}" for flag in missing)
        parser.error(f"the following arguments are required: {names}")
    if (args.curve_secret is None) != (args.curve_clients is None):
        print("roxxel-aggregator: --curve-secret and --curve-clients go together", file=sys.stderr)
        return 2
    if args.pidfile is not None and not _writable_dir(os.path.dirname(args.pidfile) or "."):
        print(
            f"roxxel-aggregator: cannot write the pidfile {args.pidfile}: its directory "
            "is not a writable directory",
            file=sys.stderr,
        )
        return 2
    try:
        curve = None
        if args.curve_secret is not None:
            curve = server_keys(args.curve_secret, args.curve_clients)
        options = {
            "commit_interval": args.commit_interval,
            "curve": curve,
            "name": args.name,
            "files": FileOptions(args.metrics_files, args.csv_floats, args.sink_processes),
        }
        if args.prefix is None:  # every run that reaches it
            collector = Collector.for_runs(args.bind, args.log_dir, echo, **options)
        else:
            collector = Collector.for_log_dir(args.bind, args.log_dir, args.prefix, echo, **options)
    except (OSError, ValueError, RuntimeError) as exc:
        error = f"cannot serve {args.log_dir}: {exc}"
        print(f"{args.name}: {error}", file=sys.stderr)
        if args.ready_fd is not None:
            # The ready pipe carries an endpoint, or why there is none: the
            # Logger that started us repeats it in the exception it raises.
            with os.fdopen(args.ready_fd, "w") as ready:
                ready.write(f"{error}\n")
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        # A daemon keeps an ignored signal ignored (nohup and friends); a
        # Logger's own collector is stopped by its parent's SIGTERM, whatever
        # the parent's parent left ignored.
        embedded = args.parent_pid is not None and signum == signal.SIGTERM
        if embedded or signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda *_: collector.stop())
    signal.signal(signal.SIGHUP, lambda *_: collector.reopen())
    parent_alive = None
    parent = args.parent_pid
    if parent is not None:
        parent_alive = lambda: os.getppid() == parent  # noqa: E731
    with pid_written(args.pidfile):
        if args.ready_fd is not None:
            with os.fdopen(args.ready_fd, "w") as ready:
                ready.write(collector.endpoint + "\n")
        if not args.quiet:
            print(
                f"roxxel-aggregator ready on {collector.endpoint} "
                f"(log dir {os.path.abspath(args.log_dir)}, "
                f"{f'prefix {args.prefix}' if args.prefix else 'a run per prefix'}, "
                f"pid {os.getpid()})",
                flush=True,
            )
        try:
            collector.run(
                parent_alive,
                drain_senders=args.drain_senders,
                stats_every=args.stats_interval,
                parent_pid=parent,
                parent_watched=not args.parent_unwatched,
            )
        finally:
            collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
