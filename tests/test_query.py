"""Queries to a CURVE collector that fails the handshake end at once, saying why:
``roxxel status``, ``check``, ``tail`` and ``replay`` as real processes against a real daemon."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from roxxel import codec
from roxxel.query import CollectorQuery, HandshakeError
from roxxel.security import generate_keys
from roxxel.undelivered import write_unsent
from roxxel.unsent import Unsent, UnsentBatch

from .conftest import Daemon, python_env
from .test_security import curve_daemon as start_curve_daemon

# Far longer than a failed handshake takes: a query that waits it out fails the test.
TIMEOUT = 60.0
AT_ONCE = 8.0  # seconds, a process start included; tail's own answer timeout is 10 s


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """server, alice (allowed) and bob (not allowed); allowed public keys in keys/clients."""
    directory = tmp_path / "keys"
    for name in ("server", "alice", "bob"):
        generate_keys(str(directory), name)
    (directory / "clients").mkdir()
    (directory / "clients" / "alice.key").write_bytes((directory / "alice.key").read_bytes())
    return directory


@pytest.fixture
def curve_daemon(start_daemon, tmp_path: Path, keys: Path) -> Daemon:
    return start_curve_daemon(start_daemon, tmp_path, keys)


def timed_roxxel(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "roxxel.cli", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=2 * TIMEOUT,
    )
    return result, time.monotonic() - started


def key_options(keys: Path, name: str) -> tuple[str, ...]:
    return (
        "--curve-server-key",
        str(keys / "server.key"),
        "--curve-client-key",
        str(keys / f"{name}.key_secret"),
    )


def test_a_query_without_keys_raises_at_once(curve_daemon: Daemon) -> None:
    started = time.monotonic()
    with CollectorQuery(curve_daemon.endpoint) as query:
        with pytest.raises(HandshakeError) as failed:
            query.ask({"what": "status"}, TIMEOUT)
    assert time.monotonic() - started < AT_ONCE
    assert str(failed.value) == (
        f"the collector at {curve_daemon.endpoint} could not complete a handshake: it needs "
        "CURVE keys and this client has none (the collector's public NAME.key and this "
        "client's NAME.key_secret)"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("status", "--timeout", str(TIMEOUT)),
        ("check", "--timeout", str(TIMEOUT)),
        ("tail", "--no-follow"),
    ],
)
def test_the_tools_without_keys_fail_at_once_saying_keys_are_needed(
    curve_daemon: Daemon, command: tuple[str, ...]
) -> None:
    result, elapsed = timed_roxxel(command[0], curve_daemon.endpoint, *command[1:])
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert elapsed < AT_ONCE, (elapsed, result.stderr)
    # One line: the transport's own warning is not repeated.
    assert result.stderr == (
        f"roxxel {command[0]}: the collector at {curve_daemon.endpoint} could not complete a "
        "handshake: it needs CURVE keys and this client has none (the collector's public "
        "NAME.key and this client's NAME.key_secret); give them as --curve-server-key and "
        "--curve-client-key, or set $ROXXEL_CURVE_SERVER_KEY and $ROXXEL_CURVE_CLIENT_KEY\n"
    )


def test_a_refused_key_fails_at_once_and_an_allowed_one_is_answered(
    curve_daemon: Daemon, keys: Path
) -> None:
    refused, elapsed = timed_roxxel(
        "status", curve_daemon.endpoint, "--timeout", str(TIMEOUT), *key_options(keys, "bob")
    )
    assert refused.returncode == 1 and elapsed < AT_ONCE, (elapsed, refused.stderr)
    assert "refused this client's CURVE key" in refused.stderr
    assert "give them as" not in refused.stderr  # it has keys: not the advice for none
    allowed, _ = timed_roxxel("status", curve_daemon.endpoint, *key_options(keys, "alice"))
    assert allowed.returncode == 0 and "CURVE" in allowed.stdout, allowed.stderr
    assert curve_daemon.terminate() == 0


def test_replay_without_keys_fails_at_once_and_keeps_the_file(
    curve_daemon: Daemon, keys: Path, tmp_path: Path
) -> None:
    hello = codec.Hello(bytes(range(16)), "host", 0, 1, 1, "run")
    body = codec.encode_records([("l", 1.0, 30, "kept for the collector")])
    path = tmp_path / "run_undelivered_rank0.jsonl"
    write_unsent(str(path), Unsent(hello, [UnsentBatch(1, body, 0, 1)]))
    refused, elapsed = timed_roxxel(
        "replay", str(path), "--aggregator", curve_daemon.endpoint, "--timeout", str(TIMEOUT)
    )
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr
    assert elapsed < AT_ONCE, (elapsed, refused.stderr)
    assert refused.stderr == (  # one line: the transport's own warning is not repeated
        f"roxxel replay: the collector at {curve_daemon.endpoint} could not complete a "
        "handshake: it needs CURVE keys and this client has none (the collector's public "
        "NAME.key and this client's NAME.key_secret); give them as --curve-server-key and "
        "--curve-client-key, or set $ROXXEL_CURVE_SERVER_KEY and $ROXXEL_CURVE_CLIENT_KEY\n"
    )
    assert path.exists()  # nothing delivered: kept as it was
    allowed, _ = timed_roxxel(
        "replay", str(path), "--aggregator", curve_daemon.endpoint, *key_options(keys, "alice")
    )
    assert allowed.returncode == 0 and "delivered 1 record(s)" in allowed.stdout, allowed.stderr
    assert not path.exists()
    assert curve_daemon.terminate() == 0
    assert "kept for the collector" in curve_daemon.file("system.log")
