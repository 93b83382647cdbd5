"""CURVE key files: ``roxxel-aggregator keygen`` (the rest of CURVE is not built yet)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from roxxel.security import generate_keys

from .conftest import python_env


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
