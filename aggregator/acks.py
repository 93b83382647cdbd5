"""What a collector owes its peers: an acknowledgement once their run is committed.

:class:`Acks` collects, while frames are dispatched, who is to be answered
(the latest sender heard on each connection, and the byes) and, after the
commit, builds the answers of the runs that are clean: only what is on disk
is ever acknowledged. The answer to a hello also says where the run's files
are. Sans-IO: it returns ``(peer, frame bytes)`` pairs for the router to send.

Threading: used only by the collector's thread.
"""

from __future__ import annotations

from roxxel import codec

from .run import Run

__all__ = ["Acks"]


class Acks:
    def __init__(self) -> None:
        self._pending: dict[bytes, tuple[Run, bytes]] = {}  # peer -> (run, sender id)
        self._greet: set[bytes] = set()  # peers whose next ack says where their files are
        self._byes: list[tuple[bytes, codec.Bye, Run]] = []

    def owe(self, peer: bytes, run: Run, sender_id: bytes, *, hello: bool = False) -> None:
        """``peer`` is answered with what of ``sender_id`` is durable (after a hello,
        with where the run's files are)."""
        self._pending[peer] = (run, sender_id)
        if hello:
            self._greet.add(peer)

    def owe_bye(self, peer: bytes, bye: codec.Bye, run: Run) -> None:
        self._byes.append((peer, bye, run))

    def runs_waiting(self) -> set[int]:
        """The ``id`` of every run someone waits on (not to be closed yet)."""
        return {id(run) for run, _ in self._pending.values()} | {id(r) for *_, r in self._byes}

    def due(self) -> list[tuple[bytes, bytes]]:
        """The answers of the runs committed since (the rest keep waiting)."""
        out: list[tuple[bytes, bytes]] = []
        waiting: dict[bytes, tuple[Run, bytes]] = {}
        for peer, (run, sender_id) in self._pending.items():
            if run.commits.dirty:
                waiting[peer] = (run, sender_id)
                continue
            seq = run.ledger.acknowledged(sender_id)
            if seq is not None:
                # Run.where is checked to encode when the run opens.
                where = run.where if peer in self._greet else None
                out.append((peer, codec.encode(codec.Ack(sender_id, seq, where))))
            self._greet.discard(peer)
        self._pending = waiting
        byes = []
        for peer, bye, run in self._byes:  # heard: the client may end now
            if run.commits.dirty:
                byes.append((peer, bye, run))
            else:
                out.append((peer, codec.encode(codec.Ack(bye.sender_id, bye.seq))))
        self._byes = byes
        return out
