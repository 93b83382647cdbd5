"""``roxxel-aggregator --help`` names every command the program has, keygen included."""

from __future__ import annotations

import subprocess
import sys

from .conftest import python_env


def aggregator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_keygen_with_a_one_line_description() -> None:
    result = aggregator("--help")
    assert result.returncode == 0, result.stderr
    usage, _, rest = result.stdout.partition("\n\n")
    assert "roxxel-aggregator keygen --out DIR --name NAME" in usage
    assert "  keygen    write a CURVE key pair for the collector or a client\n" in rest
    keygen = aggregator("keygen", "--help")
    assert keygen.returncode == 0 and "--out DIR" in keygen.stdout, keygen.stderr


def test_the_daemon_s_usage_error_shows_both_forms() -> None:
    result = aggregator()
    assert result.returncode == 2
    assert "roxxel-aggregator keygen --out DIR --name NAME" in result.stderr
    assert "required: --bind, --log-dir" in result.stderr
