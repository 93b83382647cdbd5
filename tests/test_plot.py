"""``roxxel plot``: the CSV as the collector really writes it, parsed exactly; a real PNG."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from roxxel import Logger
from roxxel.cli import main
from roxxel.plot import (
    MISSING_MATPLOTLIB,
    Line,
    PlotError,
    panels,
    read_metrics_csv,
    select_keys,
)

from .conftest import python_env, run_python

# What the collector's CSV sink writes for the rows logged in `run_csv`: "lr"
# first seen at step 3 widens the header, and the rows before get empty cells.
EXPECTED_CSV = """\
step,loss,lr
0,1.00000,
1,0.50000,
2,0.25000,
3,0.12500,0.00100
4,,0.0005
5,nan,inf
6,'=oops,0.00025
7,,-2.00000
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_csv(tmp_path: Path) -> Path:
    """A ``run_metrics.csv`` written by a real Logger and its in-process collector."""
    with Logger(tmp_path, "run", collector="thread", watcher=False) as logger:
        for step, loss in enumerate([1.0, 0.5, 0.25]):
            logger.log_metrics_summary(step, {"loss": loss})
        logger.log_metrics_summary(3, {"loss": 0.125, "lr": 0.001})
        logger.log_metrics_summary(4, {"lr": 0.0005})
        logger.log_metrics_summary(5, {"loss": float("nan"), "lr": float("inf")})
        logger.log_metrics_summary(6, {"loss": "=oops", "lr": 0.00025})
        logger.log_metrics_summary(7, {"loss": None, "lr": -2.0})
    path = tmp_path / "run_metrics.csv"
    assert path.read_text(encoding="utf-8") == EXPECTED_CSV
    return path


def plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roxxel.cli", "plot", *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come right after the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    return width, height


def line_rows(path: Path) -> list[int]:
    """The pixel rows holding matplotlib's first line colour (C0, #1f77b4): where curves are."""
    from matplotlib.image import imread

    pixels = imread(path)[:, :, :3]
    c0 = (0x1F / 255, 0x77 / 255, 0xB4 / 255)
    near = (abs(pixels - c0) < 0.02).all(axis=2)
    return [int(row) for row in near.any(axis=1).nonzero()[0]]


def test_parser_reads_a_widened_csv_exactly(run_csv: Path) -> None:
    series = read_metrics_csv(run_csv)
    assert list(series) == ["loss", "lr"]
    steps, values = series["loss"][None]
    # Step 4's empty cell, step 6's text and step 7's None are not values.
    assert steps == [0, 1, 2, 3, 5]
    assert list(map(str, values)) == ["1.0", "0.5", "0.25", "0.125", "nan"]
    steps, values = series["lr"][None]
    # Rows 0-2, written before "lr" existed, have empty cells for it.
    assert steps == [3, 4, 5, 6, 7]
    assert list(map(str, values)) == ["0.001", "0.0005", "inf", "0.00025", "-2.0"]


def test_parser_takes_only_what_the_sink_writes_for_numbers(tmp_path: Path) -> None:
    path = tmp_path / "hand.csv"
    path.write_text('step,a,b\n0,1_000, 7 \n\n1,-3\n2,"4,5",1e-06\n', encoding="utf-8")
    assert read_metrics_csv(path) == {"a": {None: ([1], [-3.0])}, "b": {None: ([2], [1e-06])}}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty file"),
        ("loss\n1.0\n", "not a metrics CSV"),
        ("step\n0\n", "no metric columns"),
        ("step,loss\n", "no rows"),
        ("step,loss\n0,1.0,2.0\n", "line 2: 3 cells, more than the header's 2"),
        ("step,loss\nten,1.0\n", "line 2: step 'ten'"),
        ("step,a,a\n0,1,2\n", "repeats a column name"),
    ],
)
def test_a_bad_csv_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, why: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    assert main(["plot", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"roxxel plot: {path}")
    assert why in captured.err
    assert not (tmp_path / "bad.png").exists()


def test_keys_select_in_order_and_name_the_available_ones() -> None:
    series = {"loss": {None: ([0], [1.0])}, "lr": {None: ([0], [0.1])}}
    assert list(select_keys(series, ["lr", "loss"])) == ["lr", "loss"]
    assert select_keys(series, None) == series
    with pytest.raises(PlotError, match="no metric 'nosuch'.*its metrics are: 'loss', 'lr'"):
        select_keys(series, ["loss", "nosuch"])


def test_panels_drop_non_finite_values_and_say_so() -> None:
    nan, inf = float("nan"), float("inf")
    series = {
        "loss": {None: ([0, 1, 2, 3], [2.0, nan, 1.0, -inf])},
        "lr": {None: ([0, 1], [0.1, 0.01])},
        "delta": {None: ([0, 1, 2], [0.5, 0.0, inf])},
        "note": {},
    }
    linear = panels(series)
    assert [(p.lines, p.log_y) for p in linear] == [
        ([Line(None, [0, 2], [2.0, 1.0])], False),
        ([Line(None, [0, 1], [0.1, 0.01])], False),
        ([Line(None, [0, 1], [0.5, 0.0])], False),
        ([], False),
    ]
    assert [p.title for p in linear] == [
        "loss (2 non-finite values skipped)",
        "lr",
        "delta (1 non-finite value skipped)",
        "note (no numeric values)",
    ]
    logged = panels(series, log_y=True)
    assert [(p.title, p.log_y) for p in logged] == [
        ("loss (2 non-finite values skipped)", True),
        ("lr", True),
        ("delta (1 non-finite value skipped; linear y: values <= 0)", False),
        ("note (no numeric values)", False),
    ]
    assert not any(math.isnan(v) for p in logged for line in p.lines for v in line.values)


def test_plot_writes_a_png_with_a_subplot_per_metric(run_csv: Path, tmp_path: Path) -> None:
    full = plot(str(run_csv))
    assert (full.returncode, full.stderr) == (0, "")
    default_out = run_csv.with_suffix(".png")
    assert full.stdout == f"{default_out}\n"

    only_lr = tmp_path / "lr.png"
    picked = plot(str(run_csv), "--keys", "lr", "--log-y", "--out", str(only_lr))
    assert (picked.returncode, picked.stderr, picked.stdout) == (0, "", f"{only_lr}\n")

    (width, height), (lr_width, lr_height) = png_size(default_out), png_size(only_lr)
    assert width > 0 and height > 0
    # Subplots are stacked one per metric: two (loss, lr) are twice as tall as one.
    assert (lr_width, lr_height * 2) == (width, height)
    # Each subplot has a curve: line pixels in the upper (loss) and lower (lr) half.
    rows = line_rows(default_out)
    assert any(r < height / 2 for r in rows) and any(r > height / 2 for r in rows)
    assert line_rows(only_lr)


def test_an_unknown_key_exits_1_naming_the_available_keys(run_csv: Path) -> None:
    result = plot(str(run_csv), "--keys", "loss,nosuch")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "roxxel plot: no metric 'nosuch' in this CSV; its metrics are: 'loss', 'lr'\n"
    )
    assert not run_csv.with_suffix(".png").exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, why in [
        (["plot"], "the following arguments are required: csv"),
        (["plot", "run_metrics.csv", "--keys", ","], "argument --keys: expected metric names"),
        (["plot", "run_metrics.csv", "--log-x"], "unrecognized arguments: --log-x"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: roxxel") and why in err


def test_without_matplotlib_it_says_how_to_install_it(run_csv: Path) -> None:
    result = run_python(
        "import sys\n"
        "sys.modules['matplotlib'] = None  # import matplotlib now raises ImportError\n"
        "from roxxel.cli import main\n"
        f"sys.exit(main(['plot', {str(run_csv)!r}]))\n"
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{MISSING_MATPLOTLIB}\n"
    assert MISSING_MATPLOTLIB == "roxxel plot needs matplotlib: pip install 'roxxel[plot]'"
    assert not run_csv.with_suffix(".png").exists()


def test_roxxel_does_not_import_matplotlib() -> None:
    result = run_python(
        "import sys, roxxel, roxxel.cli, roxxel.plot\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


def test_a_run_appended_to_the_same_file_starts_a_new_line_not_a_diagonal(
    tmp_path: Path,
) -> None:
    # Two runs of a script on one log dir: steps 0-10 at 0.0, then again 0-10 at 1.0.
    for value in (0.0, 1.0):
        with Logger(tmp_path, "run", collector="thread", watcher=False) as logger:
            for step in range(11):
                logger.log_metrics_summary(step, {"loss": value})
    csv_path = tmp_path / "run_metrics.csv"
    (panel,) = panels(read_metrics_csv(csv_path))
    assert panel.lines == [
        Line(None, list(range(11)), [0.0] * 11),
        Line(None, list(range(11)), [1.0] * 11),
    ]
    result = plot(str(csv_path))
    assert (result.returncode, result.stderr) == (0, "")
    rows = line_rows(csv_path.with_suffix(".png"))
    # Two flat lines: two bands of pixel rows, nothing between them (a line
    # from step 10 of the first run back to step 0 of the second would cross).
    low, high = min(rows), max(rows)
    assert high - low > 50
    middle = [r for r in rows if low + 10 < r < high - 10]
    assert middle == [], middle


# The CSV sink's format for rows logged with all_ranks=True by 3 ranks, and
# rank 0's plain rows (empty rank cell), as `make demo`'s pod run writes it.
RANKED_CSV = """\
step,rank,loss
0,0,1.00000
0,1,2.00000
0,2,3.00000
1,,0.90000
1,1,1.90000
1,2,2.90000
0,0,5.00000
"""


def test_a_rank_column_gives_a_line_per_rank_and_is_never_a_metric(tmp_path: Path) -> None:
    csv_path = tmp_path / "pod_metrics.csv"
    csv_path.write_text(RANKED_CSV, encoding="utf-8")
    series = read_metrics_csv(csv_path)
    assert series == {
        "loss": {0: ([0, 1, 0], [1.0, 0.9, 5.0]), 1: ([0, 1], [2.0, 1.9]), 2: ([0, 1], [3.0, 2.9])}
    }
    (panel,) = panels(series)
    assert panel.title == "loss"
    # Rank 0's step going back to 0 is a new run of rank 0: a line of its own.
    assert panel.lines == [
        Line(0, [0, 1], [1.0, 0.9]),
        Line(0, [0], [5.0]),
        Line(1, [0, 1], [2.0, 1.9]),
        Line(2, [0, 1], [3.0, 2.9]),
    ]
    assert plot(str(csv_path), "--keys", "rank").stderr == (
        "roxxel plot: no metric 'rank' in this CSV; its metrics are: 'loss'\n"
    )
    result = plot(str(csv_path))
    assert (result.returncode, result.stderr) == (0, "")
    png = csv_path.with_suffix(".png")
    assert png_size(png) == png_size_of_one_panel(tmp_path)
    assert line_rows(png)  # rank 0's colour is drawn


def png_size_of_one_panel(tmp_path: Path) -> tuple[int, int]:
    """The size of a PNG of one metric: a rank column adds no subplot."""
    one = tmp_path / "one.csv"
    one.write_text("step,loss\n0,1.0\n1,2.0\n", encoding="utf-8")
    assert plot(str(one)).returncode == 0
    return png_size(one.with_suffix(".png"))


def test_keys_with_a_comma_are_written_with_a_backslash(tmp_path: Path) -> None:
    with Logger(tmp_path, "comma") as logger:
        for step in range(3):
            logger.log_metrics_summary(step, {"acc,top5": 0.5 + step / 10, "loss": 1.0})
    out = tmp_path / "acc.png"
    result = plot(str(tmp_path), "--keys", "acc\\,top5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.exists()
    missing = plot(str(tmp_path), "--keys", "acc,top5", "--out", str(out))
    assert missing.returncode == 1 and "no metric 'acc'" in missing.stderr
