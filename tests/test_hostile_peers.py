"""What a hostile peer on a plaintext endpoint cannot do to an honest run.

Real daemon processes, a real Logger in a child process, and a raw ZeroMQ
DEALER that sends the hostile frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zmq

from roxxel import codec

from .conftest import python_env, read
from .test_delivery import assert_exactly_once

# A Logger that logs half its lines, says so, waits for the test's go, logs the rest.
_HALVES = """
import os, sys, time
from roxxel import Logger
endpoint, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Logger(sys.argv[4], "run", aggregator=endpoint, watcher=False) as log:
    for i in range(n // 2):
        log.log_message(f"line {i}")
    assert log.flush(60)
    print("half", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    for i in range(n // 2, n):
        log.log_message(f"line {i}")
"""


def test_a_hello_claiming_unwritten_batches_cannot_silence_a_sender(
    tmp_path: Path, daemon
) -> None:
    n, go = 20_000, tmp_path / "go"
    client = subprocess.Popen(
        [sys.executable, "-c", _HALVES, daemon.endpoint, str(go), str(n), str(tmp_path / "c")],
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline() == "half\n", client.stderr.read()
        # What a local user could read before the checkpoint was made private.
        checkpoint = json.loads(read(daemon.log_dir / ".run_checkpoint.json"))
        (sender_hex,) = checkpoint["senders"]
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as evil:
            evil.setsockopt(zmq.LINGER, 0)
            evil.connect(daemon.endpoint)
            sender = bytes.fromhex(sender_hex)
            evil.send(codec.encode(codec.Hello(sender, "evil", 0, 1, 1, "run", acked=2**62)))
            assert evil.poll(30_000), "no answer to the hello"
            ack = codec.decode(evil.recv())
            # Answered with what is written, not with what was claimed.
            assert isinstance(ack, codec.Ack) and ack.seq < 2**62
        go.touch()
        assert client.wait(120) == 0, client.stderr.read()
    finally:
        client.kill()
        client.wait()
    log = daemon.file("system.log")
    assert_exactly_once(log, [f"line {i}" for i in range(n)])
    assert "claimed batches up to 4611686018427387904 were written, but only " in log
    assert "not believed" in log
    assert not list((tmp_path / "c").glob("*undelivered*"))
