"""deploy/docker: the Dockerfile's instructions (exec-form entrypoint whose
command line the daemon parses, port, volume, non-root user), that what it
COPYs builds a wheel with both packages and the console script, and
``hadolint`` where it is installed.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import REPO
from .deploy_helpers import DEPLOY, daemon_args, tcp_port, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending
    return instructions


def test_dockerfile_instructions() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    by_word: dict[str, list[str]] = {}
    for word, rest in instructions:
        by_word.setdefault(word, []).append(rest)

    (entrypoint,) = by_word["ENTRYPOINT"]
    (cmd,) = by_word["CMD"]
    entrypoint, cmd = json.loads(entrypoint), json.loads(cmd)  # exec form: signals reach it
    assert entrypoint == ["roxxel-aggregator"]
    args = daemon_args([*entrypoint[1:], *cmd], f"{DOCKERFILE} ENTRYPOINT+CMD")
    assert args.bind == "tcp://0.0.0.0:5555"
    assert by_word["EXPOSE"] == [str(tcp_port(args.bind))]
    assert by_word["VOLUME"] == [args.log_dir]
    assert by_word["STOPSIGNAL"] == ["SIGTERM"]
    (user,) = by_word["USER"]
    assert user.split(":")[0] not in ("root", "0")
    # The user is in effect for the daemon: USER comes after the last RUN.
    words = [w for w, _ in instructions]
    assert words.index("USER") > len(words) - 1 - words[::-1].index("RUN")
    assert any("pip install '.[jetstream]'" in run for run in by_word["RUN"])
    # Every COPY source exists in the build context (the repository root).
    for copy in by_word["COPY"]:
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_copies_enough_to_install(tmp_path: Path) -> None:
    """What the Dockerfile COPYs builds a wheel with both packages and the console script."""
    context = tmp_path / "src"
    context.mkdir()
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(src, context / source, ignore=ignore)
                else:
                    shutil.copy2(src, context / source)
    result = subprocess.run(
        # As `pip install .` in the image: an isolated build (setuptools from the index).
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist")]
        + [str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("roxxel-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "aggregator/cli.py" in names and "roxxel/logger.py" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "roxxel-aggregator = aggregator.cli:main" in zf.read(entry_points).decode()


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
