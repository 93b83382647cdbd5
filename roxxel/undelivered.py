"""Records a closing client could not deliver: written to a file, replayed later.

``{log_dir}/{prefix}_undelivered_rank{N}.jsonl`` holds one or more sections:
a header line ``{"roxxel_undelivered": 1, "sender_id": HEX, "host": ...,
"rank": ..., "pid": ..., "process_count": ..., "prefix": ..., "acked": N}``,
then one line per batch ``{"seq": N or null, "metrics": M, "lines": L,
"msgpack": BASE64}`` -- the batch's records exactly as they would travel
(:func:`roxxel.codec.encode_records`), so that a full buffer is written in
about a second rather than re-encoded as JSON value by value. A batch that was
in flight keeps its seq; the rest are numbered after it on replay.

Replaying sends every section under its original sender id and seqs, so a
collector that had written some of it (its ack was lost) skips those:
replaying twice, or a batch that did arrive, never writes twice -- as long as
the collector's checkpoint in that log dir still knows the sender.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from . import codec
from .client import Sender, Unsent, UnsentBatch
from .security import ClientKeys
from .transport import DealerTransport

__all__ = ["undelivered_path", "write_unsent", "read_unsent", "replay"]

_HEADER_KEY = "roxxel_undelivered"


def undelivered_path(log_dir: str, prefix: str, rank: int) -> str:
    return os.path.join(log_dir, f"{prefix}_undelivered_rank{rank}.jsonl")


def write_unsent(path: str, unsent: Unsent) -> None:
    """Append ``unsent`` as a section of ``path`` and fsync it."""
    hello = unsent.hello
    header = {
        _HEADER_KEY: 1,
        "sender_id": hello.sender_id.hex(),
        "host": hello.host,
        "rank": hello.rank,
        "pid": hello.pid,
        "process_count": hello.process_count,
        "prefix": hello.prefix,
        "acked": hello.acked,
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for batch in unsent.batches:
            body = base64.b64encode(batch.body).decode("ascii")
            line = {
                "seq": batch.seq,
                "metrics": batch.metrics,
                "lines": batch.lines,
                "msgpack": body,
            }
            f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_unsent(path: str) -> list[Unsent]:
    """The sections of an undelivered file. Raises ``ValueError`` naming the line.

    A last line without its newline (the writer was killed mid-write) is
    ignored, with a note on stderr: it was never fsynced, so never promised.
    """
    sections: list[Unsent] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                print(f"roxxel: ignoring the torn last line {number} of {path}", file=sys.stderr)
                break
            try:
                item = json.loads(line)
                if _HEADER_KEY in item:
                    hello = codec.Hello(
                        bytes.fromhex(item["sender_id"]),
                        item["host"],
                        item["rank"],
                        item["pid"],
                        item["process_count"],
                        item["prefix"],
                        item["acked"],
                    )
                    codec.encode(hello)  # validates every field
                    sections.append(Unsent(hello, []))
                    continue
                if not sections:
                    raise ValueError("a batch before any header")
                seq, metrics, lines = item["seq"], item["metrics"], item["lines"]
                if seq is not None and (type(seq) is not int or seq < 1):
                    raise ValueError(f"bad seq {seq!r}")
                if type(metrics) is not int or type(lines) is not int or min(metrics, lines) < 0:
                    raise ValueError("bad record counts")
                body = base64.b64decode(item["msgpack"], validate=True)
                sections[-1].batches.append(UnsentBatch(seq, body, metrics, lines))
            except (ValueError, KeyError, TypeError, codec.CodecError) as exc:
                problem = f"{path}:{number}: not an undelivered-records line: {exc}"
                raise ValueError(problem) from None
    return sections


def replay(path: str, endpoint: str, timeout: float = 60.0, keys: ClientKeys | None = None) -> int:
    """Deliver every section of ``path`` to the collector at ``endpoint``.

    Returns the number of records the collector has acknowledged; raises
    ``TimeoutError`` if it did not acknowledge everything within ``timeout``
    seconds (per section). Nothing is deleted: the caller decides.
    """
    delivered = 0
    for unsent in read_unsent(path):
        transport = DealerTransport(endpoint, unsent.hello.sender_id, keys=keys)
        # Nothing of a file may be dropped: no bound but the file's own size.
        held = sum(len(batch.body) for batch in unsent.batches) + 1
        sender = Sender(transport, unsent.hello, resume=unsent, max_buffer_bytes=2 * held)
        # No bye: the collector must remember the sender, so that replaying
        # this file again is recognised as duplicates.
        left = sender.close(timeout, bye=False)
        if sender.failure is not None:
            raise RuntimeError(f"replaying {path} failed") from sender.failure
        if left.batches:
            raise TimeoutError(
                f"the collector at {endpoint} did not acknowledge {left.records} record(s) "
                f"of sender {unsent.hello.sender_id.hex()} within {timeout} s"
            )
        delivered += unsent.records
    return delivered
