"""Two "hosts": network namespaces this test creates, joined by a veth pair.

Traffic is sent only from inside the namespaces (``ip netns exec``), to the
addresses the test gave them. Skipped, with the reason, only where
namespaces cannot be created (not root, no iproute2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roxxel import CRASH_HEADLINE

from .conftest import REPO, python_env, read


@dataclass
class Hosts:
    a: str
    b: str
    addr_a: str
    addr_b: str

    def run(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def _ip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed: cannot create network namespaces")
    tag = f"{os.getpid() % 10000}"
    a, b = f"rxa{tag}", f"rxb{tag}"
    subnet = f"10.200.{os.getpid() % 250}"
    for stale in (a, b):  # left by an earlier run with our pid, killed before its teardown
        _ip("netns", "del", stale)
    made = _ip("netns", "add", a)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        steps = [
            ("netns", "add", b),
            ("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}"),
            ("link", "set", f"va{tag}", "netns", a),
            ("link", "set", f"vb{tag}", "netns", b),
            ("-n", a, "addr", "add", f"{subnet}.1/24", "dev", f"va{tag}"),
            ("-n", b, "addr", "add", f"{subnet}.2/24", "dev", f"vb{tag}"),
            ("-n", a, "link", "set", f"va{tag}", "up"),
            ("-n", b, "link", "set", f"vb{tag}", "up"),
            ("-n", a, "link", "set", "lo", "up"),
            ("-n", b, "link", "set", "lo", "up"),
        ]
        for step in steps:
            result = _ip(*step)
            assert result.returncode == 0, f"ip {' '.join(step)}: {result.stderr}"
        yield Hosts(a, b, f"{subnet}.1", f"{subnet}.2")
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


def _wait(procs: list[subprocess.Popen], timeout: float = 120) -> list[int]:
    try:
        return [p.wait(timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_client_on_one_host_writes_through_a_daemon_on_another(
    tmp_path: Path, hosts: Hosts
) -> None:
    log_dir = tmp_path / "logs"
    daemon_out = open(tmp_path / "daemon.out", "w")  # noqa: SIM115
    daemon = subprocess.Popen(
        hosts.run(
            hosts.a,
            sys.executable,
            "-m",
            "aggregator",
            "--bind",
            f"tcp://{hosts.addr_a}:5555",
            "--log-dir",
            str(log_dir),
            "--prefix",
            "run",
        ),
        env=python_env(),
        stdout=daemon_out,
        stderr=subprocess.STDOUT,
    )
    try:
        client = subprocess.run(
            hosts.run(
                hosts.b,
                sys.executable,
                "-c",
                "import logging, socket\n"
                "from roxxel import Logger\n"
                f"with Logger({str(tmp_path / 'b')!r}, 'run') as lg:\n"
                "    lg.log_message(f'from host B, rank {lg.rank}', logging.WARNING)\n"
                "    lg.log_metrics_summary(7, {'loss': 0.25})\n",
            ),
            env=python_env(ROXXEL_AGGREGATOR=f"tcp://{hosts.addr_a}:5555"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        daemon.terminate()
        assert _wait([daemon]) == [0]
    finally:
        _wait([daemon], 0)
        daemon_out.close()
    assert "[WARNING] from host B, rank 0" in read(log_dir / "run_system.log")
    assert read(log_dir / "run_metrics.csv") == "step,loss\n7,0.25000\n"
    assert not (tmp_path / "b").exists()


def test_jax_ranks_on_two_hosts_find_rank_zero_through_the_key_value_store(
    tmp_path: Path, hosts: Hosts
) -> None:
    worker = str(REPO / "tests" / "pod_worker.py")
    outs = [open(tmp_path / f"out{i}", "w") for i in range(2)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            hosts.run(
                ns,
                sys.executable,
                worker,
                "7777",
                str(i),
                "2",
                str(tmp_path / f"rank{i}"),
                "--coordinator",
                hosts.addr_a,
            ),
            env=python_env(),
            stdout=outs[i],
            stderr=subprocess.STDOUT,
        )
        for i, ns in enumerate((hosts.a, hosts.b))
    ]
    try:
        codes = _wait(procs)
    finally:
        for out in outs:
            out.close()
    assert codes == [0, 0], [read(tmp_path / f"out{i}")[-3000:] for i in range(2)]
    log = read(tmp_path / "rank0" / "pod_system.log")
    assert "[WARNING] [rank 1] warning from rank 1" in log
    assert "info from rank 1" not in log
    assert CRASH_HEADLINE not in log  # rank 2 is the one that crashes; there is none here
    assert not (tmp_path / "rank1").exists()
