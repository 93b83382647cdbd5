"""Metric names that keep appearing: what the collector writes and spends for them.

``python -m benchmarks.new_names [--rows 2000] [--quick]``

One ``roxxel-aggregator`` daemon per case, one ``roxxel.Logger`` client (in
this process) sending one row per batch (a ``flush()`` after each), as a
run whose names grow by one per step does (per-class accuracies, per-layer
norms appearing as they are first computed). Two cases side by side:

* **new names**: row ``i`` holds ``loss`` and ``norm_0`` .. ``norm_i``;
* **fixed names**: row ``i`` holds ``loss`` and ``norm_0`` only.

Reported per case: the bytes the daemon wrote (``wchar`` of
``/proc/PID/io``: files, checkpoint and its journal), the final sizes of its
files, their ratio, and the daemon's CPU per row.

Budget (issue 16): with new names, bytes written <= 4x the files' final
sizes, and collector CPU per row <= 10x that of fixed names.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .harness import collector_usage, forget_roxxel_env, progress, start_daemon

__all__ = ["main", "measure"]

DEFAULT_ROWS = 2000
QUICK_ROWS = 300
BYTES_BUDGET = 4.0
CPU_BUDGET = 10.0
PREFIX = "names"


def _written_and_cpu(pid: int) -> tuple[int, float]:
    cpu, written = collector_usage(pid)
    return written, cpu


def measure(rows: int, new_names: bool) -> dict[str, Any]:
    """One case: the daemon's bytes written, its CPU, the files' final sizes."""
    from roxxel import Logger

    log_dir = tempfile.mkdtemp(prefix="roxxel-bench-names-")
    daemon, endpoint = start_daemon(log_dir, PREFIX)
    try:
        written0, cpu0 = _written_and_cpu(daemon.pid)
        with Logger(log_dir + "-client", PREFIX, aggregator=endpoint, watcher=False) as log:
            for i in range(rows):
                names = i + 1 if new_names else 1
                log.log_metrics_summary(
                    i, {"loss": 1.0, **{f"norm_{k}": 0.5 for k in range(names)}}
                )
                if not log.flush(60):
                    raise RuntimeError(f"row {i} was not acknowledged")
        written, cpu = _written_and_cpu(daemon.pid)
        daemon.terminate()
        daemon.wait(60)
        files = sum(
            os.path.getsize(os.path.join(log_dir, name))
            for name in os.listdir(log_dir)
            if name.startswith(f"{PREFIX}_")
        )
        return {"written": written - written0, "files": files, "cpu_per_row": (cpu - cpu0) / rows}
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(log_dir, ignore_errors=True)
        shutil.rmtree(log_dir + "-client", ignore_errors=True)


def format_table(rows: int, new: dict[str, Any], fixed: dict[str, Any]) -> str:
    lines = [
        f"one row per batch, {rows:,} rows; new names: row i holds i + 2 metrics",
        f"{'case':<12} {'bytes written':>15} {'files':>13} {'ratio':>7} {'CPU/row':>10}",
    ]
    for name, case in (("new names", new), ("fixed names", fixed)):
        lines.append(
            f"{name:<12} {case['written']:>15,} {case['files']:>13,} "
            f"{case['written'] / case['files']:>6.2f}x {case['cpu_per_row'] * 1e6:>8.0f} µs"
        )
    ratio = new["written"] / new["files"]
    cpu = new["cpu_per_row"] / max(fixed["cpu_per_row"], 1e-9)
    lines.append(
        f"budget: bytes written <= {BYTES_BUDGET:.0f}x the files: {ratio:.2f}x "
        f"({'met' if ratio <= BYTES_BUDGET else 'NOT met'}); CPU per row <= "
        f"{CPU_BUDGET:.0f}x fixed names: {cpu:.1f}x ({'met' if cpu <= CPU_BUDGET else 'NOT met'})"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.new_names")
    parser.add_argument("--rows", type=int, help=f"default {DEFAULT_ROWS:,}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows")
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    forget_roxxel_env()
    progress(f"new names, {rows:,} rows")
    new = measure(rows, new_names=True)
    progress(f"fixed names, {rows:,} rows")
    fixed = measure(rows, new_names=False)
    print(format_table(rows, new, fixed))
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    progress(f"done in {time.monotonic() - t0:.0f} s")
    sys.exit(code)
