"""`python -m benchmarks --quick` runs and prints the side-by-side table (no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

EXPECTED_ROWS = [
    f"{api} {row}"
    for api in ("log_metrics_summary", "log_message")
    for row in (
        "mean incl. close",
        "mean loop only",
        "cpu logging process",
        "cpu child processes",
        "p50",
        "p99",
        "p99.9",
        "max",
    )
]


def test_benchmarks_quick_prints_the_table():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next((ln for ln in lines if ln.startswith("case")), "")
    assert "roxxel" in header and "reference" in header and "ratio" in header, proc.stdout
    for row in EXPECTED_ROWS:
        assert any(ln.startswith(row + " ") for ln in lines), f"no row {row!r} in:\n{proc.stdout}"
    # The loggers' stdout echo must not leak into the table.
    assert "step finished" not in proc.stdout
