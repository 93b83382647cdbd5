"""Records/s from the ranks of a real jax.distributed run into rank 0's collector.

``python -m benchmarks.pod_throughput [--processes 4] [--records 100000]``

Starts N processes on localhost (``JAX_PLATFORMS=cpu``), each
``jax.distributed.initialize()``s and creates a ``roxxel.Logger`` with no
endpoint (rank 0's collector is found through JAX's key-value store). Every
rank then logs ``--records`` WARNING lines as fast as it can and closes its
Logger; rank 0's close returns once every rank has said goodbye, so the time
from the first record to that point covers everything written to disk.
Reported: records written (counted in the file), wall time, records/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from .harness import free_port

__all__ = ["main"]


def _worker(port: int, rank: int, count: int, records: int, log_dir: str, start_file: str) -> None:
    import logging

    import jax

    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=count, process_id=rank
    )
    from roxxel import Logger

    lg = Logger(log_dir, "pod", close_timeout=300)
    client = jax._src.distributed.global_state.client
    client.wait_at_barrier("roxxel-bench-start", 60_000)
    if rank == 0:
        with open(start_file, "w") as f:
            f.write(repr(time.time()))
    for i in range(records):
        lg.log_message(f"rank {rank} record {i}", logging.WARNING)
    lg.close()
    if rank == 0:
        with open(start_file, "a") as f:
            f.write(f"\n{time.time()!r}")
    jax.distributed.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pod_throughput")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--records", type=int, default=100_000, help="per rank")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        port, rank, log_dir, start_file = (
            int(args.worker[0]),
            int(args.worker[1]),
            args.worker[2],
            args.worker[3],
        )
        _worker(port, rank, args.processes, int(args.worker[4]), log_dir, start_file)
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="roxxel-pod-bench-") as tmp:
        log_dir, times = os.path.join(tmp, "logs"), os.path.join(tmp, "times")
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.pod_throughput",
                    "--processes",
                    str(args.processes),
                    "--worker",
                    str(port),
                    str(rank),
                    log_dir,
                    times,
                    str(args.records),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for rank in range(args.processes)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"a rank failed: exit codes {codes}", file=sys.stderr)
            return 1
        with open(times) as f:
            started, ended = (float(x) for x in f.read().split())
        with open(os.path.join(log_dir, "pod_system.log"), encoding="utf-8") as f:
            written = sum(1 for line in f if " record " in line)
    expected = args.processes * args.records
    elapsed = ended - started
    print(
        f"{args.processes} jax.distributed processes on localhost, {args.records:,} WARNING "
        f"lines each: {written:,} of {expected:,} written in {elapsed:.2f} s = "
        f"{written / elapsed:,.0f} records/s into rank 0's files (collector included)"
    )
    return 0 if written == expected else 1


if __name__ == "__main__":
    sys.exit(main())
