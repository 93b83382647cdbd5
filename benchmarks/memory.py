"""Peak RSS of a process logging millions of records: bounded by the buffer, not the count.

``python -m benchmarks.memory [--records 10000000] [--small 1000000] [--quick]``

Each case runs in its own fresh interpreter (``multiprocessing`` spawn) and
reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``:

* **collector dead**: ``Logger(aggregator="tcp://127.0.0.1:<a port where
  nothing listens>", close_timeout=0, max_buffer_bytes=B)`` for B = 64 MiB and
  the default 256 MiB; ``log_metrics_summary`` (4 float keys) called
  ``--small`` and ``--records`` times; ``close()`` writes what is held to the
  undelivered file, which is deleted afterwards;
* **collector alive**: ``Logger()`` with its embedded collector child,
  ``log_message`` called ``--small`` and ``--records`` times (the child's peak
  RSS is reported too, from ``RUSAGE_CHILDREN`` after ``close()``).

The calls are made in chunks of 100,000; between chunks the peak RSS so far
and the length of the sender's deques (records appended by the caller and not
yet taken by the sender thread) are sampled. Reported per case: the peak RSS
after the Logger was created and warmed up (baseline), at the end of the loop
and after ``close()``, the largest deque seen, records dropped, and the ratio
of the large to the small run's peak (1.0x = does not grow with the count).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .harness import forget_roxxel_env, free_port, progress
from .stats import peak_rss_mib
from .workload import MESSAGE, METRICS, PREFIX, log_calls, records_on_disk

__all__ = ["main", "measure"]

MIB = 1024 * 1024
CHUNK = 100_000
DEFAULT_RECORDS = 10_000_000
DEFAULT_SMALL = 1_000_000
QUICK_RECORDS = 200_000
QUICK_SMALL = 20_000
DEAD_BUFFERS = (64 * MIB, 256 * MIB)


def _deque_len(logger: Any) -> int:
    sender = logger._sender
    return len(sender.metrics) + len(sender.lines)


def _worker(case: str, buffer: int, n: int, out: Any) -> None:
    forget_roxxel_env()
    from roxxel import Logger

    tmp = tempfile.mkdtemp(prefix="roxxel-bench-memory-")
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the system log's echo (and the collector child's)
        os.dup2(devnull, 2)  # close()'s undelivered notice
        dead = case == "dead"
        if dead:
            logger = Logger(
                tmp,
                filename_prefix=PREFIX,
                aggregator=f"tcp://127.0.0.1:{free_port()}",
                close_timeout=0,
                max_buffer_bytes=buffer,
            )
            api = "log_metrics_summary"
        else:
            logger = Logger(tmp, filename_prefix=PREFIX, max_buffer_bytes=buffer)
            api = "log_message"
        if api == "log_metrics_summary":
            logger.log_metrics_summary(step=-1, metrics=METRICS)
        else:
            logger.log_message(MESSAGE)
        deadline = time.monotonic() + 60
        while (_deque_len(logger) if dead else records_on_disk(api, tmp) < 1) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        baseline = peak_rss_mib()
        max_deque = 0
        t0 = time.perf_counter()
        done = 0
        while done < n:
            stop = min(n, done + CHUNK)
            log_calls(logger, api, done, stop)
            done = stop
            max_deque = max(max_deque, _deque_len(logger))
        t1 = time.perf_counter()
        after_loop = peak_rss_mib()
        logger.close()
        t2 = time.perf_counter()
        undelivered = sum(
            os.path.getsize(os.path.join(tmp, name))
            for name in os.listdir(tmp)
            if name.startswith(f"{PREFIX}_undelivered_rank")
        )
        out.put(
            {
                "baseline_mib": baseline,
                "after_loop_mib": after_loop,
                "peak_mib": peak_rss_mib(),
                "child_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "max_deque": max_deque,
                "dropped": logger._sender.dropped_total,
                "on_disk": None if dead else records_on_disk(api, tmp) - 1,
                "undelivered_bytes": undelivered,
                "loop_s": t1 - t0,
                "close_s": t2 - t1,
                "n": n,
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the undelivered file too


def measure(case: str, buffer: int, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(case, buffer, n, out))
    proc.start()
    result = out.get(timeout=1800)
    proc.join(120)
    result["exit_code"] = proc.exitcode
    return result


def _cases(small: int, large: int) -> list[tuple[str, str, int, int]]:
    cases = []
    for buffer in DEAD_BUFFERS:
        for n in (small, large):
            label = f"dead, {buffer // MIB} MiB, {n:,} metrics"
            cases.append((label, "dead", buffer, n))
    for n in (small, large):
        cases.append((f"alive, 256 MiB, {n:,} lines", "alive", 256 * MIB, n))
    return cases


def format_table(results: list[tuple[str, dict[str, Any]]], small: int, large: int) -> str:
    lines = [
        f"peak RSS (ru_maxrss) of the logging process, {os.cpu_count()} CPUs; "
        "dead = aggregator at a closed port, close_timeout=0",
        "",
        f"{'case':<40}{'peak RSS':>10}{'limit':>10}{'ratio':>8}{f'/{small:,} run':>16}",
    ]
    by_label = dict(results)
    for label, r in results:
        buffer_mib = int(label.split(", ")[1].split()[0])
        small_label = label.replace(f"{r['n']:,}", f"{small:,}")
        growth = r["peak_mib"] / by_label[small_label]["peak_mib"]
        # The bound: what the process had before logging plus the configured buffer.
        limit = r["baseline_mib"] + buffer_mib
        lines.append(
            f"{label:<40}{r['peak_mib']:>6,.0f} MiB{limit:>6,.0f} MiB"
            f"{r['peak_mib'] / limit:>7.2f}x{growth:>15.2f}x"
        )
    lines += ["", "notes (limit = baseline RSS + max_buffer_bytes):"]
    for label, r in results:
        extra = (
            f"{r['on_disk']:,} of {r['n']:,} on disk (+ {r['dropped']:,} dropped); "
            "collector child peak "
            f"{r['child_peak_mib']:,.0f} MiB"
            if r["on_disk"] is not None
            else f"undelivered file {r['undelivered_bytes'] / 1e6:,.0f} MB (deleted)"
        )
        lines.append(
            f"  {label}: baseline {r['baseline_mib']:,.0f} MiB, end of loop "
            f"{r['after_loop_mib']:,.0f} MiB, after close() {r['peak_mib']:,.0f} MiB; "
            f"largest deque {r['max_deque']:,} records; dropped {r['dropped']:,}; "
            f"loop {r['loop_s']:.1f} s, close() {r['close_s']:.1f} s; {extra}"
        )
        if _lost(r):
            lines.append(
                f"  !! {label}: exit code {r['exit_code']}, on disk {r['on_disk']}, "
                f"dropped {r['dropped']:,}"
            )
    return "\n".join(lines)


def _lost(r: dict[str, Any]) -> bool:
    """A failed worker, or (collector alive) records neither on disk nor counted as dropped.

    With the collector alive but slower than the caller, a burst larger than
    ``max_buffer_bytes`` drops the oldest pending records by design (counted).
    """
    alive_lost = r["on_disk"] is not None and r["on_disk"] + r["dropped"] != r["n"]
    return bool(r["exit_code"]) or alive_lost


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--records", type=int, help=f"large run (default {DEFAULT_RECORDS:,})")
    parser.add_argument("--small", type=int, help=f"small run (default {DEFAULT_SMALL:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SMALL:,} and {QUICK_RECORDS:,} calls"
    )
    parser.add_argument(
        "--only", choices=("dead", "alive"), help="run only the dead or the alive cases"
    )
    args = parser.parse_args(argv)
    large = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    small = args.small or (QUICK_SMALL if args.quick else DEFAULT_SMALL)
    results = []
    for label, case, buffer, n in _cases(small, large):
        if args.only and case != args.only:
            continue
        progress(label)
        results.append((label, measure(case, buffer, n)))
    print(format_table(results, small, large))
    return 1 if any(_lost(r) for _, r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
