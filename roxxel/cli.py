"""``roxxel``: command-line tools for a roxxel run.

``roxxel check ENDPOINT|DIR`` introduces itself to a collector and reports
whether (and how fast) it answered: the first thing to try when ranks'
lines do not arrive.

``roxxel status ENDPOINT|DIR`` prints a collector's live figures: senders,
ranks, records/s, drops, refusals, the busiest senders.

Given a run's log directory (or DIR/PREFIX) instead of an endpoint, ``check``
and ``status`` ask the run's own collector, found in the
``.{prefix}_collector.json`` that rank 0 writes while it runs
(:func:`roxxel.runfiles.running_collector`); one left by a collector that is
gone is said at once, exit status 1.

``roxxel tail DIR|FILE|ENDPOINT`` follows a run's system log (``--level``,
``--rank``), from its files or through its collector.

``roxxel plot DIR|CSV`` draws each metric of a run's CSV against step (a PNG;
needs the ``plot`` extra, matplotlib).

``roxxel replay DIR|FILE --aggregator ENDPOINT`` delivers the records closing
Loggers could not (their ``*_undelivered_rank{N}.jsonl``), exactly once, and
renames each file to ``FILE.replayed`` when every record of it is acknowledged.

Every tool that reads a run's files takes them the same way
(:mod:`roxxel.runfiles`): the run's log directory (``--prefix``/``--run`` to
choose where it holds several runs, which are then listed rather than one
guessed), the file itself, or ``DIR/PREFIX``.

A collector that fails the handshake (CURVE keys missing, refused or wrong)
is said at once, exit status 1, rather than at the end of ``--timeout``
(``replay``'s too; no file of it is then renamed).

An ENDPOINT that cannot be parsed or resolved (``localhost:5555``, a port
out of range, a host name that does not exist) is said in one
line, ``roxxel: ...``, with exit status 2, before anything is sent.

Text a peer supplied (a sender's host, a collector's answer or error, a
log line, a metric name) is printed through :func:`roxxel.lines.printable`:
control characters as ``\\xNN``, so neither a client nor a hostile
collector can rewrite the terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence

from . import __version__
from .lines import printable
from .plot import add_plot_command, plot_command
from .query import CollectorQuery, HandshakeError, QueryError
from .runfiles import (
    SYSTEM_LOG,
    UNDELIVERED,
    RunFilesError,
    add_run_arguments,
    run_file,
    run_files,
    running_collector,
)
from .security import ENV_CLIENT_KEY, ENV_SERVER_KEY, ClientKeys, client_keys
from .tail import RecordFilter, follow_collector, follow_file, level_of
from .transport import EndpointError, check_endpoint, is_host_port
from .undelivered import replay

__all__ = ["main"]


def _check(endpoint: str, timeout: float, keys: ClientKeys | None) -> int:
    with CollectorQuery(endpoint, keys) as query:
        started = time.monotonic()
        try:
            # A question, not a hello: a collector of many runs would open a run for a hello.
            query.ask({"what": "status"}, timeout)
        except QueryError:
            pass  # an answer all the same: the collector is there
        except TimeoutError:
            print(f"no answer from a collector at {endpoint} within {timeout} s", file=sys.stderr)
            return 1
        except HandshakeError as exc:
            return _refused("check", exc, keys)
    elapsed = (time.monotonic() - started) * 1000
    print(f"collector at {endpoint} answered in {elapsed:.1f} ms")
    return 0


def _refused(command: str, exc: HandshakeError, keys: ClientKeys | None) -> int:
    """What ``check``, ``status``, ``tail`` and ``replay`` say when the handshake failed."""
    how = (
        "; give them as --curve-server-key and --curve-client-key, or set "
        f"${ENV_SERVER_KEY} and ${ENV_CLIENT_KEY}"
        if keys is None
        else ""
    )
    print(f"roxxel {command}: {printable(str(exc))}{how}", file=sys.stderr)
    return 1


def _replay(
    source: str, prefix: str | None, endpoint: str, timeout: float, keys: ClientKeys | None
) -> int:
    try:
        paths = run_files(source, UNDELIVERED, prefix)
    except RunFilesError as exc:
        print(f"roxxel replay: {printable(str(exc))}", file=sys.stderr)
        return 1
    failed = 0
    # Each file is its own senders': one that cannot be delivered does not hold the others.
    for path in paths:
        try:
            delivered = replay(path, endpoint, timeout, keys)
        except HandshakeError as exc:  # the same for every file: said once
            return _refused("replay", exc, keys)
        except (OSError, ValueError, TimeoutError) as exc:
            said = str(exc) if path in str(exc) else f"{path}: {exc}"
            print(f"roxxel replay: {printable(said)}", file=sys.stderr)
            failed += 1
            continue
        done = f"{path}.replayed"
        os.replace(path, done)
        if delivered:
            said = f"delivered {delivered} record(s) from {path} to {endpoint}"
        else:  # the collector was not asked anything
            said = f"{path} holds no records: nothing to deliver"
        print(f"{said}; the file is now {done}")
    return 1 if failed else 0


def _status(
    endpoint: str, timeout: float, as_json: bool, keys: ClientKeys | None, run: str | None
) -> int:
    question: dict = {"what": "status"} if run is None else {"what": "status", "run": run}
    try:
        with CollectorQuery(endpoint, keys) as query:
            answer = query.ask(question, timeout)
    except HandshakeError as exc:
        return _refused("status", exc, keys)
    except (TimeoutError, QueryError) as exc:
        print(f"roxxel status: {printable(str(exc))}", file=sys.stderr)
        return 1
    # JSON escapes control characters itself.
    print(json.dumps(answer, indent=2, sort_keys=True) if as_json else _status_text(answer))
    return 0


def _status_text(s: dict) -> str:
    if s.get("relay"):
        return _relay_status_text(s)
    stats = s.get("stats", {})
    count = s.get("process_count") or "?"
    lines = [
        f"collector at {s['endpoint']} (pid {s['pid']}, up {s['uptime']:.0f} s"
        f"{', CURVE' if s.get('curve') else ''}): log dir {s.get('log_dir')}, "
        + (f"prefix {s.get('prefix')}" if "runs" not in s else "a run per prefix"),
        *([f"runs open: {', '.join(s['runs']) or 'none'}"] if "runs" in s else []),
        f"senders: {s['open_senders']} open, {s['known_senders']} known; "
        f"ranks seen {s['ranks_seen']} of {count}",
        *(
            [f"records of run {s.get('prefix')}: {s['run_records']:,} written"]
            if "run_records" in s
            else []
        ),
        f"records{' (every run)' if 'run_records' in s else ''}: "
        f"{stats.get('records', 0):,} written, {s['records_per_second']:,.0f}/s "
        "over the last 10 s",
        f"problems{' (every run)' if 'run_records' in s else ''}: "
        + ", ".join(
            f"{stats.get(key, 0):,} {label}"
            for key, label in (
                ("client_dropped", "dropped by clients"),
                ("bad_frames", "bad frames"),
                ("poison_batches", "quarantined batches"),
                ("write_errors", "write errors"),
                ("refused_connections", "connections refused"),
                ("foreign_frames", "frames naming another key's sender"),
                ("refused_runs", "clients of a run refused"),
                ("refused_senders", "senders refused (a bound reached)"),
                ("overclaiming_hellos", "hellos claiming unwritten batches"),
                ("oversized_messages", "oversized messages dropped"),
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
    # Line by line: a newline inside a field (a host name) is escaped too.
    return "\n".join(map(printable, lines))


def _relay_status_text(s: dict) -> str:
    stats = s.get("stats", {})
    lines = [
        f"relay at {s['endpoint']} (pid {s['pid']}): run {s['run']} to JetStream "
        f"{s['jetstream']} ({'connected' if s['connected'] else 'NOT connected'}, stream "
        f"{'ready' if s['stream_ready'] else 'NOT ready'})",
        f"senders: {s['senders']}; held until JetStream stores it: {s['held_bytes']:,} bytes",
        f"batches: {stats.get('batches', 0):,} taken, {stats.get('units', 0):,} units stored, "
        f"{stats.get('frames_in_parts', 0):,} sent in parts (over max_payload), "
        f"{stats.get('publish_failures', 0):,} publishes failed (tried again), "
        f"{stats.get('not_taken', 0):,} not taken (holding full)",
        f"problems: {stats.get('bad_frames', 0):,} bad frames, "
        f"{stats.get('refused_connections', 0):,} connections refused, "
        f"{stats.get('refused_runs', 0):,} clients of another run refused",
    ]
    return "\n".join(map(printable, lines))


def _tail_level(text: str) -> int:
    """``--level``: a name (``WARNING``, ``Level 25``, any case) or a number."""
    number = text.removeprefix("Level ").removeprefix("level ")
    for candidate in (text, text.upper(), f"Level {number}"):
        level = level_of(candidate)
        if level is not None:
            return level
    raise ValueError(f"unknown level {text!r}: a name such as WARNING, or a number such as 25")


def _tail(args: argparse.Namespace, keys: ClientKeys | None) -> int:
    try:
        level = _tail_level(args.level)
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
                follow_collector(query, sys.stdout, records, args.lines, follow, args.prefix)
        else:
            # A run named outright may start after its tail: waited for, as tail -F does.
            path = run_file(args.source, SYSTEM_LOG, args.prefix, may_be_missing=follow)
            follow_file(path, sys.stdout, records, args.lines, follow)
    except KeyboardInterrupt:
        return 0
    except HandshakeError as exc:
        return _refused("tail", exc, keys)
    except (OSError, ValueError, TimeoutError, QueryError) as exc:
        print(f"roxxel tail: {printable(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roxxel", description="Tools for roxxel runs.")
    parser.add_argument("--version", action="version", version=f"roxxel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check that a collector answers")
    add_run_arguments(check, "endpoint", _ENDPOINT_OR_RUN)
    check.add_argument("--timeout", type=_seconds, default=5.0, help="seconds (default: 5)")
    again = commands.add_parser(
        "replay", help="deliver Loggers' undelivered-records files to a collector"
    )
    add_run_arguments(
        again,
        "file",
        "a {prefix}_undelivered_rank{N}.jsonl file, or the log directory (every rank's file)",
    )
    again.add_argument(
        "--aggregator",
        required=True,
        metavar="ENDPOINT",
        help="the collector to deliver to, e.g. tcp://127.0.0.1:5555",
    )
    again.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait for acknowledgements (default: 60)",
    )
    status = commands.add_parser(
        "status",
        help="a collector's live figures",
        description="A collector's live figures; with --prefix P (or --run P) those of run P, "
        "where the collector or the log directory has several runs.",
    )
    add_run_arguments(status, "endpoint", _ENDPOINT_OR_RUN)
    status.add_argument("--json", action="store_true", help="the raw answer, as JSON")
    status.add_argument("--timeout", type=_seconds, default=5.0, help="seconds (default: 5)")
    tail = commands.add_parser("tail", help="follow a run's system log")
    add_run_arguments(
        tail,
        "source",
        "the run's log directory or its {prefix}_system.log, or its collector's endpoint "
        "(tcp://, ipc://)",
    )
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
    try:
        if args.command == "replay":
            endpoint = check_endpoint(args.aggregator)
            return _replay(args.file, args.prefix, endpoint, args.timeout, keys)
        if args.command == "status":
            endpoint = _needed_endpoint(args)
            if endpoint is None:
                return 1
            return _status(endpoint, args.timeout, args.json, keys, args.prefix)
        if args.command == "tail":
            if _is_endpoint(args.source):
                args.source = check_endpoint(args.source)
            return _tail(args, keys)
        endpoint = _needed_endpoint(args)
        return 1 if endpoint is None else _check(endpoint, args.timeout, keys)
    except EndpointError as exc:
        # One line, as for any other usage error: the command never ran.
        print(f"roxxel: {exc}", file=sys.stderr)
        return 2


_ENDPOINT_OR_RUN = (
    "the collector's endpoint, e.g. tcp://127.0.0.1:5555; or the run's log directory "
    "(its Logger's own collector, while it runs)"
)


def _is_endpoint(source: str) -> bool:
    """Whether a tool's SOURCE names a collector rather than a run's files."""
    return "://" in source or (is_host_port(source) and not os.path.isdir(source))


def _needed_endpoint(args: argparse.Namespace) -> str | None:
    """The collector ``check`` and ``status`` ask: ENDPOINT, or the one a run's
    log directory names; ``None`` (said on stderr) when that run's collector
    is not running."""
    if _is_endpoint(args.endpoint):
        return check_endpoint(args.endpoint)
    try:
        return check_endpoint(running_collector(args.endpoint, args.prefix))
    except RunFilesError as exc:
        print(f"roxxel {args.command}: {printable(str(exc))}", file=sys.stderr)
        return None


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
