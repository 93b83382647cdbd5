"""The examples `make demo` runs: they work and print where their files are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO, python_env, read


def run_example(name: str, log_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), str(log_dir)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_quickstart_prints_its_files_with_lines_and_rows(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path)
    for name in ("run_alpha_system.log", "run_alpha_metrics.csv", "run_alpha_metrics.jsonl"):
        assert str(tmp_path / name) in out
    assert "[INFO] Initializing..." in read(tmp_path / "run_alpha_system.log")
    rows = read(tmp_path / "run_alpha_metrics.csv").splitlines()
    assert rows[0] == "step,loss,lr,grad_norm" and len(rows) == 201


def test_multihost_local_writes_one_log_for_four_processes(tmp_path: Path) -> None:
    out = run_example("multihost_local.py", tmp_path)
    assert str(tmp_path / "pod_system.log") in out
    log = read(tmp_path / "pod_system.log")
    for rank in range(1, 4):
        assert f"[WARNING] [rank {rank}] rank {rank}: done" in log
    rows = read(tmp_path / "pod_metrics.csv").splitlines()
    assert rows[0] == "step,rank,loss" and len(rows) == 1 + 4 * 50
