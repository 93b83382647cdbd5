"""The exactly-once rules, without sockets: frames in, decisions out (h11's style).

Each case is a sequence of frames fed to a fresh :class:`Ledger`; the table
says which decision each frame gets and what the ledger holds afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aggregator.ledger import (
    IDLE_SENDER_SECONDS,
    NEVER_BATCHED_SECONDS,
    Apply,
    Asked,
    Closed,
    Foreign,
    Introduced,
    Ledger,
    Malformed,
    Poisoned,
    Resent,
    TooMany,
)
from roxxel import codec

from .conftest import Clock

A = bytes(range(16))
B = bytes(range(1, 17))
LINE = ["l", 1.0, 20, "text"]


def hello(sid: bytes = A, acked: int = 0, rank: int = 0, count: int = 1) -> bytes:
    return codec.encode(codec.Hello(sid, "host", rank, 7, count, "run", acked))


def batch(seq: int, sid: bytes = A) -> bytes:
    return codec.encode(codec.Batch(sid, seq, [LINE]))


def bye(seq: int, sid: bytes = A) -> bytes:
    return codec.encode(codec.Bye(sid, seq))


def poison(seq: int, sid: bytes = A) -> bytes:
    # A valid envelope, a body that is not an array of records.
    return codec.batch_frame(sid, seq, b"\xc1")


@dataclass
class Step:
    frame: bytes
    decision: str  # the event's class name, with ":duplicate"/":gap"/":new" where it says more
    committed: int | None  # A's applied seq afterwards (None: A unknown)


def name(event: object) -> str:
    kind = type(event).__name__
    if isinstance(event, Resent):
        return f"{kind}:{'duplicate' if event.duplicate else 'gap'}"
    if isinstance(event, Introduced):
        return kind + (":new" if event.new else "") + (":overclaimed" if event.overclaimed else "")
    return kind


CASES = {
    "hello of an unknown sender starts at what it saw acked": [
        Step(hello(acked=0), "Introduced:new", 0),
        Step(batch(1), "Apply", 1),
        Step(batch(2), "Apply", 2),
    ],
    "a client that saw acks starts past them": [
        Step(hello(acked=5), "Introduced:new", 5),
        Step(batch(5), "Resent:duplicate", 5),
        Step(batch(6), "Apply", 6),
    ],
    "hello of a known sender keeps its seq": [
        Step(hello(), "Introduced:new", 0),
        Step(batch(1), "Apply", 1),
        Step(hello(acked=0), "Introduced", 1),
        Step(batch(1), "Resent:duplicate", 1),
        Step(batch(2), "Apply", 2),
    ],
    "a hello never moves a known sender forward (its batches would be taken for duplicates)": [
        Step(hello(), "Introduced:new", 0),
        Step(batch(1), "Apply", 1),
        Step(hello(acked=2**62), "Introduced:overclaimed", 1),
        Step(batch(2), "Apply", 2),
        Step(hello(acked=2), "Introduced", 2),
        Step(batch(5), "Resent:gap", 2),
    ],
    "a duplicate is only re-acknowledged": [
        Step(hello(), "Introduced:new", 0),
        Step(batch(1), "Apply", 1),
        Step(batch(1), "Resent:duplicate", 1),
    ],
    "a gap writes nothing until the missing batch comes": [
        Step(hello(), "Introduced:new", 0),
        Step(batch(2), "Resent:gap", 0),
        Step(batch(1), "Apply", 1),
        Step(batch(2), "Apply", 2),
    ],
    "a batch before any hello is malformed": [
        Step(batch(1), "Malformed", None),
    ],
    "a poison batch is applied once, its resend is a duplicate": [
        Step(hello(), "Introduced:new", 0),
        Step(poison(1), "Poisoned", 1),
        Step(poison(1), "Resent:duplicate", 1),
        Step(batch(2), "Apply", 2),
    ],
    "a poison batch that is not next is only re-acknowledged": [
        Step(hello(), "Introduced:new", 0),
        Step(poison(3), "Resent:gap", 0),
    ],
    "bye forgets the sender; a repeated bye is harmless": [
        Step(hello(), "Introduced:new", 0),
        Step(batch(1), "Apply", 1),
        Step(bye(1), "Closed", None),
        Step(bye(1), "Closed", None),
        Step(batch(2), "Malformed", None),
    ],
    "garbage, acks and answers sent to a collector are malformed": [
        Step(b"\x00garbage", "Malformed", None),
        Step(codec.encode(codec.Ack(A, 1)), "Malformed", None),
        Step(codec.encode(codec.Answer(A, 1, {})), "Malformed", None),
    ],
    "a tool's query is answered": [
        Step(codec.encode(codec.Query(B, 1, {"what": "status"})), "Asked", None),
    ],
}


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_decisions(steps: list[Step]) -> None:
    ledger = Ledger()
    for i, step in enumerate(steps):
        event = ledger.receive(step.frame)
        assert name(event) == step.decision, f"step {i}"
        state = ledger.senders.get(A)
        assert (None if state is None else state.committed) == step.committed, f"step {i}"


def test_bye_is_closed_as_known_only_once() -> None:
    ledger = Ledger()
    ledger.receive(hello())
    first, again = ledger.receive(bye(0)), ledger.receive(bye(0))
    assert isinstance(first, Closed) and first.known
    assert isinstance(again, Closed) and not again.known


def test_only_durable_seqs_are_acknowledged_and_a_roll_back_returns_to_them() -> None:
    ledger = Ledger()
    ledger.receive(hello())
    assert isinstance(ledger.receive(batch(1)), Apply)
    assert ledger.acknowledged(A) == 0  # applied, not on disk yet
    ledger.commit()
    assert ledger.acknowledged(A) == 1
    ledger.receive(batch(2))
    ledger.roll_back()  # the files were rewound
    assert ledger.senders[A].committed == 1
    assert isinstance(ledger.receive(batch(2)), Apply)  # the resend is written again
    assert ledger.acknowledged(B) is None


def test_restart_from_checkpoint_resumes_every_sender_durable() -> None:
    before = Ledger()
    before.receive(hello(rank=3))
    before.receive(batch(1))
    before.receive(batch(2))
    saved = before.saved()  # what the checkpoint stores: applied seqs
    after = Ledger()
    after.restore(saved)
    state = after.senders[A]
    assert (state.committed, state.durable, state.origin.rank) == (2, 2, 3)
    assert name(after.receive(batch(2))) == "Resent:duplicate"
    assert name(after.receive(batch(3))) == "Apply"


def test_senders_past_the_bound_are_refused_until_one_leaves() -> None:
    ledger = Ledger(max_senders=1)
    ledger.receive(hello(A))
    refused = ledger.receive(hello(B))
    assert isinstance(refused, TooMany) and B not in ledger.senders
    assert isinstance(ledger.receive(hello(A)), Introduced)  # a known one is not new
    ledger.receive(bye(0, A))
    assert name(ledger.receive(hello(B))) == "Introduced:new"


def test_a_sender_is_bound_to_the_key_that_said_hello() -> None:
    ledger = Ledger()
    ledger.receive(hello(), key="alice")
    for frame in (batch(1), hello(), bye(0)):
        event = ledger.receive(frame, key="mallory")
        assert isinstance(event, Foreign) and event.key == "mallory"
    assert A in ledger.senders and ledger.senders[A].committed == 0
    assert isinstance(ledger.receive(batch(1), key="alice"), Apply)


def test_silent_senders_are_forgotten_past_the_bound_and_remembered_when_back() -> None:
    clock = Clock()
    ledger = Ledger(idle_seconds=600.0, idle_kept=1, clock=clock)
    ledger.receive(hello(A))
    ledger.receive(batch(1, A))
    ledger.receive(hello(B, rank=1))
    ledger.receive(batch(1, B))
    assert ledger.forget_idle() == []  # looked for at most once a minute
    clock.now += 60.0
    assert ledger.forget_idle() == []  # not silent long enough
    clock.now += 600.0
    ledger.receive(batch(2, B))  # B is heard: only A is silent
    clock.now += 60.0
    assert ledger.forget_idle() == [A]
    assert A not in ledger.senders and A not in ledger.open
    # A comes back having missed the ack of batch 1: it is not written twice.
    assert name(ledger.receive(hello(A, acked=0))) == "Introduced:new"
    assert name(ledger.receive(batch(1, A))) == "Resent:duplicate"
    assert name(ledger.receive(batch(2, A))) == "Apply"
    clock.now += 1200.0
    ledger.receive(batch(3, B))  # only A is silent again
    clock.now += 60.0
    assert ledger.forget_idle() == [A]
    # What the ledger remembers of a forgotten sender wins over a hello's claim.
    assert name(ledger.receive(hello(A, acked=99))) == "Introduced:new:overclaimed"
    assert name(ledger.receive(batch(3, A))) == "Apply"


def test_forgotten_seqs_are_bounded() -> None:
    clock = Clock()
    ledger = Ledger(idle_seconds=1.0, idle_kept=0, forgotten_kept=2, clock=clock)
    ids = [bytes([i]) * 16 for i in range(3)]
    for sid in ids:
        ledger.receive(hello(sid))
        ledger.receive(batch(1, sid))
    clock.now += 60.0
    assert len(ledger.forget_idle()) == 3
    # The oldest forgotten seq is gone: that sender starts over at what it says.
    assert ledger.receive(hello(ids[0])).state.committed == 0
    assert ledger.receive(hello(ids[2])).state.committed == 1


def test_done_waits_for_every_rank_and_every_bye_and_not_for_the_dead() -> None:
    ledger = Ledger()
    ledger.receive(hello(A, rank=0, count=2))
    assert not ledger.done()  # rank 1 has not said hello
    ledger.receive(hello(B, rank=1, count=2))
    assert not ledger.done()
    ledger.receive(bye(0, A))
    assert not ledger.done()
    ledger.ended(ledger.senders[B].origin)  # its process died: it will never say bye
    assert ledger.done()


def test_a_hello_claiming_a_huge_process_count_is_not_done() -> None:
    ledger = Ledger()
    ledger.receive(hello(A, count=2**32 - 1))
    ledger.receive(bye(0, A))
    assert not ledger.done()  # counted, never iterated


def test_asked_carries_the_query() -> None:
    event = Ledger().receive(codec.encode(codec.Query(B, 9, {"what": "tail"})))
    assert isinstance(event, Asked) and event.query.seq == 9


def test_a_poisoned_event_names_sender_and_seq() -> None:
    ledger = Ledger()
    ledger.receive(hello())
    event = ledger.receive(poison(1))
    assert isinstance(event, Poisoned)
    assert (event.error.sender_id, event.error.seq) == (A, 1)


def test_malformed_says_why() -> None:
    event = Ledger().receive(batch(1))
    assert isinstance(event, Malformed)
    assert event.problem == "batch from a sender that has not said hello"


def test_one_connection_and_one_address_hold_at_most_their_share_of_the_senders() -> None:
    ledger = Ledger(max_per_connection=2, max_per_source=3)
    ids = [bytes([i]) * 16 for i in range(6)]

    def say(i: int, address: str, connection: bytes) -> object:
        return ledger.receive(hello(ids[i]), source=address, connection=connection)

    assert name(say(0, "10.0.0.9", b"c1")) == "Introduced:new"
    assert name(say(1, "10.0.0.9", b"c1")) == "Introduced:new"
    refused = say(2, "10.0.0.9", b"c1")
    assert isinstance(refused, TooMany) and (refused.bound, refused.source) == (
        "connection",
        "10.0.0.9",
    )
    assert name(say(1, "10.0.0.9", b"c1")) == "Introduced"  # a known sender still is
    assert name(say(2, "10.0.0.9", b"c2")) == "Introduced:new"  # another connection
    refused = say(3, "10.0.0.9", b"c3")
    assert isinstance(refused, TooMany) and refused.bound == "address"
    assert name(say(3, "10.0.0.7", b"c4")) == "Introduced:new"  # another host
    ledger.receive(bye(0, ids[0]))  # a bye frees its places
    assert name(say(4, "10.0.0.9", b"c1")) == "Introduced:new"
    assert isinstance(say(5, "10.0.0.9", b"c5"), TooMany)


def test_a_sender_that_never_sent_a_batch_is_not_saved_and_forgotten_soon_when_crowded() -> None:
    clock = Clock()
    ledger = Ledger(idle_kept=0, crowded=1, clock=clock)
    ledger.receive(hello(A))
    ledger.receive(batch(1, A))
    ledger.receive(hello(B, acked=5))  # a claim alone is not a batch
    assert list(ledger.saved()) == [A.hex()]  # the checkpoint holds what can be resent
    clock.now += NEVER_BATCHED_SECONDS
    assert ledger.forget_idle() == [B]
    # Nothing to remember of it: back, it is a new sender that starts at its claim.
    assert ledger.receive(hello(B, acked=0)).state.committed == 0
    clock.now += IDLE_SENDER_SECONDS
    assert sorted(ledger.forget_idle()) == sorted([A, B])
    back = ledger.receive(hello(A))
    assert back.state.committed == 1  # remembered, and kept as a sender with batches
    assert back.state.batched and list(ledger.changes()) == [A.hex()]


def test_an_idle_rank_that_never_sent_a_batch_keeps_its_place_unless_crowded() -> None:
    clock = Clock()
    ledger = Ledger(idle_kept=0, crowded=2, clock=clock)
    ledger.receive(hello(A))  # a rank with nothing to say yet
    ledger.receive(hello(B))
    clock.now += NEVER_BATCHED_SECONDS
    assert ledger.forget_idle() == []  # 2 known: not crowded
    assert name(ledger.receive(batch(1, A))) == "Apply"


def test_a_ledger_that_follows_a_stream_skips_what_a_units_hello_says_was_lost() -> None:
    """In a stream a hello is a relay's: what it says came before was stored
    before it, so batches this ledger never got were lost (removed by the
    stream's limits), not delayed: counted from there, and said."""
    ledger = Ledger(follows_stream=True)
    assert name(ledger.receive(hello(acked=0))) == "Introduced:new"
    assert name(ledger.receive(batch(1))) == "Apply"
    event = ledger.receive(hello(acked=4))
    assert isinstance(event, Introduced) and event.missing == (2, 4) and not event.overclaimed
    assert name(ledger.receive(batch(5))) == "Apply"
    assert name(ledger.receive(batch(3))) == "Resent:duplicate"
    assert ledger.changes()[A.hex()]["committed"] == 5
    # A collector's ledger believes no such claim.
    plain = Ledger()
    plain.receive(hello(acked=0))
    event = plain.receive(hello(acked=4))
    assert isinstance(event, Introduced) and event.missing is None and event.overclaimed == 4


def test_a_relays_ledger_passes_a_next_batch_on_unread() -> None:
    ledger = Ledger(reads_bodies=False)
    ledger.receive(hello())
    event = ledger.receive(poison(1))  # a body that can never be applied: the writer's to say
    assert isinstance(event, Apply) and event.batch.seq == 1 and event.batch.records == []
    assert name(ledger.receive(batch(1))) == "Resent:duplicate"
    assert name(ledger.receive(batch(3))) == "Resent:gap"
    reader = Ledger()  # a collector's reads it, and knows at once
    reader.receive(hello())
    assert name(reader.receive(poison(1))) == "Poisoned"
