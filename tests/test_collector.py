"""The collector's protocol on real sockets, written once and run over ipc:// and tcp://."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from aggregator import Collector, default_sinks
from aggregator.checkpoint import load_checkpoint
from aggregator.ledger import IDLE_SENDER_SECONDS, Ledger
from aggregator.sinks import MetricsCsvSink, Origin
from roxxel import codec

from .conftest import Clock, metrics_runs, read, wait_for


@pytest.fixture
def ledger_options() -> dict[str, Any]:
    """Bounds of the collector's ledger; a test parametrizes this to change them."""
    return {}


@pytest.fixture(params=["ipc", "tcp"])
def collector(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock, ledger_options: dict[str, Any]
) -> Iterator[Collector]:
    bind = f"ipc://{tmp_path}/c.sock" if request.param == "ipc" else "tcp://127.0.0.1:0"
    ledger = Ledger(clock=clock, **ledger_options)
    c = Collector(bind, default_sinks(str(tmp_path / "logs"), "run", None), ledger=ledger)
    thread = threading.Thread(target=c.run, kwargs={"poll": 0.02})
    thread.start()
    try:
        yield c
    finally:
        c.stop()
        thread.join(30)
        c.close()
        assert not thread.is_alive()


class RawClient:
    """A DEALER speaking the codec by hand, to drive the collector's edge cases."""

    def __init__(self, endpoint: str, sender_id: bytes | None = None):
        self.sender_id = sender_id or secrets.token_bytes(codec.SENDER_ID_LEN)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, self.sender_id)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 30_000)
        self.sock.connect(endpoint)

    def hello(self, rank: int = 0, acked: int = 0) -> int:
        self.sock.send(codec.encode(codec.Hello(self.sender_id, "h", rank, 1, 1, "run", acked)))
        return self.ack()

    def batch(self, seq: int, *texts: str) -> int:
        records = [["l", 1.0, 20, t] for t in texts]
        self.sock.send(codec.encode(codec.Batch(self.sender_id, seq, records)))
        return self.ack()

    def ack(self) -> int:
        frame = codec.decode(self.sock.recv())
        assert isinstance(frame, codec.Ack) and frame.sender_id == self.sender_id
        return frame.seq

    def close(self) -> None:
        self.sock.close()


def messages(collector: Collector) -> list[str]:
    path = collector.sinks.sinks[0].path
    return [line.split("] ", 2)[2] for line in read(path).splitlines()]


@pytest.fixture
def client(collector: Collector) -> Iterator[RawClient]:
    c = RawClient(collector.endpoint)
    yield c
    c.close()


def test_ack_comes_after_the_batch_is_in_the_file(collector: Collector, client: RawClient) -> None:
    assert client.hello() == 0
    assert client.batch(1, "one", "two") == 1
    assert messages(collector) == ["one", "two"]


def test_duplicate_batch_is_re_acked_not_rewritten(collector: Collector, client: RawClient) -> None:
    client.hello()
    assert client.batch(1, "one") == 1
    assert client.batch(1, "one") == 1
    assert messages(collector) == ["one"]
    assert collector.stats["duplicate"] == 1


def test_one_message_may_carry_several_frames(collector: Collector, client: RawClient) -> None:
    frames = [
        codec.encode(codec.Hello(client.sender_id, "h", 0, 1, 1, "run")),
        codec.encode(codec.Batch(client.sender_id, 1, [["l", 1.0, 20, "one"]])),
        codec.encode(codec.Batch(client.sender_id, 2, [["l", 1.0, 20, "two"]])),
    ]
    client.sock.send_multipart(frames)
    assert client.ack() == 2  # one ack per sender and cycle, after the commit
    assert messages(collector) == ["one", "two"]


@pytest.mark.parametrize("ledger_options", [{"max_senders": 2}])
def test_senders_past_the_bound_are_refused_until_one_says_bye(
    collector: Collector, client: RawClient
) -> None:
    second, third = RawClient(collector.endpoint), RawClient(collector.endpoint)
    try:
        client.hello()
        second.hello()
        third.sock.send(codec.encode(codec.Hello(third.sender_id, "h", 3, 1, 1, "run", 7)))
        wait_for(lambda: collector.stats["refused_senders"] == 1)
        # It does not exist here, and no ack came: the first frame it gets is an answer.
        third.sock.send(codec.encode(codec.Query(third.sender_id, 1, {"what": "status"})))
        answer = codec.decode(third.sock.recv())
        assert isinstance(answer, codec.Answer) and answer.body["known_senders"] == 2
        assert "more than 2 senders: refusing new ones" in read(collector.sinks.sinks[0].path)
        second.sock.send(codec.encode(codec.Bye(second.sender_id, 0)))
        assert second.ack() == 0
        assert third.hello(rank=3) == 0  # room again; not 7: the refused hello got no ack
        assert third.batch(1, "from the third") == 1
    finally:
        second.close()
        third.close()
    assert "[rank 3] from the third" in messages(collector)


@pytest.mark.parametrize("ledger_options", [{"idle_kept": 1}])
def test_silent_senders_are_forgotten_past_the_bound_and_a_live_one_goes_on(
    collector: Collector, client: RawClient, clock: Clock
) -> None:
    silent = RawClient(collector.endpoint)
    try:
        silent.hello(rank=1)
        assert silent.batch(1, "then it crashed, without a watcher") == 1
        client.hello()
        assert client.batch(1, "one") == 1
        clock.now += IDLE_SENDER_SECONDS  # both silent for an hour
        wait_for(lambda: collector.stats["forgotten_senders"] == 2, what="two senders forgotten")
        assert not collector.ledger.senders
    finally:
        silent.close()
    assert not collector.ledger.open  # no longer waited for by a draining collector
    # The live client's next batch is not known; its hello brings it back. Even
    # if it never saw the ack of batch 1 (acked=0) and resends it, the
    # collector remembers what it had written: nothing twice.
    assert client.hello(acked=0) == 1
    assert client.batch(1, "one") == 1  # a duplicate, acknowledged again
    assert client.batch(2, "two") == 2
    assert [m for m in messages(collector) if "roxxel" not in m] == [
        "[rank 1] then it crashed, without a watcher",
        "one",
        "two",
    ]
    assert "forgot 2 sender(s) silent for 3600 s or more, or, among more than " in read(
        collector.sinks.sinks[0].path
    )
    state = collector.ledger.senders[client.sender_id]
    assert (state.records, state.bytes > 0) == (1, True)  # accounted since it came back


def test_gap_writes_nothing_and_re_acks_the_last_applied(
    collector: Collector, client: RawClient
) -> None:
    client.hello()
    assert client.batch(1, "one") == 1
    assert client.batch(3, "three") == 1
    assert client.batch(2, "two") == 2
    assert client.batch(3, "three") == 3
    assert messages(collector) == ["one", "two", "three"]
    assert collector.stats["gap"] == 1


def test_hello_carries_what_the_client_already_had_acked(
    collector: Collector, client: RawClient
) -> None:
    assert client.hello(acked=41) == 41
    assert client.batch(42, "forty-two") == 42
    assert messages(collector) == ["forty-two"]


def test_invalid_records_are_skipped_counted_and_reported_once(
    collector: Collector, client: RawClient
) -> None:
    client.hello(rank=3)
    bad = [["l", 1.0, "INFO", "level is text"], ["x", 1.0, 1, 2], ["l", 1.0, 30, "fine"]]
    client.sock.send(codec.encode(codec.Batch(client.sender_id, 1, bad)))
    assert client.ack() == 1
    client.sock.send(codec.encode(codec.Batch(client.sender_id, 2, bad[:1])))
    assert client.ack() == 2
    assert collector.stats["bad_records"] == 3
    lines = messages(collector)
    assert "[rank 3] fine" in lines
    assert sum("invalid record" in ln for ln in lines) == 1


# -- checkpoint, rewind and quarantine (a collector owning a log dir) ----------------


def durable_collector(log_dir: Path) -> tuple[Collector, threading.Thread]:
    c = Collector.for_log_dir("tcp://127.0.0.1:0", str(log_dir), "run")
    thread = threading.Thread(target=c.run, kwargs={"poll": 0.02})
    thread.start()
    return c, thread


def stop(c: Collector, thread: threading.Thread) -> None:
    c.stop()
    thread.join(30)
    c.close()
    assert not thread.is_alive()


def test_commits_and_acks_come_at_most_once_per_commit_interval(tmp_path: Path) -> None:
    c = Collector.for_log_dir("tcp://127.0.0.1:0", str(tmp_path), "run", commit_interval=3600)
    thread = threading.Thread(target=c.run, kwargs={"poll": 0.02})
    thread.start()
    client = RawClient(c.endpoint)
    try:
        client.hello()  # nothing to commit: answered at once
        assert client.batch(1, "first") == 1  # the first commit after a quiet spell: at once
        client.sock.send(codec.encode(codec.Batch(client.sender_id, 2, [["l", 1.0, 20, "x"]])))
        wait_for(lambda: c.stats["batches"] == 2)  # applied...
        # ...but not committed (the log tail shows what is) nor acknowledged: a query is
        # answered first, and the next ack is the bye's, 2 (not an ack of 1 before it).
        client.sock.send(codec.encode(codec.Query(client.sender_id, 1, {"what": "tail"})))
        answer = codec.decode(client.sock.recv())
        assert isinstance(answer, codec.Answer) and answer.body["text"].endswith("] first\n")
        client.sock.send(codec.encode(codec.Bye(client.sender_id, 2)))
        assert client.ack() == 2  # a bye is committed and answered at once
        client.hello(acked=2)
        client.sock.send(codec.encode(codec.Batch(client.sender_id, 3, [["l", 1.0, 20, "y"]])))
        wait_for(lambda: c.stats["batches"] == 3)
        c.stop()  # the last commit, then the acks
        assert client.ack() == 3
    finally:
        client.close()
        stop(c, thread)
    lines = read(tmp_path / "run_system.log").splitlines()
    assert [ln.split("] ", 2)[2] for ln in lines] == ["first", "x", "y"]


def test_restart_rewinds_what_was_written_after_the_checkpoint(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    c, thread = durable_collector(log_dir)
    client = RawClient(c.endpoint)
    try:
        client.hello()
        assert client.batch(1, "committed") == 1
    finally:
        client.close()
        stop(c, thread)
    checkpoint = load_checkpoint(str(log_dir / ".run_checkpoint.json"))
    assert checkpoint.senders[client.sender_id.hex()]["committed"] == 1
    log = log_dir / "run_system.log"
    with open(log, "a") as f:
        f.write("[2026-01-01 00:00:00] [INFO] written after the checkpoint, never acked\n[2026")
    c, thread = durable_collector(log_dir)
    try:
        assert read(log).splitlines()[-1].endswith("[INFO] committed")
        again = RawClient(c.endpoint, client.sender_id)
        assert again.batch(1, "committed") == 1  # known from the checkpoint: a duplicate
        assert again.batch(2, "next") == 2
        again.close()
    finally:
        stop(c, thread)
    assert [ln.split("] ", 2)[2] for ln in read(log).splitlines()] == ["committed", "next"]


def test_csv_rewind_across_a_widening_keeps_the_committed_rows(tmp_path: Path) -> None:
    sink = MetricsCsvSink(str(tmp_path / "m.csv"))
    origin = Origin(0, "h", 1)
    sink.write_metrics(origin, metrics_runs([("m", 1, {"a": 1.0}), ("m", 2, {"a": 2.0})]))
    sink.sync()
    mark = sink.mark()
    # Widens the header, then an uncommitted row.
    sink.write_metrics(origin, metrics_runs([("m", 3, {"a": 3.0, "b": 1.0})]))
    sink.flush()
    assert read(tmp_path / "m.csv").splitlines()[0] == "step,a,b"
    sink.rewind(mark)
    sink.write_metrics(origin, metrics_runs([("m", 3, {"a": 3.0, "b": 1.0})]))
    sink.close()
    assert read(tmp_path / "m.csv") == "step,a,b\n1,1.00000,\n2,2.00000,\n3,3.00000,1.00000\n"


def test_a_batch_that_can_never_be_applied_is_acked_once_and_quarantined(tmp_path: Path) -> None:
    import msgpack

    log_dir = tmp_path / "logs"
    c, thread = durable_collector(log_dir)
    client = RawClient(c.endpoint)
    try:
        client.hello(rank=2)
        poison = msgpack.packb([1, "batch", client.sender_id, 1, {"not": "a list"}])
        client.sock.send(poison)
        assert client.ack() == 1
        client.sock.send(poison)
        assert client.ack() == 1  # now a duplicate: acked, not quarantined again
        assert client.batch(2, "after the poison") == 2
        assert c.stats["poison_batches"] == 1
    finally:
        client.close()
        stop(c, thread)
    quarantined = read(log_dir / ".run_quarantine.jsonl").splitlines()
    assert len(quarantined) == 1
    item = json.loads(quarantined[0])
    assert item["seq"] == 1 and item["sender"] == client.sender_id.hex()
    assert bytes.fromhex(item["content"]) == poison
    log = read(log_dir / "run_system.log")
    assert "[rank 2] after the poison" in log and "can never be applied" in log
    assert sorted(p.name for p in log_dir.iterdir() if not p.name.startswith(".")) == [
        "run_metrics.csv",
        "run_metrics.jsonl",
        "run_system.log",
    ]


def test_drop_reports_become_one_warning_line(collector: Collector, client: RawClient) -> None:
    client.hello(rank=1)
    client.sock.send(codec.encode(codec.Batch(client.sender_id, 1, [["d", 1.0, 7, 2]])))
    assert client.ack() == 1
    (line,) = messages(collector)
    assert line.startswith("[rank 1] roxxel dropped 7 metrics row(s) and 2 log line(s)")
    assert collector.stats["client_dropped"] == 9


def test_a_trickle_of_small_batches_is_taken_once_per_commit_not_once_per_batch(
    tmp_path: Path,
) -> None:
    # A training loop's row per step: a wake-up each costs more than the row.
    c = Collector(
        f"ipc://{tmp_path}/c.sock",
        default_sinks(str(tmp_path / "logs"), "run", None),
        commit_interval=0.5,
    )
    took: list[int] = []  # per cycle that found messages waiting, how many it took
    serve_once = c.serve_once

    def counted(timeout: float) -> int:
        handled = serve_once(timeout)
        if handled:
            took.append(handled)
        return handled

    c.serve_once = counted  # type: ignore[method-assign]
    # The loop's own bound on a wait (1 s) above the commit interval, as in the
    # daemon (0.1 s above 0.05 s).
    thread = threading.Thread(target=c.run, kwargs={"poll": 1.0})
    thread.start()
    client = RawClient(c.endpoint)
    try:
        assert client.hello() == 0
        # 40 batches of one line, 10 ms apart: over 0.4 s, within one commit interval.
        for seq in range(1, 41):
            records = [["l", 1.0, 20, f"line {seq}"]]
            client.sock.send(codec.encode(codec.Batch(client.sender_id, seq, records)))
            threading.Event().wait(0.01)
        acked = 0
        while acked < 40:
            acked = client.ack()  # cumulative: the last ack covers every batch
        assert messages(c)[-40:] == [f"line {seq}" for seq in range(1, 41)]
    finally:
        client.close()
        c.stop()
        thread.join(30)
    assert not thread.is_alive()
    # The hello's cycle, the first batch's (after a quiet spell), then the
    # rest in a cycle or two per commit, not forty.
    assert len(took) <= 8, took
    assert sum(took) == 41
