"""The loss window of os.abort(): how old is the oldest record a killed process loses?

``python -m benchmarks.abort_window [--seconds 1.0] [--repeats 3] [--quick]``

A training process (default ``Logger``, embedded collector child) logs
metrics rows ``(step, t)`` -- as fast as it can, or paced at a given rate --
for ``--seconds``, then calls ``os.abort()``: no handler, ``finally`` or
``atexit`` runs. Every row's time is also stored in a memory-mapped file,
which outlives the process without being written at its end. Afterwards the
rows in the CSV are compared with the rows logged: how many are missing, and
how long before the abort the oldest missing one was logged (the loss
window). Every row must be in the CSV at most once.

Budget (the fatal-paths issue): rows leave the process within 20 ms at any
rate the collector can absorb (``flush_interval`` is 10 ms by default).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .harness import progress as stderr_progress
from .harness import roxxel_free_env

__all__ = ["ROWS", "start_logging_process", "loss_window", "main"]

ROWS = 8_000_000  # more than a process logs in the time a run takes
RATES = (0, 100_000, 10_000)  # rows/s; 0: as fast as it can
BUDGET_MS = 20.0

_CHILD = r"""
import ctypes, os, sys, time
import numpy as np
from roxxel import Logger

log_dir, how, times_path = sys.argv[1], sys.argv[2], sys.argv[3]
seconds, rate = float(sys.argv[4]), float(sys.argv[5])
times = np.memmap(times_path, dtype="float64", mode="r+", shape=(ROWS,))
with Logger(log_dir, "run") as lg:
    lg.log_metrics_summary(-1, {"t": 0.0}, all_ranks=True)
    lg.flush()
    now, log, i = time.time, lg.log_metrics_summary, 0
    start = now()
    deadline = start + seconds
    while i < ROWS - 1:
        t = now()
        if rate:
            while t < start + i / rate:
                t = now()
        times[i] = t
        log(i, {"t": t}, all_ranks=True)
        i += 1
        if t >= deadline and how != "wait":
            break
    times[ROWS - 1] = now()  # the end, as the process saw it
    if how == "abort":
        os.abort()
    if how == "segv":
        def read_address_zero():
            ctypes.string_at(0)
        read_address_zero()
    while True:  # "wait": until SIGKILL
        time.sleep(1)
""".replace("ROWS", str(ROWS))


def start_logging_process(
    work_dir: Path,
    how: str,
    seconds: float = 0.5,
    rate: float = 0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Path]:
    """A process logging ``(step, t)`` rows into ``work_dir/logs`` that ends by ``how``
    (``abort``, ``segv``; ``wait`` for a signal from outside). Returns it and its
    times file."""
    times = work_dir / "times.f64"
    np.memmap(times, dtype="float64", mode="w+", shape=(ROWS,)).flush()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(work_dir / "logs"),
            how,
            str(times),
            str(seconds),
            str(rate),
        ],
        env=env if env is not None else roxxel_free_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return process, times


def loss_window(csv_path: Path, times_path: Path, end: float | None = None) -> dict[str, Any]:
    """Which rows reached the CSV, against what the process logged and when it ended
    (``end``; by default the time the process wrote last)."""
    times = np.memmap(times_path, dtype="float64", mode="r", shape=(ROWS,))
    end = float(times[ROWS - 1]) if end is None else end
    logged = int(np.count_nonzero(times[: ROWS - 1]))
    with open(csv_path, encoding="utf-8", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    on_disk = [s for s in steps if s >= 0]
    present = set(on_disk)
    missing = np.array(sorted(set(range(logged)) - present), dtype=np.int64)
    ages = (end - times[missing]) * 1e3 if len(missing) else np.zeros(0)
    return {
        "logged": logged,
        "on_disk": len(present),
        "duplicates": len(on_disk) - len(present),
        "missing": len(missing),
        "old_missing": int(np.count_nonzero(ages > 100.0)),
        "oldest_missing_age_ms": float(ages.max()) if len(ages) else 0.0,
        "rate": logged / max(1e-9, end - float(times[0])) if logged else 0.0,
    }


def _one(rate: float, seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="roxxel-bench-abort-"))
    try:
        process, times = start_logging_process(work, "abort", seconds, rate)
        _, stderr = process.communicate(timeout=120)
        if process.returncode != -signal.SIGABRT:
            raise RuntimeError(f"expected SIGABRT, got {process.returncode}: {stderr[-500:]!r}")
        # The embedded collector writes what arrived, hears the watcher, then ends.
        log = work / "logs" / "run_system.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and "first failure of this run" in log.read_text(encoding="utf-8"):
                break
            time.sleep(0.05)
        result = loss_window(work / "logs" / "run_metrics.csv", times)
        result["notice"] = "ended by SIGABRT" in log.read_text(encoding="utf-8")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(seconds: float, repeats: int, progress: Any = None) -> dict[float, list[dict[str, Any]]]:
    results: dict[float, list[dict[str, Any]]] = {}
    for rate in RATES:
        for _ in range(repeats):
            if progress:
                progress(f"rate {rate or 'full speed'}")
            results.setdefault(rate, []).append(_one(rate, seconds))
    return results


def format_table(results: dict[float, list[dict[str, Any]]], seconds: float) -> str:
    lines = [
        f"os.abort() after {seconds:g} s of logging metrics rows (default Logger, embedded "
        f"collector), {os.cpu_count()} CPUs; loss window = age at the abort of the oldest "
        "row missing from the CSV",
        "",
        f"{'logging rate':<26}{'rows logged':>12}{'missing':>10}{'loss window':>14}{'budget':>16}",
    ]
    for rate, runs in results.items():
        window = max(r["oldest_missing_age_ms"] for r in runs)
        # Full speed outruns the collector (~0.3-0.6M rows/s here): what it
        # cannot take waits in the process, so no budget applies.
        met = "-" if not rate else "<=20 ms: " + ("met" if window <= BUDGET_MS else "MISSED")
        achieved = statistics.mean(r["rate"] for r in runs)
        label = f"full speed ({achieved:,.0f}/s)" if not rate else f"{rate:,.0f} rows/s"
        lines.append(
            f"{label:<26}{statistics.mean(r['logged'] for r in runs):>12,.0f}"
            f"{statistics.mean(r['missing'] for r in runs):>10,.0f}"
            f"{window:>11.1f} ms{met:>16}"
        )
    lines += [
        "",
        "budget: rows leave the process within 20 ms at any rate the collector can absorb; "
        "full speed is faster than it (what it cannot take yet waits in the process)",
        "notes (per run: missing rows, loss window, death notice in the log):",
    ]
    for rate, runs in results.items():
        label = "full speed" if not rate else f"{rate:,.0f} rows/s"
        per_run = "; ".join(
            f"{r['missing']:,} missing, {r['oldest_missing_age_ms']:.1f} ms, "
            f"notice {'yes' if r['notice'] else 'NO'}"
            + (f", {r['duplicates']} DUPLICATED" if r["duplicates"] else "")
            for r in runs
        )
        lines.append(f"  {label}: {per_run}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.abort_window")
    parser.add_argument("--seconds", type=float, default=1.0, help="logging before the abort")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="0.2 s, one run per rate")
    args = parser.parse_args(argv)
    seconds, repeats = (0.2, 1) if args.quick else (args.seconds, args.repeats)

    results = run(seconds, repeats, stderr_progress)
    print(format_table(results, seconds))
    bad = any(r["duplicates"] or not r["notice"] for runs in results.values() for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
