"""`python -m benchmarks --quick` runs and prints the side-by-side tables (no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .deploy_helpers import tool
from .nats_cluster import nats_server_binary

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

DEAD_SECTION = "collector dead (roxxel), max_buffer_bytes "
EXPECTED_DEAD_ROWS = [
    f"{api} {row}"
    for api in ("log_metrics_summary", "log_message")
    for row in (
        "mean loop only",
        "cpu loop only",
        "cpu incl. close",
        "p50",
        "p99",
        "p99.9",
        "max",
        "close()",
    )
]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["TMPDIR"] = str(tmp_path)  # every temporary dir of the run, to check it is cleaned
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_benchmarks_quick_prints_the_tables(tmp_path):
    proc = _run(["benchmarks", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next((ln for ln in lines if ln.startswith("case")), "")
    assert "roxxel" in header and "reference" in header and "ratio" in header, proc.stdout
    for row in EXPECTED_ROWS:
        assert any(ln.startswith(row + " ") for ln in lines), f"no row {row!r} in:\n{proc.stdout}"
    for api in ("log_metrics_summary", "log_message"):
        floor = [ln for ln in lines if ln.startswith(f"{api} deque-append floor, loop ")]
        assert len(floor) == 1 and "roxxel's loop " in floor[0], proc.stdout

    # The collector-dead sections: a small bound and the default (256 MiB).
    starts = [i for i, ln in enumerate(lines) if ln.startswith(DEAD_SECTION)]
    assert len(starts) == 2, proc.stdout
    assert "256 MiB" in lines[starts[1]], lines[starts[1]]
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        section = lines[start:end]
        header = next((ln for ln in section if ln.startswith("case")), "")
        assert "alive" in header and "dead" in header and "ratio dead/alive" in header, section
        for row in EXPECTED_DEAD_ROWS:
            assert any(ln.startswith(row + " ") for ln in section), (
                f"no dead row {row!r} in {section}"
            )
        assert any("dropped" in ln and "undelivered file" in ln for ln in section), section
    assert not any(ln.lstrip().startswith("!!") for ln in lines), proc.stdout

    # The loggers' stdout echo must not leak into the table, nor close()'s
    # expected undelivered notices into stderr; temporary dirs are removed.
    assert "step finished" not in proc.stdout
    assert "were not delivered" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_dead_close_with_a_small_buffer(tmp_path):
    proc = _run(["benchmarks.dead_close", "--max-buffer-mib", "1"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "close() with close_timeout=0:" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_pod_throughput_counts_every_rank_record(tmp_path):
    proc = _run(["benchmarks.pod_throughput", "--records", "2000"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8,000 of 8,000 written" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_collector_throughput_quick(tmp_path):
    proc = _run(
        [
            "benchmarks.collector_throughput",
            "--quick",
            "--records",
            "2000",
            "--sink-processes",
            "on",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in ("log_metrics_summary records/s", "log_message records/s"):
        assert any(ln.startswith(row) for ln in proc.stdout.splitlines()), proc.stdout
    assert "16,000 of 16,000 records in the files" in proc.stdout, proc.stdout
    assert "collector CPU per metrics row (its sink processes included): " in proc.stdout
    assert "; floor " in proc.stdout and "sink processes: on" in proc.stdout
    assert "log_metrics_summary: the collector process alone " in proc.stdout
    assert "!!" not in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_close_pending_quick(tmp_path):
    proc = _run(["benchmarks.close_pending", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "log_metrics_summary close()" in proc.stdout, proc.stdout
    assert "log_message close()" in proc.stdout, proc.stdout
    assert "20,000 of 20,000 records in the files afterwards" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_memory_quick(tmp_path):
    proc = _run(["benchmarks.memory", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dead, 64 MiB, 200,000 metrics" in proc.stdout, proc.stdout
    assert "alive, 256 MiB, 200,000 lines" in proc.stdout, proc.stdout
    assert "!!" not in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_train_step_quick(tmp_path):
    proc = _run(["benchmarks.train_step", "--quick", "--steps", "20"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for case in ("off", "roxxel", "reference", "float"):
        assert f"\n{case} " in proc.stdout, proc.stdout
    assert "roxxel's overhead: median" in proc.stdout, proc.stdout
    # An untimed round and 2 timed ones of 20 steps: roxxel's Logger gets
    # the roxxel and float cases' rows, the reference its own.
    assert "roxxel: 120 of 120 rows in the CSV" in proc.stdout, proc.stdout
    assert "reference: 60 of 60 rows in the CSV" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_abort_window_quick(tmp_path):
    proc = _run(["benchmarks.abort_window", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loss window" in proc.stdout
    for label in ("full speed", "100,000 rows/s", "10,000 rows/s"):
        assert label in proc.stdout, proc.stdout
    assert "notice NO" not in proc.stdout and "DUPLICATED" not in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_new_names_few_rows(tmp_path):
    proc = _run(["benchmarks.new_names", "--rows", "60"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "one row per batch, 60 rows" in proc.stdout, proc.stdout
    assert "new names " in proc.stdout and "fixed names " in proc.stdout, proc.stdout
    assert "budget: bytes written <= 4x the files: " in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_hostile_peers_quick(tmp_path):
    proc = _run(["benchmarks.hostile_peers", "--quick"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2,000 of 2,000 lines written" in proc.stdout, proc.stdout
    assert "multipart memory: 3 messages of 100 x 1 MiB" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server is missing")
def test_scale_out_quick(tmp_path):
    """Issue 19: single collector vs relays + 3-node JetStream + writer, every record once."""
    args = ["benchmarks.scale_out", "--quick", "--relays", "2", "--clients", "1"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for api in ("log_message", "log_metrics_summary"):
        for row in (
            "single collector",
            "scale-out (end to end)",
            "relay tier (2 relays)",
            "writer tier (1 writer)",
        ):
            assert any(ln.startswith(f"{api} {row} ") for ln in lines), proc.stdout
        # 2 clients x (500 records + 1 warm-up), in the collector's and the writer's files
        assert f"{api}: single collector 1,002 records in the files" in proc.stdout, proc.stdout
        assert "end to end 1,002 in " in proc.stdout and "(1,002 records)" in proc.stdout
    assert "budget: end to end >= 50% of the single collector's records/s: " in proc.stdout
    assert "!!" not in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_background_cpu_quick(tmp_path):
    proc = _run(["benchmarks.background_cpu", "--quick", "--rates", "0,50"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for label in ("      0 roxxel", "      0 reference", "     50 roxxel", "     50 reference"):
        assert label in proc.stdout, proc.stdout
    assert "one wake-up of a sleeping thread" in proc.stdout, proc.stdout
    assert "!!" not in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_stack_summary_counts_each_thread_and_our_functions(tmp_path):
    raw = tmp_path / "profile.raw"
    raw.write_text(
        'process 7:"python -m benchmarks.train_step --size medium";thread (8): roxxel-sender;'
        "Sender._run (roxxel/client.py:300);Sender._send (roxxel/client.py:420);"
        "send (zmq/sugar/socket.py:600) 30\n"
        'process 7:"python -m benchmarks.train_step --size medium";thread (8): roxxel-sender;'
        "Sender._run (roxxel/client.py:301);Poller.poll (zmq/sugar/poll.py:80) 10\n"
        'process 7:"python -m benchmarks.train_step --size medium";thread (7): MainThread;'
        "<module> (train.py:3) 60\n"
        "not a stack line\n"
    )
    proc = _run(["benchmarks.stack_summary", str(raw), "--top", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    sender = "process 7 (python -m benchmarks.train_step) / thread (8): roxxel-sender: 40 samples"
    assert lines.index(sender) > lines.index(
        "process 7 (python -m benchmarks.train_step) / thread (7): MainThread: 60 samples"
    )
    block = lines[lines.index(sender) + 1 :]
    assert "  self   75.0 %  send (zmq/sugar/socket.py)" in block
    assert "  under 100.0 %  Sender._run (roxxel/client.py)" in block  # line numbers merged
    assert "  under  75.0 %  Sender._send (roxxel/client.py)" in block
    assert not any("poll.py" in line and "under" in line for line in block)  # not ours


def test_device_check_script_is_valid_bash():
    script = REPO / "benchmarks" / "device_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=bash", str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
