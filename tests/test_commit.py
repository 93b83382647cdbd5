"""Group commit and roll back on real files, without a socket; where diagnostics go."""

from __future__ import annotations

import errno
import logging
from collections import Counter
from pathlib import Path

import pytest

from aggregator.checkpoint import load_checkpoint
from aggregator.commit import GroupCommit
from aggregator.ledger import Apply, Ledger
from aggregator.reports import Reports
from aggregator.sinks import Origin, default_sinks
from roxxel import codec
from roxxel.diagnostics import diagnostics

from .conftest import Said

SID = bytes(range(16))
ORIGIN = Origin(0, "h", 1)


@pytest.fixture
def said() -> Said:
    return Said()


@pytest.fixture
def log(said: Said, request: pytest.FixtureRequest) -> logging.Logger:
    logger = logging.Logger(f"test.{request.node.name}")  # not registered: no global state
    logger.addHandler(said)
    return logger


def write_line(commits: GroupCommit, ledger: Ledger, seq: int, text: str) -> None:
    frame = codec.encode(codec.Batch(SID, seq, [["l", 1.0, 20, text]]))
    event = ledger.receive(frame)
    assert isinstance(event, Apply)
    commits.sinks.write_lines(ORIGIN, event.batch.records)
    commits.dirty = True


def test_a_failed_commit_rolls_back_files_and_ledger_and_says_so_once(
    tmp_path: Path, log: logging.Logger, said: Said, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, stats = Ledger(), Counter()
    commits = GroupCommit(
        default_sinks(str(tmp_path), "run", None),
        ledger,
        Reports(),
        stats,
        log,
        checkpoint=str(tmp_path / ".run_checkpoint.json"),
    )
    commits.resume()
    ledger.receive(codec.encode(codec.Hello(SID, "h", 0, 1, 1, "run")))
    write_line(commits, ledger, 1, "kept")
    assert commits.commit() is None  # no spell of failures ended
    assert ledger.acknowledged(SID) == 1
    write_line(commits, ledger, 2, "rewound")
    for _ in range(2):  # the same failure twice: said once
        commits.failed(OSError(errno.ENOSPC, "No space left on device"))
    log_file = tmp_path / "run_system.log"
    assert log_file.read_text().splitlines()[-1].endswith("] [INFO] kept")
    assert (ledger.senders[SID].committed, stats["write_errors"]) == (1, 2)
    assert len(said.messages) == 1 and "writing failed ([Errno 28]" in said.messages[0]
    write_line(commits, ledger, 2, "again")
    recovered = commits.commit()
    assert recovered is not None and "it works again" in recovered
    assert ledger.acknowledged(SID) == 2
    saved = load_checkpoint(str(tmp_path / ".run_checkpoint.json"))
    assert saved is not None and saved.senders[SID.hex()]["committed"] == 2
    assert [ln.rsplit("] ", 1)[1] for ln in log_file.read_text().splitlines()] == [
        "kept",
        "again",
    ]
    commits.close()
    assert capsys.readouterr().err == ""  # the injected logger took it all


def test_default_diagnostics_write_each_message_to_the_stderr_of_the_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    diagnostics("roxxel.test").warning("roxxel: %s went wrong", "something")
    assert capsys.readouterr().err == "roxxel: something went wrong\n"


def test_the_default_diagnostics_keep_a_level_the_application_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger("roxxel")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers.clear()
    root.setLevel(logging.ERROR)
    try:
        diagnostics("roxxel.test").warning("not shown")
        diagnostics("roxxel.test").error("shown")
        assert capsys.readouterr().err == "shown\n"
    finally:
        root.handlers[:], root.propagate = saved[0], saved[2]
        root.setLevel(saved[1])
