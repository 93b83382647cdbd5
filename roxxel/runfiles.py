"""Which files of a run a ``roxxel`` tool reads: one rule for ``tail``, ``plot`` and ``replay``.

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

Example::

    path = run_file("./logs", METRICS_CSV)  # ./logs/run_metrics.csv, or RunFilesError
"""

from __future__ import annotations

import argparse
import glob
import os
import re

__all__ = [
    "METRICS_CSV",
    "SYSTEM_LOG",
    "UNDELIVERED",
    "RunFilesError",
    "add_run_arguments",
    "run_file",
    "run_files",
    "runs_in",
]

SYSTEM_LOG = "_system.log"
METRICS_CSV = "_metrics.csv"
UNDELIVERED = "_undelivered_rank*.jsonl"  # one per rank that could not deliver


class RunFilesError(ValueError):
    """A SOURCE that names no run's file, or a directory of several runs; one line for the user."""


def runs_in(directory: str, kind: str) -> dict[str, list[str]]:
    """The runs in ``directory`` that have files of ``kind``: ``{prefix: [paths]}``, sorted."""
    # Greedy: the prefix runs to the last place the suffix fits ("a_b_metrics.csv" is run a_b).
    suffix = re.compile("(.+)" + ".*".join(map(re.escape, kind.split("*"))))
    runs: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*" + kind))):
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
            raise RunFilesError(f"{source} holds no {prefix}{kind}{_listing(runs)}")
        if len(runs) == 1:
            return next(iter(runs.values()))
        if not runs:
            raise RunFilesError(f"{source} holds no *{kind}")
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
        return os.path.join(source, prefix + kind)
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


def _listing(runs: dict[str, list[str]]) -> str:
    return f" (its runs: {', '.join(runs)})" if runs else ""
