"""What a hostile peer on a plaintext endpoint cannot do to an honest run.

Real daemon processes, a real Logger in a child process, and a raw ZeroMQ
DEALER that sends the hostile frames.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from aggregator.checkpoint import load_checkpoint
from aggregator.ledger import MAX_SENDERS_PER_CONNECTION
from roxxel import Logger, codec
from roxxel.cli import main
from roxxel.query import CollectorQuery

from .conftest import python_env, wait_for
from .test_delivery import assert_exactly_once
from .test_fuzz import RssPeak

MiB = 1024 * 1024

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


def test_a_hello_claiming_unwritten_batches_cannot_silence_a_sender(tmp_path: Path, daemon) -> None:
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
        checkpoint = load_checkpoint(str(daemon.log_dir / ".run_checkpoint.json"))
        (sender_hex,) = checkpoint.senders
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


def _status(endpoint: str) -> dict:
    query = CollectorQuery(endpoint)
    try:
        return query.ask({"what": "status"}, 30)
    finally:
        query.close()


def _honest_logger_delivers(tmp_path: Path, endpoint: str, n: int = 1000) -> None:
    with Logger(tmp_path / "c", "run", aggregator=endpoint, watcher=False) as log:
        for i in range(n):
            log.log_message(f"honest {i}")
        assert log.flush(30), "the honest Logger was not served"


def test_a_flood_of_hellos_on_one_connection_leaves_room_for_honest_loggers(
    tmp_path: Path, daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    flood = 20_000
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as evil:
        evil.setsockopt(zmq.LINGER, 0)
        evil.connect(daemon.endpoint)
        hellos = [
            codec.encode(codec.Hello(secrets.token_bytes(16), "evil", 0, 1, 1, "run"))
            for _ in range(flood)
        ]
        for start in range(0, flood, 1000):
            evil.send_multipart(hellos[start : start + 1000])
        # Answered in order: once this is, every hello before it was handled.
        evil.send(codec.encode(codec.Query(b"p" * 16, 1, {"what": "ping"})))
        wait_for(lambda: evil.poll(50) and _answered(evil), 60, "the daemon past the flood")
        _honest_logger_delivers(tmp_path, daemon.endpoint)
    status = _status(daemon.endpoint)
    assert status["stats"]["refused_senders"] == flood - MAX_SENDERS_PER_CONNECTION
    assert status["known_senders"] <= MAX_SENDERS_PER_CONNECTION + 1
    assert main(["status", daemon.endpoint]) == 0
    refused = f"{flood - MAX_SENDERS_PER_CONNECTION:,} senders refused (a bound reached)"
    assert refused in capsys.readouterr().out
    log = daemon.file("system.log")
    assert_exactly_once(log, [f"honest {i}" for i in range(1000)])
    assert f"more than {MAX_SENDERS_PER_CONNECTION} senders on one connection from " in log
    # The checkpoint keeps only senders that had batches written: not the flood.
    assert len(load_checkpoint(str(daemon.log_dir / ".run_checkpoint.json")).senders) <= 1
    journal = daemon.log_dir / ".run_checkpoint.journal"
    assert (daemon.log_dir / ".run_checkpoint.json").stat().st_size + journal.stat().st_size < 65536


def _answered(sock: zmq.Socket) -> bool:
    while sock.poll(0):
        if isinstance(codec.decode(sock.recv()), codec.Answer):
            return True
    return False


def test_messages_of_too_many_bytes_are_dropped_unread_and_their_memory_returned(
    tmp_path: Path, daemon
) -> None:
    rss = RssPeak(daemon.process)
    rss.start()
    before = daemon.process.memory_info().rss
    part = b"\0" * MiB
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as evil:
        evil.setsockopt(zmq.LINGER, 0)
        evil.connect(daemon.endpoint)
        for _ in range(3):
            evil.send_multipart([part] * 100, copy=False)  # 100 MiB a message
        evil.send(codec.encode(codec.Query(b"p" * 16, 1, {"what": "ping"})))
        wait_for(lambda: evil.poll(50) and _answered(evil), 120, "the daemon past the attack")
    _honest_logger_delivers(tmp_path, daemon.endpoint)
    peak, after = rss.stop(), daemon.process.memory_info().rss
    status = _status(daemon.endpoint)
    assert status["stats"]["oversized_messages"] == 3
    assert_exactly_once(daemon.file("system.log"), [f"honest {i}" for i in range(1000)])
    # ZeroMQ holds one whole message before it can be looked at (so the peak
    # is about one message); nothing of it stays once it is dropped.
    assert peak < before + 256 * MiB
    assert after < before + 64 * MiB
