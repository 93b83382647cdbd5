"""The metrics CSV against what Lightning's own ``CSVLogger`` tests expect.

The cases follow ``tests/tests_pytorch/loggers/test_csv.py`` and
``tests/tests_fabric/loggers/test_csv.py`` of Lightning-AI/pytorch-lightning
(read at 7f0c343), rewritten for a logger whose file is written by another
process: each case logs through a real Logger (its embedded collector is a
child process) with ``Logger.log_metrics_summary`` or, where CLU-shaped code
would call it, ``MetricWriter.write_scalars``, and reads
``{prefix}_metrics.csv`` back with ``pandas.read_csv`` and ``csv.DictReader``,
as a user would.

Where roxxel differs from Lightning on purpose (the original roxxel's file
name, ``step`` column and ``.5f`` floats, appending to an earlier run...), the
test asserts roxxel's behaviour and carries ``@differs_on_purpose(words)``: the
README's contract section must say ``words`` (checked by the last test).
"""

from __future__ import annotations

import csv
import io
import math
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from roxxel import Logger, MetricWriter

from .conftest import differs_on_purpose, read, run_python, unstated_differences, wait_for

Log = Callable[[int, Mapping[str, Any]], None]

# Both ways in: the Logger's own call, and CLU's write_scalars on top of it.
APIS = ["log_metrics_summary", "write_scalars"]


def open_logger(log_dir: Path, prefix: str = "run", **options: Any) -> Logger:
    # The watcher (a process per Logger, for hard deaths) has nothing to do
    # with the CSV: off, to keep these tests light on a shared machine.
    return Logger(str(log_dir), prefix, watcher=False, **options)


def logging_call(logger: Logger, api: str) -> Log:
    if api == "write_scalars":
        return MetricWriter(logger).write_scalars
    return logger.log_metrics_summary


def csv_path(log_dir: Path, prefix: str = "run") -> Path:
    return log_dir / f"{prefix}_metrics.csv"


def lines(path: Path) -> list[str]:
    return read(path).splitlines()


def dict_rows(path: Path) -> list[dict[str, str | None]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cells(path: Path) -> list[dict[str, str]]:
    """DictReader's rows without their empty cells: a key missing from a row
    is an empty cell in a padded row and a missing one (``None``) in a row
    written before the header widened in place; both mean "not logged"."""
    return [{k: v for k, v in row.items() if v} for row in dict_rows(path)]


# --- test_log_metrics: one call, one row, every name in the header


@pytest.mark.parametrize("api", APIS)
def test_one_call_is_one_row_under_a_header_of_every_name(tmp_path: Path, api: str) -> None:
    import jax.numpy as jnp

    metrics = {
        "float": 0.3,
        "int": 1,
        "np_float": np.float32(0.1),
        "np_int": np.int64(1),
        "jax_float": jnp.float32(0.1),
        "jax_int": jnp.int32(1),
    }
    with open_logger(tmp_path) as logger:
        logging_call(logger, api)(10, metrics)
    text = lines(csv_path(tmp_path))
    assert len(text) == 2
    assert text[0].split(",") == ["step", *metrics]
    assert pd.read_csv(csv_path(tmp_path)).to_dict("records") == [
        {
            "step": 10,
            "float": 0.3,
            "int": 1,
            "np_float": 0.1,
            "np_int": 1,
            "jax_float": 0.1,
            "jax_int": 1,
        }
    ]


@differs_on_purpose("`step` is required and an integer")
def test_step_is_required_and_an_integer_of_any_kind(tmp_path: Path) -> None:
    # Lightning's step=None (and Fabric's automatic step tracking) counts the
    # rows logged so far; the original roxxel's step was a required integer.
    import jax.numpy as jnp

    with open_logger(tmp_path) as logger:
        for bad in (None, 1.0, "1"):
            with pytest.raises(TypeError, match="step must be an integer"):
                logger.log_metrics_summary(bad, {"test": 0.1})  # type: ignore[arg-type]
        logger.log_metrics_summary(np.int64(7), {"test": 0.1})
        logger.log_metrics_summary(jnp.int32(8), {"test": 0.2})
        MetricWriter(logger).write_scalars(np.uint8(9), {"test": 0.3})  # type: ignore[arg-type]
    assert lines(csv_path(tmp_path)) == ["step,test", "7,0.10000", "8,0.20000", "9,0.30000"]


def test_each_call_is_its_own_row_even_at_a_step_already_logged(tmp_path: Path) -> None:
    # As in Lightning, rows are kept as logged: no merging per step, no sorting.
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(5, {"train_loss": 1.0})
        logger.log_metrics_summary(5, {"val_loss": 2.0})
        logger.log_metrics_summary(5, {"train_loss": 0.5})
        logger.log_metrics_summary(3, {"train_loss": 0.25})
    assert cells(csv_path(tmp_path)) == [
        {"step": "5", "train_loss": "1.00000"},
        {"step": "5", "val_loss": "2.00000"},
        {"step": "5", "train_loss": "0.50000"},
        {"step": "3", "train_loss": "0.25000"},
    ]


# --- test_append_columns, test_rewrite_with_new_header: the header widens


@pytest.mark.parametrize("api", APIS)
def test_a_new_name_widens_the_header_and_a_missing_one_is_an_empty_cell(
    tmp_path: Path, api: str
) -> None:
    path = csv_path(tmp_path)
    with open_logger(tmp_path) as logger:
        log = logging_call(logger, api)
        log(0, {"a": 1, "b": 2})
        log(1, {"a": 1, "b": 2, "c": 3})
        logger.flush()
        assert lines(path)[0] == "step,a,b,c"
        log(2, {"a": 1, "c": 3})  # b disappears
        logger.flush()
        assert lines(path)[0] == "step,a,b,c"
    assert read(path) == "step,a,b,c\n0,1,2,\n1,1,2,3\n2,1,,3\n"
    frame = pd.read_csv(path)
    assert frame["b"].isna().tolist() == [False, False, True]
    assert frame["c"].isna().tolist() == [True, False, False]
    assert cells(path) == [
        {"step": "0", "a": "1", "b": "2"},
        {"step": "1", "a": "1", "b": "2", "c": "3"},
        {"step": "2", "a": "1", "c": "3"},
    ]


@differs_on_purpose("then the names in the order they first appear")
def test_columns_are_step_then_the_names_in_the_order_they_first_appear(tmp_path: Path) -> None:
    # Lightning sorts the header ("a,b,c,d,step"); the original roxxel wrote
    # step first and each name where it first came, and a widening only appends.
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(0, {"c": 0.1})
        logger.log_metrics_summary(1, {"c": 0.2})
        logger.log_metrics_summary(2, {"b": 0.3})
        logger.log_metrics_summary(3, {"a": 0.4})
        logger.flush()
        logger.log_metrics_summary(4, {"d": 0.5})
    assert lines(csv_path(tmp_path))[0] == "step,c,b,a,d"


def test_a_hand_written_file_gets_the_new_columns_and_its_rows_empty_cells(
    tmp_path: Path,
) -> None:
    path = csv_path(tmp_path)
    path.write_text("step,metric1,metric2\n0,1,22\n", encoding="utf-8")
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(1, {"metric1": 2, "metric2": 3, "metric3": 4})
    assert lines(path) == ["step,metric1,metric2,metric3", "0,1,22,", "1,2,3,4"]


@pytest.mark.parametrize(
    "written",
    ["step,metric1,metric2\n0,1,22", "step,metric1,metric2"],
    ids=["last-row", "header-only"],
)
def test_a_file_whose_last_line_has_no_line_end_is_ended_before_new_rows(
    tmp_path: Path, written: str
) -> None:
    # A file saved by an editor that drops the final newline: the next row
    # used to run on from its last line ("0,1,221,2,3": 22 read as 221).
    path = csv_path(tmp_path)
    path.write_text(written, encoding="utf-8")
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(1, {"metric1": 2, "metric2": 3})
    assert read(path) == written + "\n1,2,3\n"
    assert pd.read_csv(path)["metric2"].tolist()[-1] == 3


@pytest.mark.parametrize("api", APIS)
def test_a_large_file_widened_in_place_keeps_every_value_under_its_column(
    tmp_path: Path, api: str
) -> None:
    # Past 64 KiB the header is widened in place and older rows stay short:
    # pandas and DictReader still put each value under its own column.
    path = csv_path(tmp_path)
    before = 4000
    with open_logger(tmp_path) as logger:
        log = logging_call(logger, api)
        for step in range(before):
            log(step, {"loss": step + 0.5, "tokens": step * 1000})
        logger.flush()
        assert path.stat().st_size > 64 * 1024
        log(before, {"loss": 0.5, "tokens": 1, "acc": 0.75})  # rewrite, room kept
        logger.flush()  # the next name in a widening of its own
        log(before + 1, {"loss": 0.5, "tokens": 1, "acc": 0.75, "lr": 3e-4})  # in place
        log(before + 2, {"tokens": 2})
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["step", "loss", "tokens", "acc", "lr"]
    assert frame["step"].tolist() == list(range(before + 3))
    old = frame[frame["step"] < before]
    assert (old["loss"] == old["step"] + 0.5).all()
    assert (old["tokens"] == old["step"] * 1000).all()
    assert old[["acc", "lr"]].isna().all().all()
    new = frame.iloc[before:]
    assert new["acc"].fillna(-1).tolist() == [0.75, 0.75, -1]
    assert new["lr"].fillna(-1).tolist() == [-1, 3e-4, -1]
    rows = cells(path)
    assert len(rows) == before + 3
    assert rows[123] == {"step": "123", "loss": "123.50000", "tokens": "123000"}
    assert rows[-2] == {
        "step": str(before + 1),
        "loss": "0.50000",
        "tokens": "1",
        "acc": "0.75000",
        "lr": "0.0003",
    }
    assert rows[-1] == {"step": str(before + 2), "tokens": "2"}


# --- test_append_metrics_file, test_manual_versioning_file_exists: an earlier run


@differs_on_purpose("a run whose file exists appends to it")
@pytest.mark.parametrize("api", APIS)
def test_a_later_logger_appends_to_the_file_of_an_earlier_run(tmp_path: Path, api: str) -> None:
    # Lightning appends only when told the directory is its own (its test
    # mocks the check); by default it warns and deletes the earlier
    # metrics.csv. roxxel keeps it: a restarted job continues its curves.
    path = csv_path(tmp_path)
    with open_logger(tmp_path) as logger:
        log = logging_call(logger, api)
        log(0, {"a": 1, "b": 2})
        log(1, {"a": 3, "b": 4})
    with open_logger(tmp_path) as logger:
        logging_call(logger, api)(2, {"a": 100, "b": 200})
    assert lines(path) == ["step,a,b", "0,1,2", "1,3,4", "2,100,200"]
    with open_logger(tmp_path) as logger:
        # The later run's names: the header keeps its order and widens.
        logging_call(logger, api)(3, {"c": 5, "a": 6})
    assert lines(path) == ["step,a,b,c", "0,1,2,", "1,3,4,", "2,100,200,", "3,6,,5"]


# --- test_log_metrics with tensors, and the values Lightning's csv module writes


@pytest.mark.parametrize("floats", ["original", "full"])
def test_numpy_and_jax_scalars_and_one_element_arrays_are_numbers(
    tmp_path: Path, floats: str
) -> None:
    # Lightning calls .item() on a tensor: its cell is the Python number. So
    # here, with .5f by default and repr (Lightning's own text) with "full".
    import jax.numpy as jnp

    values = {
        "py": 0.3,
        "np64": np.float64(1 / 3),
        "np32": np.float32(0.1),
        "np_int": np.int32(-7),
        "np_0d": np.array(2.5),
        "np_one": np.array([4.0]),
        "jax32": jnp.float32(0.1),
        "jax_0d": jnp.array(1.5),
        "jax_int": jnp.array(3, dtype=jnp.int32),
        "jax_one": jnp.ones((1, 1)),
    }
    with open_logger(tmp_path, csv_floats=floats) as logger:
        logger.log_metrics_summary(0, values)
    (row,) = dict_rows(csv_path(tmp_path))
    items = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}
    for key, number in items.items():
        if isinstance(number, int):
            expected = str(number)
        else:
            expected = repr(number) if floats == "full" else f"{number:.5f}"
        assert row[key] == expected, key
    frame = pd.read_csv(csv_path(tmp_path))
    assert frame.iloc[0].drop("step").to_dict() == pytest.approx(items, rel=1e-5)


def test_nan_infinities_none_bools_and_big_ints(tmp_path: Path) -> None:
    # The cells Python's csv module gives Lightning for these values, but for
    # float32 NaN (a NumPy scalar, not a tensor) and the .5f of floats.
    import jax.numpy as jnp

    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(
            0,
            {
                "nan": math.nan,
                "inf": math.inf,
                "-inf": -np.inf,
                "np_nan": np.float32("nan"),
                "none": None,
                "flag": True,
                "np_flag": np.bool_(False),
                "jax_flag": jnp.bool_(True),
                "big": 10**30,
                "np_big": np.uint64(2**64 - 1),
            },
        )
        logger.log_metrics_summary(1, {"flag": False, "nan": 1.0})
    (row, _) = dict_rows(csv_path(tmp_path))
    assert row == {
        "step": "0",
        "nan": "nan",
        "inf": "inf",
        "-inf": "-inf",
        "np_nan": "nan",
        "none": "",
        "flag": "True",
        "np_flag": "False",
        "jax_flag": "True",
        "big": str(10**30),
        "np_big": str(2**64 - 1),
    }
    frame = pd.read_csv(csv_path(tmp_path))
    assert frame["nan"].isna().tolist() == [True, False]
    assert frame["inf"][0] == math.inf and frame["-inf"][0] == -math.inf
    assert frame["none"].isna().all()
    assert frame["flag"].tolist() == [True, False]  # a column of booleans


def test_text_values_round_trip_through_both_readers(tmp_path: Path) -> None:
    text = 'a, "quoted"\nsecond line'
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(0, {"note": text, "loss": 1.0})
    assert pd.read_csv(csv_path(tmp_path))["note"].tolist() == [text]
    assert cells(csv_path(tmp_path)) == [{"step": "0", "note": text, "loss": "1.00000"}]


@differs_on_purpose("a leading `'`")
def test_text_that_a_spreadsheet_would_run_gets_a_leading_quote(tmp_path: Path) -> None:
    # Lightning writes "=cmd|..." as it is; a spreadsheet opening the file would run it.
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(0, {"note": "=HYPERLINK(1)", "delta": "-0.5"})
    assert cells(csv_path(tmp_path)) == [{"step": "0", "note": "'=HYPERLINK(1)", "delta": "-0.5"}]


@differs_on_purpose("is skipped with a warning where Lightning's `.item()` raises")
def test_a_value_that_is_not_a_scalar_is_skipped_with_a_warning(tmp_path: Path) -> None:
    # Lightning's .item() raises in the training loop for a tensor of
    # several elements; roxxel never stops the loop: an empty cell, one WARNING.
    import jax.numpy as jnp

    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(0, {"loss": 1.0, "grads": np.arange(3)})
        logger.log_metrics_summary(1, {"loss": 0.5, "grads": jnp.ones((2, 2))})
        logger.log_metrics_summary(2, {"loss": 0.25, "grads": np.arange(4)})
    assert cells(csv_path(tmp_path)) == [
        {"step": "0", "loss": "1.00000"},
        {"step": "1", "loss": "0.50000"},
        {"step": "2", "loss": "0.25000"},
    ]
    warnings = re.findall(
        r"\[WARNING\] metric 'grads' is not a scalar: (\S+)", read(logger.sys_log_path)
    )
    assert len(warnings) == 2  # one per kind of value: a NumPy array, a jax.Array


@differs_on_purpose("are refused as names")
def test_the_files_own_column_names_are_refused_as_metric_names(tmp_path: Path) -> None:
    # Lightning overwrites a metric named "step" with the step, silently.
    with open_logger(tmp_path) as logger:
        with pytest.raises(ValueError, match="'step'"):
            logger.log_metrics_summary(0, {"step": 5, "loss": 1.0})
        logger.log_metrics_summary(0, {"loss": 1.0})
    assert lines(csv_path(tmp_path)) == ["step,loss", "0,1.00000"]


# --- test_flush_n_steps, test_metrics_reset_after_save: when rows are on disk


@differs_on_purpose("no `flush_logs_every_n_steps`")
def test_rows_reach_the_file_while_the_run_goes_on_without_a_flush(tmp_path: Path) -> None:
    # Lightning keeps rows in memory until every 100th step (or save());
    # roxxel's sender hands them to the collector every flush_interval.
    path = csv_path(tmp_path)
    with open_logger(tmp_path) as logger:
        logger.log_metrics_summary(0, {"test": 1})
        wait_for(lambda: len(lines(path)) == 2, what="the first row, without a flush")
        logger.log_metrics_summary(1, {"test": 2})
        wait_for(lambda: len(lines(path)) == 3, what="the second row, without a flush")
    assert lines(path) == ["step,test", "0,1", "1,2"]


@pytest.mark.parametrize("flush", ["logger.flush()", "MetricWriter(logger).flush()"])
def test_flush_puts_every_row_logged_before_it_on_disk(tmp_path: Path, flush: str) -> None:
    # The process dies right after the flush, without closing (os._exit):
    # what is in the file is what flush() put there.
    done = run_python(
        f"""
import os
from roxxel import Logger, MetricWriter
logger = Logger({str(tmp_path)!r}, "run", watcher=False)
for step in range(2000):
    logger.log_metrics_summary(step, {{"loss": step + 0.5, "tokens": step * 3}})
{flush}
os._exit(0)
"""
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(csv_path(tmp_path))
    assert frame["step"].tolist() == list(range(2000))
    assert (frame["loss"] == frame["step"] + 0.5).all()
    assert (frame["tokens"] == frame["step"] * 3).all()


def test_close_puts_every_row_of_a_long_run_on_disk(tmp_path: Path) -> None:
    rows = 30_000
    logger = open_logger(tmp_path)
    for step in range(rows):
        logger.log_metrics_summary(step, {"loss": step + 0.25, "epoch": step // 1000})
    logger.close()
    frame = pd.read_csv(csv_path(tmp_path))
    assert len(frame) == rows
    assert frame["step"].tolist() == list(range(rows))
    assert (frame["loss"] == frame["step"] + 0.25).all()
    assert (frame["epoch"] == frame["step"] // 1000).all()
    with open(csv_path(tmp_path), newline="", encoding="utf-8") as f:
        assert sum(1 for _ in csv.DictReader(f)) == rows


# --- reading the file while the run goes on


def complete_rows(path: Path) -> pd.DataFrame:
    """The file as a live reader should take it: up to its last line end.

    The collector writes whole rows, but a reader racing a ``write()`` can
    see it part-done (the kernel grows a file page by page)."""
    data = path.read_bytes()
    return pd.read_csv(io.BytesIO(data[: data.rfind(b"\n") + 1]))


# The live run's names: "acc" from a step past 64 KiB of rows (the file is
# rewritten, replaced atomically, with room after the header), "lr" later
# (the header rewritten in place).
ACC_FROM, LR_FROM, LIVE_ROWS = 5000, 6500, 8000


def live_metrics(step: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {"loss": step + 0.5}
    if step >= ACC_FROM:
        metrics["acc"] = step * 2
    if step >= LR_FROM:
        metrics["lr"] = 0.25
    return metrics


def check_live_rows(frame: pd.DataFrame, logged: int) -> None:
    """The rows of ``frame`` are the first ones logged, each value in its column."""
    assert frame["step"].tolist() == list(range(len(frame)))
    assert len(frame) <= logged
    assert (frame["loss"] == frame["step"] + 0.5).all()
    for name, since in (("acc", ACC_FROM), ("lr", LR_FROM)):
        late = frame["step"] >= since
        if name not in frame.columns:
            assert not late.any(), f"rows with {name} under a header without it"
            continue
        expected = [live_metrics(step)[name] for step in frame["step"][late]]
        assert frame[name][late].tolist() == expected
        assert frame[name][~late].isna().all()


def test_the_file_reads_whole_and_right_while_the_run_goes_on(tmp_path: Path) -> None:
    # A reader polls with pandas as rows are logged, and two names appear mid-run.
    path = csv_path(tmp_path)
    logged = 0
    stop = threading.Event()
    reads: list[int] = []
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                if path.exists() and path.stat().st_size:
                    frame = complete_rows(path)
                    check_live_rows(frame, logged)
                    reads.append(len(frame))
            except BaseException as exc:  # noqa: BLE001 -- re-raised by the test
                failures.append(exc)
                return
            stop.wait(0.005)

    polling = threading.Thread(target=reader)
    with open_logger(tmp_path) as logger:
        polling.start()
        try:
            for step in range(LIVE_ROWS):
                logger.log_metrics_summary(step, live_metrics(step))
                logged = step + 1
                if logged % 2000 == 0:
                    logger.flush()
                    # After a flush the file itself is whole: read as it is.
                    frame = pd.read_csv(path)
                    assert len(frame) == logged
                    check_live_rows(frame, logged)
            wait_for(
                lambda: failures or (reads and reads[-1] == logged), what="a read of every row"
            )
        finally:
            stop.set()
            polling.join()
    if failures:
        raise failures[0]
    assert len(reads) > 1


# --- test_log_hyperparams: where hyperparameters go


@differs_on_purpose("`MetricWriter.write_hparams`")
def test_hparams_are_one_line_of_the_system_log_not_a_yaml_file(tmp_path: Path) -> None:
    # Lightning's CSVLogger writes hparams.yaml next to metrics.csv (Fabric's
    # refuses them): roxxel has no file per kind; the log is the run's text.
    hparams = {
        "float": 0.3,
        "int": 1,
        "string": "abc",
        "bool": True,
        "dict": {"a": {"b": "c"}},
        "list": [1, 2, 3],
        "layer": dict,
    }
    with open_logger(tmp_path) as logger:
        MetricWriter(logger).write_hparams(hparams)
        logger.log_metrics_summary(0, {"loss": 1.0})
    (line,) = re.findall(r"\[INFO\] hparams: (.*)", read(logger.sys_log_path))
    names = re.findall(r'"([^"]+)": ', line)
    assert all(any(n == k or n.startswith(k + ".") for n in names) for k in hparams)
    assert lines(csv_path(tmp_path)) == ["step,loss", "0,1.00000"]
    assert not list(tmp_path.rglob("*.yaml"))


# --- test_automatic_versioning, test_named_version, test_no_name: where the file is


@differs_on_purpose("`{log_dir}/{prefix}_metrics.csv`")
def test_the_file_is_named_by_the_prefix_in_the_log_dir_without_versions(tmp_path: Path) -> None:
    # Lightning: {save_dir}/{name}/version_{N}/metrics.csv, N counted up per
    # run. roxxel keeps the original roxxel's name: a prefix per run, one directory.
    (tmp_path / "version_0").mkdir()
    with open_logger(tmp_path, "2020-02-05-162402") as logger:
        logger.log_metrics_summary(0, {"a": 1, "b": 2})
        assert logger.metrics_csv_path == str(tmp_path / "2020-02-05-162402_metrics.csv")
    with open_logger(tmp_path) as other:
        other.log_metrics_summary(0, {"a": 3})
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".csv") == [
        "2020-02-05-162402_metrics.csv",
        "run_metrics.csv",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["version_0"]
    with pytest.raises(ValueError, match="filename_prefix"):
        open_logger(tmp_path, "")


def test_the_readme_states_every_difference_from_lightning() -> None:
    marked, unstated = unstated_differences(__name__, section="The contract")
    assert marked >= 8 and not unstated, f"the README's contract does not say: {unstated}"


def test_a_file_reopened_after_rotation_without_a_last_line_end_gets_one(
    tmp_path: Path,
) -> None:
    # reopen() (after log rotation renamed the file) takes whatever is at the
    # path: a file put there by hand is ended before the sink's rows too.
    from aggregator.sinks import MetricsCsvSink, Origin

    from .conftest import metrics_runs

    path = tmp_path / "run_metrics.csv"
    sink = MetricsCsvSink(str(path))
    sink.write_metrics(Origin(0, "host", 1), metrics_runs([("m", 0, {"a": 1})]))
    sink.flush()
    path.rename(tmp_path / "run_metrics.csv.1")
    path.write_text("step,a\n5,6", encoding="utf-8")
    sink.reopen()
    sink.write_metrics(Origin(0, "host", 1), metrics_runs([("m", 7, {"a": 8})]))
    sink.close()
    assert read(path) == "step,a\n5,6\n7,8\n"
    assert read(tmp_path / "run_metrics.csv.1") == "step,a\n0,1\n"


def test_another_programs_csv_at_the_path_is_refused_not_scrambled(tmp_path: Path) -> None:
    path = tmp_path / "run_metrics.csv"
    path.write_text("a,b,step\n1,2,0\n")  # Lightning's sorted header, step among the names
    with pytest.raises(RuntimeError, match="is not a roxxel metrics CSV: its header starts"):
        Logger(tmp_path, "run")
    assert path.read_text() == "a,b,step\n1,2,0\n"
