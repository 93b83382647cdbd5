"""What a careless script or a hostile peer names and dates cannot break the run's files
or the terminal of whoever reads them: metric names that are the CSV's own columns,
times out of range, control characters in names and host names.

Real daemons, real Loggers (rank 0 here, rank 1 in a child process), a raw ZeroMQ
DEALER that sends what no honest client would, and the real ``roxxel`` CLI.
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq

from roxxel import Logger, codec
from roxxel.cli import main as roxxel_cli
from roxxel.lines import parse_line

from .conftest import Daemon, read, run_python

# -- a raw peer ----------------------------------------------------------------------


@contextmanager
def raw_peer(endpoint: str, host: str = "evil", rank: int = 1) -> Iterator[RawPeer]:
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        peer = RawPeer(sock, secrets.token_bytes(codec.SENDER_ID_LEN))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, peer.sender_id)
        sock.connect(endpoint)
        peer.send(codec.Hello(peer.sender_id, host, rank, 4242, 2, "run"))
        yield peer


class RawPeer:
    """A DEALER that speaks the codec by hand; each frame waits for its ack."""

    def __init__(self, sock: zmq.Socket, sender_id: bytes) -> None:
        self.sock = sock
        self.sender_id = sender_id
        self.seq = 0

    def send(self, frame: codec.Hello | codec.Batch) -> codec.Ack:
        self.sock.send(codec.encode(frame))
        assert self.sock.poll(30_000), "no answer from the daemon"
        ack = codec.decode(self.sock.recv())
        assert isinstance(ack, codec.Ack), ack
        return ack

    def batch(self, *records: list) -> None:
        """Send ``records`` as the next batch; back once they are written (acked)."""
        self.seq += 1
        assert self.send(codec.Batch(self.sender_id, self.seq, list(records))).seq == self.seq


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# -- metric names that are the CSV's own columns ------------------------------------

_RANK_ONE = dict(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", ROXXEL_WATCHER="0")
# (metrics, all_ranks) of calls that must raise
_CALLS = [({"loss": 1.0, "step": 3}, False), ({"rank": 1.0}, True), ({"rank": 1.0}, False)]


def _errors_on_rank_1(tmp_path: Path, endpoint: str, all_ranks_logger: bool) -> str:
    """What a Logger of rank 1 (a child process) raises for each of ``_CALLS``, a line each."""
    code = f"""
import roxxel
with roxxel.Logger({str(tmp_path)!r}, "run", aggregator={endpoint!r},
                   metrics_from_all_ranks={all_ranks_logger}) as log:
    for metrics, all_ranks in {_CALLS!r}:
        try:
            log.log_metrics_summary(1, metrics, all_ranks=all_ranks)
        except ValueError as exc:
            print(exc)
    assert log.flush(30)
"""
    done = run_python(code, **_RANK_ONE)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("all_ranks_logger", [False, True])
def test_a_metric_named_step_or_rank_is_refused_alike_on_every_rank(
    tmp_path: Path, daemon: Daemon, all_ranks_logger: bool
) -> None:
    errors = []
    with Logger(
        tmp_path, "run", aggregator=daemon.endpoint, watcher=False,
        metrics_from_all_ranks=all_ranks_logger,
    ) as log:  # fmt: skip
        for metrics, all_ranks in _CALLS:
            with pytest.raises(ValueError) as info:
                log.log_metrics_summary(1, metrics, all_ranks=all_ranks)
            errors.append(f"{info.value}\n")
        log.log_metrics_summary(2, {"loss": 0.5})  # the Logger goes on
        assert log.flush(30)
    assert errors[0] == (
        "log_metrics_summary: metric name 'step' is reserved: roxxel's metrics files have "
        "their own columns named 'step', 'rank', 'ts', 'host', 'sent_ts'\n"
    )
    assert "metric name 'rank' is reserved" in errors[1] == errors[2]
    # A rank whose plain rows are not even sent fails the same way.
    assert _errors_on_rank_1(tmp_path, daemon.endpoint, all_ranks_logger) == "".join(errors)
    header = ["step", "rank", "loss"] if all_ranks_logger else ["step", "loss"]
    assert csv_rows(daemon.file("metrics.csv"))[0] == header


def test_a_raw_batch_with_a_metric_named_step_or_rank_leaves_the_header_alone(
    daemon: Daemon,
) -> None:
    now = time.time()
    with raw_peer(daemon.endpoint, rank=2) as peer:
        peer.batch(
            ["m", ["loss"], [now], [1], [[0.5]]],
            ["m", ["loss", "step"], [now], [2], [[0.25, 99]]],
            ["r", ["rank"], [now], [3], [[7]]],
            ["r", ["loss"], [now], [4], [[0.125]]],
        )
    assert csv_rows(daemon.file("metrics.csv")) == [
        ["step", "loss", "rank"],
        ["1", "0.50000", ""],
        ["4", "0.12500", "2"],
    ]
    rows = [json.loads(line) for line in daemon.file("metrics.jsonl").splitlines()]
    assert rows == [
        {"ts": rows[0]["ts"], "step": 1, "rank": 2, "host": rows[0]["host"], "loss": 0.5},
        {"ts": rows[1]["ts"], "step": 4, "rank": 2, "host": rows[0]["host"], "loss": 0.125},
    ]
    log = daemon.file("system.log")
    # Refused whole, as any invalid record: reported once, kept in the quarantine file.
    assert "invalid record: metric name 'step' is reserved" in log
    quarantined = read(daemon.log_dir / ".run_quarantine.jsonl")
    assert "'step' is reserved" in quarantined and "'rank' is reserved" in quarantined


# -- times out of range -------------------------------------------------------------

_BAD_TIMES = [-9.9e10, 1e300, math.nan, math.inf]


def test_records_dated_out_of_range_are_kept_with_the_collectors_time(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.time()
    with raw_peer(daemon.endpoint) as peer:
        peer.batch(
            *[["l", ts, 30, f"warning sent at {ts!r}"] for ts in _BAD_TIMES],
            *[["l", ts, 20, f"info sent at {ts!r}\n[not a head] continued"] for ts in _BAD_TIMES],
            ["x", math.nan, 50, "died at nan"],
            ["l", start, 25, "a level between INFO and WARNING"],
            ["l", start, -5, "a negative level"],
            ["l", start, 40, "an error\n  with its traceback"],
            ["m", ["loss"], [*_BAD_TIMES, start], [1, 2, 3, 4, 5], [[0.5]] * 5],
        )
    after = time.strftime("%Y-%m-%d %H:%M:%S")
    log = daemon.file("system.log")
    heads = {head.text: head for head in map(parse_line, log.splitlines()) if head is not None}
    for ts in _BAD_TIMES:
        head = heads[f"(time out of range: {ts!r}) warning sent at {ts!r}"]
        assert before <= head.stamp <= after and head.rank == 1
        assert f"(time out of range: {ts!r}) info sent at {ts!r}" in heads
    assert "(time out of range: nan) died at nan" in heads
    assert "3 metrics row(s) sent with a time out of range" not in log  # four were
    assert "4 metrics row(s) sent with a time out of range" in log

    rows = [json.loads(line) for line in daemon.file("metrics.jsonl").splitlines()]
    sent = [r.get("sent_ts") for r in rows]
    assert math.isnan(sent[2]) and sent[:2] + sent[3:] == [-9.9e10, 1e300, math.inf, None]
    assert all(start - 1 <= r["ts"] <= time.time() + 1 for r in rows)
    assert [r[0] for r in csv_rows(daemon.file("metrics.csv"))[1:]] == list("12345")

    assert roxxel_cli(["tail", str(daemon.log_dir), "--no-follow", "-n", "100",
                       "--level", "WARNING"]) == 0  # fmt: skip
    shown = capsys.readouterr().out.splitlines()
    texts = [head.text for head in map(parse_line, shown) if head is not None]
    # A death notice is written before the rest of its batch, then the collector's report.
    assert texts[0] == "(time out of range: nan) died at nan"
    assert "4 metrics row(s) sent with a time out of range" in texts[1]
    assert texts[2:] == [
        *[f"(time out of range: {ts!r}) warning sent at {ts!r}" for ts in _BAD_TIMES],
        "an error",
    ]
    assert "  with its traceback" in shown  # whole records
    assert not any("info sent" in line or "continued" in line for line in shown)
    assert not any("Level" in line for line in shown)


# -- control characters and formulas ------------------------------------------------

_HOSTILE_HOST = "\x1b[2J\x1b]0;PWN\x07"


def test_status_escapes_a_hostile_host_name(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    with raw_peer(daemon.endpoint, host=_HOSTILE_HOST):
        assert roxxel_cli(["status", daemon.endpoint]) == 0
        out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b]0;PWN\\x07" in out


def test_a_hostile_metric_name_gives_a_guarded_escaped_header_cell(daemon: Daemon) -> None:
    name = '=HYPERLINK("http://evil","x")\x00\x1b[31m'
    with raw_peer(daemon.endpoint) as peer:
        peer.batch(["m", [name, "note"], [time.time()], [1], [[1.5, "\x1b[2Jcleared\x00"]]])
    text = daemon.file("metrics.csv")
    assert "\x00" not in text and "\x1b" not in text
    header, row = csv_rows(text)
    assert header == ["step", '\'=HYPERLINK("http://evil","x")\\x00\\x1b[31m', "note"]
    assert row == ["1", "1.50000", "\\x1b[2Jcleared\\x00"]
    # The JSONL keeps the name as sent.
    line = json.loads(daemon.file("metrics.jsonl"))
    assert {k: line[k] for k in list(line)[4:]} == {name: 1.5, "note": "\x1b[2Jcleared\x00"}
