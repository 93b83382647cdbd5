"""``roxxel plot CSV``: a run's ``{prefix}_metrics.csv`` as one PNG, a subplot per metric.

The CSV is read as the collector's CSV sink writes it: a ``step,<keys>``
header that a key first seen mid-run widens (older rows then have empty
cells in the new columns), an empty cell for "no value in this row",
``nan``/``inf``/``-inf`` for non-finite floats, and text cells as they were
logged (a text that looks like a formula has a leading ``'``, so it is not a
number). Only cells that read as numbers are plotted; non-finite ones are
counted in the subplot's title rather than drawn, so a run that diverged
still gets a readable curve up to where it did.

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

__all__ = [
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

# A metric's steps and values, in file order (a run appended to an existing
# file starts its steps again: the curve shows that rather than hiding it).
Series = tuple[list[int], list[float]]

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


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, Series]:
    """``{key: (steps, values)}`` of every metric column, in header order.

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
            keys = header[1:]
            if not keys:
                raise PlotError(f"{name}: no metric columns")
            if len(set(keys)) != len(keys):
                raise PlotError(f"{name}: its header repeats a column name")
            series: dict[str, Series] = {key: ([], []) for key in keys}
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
                except ValueError:
                    raise PlotError(f"{name}, line {reader.line_num}: step {row[0]!r}") from None
                rows += 1
                # A row shorter than the header has empty cells at its end.
                for key, cell in zip(keys, row[1:], strict=False):
                    if _NUMBER.fullmatch(cell):
                        steps, values = series[key]
                        steps.append(step)
                        values.append(float(cell))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PlotError(f"{name}: not a metrics CSV ({exc})") from None
    if not rows:
        raise PlotError(f"{name}: no rows")
    return series


def select_keys(series: Mapping[str, Series], keys: Sequence[str] | None) -> dict[str, Series]:
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
class Panel:
    """One subplot: the finite points of a metric and a title that says what was left out."""

    key: str
    steps: list[int]
    values: list[float]
    title: str
    log_y: bool


def panels(series: Mapping[str, Series], *, log_y: bool = False) -> list[Panel]:
    """What :func:`draw` draws, decided without matplotlib (so it can be tested without it).

    Non-finite values are dropped and counted in the title; a log y-axis is
    used only where every drawn value is positive (log of 0 or less does not
    exist), and the title says when a subplot stayed linear.
    """
    result = []
    for key, (steps, values) in series.items():
        points = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        notes = []
        if not values:
            notes.append("no numeric values")
        skipped = len(values) - len(points)
        if skipped:
            notes.append(f"{skipped} non-finite value{'s' if skipped > 1 else ''} skipped")
        log = log_y and bool(points) and all(v > 0 for _, v in points)
        if log_y and points and not log:
            notes.append("linear y: values <= 0")
        title = f"{key} ({'; '.join(notes)})" if notes else key
        result.append(Panel(key, [s for s, _ in points], [v for _, v in points], title, log))
    return result


def draw(
    series: Mapping[str, Series],
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
            # A marker, so that a metric logged once (or rarely) is still seen.
            ax.plot(panel.steps, panel.values, marker=".", markersize=3, linewidth=1)
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
    """``--keys a,b``: the names in order, once each (empty names cannot be metrics)."""
    keys = list(dict.fromkeys(key for key in text.split(",") if key))
    if not keys:
        raise argparse.ArgumentTypeError("expected metric names separated by commas, e.g. loss,lr")
    return keys


def add_plot_command(commands: argparse._SubParsersAction) -> None:
    """Add ``plot`` to the ``roxxel`` command's subcommands."""
    plot = commands.add_parser("plot", help="draw a run's metrics CSV as a PNG")
    plot.add_argument("csv", help="a {prefix}_metrics.csv file")
    plot.add_argument(
        "--out", metavar="PNG", help="where to write the PNG (default: the CSV's path with .png)"
    )
    plot.add_argument(
        "--keys",
        type=_key_list,
        metavar="KEY,KEY",
        help="the metrics to draw, in this order (default: every column)",
    )
    plot.add_argument(
        "--log-y",
        action="store_true",
        help="log y-axes (linear for a metric with values <= 0, said in its title)",
    )


def plot_command(args: argparse.Namespace) -> int:
    """Run ``roxxel plot``: print the PNG's path and return 0, or say why not and return 1."""
    out = args.out or os.path.splitext(args.csv)[0] + ".png"
    try:
        if os.path.abspath(out) == os.path.abspath(args.csv):
            raise PlotError(f"{out} is the CSV itself: give another --out")
        series = select_keys(read_metrics_csv(args.csv), args.keys)
        draw(series, out, log_y=args.log_y, title=os.path.basename(args.csv))
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (PlotError, OSError) as exc:
        print(f"roxxel plot: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
