"""Training-step overhead: a jitted JAX step on CPU with and without logging every step.

``python -m benchmarks.train_step [--steps 2000] [--repeats 5] [--quick]``

``JAX_PLATFORMS=cpu`` (set before JAX is imported). The step: a 2-layer MLP
(``--inputs`` 512 -> ``--hidden`` 256 -> 10, tanh), batch 64, softmax
cross-entropy, ``jax.value_and_grad`` and an SGD update, all in one
``jax.jit``; it returns the new parameters, the loss and the gradient norm.
A run is ``--steps`` steps; its time is from the first step until
``jax.block_until_ready`` of the last parameters. With logging on, every step
also calls ``logger.log_metrics_summary(step, {"loss": loss, "grad_norm":
gnorm, "lr": LR, "global_step": step})`` where ``loss`` and ``gnorm`` are the
``jax.Array``\\ s the step returned, not converted (with asynchronous dispatch
they are usually still being computed). One ``roxxel.Logger`` with default
options (embedded collector child process) serves all on runs; off and on
runs alternate ``--repeats`` times, off-on then on-off (after one warm-up run
of each). Reported:
mean step time off and on and the overhead; the rows are counted in the CSV
after ``close()``.

Budget (DESIGN.md): logging on is <= 1 % slower.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .harness import forget_roxxel_env
from .stats import children_cpu_s

__all__ = ["main"]

PREFIX = "bench"
LR = 0.01
BATCH = 64
BUDGET = 0.01


def _setup(inputs: int, hidden: int) -> tuple[Any, Any, Any, Any]:
    import jax
    import jax.numpy as jnp

    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": jax.random.normal(k1, (inputs, hidden)) * (1 / inputs**0.5),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 10)) * (1 / hidden**0.5),
        "b2": jnp.zeros(10),
    }
    x = jax.random.normal(k3, (BATCH, inputs))
    y = jax.random.randint(k4, (BATCH,), 0, 10)

    def loss_fn(p: Any, x: Any, y: Any) -> Any:
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(p: Any, x: Any, y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        gnorm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
        new = jax.tree_util.tree_map(lambda a, g: a - LR * g, p, grads)
        return new, loss, gnorm

    return step, params, x, y


def _run(
    step: Any, params: Any, x: Any, y: Any, k: int, logger: Any, first: int
) -> tuple[float, float]:
    """Wall time and CPU time (this process with XLA's threads, plus the
    collector child) of ``k`` steps."""
    import jax

    cpu0 = time.process_time() + children_cpu_s()
    t0 = time.perf_counter()
    if logger is None:
        for _ in range(k):
            params, loss, gnorm = step(params, x, y)
    else:
        log = logger.log_metrics_summary
        for i in range(first, first + k):
            params, loss, gnorm = step(params, x, y)
            log(i, {"loss": loss, "grad_norm": gnorm, "lr": LR, "global_step": i})
    jax.block_until_ready(params)
    return time.perf_counter() - t0, time.process_time() + children_cpu_s() - cpu0


def measure(steps: int, repeats: int, inputs: int, hidden: int) -> dict[str, Any]:
    os.environ["JAX_PLATFORMS"] = "cpu"
    forget_roxxel_env()
    import jax

    from roxxel import Logger

    step, params, x, y = _setup(inputs, hidden)
    jax.block_until_ready(step(params, x, y))  # compile
    tmp = tempfile.mkdtemp(prefix="roxxel-bench-train-")
    stdout = os.dup(1)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the system log's echo (and the collector child's)
        logger = Logger(tmp, filename_prefix=PREFIX)
        logged = 0
        _run(step, params, x, y, steps, None, 0)  # warm-up runs
        _run(step, params, x, y, steps, logger, logged)
        logged += steps
        off, on, cpu_off, cpu_on = [], [], [], []
        for r in range(repeats):
            # Off-on, then on-off (ABBA): a drift of the machine's speed
            # during the runs does not favour either side.
            for logging_on in (False, True) if r % 2 == 0 else (True, False):
                if logging_on:
                    wall, cpu = _run(step, params, x, y, steps, logger, logged)
                    on.append(wall / steps)
                    cpu_on.append(cpu / steps)
                    logged += steps
                else:
                    wall, cpu = _run(step, params, x, y, steps, None, 0)
                    off.append(wall / steps)
                    cpu_off.append(cpu / steps)
        t_close = time.perf_counter()
        logger.close()
        close_s = time.perf_counter() - t_close
        with open(os.path.join(tmp, f"{PREFIX}_metrics.csv"), encoding="utf-8") as f:
            rows = sum(1 for _ in f) - 1
    finally:
        os.dup2(stdout, 1)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "off": off,
        "on": on,
        "cpu_off": cpu_off,
        "cpu_on": cpu_on,
        "rows": rows,
        "logged": logged,
        "close_s": close_s,
        "steps": steps,
        "jax": jax.__version__,
    }


def format_table(r: dict[str, Any], inputs: int, hidden: int) -> str:
    off, on = statistics.mean(r["off"]), statistics.mean(r["on"])
    overhead = on / off - 1
    pairs = [b / a - 1 for a, b in zip(r["off"], r["on"], strict=True)]
    cpu_off, cpu_on = statistics.mean(r["cpu_off"]), statistics.mean(r["cpu_on"])
    met = "met" if overhead <= BUDGET else "MISSED"
    lines = [
        f"jitted MLP step on CPU ({inputs}->{hidden}->10, batch {BATCH}, SGD), "
        f"{r['steps']:,} steps per run, {len(r['off'])} off/on pairs; jax {r['jax']}, "
        f"{os.cpu_count()} CPUs",
        "",
        f"{'case':<30}{'logging on':>13}{'off (ref)':>13}{'overhead':>10}{'budget':>16}",
        f"{'mean step time':<30}{on * 1e6:>10.1f} µs{off * 1e6:>10.1f} µs{overhead:>+10.1%}"
        f"{'<=1%: ' + met:>16}",
        "",
        "notes:",
        "  per-run step times off (µs): " + ", ".join(f"{t * 1e6:.1f}" for t in r["off"]),
        "  per-run step times on  (µs): " + ", ".join(f"{t * 1e6:.1f}" for t in r["on"]),
        "  per-pair overhead: "
        + ", ".join(f"{p:+.1%}" for p in pairs)
        + f"; median {statistics.median(pairs):+.1%}",
        f"  CPU per step (this process incl. XLA's threads + the collector child): "
        f"off {cpu_off * 1e6:.1f} µs, on {cpu_on * 1e6:.1f} µs, logging "
        f"{(cpu_on - cpu_off) * 1e6:+.1f} µs = {(cpu_on - cpu_off) / off:+.1%} of the step's "
        f"wall time off",
        f"  {r['rows']:,} of {r['logged']:,} rows in the CSV after close() "
        f"({r['close_s'] * 1e3:,.0f} ms)",
    ]
    if r["rows"] != r["logged"]:
        lines.append(f"  !! {r['rows']:,} of {r['logged']:,} rows in the CSV")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step")
    parser.add_argument("--steps", type=int, help="steps per run (default 2000)")
    parser.add_argument("--repeats", type=int, help="off/on pairs (default 5)")
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="200 steps, 2 pairs")
    args = parser.parse_args(argv)
    quick = (200, 2) if args.quick else (2000, 5)
    args.steps = args.steps or quick[0]
    args.repeats = args.repeats or quick[1]
    r = measure(args.steps, args.repeats, args.inputs, args.hidden)
    print(format_table(r, args.inputs, args.hidden))
    return 0 if r["rows"] == r["logged"] else 1


if __name__ == "__main__":
    sys.exit(main())
