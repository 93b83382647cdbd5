"""What a collector says about a peer or a sender: the wording of its reports.

Pure functions over the ledger's events and the router's refusals; the
collector decides when to count and report (once per peer and kind, see
:mod:`aggregator.reports`). Each returns ``(who, what, text)``: whom the
report is once for, its kind, the line.
"""

from __future__ import annotations

from roxxel import codec

from .curve import Refusal
from .ledger import NEVER_BATCHED_SECONDS, Foreign, Introduced, Ledger, TooMany

__all__ = [
    "curve_refusal",
    "foreign",
    "forgotten",
    "missing",
    "overclaimed",
    "refused_run",
    "too_many",
]

Complaint = tuple[bytes, str, str]


def overclaimed(peer: bytes, event: Introduced) -> Complaint:
    hello, state = event.hello, event.state
    return (
        peer,
        "overclaim",
        f"a hello from {hello.host[:64]} (pid {hello.pid}) for the sender of "
        f"{state.origin.tag or 'rank 0 '}claimed batches up to {hello.acked} were written, "
        f"but only {state.committed} were: not believed (no client does that; a peer that "
        "knows its sender id would, to have its batches taken for duplicates)",
    )


def missing(peer: bytes, event: Introduced) -> Complaint:
    hello, (first, last) = event.hello, event.missing or (0, 0)
    return (
        peer,
        "missing",
        f"batches {first} to {last} of the sender of {event.state.origin.tag or 'rank 0 '}"
        f"({hello.host[:64]}, pid {hello.pid}) are not in the stream (removed by its limits "
        "before this writer read them?): their records are lost; writing from the next one",
    )


def too_many(peer: bytes, event: TooMany, ledger: Ledger) -> Complaint:
    if event.bound == "run":
        return b"", "senders", f"more than {ledger.max_senders} senders: refusing new ones"
    on_connection = event.bound == "connection"
    limit = ledger.max_per_connection if on_connection else ledger.max_per_source
    return (
        peer if on_connection else event.source.encode()[:255],
        "senders",
        f"more than {limit} senders on one {event.bound} from "
        f"{event.source or 'this host'}: refusing new ones there",
    )


def foreign(peer: bytes, event: Foreign) -> Complaint:
    return (
        peer,
        "foreign",
        f"refused frames from key {event.key or '(none)'} naming a sender of "
        f"{event.state.origin.tag or 'rank 0 '}that said hello with another key",
    )


def refused_run(hello: codec.Hello, why: str) -> Complaint:
    return (
        hello.prefix.encode(errors="replace")[:255],
        "refused run",
        f"refused a client of run {hello.prefix!r} (rank {hello.rank} on {hello.host[:64]}): {why}",
    )


def curve_refusal(refusal: Refusal) -> Complaint:
    if refusal.kind == "unknown_key":
        text = f"refused CURVE key {refusal.key or '(none)'} from {refusal.address}: not allowed"
    else:
        text = (
            f"refused a connection from {refusal.address} that did not complete a CURVE "
            "handshake (a client without keys, or with another collector's public key?)"
        )
    # Once per host (a retrying client's port changes; keys cost nothing to make).
    return refusal.address.rsplit(":", 1)[0].encode(), f"refused {refusal.kind}", text


def forgotten(name: str, count: int, ledger: Ledger) -> str:
    return (
        f"{name}: forgot {count} sender(s) silent for {ledger.idle_seconds:.0f} s or more, "
        f"or, among more than {ledger.crowded:,} senders, {NEVER_BATCHED_SECONDS:.0f} s "
        f"without a batch ({len(ledger.senders)} known)"
    )
