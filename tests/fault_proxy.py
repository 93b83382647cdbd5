"""A TCP proxy on 127.0.0.1 that breaks the connections through it (delivery tests only).

    python tests/fault_proxy.py UPSTREAM_PORT CHAOS_SECONDS SEED

It listens on a free port and prints ``proxy ready on PORT``. For
CHAOS_SECONDS it closes every connection after a random 20-200 ms, and in
half of them silently discards what the collector sends back (its acks)
for the last part of that life. After that it forwards faithfully. Every
fault is printed as a line (``closed``, ``dropped N``). It exits on SIGTERM,
or by itself after 300 s.
"""

from __future__ import annotations

import math
import random
import selectors
import signal
import socket
import sys
import time


class Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket, rng: random.Random):
        now = time.monotonic()
        self.client, self.upstream = client, upstream
        self.close_at = now + rng.uniform(0.02, 0.2)
        self.drop_from = now + rng.uniform(0.0, 0.15) if rng.random() < 0.5 else math.inf


def main() -> None:
    upstream_port, chaos_seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    started = time.monotonic()
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    server = socket.create_server(("127.0.0.1", 0))
    print(f"proxy ready on {server.getsockname()[1]}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    pairs: dict[socket.socket, Pair] = {}

    def close(pair: Pair, why: str) -> None:
        for sock in (pair.client, pair.upstream):
            selector.unregister(sock)
            pairs.pop(sock, None)
            sock.close()
        print(why, flush=True)

    while running and time.monotonic() - started < 300:
        chaos = time.monotonic() - started < chaos_seconds
        for key, _ in selector.select(timeout=0.01):
            sock = key.fileobj
            if sock is server:
                client, _ = server.accept()
                try:
                    upstream = socket.create_connection(("127.0.0.1", upstream_port))
                except OSError:
                    client.close()
                    continue
                pair = Pair(client, upstream, rng)
                for s in (client, upstream):
                    pairs[s] = pair
                    selector.register(s, selectors.EVENT_READ)
                continue
            pair = pairs.get(sock)
            if pair is None:
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                close(pair, "peer closed")
                continue
            try:
                if sock is pair.client:
                    pair.upstream.sendall(data)
                elif chaos and time.monotonic() >= pair.drop_from:
                    print(f"dropped {len(data)}", flush=True)
                else:
                    pair.client.sendall(data)
            except OSError:
                close(pair, "peer closed")
        if chaos:
            now = time.monotonic()
            for pair in {id(p): p for p in pairs.values()}.values():
                if now >= pair.close_at:
                    close(pair, "closed")


if __name__ == "__main__":
    main()
