"""``exchange``: send a frame until the reply it waits for comes, over a fake transport.

The fake keeps its own clock: ``receive`` advances it by the wait asked for,
or (when a reply is due earlier) to the reply's time, as a socket poll would.
Nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from types import SimpleNamespace

import pytest

from roxxel import codec
from roxxel.exchange import _RETRY_REFUSED, RESEND_EVERY, exchange

ID = b"\x01" * codec.SENDER_ID_LEN
OTHER = b"\x02" * codec.SENDER_ID_LEN
ALWAYS = range(1, 10**9)  # refused: never connected
QUERY = codec.encode(codec.Query(ID, 3, {"what": "status"}))


def answer(seq: int) -> bytes:
    return codec.encode(codec.Answer(ID, seq, {"seq": seq}))


def answers_to(seq: int) -> Callable[[codec.Frame], bool]:
    return lambda reply: isinstance(reply, codec.Answer) and reply.seq == seq


class FakeTransport:
    """Refuses the offers numbered in ``refuse`` (from 1; an int: the first ones);
    delivers ``replies`` (``(at, frame)``), and ``respond(sends)``'s frames
    ``delay`` seconds after each taken send."""

    def __init__(
        self,
        replies: list[tuple[float, bytes]] | None = None,
        refuse: int | Container[int] = 0,
        respond: Callable[[int], list[bytes]] | None = None,
        delay: float = 0.01,
    ) -> None:
        self.now = 0.0
        self.replies = sorted(replies or [], key=lambda r: r[0])
        self.refuse = range(1, refuse + 1) if isinstance(refuse, int) else refuse
        self.respond = respond
        self.delay = delay
        self.offered: list[float] = []  # when send was called
        self.sent: list[float] = []  # when a send was taken
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def send(self, frame: bytes) -> bool:
        self.offered.append(self.now)
        if len(self.offered) in self.refuse:
            return False
        self.sent.append(self.now)
        if self.respond is not None:
            self.replies += [(self.now + self.delay, r) for r in self.respond(len(self.sent))]
            self.replies.sort(key=lambda r: r[0])
        return True

    def receive(self, timeout: float) -> list[bytes]:
        """Like a poll: back at the first arrival, with all that arrived by then."""
        assert timeout >= 0
        self.waits.append(timeout)
        if not self.replies or self.replies[0][0] > self.now + timeout:
            self.now += timeout
            return []
        self.now = max(self.now, self.replies[0][0])
        ready = [frame for at, frame in self.replies if at <= self.now]
        self.replies = [(at, frame) for at, frame in self.replies if at > self.now]
        return ready


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeTransport]:
    """A fake transport whose clock is the one ``exchange`` reads (its ``time`` only)."""

    def make(*args: object, **kwargs: object) -> FakeTransport:
        fake = FakeTransport(*args, **kwargs)
        monkeypatch.setattr("roxxel.exchange.time", SimpleNamespace(monotonic=fake.monotonic))
        return fake

    return make


def test_the_accepted_reply_is_returned(transport: Callable[..., FakeTransport]) -> None:
    fake = transport(respond=lambda sends: [answer(3)])
    reply = exchange(fake, QUERY, answers_to(3), timeout=5.0)
    assert reply == codec.Answer(ID, 3, {"seq": 3})
    assert fake.sent == [0.0]


def test_undecodable_and_unrelated_replies_are_skipped(
    transport: Callable[..., FakeTransport],
) -> None:
    stale = [
        b"not msgpack at all",
        b"",
        answer(2),  # a late answer to an earlier query
        codec.encode(codec.Ack(ID, 7)),
        codec.encode(codec.Answer(OTHER, 4, {})),
    ]
    fake = transport(respond=lambda sends: [*stale, answer(3), answer(4)])
    reply = exchange(fake, QUERY, answers_to(3), timeout=5.0)
    assert reply == codec.Answer(ID, 3, {"seq": 3})


def test_a_refused_send_is_offered_again_until_taken(
    transport: Callable[..., FakeTransport],
) -> None:
    fake = transport(refuse=3, respond=lambda sends: [answer(3)])
    assert exchange(fake, QUERY, answers_to(3), timeout=5.0) is not None
    assert len(fake.offered) == 4 and len(fake.sent) == 1
    # Offered again soon (a connection comes up in ~100 ms), not after RESEND_EVERY.
    assert fake.sent[0] == pytest.approx(3 * _RETRY_REFUSED)


def test_without_a_reply_the_frame_is_resent_every_resend_every(
    transport: Callable[..., FakeTransport],
) -> None:
    # The first two copies are lost; the third is answered.
    fake = transport(respond=lambda sends: [answer(3)] if sends == 3 else [])
    reply = exchange(fake, QUERY, answers_to(3), timeout=10.0, resend_every=0.5)
    assert reply is not None
    assert fake.sent == pytest.approx([0.0, 0.5, 1.0])
    assert fake.now == pytest.approx(1.0 + fake.delay)


def test_the_default_resend_interval(transport: Callable[..., FakeTransport]) -> None:
    fake = transport()
    assert exchange(fake, QUERY, answers_to(3), timeout=2.5) is None
    assert fake.sent == pytest.approx([0.0, RESEND_EVERY, 2 * RESEND_EVERY])


def test_none_at_the_deadline(transport: Callable[..., FakeTransport]) -> None:
    fake = transport(replies=[(0.2, answer(2)), (3.5, answer(3))])
    assert exchange(fake, QUERY, answers_to(3), timeout=3.0) is None
    assert fake.now == pytest.approx(3.0)
    assert max(fake.waits) <= RESEND_EVERY


def test_a_deadline_that_never_connects(transport: Callable[..., FakeTransport]) -> None:
    fake = transport(refuse=ALWAYS)
    assert exchange(fake, QUERY, answers_to(3), timeout=0.5) is None
    assert fake.sent == [] and fake.now == pytest.approx(0.5)
    assert len(fake.offered) == pytest.approx(0.5 / _RETRY_REFUSED, abs=1)


def test_no_time_no_send(transport: Callable[..., FakeTransport]) -> None:
    fake = transport(respond=lambda sends: [answer(3)])
    assert exchange(fake, QUERY, answers_to(3), timeout=0.0) is None
    assert exchange(fake, QUERY, answers_to(3), timeout=-1.0) is None
    assert fake.offered == []


def test_a_reply_that_came_before_the_send_is_taken(
    transport: Callable[..., FakeTransport],
) -> None:
    """What already waits on the transport is read too."""
    fake = transport(replies=[(0.0, codec.encode(codec.Ack(ID, 5)))])

    def acks_five(reply: codec.Frame) -> bool:
        return isinstance(reply, codec.Ack) and reply.seq >= 5

    assert exchange(fake, b"bye", acks_five, timeout=1.0) == codec.Ack(ID, 5)


def test_connect_within_zero_gives_up_after_one_refused_offer(
    transport: Callable[..., FakeTransport],
) -> None:
    """The bye's case: no connection now, nobody to tell, no wait."""
    fake = transport(refuse=1, respond=lambda sends: [answer(3)])
    assert exchange(fake, QUERY, answers_to(3), timeout=0.5, connect_within=0.0) is None
    assert fake.offered == [0.0] and fake.now == 0.0


def test_connect_within_bounds_only_the_wait_for_a_first_taker(
    transport: Callable[..., FakeTransport],
) -> None:
    never = transport(refuse=ALWAYS)
    assert exchange(never, QUERY, answers_to(3), timeout=5.0, connect_within=0.22) is None
    assert 0.22 <= never.now <= 0.22 + _RETRY_REFUSED
    # Taken at once, then refused (the connection lost): offered again until
    # taken, and answered.
    lost = transport(refuse=range(2, 5), respond=lambda sends: [answer(3)] if sends == 2 else [])
    reply = exchange(lost, QUERY, answers_to(3), timeout=5.0, resend_every=0.5, connect_within=0)
    assert reply is not None
    assert lost.sent == pytest.approx([0.0, 0.5 + 3 * _RETRY_REFUSED])
