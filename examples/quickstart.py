"""A short fake training loop: the original roxxel API, now on roxxel's client and collector.

Run it with `make demo` (or `python examples/quickstart.py [LOG_DIR]`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile

from roxxel import Logger


def main() -> None:
    log_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="roxxel-demo-")
    with Logger(log_dir=log_dir, filename_prefix="run_alpha") as logger:
        logger.log_message("Initializing...")
        lr = 3e-4
        for step in range(1, 201):
            loss = 2.0 * math.exp(-step / 50) + 0.05
            metrics = {"loss": loss, "lr": lr}
            if step >= 100:
                metrics["grad_norm"] = 1.0 / step  # a key that appears mid-run
            logger.log_metrics_summary(step=step, metrics=metrics)
            if step % 50 == 0:
                logger.log_message(f"step {step}: loss {loss:.4f}")
            lr *= 0.99
        logger.log_message("learning rate fell below 1e-4", level=logging.WARNING)
        logger.log_message("Training finished.")
    print()
    print("roxxel wrote:")
    for path in (logger.sys_log_path, logger.metrics_csv_path, logger.metrics_jsonl_path):
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        print(f"  {os.path.abspath(path)}  ({len(lines)} lines)")
    with open(logger.metrics_csv_path, encoding="utf-8") as f:
        head = [next(f) for _ in range(3)]
    print("first rows of the metrics CSV:")
    print("  " + "  ".join(head), end="")


if __name__ == "__main__":
    main()
