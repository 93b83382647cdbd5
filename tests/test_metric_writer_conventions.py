"""roxxel.MetricWriter against what CLU's own ``metric_writers`` tests expect.

The cases follow ``clu/metric_writers/{async_writer,multi_writer,logging_writer,
tf/summary_writer}_test.py`` and ``clu/internal/utils_test.py`` (flattening of
hparams), rewritten for a writer whose output is a run's files: each case
writes through a real Logger (its collector is another process) and reads
the CSV or the system log back. CLU's real ``AsyncWriter`` and ``MultiWriter``
wrap our writer in a separate interpreter, so the stand-in package that loads
them (below) never reaches the test process.

Where roxxel differs from CLU on purpose, the test asserts roxxel's
behaviour and carries ``@differs_on_purpose(words)``: the README must say
``words`` (checked by the last test).
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from roxxel import Logger, MetricWriter

from .conftest import differs_on_purpose, read, run_python, unstated_differences

HAVE_CLU = importlib.util.find_spec("clu") is not None
needs_clu = pytest.mark.skipif(not HAVE_CLU, reason="clu is not installed (the test extra has it)")

# clu 0.0.12's clu/metric_writers/__init__.py imports its TensorFlow
# SummaryWriter; the wrappers need only jax, wrapt and absl. A stand-in
# package whose path is the real folder loads them without TensorFlow.
CLU_WRAPPERS = """
import importlib.util, os, sys, types
stand_in = types.ModuleType("clu.metric_writers")
stand_in.__path__ = [os.path.join(
    os.path.dirname(importlib.util.find_spec("clu").origin), "metric_writers")]
sys.modules["clu.metric_writers"] = stand_in
from clu import asynclib
from clu.metric_writers import async_writer, interface, multi_writer
"""


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def numbers(path: Path) -> list[dict[str, float]]:
    """The CSV's rows as numbers, empty cells left out: the assertions hold
    whatever precision the CSV is written with."""
    return [{k: float(v) for k, v in row.items() if v} for row in rows(path)]


def hparams_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in re.findall(r"\[INFO\] hparams: (.*)", log)]


def in_clu_wrapper(tmp_path: Path, body: str) -> str:
    """Run ``body`` with ``writer`` (ours, on a Logger of ``tmp_path``) and
    CLU's wrapper modules; ``os._exit(0)`` ends it, so nothing but what the
    body itself flushed or closed can be in the files. Its stdout."""
    code = f"""
{CLU_WRAPPERS}
import os
from unittest import mock
import numpy as np
from roxxel import Logger, MetricWriter
lg = Logger({str(tmp_path)!r}, "run", watcher=False)
writer = MetricWriter(lg)
{body}
sys.stdout.flush()
os._exit(0)
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- AsyncWriter and MultiWriter around our writer (async_writer_test, multi_writer_test)


@needs_clu
def test_async_writer_hands_scalar_sets_over_in_call_order_and_ensure_flushes_puts_them_on_disk(
    tmp_path: Path,
) -> None:
    in_clu_wrapper(
        tmp_path,
        """
import jax.numpy as jnp
w = async_writer.AsyncWriter(writer)
with async_writer.ensure_flushes(w):
    w.write_scalars(0, {"a": 3, "b": 0.15})
    w.write_scalars(2, {"a": 5, "b": 0.007})
    w.write_scalars(4, {"a": np.int64(7), "b": jnp.float32(0.5)})
""",
    )
    assert numbers(tmp_path / "run_metrics.csv") == [
        {"step": 0, "a": 3, "b": 0.15},
        {"step": 2, "a": 5, "b": 0.007},
        {"step": 4, "a": 7, "b": 0.5},
    ]


@needs_clu
def test_async_writer_passes_texts_and_unsupported_kinds_through_by_keyword(
    tmp_path: Path,
) -> None:
    # AsyncWriter calls the inner writer with keyword arguments: our
    # parameter names must be CLU's for every method.
    in_clu_wrapper(
        tmp_path,
        """
w = async_writer.AsyncWriter(writer)
w.write_texts(4, {"samples": "bla"})
w.write_images(4, {"input_images": np.zeros((2, 28, 28, 3))})
w.write_videos(4, {"input_videos": np.zeros((2, 4, 28, 28, 3))})
w.write_audios(4, {"speech": np.zeros((1, 16, 1))}, sample_rate=16000)
w.write_histograms(4, {"w": np.arange(31)}, num_buckets={"w": 2})
w.write_summaries(11, {"a": np.eye(3)}, {"a": b"meta"})
w.write_hparams({"learning_rate": 0.1})
w.flush()
""",
    )
    log = read(tmp_path / "run_system.log")
    assert "[INFO] step 4 samples: bla" in log
    for method in ("images", "videos", "audios", "histograms", "summaries"):
        assert log.count(f"write_{method} is not stored in a text log") == 1, method
    assert hparams_lines(log) == [{"learning_rate": 0.1}]


@needs_clu
@differs_on_purpose("`close()` flushes but leaves the Logger open")
def test_async_writer_close_flushes_our_writer_which_leaves_the_logger_open(
    tmp_path: Path,
) -> None:
    # CLU: close() flushes the inner writer, then closes it. Ours flushes;
    # the Logger belongs to whoever opened it and keeps working.
    out = in_clu_wrapper(
        tmp_path,
        """
w = async_writer.AsyncWriter(writer)
w.write_scalars(0, {"a": 3, "b": 0.15})
w.close()
print("after close:", len(open(lg.metrics_csv_path).read().splitlines()))
lg.log_message("the logger is still open")
print("flushed:", lg.flush(30))
""",
    )
    assert "after close: 2" in out and "flushed: True" in out
    assert numbers(tmp_path / "run_metrics.csv") == [{"step": 0, "a": 3, "b": 0.15}]
    assert "[INFO] the logger is still open" in read(tmp_path / "run_system.log")


@needs_clu
def test_an_error_of_our_writer_on_async_writers_thread_comes_back_at_flush(
    tmp_path: Path,
) -> None:
    # CLU re-raises the worker's error as AsyncError on a later call; at
    # flush() it is certain to have happened, so no waiting is needed. A
    # metric name that is not a str is our writer's error, raised in the call.
    out = in_clu_wrapper(
        tmp_path,
        """
w = async_writer.AsyncWriter(writer)
w.write_scalars(0, {1: 0.5})
try:
    w.flush()
except asynclib.AsyncError as e:
    print("raised:", type(e.__cause__).__name__)
w.write_scalars(1, {"a": 1.5})
w.flush()
""",
    )
    assert "raised: TypeError" in out
    assert numbers(tmp_path / "run_metrics.csv") == [{"step": 1, "a": 1.5}]


@needs_clu
def test_multi_writer_gives_our_writer_and_another_the_same_calls_and_flushes_both(
    tmp_path: Path,
) -> None:
    out = in_clu_wrapper(
        tmp_path,
        """
other = mock.create_autospec(interface.MetricWriter)
w = multi_writer.MultiWriter([writer, other])
w.write_scalars(0, {"a": 3, "b": 0.15})
w.write_scalars(2, {"a": 5, "b": 0.007})
w.write_hparams({"batch_size": 512})
w.flush()
other.write_scalars.assert_has_calls(
    [mock.call(0, {"a": 3, "b": 0.15}), mock.call(2, {"a": 5, "b": 0.007})])
other.write_hparams.assert_called_once_with({"batch_size": 512})
other.flush.assert_called_once()
print("other writer: ok")
""",
    )
    assert "other writer: ok" in out
    assert numbers(tmp_path / "run_metrics.csv") == [
        {"step": 0, "a": 3, "b": 0.15},
        {"step": 2, "a": 5, "b": 0.007},
    ]
    assert hparams_lines(read(tmp_path / "run_system.log")) == [{"batch_size": 512}]


# --- write_hparams (logging_writer_test, tf/summary_writer_test, internal/utils_test)


def written_hparams(tmp_path: Path, hparams: Any) -> dict[str, Any]:
    with Logger(tmp_path, "run", watcher=False) as lg:
        MetricWriter(lg).write_hparams(hparams)
    (line,) = hparams_lines(read(tmp_path / "run_system.log"))
    return line


def test_flat_hparams_keep_their_order_and_their_number_types(tmp_path: Path) -> None:
    got = written_hparams(tmp_path, {"learning_rate": 0.1, "batch_size": 128, "ema": True})
    assert list(got.items()) == [("learning_rate", 0.1), ("batch_size", 128), ("ema", True)]
    assert type(got["batch_size"]) is int


def test_nested_mappings_lists_and_tuples_in_hparams_become_dotted_keys(tmp_path: Path) -> None:
    config = {
        "list": [1, 2],
        "tuple": (3, 4),
        "subconfig": {"value": "a", "list": [10, 20]},
        "empty": {},
    }
    assert written_hparams(tmp_path, config) == {
        "list.0": 1,
        "list.1": 2,
        "tuple.0": 3,
        "tuple.1": 4,
        "subconfig.value": "a",
        "subconfig.list.0": 10,
        "subconfig.list.1": 20,
    }


def test_a_config_dict_is_flattened_like_a_mapping(tmp_path: Path) -> None:
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"depth": 4, "widths": [64, 128]})
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "b1": 0.9})
    config.seed = 0
    assert written_hparams(tmp_path, config) == {
        "model.depth": 4,
        "model.widths.0": 64,
        "model.widths.1": 128,
        "optimizer.b1": 0.9,
        "optimizer.name": "adam",
        "seed": 0,
    }


@differs_on_purpose("a `None` hparam stays `null`")
def test_a_none_hparam_stays_null_where_clu_writes_an_empty_string(tmp_path: Path) -> None:
    # CLU's flatten_dict case: {"x": 1, "y": None, "z": {"a": "bc"}} gives
    # ("y", "") because TensorBoard's hparams cannot hold None; a JSON line can.
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict(
        {"x": 1, "y": None, "z": ml_collections.ConfigDict({"a": "bc"})}
    )
    assert written_hparams(tmp_path, config) == {"x": 1, "y": None, "z.a": "bc"}


def test_numpy_and_jax_scalars_in_hparams_stay_numbers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    jnp = pytest.importorskip("jax.numpy")
    got = written_hparams(
        tmp_path,
        {
            "lr": np.float32(0.5),
            "batch_size": np.int64(512),
            "steps": jnp.int32(1000),
            "warmup": jnp.asarray(0.25),
            "use_ema": np.bool_(True),
            "zero_d": np.array(3.0),
            "mix": np.array([0.5, 0.5]),
        },
    )
    assert got == {
        "lr": 0.5,
        "batch_size": 512,
        "steps": 1000,
        "warmup": 0.25,
        "use_ema": True,
        "zero_d": 3.0,
        "mix": [0.5, 0.5],
    }
    assert type(got["batch_size"]) is int and type(got["use_ema"]) is bool


# --- the interface itself


# CLU's MetricWriter interface (google/CommonLoopUtils, clu/metric_writers/
# interface.py as of 2026-07): every method, its parameters and their kinds.
# write_pointcloud is newer than clu 0.0.12.
_P = inspect.Parameter
CLU_INTERFACE: dict[str, list[tuple[str, Any]]] = {
    "write_summaries": [("step", _P.POSITIONAL_OR_KEYWORD), ("values", _P.POSITIONAL_OR_KEYWORD),
                        ("metadata", _P.POSITIONAL_OR_KEYWORD)],
    "write_scalars": [("step", _P.POSITIONAL_OR_KEYWORD), ("scalars", _P.POSITIONAL_OR_KEYWORD)],
    "write_images": [("step", _P.POSITIONAL_OR_KEYWORD), ("images", _P.POSITIONAL_OR_KEYWORD)],
    "write_videos": [("step", _P.POSITIONAL_OR_KEYWORD), ("videos", _P.POSITIONAL_OR_KEYWORD)],
    "write_audios": [("step", _P.POSITIONAL_OR_KEYWORD), ("audios", _P.POSITIONAL_OR_KEYWORD),
                     ("sample_rate", _P.KEYWORD_ONLY)],
    "write_texts": [("step", _P.POSITIONAL_OR_KEYWORD), ("texts", _P.POSITIONAL_OR_KEYWORD)],
    "write_histograms": [("step", _P.POSITIONAL_OR_KEYWORD), ("arrays", _P.POSITIONAL_OR_KEYWORD),
                         ("num_buckets", _P.POSITIONAL_OR_KEYWORD)],
    "write_pointcloud": [("step", _P.POSITIONAL_OR_KEYWORD),
                         ("point_clouds", _P.POSITIONAL_OR_KEYWORD),
                         ("point_colors", _P.KEYWORD_ONLY), ("configs", _P.KEYWORD_ONLY)],
    "write_hparams": [("hparams", _P.POSITIONAL_OR_KEYWORD)],
    "flush": [],
    "close": [],
}  # fmt: skip


def parameters(method: Callable[..., Any]) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()][1:]


def test_every_method_of_clus_interface_is_there_with_its_parameters() -> None:
    ours = {name: parameters(getattr(MetricWriter, name)) for name in CLU_INTERFACE}
    assert ours == CLU_INTERFACE


@needs_clu
def test_the_installed_clus_abstract_methods_are_all_ours_too() -> None:
    code = f"""
{CLU_WRAPPERS}
import inspect, json
cls = interface.MetricWriter
print(json.dumps({{name: [(p.name, p.kind.name)
    for p in list(inspect.signature(getattr(cls, name)).parameters.values())[1:]]
    for name in sorted(cls.__abstractmethods__)}}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    installed = json.loads(done.stdout)
    assert installed, "no abstract methods found"
    for name, params in installed.items():
        assert [(n, k.name) for n, k in parameters(getattr(MetricWriter, name))] == [
            tuple(p) for p in params
        ], name


def test_point_clouds_and_other_unsupported_kinds_are_skipped_with_one_warning_each(
    tmp_path: Path,
) -> None:
    np = pytest.importorskip("numpy")
    clouds = {"pcd": np.zeros((1, 1024, 3), np.float32)}
    with Logger(tmp_path, "run", watcher=False) as lg:
        writer = MetricWriter(lg)
        for step in range(2):
            writer.write_pointcloud(
                step,
                clouds,
                point_colors={"pcd": np.ones((1, 1024, 3), np.float32)},
                configs={"config": {"material": "PointCloudMaterial", "size": 0.09}},
            )
            writer.write_images(step, {"img": np.zeros((2, 8, 8, 3))})
            writer.write_scalars(step, {"loss": 0.5})
        writer.flush()
    log = read(tmp_path / "run_system.log")
    assert log.count("write_pointcloud is not stored in a text log; skipped (pcd; said once)") == 1
    assert log.count("write_images is not stored") == 1
    assert numbers(tmp_path / "run_metrics.csv") == [
        {"step": 0, "loss": 0.5},
        {"step": 1, "loss": 0.5},
    ]


def test_each_deliberate_difference_is_stated_in_the_readme() -> None:
    marked, unstated = unstated_differences(__name__)
    assert marked == 2 and not unstated, f"the README does not say: {unstated}"
