"""The collector's files, byte for byte, for one fixed input.

A batch of every kind of record the sinks format -- odd floats, NaN and
infinities, big and small ints, bools, strings with commas, quotes,
newlines and formulas, control characters, custom levels, metric names
that appear mid-run, rows of every rank (``all_ranks``) -- goes through the
client's codec and the collector's own path (``sort_batch``, the default
sinks); the three files must equal ``tests/golden/`` exactly. A faster sink
must keep them so. ``ROXXEL_WRITE_GOLDEN=1`` writes them anew (after a
change of format that is meant: review the diff).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aggregator.batch import sort_batch
from aggregator.sinks import FileOptions, Origin, default_sinks
from roxxel import codec, schema
from roxxel.values import to_wire

GOLDEN = Path(__file__).parent / "golden"
T0 = 1_764_086_400.25  # 2025-11-25 16:00:00.25 UTC
M, R = schema.RECORD_METRICS, schema.RECORD_RANKED_METRICS
ODD_FLOATS = {
    "tiny": 1e-6,
    "third": 1 / 3,
    "sum": 0.1 + 0.2,
    "neg_zero": -0.0,
    "big": 1e300,
    "subnormal": 5e-324,
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "f32": np.float32(0.1),
}
INTS = {"zero": 0, "neg": -7, "past_2**53": 2**53 + 1, "max": 2**63 - 1, "true": True}
TEXTS = {
    "comma": "a,b",
    "quote": 'say "hi"',
    "newline": "two\nlines",
    "formula": "=HYPERLINK(1)",
    "number_text": "1e5",
    "nul_esc": "x\0y\x1b[2J",
}


def _rows() -> list[tuple]:
    """(kind, keys, ts, step, values) as a Logger queues them, names growing mid-run."""
    rows: list[tuple] = []
    for step in range(3):
        rows.append((M, ("loss",), T0 + step, step, (1.5 / (step + 1),)))
    mixed = {**ODD_FLOATS, **INTS, **TEXTS}
    rows.append((M, tuple(mixed), T0 + 3, 3, tuple(mixed.values())))
    rows.append((M, ("lr", "loss"), T0 + 4, 4, (3e-4, 0.25)))  # new key, another order
    for rank_step in range(5, 7):
        rows.append((R, ("loss", "acc"), T0 + rank_step, rank_step, (0.2, 0.9)))
    return rows


def _lines() -> list[list]:
    return [
        ["l", T0, 20, "Initializing..."],
        ["l", T0 + 0.5, 30, 'a warning, with a comma and "quotes"'],
        ["l", T0 + 1, 25, "a custom level"],
        ["l", T0 + 2, 40, 'Traceback (most recent call last):\n  File "x"\n[not a record]'],
        ["l", T0 + 3, 20, "escape \x1b[31mred\x1b[0m and a\rcarriage return"],
        ["l", T0 + 4, 50, "❌ CRITICAL: ünïcode"],
    ]


def _batch(records: list) -> codec.Batch:
    """``records`` as the collector decodes them from a client's frame."""
    body = codec.encode_records(records, to_wire)
    frame = codec.decode(codec.batch_frame(b"g" * codec.SENDER_ID_LEN, 1, body))
    assert isinstance(frame, codec.Batch)
    return frame


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The system log's times are local: UTC for the golden files."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("sink_processes", ["off", "on"])
def test_the_collector_writes_the_golden_files(
    tmp_path: Path, utc: None, sink_processes: str
) -> None:
    sinks = default_sinks(str(tmp_path), "golden", None, FileOptions(sink_processes=sink_processes))
    rank0, rank2 = Origin(0, "host-a", 100), Origin(2, "host-b", 200)
    for origin, records in (
        (rank0, _lines() + schema.metrics_records(_rows()[:5])),
        (rank2, [["l", T0 + 5, 30, "from rank 2"], *schema.metrics_records(_rows()[5:])]),
    ):
        batch = sort_batch(_batch(records).records)
        assert not batch.notices and not batch.non_scalars
        sinks.write_lines(origin, batch.lines)
        sinks.write_metrics(origin, batch.runs)
    assert [type(sink).__name__ for sink in sinks.sinks][1:] == ["Offloaded"] * 2 or (
        sink_processes == "off"
    )
    sinks.close()
    names = ("golden_system.log", "golden_metrics.csv", "golden_metrics.jsonl")
    if os.environ.get("ROXXEL_WRITE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for name in names:
            (GOLDEN / name).write_bytes((tmp_path / name).read_bytes())
    for name in names:
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), name
