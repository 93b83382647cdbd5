"""The READMEs of deploy/: every relative link points at a file that exists."""

from __future__ import annotations

import re

from .deploy_helpers import DEPLOY


def test_every_readme_link_points_at_a_file() -> None:
    readmes = sorted(DEPLOY.rglob("README.md"))
    assert {p.relative_to(DEPLOY).as_posix() for p in readmes} >= {
        "README.md",
        "systemd/README.md",
        "kubernetes/README.md",
        "slurm/README.md",
        "docker/README.md",
    }
    for readme in readmes:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", readme.read_text()):
            if "://" in target:
                continue
            assert (readme.parent / target).exists(), f"{readme}: broken link {target}"
