"""``roxxel plot DIR|CSV``: a run's ``{prefix}_metrics.csv`` as one PNG, a subplot per metric.

The CSV is named as every ``roxxel`` tool names a run's file
(:mod:`roxxel.runfiles`): the file, its log directory (``--prefix`` where it
holds several runs) or ``DIR/PREFIX``.

The CSV is read as the collector's CSV sink writes it: a ``step,<keys>``
header that a key first seen mid-run widens (older rows then have empty
cells in the new columns), an empty cell for "no value in this row",
``nan``/``inf``/``-inf`` for non-finite floats, and text cells as they were
logged (a text that looks like a formula has a leading ``'``, so it is not a
number). Only cells that read as numbers are plotted; non-finite ones are
counted in the subplot's title rather than drawn, so a run that diverged
still gets a readable curve up to where it did.

A ``rank`` column (rows logged with ``all_ranks=True``; rank 0's plain rows
leave it empty) is never a metric: each rank gets its own line, in its own
colour. A line is broken where the step goes backwards -- a run appended to
the same file starts its steps again -- so no segment joins the end of one
run to the start of the next.

matplotlib is an optional extra (``pip install 'roxxel[plot]'``): only
:func:`draw` imports it, so the rest of roxxel never pays for it or needs it.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .codec import MAX_STR_LEN
from .lines import printable
from .runfiles import METRICS_CSV, RunFilesError, add_run_arguments, run_file

__all__ = [
    "Curves",
    "Line",
    "MISSING_MATPLOTLIB",
    "Panel",
    "PlotError",
    "Series",
    "add_plot_command",
    "draw",
    "panels",
    "plot_command",
    "read_metrics_csv",
    "select_keys",
]

MISSING_MATPLOTLIB = "roxxel plot needs matplotlib: pip install 'roxxel[plot]'"

# A metric's steps and values of one rank, in file order (a run appended to
# an existing file starts its steps again: the line is broken there).
Series = tuple[list[int], list[float]]
# A metric's series by rank; ``None`` when the CSV has no rank column.
Curves = dict[int | None, Series]
RANK_COLUMN = "rank"  # as the collector's CSV sink names it

# What the sink writes for a number (``%d``, ``.5f``, ``.6g``, nan, inf),
# and no more: ``float()`` would also take text such as "1_000" or " 7 ".
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf)")

# Inches per subplot, and at most this many subplots in a column before the
# figure gets another column (a tall single column is hard to read).
_PANEL_SIZE = (8.0, 2.5)
_PER_COLUMN = 6
_MAX_COLUMNS = 3
_DPI = 100
# Agg refuses an image 2**16 pixels high: the most rows of subplots a PNG can have.
_MAX_ROWS = (2**16 - 1) // round(_PANEL_SIZE[1] * _DPI)


class PlotError(Exception):
    """A CSV that cannot be plotted, or keys it does not have; the message is for the user."""


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, Curves]:
    """``{key: {rank: (steps, values)}}`` of every metric column, in header order
    (rank ``None`` for every row of a CSV without a ``rank`` column).

    Empty cells and text cells are left out (a key logged only on some rows
    has values only at those steps); ``nan``/``inf`` are kept, for the caller
    to decide about. Raises :class:`PlotError` for a file that is not such a
    CSV or has no rows.
    """
    # A text cell may be as long as a record allows (the sink raises it too).
    csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_STR_LEN))
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise PlotError(f"{name}: empty file")
            if not header or header[0] != "step":
                raise PlotError(f"{name}: not a metrics CSV (its first line is not 'step,<keys>')")
            if len(set(header)) != len(header):
                raise PlotError(f"{name}: its header repeats a column name")
            at_rank = header.index(RANK_COLUMN) if RANK_COLUMN in header else None
            keys = [key for key in header[1:] if key != RANK_COLUMN]
            if not keys:
                raise PlotError(f"{name}: no metric columns")
            series: dict[str, Curves] = {key: {} for key in keys}
            rows = 0
            for row in reader:
                if not row:
                    continue
                if len(row) > len(header):
                    raise PlotError(
                        f"{name}, line {reader.line_num}: {len(row)} cells, "
                        f"more than the header's {len(header)}"
                    )
                try:
                    step = int(row[0])
                    # Rank 0's plain rows leave the rank cell empty.
                    rank = None if at_rank is None else int(_cell(row, at_rank) or 0)
                except ValueError:
                    raise PlotError(
                        f"{name}, line {reader.line_num}: step {row[0]!r} or its rank"
                    ) from None
                rows += 1
                # A row shorter than the header has empty cells at its end.
                for key, cell in zip(header[1:], row[1:], strict=False):
                    if key != RANK_COLUMN and _NUMBER.fullmatch(cell):
                        steps, values = series[key].setdefault(rank, ([], []))
                        steps.append(step)
                        values.append(float(cell))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PlotError(f"{name}: not a metrics CSV ({exc})") from None
    if not rows:
        raise PlotError(f"{name}: no rows")
    return series


def _cell(row: list[str], index: int) -> str:
    return row[index] if index < len(row) else ""


def select_keys(series: Mapping[str, Curves], keys: Sequence[str] | None) -> dict[str, Curves]:
    """The ``keys`` of ``series`` in that order (all of them for ``None``);
    an unknown key names the ones there are, so a typo is fixed at once."""
    if keys is None:
        return dict(series)
    unknown = [key for key in keys if key not in series]
    if unknown:
        raise PlotError(
            f"no metric {', '.join(map(repr, unknown))} in this CSV; "
            f"its metrics are: {', '.join(map(repr, series))}"
        )
    return {key: series[key] for key in keys}


@dataclass(frozen=True)
class Line:
    """Finite points of one rank drawn as one connected line (``rank`` None: no rank column)."""

    rank: int | None
    steps: list[int]
    values: list[float]


@dataclass(frozen=True)
class Panel:
    """One subplot: a metric's lines and a title that says what was left out."""

    key: str
    lines: list[Line]
    title: str
    log_y: bool


def panels(series: Mapping[str, Curves], *, log_y: bool = False) -> list[Panel]:
    """What :func:`draw` draws, decided without matplotlib (so it can be tested without it).

    Each rank's points become lines, a new one wherever the step goes
    backwards (a new run in the same file). Non-finite values are dropped and
    counted in the title; a log y-axis is used only where every drawn value is
    positive (log of 0 or less does not exist), and the title says when a
    subplot stayed linear.
    """
    result = []
    for key, curves in series.items():
        lines: list[Line] = []
        total = drawn = 0
        for rank, (steps, values) in sorted(curves.items(), key=lambda c: c[0] or 0):
            total += len(values)
            last = None
            for step, value in zip(steps, values, strict=True):
                if not math.isfinite(value):
                    continue
                if last is None or step < last:
                    lines.append(Line(rank, [], []))
                lines[-1].steps.append(step)
                lines[-1].values.append(value)
                last = step
                drawn += 1
        notes = []
        if not total:
            notes.append("no numeric values")
        skipped = total - drawn
        if skipped:
            notes.append(f"{skipped} non-finite value{'s' if skipped > 1 else ''} skipped")
        points = [v for line in lines for v in line.values]
        log = log_y and bool(points) and all(v > 0 for v in points)
        if log_y and points and not log:
            notes.append("linear y: values <= 0")
        title = f"{key} ({'; '.join(notes)})" if notes else key
        result.append(Panel(key, lines, title, log))
    return result


def draw(
    series: Mapping[str, Curves],
    out: str | os.PathLike[str],
    *,
    log_y: bool = False,
    title: str | None = None,
) -> None:
    """Write a PNG of ``series`` to ``out``: one subplot per metric, against step.

    Raises ``ImportError`` with :data:`MISSING_MATPLOTLIB` when matplotlib is
    not installed, :class:`PlotError` for no metrics or more than a PNG can
    hold. The Agg backend writes files only: no window, no display.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    drawn = panels(series, log_y=log_y)
    if not drawn:
        raise PlotError("no metrics to draw")
    columns = min(_MAX_COLUMNS, math.ceil(len(drawn) / _PER_COLUMN))
    rows = math.ceil(len(drawn) / columns)
    if rows > _MAX_ROWS:
        raise PlotError(
            f"{len(drawn)} metrics do not fit in one PNG (at most {_MAX_ROWS * columns}): "
            "choose some with --keys"
        )
    figure, axes = pyplot.subplots(
        rows,
        columns,
        figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows),
        dpi=_DPI,
        squeeze=False,
    )
    try:
        for ax, panel in zip(axes.flat, drawn, strict=False):
            ranks = list(dict.fromkeys(line.rank for line in panel.lines))
            labelled: set[int | None] = {None}
            for line in panel.lines:
                # A colour per rank, the same for each of its runs, named once in
                # the legend; a marker, so that a metric logged once is still seen.
                first = line.rank not in labelled
                labelled.add(line.rank)
                ax.plot(
                    line.steps,
                    line.values,
                    marker=".",
                    markersize=3,
                    linewidth=1,
                    color=f"C{ranks.index(line.rank) % 10}",
                    label=f"rank {line.rank}" if first else None,
                )
            if len(ranks) > 1 or (ranks and ranks[0] is not None):
                ax.legend(fontsize=7, loc="best")
            if panel.log_y:
                ax.set_yscale("log")
            ax.set_title(panel.title, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
        for ax in axes.flat[len(drawn) :]:
            ax.remove()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(out, format="png")
    finally:
        pyplot.close(figure)


def _key_list(text: str) -> list[str]:
    """``--keys a,b``: the names in order, once each (empty names cannot be
    metrics); ``\\,`` is a comma of a name (``--keys 'acc\\,top5,loss'``)."""
    names = (key.replace("\\,", ",") for key in _UNESCAPED_COMMA.split(text))
    keys = list(dict.fromkeys(key for key in names if key))
    if not keys:
        raise argparse.ArgumentTypeError("expected metric names separated by commas, e.g. loss,lr")
    return keys


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def add_plot_command(commands: argparse._SubParsersAction) -> None:
    """Add ``plot`` to the ``roxxel`` command's subcommands."""
    plot = commands.add_parser("plot", help="draw a run's metrics CSV as a PNG")
    add_run_arguments(plot, "csv", "the run's log directory, or its {prefix}_metrics.csv")
    plot.add_argument(
        "--out", metavar="PNG", help="where to write the PNG (default: the CSV's path with .png)"
    )
    plot.add_argument(
        "--keys",
        type=_key_list,
        metavar="KEY,KEY",
        help="the metrics to draw, in this order (default: every column); a comma "
        "in a name is written \\,",
    )
    plot.add_argument(
        "--log-y",
        action="store_true",
        help="log y-axes (linear for a metric with values <= 0, said in its title)",
    )


def plot_command(args: argparse.Namespace) -> int:
    """Run ``roxxel plot``: print the PNG's path and return 0, or say why not and return 1."""
    try:
        path = run_file(args.csv, METRICS_CSV, args.prefix)
        out = args.out or os.path.splitext(path)[0] + ".png"
        if os.path.abspath(out) == os.path.abspath(path):
            raise PlotError(f"{out} is the CSV itself: give another --out")
        series = select_keys(read_metrics_csv(path), args.keys)
        draw(series, out, log_y=args.log_y, title=os.path.basename(path))
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (PlotError, RunFilesError, OSError) as exc:
        # It may quote the CSV's header: metric names a peer chose.
        print(f"roxxel plot: {printable(str(exc))}", file=sys.stderr)
        return 1
    print(out)
    return 0
