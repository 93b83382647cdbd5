"""CURVE: key files, a daemon that lets in only listed keys, senders bound to keys,
and a jax.distributed run whose rank 0 runs the collector with the same keys."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

from roxxel import codec
from roxxel.security import client_keys, generate_keys, server_keys

from .conftest import Daemon, python_env, read, run_python, wait_for
from .test_multihost import check_pod_log, run_pod


def keygen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "keygen", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keygen_writes_a_pair_that_zmq_auth_reads_with_a_private_secret(tmp_path: Path) -> None:
    result = keygen("--out", str(tmp_path / "keys"), "--name", "server")
    assert result.returncode == 0, result.stderr
    public, secret = tmp_path / "keys" / "server.key", tmp_path / "keys" / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    public_key, no_secret = zmq.auth.load_certificate(str(public))
    same_public, secret_key = zmq.auth.load_certificate(str(secret))
    assert no_secret is None and same_public == public_key
    assert len(public_key) == len(secret_key) == 40  # Z85 of 32 bytes
    assert str(public) in result.stdout and str(secret) in result.stdout


def test_keygen_never_replaces_a_key(tmp_path: Path) -> None:
    assert keygen("--out", str(tmp_path), "--name", "rank3").returncode == 0
    before = (tmp_path / "rank3.key_secret").read_bytes()
    again = keygen("--out", str(tmp_path), "--name", "rank3")
    assert again.returncode == 2
    assert "exists" in again.stderr and "does not replace a key" in again.stderr
    assert (tmp_path / "rank3.key_secret").read_bytes() == before


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_a_key_name_is_a_plain_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        generate_keys(str(tmp_path), name)


def curve_daemon(start_daemon, tmp_path: Path, keys: Path) -> Daemon:
    return start_daemon(
        tmp_path / "logs",
        extra=(
            "--curve-secret",
            str(keys / "server.key_secret"),
            "--curve-clients",
            str(keys / "clients"),
            "--stats-interval",
            "0.2",
        ),
    )


def curve_logger(keys: Path, name: str, endpoint: str, text: str, **options: str) -> str:
    """Code that logs ``text`` through ``endpoint`` as client ``name`` (what it
    cannot deliver goes to an undelivered file in ``keys/name-undelivered``)."""
    extra = "".join(f", {k}={v}" for k, v in options.items())
    return (
        "from roxxel import Logger\n"
        f"with Logger({str(keys / (name + '-undelivered'))!r}, 'run', aggregator={endpoint!r}, "
        f"curve_server_key={str(keys / 'server.key')!r}, "
        f"curve_client_key={str(keys / name) + '.key_secret'!r}{extra}) as lg:\n"
        f"    lg.log_message({text!r})\n"
        "    lg.log_metrics_summary(1, {'loss': 0.5})\n"
    )


def raw_client(context: zmq.Context, endpoint: str, sender_id: bytes, keys: Path | None, name: str):
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = sender_id
    if keys is not None:
        client_keys(str(keys / "server.key"), str(keys / f"{name}.key_secret")).apply(sock)
    sock.connect(endpoint)
    return sock


def hello(sender_id: bytes) -> bytes:
    return codec.encode(codec.Hello(sender_id, "host", 0, os.getpid(), 1, "run"))


def line_batch(sender_id: bytes, seq: int, text: str) -> bytes:
    return codec.encode(codec.Batch(sender_id, seq, [["l", 1.7e9, 30, text]]))


def alice_has_written(
    context: zmq.Context, daemon: Daemon, keys: Path, sender: bytes, text: str
) -> zmq.Socket:
    """Alice's raw socket, once her hello and first batch (``text``) are in the log."""
    alice = raw_client(context, daemon.endpoint, sender, keys, "alice")
    alice.send_multipart([hello(sender), line_batch(sender, 1, text)])
    wait_for(lambda: text in daemon.file("system.log"), what="alice's first batch")
    return alice


def test_a_curve_daemon_writes_listed_clients_and_refuses_the_others(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)
    alice = run_python(curve_logger(keys, "alice", daemon.endpoint, "alice was here"))
    assert alice.returncode == 0, alice.stderr
    before = {suffix: daemon.file(suffix) for suffix in ("metrics.csv", "metrics.jsonl")}
    bob = run_python(curve_logger(keys, "bob", daemon.endpoint, "bob was here", close_timeout="1"))
    plain = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path / 'plain')!r}, 'run', aggregator={daemon.endpoint!r}, "
        "close_timeout=1) as lg:\n"
        "    lg.log_message('plaintext was here')\n"
        "    lg.log_metrics_summary(2, {'loss': 9.0})\n"
    )
    assert bob.returncode == plain.returncode == 0, (bob.stderr, plain.stderr)
    # Both kept what they could not deliver: nothing of theirs was acknowledged.
    assert "were not delivered" in bob.stderr and "were not delivered" in plain.stderr
    assert "refused this client's CURVE key" in bob.stderr
    assert (keys / "bob-undelivered" / "run_undelivered_rank0.jsonl").exists()
    assert "could not complete a handshake" in plain.stderr
    log = wait_for(
        lambda: (text := daemon.file("system.log")).count("refused") >= 2 and text,
        what="both refusals reported",
    )
    bob_key = (keys / "bob.key").read_text().split('public-key = "')[1].split('"')[0]
    assert f"refused CURVE key {bob_key} from 127.0.0.1: not allowed" in log
    # libzmq names no peer for a failed handshake: its address is read from the
    # accepted socket, which a quick refusal may already have closed.
    assert re.search(
        r"refused a connection from (127\.0\.0\.1:\d+|an address that could not be read)"
        r" that did not complete a CURVE handshake",
        log,
    ), log
    assert "[INFO] alice was here" in log
    assert "bob was here" not in log and "plaintext was here" not in log
    # What the refused clients wrote: 0 bytes.
    assert {suffix: daemon.file(suffix) for suffix in before} == before
    stats = wait_for(
        lambda: [
            ln
            for ln in daemon.stdout.splitlines()
            if "connections refused" in ln and not ln.endswith(" 0 connections refused")
        ],
        what="a stats line counting the refusals",
    )
    assert stats
    assert daemon.running() and daemon.terminate() == 0


def test_a_sender_id_belongs_to_the_key_that_said_hello(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)
    context = zmq.Context()
    victim = b"v" * 16
    try:
        alice = alice_has_written(context, daemon, keys, victim, "alice 1")
        # mallory holds an allowed key, but not the one that said hello as `victim`.
        mallory = raw_client(context, daemon.endpoint, b"m" * 16, keys, "mallory")
        mallory.send_multipart(
            [
                hello(victim),
                line_batch(victim, 2, "forged by mallory"),
                codec.encode(codec.Bye(victim, 2)),
            ]
        )
        wait_for(
            lambda: "with another key" in daemon.file("system.log"), what="the refusal reported"
        )
        alice.send(line_batch(victim, 2, "alice 2"))  # seq 2 is still alice's
        wait_for(lambda: "alice 2" in daemon.file("system.log"), what="alice's second batch")
        alice.close()
        mallory.close()
    finally:
        context.term()
    log = daemon.file("system.log")
    assert "forged by mallory" not in log
    mallory_key = (keys / "mallory.key").read_text().split('public-key = "')[1].split('"')[0]
    assert f"refused frames from key {mallory_key} naming a sender" in log
    assert daemon.running() and daemon.terminate() == 0


def test_a_pod_whose_rank_0_runs_the_collector_uses_the_same_keys(
    tmp_path: Path, keys: Path
) -> None:
    for rank in range(3):
        generate_keys(str(keys), f"rank{rank}")
        (keys / "clients" / f"rank{rank}.key").write_bytes((keys / f"rank{rank}.key").read_bytes())
    run_pod(
        tmp_path,
        3,
        ROXXEL_CURVE_SERVER_KEY=str(keys / "server.key"),
        ROXXEL_CURVE_CLIENT_KEY=str(keys / "rank{i}.key_secret"),
        ROXXEL_CURVE_SERVER_SECRET=str(keys / "server.key_secret"),
        ROXXEL_CURVE_CLIENTS=str(keys / "clients"),
    )
    check_pod_log(tmp_path, 3)
    assert "refused" not in read(tmp_path / "rank0" / "pod_system.log")


def test_a_rank_0_with_client_keys_but_no_server_secret_is_told_what_is_missing(
    tmp_path: Path, keys: Path
) -> None:
    result = run_python(
        f"from roxxel import Logger\nLogger({str(tmp_path)!r}, 'run')\n",
        ROXXEL_CURVE_SERVER_KEY=str(keys / "server.key"),
        ROXXEL_CURVE_CLIENT_KEY=str(keys / "alice.key_secret"),
    )
    assert result.returncode != 0
    assert "curve_server_secret=" in result.stderr and "ROXXEL_CURVE_CLIENTS" in result.stderr


def test_a_killed_process_is_reported_through_curve(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)
    result = run_python(
        "import os\n"
        "from roxxel import Logger\n"
        f"lg = Logger({str(tmp_path / 'client')!r}, 'run', aggregator={daemon.endpoint!r}, "
        f"curve_server_key={str(keys / 'server.key')!r}, "
        f"curve_client_key={str(keys / 'alice.key_secret')!r})\n"
        "lg.log_message('before the abort')\n"
        "assert lg.flush(30)\n"
        "os.abort()\n"
    )
    assert result.returncode == -6
    log = wait_for(
        lambda: "ended by SIGABRT" in (text := daemon.file("system.log")) and text,
        what="the death notice",
    )
    assert "[INFO] before the abort" in log and "refused" not in log
    assert daemon.terminate() == 0


def test_key_files_are_checked_with_errors_that_name_them(tmp_path: Path, keys: Path) -> None:
    server, alice = str(keys / "server.key"), str(keys / "alice.key_secret")
    with pytest.raises(ValueError, match="only one was given"):
        client_keys(server_key=server)
    with pytest.raises(ValueError, match="holds no secret key"):
        client_keys(server, str(keys / "alice.key"))
    with pytest.raises(ValueError, match="cannot read .*missing.key"):
        client_keys(str(keys / "missing.key"), alice)
    (keys / "garbage.key").write_text('public-key = "short"\n')
    with pytest.raises(ValueError, match="not 40 characters of Z85"):
        client_keys(str(keys / "garbage.key"), alice)
    os.chmod(alice, 0o644)
    with pytest.raises(ValueError, match=r"readable by other users \(mode 0644\); chmod 600"):
        client_keys(server, alice)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no client public key"):
        server_keys(str(keys / "server.key_secret"), str(tmp_path / "empty"))
    assert client_keys() is None  # nothing given, nothing in the environment


def test_the_daemon_refuses_half_a_curve_configuration(tmp_path: Path, keys: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator",
            "--bind",
            "tcp://127.0.0.1:0",
            "--log-dir",
            str(tmp_path),
            "--curve-secret",
            str(keys / "server.key_secret"),
        ],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "go together" in result.stderr


def test_roxxel_check_speaks_curve_with_keys_and_is_refused_without(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)

    def check(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "roxxel.cli", "check", daemon.endpoint, "--timeout", "2",
             *extra],
            env=python_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    with_keys = check(
        "--curve-server-key", str(keys / "server.key"),
        "--curve-client-key", str(keys / "alice.key_secret"),
    )  # fmt: skip
    assert with_keys.returncode == 0 and "answered" in with_keys.stdout, with_keys.stderr
    without = check()
    assert without.returncode == 1 and "could not complete a handshake" in without.stderr
    half = check("--curve-server-key", str(keys / "server.key"))
    assert half.returncode == 2 and "only one was given" in half.stderr
    assert daemon.terminate() == 0


def test_a_thread_collector_with_curve_delivers(tmp_path: Path, keys: Path) -> None:
    result = run_python(
        "from roxxel import Logger\n"
        f"with Logger({str(tmp_path)!r}, 'run', collector='thread', "
        f"curve_server_key={str(keys / 'server.key')!r}, "
        f"curve_client_key={str(keys / 'alice.key_secret')!r}, "
        f"curve_server_secret={str(keys / 'server.key_secret')!r}, "
        f"curve_clients={str(keys / 'clients')!r}, close_timeout=20) as lg:\n"
        "    assert lg.endpoint.startswith('ipc://'), lg.endpoint\n"
        "    lg.log_message('through a CURVE thread collector')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "[INFO] through a CURVE thread collector" in read(tmp_path / "run_system.log")


def test_sighup_revokes_a_removed_key_on_its_open_connection(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)
    context = zmq.Context()
    sender = b"a" * 16
    try:
        alice = alice_has_written(context, daemon, keys, sender, "alice before")
        (keys / "clients" / "alice.key").unlink()
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "1 client key(s) allowed" in daemon.stdout, what="the keys re-read")
        alice.send(line_batch(sender, 2, "alice after"))
        wait_for(
            lambda: "no longer among the allowed keys" in daemon.file("system.log"),
            what="frames of the removed key refused",
        )
        alice.close()
    finally:
        context.term()
    assert "alice after" not in daemon.file("system.log")
    assert daemon.terminate() == 0


def test_many_unknown_keys_from_one_host_are_reported_once(
    tmp_path: Path, keys: Path, start_daemon
) -> None:
    daemon = curve_daemon(start_daemon, tmp_path, keys)
    context = zmq.Context()
    sockets = []
    try:
        for _ in range(30):
            public, secret = zmq.curve_keypair()
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.curve_serverkey = client_keys(
                str(keys / "server.key"), str(keys / "alice.key_secret")
            ).server_public
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.connect(daemon.endpoint)
            sockets.append(sock)
        wait_for(
            lambda: any(
                int(n.replace(",", "")) >= 30
                for n in re.findall(r"([\d,]+) connections refused", daemon.stdout)
            ),
            what="30 refusals counted",
        )
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    assert daemon.file("system.log").count("refused CURVE key") == 1
    assert daemon.terminate() == 0
