"""One process of a jax.distributed run on localhost (the multi-host tests' worker).

    python tests/pod_worker.py PORT PROCESS_ID NUM_PROCESSES LOG_DIR [--logger-first] [--all-ranks]

Every rank logs an INFO line, a WARNING and a metrics row; rank 2 (if there
is one) crashes inside ``with`` and catches the exception outside it, so
every process exits 0. ``--logger-first`` creates the Logger before
``jax.distributed.initialize()`` (the rank then comes from SLURM_PROCID).
``--all-ranks`` adds a row from every rank with ``all_ranks=True``;
``--coordinator HOST`` puts JAX's coordinator on HOST instead of 127.0.0.1.
``--hang SECONDS`` sets JAX's heartbeat timeout to SECONDS and, after the
logging, creates ``LOG_DIR.ready`` and waits (for a peer's death: JAX then
aborts this process), without closing the Logger. ``--capture NAMES`` passes
``capture=NAMES.split(",")`` to the Logger.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import jax

from roxxel import Logger


def main() -> None:
    port, process_id, count, log_dir = sys.argv[1:5]
    logger_first = "--logger-first" in sys.argv
    host = sys.argv[sys.argv.index("--coordinator") + 1] if "--coordinator" in sys.argv else None
    init = dict(
        coordinator_address=f"{host or '127.0.0.1'}:{port}",
        num_processes=int(count),
        process_id=int(process_id),
    )
    if "--hang" in sys.argv:
        init["heartbeat_timeout_seconds"] = int(sys.argv[sys.argv.index("--hang") + 1])
        jax.distributed.initialize(**init)
        lg = Logger(log_dir, "pod", close_timeout=60)
        lg.log_message(f"rank {lg.rank} waits", level=logging.WARNING)
        lg.flush()
        Path(log_dir + ".ready").touch()
        time.sleep(300)
    if not logger_first:
        jax.distributed.initialize(**init)
    capture = (
        sys.argv[sys.argv.index("--capture") + 1].split(",") if "--capture" in sys.argv else ()
    )
    try:
        with Logger(log_dir, "pod", close_timeout=60, capture=capture) as lg:
            if logger_first:
                jax.distributed.initialize(**init)
            assert lg.rank == jax.process_index(), (lg.rank, jax.process_index())
            lg.log_message(f"info from rank {lg.rank}")
            lg.log_message(f"warning from rank {lg.rank}", level=logging.WARNING)
            lg.log_metrics_summary(step=1, metrics={"loss": 0.5})
            if "--all-ranks" in sys.argv:
                lg.log_metrics_summary(step=2, metrics={"acc": lg.rank / 10}, all_ranks=True)
            if lg.rank == 2:
                raise RuntimeError("rank 2 diverged")
    except RuntimeError:
        pass
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
