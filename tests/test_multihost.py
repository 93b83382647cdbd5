"""Real jax.distributed runs: discovery through JAX's key-value store, no endpoint given."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from roxxel import CRASH_HEADLINE

from .conftest import REPO, free_port, python_env, read

WORKER = str(REPO / "tests" / "pod_worker.py")


def run_pod(tmp_path: Path, count: int, *extra: str, **env: str) -> float:
    port = free_port()
    started = time.monotonic()
    # Output to files, not pipes: a pipe nobody reads while we wait would stop
    # a worker once full.
    outputs = [tmp_path / f"worker{i}.err" for i in range(count)]
    procs = []
    for i in range(count):
        with open(outputs[i], "w") as err:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        WORKER,
                        str(port),
                        str(i),
                        str(count),
                        str(tmp_path / f"rank{i}"),
                        *extra,
                    ],
                    env=python_env(**{k: v.format(i=i) for k, v in env.items()}),
                    stdout=err,
                    stderr=err,
                )
            )
    try:
        codes = [p.wait(180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * count, [read(path)[-2000:] for path in outputs]
    return time.monotonic() - started


def check_pod_log(tmp_path: Path, count: int, all_ranks: bool = False) -> None:
    log = read(tmp_path / "rank0" / "pod_system.log")
    assert "[INFO] info from rank 0" in log
    assert "[WARNING] warning from rank 0" in log
    for rank in range(1, count):
        assert f"[WARNING] [rank {rank}] warning from rank {rank}" in log, log
        assert f"info from rank {rank}" not in log
    assert f"[CRITICAL] [rank 2] {CRASH_HEADLINE}" in log
    assert "RuntimeError: rank 2 diverged" in log
    if not all_ranks:
        assert read(tmp_path / "rank0" / "pod_metrics.csv") == "step,loss\n1,0.50000\n"
    for rank in range(1, count):
        assert not (tmp_path / f"rank{rank}").exists(), f"rank {rank} wrote files"


def test_four_process_pod_finds_rank_zero_through_jax(tmp_path: Path) -> None:
    elapsed = run_pod(tmp_path, 4)
    check_pod_log(tmp_path, 4)
    print(f"4-process jax.distributed run: {elapsed:.1f} s")


def test_logger_created_before_initialize_also_works_and_all_ranks_rows_land_in_one_csv(
    tmp_path: Path,
) -> None:
    run_pod(tmp_path, 4, "--logger-first", "--all-ranks", SLURM_PROCID="{i}", SLURM_NTASKS="4")
    check_pod_log(tmp_path, 4, all_ranks=True)
    with open(tmp_path / "rank0" / "pod_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(rows[0]) == sorted(["step", "loss", "rank", "acc"])
    got = sorted(tuple(sorted(r.items())) for r in rows)
    expected = [{"step": "1", "loss": "0.50000", "rank": "", "acc": ""}] + [
        {"step": "2", "loss": "", "rank": str(r), "acc": f"{r / 10:.5f}"} for r in range(4)
    ]
    assert got == sorted(tuple(sorted(e.items())) for e in expected)
    jsonl = [
        json.loads(line) for line in read(tmp_path / "rank0" / "pod_metrics.jsonl").splitlines()
    ]
    assert sorted((r["step"], r["rank"]) for r in jsonl) == [(1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert all(r["host"] for r in jsonl)
