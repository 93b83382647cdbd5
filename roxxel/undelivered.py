"""Records a closing client could not deliver: written to a file, replayed later.

``{log_dir}/{prefix}_undelivered_rank{N}.jsonl`` is text, one JSON object a
line, to read and grep as it is. It holds one or more sections: a header
line ::

    {"roxxel_undelivered": 2, "sender_id": HEX, "host": ..., "rank": ..., "pid": ...,
     "process_count": ..., "prefix": ..., "acked": N, "replay": "roxxel replay ..."}

then a line per record, batch by batch as the sender cut them (lines and
metrics rows travel in batches of their own kind, each kind in the order
logged)::

    {"batch": 1, "seq": 7, "ts": 1764086400.5, "level": "WARNING", "text": "slow host"}
    {"batch": 2, "seq": 8, "ts": 1764086400.6, "step": 10, "metrics": {"loss": 1.2}}
    {"batch": 2, "seq": 8, "ts": 1764086400.7, "step": 11, "metrics": {"loss": "nan"},
     "exact": "kcv/+AAAAAAAAA=="}
    {"batch": 3, "seq": 9, "ts": 1764086400.8, "dropped_metrics": 120, "dropped_lines": 0}

``level`` is the stdlib's name (``"Level 25"`` for an unnamed level);
``all_ranks: true`` marks a row logged with ``all_ranks=True``; metric
values are as in the run's JSONL file (NaN and infinities are the strings
``"nan"``, ``"inf"``, ``"-inf"``). A row whose values JSON cannot hold
exactly -- a non-finite float, a text value that reads ``"nan"``, bytes --
also carries ``exact``: its values as base64 msgpack, which replay uses. A
record of any other shape is ``{"batch": ..., "seq": ..., "record": BASE64}``.

``batch`` numbers the batches of a section: the records of one batch are
delivered together, under its ``seq``: the seq it was sent with (maybe
written, and not acknowledged), or, for a batch never sent, the one the
closing client gave it after those (a file of an older client has ``null``
there, numbered after them on replay). Replaying sends every section under
its original sender id and seqs, so a collector that had written some of it
(its ack was lost) skips those: replaying twice, or a batch that did
arrive, never writes twice -- as long as the collector's checkpoint in that
log dir still knows the sender. A copy with a batch taken out leaves a gap:
the collector writes nothing past it, and the replay fails without
renaming the file.

Files of the first format (``"roxxel_undelivered": 1``, a batch a line as
``{"seq", "metrics", "lines", "msgpack": BASE64}``) are still replayed.
"""

from __future__ import annotations

import base64
import json
import math
import operator
import os
import sys
import time
from json.encoder import encode_basestring
from typing import Any

import msgpack

from . import codec, schema
from .client import Sender
from .query import QUIET, raise_if_refused
from .security import ClientKeys
from .transport import DealerTransport
from .unsent import Unsent, UnsentBatch

__all__ = ["undelivered_path", "write_unsent", "read_unsent", "replay"]

_HEADER_KEY = "roxxel_undelivered"
_VERSION = 2
_LEVELS = {50: "CRITICAL", 40: "ERROR", 30: "WARNING", 20: "INFO", 10: "DEBUG", 0: "NOTSET"}
_LEVEL_NUMBERS = {name: number for number, name in _LEVELS.items()}
_NON_FINITE = {"nan", "inf", "-inf"}  # how the JSONL writes them: a text value like them is not
_TS = operator.itemgetter(1)


def undelivered_path(log_dir: str, prefix: str, rank: int) -> str:
    return os.path.join(log_dir, f"{prefix}_undelivered_rank{rank}.jsonl")


def write_unsent(path: str, unsent: Unsent) -> None:
    """Append ``unsent`` as a section of ``path`` and fsync it."""
    hello = unsent.hello
    header = {
        _HEADER_KEY: _VERSION,
        "sender_id": hello.sender_id.hex(),
        "host": hello.host,
        "rank": hello.rank,
        "pid": hello.pid,
        "process_count": hello.process_count,
        "prefix": hello.prefix,
        "acked": hello.acked,
        "replay": f"roxxel replay {path} --aggregator tcp://HOST:PORT",
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Private (0600): it names the sender id, with which its records can be
    # replayed exactly once; anyone who could read it could also use it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(fd, "a", encoding="utf-8") as f:
        f.write(_json(header) + "\n")
        for number, batch in enumerate(unsent.batches, 1):
            f.write(_batch_lines(number, batch))
        f.flush()
        os.fsync(f.fileno())


def _json(value: Any) -> str:
    return _escape_breaks(json.dumps(value, ensure_ascii=False, allow_nan=False))


def _escape_breaks(text: str) -> str:
    # Text as it is (not \u escapes), so the file greps as the log would;
    # control characters are escaped (it cannot rewrite a terminal), and so
    # are the characters some readers take for line breaks. Only inside
    # strings can they be: a whole batch's text is looked at once.
    if not text.isascii() and ("\x85" in text or "\u2028" in text or "\u2029" in text):
        for char in "\x85\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _batch_lines(number: int, batch: UnsentBatch) -> str:
    """The lines of one batch. They are assembled from pre-encoded pieces, a
    column at a time for metrics (as the collector's JSONL sink does): a
    ``json.dumps`` per record would make a full buffer take minutes."""
    envelope = f'{{"batch": {number}, "seq": {"null" if batch.seq is None else batch.seq}'
    head = envelope + ', "ts": '
    records = msgpack.unpackb(batch.body, raw=False, strict_map_key=False)
    if not records:  # kept, so that its seq leaves no gap on replay
        return envelope + ', "records": 0}\n'
    # The common batch: one C-level check (a time JSON cannot write, such as
    # NaN, sends a record to the general path below).
    if schema.all_log_lines(records) and all(map(_exact_number, map(_TS, records))):
        names = _LEVELS
        return _escape_breaks(
            "".join(
                f'{head}{ts!r}, "level": "{names.get(level) or f"Level {level}"}", '
                f'"text": {encode_basestring(text)}}}\n'
                for _, ts, level, text in records
            )
        )
    lines = []
    for record in records:
        kind = record[0]
        if schema.check_record(record) is not None:
            pass  # not ours to judge: carried as it is
        elif kind == schema.RECORD_LOG and len(record) == 4 and _exact_number(record[1]):
            _, ts, level, text = record
            name = _LEVELS.get(level) or f"Level {level}"
            lines.append(f'{head}{ts!r}, "level": "{name}", "text": {encode_basestring(text)}}}\n')
            continue
        elif kind in schema.METRICS_KINDS and all(map(_exact_number, record[2])):
            lines.append(_rows(head, record))
            continue
        elif kind == schema.RECORD_DROPPED and _exact_number(record[1]):
            _, ts, metrics, dropped_lines = record
            counts = f'"dropped_metrics": {metrics}, "dropped_lines": {dropped_lines}'
            lines.append(f"{head}{ts!r}, {counts}}}\n")
            continue
        lines.append(f'{envelope}, "record": "{_base64(record)}"}}\n')
    return _escape_breaks("".join(lines))


def _rows(head: str, record: list[Any]) -> str:
    """A line per row of a metrics record, values as the JSONL has them, and
    ``"exact"`` where that is not exact: one %-format for the record, a
    column of finite floats or of ints converted by the format itself."""
    kind, keys, stamps, steps, rows = record
    ranked = '"all_ranks": true, ' if kind == schema.RECORD_RANKED_METRICS else ""
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True))
    cells = []
    plain = True
    for index, column in enumerate(columns):
        types = set(map(type, column))
        if types == {float} and all(map(math.isfinite, column)):
            cells.append("%r")
        elif types == {int}:
            cells.append("%d")
        else:
            cells.append("%s")
            columns[index] = tuple(map(_cell, column))
            plain = plain and all(map(_plain, column))
    body = ", ".join(
        encode_basestring(key).replace("%", "%%") + ": " + cell
        for key, cell in zip(keys, cells, strict=True)
    )
    fmt = head.replace("%", "%%") + '%r, "step": %d, ' + ranked + '"metrics": {' + body + "}"
    if plain:
        fmt += "}\n"
        return "".join(map(fmt.__mod__, zip(stamps, steps, *columns, strict=True)))
    fmt += "%s}\n"
    exact = [
        "" if all(map(_plain, values)) else f', "exact": "{_base64(values)}"' for values in rows
    ]
    return "".join(map(fmt.__mod__, zip(stamps, steps, *columns, exact, strict=True)))


def _cell(value: Any) -> str:
    """The JSON text of a metric value, as the JSONL writes it; bytes as their length."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
        return '"nan"' if math.isnan(value) else ('"inf"' if value > 0 else '"-inf"')
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, (bytes, bytearray)):
        return f'"<{len(value)} bytes>"'
    if isinstance(value, dict):
        items = (f"{encode_basestring(str(k))}: {_cell(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_cell, value)) + "]"
    return _json(value)  # bool, None


def _exact_number(value: Any) -> bool:
    """A timestamp that JSON writes and reads back unchanged."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _plain(value: Any) -> bool:
    """Whether JSON holds ``value`` exactly, and it reads back as itself."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        return value not in _NON_FINITE
    if kind is dict:  # a non-scalar's description: {NON_SCALAR: text}
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return kind in (int, bool) or value is None


def _base64(value: Any) -> str:
    return base64.b64encode(msgpack.packb(value, use_bin_type=True)).decode("ascii")


def _unbase64(text: Any) -> Any:
    if not isinstance(text, str):
        raise ValueError("a base64 field is a string")
    return msgpack.unpackb(base64.b64decode(text, validate=True), raw=False, strict_map_key=False)


def read_unsent(path: str) -> list[Unsent]:
    """The sections of an undelivered file. Raises ``ValueError`` naming the line.

    A last line without its newline (the writer was killed mid-write) is
    ignored, with a note on stderr: it was never fsynced, so never promised.
    """
    sections: list[Unsent] = []
    batch: _BatchReader | None = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                print(f"roxxel: ignoring the torn last line {number} of {path}", file=sys.stderr)
                break
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("not a JSON object")
                header = _HEADER_KEY in item
                if batch is not None and (header or item.get("batch") != batch.number):
                    sections[-1].batches.append(batch.done())  # its last line was the one before
                    batch = None
                if header:
                    sections.append(Unsent(_hello(item), []))
                    continue
                if not sections:
                    raise ValueError("a record before any header")
                if "msgpack" in item:  # the first format: a whole batch a line
                    sections[-1].batches.append(_old_batch(item))
                    continue
                seq = item["seq"]
                if seq is not None and (type(seq) is not int or seq < 1):
                    raise ValueError(f"bad seq {seq!r}")
                if batch is None:
                    batch = _BatchReader(item["batch"], seq)
                elif seq != batch.seq:
                    raise ValueError(f"seq {seq!r} within batch {batch.number} of seq {batch.seq}")
                batch.add(item)
            except (ValueError, KeyError, TypeError, codec.CodecError) as exc:
                problem = f"{path}:{number}: not an undelivered-records line: {exc}"
                raise ValueError(problem) from None
    if batch is not None:
        try:
            sections[-1].batches.append(batch.done())
        except (ValueError, codec.CodecError) as exc:
            raise ValueError(f"{path}: its last batch: {exc}") from None
    return sections


def _hello(item: dict[str, Any]) -> codec.Hello:
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
    return hello


def _old_batch(item: dict[str, Any]) -> UnsentBatch:
    seq, metrics, lines = item["seq"], item["metrics"], item["lines"]
    if seq is not None and (type(seq) is not int or seq < 1):
        raise ValueError(f"bad seq {seq!r}")
    if type(metrics) is not int or type(lines) is not int or min(metrics, lines) < 0:
        raise ValueError("bad record counts")
    return UnsentBatch(seq, base64.b64decode(item["msgpack"], validate=True), metrics, lines)


class _BatchReader:
    """The record lines of one batch, back into the records it carried: consecutive
    rows with the same kind and names become one metrics record, as the sender
    grouped them."""

    def __init__(self, number: Any, seq: int | None) -> None:
        if type(number) is not int:
            raise ValueError(f"bad batch number {number!r}")
        self.number = number
        self.seq = seq
        self._records: list[list[Any]] = []
        self._metrics = 0
        self._lines = 0

    def add(self, item: dict[str, Any]) -> None:
        if "record" in item:
            record = _unbase64(item["record"])
        elif "text" in item:
            name = item["level"]
            level = _LEVEL_NUMBERS.get(name)
            if level is None:
                if not isinstance(name, str) or not name.startswith("Level "):
                    raise ValueError(f"unknown level {name!r}")
                level = int(name.removeprefix("Level "))
            record = [schema.RECORD_LOG, item["ts"], level, item["text"]]
        elif "metrics" in item:
            self._row(item)
            return
        elif "dropped_metrics" in item:
            record = [
                schema.RECORD_DROPPED,
                item["ts"],
                item["dropped_metrics"],
                item["dropped_lines"],
            ]
        elif item.get("records") == 0:
            return  # an empty batch
        else:
            raise ValueError("neither a log line, a metrics row nor a record")
        self._records.append(record)
        if record[0] in schema.METRICS_KINDS:
            self._metrics += len(record[3])
        elif record[0] != schema.RECORD_DROPPED:
            self._lines += 1

    def _row(self, item: dict[str, Any]) -> None:
        metrics = item["metrics"]
        if not isinstance(metrics, dict):
            raise ValueError("metrics is not an object")
        keys = list(metrics)
        values = _unbase64(item["exact"]) if "exact" in item else list(metrics.values())
        if not isinstance(values, list):
            raise ValueError("exact is not a list of values")
        kind = schema.RECORD_RANKED_METRICS if item.get("all_ranks") else schema.RECORD_METRICS
        last = self._records[-1] if self._records else None
        if last is not None and last[0] == kind and last[1] == keys:
            last[2].append(item["ts"])
            last[3].append(item["step"])
            last[4].append(values)
        else:
            self._records.append([kind, keys, [item["ts"]], [item["step"]], [values]])
        self._metrics += 1

    def done(self) -> UnsentBatch:
        """The batch; ``ValueError`` for a record that is not valid (checked here,
        a batch at a time, as the collector would)."""
        if not schema.all_log_lines(self._records):
            for record in self._records:
                problem = schema.check_record(record)
                if problem is not None:
                    raise ValueError(f"batch {self.number}: {problem}")
        body = codec.encode_records(self._records)
        return UnsentBatch(self.seq, body, self._metrics, self._lines)


def replay(path: str, endpoint: str, timeout: float = 60.0, keys: ClientKeys | None = None) -> int:
    """Deliver every section of ``path`` to the collector at ``endpoint``.

    Returns the number of records the collector has acknowledged; raises
    ``TimeoutError`` if it did not acknowledge everything within ``timeout``
    seconds (per section), :class:`~roxxel.query.HandshakeError` as soon as
    the collector's handshake failed (CURVE keys missing, refused or wrong).
    Nothing is deleted: the caller decides.
    """
    delivered = 0
    for unsent in read_unsent(path):
        # Its one warning, a failed handshake, is raised here instead.
        transport = DealerTransport(endpoint, unsent.hello.sender_id, keys=keys, log=QUIET)
        # Nothing of a file may be dropped: no bound but the file's own size.
        held = sum(len(batch.body) for batch in unsent.batches) + 1
        # Its refusal is raised here (the sender would say the records stay in the process).
        sender = Sender(
            transport, unsent.hello, resume=unsent, max_buffer_bytes=2 * held, log=QUIET
        )
        try:
            _acknowledged(sender, transport, timeout)
        finally:
            # No bye: the collector must remember the sender, so that
            # replaying this file again is recognised as duplicates.
            left = sender.close(0, bye=False)
        if sender.failure is not None:
            raise RuntimeError(f"replaying {path} failed") from sender.failure
        if left.batches:
            raise TimeoutError(
                f"the collector at {endpoint} did not acknowledge {left.records} record(s) "
                f"of sender {unsent.hello.sender_id.hex()} within {timeout} s"
            )
        delivered += unsent.records
    return delivered


def _acknowledged(sender: Sender, transport: DealerTransport, timeout: float) -> None:
    """Wait until ``sender`` has everything acknowledged, at most ``timeout`` s;
    :class:`~roxxel.query.HandshakeError` at once if the handshake failed."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            # Short waits: the sender thread notes a failed handshake on the transport.
            if sender.flush(max(0.0, min(left, 0.1))) or left <= 0:
                return
        except RuntimeError:  # the sender thread failed: sender.failure says why
            return
        raise_if_refused(transport)
        if sender.refusal is not None:  # no wait would help
            refused = f"the collector at {transport.endpoint} refused them: {sender.refusal}"
            raise ValueError(refused)
