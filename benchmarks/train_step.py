"""Training-step overhead: a jitted JAX step, on CPU or a GPU, with and without
logging every step (issue 17).

``python -m benchmarks.train_step [--platform cpu|gpu] [--size tiny|small|medium]
[--batch B] [--steps N] [--rounds R] [--quick]``

The step (``--size``; ``--d``, ``--layers`` and ``--batch`` override a size's):

* an MLP of ``layers`` ``d`` x ``d`` weight matrices, GELU between them, mean
  squared error against a fixed target, ``jax.value_and_grad`` and an SGD
  update, all in one ``jax.jit``; it returns the new weights, the loss and
  the global gradient norm as ``jax.Array``\\ s;
* bfloat16 weights and activations on a GPU, float32 on CPU (XLA's CPU
  backend emulates bfloat16 matmuls: slower, and not what a CPU run uses);
* ``tiny`` (d 256, 2 layers, batch 64) and ``small`` (d 1024, 4 layers,
  batch 256) are dispatch-bound on a GPU (~0.17 ms a step); ``medium`` (d
  4096, 8 layers, batch 1024) is ~1.6 ms of compute on an H200.

The cases, all in one process:

* ``off``: no logging;
* ``roxxel``: a ``roxxel.Logger`` (default options: an embedded collector
  child) gets ``log_metrics_summary(i, {"loss": loss, "grad_norm": gnorm,
  "lr": LR, "global_step": i})`` every step, with the step's unconverted
  arrays (``step`` itself is a reserved column name in roxxel's CSV);
* ``reference``: the same call into the original design
  (:mod:`benchmarks.reference`), whose writer thread formats each array;
* ``float``: the naive fix, ``float(loss)`` and ``float(gnorm)`` before the
  same call into the roxxel Logger -- a device sync every step.

Each run is ``--steps`` steps, timed from the first dispatch to
``jax.block_until_ready`` of the last weights. Rounds run the cases in
order, then reversed (ABCD DCBA ...), after one untimed round. What could
make one case pay for another is removed before every run: the previous
run's device work is finished, its logging backlog is on disk (``flush()``
of the roxxel Logger, the reference's queue drained) and the garbage of the
previous run is collected. Each logging case's overhead is taken against
the ``off`` run of the same round (pairs), reported as the median of pairs
and its interquartile range. On a GPU the SM clock, temperature and power
are read with ``nvidia-smi`` before and after (when it is there; the
benchmark never changes the device's settings). After the runs every row
is counted in each Logger's CSV.

Budgets (issue 17): GPU ~1.6 ms step <= 0.5 %, ~0.17 ms step <= 3 %, and
never slower than the original design; CPU <= 1 %.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from .harness import forget_roxxel_env
from .stats import children_cpu_s

__all__ = ["main", "SIZES", "CASES"]

PREFIX = "bench"
LR = 1e-3
CASES = ("off", "roxxel", "reference", "float")


class Size(NamedTuple):
    d: int
    layers: int
    batch: int


SIZES = {
    "tiny": Size(256, 2, 64),
    "small": Size(1024, 4, 256),
    "medium": Size(4096, 8, 1024),
}
# (steps per run, rounds): many short runs, so that a drift of the machine's
# speed lands in every case alike.
DEFAULT_RUNS = (300, 10)
QUICK_RUNS = (50, 2)


def budget(platform: str, size: Size) -> float:
    """The largest overhead issue 17 allows for this step."""
    if platform == "cpu":
        return 0.01
    return 0.005 if size.d * size.batch >= SIZES["medium"].d * SIZES["medium"].batch else 0.03


def _setup(size: Size, dtype_name: str) -> tuple[Any, Any, Any, Any]:
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    keys = jax.random.split(jax.random.PRNGKey(0), size.layers + 2)
    weights = [
        (jax.random.normal(k, (size.d, size.d)) / size.d**0.5).astype(dtype)
        for k in keys[: size.layers]
    ]
    x = jax.random.normal(keys[-2], (size.batch, size.d)).astype(dtype)
    y = jax.random.normal(keys[-1], (size.batch, size.d)).astype(dtype)

    def loss_fn(ws: Any, x: Any, y: Any) -> Any:
        h = x
        for w in ws[:-1]:
            h = jax.nn.gelu(h @ w)
        return jnp.mean(jnp.square((h @ ws[-1] - y).astype(jnp.float32)))

    @jax.jit
    def step(ws: Any, x: Any, y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(ws, x, y)
        gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))
        new = [w - (LR * g).astype(w.dtype) for w, g in zip(ws, grads, strict=True)]
        return new, loss, gnorm

    return step, weights, x, y


class _Bench:
    """The step, its state and the two Loggers; one :meth:`run` per timed run."""

    def __init__(self, step: Any, weights: Any, x: Any, y: Any, roxxel: Any, reference: Any):
        self.step, self.weights, self.x, self.y = step, weights, x, y
        self.loggers = {"roxxel": roxxel, "reference": reference, "float": roxxel}
        self.logged = {"roxxel": 0, "reference": 0}  # rows sent to each Logger
        self._next_step = {"roxxel": 0, "reference": 0}

    def settle(self) -> None:
        """Nothing of the previous run left to compete with the next one."""
        import jax

        jax.block_until_ready(self.weights)
        self.loggers["roxxel"].flush(timeout=120)
        self.loggers["reference"].flush()
        gc.collect()

    def run(self, case: str, k: int) -> tuple[float, float]:
        """Wall time and CPU time (this process with XLA's threads, plus the
        collector child) of ``k`` steps of ``case``."""
        import jax

        self.settle()
        step, ws, x, y = self.step, self.weights, self.x, self.y
        name = "reference" if case == "reference" else "roxxel"
        first = self._next_step[name]
        cpu0 = time.process_time() + children_cpu_s()
        t0 = time.perf_counter()
        if case == "off":
            for _ in range(k):
                ws, loss, gnorm = step(ws, x, y)
        elif case == "float":
            log = self.loggers[case].log_metrics_summary
            for i in range(first, first + k):
                ws, loss, gnorm = step(ws, x, y)
                log(i, {"loss": float(loss), "grad_norm": float(gnorm), "lr": LR, "global_step": i})
        else:
            log = self.loggers[case].log_metrics_summary
            for i in range(first, first + k):
                ws, loss, gnorm = step(ws, x, y)
                log(i, {"loss": loss, "grad_norm": gnorm, "lr": LR, "global_step": i})
        jax.block_until_ready(ws)
        wall = time.perf_counter() - t0
        cpu = time.process_time() + children_cpu_s() - cpu0
        self.weights = ws
        if case != "off":
            self._next_step[name] += k
            self.logged[name] += k
        return wall, cpu


def gpu_state() -> str | None:
    """The GPU's name, SM clock (now / max), memory clock, temperature, power
    and active throttle reasons, from ``nvidia-smi``; None without one."""
    fields = (
        "name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,"
        "clocks_throttle_reasons.active"
    )
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def measure(
    platform: str, size: Size, steps: int, rounds: int, dtype: str | None = None
) -> dict[str, Any]:
    os.environ["JAX_PLATFORMS"] = platform if platform == "cpu" else "cuda"
    forget_roxxel_env()
    import jax

    from roxxel import Logger

    from .reference import ReferenceLogger

    try:
        device = str(jax.devices()[0].device_kind)
    except Exception as exc:  # JAX raises several kinds when a backend is missing
        raise SystemExit(f"train_step: no {platform} backend in this JAX: {exc!r}") from None
    dtype = dtype or ("float32" if platform == "cpu" else "bfloat16")
    step, weights, x, y = _setup(size, dtype)
    tmp = tempfile.mkdtemp(prefix="roxxel-bench-train-")
    stdout = os.dup(1)
    clocks = [gpu_state()] if platform == "gpu" else []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the system logs' echo (and the collector child's)
        roxxel = Logger(os.path.join(tmp, "roxxel"), filename_prefix=PREFIX)
        reference = ReferenceLogger(os.path.join(tmp, "reference"), filename_prefix=PREFIX)
        bench = _Bench(step, weights, x, y, roxxel, reference)
        for case in CASES:  # untimed: compiling, connecting, starting threads
            bench.run(case, steps)
        wall: dict[str, list[float]] = {case: [] for case in CASES}
        cpu: dict[str, list[float]] = {case: [] for case in CASES}
        for r in range(rounds):
            for case in CASES if r % 2 == 0 else reversed(CASES):
                w, c = bench.run(case, steps)
                wall[case].append(w / steps)
                cpu[case].append(c / steps)
        bench.settle()
        if platform == "gpu":
            clocks.append(gpu_state())
        t_close = time.perf_counter()
        roxxel.close()
        close_s = time.perf_counter() - t_close
        reference.close()
        rows = {name: _csv_rows(os.path.join(tmp, name)) for name in ("roxxel", "reference")}
    finally:
        os.dup2(stdout, 1)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "platform": platform,
        "device": device,
        "size": size,
        "dtype": dtype,
        "steps": steps,
        "rounds": rounds,
        "wall": wall,
        "cpu": cpu,
        "rows": rows,
        "logged": bench.logged,
        "close_s": close_s,
        "clocks": clocks,
        "jax": jax.__version__,
    }


def _csv_rows(log_dir: str) -> int:
    try:
        with open(os.path.join(log_dir, f"{PREFIX}_metrics.csv"), encoding="utf-8") as f:
            return max(0, sum(1 for _ in f) - 1)  # minus the header
    except FileNotFoundError:
        return 0


def pair_overheads(r: dict[str, Any], case: str, against: str = "off") -> list[float]:
    """Per round, ``case``'s step time over ``against``'s in the same round, minus 1."""
    return [b / a - 1 for a, b in zip(r["wall"][against], r["wall"][case], strict=True)]


def _spread(values: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range (the quartiles themselves)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q1, q3


def all_rows_written(r: dict[str, Any]) -> bool:
    return r["rows"] == r["logged"]


def format_table(r: dict[str, Any]) -> str:
    size, limit = r["size"], budget(r["platform"], r["size"])
    lines = [
        f"jitted {r['dtype']} MLP step on {r['platform']} ({r['device']}): d {size.d}, "
        f"{size.layers} layers, batch {size.batch}, GELU, MSE, SGD; {r['steps']:,} steps per "
        f"run, {r['rounds']} rounds (cases in order, then reversed); jax {r['jax']}, "
        f"{os.cpu_count()} CPUs",
    ]
    if r["platform"] == "gpu":
        lines.append(
            "GPU (name, SM clock MHz, max SM clock, memory clock, temperature, power, throttle):"
        )
        for when, state in zip(("before", "after"), r["clocks"], strict=False):
            lines.append(f"  {when}: {state or 'nvidia-smi not available'}")
    lines += [
        "",
        f"{'case':<12}{'median step':>14}{'vs off: median of pairs':>26}{'IQR':>22}"
        f"{'CPU per step':>16}",
    ]
    for case in CASES:
        wall = statistics.median(r["wall"][case]) * 1e6
        cpu = statistics.median(r["cpu"][case]) * 1e6
        if case == "off":
            lines.append(f"{case:<12}{wall:>11,.1f} µs{'':>26}{'':>22}{cpu:>13,.1f} µs")
            continue
        median, q1, q3 = _spread(pair_overheads(r, case))
        lines.append(
            f"{case:<12}{wall:>11,.1f} µs{median:>+26.2%}{f'{q1:+.2%} .. {q3:+.2%}':>22}"
            f"{cpu:>13,.1f} µs"
        )
    median, q1, q3 = _spread(pair_overheads(r, "roxxel"))
    vs_reference, ref_q1, ref_q3 = _spread(pair_overheads(r, "roxxel", against="reference"))
    lines += [
        "",
        f"roxxel's overhead: median {median:+.2%} (IQR {q1:+.2%} .. {q3:+.2%}); budget "
        f"<= {limit:.1%}: {'met' if median <= limit else 'MISSED'}",
        f"roxxel vs reference, median of pairs: {vs_reference:+.2%} (IQR {ref_q1:+.2%} .. "
        f"{ref_q3:+.2%}); never slower: {'met' if vs_reference <= 0 else 'MISSED'}",
        "",
        "notes:",
    ]
    for case in CASES:
        lines.append(
            f"  step times {case:<9} (µs): " + ", ".join(f"{t * 1e6:.1f}" for t in r["wall"][case])
        )
    lines.append("  CPU per step: this process with XLA's threads, plus the roxxel collector child")
    for name in ("roxxel", "reference"):
        lines.append(
            f"  {name}: {r['rows'][name]:,} of {r['logged'][name]:,} rows in the CSV"
            + (f" after close() ({r['close_s'] * 1e3:,.0f} ms)" if name == "roxxel" else "")
        )
    if not all_rows_written(r):
        lines.append("  !! rows are missing from a CSV")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step")
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--d", type=int, help="width of the weight matrices")
    parser.add_argument("--layers", type=int, help="weight matrices")
    parser.add_argument("--batch", type=int, help="rows per step")
    parser.add_argument("--dtype", help="default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument("--steps", type=int, help=f"steps per run (default {DEFAULT_RUNS[0]})")
    parser.add_argument("--rounds", type=int, help=f"rounds of runs (default {DEFAULT_RUNS[1]})")
    quick_help = f"{QUICK_RUNS[0]} steps, {QUICK_RUNS[1]} rounds"
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    base = SIZES[args.size]
    size = Size(args.d or base.d, args.layers or base.layers, args.batch or base.batch)
    if min(size) < 1 or size.layers < 2:
        parser.error("d and batch are positive; layers at least 2")
    runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    r = measure(args.platform, size, args.steps or runs[0], args.rounds or runs[1], args.dtype)
    print(format_table(r))
    return 0 if all_rows_written(r) else 1


if __name__ == "__main__":
    sys.exit(main())
