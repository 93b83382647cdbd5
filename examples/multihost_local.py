"""A 4-process jax.distributed run on this machine, logging into one place.

Run it with `make demo` (or `python examples/multihost_local.py [LOG_DIR]`).
It starts 4 processes, each `jax.distributed.initialize()`s on localhost
(CPU), creates a `roxxel.Logger` with no endpoint -- rank 0 starts the
collector and publishes it in JAX's key-value store, the other ranks find it
there -- and runs a short fake training loop. Then it prints where the one
log is.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile

PROCESSES = 4


def worker(port: int, rank: int, log_dir: str) -> None:
    import jax

    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=rank
    )
    from roxxel import Logger

    with Logger(log_dir, filename_prefix="pod") as logger:
        logger.log_message(f"rank {logger.rank} of {logger.world_size} started")  # rank 0 only
        for step in range(1, 51):
            loss = 1.0 / step + 0.01 * logger.rank
            # Every rank's row, with a rank column: one CSV for the whole pod.
            logger.log_metrics_summary(step, {"loss": loss}, all_ranks=True)
        logger.log_message(f"rank {logger.rank}: done, final loss {loss:.4f}", logging.WARNING)
    jax.distributed.shutdown()


def launch(log_dir: str) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(port), str(rank), log_dir], env=env
        )
        for rank in range(PROCESSES)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"a process failed: exit codes {codes}", file=sys.stderr)
        return 1
    print()
    print(f"{PROCESSES} processes, one log (written by rank 0's collector only):")
    for name in sorted(os.listdir(log_dir)):
        if not name.startswith("."):
            path = os.path.join(log_dir, name)
            with open(path, encoding="utf-8") as f:
                count = sum(1 for _ in f)
            print(f"  {os.path.abspath(path)}  ({count} lines)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        target = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="roxxel-pod-")
        sys.exit(launch(target))
