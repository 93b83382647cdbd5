"""Measuring beyond the wall clock, and summarising samples: the per-call timer's
own cost, nearest-rank percentiles, garbage-collector pauses, CPU time of
child processes and peak RSS."""

from __future__ import annotations

import array
import math
import os
import resource
import time
from collections.abc import Sequence

__all__ = [
    "GcWatch",
    "timer_overhead",
    "percentile",
    "children_cpu_s",
    "child_pids",
    "stat_ticks",
    "reaped_children_cpu_s",
    "peak_rss_mib",
]


class GcWatch:
    """Counts collections per generation; keeps the longest, by wall and by CPU time.

    Install it in ``gc.callbacks``. Wall time can include waiting: this
    callback is Python code, so the collecting thread may hand the GIL to
    another thread (or be preempted) in the middle. The collecting thread's
    CPU time does not include that.
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


def timer_overhead(n: int) -> list[int]:
    """``n`` empty timed calls (``perf_counter_ns`` pairs), sorted: the timer's own cost."""
    # Preallocated, like the samples it is subtracted from: no allocation per sample.
    samples = array.array("q", bytes(8 * n))
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        samples[i] = clock() - t0
    return sorted(samples)


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values."""
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's live children (Linux /proc; else 0)."""
    total_ticks = 0
    for pid in child_pids("self"):
        try:
            total_ticks += sum(stat_ticks(pid, 11, 13))  # utime, stime
        except OSError:
            continue  # ended since the listing
    return total_ticks / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int | str) -> list[int]:
    """The live children of process ``pid`` (``"self"``: this one), from every
    thread's ``/proc/PID/task/TID/children``; none where /proc cannot tell."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += map(int, f.read().split())
        except OSError:
            continue
    return found


def stat_ticks(pid: int | str, start: int, stop: int) -> list[int]:
    """Fields ``start`` to ``stop`` of ``/proc/PID/stat`` after the command
    (11-12: user and system ticks; 13-14: those of the children waited for)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return [int(value) for value in fields[start:stop]]


def reaped_children_cpu_s() -> float:
    """CPU seconds of the children already waited for, which /proc no longer lists."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """This process's peak RSS so far (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
