"""Caller cost per call in a tight loop: roxxel vs. the original design, side by side.

Four cases, each run in its own fresh interpreter (a worker subprocess whose
stdout -- the system log's echo, also that of roxxel's collector child, which
inherits it -- goes to /dev/null; the worker reports JSON in a file):

* ``log_metrics_summary(step=i, metrics=<4 floats>)`` and
  ``log_message("<constant text>")``, for
* ``roxxel.Logger`` (default options: embedded collector child process) and
  :class:`benchmarks.reference.ReferenceLogger` (the original design).

Each case has two passes, each in its own worker and a fresh temporary
``log_dir``; both start with one warm-up call and wait until it is on disk
(so the collector child has started), then:

* throughput: N calls with no per-call timer. ``mean incl. close`` is the
  wall time from the first call until ``close()`` returned (everything on
  disk, background threads and the collector included) divided by N;
  ``mean loop only`` stops the clock after the last call. CPU time of the
  logging process (all its threads) and of its child processes (roxxel's
  collector) over the same span, per call, are reported too.
* latency: every call is timed with ``time.perf_counter_ns`` pairs into a
  preallocated ``array``; the median of an empty timed call (the timer's own
  cost, measured in the same worker just before) is subtracted from each
  percentile. Garbage-collector pauses during this pass are recorded with
  ``gc.callbacks``.

Afterwards the worker counts the records in the files and the run fails if
any is missing.

Then the same two APIs once more for roxxel with the collector dead: the
Logger points at ``tcp://127.0.0.1:<a port where nothing listens>`` with
``close_timeout=0``, once with a small ``max_buffer_bytes`` (4 MiB at the
default N, scaled with N, so the bound is hit and the oldest records are
dropped during the loop) and once with the default (256 MiB). Same passes
and statistics, except that nothing reaches the disk, so ``mean incl. close``
is replaced by the loop-only mean, the CPU time over the loop alone and over
loop plus ``close()``, and ``close()``'s own wall time (it writes the
undelivered file, which the worker reads and deletes). Every record must be
either in that file or counted in ``dropped_total``, else the run fails.
Printed as tables of alive vs. dead numbers of the same run.

This module is the entry point and the driver (which cases, in which
processes); one pass inside a worker is :mod:`benchmarks.caller_cost_worker`,
the tables and the check for lost records :mod:`benchmarks.caller_cost_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from .caller_cost_report import (
    DEAD_ROW_NAMES,
    DEAD_SECTION,
    ROW_NAMES,
    format_dead_tables,
    format_size,
    format_table,
    records_missing,
)
from .caller_cost_worker import DEAD_IMPL, DEFAULT_BUFFER, FLOOR_IMPL, IMPLS, MODES, worker
from .harness import forget_roxxel_env, roxxel_free_env
from .harness import progress as stderr_progress
from .workload import APIS, log_calls

# Still importable from here: collector_throughput's table names caller_cost.METRICS_SERIES.
from .workload import METRICS as METRICS
from .workload import METRICS_SERIES as METRICS_SERIES

__all__ = [
    "main",
    "log_calls",
    "roxxel_free_env",
    "forget_roxxel_env",
    "run",
    "format_table",
    "format_dead_tables",
    "ROW_NAMES",
    "DEAD_ROW_NAMES",
    "DEAD_SECTION",
    "APIS",
    "IMPLS",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_N = 200_000
QUICK_N = 20_000
# The collector-dead case: two buffer bounds, same N as the rest.
SMALL_BUFFER_AT_DEFAULT_N = 4 * 1024 * 1024


def small_buffer(n: int) -> int:
    """The small bound: 4 MiB at 200,000 calls, scaled with N (64 KiB at least).

    A metrics row takes about 81 bytes encoded, a log line about 53, so N
    calls fill it after roughly a quarter (metrics) or 40 % (lines) of them.
    """
    return max(64 * 1024, SMALL_BUFFER_AT_DEFAULT_N * n // DEFAULT_N)


def dead_buffers(n: int) -> tuple[int, ...]:
    """The ``max_buffer_bytes`` of the collector-dead cases: the small bound, the default."""
    return (small_buffer(n), DEFAULT_BUFFER)


# -- the driver ----------------------------------------------------------------


_NOTICE = re.compile(r"^roxxel: (\d+) record\(s\) were not delivered: ")


def _run_worker(
    impl: str, api: str, mode: str, n: int, max_buffer_bytes: int | None = None
) -> dict[str, Any]:
    """One pass in a fresh interpreter (``--worker``); its result, read back from JSON."""
    tmp = tempfile.mkdtemp(prefix=f"roxxel-bench-{impl}-{mode}-")
    try:
        result_path = os.path.join(tmp, "result.json")
        env = roxxel_free_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "benchmarks.caller_cost", "--worker", impl, api, mode]
        cmd += ["--n", str(n), "--log-dir", os.path.join(tmp, "logs"), "--result", result_path]
        if max_buffer_bytes is not None:
            cmd += ["--max-buffer-bytes", str(max_buffer_bytes)]
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the system log's echo
            stderr=subprocess.PIPE,
            text=True,
            timeout=1800,
        )
        # With the collector dead, close() says on stderr what it left undelivered:
        # expected, so it is kept in the result instead of echoed.
        notices = []
        stderr = proc.stderr
        if impl == DEAD_IMPL:
            lines = stderr.splitlines(keepends=True)
            notices = [int(m.group(1)) for ln in lines if (m := _NOTICE.match(ln))]
            stderr = "".join(ln for ln in lines if not _NOTICE.match(ln))
        if stderr:
            sys.stderr.write(f"[{impl} {api} {mode}] stderr:\n{stderr}")
        if proc.returncode != 0:
            raise RuntimeError(f"worker {impl} {api} {mode} exited with {proc.returncode}")
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if impl == DEAD_IMPL:
            result["notices"] = notices
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(n: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every case and pass.

    ``{impl: {api: {"throughput": {...}, "latency": {...}}}}`` for roxxel and
    the reference, and ``"collector_dead"``: a list, per ``max_buffer_bytes``,
    of ``{"max_buffer_bytes": B, api: {"throughput": {...}, "latency": {...}}}``.
    """
    results: dict[str, Any] = {impl: {api: {} for api in APIS} for impl in IMPLS}
    for api in APIS:
        for impl in IMPLS:
            for mode in MODES:
                if progress is not None:
                    progress(f"{impl} {api} {mode} ({n:,} calls)")
                results[impl][api][mode] = _run_worker(impl, api, mode, n)
    results["floor"] = {}
    for api in APIS:
        if progress is not None:
            progress(f"deque-append floor {api} ({n:,} calls)")
        results["floor"][api] = _run_worker(FLOOR_IMPL, api, "throughput", n)
    results["collector_dead"] = []
    for buffer in dead_buffers(n):
        dead: dict[str, Any] = {"max_buffer_bytes": buffer}
        for api in APIS:
            dead[api] = {}
            for mode in MODES:
                if progress is not None:
                    progress(
                        f"roxxel, collector dead, max_buffer_bytes {format_size(buffer)}, "
                        f"{api} {mode} ({n:,} calls)"
                    )
                dead[api][mode] = _run_worker(DEAD_IMPL, api, mode, n, buffer)
        results["collector_dead"].append(dead)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks``: every case, then the tables; 1 if a record went missing."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Caller cost of roxxel.Logger vs. a reference of the original design.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_N:,} calls per case instead of {DEFAULT_N:,}"
    )
    parser.add_argument("--n", type=int, help="calls per case (overrides --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument(
        "--worker", nargs=3, metavar=("IMPL", "API", "MODE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--max-buffer-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    if n <= 0:
        parser.error("--n must be positive")
    if args.worker:
        impl, api, mode = args.worker
        if impl not in (*IMPLS, DEAD_IMPL, FLOOR_IMPL) or api not in APIS or mode not in MODES:
            parser.error(f"bad --worker {args.worker}")
        worker(impl, api, mode, n, args.log_dir, args.result, args.max_buffer_bytes)
        return 0

    results = run(n, stderr_progress)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(format_table(results))
    print()
    print(format_dead_tables(results))
    if records_missing(results):
        print("ERROR: records missing or unaccounted for (see the notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
