"""What a closing client could not deliver: the batches the undelivered file holds.

Made by :class:`roxxel.client.Sender` at close, written and read back by
:mod:`roxxel.undelivered`, replayed through a new sender.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from . import codec

__all__ = ["Unsent", "UnsentBatch"]


class UnsentBatch(NamedTuple):
    seq: int | None  # None (files of older clients): never sent, numbered on replay
    body: bytes  # encoded records (codec.encode_records)
    metrics: int
    lines: int


@dataclasses.dataclass(frozen=True)
class Unsent:
    """What a closing client could not deliver: in-flight batches keep their seq.

    ``dropped`` records were dropped by the buffer bound and not reported to a
    collector yet; a last batch in ``batches`` carries that report.
    """

    hello: codec.Hello
    batches: list[UnsentBatch]
    dropped: int = 0

    @property
    def records(self) -> int:
        return sum(b.metrics + b.lines for b in self.batches)
