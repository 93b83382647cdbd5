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
"""

from __future__ import annotations

import argparse
import array
import gc
import heapq
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "run", "format_table", "ROW_NAMES", "APIS", "IMPLS"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_N = 200_000
QUICK_N = 20_000
PREFIX = "bench"
MESSAGE = "step finished: loss 0.12345 lr 0.00030"
METRICS = {"loss": 0.123456, "lr": 3e-4, "grad_norm": 1.234567, "accuracy": 0.987654}

IMPLS = ("roxxel", "reference")
APIS = ("log_metrics_summary", "log_message")
METRIC_ROWS = (
    "mean incl. close",
    "mean loop only",
    "cpu logging process",
    "cpu child processes",
    "p50",
    "p99",
    "p99.9",
    "max",
)
ROW_NAMES = tuple(f"{api} {row}" for api in APIS for row in METRIC_ROWS)


# -- the worker (one case, one pass, in a fresh interpreter) ------------------


def _make_logger(impl: str, log_dir: str) -> Any:
    if impl == "roxxel":
        from roxxel import Logger

        return Logger(log_dir, filename_prefix=PREFIX)
    if impl == "reference":
        from benchmarks.reference import ReferenceLogger

        return ReferenceLogger(log_dir, filename_prefix=PREFIX)
    raise ValueError(f"unknown implementation {impl!r}")


def _records_on_disk(api: str, log_dir: str) -> int:
    if api == "log_metrics_summary":
        path = os.path.join(log_dir, f"{PREFIX}_metrics.csv")
        try:
            with open(path, encoding="utf-8") as f:
                return max(0, sum(1 for _ in f) - 1)  # minus the header
        except FileNotFoundError:
            return 0
    path = os.path.join(log_dir, f"{PREFIX}_system.log")
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.endswith(f"] {MESSAGE}\n"))
    except FileNotFoundError:
        return 0


def _warm_up(logger: Any, api: str, log_dir: str) -> None:
    """One call, then wait until it is on disk: the collector child is up and idle."""
    if api == "log_metrics_summary":
        logger.log_metrics_summary(step=-1, metrics=METRICS)
    else:
        logger.log_message(MESSAGE)
    deadline = time.monotonic() + 60
    while _records_on_disk(api, log_dir) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up record did not reach the disk within 60 s")
        time.sleep(0.01)
    time.sleep(0.05)


def _children_cpu_s() -> float:
    """CPU seconds used so far by this process's live children (Linux /proc; else 0)."""
    total_ticks = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / os.sysconf("SC_CLK_TCK")


def _reaped_children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _throughput(logger: Any, api: str, n: int) -> dict[str, Any]:
    metrics = METRICS
    message = MESSAGE
    gc.collect()
    child_cpu0 = _children_cpu_s() + _reaped_children_cpu_s()
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    if api == "log_metrics_summary":
        for i in range(n):
            logger.log_metrics_summary(step=i, metrics=metrics)
    else:
        for _ in range(n):
            logger.log_message(message)
    t1 = time.perf_counter_ns()
    logger.close()
    t2 = time.perf_counter_ns()
    cpu1 = time.process_time_ns()
    child_cpu1 = _children_cpu_s() + _reaped_children_cpu_s()
    return {
        "loop_ns": t1 - t0,
        "total_ns": t2 - t0,
        "cpu_self_ns": cpu1 - cpu0,
        "cpu_children_ns": int((child_cpu1 - child_cpu0) * 1e9),
    }


class _GcWatch:
    """Counts collections per generation; keeps the longest, by wall and by CPU time.

    Wall time can include waiting: this callback is Python code, so the
    collecting thread may hand the GIL to another thread (or be preempted) in
    the middle. The collecting thread's CPU time does not include that.
    """

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.max_ns = [0, 0, 0]
        self.max_cpu_ns = [0, 0, 0]
        self.total_ns = 0
        self._start = 0
        self._start_cpu = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start_cpu = time.thread_time_ns()
            self._start = time.perf_counter_ns()
            return
        took = time.perf_counter_ns() - self._start
        took_cpu = time.thread_time_ns() - self._start_cpu
        generation = info["generation"]
        self.count[generation] += 1
        self.total_ns += took
        self.max_ns[generation] = max(self.max_ns[generation], took)
        self.max_cpu_ns[generation] = max(self.max_cpu_ns[generation], took_cpu)


def _timer_overhead(n: int) -> list[int]:
    samples = array.array("q", bytes(8 * n))
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        samples[i] = clock() - t0
    return sorted(samples)


def _percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values."""
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _latency(logger: Any, api: str, n: int, overhead: Sequence[int]) -> dict[str, Any]:
    samples = array.array("q", bytes(8 * n))
    clock = time.perf_counter_ns
    metrics = METRICS
    message = MESSAGE
    watch = _GcWatch()
    gc.collect()
    gc.callbacks.append(watch)
    try:
        if api == "log_metrics_summary":
            for i in range(n):
                t0 = clock()
                logger.log_metrics_summary(step=i, metrics=metrics)
                samples[i] = clock() - t0
        else:
            for i in range(n):
                t0 = clock()
                logger.log_message(message)
                samples[i] = clock() - t0
    finally:
        gc.callbacks.remove(watch)
    logger.close()
    slowest = heapq.nlargest(5, range(n), key=samples.__getitem__)
    ordered = sorted(samples)
    return {
        "overhead_p50_ns": _percentile(overhead, 0.5),
        "overhead_p99_ns": _percentile(overhead, 0.99),
        "p50_ns": _percentile(ordered, 0.5),
        "p99_ns": _percentile(ordered, 0.99),
        "p999_ns": _percentile(ordered, 0.999),
        "max_ns": ordered[-1],
        "slowest": [[i, samples[i]] for i in slowest],
        "gc_count": watch.count,
        "gc_max_ns": watch.max_ns,
        "gc_max_cpu_ns": watch.max_cpu_ns,
        "gc_total_ns": watch.total_ns,
    }


def _worker(impl: str, api: str, mode: str, n: int, log_dir: str, result_path: str) -> None:
    overhead = _timer_overhead(n) if mode == "latency" else []
    logger = _make_logger(impl, log_dir)
    try:
        _warm_up(logger, api, log_dir)
        if mode == "throughput":
            result = _throughput(logger, api, n)
        else:
            result = _latency(logger, api, n, overhead)
    finally:
        logger.close()
    result["n"] = n
    result["on_disk"] = _records_on_disk(api, log_dir) - 1  # minus the warm-up record
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


# -- the driver ----------------------------------------------------------------


def _run_worker(impl: str, api: str, mode: str, n: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix=f"roxxel-bench-{impl}-{mode}-")
    try:
        result_path = os.path.join(tmp, "result.json")
        # No ROXXEL_AGGREGATOR & co.: roxxel must start its own embedded collector.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "benchmarks.caller_cost", "--worker", impl, api, mode]
        cmd += ["--n", str(n), "--log-dir", os.path.join(tmp, "logs"), "--result", result_path]
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
        if proc.stderr:
            sys.stderr.write(f"[{impl} {api} {mode}] stderr:\n{proc.stderr}")
        if proc.returncode != 0:
            raise RuntimeError(f"worker {impl} {api} {mode} exited with {proc.returncode}")
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(n: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every case and pass; ``{impl: {api: {"throughput": {...}, "latency": {...}}}}``."""
    results: dict[str, Any] = {impl: {api: {} for api in APIS} for impl in IMPLS}
    for api in APIS:
        for impl in IMPLS:
            for mode in ("throughput", "latency"):
                if progress is not None:
                    progress(f"{impl} {api} {mode} ({n:,} calls)")
                results[impl][api][mode] = _run_worker(impl, api, mode, n)
    return results


def _values_us(case: dict[str, Any]) -> dict[str, float]:
    tp, lat = case["throughput"], case["latency"]
    n_tp = tp["n"]
    timer = lat["overhead_p50_ns"]
    return {
        "mean incl. close": tp["total_ns"] / n_tp / 1e3,
        "mean loop only": tp["loop_ns"] / n_tp / 1e3,
        "cpu logging process": tp["cpu_self_ns"] / n_tp / 1e3,
        "cpu child processes": tp["cpu_children_ns"] / n_tp / 1e3,
        "p50": max(0, lat["p50_ns"] - timer) / 1e3,
        "p99": max(0, lat["p99_ns"] - timer) / 1e3,
        "p99.9": max(0, lat["p999_ns"] - timer) / 1e3,
        "max": max(0, lat["max_ns"] - timer) / 1e3,
    }


def _us(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f} µs"
    if value >= 100:
        return f"{value:.1f} µs"
    return f"{value:.2f} µs"


def _ratio(ours: float, reference: float) -> str:
    if ours <= 0 or reference <= 0:
        return "-"
    return f"{reference / ours:.1f}x"


def format_table(results: dict[str, Any]) -> str:
    """The side-by-side table, then notes (timer overhead, GC, slowest calls, losses)."""
    n = results[IMPLS[0]][APIS[0]]["throughput"]["n"]
    lines = [
        f"caller cost per call, {n:,} calls per case; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}",
        "",
        f"{'case':<42}{'roxxel':>12}{'reference':>13}{'ratio ref/ours':>16}",
    ]
    for api in APIS:
        ours = _values_us(results["roxxel"][api])
        ref = _values_us(results["reference"][api])
        for row in METRIC_ROWS:
            lines.append(
                f"{api + ' ' + row:<42}{_us(ours[row]):>12}{_us(ref[row]):>13}"
                f"{_ratio(ours[row], ref[row]):>16}"
            )
        lines.append("")
    lines.append("notes:")
    for api in APIS:
        for impl in IMPLS:
            case = results[impl][api]
            lat = case["latency"]
            gc_max = max(lat["gc_max_ns"])
            gc_max_cpu = max(lat["gc_max_cpu_ns"])
            slowest = ", ".join(f"#{i} {t / 1e3:,.0f}" for i, t in lat["slowest"])
            close_ms = (case["throughput"]["total_ns"] - case["throughput"]["loop_ns"]) / 1e6
            lines.append(
                f"  {impl} {api}: close() after the loop took {close_ms:,.0f} ms; "
                f"timer overhead {lat['overhead_p50_ns']} ns (subtracted); "
                f"gc in latency pass gen0/1/2 = {'/'.join(map(str, lat['gc_count']))}, "
                f"longest {gc_max / 1e3:,.0f} µs wall, {gc_max_cpu / 1e3:,.0f} µs CPU, "
                f"total {lat['gc_total_ns'] / 1e6:,.1f} ms wall; "
                f"slowest calls (index µs): {slowest}"
            )
            for mode in ("throughput", "latency"):
                got, want = case[mode]["on_disk"], case[mode]["n"]
                if got != want:
                    lines.append(f"  !! {impl} {api} {mode}: {got:,} of {want:,} records on disk")
    return "\n".join(lines)


def records_missing(results: dict[str, Any]) -> bool:
    return any(
        results[impl][api][mode]["on_disk"] != results[impl][api][mode]["n"]
        for impl in IMPLS
        for api in APIS
        for mode in ("throughput", "latency")
    )


def main(argv: Sequence[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    if n <= 0:
        parser.error("--n must be positive")
    if args.worker:
        impl, api, mode = args.worker
        if impl not in IMPLS or api not in APIS or mode not in ("throughput", "latency"):
            parser.error(f"bad --worker {args.worker}")
        _worker(impl, api, mode, n, args.log_dir, args.result)
        return 0

    def progress(text: str) -> None:
        print(f"running {text} ...", file=sys.stderr, flush=True)

    results = run(n, progress)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(format_table(results))
    if records_missing(results):
        print("ERROR: records missing on disk (see notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
