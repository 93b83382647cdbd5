"""The collector's protocol on real sockets, written once and run over ipc:// and tcp://."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from aggregator import Collector, default_sinks
from roxxel import codec

from .conftest import read


@pytest.fixture(params=["ipc", "tcp"])
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Collector]:
    bind = f"ipc://{tmp_path}/c.sock" if request.param == "ipc" else "tcp://127.0.0.1:0"
    c = Collector(bind, default_sinks(str(tmp_path / "logs"), "run", None))
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

    def __init__(self, endpoint: str):
        self.sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
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
