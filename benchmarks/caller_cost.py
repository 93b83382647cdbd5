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
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import heapq
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from roxxel.undelivered import read_unsent

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
PREFIX = "bench"
MESSAGE = "step finished: loss 0.12345 lr 0.00030"
METRICS = {"loss": 0.123456, "lr": 3e-4, "grad_norm": 1.234567, "accuracy": 0.987654}


def metrics_series(count: int = 1024) -> list[dict[str, float]]:
    """Rows like a training run's, cycled through by every metrics benchmark:
    ``loss``, ``grad_norm`` and ``accuracy`` change every row and have all the
    digits of a float64 (slow to format, like real ones), ``lr`` is constant."""
    rng = random.Random(0)
    return [
        {
            "loss": 2.5 / (1 + 0.01 * i) + rng.random() * 0.01,
            "lr": 3e-4,
            "grad_norm": 1.0 + rng.random(),
            "accuracy": min(0.999, 0.5 + i / 2048 + rng.random() * 0.01),
        }
        for i in range(count)
    ]


METRICS_SERIES = metrics_series()
_SERIES_MASK = len(METRICS_SERIES) - 1  # a power of two: i & mask cycles through it

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
MODES = ("throughput", "latency")

# The collector-dead case (roxxel only): two buffer bounds, same N as the rest.
DEAD_IMPL = "roxxel-dead"
DEFAULT_BUFFER = 256 * 1024 * 1024  # roxxel.Logger's default max_buffer_bytes
SMALL_BUFFER_AT_DEFAULT_N = 4 * 1024 * 1024
DEAD_ROWS = (
    "mean loop only",
    "cpu loop only",
    "cpu incl. close",
    "p50",
    "p99",
    "p99.9",
    "max",
    "close()",
)
DEAD_ROW_NAMES = tuple(f"{api} {row}" for api in APIS for row in DEAD_ROWS)
DEAD_SECTION = "collector dead (roxxel)"


def small_buffer(n: int) -> int:
    """The small bound: 4 MiB at 200,000 calls, scaled with N (64 KiB at least).

    A metrics row takes about 81 bytes encoded, a log line about 53, so N
    calls fill it after roughly a quarter (metrics) or 40 % (lines) of them.
    """
    return max(64 * 1024, SMALL_BUFFER_AT_DEFAULT_N * n // DEFAULT_N)


def dead_buffers(n: int) -> tuple[int, ...]:
    return (small_buffer(n), DEFAULT_BUFFER)


# -- the worker (one case, one pass, in a fresh interpreter) ------------------


def _free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_logger(impl: str, log_dir: str, max_buffer_bytes: int | None = None) -> Any:
    if impl == "roxxel":
        from roxxel import Logger

        return Logger(log_dir, filename_prefix=PREFIX)
    if impl == DEAD_IMPL:
        from roxxel import Logger

        os.makedirs(log_dir, exist_ok=True)
        return Logger(
            log_dir,
            filename_prefix=PREFIX,
            aggregator=f"tcp://127.0.0.1:{_free_port()}",
            close_timeout=0,
            max_buffer_bytes=max_buffer_bytes or DEFAULT_BUFFER,
        )
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


def _undelivered(log_dir: str) -> dict[str, int]:
    """Records in the undelivered file(s) close() left in ``log_dir``, by kind; then deletes them.

    ``reported_*`` sum the client's drop reports (``["d", ts, metrics, lines]``).
    """
    counts = {"metrics": 0, "lines": 0, "reports": 0, "reported_metrics": 0, "reported_lines": 0}
    counts["file_bytes"] = 0
    for name in os.listdir(log_dir):
        if not (name.startswith(f"{PREFIX}_undelivered_rank") and name.endswith(".jsonl")):
            continue
        path = os.path.join(log_dir, name)
        counts["file_bytes"] += os.path.getsize(path)
        for section in read_unsent(path):
            for batch in section.batches:
                for record in msgpack.unpackb(batch.body, raw=False):
                    if record[0] == "m":  # a run of rows with the same keys
                        counts["metrics"] += len(record[4])
                    elif record[0] == "l":
                        counts["lines"] += 1
                    elif record[0] == "d":
                        counts["reports"] += 1
                        counts["reported_metrics"] += record[2]
                        counts["reported_lines"] += record[3]
        os.remove(path)
    return counts


def _dropped(logger: Any) -> int | None:
    """roxxel's count of dropped records (None for the reference)."""
    sender = getattr(logger, "_sender", None)
    return getattr(sender, "dropped_total", None)


def _warm_up(logger: Any, api: str, log_dir: str, dead: bool = False) -> None:
    """One call, then wait until it is on disk: the collector child is up and idle.

    With the collector dead nothing reaches the disk: wait until the sender
    thread has taken the record from its deque (it is running and idle).
    """
    if api == "log_metrics_summary":
        logger.log_metrics_summary(step=-1, metrics=METRICS)
    else:
        logger.log_message(MESSAGE)
    deadline = time.monotonic() + 60
    while True:
        if dead:
            done = not (logger._sender.metrics or logger._sender.lines)
        else:
            done = _records_on_disk(api, log_dir) >= 1
        if done:
            break
        if time.monotonic() > deadline:
            where = "the sender thread" if dead else "the disk"
            raise RuntimeError(f"the warm-up record did not reach {where} within 60 s")
        time.sleep(0.01)
    time.sleep(0.05)


def children_cpu_s() -> float:
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


def roxxel_free_env() -> dict[str, str]:
    """This environment without ROXXEL_AGGREGATOR & co.: roxxel starts its own collector."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}


def forget_roxxel_env() -> None:
    """The same, in a worker's own environment."""
    for key in [k for k in os.environ if k.startswith("ROXXEL_")]:
        del os.environ[key]


def log_calls(logger: Any, api: str, start: int, stop: int) -> None:
    """The measured loop: calls ``start`` to ``stop`` of ``api`` (step = the call's index)."""
    if api == "log_metrics_summary":
        series, mask = METRICS_SERIES, _SERIES_MASK
        for i in range(start, stop):
            logger.log_metrics_summary(step=i, metrics=series[i & mask])
    else:
        message = MESSAGE
        for _ in range(start, stop):
            logger.log_message(message)


def _throughput(logger: Any, api: str, n: int) -> dict[str, Any]:
    gc.collect()
    child_cpu0 = children_cpu_s() + _reaped_children_cpu_s()
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    log_calls(logger, api, 0, n)
    t1 = time.perf_counter_ns()
    cpu_loop = time.process_time_ns()
    dropped_in_loop = _dropped(logger)
    logger.close()
    t2 = time.perf_counter_ns()
    cpu1 = time.process_time_ns()
    child_cpu1 = children_cpu_s() + _reaped_children_cpu_s()
    return {
        "loop_ns": t1 - t0,
        "total_ns": t2 - t0,
        "cpu_loop_ns": cpu_loop - cpu0,
        "cpu_self_ns": cpu1 - cpu0,
        "cpu_children_ns": int((child_cpu1 - child_cpu0) * 1e9),
        "dropped_in_loop": dropped_in_loop,
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
    series, mask = METRICS_SERIES, _SERIES_MASK
    message = MESSAGE
    watch = _GcWatch()
    gc.collect()
    gc.callbacks.append(watch)
    try:
        if api == "log_metrics_summary":
            for i in range(n):
                metrics = series[i & mask]
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
    dropped_in_loop = _dropped(logger)
    t_close = time.perf_counter_ns()
    logger.close()
    close_ns = time.perf_counter_ns() - t_close
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
        "dropped_in_loop": dropped_in_loop,
        "close_ns": close_ns,
    }


def _worker(
    impl: str,
    api: str,
    mode: str,
    n: int,
    log_dir: str,
    result_path: str,
    max_buffer_bytes: int | None = None,
) -> None:
    overhead = _timer_overhead(n) if mode == "latency" else []
    dead = impl == DEAD_IMPL
    logger = _make_logger(impl, log_dir, max_buffer_bytes)
    try:
        _warm_up(logger, api, log_dir, dead)
        if mode == "throughput":
            result = _throughput(logger, api, n)
        else:
            result = _latency(logger, api, n, overhead)
    finally:
        logger.close()
    endpoint = getattr(logger, "endpoint", None) or ""
    if impl == "roxxel" and endpoint.startswith("ipc://"):
        # roxxel's embedded collector leaves its ipc socket file in $TMPDIR
        # when it stops (a bug, reported); it is this worker's own: remove it.
        path = endpoint[len("ipc://") :]
        result["ipc_socket_left"] = os.path.exists(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    result["n"] = n
    result["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["dropped"] = _dropped(logger)
    if dead:
        result["max_buffer_bytes"] = logger._max_buffer_bytes
        result["undelivered"] = _undelivered(log_dir)  # and deletes the file
        result["left_in_log_dir"] = sorted(os.listdir(log_dir))
    else:
        result["on_disk"] = _records_on_disk(api, log_dir) - 1  # minus the warm-up record
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


# -- the driver ----------------------------------------------------------------


_NOTICE = re.compile(r"^roxxel: (\d+) record\(s\) were not acknowledged by the collector at ")


def _run_worker(
    impl: str, api: str, mode: str, n: int, max_buffer_bytes: int | None = None
) -> dict[str, Any]:
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
    results["collector_dead"] = []
    for buffer in dead_buffers(n):
        dead: dict[str, Any] = {"max_buffer_bytes": buffer}
        for api in APIS:
            dead[api] = {}
            for mode in MODES:
                if progress is not None:
                    progress(
                        f"roxxel, collector dead, max_buffer_bytes {_size(buffer)}, "
                        f"{api} {mode} ({n:,} calls)"
                    )
                dead[api][mode] = _run_worker(DEAD_IMPL, api, mode, n, buffer)
        results["collector_dead"].append(dead)
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
    """``reference / ours``, e.g. ``2.2x`` (two decimals below 0.1, so never ``0.0x``)."""
    if ours <= 0 or reference <= 0:
        return "-"
    ratio = reference / ours
    return f"{ratio:.1f}x" if ratio >= 0.095 else f"{ratio:.2f}x"


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
            for mode in MODES:
                got, want = case[mode]["on_disk"], case[mode]["n"]
                if got != want:
                    lines.append(f"  !! {impl} {api} {mode}: {got:,} of {want:,} records on disk")
    return "\n".join(lines)


def records_missing(results: dict[str, Any]) -> bool:
    """True if a case lost records: not on disk, or (collector dead) neither undelivered nor
    counted as dropped."""
    alive = any(
        results[impl][api][mode]["on_disk"] != results[impl][api][mode]["n"]
        for impl in IMPLS
        for api in APIS
        for mode in MODES
    )
    return alive or any(
        _dead_problems(dead[api][mode])
        for dead in results.get("collector_dead", ())
        for api in APIS
        for mode in MODES
    )


# -- the collector-dead tables ---------------------------------------------------


def _size(nbytes: float) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if nbytes >= scale:
            value = nbytes / scale
            return (
                f"{value:,.0f} {unit}"
                if value >= 10 or value.is_integer()
                else f"{value:.1f} {unit}"
            )
    return f"{nbytes:,.0f} B"


def _ms(value_us: float) -> str:
    value = value_us / 1e3
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _dead_values_us(case: dict[str, Any]) -> dict[str, float]:
    """The DEAD_ROWS of one roxxel case (alive or dead), in µs."""
    tp, lat = case["throughput"], case["latency"]
    n_tp = tp["n"]
    timer = lat["overhead_p50_ns"]
    return {
        "mean loop only": tp["loop_ns"] / n_tp / 1e3,
        "cpu loop only": tp["cpu_loop_ns"] / n_tp / 1e3,
        "cpu incl. close": tp["cpu_self_ns"] / n_tp / 1e3,
        "p50": max(0, lat["p50_ns"] - timer) / 1e3,
        "p99": max(0, lat["p99_ns"] - timer) / 1e3,
        "p99.9": max(0, lat["p999_ns"] - timer) / 1e3,
        "max": max(0, lat["max_ns"] - timer) / 1e3,
        "close()": (tp["total_ns"] - tp["loop_ns"]) / 1e3,
    }


def _dead_problems(result: dict[str, Any]) -> list[str]:
    """Why the records of one collector-dead pass do not add up (empty if they do)."""
    problems = []
    n, dropped, und = result["n"], result["dropped"], result["undelivered"]
    kept = und["metrics"] + und["lines"]
    if kept + dropped != n + 1:  # the warm-up record too
        problems.append(
            f"{kept:,} undelivered + {dropped:,} dropped records != {n + 1:,} logged "
            "(incl. the warm-up)"
        )
    if result.get("notices") != [kept]:  # the drop report is not a record
        problems.append(
            f"close()'s stderr notice(s) {result.get('notices')} != {kept:,} records in the file"
        )
    if result["left_in_log_dir"]:
        problems.append(f"left in the log dir: {result['left_in_log_dir']}")
    return problems


def _gc_text(lat: dict[str, Any]) -> str:
    return (
        f"gc gen0/1/2 = {'/'.join(map(str, lat['gc_count']))}, "
        f"longest {max(lat['gc_max_ns']) / 1e3:,.0f} µs wall, "
        f"{max(lat['gc_max_cpu_ns']) / 1e3:,.0f} µs CPU, "
        f"total {lat['gc_total_ns'] / 1e6:,.1f} ms wall"
    )


def format_dead_tables(results: dict[str, Any]) -> str:
    """Per max_buffer_bytes: alive vs. collector-dead numbers of roxxel, then notes."""
    lines: list[str] = []
    for dead in results.get("collector_dead", ()):
        lines += [
            f"{DEAD_SECTION}, max_buffer_bytes {_size(dead['max_buffer_bytes'])}; "
            "aggregator: a port where nothing listens, close_timeout=0",
            "",
            f"{'case':<42}{'alive':>12}{'dead':>13}{'ratio dead/alive':>18}",
        ]
        for api in APIS:
            alive = _dead_values_us(results["roxxel"][api])
            gone = _dead_values_us(dead[api])
            for row in DEAD_ROWS:
                fmt = _ms if row == "close()" else _us
                ratio = _ratio(alive[row], gone[row])
                lines.append(
                    f"{api + ' ' + row:<42}{fmt(alive[row]):>12}{fmt(gone[row]):>13}{ratio:>18}"
                )
            lines.append("")
        lines.append("notes:")
        for api in APIS:
            alive_lat = results["roxxel"][api]["latency"]
            for mode in MODES:
                r = dead[api][mode]
                und = r["undelivered"]
                text = (
                    f"  {api}, {mode} pass: dropped {r['dropped_in_loop']:,} records by the end "
                    f"of the loop, {r['dropped']:,} by close(); the undelivered file held "
                    f"{und['metrics'] + und['lines']:,} records "
                    f"({und['file_bytes'] / 1e6:,.1f} MB, deleted) and {und['reports']:,} "
                    "drop report(s) for "
                    f"{und['reported_metrics'] + und['reported_lines']:,} records; "
                    f"max RSS {r['max_rss_kib'] / 1024:,.0f} MiB "
                    f"(alive {results['roxxel'][api][mode]['max_rss_kib'] / 1024:,.0f} MiB)"
                )
                if mode == "latency":
                    slowest = ", ".join(f"#{i} {t / 1e3:,.0f}" for i, t in r["slowest"])
                    text += (
                        f"; close() {r['close_ns'] / 1e6:,.0f} ms; {_gc_text(r)} "
                        f"(alive: {_gc_text(alive_lat)}); slowest calls (index µs): {slowest}"
                    )
                lines.append(text)
                lines += [f"  !! {api} {mode}: {p}" for p in _dead_problems(r)]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


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
    parser.add_argument("--max-buffer-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    if n <= 0:
        parser.error("--n must be positive")
    if args.worker:
        impl, api, mode = args.worker
        if impl not in (*IMPLS, DEAD_IMPL) or api not in APIS or mode not in MODES:
            parser.error(f"bad --worker {args.worker}")
        _worker(impl, api, mode, n, args.log_dir, args.result, args.max_buffer_bytes)
        return 0

    def progress(text: str) -> None:
        print(f"running {text} ...", file=sys.stderr, flush=True)

    results = run(n, progress)
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
