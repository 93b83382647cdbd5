"""roxxel.client.Sender against a fake transport: the window, acks, the byte bound,
resends, numbering and close(), each observed in the frames the sender hands over.

The fake is driven by the sender thread; the tests decide when it refuses
frames and which acks the sender receives, and wait for what they expect with
a deadline (the sender cuts every 5 ms here).
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from roxxel import client, codec
from roxxel.client import Sender
from roxxel.wakepipe import WakePipe

from .conftest import wait_for

SENDER_ID = bytes(range(codec.SENDER_ID_LEN))
HELLO = codec.Hello(SENDER_ID, "host", 0, 1234, 1, "run")
KEYS = ("loss",)
PAD = "." * 1000  # records of ~1 KiB, so that the byte bound counts batches


class Message(NamedTuple):
    frames: list[Any]  # decoded: Hello, Batch, Bye
    accepted: bool
    acked: int  # the highest ack the sender had received when it sent this


class FakeTransport:
    """A Transport that records what it is handed, refuses it on demand and
    hands the sender the acks a test injects."""

    endpoint = "fake://collector"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.connects = 1  # connected once; more is a reconnect
        self.accepting = True
        self.auto_ack = False  # answer each accepted batch or bye at once
        self.closed = False
        self._messages: list[Message] = []
        self._replies: list[bytes] = []
        self._receives = 0  # calls of receive(): the sender thread's passes
        self._handed = 0  # the highest ack receive() returned
        self._handed_at = 0

    def send(self, frame: bytes) -> bool:
        return self.send_many([frame])

    def send_many(self, frames: list[bytes]) -> bool:
        decoded = [codec.decode(f) for f in frames]
        with self._cond:
            self._messages.append(Message(decoded, self.accepting, self._handed))
            if self.accepting and self.auto_ack:
                seqs = [f.seq for f in decoded if isinstance(f, (codec.Batch, codec.Bye))]
                if seqs:
                    self._replies.append(codec.encode(codec.Ack(SENDER_ID, max(seqs))))
                    self._cond.notify_all()
            return self.accepting

    def receive(self, timeout: float, wake: WakePipe | None = None) -> list[bytes]:
        with self._cond:
            self._receives += 1
            deadline = time.monotonic() + timeout
            # A wake-up of the sender's pipe also ends the wait: looked at
            # every 5 ms, since it cannot notify the condition.
            while not self._cond.wait_for(lambda: self._replies, min(timeout, 0.005)):
                if wake is not None and select.select([wake.fd], [], [], 0)[0]:
                    wake.clear()
                    break
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            replies, self._replies = self._replies, []
            if replies:
                self._handed = max(self._handed, *(codec.decode(d).seq for d in replies))
                self._handed_at = self._receives
            return replies

    def close(self) -> None:
        self.closed = True

    # -- the test's side ---------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Hand the sender an ack of ``seq``; return once it has handled it."""
        with self._cond:
            self._replies.append(codec.encode(codec.Ack(SENDER_ID, seq)))
            self._cond.notify_all()
        # Its next receive() begins after it handled what the last one returned.
        wait_for(self._ack_handled, timeout=10, what=f"ack {seq} handled")

    def settle(self) -> None:
        """Return once the sender thread has passed by twice more: whatever it
        could send by now, it has tried to."""
        with self._cond:
            start = self._receives
        wait_for(lambda: self._receives >= start + 2, timeout=10, what="two passes")

    def _ack_handled(self) -> bool:
        with self._cond:
            return not self._replies and self._receives > self._handed_at

    def messages(self, accepted_only: bool = True) -> list[Message]:
        with self._cond:
            return [m for m in self._messages if m.accepted or not accepted_only]

    def batches(self) -> list[codec.Batch]:
        """Every batch frame taken, in the order taken (resends included)."""
        return [f for m in self.messages() for f in m.frames if isinstance(f, codec.Batch)]

    def seqs(self) -> list[int]:
        return [b.seq for b in self.batches()]

    def hellos(self) -> list[Message]:
        return [m for m in self.messages() if isinstance(m.frames[0], codec.Hello)]


def content(records: list) -> list[tuple]:
    """What a batch body holds, in short: ("l", text), ("m", *steps), ("d", metrics, lines)."""
    out = []
    for record in records:
        if record[0] == "l":
            out.append(("l", record[3].removesuffix(PAD)))
        elif record[0] == "m":
            out.append(("m", *record[3]))
        else:
            out.append(("d", record[2], record[3]))
    return out


def line(sender: Sender, text: str) -> None:
    """Log a line and wait until the sender has cut it: one batch of its own."""
    sender.lines.append(("l", time.time(), 20, text + PAD))
    wait_for(lambda: not sender.lines, timeout=10, what="the line cut")


def row(sender: Sender, step: int, pad: bool = True) -> None:
    """Log a metrics row (~1 KiB with ``pad``) and wait until it is cut into its own batch."""
    keys = (PAD,) if pad else KEYS
    sender.metrics.append(("m", keys, time.time(), step, (float(step),)))
    wait_for(lambda: not sender.metrics, timeout=10, what="the row cut")


@pytest.fixture
def start() -> Iterator[Callable[..., Sender]]:
    senders: list[Sender] = []

    def start(transport: FakeTransport, **options: Any) -> Sender:
        options = {"flush_interval": 0.005, "resend_after": 60.0, **options}
        sender = Sender(transport, HELLO, **options)
        senders.append(sender)
        return sender

    yield start
    for sender in senders:
        sender.close(0, bye=False)
        assert sender.failure is None


def test_never_more_than_window_batches_are_in_flight_until_acks_arrive(start) -> None:
    fake = FakeTransport()
    sender = start(fake, window=3)
    for step in range(8):
        row(sender, step, pad=False)
    fake.settle()
    assert fake.seqs() == [1, 2, 3]  # the other five wait, numberless
    fake.ack(1)
    fake.settle()
    assert fake.seqs() == [1, 2, 3, 4]
    fake.ack(4)  # cumulative: three more may go
    fake.settle()
    assert fake.seqs() == [1, 2, 3, 4, 5, 6, 7]
    fake.ack(7)
    fake.settle()
    fake.ack(8)
    assert sender.flush(10)
    assert [content(b.records) for b in fake.batches()] == [[("m", step)] for step in range(8)]
    for message in fake.messages():
        seqs = [f.seq for f in message.frames if isinstance(f, codec.Batch)]
        assert all(seq - message.acked <= 3 for seq in seqs), message


def test_a_cumulative_ack_frees_every_batch_up_to_it_and_flush_waits_for_the_last(
    start,
) -> None:
    fake = FakeTransport()
    sender = start(fake)
    for i in range(4):
        line(sender, f"line {i}")
    wait_for(lambda: fake.seqs() == [1, 2, 3, 4], timeout=10, what="4 batches sent")
    assert sender.flush(0) is False
    fake.ack(2)
    assert sender.flush(0) is False  # 3 and 4 are still in flight
    fake.ack(4)  # no ack of 3 ever comes: 4 covers it
    assert sender.flush(10) is True
    assert sender.flush(0) is True


def fill_past_the_bound(start) -> tuple[Sender, FakeTransport]:
    """One metrics batch in flight; then, the transport refusing, lines L0-L3 and
    rows 0-4 (~1 KiB a batch) logged into a buffer of 4 batches."""
    fake = FakeTransport()
    sender = start(fake, max_buffer_bytes=4500)
    row(sender, 100)
    wait_for(lambda: fake.seqs() == [1], timeout=10, what="the first batch sent")
    fake.accepting = False
    line(sender, "L0")
    row(sender, 0)
    row(sender, 1)
    line(sender, "L1")  # 5 batches: row 0 goes
    for step in (2, 3, 4):
        row(sender, step)  # each pushes out the oldest row left
    line(sender, "L2")  # row 4 goes: no rows left
    line(sender, "L3")  # L0 goes
    wait_for(lambda: sender.dropped_total == 6, timeout=10, what="6 records dropped")
    fake.settle()
    return sender, fake


def test_the_bound_drops_oldest_rows_then_oldest_lines_never_in_flight_and_reports_it(
    start,
) -> None:
    sender, fake = fill_past_the_bound(start)
    assert fake.seqs() == [1]  # nothing taken while refusing
    fake.auto_ack = True
    fake.accepting = True
    assert sender.flush(10)
    assert [content(b.records) for b in fake.batches()] == [
        [("m", 100)],  # in flight throughout: never dropped
        [("d", 5, 1)],  # the report goes first, once frames are taken again
        [("l", "L1")],
        [("l", "L2")],
        [("l", "L3")],
    ]
    assert sender.dropped_total == 6


def test_batches_are_numbered_when_first_sent_so_drops_leave_no_gap(start) -> None:
    sender, fake = fill_past_the_bound(start)
    refused = [m for m in fake.messages(accepted_only=False) if not m.accepted]
    # Each refused try numbered what it offered from 2 on: none kept its numbers.
    assert refused
    for message in refused:
        assert min(f.seq for f in message.frames if isinstance(f, codec.Batch)) == 2
    fake.auto_ack = True
    fake.accepting = True
    assert sender.flush(10)
    assert fake.seqs() == [1, 2, 3, 4, 5]


def test_a_reconnect_brings_a_new_hello_and_every_unacked_batch_again_in_seq_order(
    start,
) -> None:
    fake = FakeTransport()
    sender = start(fake)
    for i in range(4):
        line(sender, f"line {i}")
    wait_for(lambda: fake.seqs() == [1, 2, 3, 4], timeout=10, what="4 batches sent")
    assert [m.frames[0].acked for m in fake.hellos()] == [0]
    fake.ack(2)
    fake.connects += 1
    wait_for(lambda: len(fake.hellos()) >= 2, timeout=10, what="the second hello")
    hello, *resent = fake.hellos()[1].frames
    assert hello == codec.Hello(SENDER_ID, "host", 0, 1234, 1, "run", acked=2)
    assert [b.seq for b in resent] == [3, 4]
    first = {b.seq: b for b in fake.batches()[:4]}
    assert all(b == first[b.seq] for b in resent)  # the same bodies
    fake.ack(4)
    assert sender.flush(10)


def test_a_silence_of_resend_after_brings_the_same_resend(start) -> None:
    fake = FakeTransport()
    fake.accepting = False  # two batches, then both go with the hello in one message
    sender = start(fake, resend_after=0.2)
    line(sender, "one")
    line(sender, "two")
    fake.settle()
    fake.accepting = True
    wait_for(lambda: len(fake.hellos()) >= 2, timeout=10, what="a resend")
    first, again = fake.hellos()[:2]
    assert [type(f).__name__ for f in first.frames] == ["Hello", "Batch", "Batch"]
    assert again.frames == first.frames  # hello (acked 0) and both batches, in order
    fake.ack(1)
    count = len(fake.hellos())
    wait_for(lambda: len(fake.hellos()) > count, timeout=10, what="the next resend")
    hello, *resent = fake.hellos()[count].frames
    assert (hello.acked, [b.seq for b in resent]) == (1, [2])


def test_close_returns_in_flight_batches_with_their_seq_and_unsent_ones_numbered_after(
    start,
) -> None:
    fake = FakeTransport()
    sender = start(fake)
    line(sender, "one")
    line(sender, "two")
    wait_for(lambda: fake.seqs() == [1, 2], timeout=10, what="2 batches sent")
    fake.ack(1)
    fake.accepting = False
    line(sender, "three")
    row(sender, 4)
    unsent = sender.close(0)
    assert unsent.hello.acked == 1 and unsent.dropped == 0
    assert [(b.seq, b.metrics, b.lines) for b in unsent.batches] == [
        (2, 0, 1),
        (3, 0, 1),  # never sent: numbered at close, so every copy of the file agrees
        (4, 1, 0),
    ]
    bodies = [codec.decode(codec.batch_frame(SENDER_ID, 1, b.body)) for b in unsent.batches]
    assert [content(b.records) for b in bodies] == [[("l", "two")], [("l", "three")], [("m", 4)]]
    assert not any(isinstance(f, codec.Bye) for m in fake.messages(False) for f in m.frames)
    assert fake.closed


def test_close_with_everything_acked_says_bye_with_the_last_seq(start) -> None:
    fake = FakeTransport()
    fake.auto_ack = True
    sender = start(fake)
    for i in range(3):
        line(sender, f"line {i}")
    assert sender.flush(10)
    unsent = sender.close(10)
    assert unsent.batches == [] and unsent.hello.acked == 3
    assert fake.messages()[-1].frames == [codec.Bye(SENDER_ID, 3)]
    assert fake.closed


def test_a_drop_report_not_yet_delivered_keeps_flush_waiting_and_close_from_saying_bye(
    start,
) -> None:
    fake = FakeTransport()
    fake.accepting = False
    sender = start(fake, max_buffer_bytes=500)
    line(sender, "larger than the whole buffer")
    wait_for(lambda: sender.dropped_total == 1, timeout=10, what="the line dropped")
    assert sender.flush(0) is False  # the report is not delivered
    unsent = sender.close(0)
    assert unsent.dropped == 1
    assert [(b.seq, b.metrics, b.lines) for b in unsent.batches] == [(1, 0, 0)]  # the report
    assert not any(isinstance(f, codec.Bye) for m in fake.messages(False) for f in m.frames)


def test_no_message_holds_more_than_message_bytes_and_a_long_resend_goes_in_several(
    start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A collector drops a message past its bound unread: the client never sends one.
    monkeypatch.setattr(codec, "MESSAGE_BYTES", 2500)  # two ~1 KiB batches a message
    fake = FakeTransport()
    sender = start(fake)
    for i in range(6):
        line(sender, f"line {i}")
    wait_for(lambda: fake.seqs() == [1, 2, 3, 4, 5, 6], timeout=10, what="6 batches sent")
    fake.connects += 1  # a reconnect: everything unacknowledged again
    wait_for(lambda: fake.seqs()[6:] == [1, 2, 3, 4, 5, 6], timeout=10, what="the resend")
    for message in fake.messages():
        batches = [f for f in message.frames if isinstance(f, codec.Batch)]
        assert len(batches) <= 2, [b.seq for b in batches]
    fake.ack(6)
    assert sender.flush(10)


def sleeping_sender(start, monkeypatch) -> tuple[FakeTransport, Sender, list[tuple]]:
    """A sender whose ``on_idle`` hook says that records ring, once its sleep
    has begun; an hour between its looks: only a ring brings a record out."""
    monkeypatch.setattr(client, "IDLE_WAIT", 3600.0)
    transport = FakeTransport()
    transport.auto_ack = True
    slept: list[tuple] = []  # per call of the hook: the sender, its passes so far
    sender = start(transport, on_idle=lambda s: slept.append((s, transport._receives)) or True)
    wait_for(lambda: slept, timeout=10, what="the hook called once the hello is acknowledged")
    # The hook's pass, one more at the tick, then the sleep begins.
    passes = slept[0][1]
    wait_for(lambda: transport._receives >= passes + 2, timeout=10, what="the sleep begun")
    return transport, sender, slept


def test_an_idle_sender_with_a_hook_sleeps_until_rung_then_sends_at_once(
    start, monkeypatch
) -> None:
    transport, sender, slept = sleeping_sender(start, monkeypatch)
    threading.Event().wait(0.2)  # 40 ticks of 5 ms: not one more pass
    assert transport._receives == slept[0][1] + 2
    assert slept == [(sender, slept[0][1])]
    sender.lines.append(("l", time.time(), 20, "after the sleep"))
    sender.ring()
    wait_for(lambda: transport.batches(), timeout=10, what="the rung record sent")
    assert [content(b.records) for b in transport.batches()] == [[("l", "after the sleep")]]
    assert sender.flush(10)
    wait_for(lambda: len(slept) == 2, timeout=10, what="asleep again, the hook called again")


def test_a_sender_without_a_hook_keeps_its_tick(start, monkeypatch) -> None:
    # Who does not ring (a resend of an undelivered file, a bare Sender) is not left waiting.
    monkeypatch.setattr(client, "IDLE_WAIT", 3600.0)
    transport = FakeTransport()
    transport.auto_ack = True
    sender = start(transport)
    transport.settle()
    transport.settle()
    line(sender, "on the tick")
    assert sender.flush(10)


def test_close_wakes_a_sleeping_sender(start, monkeypatch) -> None:
    _, sender, _ = sleeping_sender(start, monkeypatch)
    unsent = sender.close(10)  # joins the thread: returns only if the ring woke it
    assert unsent.batches == [] and sender.failure is None


def test_an_idle_sender_whose_hook_cannot_ring_yet_keeps_its_tick_and_asks_again(
    start, monkeypatch
) -> None:
    # A Logger not yet pointed at its new sender answers False: no sleep.
    monkeypatch.setattr(client, "IDLE_WAIT", 3600.0)
    transport = FakeTransport()
    transport.auto_ack = True
    asked: list[int] = []
    sender = start(transport, on_idle=lambda _: asked.append(1) and False)
    wait_for(lambda: len(asked) >= 3, timeout=10, what="the hook asked on every idle pass")
    line(sender, "on the tick, unrung")
    assert sender.flush(10)
