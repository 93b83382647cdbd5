"""What logging costs the machine at a training loop's pace: the CPU of every
thread and process of a Logger while a loop logs at a steady rate.

``python -m benchmarks.background_cpu [--rates 0,10,125,1000] [--seconds 5] [--quick]``

For each rate, a fresh ``roxxel.Logger`` (default options: an embedded
collector child, the watcher) in this process, then a loop that logs one
metrics row (4 floats) per period, paced by ``time.sleep`` to absolute
deadlines, for ``--seconds``; rate 0 logs nothing (an idle Logger). CPU is
read from ``/proc`` per thread (the loop's own, the sender's, ZeroMQ's I/O
thread) and per child process (the collector, the watcher), in ms per
second of wall time. The same loop into the reference of the original
design (:mod:`benchmarks.reference`: its writer and listener threads) is
measured beside it. Also measured: what one wake-up of a sleeping thread
costs this machine (``time.sleep(0.01)`` in a loop, CPU per wake), the
unit in which background work is paid at low rates.

No budget: this explains the training-step figures (a CPU-bound step loses
what any of these take from its cores). Linux only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from .harness import forget_roxxel_env, progress
from .stats import child_pids, stat_ticks
from .workload import PREFIX, records_on_disk

__all__ = ["main"]

ROW = {"loss": 0.5, "grad_norm": 1.25, "lr": 3e-4, "accuracy": 0.75}
DEFAULT_RATES = (0, 10, 125, 1000)
COLUMNS = ("loop", "sender", "ZeroMQ I/O", "collector", "watcher", "other")


def wake_cost_us(wakes: int = 200) -> float:
    """CPU of one wake-up of a sleeping thread on this machine, in µs."""
    t0 = time.thread_time()
    for _ in range(wakes):
        time.sleep(0.01)
    return (time.thread_time() - t0) / wakes * 1e6


def _ticks(pid: str) -> int:
    """User and system ticks of ``/proc/{pid}`` (a process, or ``self/task/TID``)."""
    return sum(stat_ticks(pid, 11, 13))


def _snapshot(sender_tid: int | None) -> dict[str, int]:
    """Ticks so far per column: this process's threads, then its children."""
    seen = dict.fromkeys(COLUMNS, 0)
    me = threading.get_native_id()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            ticks = _ticks(f"self/task/{tid}")
        except OSError:
            continue  # ended since the listing
        if int(tid) == me:
            seen["loop"] += ticks
        elif int(tid) == sender_tid:
            seen["sender"] += ticks
        elif name.startswith("ZMQbg"):
            seen["ZeroMQ I/O"] += ticks
        else:
            seen["other"] += ticks  # the reference's threads, a resolver
    for pid in child_pids("self"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
            ticks = _ticks(str(pid))
        except OSError:
            continue
        seen["watcher" if b"deathwatch" in command else "collector"] += ticks
    return seen


def _paced_loop(logger: Any, rate: float, seconds: float) -> None:
    if rate == 0:
        time.sleep(seconds)
        return
    period, start = 1.0 / rate, time.monotonic()
    for i in range(int(seconds * rate)):
        logger.log_metrics_summary(i, ROW)
        time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))


def measure_one(impl: str, rate: float, seconds: float, log_dir: str) -> dict[str, Any]:
    """CPU ms per second per column while ``impl`` logs ``rate`` rows/s."""
    if impl == "roxxel":
        from roxxel import Logger

        logger = Logger(log_dir, filename_prefix=PREFIX)
        assert logger.flush(timeout=60)
        sender_tid = logger._sender._thread.native_id  # which thread is whose
    else:
        from .reference import ReferenceLogger

        logger = ReferenceLogger(log_dir, filename_prefix=PREFIX)
        sender_tid = None
    time.sleep(0.5)  # start-up work (the collector's imports) out of the window
    before, t0 = _snapshot(sender_tid), time.monotonic()
    _paced_loop(logger, rate, seconds)
    after, wall = _snapshot(sender_tid), time.monotonic() - t0
    logger.close()
    tick = os.sysconf("SC_CLK_TCK")
    ms_per_s = {c: (after[c] - before[c]) / tick / wall * 1e3 for c in COLUMNS}
    rows = int(seconds * rate)
    on_disk = records_on_disk("log_metrics_summary", log_dir)
    return {"impl": impl, "rate": rate, "ms_per_s": ms_per_s, "rows": rows, "on_disk": on_disk}


def measure(rates: Sequence[float], seconds: float) -> dict[str, Any]:
    forget_roxxel_env()
    tmp = tempfile.mkdtemp(prefix="roxxel-bench-background-")
    stdout = os.dup(1)
    results = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the system logs' echo
        for rate in rates:
            for impl in ("roxxel", "reference"):
                progress(f"{impl} at {rate:g} rows/s for {seconds:g} s")
                log_dir = os.path.join(tmp, f"{impl}-{rate:g}")
                results.append(measure_one(impl, rate, seconds, log_dir))
        wake = wake_cost_us()
    finally:
        os.dup2(stdout, 1)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"results": results, "wake_us": wake, "seconds": seconds}


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"CPU while a loop logs a metrics row at a steady rate, {r['seconds']:g} s per case; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
        "(ms of CPU per second of wall time; clock ticks of "
        f"{1e3 / os.sysconf('SC_CLK_TCK'):.0f} ms, so small figures are coarse)",
        "",
        f"{'rows/s':>7} {'impl':<10}" + "".join(f"{c:>12}" for c in COLUMNS) + f"{'total':>9}",
    ]
    for result in r["results"]:
        ms = result["ms_per_s"]
        lines.append(
            f"{result['rate']:>7g} {result['impl']:<10}"
            + "".join(f"{ms[c]:>12.1f}" for c in COLUMNS)
            + f"{sum(ms.values()):>9.1f}"
        )
    missing = [x for x in r["results"] if x["on_disk"] != x["rows"]]
    for result in missing:
        lines.append(
            f"  !! {result['impl']} at {result['rate']:g} rows/s: {result['on_disk']:,} of "
            f"{result['rows']:,} rows in the CSV"
        )
    lines += [
        "",
        f"one wake-up of a sleeping thread (time.sleep(0.01) in a loop): {r['wake_us']:.0f} µs "
        "of CPU on this machine",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.background_cpu")
    parser.add_argument(
        "--rates",
        default=",".join(map(str, DEFAULT_RATES)),
        help="rows per second, comma-separated (0: an idle Logger)",
    )
    parser.add_argument("--seconds", type=float, help="per case (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 s per case")
    args = parser.parse_args(argv)
    try:
        rates = [float(rate) for rate in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates: numbers, comma-separated, not {args.rates!r}")
    if any(rate < 0 for rate in rates):
        parser.error("--rates: not negative")
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    r = measure(rates, seconds)
    print(format_table(r))
    return 0 if all(x["on_disk"] == x["rows"] for x in r["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
