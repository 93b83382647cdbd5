"""Process plumbing every benchmark shares: the environment of the processes it
starts, a port where nothing listens, and progress lines on stderr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from .stats import child_pids, stat_ticks

__all__ = [
    "roxxel_free_env",
    "forget_roxxel_env",
    "free_port",
    "progress",
    "start_daemon",
    "cpu_seconds",
    "collector_usage",
]


def roxxel_free_env() -> dict[str, str]:
    """This environment without ROXXEL_AGGREGATOR & co.: roxxel starts its own collector."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROXXEL_")}


def forget_roxxel_env() -> None:
    """The same, in a worker's own environment."""
    for key in [k for k in os.environ if k.startswith("ROXXEL_")]:
        del os.environ[key]


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def progress(text: str) -> None:
    """``running <text> ...`` on stderr: stdout is kept for the tables."""
    print(f"running {text} ...", file=sys.stderr, flush=True)


def start_daemon(log_dir: str, prefix: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A ``roxxel-aggregator`` of run ``prefix`` on a free port of 127.0.0.1
    (no echo, no stats line; ``extra``: more of its options), and its
    endpoint once it is ready."""
    script = os.path.join(os.path.dirname(sys.executable), "roxxel-aggregator")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "aggregator"]
    proc = subprocess.Popen(
        [*cmd, "--bind", "tcp://127.0.0.1:0", "--log-dir", log_dir, "--prefix", prefix,
         "--no-echo", "--stats-interval", "0", *extra],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=roxxel_free_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready on " not in line:
        proc.kill()
        raise RuntimeError(f"roxxel-aggregator did not start: {line!r}")
    return proc, line.split("ready on ", 1)[1].split()[0]


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process ``pid`` so far (that process alone)."""
    return sum(stat_ticks(pid, 11, 13)) / os.sysconf("SC_CLK_TCK")


def collector_usage(pid: int) -> tuple[float, int]:
    """CPU seconds and bytes written so far by collector ``pid`` and its sink
    processes (aggregator.sinks.process): the live ones, and the CPU of those
    it has ended and waited for."""
    ticks = sum(stat_ticks(pid, 11, 15))  # its own, and its waited-for children's
    written = _wchar(pid)
    for child in child_pids(pid):
        try:
            ticks += sum(stat_ticks(child, 11, 13))
            written += _wchar(child)
        except FileNotFoundError:
            pass  # ended since the listing: its CPU is in the parent's count
    return ticks / os.sysconf("SC_CLK_TCK"), written


def _wchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])
