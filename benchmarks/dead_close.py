"""What ``close()`` costs when the collector is dead and the buffer bound is full.

``python -m benchmarks.dead_close [--max-buffer-mib 256] [--api log_message]``

Not part of ``python -m benchmarks`` (filling the default 256 MiB takes
millions of calls, and ``close()`` then several GB of memory): a roxxel
``Logger`` points at ``tcp://127.0.0.1:<a port where nothing listens>`` with
``close_timeout=0``; the caller logs in chunks of 100,000 calls until the
sender has dropped records (the bound is full), then ``close()`` is timed.
It writes every record it still holds to the undelivered file. Reported:
calls, loop time, records dropped, bytes held, ``close()`` wall time, the
process's peak RSS before and after ``close()`` and the file's size. The
temporary log dir (and the file) is deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

from .harness import free_port
from .stats import peak_rss_mib
from .workload import APIS, PREFIX, log_calls

CHUNK = 100_000
MAX_CALLS = 50_000_000


def measure(max_buffer_bytes: int, api: str) -> dict[str, float]:
    from roxxel import Logger

    tmp = tempfile.mkdtemp(prefix="roxxel-bench-dead-close-")
    try:
        logger = Logger(
            tmp,
            filename_prefix=PREFIX,
            aggregator=f"tcp://127.0.0.1:{free_port()}",
            close_timeout=0,
            max_buffer_bytes=max_buffer_bytes,
        )
        sender = logger._sender
        calls = 0
        t0 = time.perf_counter()
        while sender.dropped_total == 0 and calls < MAX_CALLS:
            log_calls(logger, api, calls, calls + CHUNK)
            calls += CHUNK
            time.sleep(0.02)  # let the sender thread cut and bound what is queued
        loop_s = time.perf_counter() - t0
        time.sleep(0.2)
        held, dropped = sender._outbox.held_bytes, sender.dropped_total
        rss_before = peak_rss_mib()
        stderr = io.StringIO()
        t1 = time.perf_counter()
        with contextlib.redirect_stderr(stderr):
            logger.close()
        close_s = time.perf_counter() - t1
        rss_after = peak_rss_mib()
        match = re.search(r"roxxel: (\d+) record\(s\) were not delivered", stderr.getvalue())
        path = os.path.join(tmp, f"{PREFIX}_undelivered_rank{logger.rank}.jsonl")
        file_bytes = os.path.getsize(path) if os.path.exists(path) else 0
        return {
            "calls": calls,
            "loop_s": loop_s,
            "dropped": dropped,
            "held_bytes": held,
            "close_s": close_s,
            "peak_rss_before_close_mib": rss_before,
            "peak_rss_after_close_mib": rss_after,
            "undelivered_records": int(match.group(1)) if match else 0,
            "undelivered_file_bytes": file_bytes,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dead_close",
        description="close() of a roxxel Logger whose collector is dead and buffer full.",
    )
    parser.add_argument("--max-buffer-mib", type=float, default=256.0)
    parser.add_argument("--api", choices=APIS, default="log_metrics_summary")
    args = parser.parse_args(argv)
    buffer = int(args.max_buffer_mib * 1024 * 1024)
    if buffer <= 0:
        parser.error("--max-buffer-mib must be positive")
    r = measure(buffer, args.api)
    print(
        f"collector dead, max_buffer_bytes {args.max_buffer_mib:g} MiB, {args.api}: "
        f"{r['calls']:,} calls in {r['loop_s']:.1f} s until the bound was hit; "
        f"{r['dropped']:,} records dropped, {r['held_bytes'] / 2**20:,.0f} MiB held\n"
        f"close() with close_timeout=0: {r['close_s'] * 1e3:,.0f} ms; peak RSS "
        f"{r['peak_rss_before_close_mib']:,.0f} MiB before close(), "
        f"{r['peak_rss_after_close_mib']:,.0f} MiB after; undelivered file "
        f"{r['undelivered_file_bytes'] / 1e6:,.0f} MB with {r['undelivered_records']:,} "
        "records (deleted)"
    )
    if not r["undelivered_records"] or not r["dropped"]:
        print("ERROR: the bound was not hit or nothing was left undelivered", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
