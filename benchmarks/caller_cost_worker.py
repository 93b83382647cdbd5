"""One pass of one caller-cost case, run in a fresh interpreter.

``python -m benchmarks.caller_cost --worker IMPL API MODE ...`` lands here:
make the implementation's Logger in a fresh ``log_dir``, make one warm-up call
and wait until it is through, then run the throughput or the latency pass
(see :mod:`benchmarks.caller_cost`), count what reached the files (or, with
the collector dead, the undelivered file and the drop count) and write the
numbers as JSON to the result file.
"""

from __future__ import annotations

import array
import contextlib
import gc
import heapq
import json
import os
import resource
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgpack

from roxxel.undelivered import read_unsent

from .harness import free_port
from .stats import GcWatch, children_cpu_s, percentile, reaped_children_cpu_s, timer_overhead
from .workload import (
    MESSAGE,
    METRICS,
    METRICS_SERIES,
    PREFIX,
    SERIES_MASK,
    log_calls,
    records_on_disk,
)

__all__ = ["IMPLS", "DEAD_IMPL", "FLOOR_IMPL", "DEFAULT_BUFFER", "MODES", "worker"]

IMPLS = ("roxxel", "reference")
MODES = ("throughput", "latency")
# The collector-dead case (roxxel only).
DEAD_IMPL = "roxxel-dead"
# The least a call can cost (issue 17): appending the record a Logger queues to a deque.
FLOOR_IMPL = "deque-floor"


class DequeFloor:
    """What a Logger's call does at the least: the tuple it queues
    (``(kind, names, time, step, values)`` or ``(kind, time, level, text)``),
    appended to a deque; no thread takes them."""

    def __init__(self) -> None:
        self.records: deque[tuple] = deque()

    def log_metrics_summary(self, step: int, metrics: dict[str, Any]) -> None:
        self.records.append(("m", tuple(metrics), time.time(), step, tuple(metrics.values())))

    def log_message(self, message: str, level: int = 20) -> None:
        self.records.append(("l", time.time(), level, message))


def _floor(api: str, n: int) -> dict[str, Any]:
    floor = DequeFloor()
    gc.collect()
    t0 = time.perf_counter_ns()
    log_calls(floor, api, 0, n)
    return {"loop_ns": time.perf_counter_ns() - t0, "n": n}


DEFAULT_BUFFER = 256 * 1024 * 1024  # roxxel.Logger's default max_buffer_bytes


def _make_logger(impl: str, log_dir: str, max_buffer_bytes: int | None = None) -> Any:
    """The Logger under test: roxxel (default options), roxxel with its collector
    dead (a port where nothing listens, close_timeout=0), or the reference."""
    if impl == "roxxel":
        from roxxel import Logger

        return Logger(log_dir, filename_prefix=PREFIX)
    if impl == DEAD_IMPL:
        from roxxel import Logger

        os.makedirs(log_dir, exist_ok=True)
        return Logger(
            log_dir,
            filename_prefix=PREFIX,
            aggregator=f"tcp://127.0.0.1:{free_port()}",
            close_timeout=0,
            max_buffer_bytes=max_buffer_bytes or DEFAULT_BUFFER,
        )
    if impl == "reference":
        from benchmarks.reference import ReferenceLogger

        return ReferenceLogger(log_dir, filename_prefix=PREFIX)
    raise ValueError(f"unknown implementation {impl!r}")


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
            done = records_on_disk(api, log_dir) >= 1
        if done:
            break
        if time.monotonic() > deadline:
            where = "the sender thread" if dead else "the disk"
            raise RuntimeError(f"the warm-up record did not reach {where} within 60 s")
        time.sleep(0.01)
    time.sleep(0.05)


def _throughput(logger: Any, api: str, n: int) -> dict[str, Any]:
    gc.collect()
    child_cpu0 = children_cpu_s() + reaped_children_cpu_s()
    cpu0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    log_calls(logger, api, 0, n)
    t1 = time.perf_counter_ns()
    cpu_loop = time.process_time_ns()
    dropped_in_loop = _dropped(logger)
    logger.close()
    t2 = time.perf_counter_ns()
    cpu1 = time.process_time_ns()
    child_cpu1 = children_cpu_s() + reaped_children_cpu_s()
    return {
        "loop_ns": t1 - t0,
        "total_ns": t2 - t0,
        "cpu_loop_ns": cpu_loop - cpu0,
        "cpu_self_ns": cpu1 - cpu0,
        "cpu_children_ns": int((child_cpu1 - child_cpu0) * 1e9),
        "dropped_in_loop": dropped_in_loop,
    }


def _latency(logger: Any, api: str, n: int, overhead: Sequence[int]) -> dict[str, Any]:
    samples = array.array("q", bytes(8 * n))
    clock = time.perf_counter_ns
    series, mask = METRICS_SERIES, SERIES_MASK
    message = MESSAGE
    watch = GcWatch()
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
        "overhead_p50_ns": percentile(overhead, 0.5),
        "overhead_p99_ns": percentile(overhead, 0.99),
        "p50_ns": percentile(ordered, 0.5),
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1],
        "slowest": [[i, samples[i]] for i in slowest],
        "gc_count": watch.count,
        "gc_max_ns": watch.max_ns,
        "gc_max_cpu_ns": watch.max_cpu_ns,
        "gc_total_ns": watch.total_ns,
        "dropped_in_loop": dropped_in_loop,
        "close_ns": close_ns,
    }


def worker(
    impl: str,
    api: str,
    mode: str,
    n: int,
    log_dir: str,
    result_path: str,
    max_buffer_bytes: int | None = None,
) -> None:
    """One pass (``mode``) of ``n`` calls of ``api`` on ``impl``; the numbers go to
    ``result_path`` as JSON."""
    if impl == FLOOR_IMPL:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(_floor(api, n), f)
        return
    # The timer's own cost, sampled before the Logger (and its threads) exist.
    overhead = timer_overhead(n) if mode == "latency" else []
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
        result["max_buffer_bytes"] = logger._route.options.max_buffer_bytes
        result["undelivered"] = _undelivered(log_dir)  # and deletes the file
        result["left_in_log_dir"] = sorted(os.listdir(log_dir))
    else:
        result["on_disk"] = records_on_disk(api, log_dir) - 1  # minus the warm-up record
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
