"""What a hostile plaintext peer costs a daemon, and an honest Logger beside it.

``python -m benchmarks.hostile_peers [--quick]``

Two attacks on a fresh ``roxxel-aggregator`` each, from one raw DEALER on
127.0.0.1:

* **hello flood**: 65,536 hellos with random sender ids on one connection
  (in messages of 1,000 frames), then an honest ``Logger`` logs 20,000
  lines and closes. Reported: how long the daemon took over the flood, the
  honest ``close()``, the lines written, the checkpoint's size (snapshot and
  journal);
* **multipart memory**: 3 messages of 800 parts of 1 MiB. Reported: the
  daemon's RSS before, its peak (sampled every 10 ms), and after.

``--quick``: 5,000 hellos, 2,000 lines, 3 x 100 parts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import psutil
import zmq

from .harness import forget_roxxel_env, progress, start_daemon

__all__ = ["main"]

MiB = 1024 * 1024
PREFIX = "hostile"


def _round_trip(sock: zmq.Socket) -> None:
    """Return once the daemon has handled everything sent before on ``sock``."""
    from roxxel import codec

    sock.send(codec.encode(codec.Query(b"p" * 16, 1, {"what": "ping"})))
    while not (sock.poll(100) and isinstance(codec.decode(sock.recv()), codec.Answer)):
        pass


def hello_flood(hellos: int, lines: int) -> str:
    from roxxel import Logger, codec

    log_dir = tempfile.mkdtemp(prefix="roxxel-bench-hostile-")
    daemon, endpoint = start_daemon(log_dir, PREFIX)
    try:
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as evil:
            evil.setsockopt(zmq.LINGER, 0)
            evil.connect(endpoint)
            frames = [
                codec.encode(codec.Hello(secrets.token_bytes(16), "evil", 0, 1, 1, PREFIX))
                for _ in range(hellos)
            ]
            t0 = time.monotonic()
            for start in range(0, hellos, 1000):
                evil.send_multipart(frames[start : start + 1000])
            _round_trip(evil)
            flood = time.monotonic() - t0
        log = Logger(os.path.join(log_dir, "client"), PREFIX, aggregator=endpoint, watcher=False)
        for i in range(lines):
            log.log_message(f"line {i}")
        t0 = time.monotonic()
        log.close()
        closed = time.monotonic() - t0
        with open(os.path.join(log_dir, f"{PREFIX}_system.log"), encoding="utf-8") as f:
            written = sum(1 for line in f if "] line " in line)
        checkpoint = sum(
            os.path.getsize(os.path.join(log_dir, f".{PREFIX}_checkpoint.{ext}"))
            for ext in ("json", "journal")
        )
        return (
            f"hello flood: {hellos:,} hellos on one connection handled in {flood:.1f} s; "
            f"then an honest Logger: {written:,} of {lines:,} lines written, close() "
            f"{closed:.2f} s; checkpoint and journal {checkpoint:,} bytes"
        )
    finally:
        daemon.terminate()
        daemon.wait(60)
        shutil.rmtree(log_dir, ignore_errors=True)


def multipart_memory(messages: int, parts: int) -> str:
    log_dir = tempfile.mkdtemp(prefix="roxxel-bench-hostile-")
    daemon, endpoint = start_daemon(log_dir, PREFIX)
    process = psutil.Process(daemon.pid)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        before = process.memory_info().rss
        sampler.start()
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as evil:
            evil.setsockopt(zmq.LINGER, 0)
            evil.connect(endpoint)
            part = b"\0" * MiB
            for _ in range(messages):
                evil.send_multipart([part] * parts, copy=False)
            _round_trip(evil)
        after = process.memory_info().rss
        done.set()
        sampler.join()
        return (
            f"multipart memory: {messages} messages of {parts} x 1 MiB; daemon RSS "
            f"{before / MiB:.0f} MiB before, {peak[0] / MiB:.0f} MiB peak, "
            f"{after / MiB:.0f} MiB after"
        )
    finally:
        done.set()
        daemon.terminate()
        daemon.wait(60)
        shutil.rmtree(log_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile_peers")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    forget_roxxel_env()
    progress("hello flood")
    print(hello_flood(5_000 if args.quick else 65_536, 2_000 if args.quick else 20_000))
    progress("multipart memory")
    print(multipart_memory(3, 100 if args.quick else 800))
    return 0


if __name__ == "__main__":
    sys.exit(main())
