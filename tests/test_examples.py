"""The examples `make demo` runs, and the README's first one: they work as written."""

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


def test_the_readme_s_first_example_runs_as_written_and_writes_what_it_shows(
    tmp_path: Path,
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    shown = readme.split("```", 4)[3].splitlines()  # the block of what it writes
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # its ./logs
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[INFO] Initializing..." in result.stdout  # echoed
    logs = tmp_path / "logs"
    assert "[INFO] Initializing..." in read(logs / "run_alpha_system.log")
    rows = read(logs / "run_alpha_metrics.csv").splitlines()
    # "./logs/run_alpha_metrics.csv    step,loss,lr", then the row of step 10 under it.
    csv_at = next(i for i, line in enumerate(shown) if "run_alpha_metrics.csv" in line)
    header, row = shown[csv_at].split()[1], shown[csv_at + 1].strip()
    assert rows[0] == header and rows[11] == row and len(rows) == 1001
