"""Which files of a run a ``roxxel`` tool reads: one rule for ``tail``, ``plot``,
``replay``, and for ``status`` and ``check`` given a log directory.

A tool's SOURCE is any of:

- a log directory: the files of the one run it holds; with ``--prefix P``
  (or ``--run P``), those of run P. A directory of several runs is never
  guessed from: the error names its runs and asks for ``--prefix``;
- one of the run's files itself (``logs/run_metrics.csv``);
- ``DIR/PREFIX`` (``logs/run``): the files of run PREFIX in DIR.

A run is known by its file name prefix, what comes before the kind's suffix
(``_system.log``, ``_metrics.csv``, ``_undelivered_rank*.jsonl``); dot-files
(a run's checkpoint, its lock) are not runs. File-system lookups only: no
sockets, nothing waits.

One dot-file is for the tools: ``.{prefix}_collector.json``, where a
Logger's own collector is (:func:`write_collector_file`, written by rank 0
while its collector runs, removed when the collector ends cleanly), so
``roxxel status DIR`` and ``roxxel check DIR`` find an endpoint nobody
configured (a private ``ipc://`` one, or a port picked at random).
:func:`running_collector` reads it; a file left by a collector that is gone
(``kill -9``) is said in one line, never asked (ZeroMQ would wait in silence
for an ``ipc://`` endpoint nobody listens on).

Example::

    path = run_file("./logs", METRICS_CSV)  # ./logs/run_metrics.csv, or RunFilesError
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import socket

from .pids import pid_alive

__all__ = [
    "COLLECTOR",
    "METRICS_CSV",
    "SYSTEM_LOG",
    "UNDELIVERED",
    "RunFilesError",
    "add_run_arguments",
    "collector_file",
    "remove_collector_file",
    "run_file",
    "run_files",
    "running_collector",
    "runs_in",
    "write_collector_file",
]

SYSTEM_LOG = "_system.log"
METRICS_CSV = "_metrics.csv"
UNDELIVERED = "_undelivered_rank*.jsonl"  # one per rank that could not deliver
COLLECTOR = "_collector.json"  # a dot-file: .{prefix}_collector.json
_DOT_KINDS = frozenset({COLLECTOR})


class RunFilesError(ValueError):
    """A SOURCE that names no run's file, or a directory of several runs; one line for the user."""


def runs_in(directory: str, kind: str) -> dict[str, list[str]]:
    """The runs in ``directory`` that have files of ``kind``: ``{prefix: [paths]}``, sorted."""
    # Greedy: the prefix runs to the last place the suffix fits ("a_b_metrics.csv" is run a_b).
    dot = "." if kind in _DOT_KINDS else ""
    suffix = re.compile(re.escape(dot) + "(.+)" + ".*".join(map(re.escape, kind.split("*"))))
    runs: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), dot + "*" + kind))):
        name = suffix.fullmatch(os.path.basename(path))
        if name is not None and os.path.isfile(path):
            runs.setdefault(name.group(1), []).append(path)
    return runs


def run_files(source: str, kind: str, prefix: str | None = None) -> list[str]:
    """The files of ``kind`` that ``source`` (and ``prefix``) name, as the module says.

    Raises :class:`RunFilesError` when there are none, or when a directory
    holds several runs and no ``prefix`` says which.
    """
    if os.path.isdir(source):
        runs = runs_in(source, kind)
        if prefix is not None:
            if prefix in runs:
                return runs[prefix]
            raise RunFilesError(f"{source} holds no {_name(prefix, kind)}{_listing(runs)}")
        if len(runs) == 1:
            return next(iter(runs.values()))
        if not runs:
            raise RunFilesError(f"{source} holds no {_name('*', kind)}")
        raise RunFilesError(
            f"{source} holds {len(runs)} runs ({', '.join(runs)}): name the run with "
            f"--prefix, e.g. --prefix {next(iter(runs))}"
        )
    if prefix is not None:
        raise RunFilesError(f"--prefix names a run of a log directory, and {source} is not one")
    if os.path.exists(source):
        return [source]
    directory, name = os.path.split(source)
    runs = runs_in(directory or ".", kind) if os.path.isdir(directory or ".") else {}
    if name in runs:
        return runs[name]
    raise RunFilesError(
        f"{source}: no such file or directory, nor a run of that prefix{_listing(runs)}"
    )


def run_file(
    source: str, kind: str, prefix: str | None = None, *, may_be_missing: bool = False
) -> str:
    """The one file of ``kind`` (no ``*`` in it) that ``source`` names: :func:`run_files`.

    With ``may_be_missing``, a run named outright (a directory and ``prefix``)
    gives its path even before the file exists: ``tail`` then waits for the run.
    """
    if may_be_missing and prefix is not None and os.path.isdir(source):
        return os.path.join(source, _name(prefix, kind))
    return run_files(source, kind, prefix)[0]


def add_run_arguments(parser: argparse.ArgumentParser, dest: str, help: str) -> None:
    """A tool's SOURCE positional (``dest``) and the ``--prefix``/``--run`` that goes with it."""
    parser.add_argument(dest, help=f"{help}; or DIR/PREFIX")
    parser.add_argument(
        "--prefix",
        "--run",
        dest="prefix",
        help="the run's file name prefix, where the source holds several runs",
    )


def collector_file(log_dir: str, prefix: str) -> str:
    """Where the endpoint of run ``prefix``'s own collector is written."""
    return os.path.join(log_dir, _name(prefix, COLLECTOR))


def write_collector_file(
    log_dir: str, prefix: str, endpoint: str, pid: int, remote: str | None = None
) -> str:
    """Say where run ``prefix``'s collector (process ``pid``) listens: ``endpoint``
    from this host, ``remote`` (if any) from the others. Returns the file's path.

    Mode 0600 like the run's other dot-files (an ``ipc://`` endpoint is a way
    in); written whole under a temporary name, then renamed, so a tool never
    reads half of it.
    """
    path = collector_file(log_dir, prefix)
    entry = {"endpoint": endpoint, "pid": pid, "host": socket.gethostname()}
    if remote is not None:
        entry["remote"] = remote
    temporary = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a crash's leftover, whatever its mode
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(temporary, flags, 0o600), "w", encoding="utf-8") as out:
        json.dump(entry, out)
    os.replace(temporary, path)
    return path


def remove_collector_file(path: str, pid: int) -> None:
    """Remove ``path`` if it still names process ``pid``'s collector (a collector
    of the same run started since has written its own)."""
    with contextlib.suppress(OSError, ValueError):
        if _read_collector(path).get("pid") == pid:
            os.unlink(path)


def running_collector(source: str, prefix: str | None = None) -> str:
    """The endpoint of the collector of the run ``source`` names (a log dir, its
    ``.{prefix}_collector.json``, or DIR/PREFIX), as this host reaches it.

    Raises :class:`RunFilesError` (one line) when no such file exists, when
    its collector is gone, or when it runs on another host and listens on an
    endpoint only that host can reach.
    """
    directory, wanted = source, prefix
    if prefix is None and not os.path.exists(source):  # DIR/PREFIX
        directory, wanted = os.path.split(source)
    if os.path.isdir(directory or "."):
        running = runs_in(directory or ".", COLLECTOR)
        if not running or (wanted is not None and wanted not in running):
            raise RunFilesError(
                f"no collector of {'a run' if wanted is None else f'run {wanted}'} in "
                f"{directory or '.'} is running"
                + (f" (those of {', '.join(running)} are)" if running else "")
                + ": a Logger's own collector "
                "writes where it listens there while it runs (a daemon's: give its "
                "endpoint, tcp://HOST:PORT)"
            )
    path = run_file(source, COLLECTOR, prefix)
    if not (os.path.basename(path).startswith(".") and path.endswith(COLLECTOR)):
        raise RunFilesError(
            f"{path} is not a run's {_name('PREFIX', COLLECTOR)}: give the run's log "
            "directory, or DIR/PREFIX"
        )
    try:
        entry = _read_collector(path)
        endpoint, pid, host = entry["endpoint"], entry["pid"], entry["host"]
        if not (isinstance(endpoint, str) and isinstance(pid, int) and isinstance(host, str)):
            raise ValueError("not a collector's endpoint")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFilesError(f"{path}: cannot be read ({exc})") from None
    if host != socket.gethostname():
        remote = entry.get("remote")
        if isinstance(remote, str):
            return remote
        raise RunFilesError(
            f"the collector of {path} runs on {host} (pid {pid}) and listens on {endpoint}, "
            "which only that host reaches: run the command there"
        )
    if not pid_alive(pid):
        raise RunFilesError(
            f"the collector of {path} (pid {pid}) is no longer running (it did not end "
            "cleanly, or its Logger's process was killed); the file is left from it"
        )
    return endpoint


def _read_collector(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        entry = json.load(f)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return entry


def _name(prefix: str, kind: str) -> str:
    """The file name of run ``prefix``'s file of ``kind``."""
    return ("." if kind in _DOT_KINDS else "") + prefix + kind


def _listing(runs: dict[str, list[str]]) -> str:
    return f" (its runs: {', '.join(runs)})" if runs else ""
