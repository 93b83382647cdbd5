"""The checkpoint across restarts with real files: which file a mark names
(rotated or moved away while the collector was stopped: a new file; cut
short in place: refused), an older checkpoint without inodes, and the run's
private dot-files (mode 0600).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from aggregator import Collector
from aggregator import checkpoint as checkpoint_module
from aggregator.checkpoint import Checkpoint, CheckpointFile, load_checkpoint, replace_file
from aggregator.sinks import MetricsCsvSink, Origin, SystemLogSink

from .conftest import metrics_runs, read
from .test_collector import RawClient, durable_collector, stop
from .test_delivery import messages

RUN_FILES = ("run_system.log", "run_metrics.csv", "run_metrics.jsonl")
LINE = "[2026-01-01 00:00:00] [INFO] {}\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, so that modes are what the code asks for."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def committed_run(log_dir: Path, *texts: str) -> bytes:
    """A collector's run with ``texts`` committed and acknowledged, then stopped; the sender id."""
    c, thread = durable_collector(log_dir)
    client = RawClient(c.endpoint)
    try:
        client.hello()
        for seq, text in enumerate(texts, 1):
            assert client.batch(seq, text) == seq
    finally:
        client.close()
        stop(c, thread)
    return client.sender_id


def resend_and_stop(log_dir: Path, sender_id: bytes, first: int, texts: list[str]) -> None:
    """A restarted collector; the sender sends ``texts`` from seq ``first`` on
    (what it still holds unacknowledged, then new batches)."""
    c, thread = durable_collector(log_dir)
    client = RawClient(c.endpoint, sender_id)
    try:
        for seq, text in enumerate(texts, first):
            assert client.batch(seq, text) == seq
    finally:
        client.close()
        stop(c, thread)


def test_a_restart_after_a_rename_rotation_starts_anew_and_cuts_the_old_file_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "logs"
    sender = committed_run(log_dir, "one", "two")
    log = log_dir / "run_system.log"
    # A batch written after the last checkpoint: never acknowledged, it is resent.
    with open(log, "a") as f:
        f.write(LINE.format("three"))
    for name in RUN_FILES:
        os.rename(log_dir / name, log_dir / f"{name}.1")
    resend_and_stop(log_dir, sender, 3, ["three", "four"])
    rotated = log_dir / "run_system.log.1"
    assert messages(read(rotated)) == ["one", "two"]  # cut back to the checkpoint
    assert messages(read(log)) == ["three", "four"]
    err = capfd.readouterr().err
    assert f"{log} is a new file; the one the last checkpoint names was renamed to {rotated}" in err
    assert f"dropping {len(LINE.format('three'))} byte(s) never acknowledged" in err


def test_files_moved_out_of_the_log_dir_while_stopped_start_anew(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_dir, away = tmp_path / "logs", tmp_path / "away"
    sender = committed_run(log_dir, "one")
    away.mkdir()
    for name in RUN_FILES:
        os.rename(log_dir / name, away / name)
    resend_and_stop(log_dir, sender, 2, ["two"])
    assert messages(read(away / "run_system.log")) == ["one"]
    assert messages(read(log_dir / "run_system.log")) == ["two"]
    assert read(log_dir / "run_metrics.csv") == ""  # no row yet: no header either
    assert "is no longer in its directory: moved away?" in capfd.readouterr().err


def test_a_file_cut_short_in_place_is_still_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    committed_run(log_dir, "one", "two")
    log = log_dir / "run_system.log"
    inode = os.stat(log).st_ino
    os.truncate(log, 10)  # logrotate's copytruncate would do this
    with pytest.raises(OSError) as refused:
        Collector.for_log_dir("tcp://127.0.0.1:0", str(log_dir), "run")
    text = str(refused.value)
    assert f"{log} holds 10 bytes, less than the" in text
    assert f"it is the file the checkpoint names (inode {inode})" in text
    assert os.path.getsize(log) == 10  # nothing was done to it


def test_a_checkpoint_of_an_older_roxxel_without_inodes_still_loads_and_rewinds(
    tmp_path: Path,
) -> None:
    log_dir = tmp_path / "logs"
    sender = committed_run(log_dir, "one")
    path = log_dir / ".run_checkpoint.json"
    saved = load_checkpoint(str(path))
    saved.marks["sinks"] = list(saved.marks["sinks"].values())  # a list, by place
    for mark in saved.marks["sinks"]:
        del mark["inode"], mark["crc32"]
    # As an older roxxel wrote it: one file, no generation, no journal.
    (log_dir / ".run_checkpoint.journal").unlink()
    path.write_text(json.dumps({"version": 1, "senders": saved.senders, "marks": saved.marks}))
    log = log_dir / "run_system.log"
    with open(log, "a") as f:
        f.write(LINE.format("never acknowledged"))
    resend_and_stop(log_dir, sender, 2, ["two"])
    assert messages(read(log)) == ["one", "two"]
    assert "inode" in load_checkpoint(str(path)).marks["sinks"]["SystemLogSink"]  # written anew


def test_a_new_file_written_after_a_sighup_but_never_committed_starts_empty(
    tmp_path: Path,
) -> None:
    """Renamed, reopened, written, killed before a checkpoint named the new file."""
    path = tmp_path / "run_system.log"
    origin = Origin(0, "h", 1)
    sink = SystemLogSink(str(path))
    sink.write_lines(origin, [["l", 1.0, 20, "acknowledged"]])
    sink.sync()
    mark = sink.checkpoint_mark()
    sink.write_lines(origin, [["l", 1.0, 20, "past the checkpoint"]])
    sink.flush()
    os.rename(path, f"{path}.1")
    sink.reopen()
    sink.write_lines(origin, [["l", 1.0, 20, "in the new file"]])
    sink.close()
    again = SystemLogSink(str(path))
    notes = again.resume(mark)
    again.close()
    assert messages(read(Path(f"{path}.1"))) == ["acknowledged"]
    assert read(path) == ""
    assert len(notes) == 1 and "dropping the" in notes[0] and "no checkpoint covered" in notes[0]


def test_a_file_that_only_has_the_old_inode_is_not_cut(tmp_path: Path) -> None:
    """The same inode with other bytes before the mark (an inode number used again)."""
    path = tmp_path / "run_system.log"
    sink = SystemLogSink(str(path))
    sink.write_lines(Origin(0, "h", 1), [["l", 1.0, 20, "acknowledged"]])
    sink.sync()
    mark = sink.checkpoint_mark()
    sink.close()
    other = tmp_path / "other.log"
    os.rename(path, other)
    text = read(other)
    with open(other, "r+") as f:  # in place: the inode stays
        f.write(text.upper() + "and more\n")
    again = SystemLogSink(str(path))
    notes = again.resume(mark)
    again.close()
    assert read(other) == text.upper() + "and more\n"
    assert "no longer in its directory" in notes[0]


def test_a_csv_rewritten_with_a_wider_header_after_the_checkpoint_is_rewound(
    tmp_path: Path,
) -> None:
    """The CSV replaces its own file when a key is new: another inode, not a rotation."""
    path = tmp_path / "m.csv"
    origin = Origin(0, "h", 1)
    sink = MetricsCsvSink(str(path))
    sink.write_metrics(origin, metrics_runs([("m", 1, {"a": 1.0}), ("m", 2, {"a": 2.0})]))
    sink.sync()
    mark = sink.checkpoint_mark()
    sink.write_metrics(origin, metrics_runs([("m", 3, {"a": 3.0, "b": 1.0})]))
    sink.close()  # and the collector was killed before its next checkpoint
    assert os.stat(path).st_ino != mark["inode"]
    again = MetricsCsvSink(str(path))
    assert again.resume(mark) == []
    again.close()
    assert read(path) == "step,a,b\n1,1.00000,\n2,2.00000,\n"


def run_with_a_quarantine(log_dir: Path) -> list[Path]:
    """A collector's run with a quarantined batch and a line, stopped; its dot-files."""
    c, thread = durable_collector(log_dir)
    client = RawClient(c.endpoint)
    try:
        client.hello()
        client.sock.send(msgpack.packb([1, "batch", client.sender_id, 1, {"not": "a list"}]))
        assert client.ack() == 1  # quarantined
        assert client.batch(2, "x") == 2
    finally:
        client.close()
        stop(c, thread)
    names = (".lock", "_checkpoint.json", "_checkpoint.journal", "_quarantine.jsonl")
    return [log_dir / f".run{s}" for s in names]


def test_the_runs_dot_files_are_private(tmp_path: Path, umask_022: None) -> None:
    log_dir = tmp_path / "logs"
    dot_files = run_with_a_quarantine(log_dir)
    assert sorted(p.name for p in log_dir.iterdir() if p.name.startswith(".")) == sorted(
        p.name for p in dot_files
    )  # no temporary file left
    assert {p.name: mode(p) for p in dot_files} == {p.name: 0o600 for p in dot_files}
    assert {mode(log_dir / name) for name in RUN_FILES} == {0o644}  # the logs are not


def test_dot_files_with_wider_modes_are_narrowed_when_opened(
    tmp_path: Path, umask_022: None
) -> None:
    log_dir = tmp_path / "logs"
    dot_files = run_with_a_quarantine(log_dir)
    for p in dot_files:
        os.chmod(p, 0o644)  # as an older roxxel made them
    stop(*durable_collector(log_dir))
    assert {p.name: mode(p) for p in dot_files} == {p.name: 0o600 for p in dot_files}


def test_a_replaced_file_keeps_its_mode_and_its_temporary_file_is_private(
    tmp_path: Path, umask_022: None
) -> None:
    path, tmp = tmp_path / "m.csv", tmp_path / ".m.csv.widen.tmp"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    tmp.write_text("a crash's leftover\n")
    os.chmod(tmp, 0o666)
    seen: list[int] = []

    def write(f) -> None:
        seen.append(mode(tmp))
        f.write("new\n")

    replace_file(str(path), write, str(tmp))
    assert seen == [0o600] and mode(path) == 0o640 and read(path) == "new\n"
    replace_file(str(tmp_path / "c.json"), lambda f: f.write("{}"), private=True)
    assert mode(tmp_path / "c.json") == 0o600


# -- the journal: a commit costs what changed ------------------------------------------


def _senders(n: int, committed: int = 1) -> dict[str, dict]:
    return {f"{i:032x}": {"committed": committed, "rank": i} for i in range(n)}


def test_a_commit_appends_what_changed_and_a_reader_sees_the_last_complete_one(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / ".run_checkpoint.json")
    store = CheckpointFile(path)
    everyone = _senders(1000)
    store.save({}, {"m": 0}, lambda: dict(everyone))  # the first save is a snapshot
    snapshot = os.path.getsize(path)
    journal = tmp_path / ".run_checkpoint.journal"
    for step in range(1, 4):
        changed = {f"{0:032x}": {"committed": 1 + step, "rank": 0}, f"{999:032x}": None}
        store.save(changed, {"m": step}, lambda: pytest.fail("not a snapshot"))
    assert os.path.getsize(path) == snapshot  # not rewritten
    assert journal.stat().st_size < 3 * 200  # three small lines, not 3 x 1000 senders
    loaded = load_checkpoint(path)
    assert loaded.marks == {"m": 3} and len(loaded.senders) == 999
    assert loaded.senders[f"{0:032x}"]["committed"] == 4
    # A line cut short by a crash was never acknowledged: the one before counts.
    with open(journal, "ab") as f:
        f.write(b'{"generation":1,"senders":{},"marks":{"m":4')
    assert load_checkpoint(path).marks == {"m": 3}
    # The next commit cuts it off before it appends.
    again = CheckpointFile(path)
    assert again.load().marks == {"m": 3}
    again.save({}, {"m": 5}, dict)
    assert load_checkpoint(path).marks == {"m": 5}


def test_a_journal_past_its_bound_is_folded_into_a_new_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "_MIN_JOURNAL_BYTES", 1000)
    path = str(tmp_path / ".run_checkpoint.json")
    store = CheckpointFile(path)
    senders = _senders(2)
    store.save({}, {"m": 0}, lambda: dict(senders))
    journal = tmp_path / ".run_checkpoint.journal"
    for step in range(1, 40):
        senders[f"{1:032x}"] = {"committed": step, "rank": 1}
        store.save({f"{1:032x}": senders[f"{1:032x}"]}, {"m": step}, lambda: dict(senders))
        assert journal.stat().st_size <= 1000 + 200
    assert json.loads(Path(path).read_text())["generation"] > 1  # folded, more than once
    assert load_checkpoint(path) == Checkpoint(senders, {"m": 39})
    # A crash after the snapshot, before the journal was cut: its lines are older.
    stale = json.dumps({"generation": 0, "senders": {"ff" * 16: None}, "marks": {"m": -1}})
    journal.write_text(stale + "\n")
    snapshot = json.loads(Path(path).read_text())
    assert load_checkpoint(path) == Checkpoint(snapshot["senders"], snapshot["marks"])


def test_a_journal_cut_or_removed_under_the_collector_gives_a_snapshot_not_a_gap(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / ".run_checkpoint.json")
    journal = tmp_path / ".run_checkpoint.journal"
    store = CheckpointFile(path)
    senders = _senders(1)
    store.save({}, {"m": 0}, lambda: dict(senders))
    store.save({}, {"m": 1}, dict)
    store.save({}, {"m": 2}, dict)
    journal.unlink()  # an operator's clean-up
    senders[f"{0:032x}"] = {"committed": 3, "rank": 0}
    store.save({f"{0:032x}": senders[f"{0:032x}"]}, {"m": 3}, lambda: dict(senders))
    store.save({}, {"m": 4}, dict)
    assert not journal.read_bytes().startswith(b"\0")
    assert load_checkpoint(path) == Checkpoint(senders, {"m": 4})
